"""Image encoders for the conditioning views.

All three share one output contract so generators can swap them: an image
[B, in_channels, H, W] (RGB in [-1, 1], masks in [0, 1]) -> features
[B, out_channels, H/32, W/32] (8x8 for a 256 px input, the level where the
triplane backbone adds them).

- ``ResNetEncoder``: torchvision ResNet up to layer4 + 1x1 projection (PAniC-3D
  and NOVA-3D's front encoder).
- ``PatchAggregationEncoder``: NOVA-3D's back-view encoder: patch embedding and
  PoolFormer blocks (pooling token mixer + MLP) in stages, a parallel
  high-resolution conv stream, and aggregation of every stage at the output
  resolution.
- ``MaskEncoder``: a small strided conv net for silhouettes.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from training.errors import UserError
from training.networks_stylegan2 import Conv2dLayer

log = logging.getLogger(__name__)

_RESNET_WIDTH = {18: 512, 34: 512, 50: 2048, 101: 2048, 152: 2048}
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_weights_file(depth):
    """(url, path in the torch hub cache) of torchvision's ImageNet ResNet weights."""
    import torchvision
    url = getattr(torchvision.models, f"ResNet{depth}_Weights").IMAGENET1K_V1.url
    return url, Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def _read_state_dict(path):
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: weights file not found")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt / not a torch file / pickled classes
        raise UserError(f"{path}: cannot read weights ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UserError(f"{path}: not a state dict of tensors")
    return {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}


class ResNetEncoder(nn.Module):
    """torchvision ResNet-``depth`` trunk (to layer4, stride 32) + 1x1 projection to ``out_channels``.

    stages=3 stops after layer3 (stride 16, a quarter of ResNet-18's weights): with a
    128-px input it still gives the 8x8 feature map of PAniC-3D, for small models.

    weights: None (random init), a path (a torchvision ResNet state dict, or a
    state dict of this encoder), or 'imagenet' (torchvision's file in the torch
    hub cache; missing -> UserError naming the file to download).
    """

    def __init__(self, depth=50, out_channels=512, weights=None, in_channels=3, stages=4):
        super().__init__()
        import torchvision
        if depth not in _RESNET_WIDTH:
            raise ValueError(f"ResNetEncoder: depth must be one of {sorted(_RESNET_WIDTH)}, got {depth}")
        if stages not in (3, 4):
            raise ValueError(f"ResNetEncoder: stages must be 3 or 4, got {stages}")
        self.depth, self.out_channels, self.in_channels, self.stages = depth, out_channels, in_channels, stages
        net = getattr(torchvision.models, f"resnet{depth}")(weights=None)
        net.fc = nn.Identity()
        net.avgpool = nn.Identity()
        if stages == 3:
            net.layer4 = nn.Identity()
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.net = net
        width = _RESNET_WIDTH[depth] // (2 if stages == 3 else 1)
        self.proj = Conv2dLayer(width, out_channels, kernel_size=1)
        mean = torch.tensor(_IMAGENET_MEAN).repeat(in_channels)[:in_channels] if in_channels != 3 else torch.tensor(_IMAGENET_MEAN)
        std = torch.tensor(_IMAGENET_STD).repeat(in_channels)[:in_channels] if in_channels != 3 else torch.tensor(_IMAGENET_STD)
        self.register_buffer("mean", mean.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, -1, 1, 1), persistent=False)
        self.weights_source = "random init"
        if weights is None:
            pass
        elif weights == "imagenet":
            url, path = imagenet_weights_file(depth)
            if not path.is_file():
                raise UserError(f"{path}: ImageNet weights for resnet{depth} missing; download {url} "
                                f"and save it at this path (or pass a weights path)")
            self._load_trunk(_read_state_dict(path), path)
            self.weights_source = f"imagenet ({path})"
        else:
            self._load(_read_state_dict(weights), weights)
        log.info("ResNetEncoder(resnet%d, in=%d, out=%d): %s", depth, in_channels, out_channels, self.weights_source)

    def _load_trunk(self, sd, path):
        sd = {k: v for k, v in sd.items() if not k.startswith("fc.") and not (self.stages == 3 and k.startswith("layer4."))}
        w = sd.get("conv1.weight")
        if w is not None and w.shape[1] != self.in_channels:  # adapt RGB stem to other channel counts
            sd["conv1.weight"] = w.mean(1, keepdim=True).repeat(1, self.in_channels, 1, 1) * (3 / self.in_channels)
        own = self.net.state_dict()
        missing = [k for k in own if k not in sd]
        bad = [k for k in sd if k not in own or sd[k].shape != own[k].shape]
        if missing or bad:
            raise UserError(f"{path}: not a resnet{self.depth} state dict "
                            f"(missing {missing[:3]}, unexpected/mismatched {bad[:3]})")
        self.net.load_state_dict(sd)

    def _load(self, sd, path):
        own = self.state_dict()
        if set(sd) == set(own):  # a saved ResNetEncoder
            bad = [k for k in sd if sd[k].shape != own[k].shape]
            if bad:
                raise UserError(f"{path}: shape mismatch for {bad[:3]}")
            self.load_state_dict(sd)
            self.weights_source = f"encoder state dict ({path})"
        else:
            self._load_trunk(sd, path)
            self.weights_source = f"resnet trunk ({path})"

    def forward(self, x):
        x = ((x + 1) / 2 - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        x = n.layer4(n.layer3(n.layer2(n.layer1(x))))
        return self.proj(x)


class PoolFormerBlock(nn.Module):
    """Pooling token mixer (avg-pool minus identity) + channel MLP, each residual with layer scale."""

    def __init__(self, dim, pool_size=3, mlp_ratio=4.0, layer_scale_init=1e-5):
        super().__init__()
        self.norm1 = nn.GroupNorm(1, dim)
        self.pool = nn.AvgPool2d(pool_size, stride=1, padding=pool_size // 2, count_include_pad=False)
        self.norm2 = nn.GroupNorm(1, dim)
        hidden = int(dim * mlp_ratio)
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.ls1 = nn.Parameter(torch.full([dim, 1, 1], float(layer_scale_init)))
        self.ls2 = nn.Parameter(torch.full([dim, 1, 1], float(layer_scale_init)))

    def forward(self, x):
        y = self.norm1(x)
        x = x + self.ls1 * (self.pool(y) - y)
        return x + self.ls2 * self.fc2(F.gelu(self.fc1(self.norm2(x))))


class PatchAggregationEncoder(nn.Module):
    """NOVA-3D Patch Aggregation Transformer (back-view encoder).

    Patch embedding (stride ``patch_size``), PoolFormer stages (``dims``,
    ``depths``; each later stage halves the resolution), a shallow conv stream
    that keeps the patch-embedding resolution (added to the embedded patches and
    kept to the end), and aggregation: every stage and the high-res stream are
    pooled to H/``out_stride`` and fused by a 1x1 projection.
    forward(x, return_highres=False) -> feat [B,out_channels,H/32,W/32]
    (and the high-res map [B,highres_channels,H/patch,W/patch]).
    """

    def __init__(self, in_channels=3, out_channels=512, patch_size=4, dims=(64, 128, 320, 512),
                 depths=(2, 2, 6, 2), pool_size=3, mlp_ratio=4.0, highres_channels=64, out_stride=32,
                 layer_scale_init=1e-5):
        super().__init__()
        if len(dims) != len(depths):
            raise ValueError("PatchAggregationEncoder: dims and depths must have the same length")
        self.out_stride, self.patch_size = out_stride, patch_size
        self.out_channels, self.highres_channels = out_channels, highres_channels
        k = patch_size + 3 if patch_size > 1 else 3  # overlapping patches (PoolFormer: 7x7 stride 4)
        self.patch_embed = nn.Conv2d(in_channels, dims[0], kernel_size=k, stride=patch_size,
                                     padding=(k - patch_size + 1) // 2)
        self.downs = nn.ModuleList(
            nn.Conv2d(dims[i - 1], dims[i], kernel_size=3, stride=2, padding=1) if i > 0 else nn.Identity()
            for i in range(len(dims)))
        self.stages = nn.ModuleList(
            nn.Sequential(*[PoolFormerBlock(d, pool_size, mlp_ratio, layer_scale_init) for _ in range(n)])
            for d, n in zip(dims, depths))
        # high-resolution stream: plain convs at the patch resolution, details the pooling blurs
        hr, layers, c = highres_channels, [], in_channels
        s = 1
        while s < patch_size:
            layers += [nn.Conv2d(c, hr, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
            c, s = hr, s * 2
        layers += [nn.Conv2d(c, hr, 3, padding=1), nn.LeakyReLU(0.2)]
        self.highres = nn.Sequential(*layers)
        self.highres_to_tokens = nn.Conv2d(hr, dims[0], 1)
        self.aggregate = Conv2dLayer(sum(dims) + hr, out_channels, kernel_size=1)

    def forward(self, x, return_highres=False):
        size = (x.shape[-2] // self.out_stride, x.shape[-1] // self.out_stride)
        hr = self.highres(x)
        t = self.patch_embed(x)
        t = t + self.highres_to_tokens(F.interpolate(hr, size=t.shape[-2:], mode="bilinear", align_corners=False)
                                       if hr.shape[-2:] != t.shape[-2:] else hr)
        feats = []
        for down, stage in zip(self.downs, self.stages):
            t = stage(down(t))
            feats.append(_to_size(t, size))
        feats.append(_to_size(hr, size))
        out = self.aggregate(torch.cat(feats, dim=1))
        return (out, hr) if return_highres else out


def _to_size(x, size):
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if x.shape[-1] > size[1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class MaskEncoder(nn.Module):
    """Silhouette [B,in_channels,H,W] in [0,1] -> [B,out_channels,H/2^num_down,W/2^num_down] (H/32 by default)."""

    def __init__(self, out_channels=512, in_channels=1, base_channels=32, max_channels=256, num_down=5):
        super().__init__()
        self.out_channels = out_channels
        layers = [Conv2dLayer(in_channels, base_channels, 3, activation="lrelu")]
        c = base_channels
        for _ in range(num_down):
            n = min(c * 2, max_channels)
            layers.append(Conv2dLayer(c, n, 3, activation="lrelu", down=2))
            c = n
        layers.append(Conv2dLayer(c, out_channels, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, mask):
        return self.net(mask * 2 - 1)
