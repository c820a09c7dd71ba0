"""Fusion of the front and back triplane features at each sample point.

Both fusions map (front feature, back feature) [B,N,C] at points ``xyz`` (grid
coordinates, [-1, 1] in the box) seen along ray directions ``dirs`` to a pair
(geometry feature, appearance feature), each [B,N,C].  The decoder reads
density from the geometry feature only and colour from the appearance
feature: density is a function of position alone (NeRF's sigma(x), c(x, d)),
so the shape, the mesh and the density regulariser do not depend on the
camera, while the view direction may still steer colour.

``DirectionAwareFusion`` (NOVA-3D's Direction-Aware Attention, _v1) attends
over the TWO candidates {front, back}: the query is built from the view
direction and the point, the keys from the features plus a learned embedding
of their source.  The released NOVA-3D code ran this attention over a
sequence of length 1 (softmax == 1, so the direction had no effect); here the
softmax really chooses between the views, so a point seen from behind can
take its appearance from the back triplane.  Its geometry feature is the
direction-blind concatenation; the attention output is added to it for the
appearance.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def fourier(x: torch.Tensor, n_freqs: int) -> torch.Tensor:
    """[..., D] -> [..., D * (1 + 2 * n_freqs)]: x, sin(2^k pi x), cos(2^k pi x)."""
    freqs = (2.0 ** torch.arange(n_freqs, device=x.device, dtype=x.dtype)) * math.pi
    xf = x[..., None] * freqs                                     # [...,D,K]
    return torch.cat([x, xf.sin().flatten(-2), xf.cos().flatten(-2)], -1)


class ConcatFusion(nn.Module):
    """_v0: concatenate front and back features per point, then a linear layer. Direction-blind: the one
    feature serves geometry and appearance."""

    def __init__(self, channels: int = 32):
        super().__init__()
        self.proj = nn.Linear(2 * channels, channels)

    def geometry(self, f_front, f_back):
        return self.proj(torch.cat([f_front, f_back], -1))

    def forward(self, f_front, f_back, xyz=None, dirs=None, return_attention: bool = False):
        out = self.geometry(f_front, f_back)
        return ((out, out), None) if return_attention else (out, out)


class DirectionAwareFusion(nn.Module):
    """_v1: softmax attention over {front, back} with direction/position queries."""

    def __init__(self, channels: int = 32, dim: int = 64, dir_freqs: int = 4, pos_freqs: int = 4):
        super().__init__()
        self.dim, self.dir_freqs, self.pos_freqs = dim, dir_freqs, pos_freqs
        self.geo = nn.Linear(2 * channels, channels)              # position only: feeds density
        q_in = 3 * (1 + 2 * dir_freqs) + 3 * (1 + 2 * pos_freqs)
        self.query = nn.Sequential(nn.Linear(q_in, dim), nn.Softplus(), nn.Linear(dim, dim))
        self.key = nn.Linear(channels, dim)
        self.value = nn.Linear(channels, dim)
        self.source = nn.Parameter(torch.randn(2, dim) * 0.5)    # learned "front" / "back" embeddings
        self.out = nn.Linear(dim, channels)

    def geometry(self, f_front, f_back):
        return self.geo(torch.cat([f_front, f_back], -1))

    def forward(self, f_front, f_back, xyz, dirs, return_attention: bool = False):
        geo = self.geometry(f_front, f_back)
        q = self.query(torch.cat([fourier(dirs, self.dir_freqs), fourier(xyz, self.pos_freqs)], -1))
        f = torch.stack([f_front, f_back], -2)                       # [B,N,2,C]
        k = self.key(f) + self.source.to(f.dtype)                     # [B,N,2,dim]
        logits = (k @ q[..., None]).squeeze(-1) / math.sqrt(self.dim)  # [B,N,2]
        attn = F.softmax(logits.float(), -1).to(f.dtype)
        app = geo + self.out((attn[..., None] * self.value(f)).sum(-2))
        return ((geo, app), attn) if return_attention else (geo, app)


FUSIONS = {"concat": ConcatFusion, "attention": DirectionAwareFusion}
