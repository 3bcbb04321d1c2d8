"""Conditional GAN for `accompany`: a melody in, alto, tenor and bass out.

Generator: a U-Net over the melody roll with noise injected at the bottleneck; each output
track is a softmax over the pitches plus one rest class per step, so each voice sings at
most one note. Critic: a plain CNN over melody + 3 voices, trained with WGAN-GP (several
critic steps per generator step, as in MuseGAN and DeepComposer). A reconstruction term
(the real voices' log-likelihood) keeps the generator near the chorales so it trains in
minutes; the adversarial term sharpens it. With `variety_k` > 1 that term takes the best of
k noise draws, so that the noise picks one of several harmonisations.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
import torch.nn.functional as F

from training.unet import UNet


@dataclass
class GANConfig:
    window_steps: int = 32
    pitch_count: int = 46
    tracks: int = 3
    z_dim: int = 32
    width: int = 32
    critic_width: int = 64
    critic_steps: int = 5
    gp_weight: float = 10.0
    recon_weight: float = 1.0
    adv_weight: float = 0.1
    # > 1: the reconstruction term scores the best of this many noise draws per melody, so
    # only one of them has to sing the chorale's own voices and the others are free to
    # harmonise it otherwise (the adversarial term keeps them chorale-like); with 1 the
    # generator learns to ignore the noise
    variety_k: int = 1


class Generator(nn.Module):
    def __init__(self, cfg: GANConfig):
        super().__init__()
        self.cfg = cfg
        self.unet = UNet(1, cfg.tracks, width=cfg.width, levels=3, bottleneck_extra=cfg.width)
        self.z_proj = nn.Linear(cfg.z_dim, cfg.width)
        # rest logit per track and step, from the features pooled over pitch
        self.rest_head = nn.Conv1d(self.unet.out_channels, cfg.tracks, 1)

    def logits(self, melody: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """melody (B, T, P), z (B, Z) -> logits (B, tracks, T, P + 1), the last class a rest."""
        extra = self.z_proj(z)[:, :, None, None]                 # (B, W, 1, 1)
        feats = self.unet.features(melody[:, None], extra)       # (B, W, T, P)
        pitch_logits = self.unet.head(feats)                     # (B, tracks, T, P)
        rest_logits = self.rest_head(feats.mean(dim=-1))         # (B, tracks, T)
        return torch.cat([pitch_logits, rest_logits[..., None]], dim=-1)

    def forward(self, melody: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The contract's `probs`: (B, tracks, T, P) in [0, 1]."""
        return F.softmax(self.logits(melody, z), dim=-1)[..., :-1]


class Critic(nn.Module):
    def __init__(self, cfg: GANConfig):
        super().__init__()
        w = cfg.critic_width
        self.net = nn.Sequential(
            nn.Conv2d(1 + cfg.tracks, w, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(w, w, (4, 4), stride=(2, 2), padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(w, 2 * w, (4, 4), stride=(2, 2), padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * w, 4 * w, (4, 4), stride=(2, 2), padding=1), nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, 1),
        )

    def forward(self, melody: torch.Tensor, voices: torch.Tensor) -> torch.Tensor:
        """melody (B, T, P), voices (B, tracks, T, P) -> score (B,)."""
        return self.net(torch.cat([melody[:, None], voices], dim=1)).squeeze(1)


def gradient_penalty(critic: nn.Module, melody: torch.Tensor, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
    mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    score = critic(melody, mixed)
    (grad,) = torch.autograd.grad(score.sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def voice_targets(voices: torch.Tensor, pitch_low: int, pitch_count: int) -> torch.Tensor:
    """(B, T, tracks) MIDI pitches or -1 -> class ids (B, tracks, T), rest = pitch_count."""
    ids = voices.long() - pitch_low
    ids = torch.where(voices < 0, torch.full_like(ids, pitch_count), ids)
    return ids.permute(0, 2, 1)


def best_of_k_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, k: int) -> torch.Tensor:
    """logits (k * B, tracks, T, classes) for k noise draws of the same B melodies (draw-major),
    targets (B, tracks, T) -> the mean over melodies of the lowest per-melody cross-entropy."""
    per_cell = F.cross_entropy(logits.permute(0, 3, 1, 2), targets.repeat(k, 1, 1), reduction="none")
    per_melody = per_cell.flatten(1).mean(dim=1).view(k, -1)            # (k, B)
    return per_melody.min(dim=0).values.mean()
