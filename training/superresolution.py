"""Super-resolution of the neural rendering (EG3D "hybrid" super-resolution).

The raw rendering (RGB + feature image at ``n`` px) is resized to
``input_resolution`` and passed through two StyleGAN2 synthesis blocks driven
by the generator's last w; their skip toRGB outputs refine the raw RGB up to
``img_resolution``.  ratio img/input of 4: both blocks upsample; 2: only the
second; 1: neither.  So 64/96/128 renders go to 512 with input_resolution=128
(64 and 96 are resized to 128 first, as EG3D does), 256 renders with
input_resolution=256.
"""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from training.networks_stylegan2 import SynthesisBlock


def resize(x, size):
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=size < x.shape[-1])


class SuperresolutionHybrid(nn.Module):
    def __init__(self, channels, img_resolution=512, input_resolution=128, w_dim=512, block_channels=(256, 128),
                 img_channels=3, conv_clamp=256, use_noise=True, channels_last=False):
        super().__init__()
        ratio = img_resolution // input_resolution
        if ratio not in (1, 2, 4) or ratio * input_resolution != img_resolution:
            raise ValueError(f"SuperresolutionHybrid: img_resolution/input_resolution must be 1, 2 or 4, "
                             f"got {img_resolution}/{input_resolution}")
        self.channels, self.img_resolution, self.input_resolution = channels, img_resolution, input_resolution
        up0, up1 = {1: (1, 1), 2: (1, 2), 4: (2, 2)}[ratio]
        r0 = input_resolution * up0
        self.block0 = SynthesisBlock(channels, block_channels[0], w_dim, r0, img_channels, up=up0,
                                     conv_clamp=conv_clamp, use_noise=use_noise, channels_last=channels_last)
        self.block1 = SynthesisBlock(block_channels[0], block_channels[1], w_dim, img_resolution, img_channels,
                                     is_last=True, up=up1, conv_clamp=conv_clamp, use_noise=use_noise,
                                     channels_last=channels_last)

    def forward(self, rgb, x_feat, ws, noise_mode="random", fused_modconv=None):
        """rgb [B,3,n,n], x_feat [B,channels,n,n], ws [B,num_ws,w_dim] (the last w is used)."""
        w = ws[:, -1:].expand(-1, 3, -1)
        x = resize(x_feat, self.input_resolution)
        rgb = resize(rgb, self.input_resolution).to(x.dtype)
        x, rgb = self.block0(x, rgb, w, noise_mode=noise_mode, fused_modconv=fused_modconv)
        x, rgb = self.block1(x, rgb, w, noise_mode=noise_mode, fused_modconv=fused_modconv)
        return rgb
