"""A small 2-D U-Net over a piano roll (time x pitch), shared by the GAN generator and the AR-CNN."""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(8, c_out), nn.SiLU(),
        nn.Conv2d(c_out, c_out, 3, padding=1), nn.GroupNorm(8, c_out), nn.SiLU(),
    )


class UNet(nn.Module):
    """(B, c_in, T, P) -> (B, c_out, T, P). T and P are padded up to a multiple of 2**levels inside."""

    def __init__(self, c_in: int, c_out: int, width: int = 32, levels: int = 3, bottleneck_extra: int = 0):
        super().__init__()
        self.levels = levels
        chans = [width * 2 ** i for i in range(levels + 1)]
        self.down = nn.ModuleList([conv_block(c_in, chans[0])] +
                                  [conv_block(chans[i], chans[i + 1]) for i in range(levels)])
        self.mid = conv_block(chans[-1] + bottleneck_extra, chans[-1])
        self.up = nn.ModuleList([nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2) for i in range(levels)])
        self.dec = nn.ModuleList([conv_block(chans[i] * 2, chans[i]) for i in range(levels)])
        self.head = nn.Conv2d(chans[0], c_out, 1)
        self.out_channels = chans[0]

    def features(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """Last decoder features, cropped back to the input size: (B, width, T, P)."""
        t, p = x.shape[-2], x.shape[-1]
        m = 2 ** self.levels
        x = F.pad(x, (0, (-p) % m, 0, (-t) % m))
        skips = []
        h = x
        for i, block in enumerate(self.down):
            h = block(h)
            if i < self.levels:
                skips.append(h)
                h = F.max_pool2d(h, 2)
        if extra is not None:  # e.g. noise, broadcast over the bottleneck grid
            h = torch.cat([h, extra.expand(-1, -1, h.shape[2], h.shape[3])], dim=1)
        h = self.mid(h)
        for i in reversed(range(self.levels)):
            h = self.up[i](h)
            h = self.dec[i](torch.cat([h, skips[i]], dim=1))
        return h[..., :t, :p]

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.features(x, extra))
