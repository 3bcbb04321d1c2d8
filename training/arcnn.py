"""AR-CNN for `edit`: a U-Net that looks at a piano roll and says which cell to flip next.

Trained the DeepComposer way: take a real roll, remove a random share of its notes and add
a few random ones, and learn a distribution over the cells to flip back (uniform over the
cells that differ from the original). The runtime's sampler then applies edits in passes.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
import torch.nn.functional as F

from training.unet import UNet


@dataclass
class ARCNNConfig:
    window_steps: int = 32
    pitch_count: int = 46
    width: int = 32
    levels: int = 3
    max_remove: float = 0.9    # share of notes removed is uniform in [0, max_remove]
    max_add: float = 0.02      # share of empty cells filled at random, uniform in [0, max_add]


class ARCNN(nn.Module):
    def __init__(self, cfg: ARCNNConfig):
        super().__init__()
        self.cfg = cfg
        self.unet = UNet(1, 1, width=cfg.width, levels=cfg.levels)

    def forward(self, roll: torch.Tensor) -> torch.Tensor:
        """roll (B, 1, T, P) in {0, 1} -> logits (B, 1, T, P) over which cell to flip next."""
        # the roll itself is a second view so the net can tell "present" from "absent" cheaply
        return self.unet(roll * 2 - 1)


def corrupt(roll: torch.Tensor, cfg: ARCNNConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Remove a random share of notes and add a few random ones, per example. roll (B, 1, T, P)."""
    b = roll.shape[0]
    dev = roll.device
    remove_share = torch.rand(b, 1, 1, 1, device=dev, generator=generator) * cfg.max_remove
    add_share = torch.rand(b, 1, 1, 1, device=dev, generator=generator) * cfg.max_add
    u = torch.rand(roll.shape, device=dev, generator=generator)
    removed = (roll > 0) & (u < remove_share)
    added = (roll == 0) & (u < add_share)
    return torch.where(removed | added, 1 - roll, roll)


def edit_loss(logits: torch.Tensor, corrupted: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against the uniform distribution over the cells to flip back."""
    target = (corrupted != original).float().flatten(1)               # (B, T*P)
    count = target.sum(dim=1)
    keep = count > 0
    if not keep.any():
        return logits.sum() * 0
    logp = F.log_softmax(logits.flatten(1), dim=1)
    loss = -(target * logp).sum(dim=1) / count.clamp(min=1)
    return loss[keep].mean()
