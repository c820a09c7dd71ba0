"""A small U-Net that removes toon contour lines from artwork (PAniC-3D's illustration -> render bridge).

It predicts a residual on the lined image, so an untrained or line-free input
passes through almost unchanged.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU(),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU())


class LineRemovalUNet(nn.Module):
    def __init__(self, channels: int = 32, levels: int = 3, in_channels: int = 3):
        super().__init__()
        self.config = dict(channels=channels, levels=levels, in_channels=in_channels)
        chans = [channels * 2 ** i for i in range(levels + 1)]
        self.inc = _block(in_channels, chans[0])
        self.down = nn.ModuleList(_block(chans[i], chans[i + 1]) for i in range(levels))
        self.up = nn.ModuleList(_block(chans[i + 1] + chans[i], chans[i]) for i in reversed(range(levels)))
        self.out = nn.Conv2d(chans[0], in_channels, 1)
        nn.init.zeros_(self.out.weight)   # start as the identity
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B,3,H,W] in [-1,1] on white (H, W divisible by 2**levels) -> cleaned image, same range."""
        skips = [self.inc(x)]
        for down in self.down:
            skips.append(down(F.avg_pool2d(skips[-1], 2)))
        h = skips.pop()
        for up in self.up:
            skip = skips.pop()
            h = up(torch.cat([F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False), skip], 1))
        return (x + self.out(h)).clamp(-1, 1)
