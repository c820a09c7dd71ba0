"""Camera-conditioned discriminators.

``DualDiscriminator`` (EG3D): a StyleGAN2 residual discriminator on the
6-channel image cat[super-resolved image, raw rendering resized to the same
size], conditioned on the 25-d camera by projection (a mapping network turns
the camera into ``cmap``; the logit is <features, cmap>/sqrt(dim)).

``MaskDualDiscriminator`` (NOVA-3D): the same plus a separate branch on the
silhouette / segmentation mask sharing the camera embedding; its logit is
added and can be returned separately so the trainer can give it its own R1
weight (gamma 1.0 in NOVA-3D).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from training.networks_stylegan2 import (Conv2dLayer, FullyConnectedLayer, MappingNetwork, memory_format_of,
                                         filter2d, gaussian_filter)

_HALF = math.sqrt(0.5)


class DiscriminatorBlock(nn.Module):
    """Residual block: (fromRGB) conv3x3 -> conv3x3 down, plus a 1x1 down skip."""

    def __init__(self, in_channels, tmp_channels, out_channels, resolution, img_channels, activation="lrelu",
                 conv_clamp=None):
        super().__init__()
        self.in_channels, self.resolution = in_channels, resolution
        if in_channels == 0:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, activation=activation, conv_clamp=conv_clamp)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, activation=activation, conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, activation=activation, down=2, conv_clamp=conv_clamp)
        self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2)

    def forward(self, x, img):
        if self.in_channels == 0:
            x = self.fromrgb(img)
        y = self.skip(x, gain=_HALF)
        x = self.conv1(self.conv0(x), gain=_HALF)
        return y + x


def mbstd_group(group_size: int | None, n: int) -> int:
    """Samples per minibatch-std group in a batch of n: the largest divisor of n up to group_size (static:
    compile-friendly).  Group m holds samples m, m + n/G, m + 2n/G, ... (StyleGAN2's layout)."""
    g = min(group_size or n, n)
    while n % g:
        g -= 1
    return g


class MinibatchStdLayer(nn.Module):
    def __init__(self, group_size=4, num_channels=1):
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x):
        N, C, H, W = x.shape
        G = mbstd_group(self.group_size, N)
        Fc = self.num_channels
        y = x.float().reshape(G, -1, Fc, C // Fc, H, W)
        y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt()  # std over each group
        y = y.mean(dim=[2, 3, 4]).reshape(-1, Fc, 1, 1).repeat(G, 1, H, W)
        return torch.cat([x, y.to(x.dtype)], dim=1).contiguous(memory_format=memory_format_of(x))


class DiscriminatorEpilogue(nn.Module):
    def __init__(self, in_channels, cmap_dim, resolution, mbstd_group_size=4, mbstd_num_channels=1,
                 activation="lrelu", conv_clamp=None):
        super().__init__()
        self.cmap_dim = cmap_dim
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, 3, activation=activation,
                                conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * resolution ** 2, in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, cmap_dim if cmap_dim > 0 else 1)

    def forward(self, x, cmap=None):
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.out(self.fc(x.flatten(1)))
        if self.cmap_dim > 0:  # projection discriminator
            x = (x * cmap.to(x.dtype)).sum(dim=1, keepdim=True) * (1 / math.sqrt(self.cmap_dim))
        return x.float()


# ----------------------------------------------------------------------------
# D main on fakes and reals as one batch: half the launches, fuller kernels at D's small resolutions.  The
# two batches are interleaved so that every minibatch-std group of the joined batch is exactly one group of
# the batch run alone (same members), hence the same logits.

def pair_group(D, n: int) -> int | None:
    """The group size to join two batches of n for ``D`` (a DualDiscriminator, unwrapped), or None when
    joining would change the result: the minibatch-std group would differ for 2n samples, or the camera
    noise's scale (std over the batch) would see duplicated cameras."""
    if getattr(D, "disc_c_noise", 0) > 0:
        return None
    mbstd = D.b4.mbstd
    if mbstd is None:
        return 1
    g = mbstd_group(mbstd.group_size, n)
    return g if mbstd_group(mbstd.group_size, 2 * n) == g else None


def join_pair(a: torch.Tensor, b: torch.Tensor, group: int) -> torch.Tensor:
    """[n,...] + [n,...] -> [2n,...] laid out [group, (a|b), n/group]: a's minibatch-std groups, then b's."""
    n, rest = a.shape[0], a.shape[1:]
    return torch.stack([a.reshape(group, n // group, *rest), b.reshape(group, n // group, *rest)],
                       dim=1).reshape(2 * n, *rest)


def split_pair(x: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of join_pair."""
    n, rest = x.shape[0] // 2, x.shape[1:]
    x = x.reshape(group, 2, n // group, *rest)
    return x[:, 0].reshape(n, *rest), x[:, 1].reshape(n, *rest)


def _trunk(img_resolution, img_channels, channel_base, channel_max, conv_clamp, activation="lrelu"):
    log2 = int(round(math.log2(img_resolution)))
    if img_resolution < 8 or 2 ** log2 != img_resolution:
        raise ValueError(f"discriminator: img_resolution must be a power of two >= 8, got {img_resolution}")
    resolutions = [2 ** i for i in range(log2, 2, -1)]
    ch = {r: min(channel_base // r, channel_max) for r in resolutions + [4]}
    blocks = nn.ModuleList(
        DiscriminatorBlock(ch[r] if r < img_resolution else 0, ch[r], ch[r // 2], r, img_channels,
                           activation=activation, conv_clamp=conv_clamp)
        for r in resolutions)
    return blocks, ch[4]


def _resize(x, size):
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < x.shape[-1])


class DualDiscriminator(nn.Module):
    def __init__(self, c_dim=25, img_resolution=512, img_channels=3, channel_base=32768, channel_max=512,
                 mbstd_group_size=4, mbstd_num_channels=1, cmap_dim=None, conv_clamp=256, mapping_layers=8,
                 disc_c_noise=0.0, channels_last=False):
        super().__init__()
        self.channels_last = channels_last  # NHWC activations for cuDNN tensor-core kernels
        self.c_dim, self.img_resolution, self.img_channels = c_dim, img_resolution, img_channels
        self.disc_c_noise = disc_c_noise
        self.blocks, top = _trunk(img_resolution, img_channels * 2, channel_base, channel_max, conv_clamp)
        self.cmap_dim = top if cmap_dim is None else cmap_dim
        if c_dim == 0:
            self.cmap_dim = 0
        self.mapping = (MappingNetwork(0, c_dim, self.cmap_dim, num_ws=None, num_layers=mapping_layers,
                                       w_avg_beta=None) if c_dim > 0 else None)
        self.b4 = DiscriminatorEpilogue(top, self.cmap_dim, 4, mbstd_group_size, mbstd_num_channels,
                                        conv_clamp=conv_clamp)

    def camera_embedding(self, c):
        if self.mapping is None:
            return None
        if self.disc_c_noise > 0:  # EG3D: jitter the pose so D cannot rely on it alone
            c = c + torch.randn_like(c) * c.std(0) * self.disc_c_noise
        return self.mapping(None, c)

    def blur_inputs(self, img: dict, blur_sigma: float) -> dict:
        """``img`` with EG3D's input blur (the fade at the start of the GAN) applied as D applies it, the raw
        image first resized to the image's size.  The trainer blurs before calling a compiled D and passes
        blur_sigma=0: sigma changes every step, and inside the graph each value would compile a new one."""
        if blur_sigma <= 0:
            return img
        image = img["image"]
        f = gaussian_filter(blur_sigma).to(image.device)
        return dict(img, image=filter2d(image, f),
                    image_raw=filter2d(_resize(img["image_raw"], image.shape[-1]).to(image.dtype), f))

    def _trunk_input(self, x):
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def image_logits(self, img, cmap):
        image = img["image"]
        raw = _resize(img["image_raw"], image.shape[-1]).to(image.dtype)
        x_in = self._trunk_input(torch.cat([image, raw], dim=1))
        x = None
        for block in self.blocks:
            x = block(x, x_in)
        return self.b4(x, cmap)

    def forward(self, img, c, blur_sigma=0, update_emas=False):
        """img: dict(image [B,3,S,S], image_raw [B,3,n,n]); c [B,c_dim] -> logits [B,1] (float32)."""
        return self.image_logits(self.blur_inputs(img, blur_sigma), self.camera_embedding(c))


class MaskDualDiscriminator(DualDiscriminator):
    """DualDiscriminator + a mask branch on ``img['image_mask']`` [B,1,S,S] in [0,1] (resized to mask_resolution)."""

    def __init__(self, c_dim=25, img_resolution=512, img_channels=3, channel_base=32768, channel_max=512,
                 mbstd_group_size=4, mbstd_num_channels=1, cmap_dim=None, conv_clamp=256, mapping_layers=8,
                 disc_c_noise=0.0, mask_resolution=None, mask_channel_base=None, mask_channel_max=None,
                 channels_last=False):
        super().__init__(c_dim, img_resolution, img_channels, channel_base, channel_max, mbstd_group_size,
                         mbstd_num_channels, cmap_dim, conv_clamp, mapping_layers, disc_c_noise, channels_last)
        self.mask_resolution = mask_resolution or img_resolution
        mask_channel_base = mask_channel_base or channel_base // 4  # a silhouette needs less capacity
        mask_channel_max = mask_channel_max or channel_max
        self.mask_blocks, mtop = _trunk(self.mask_resolution, 1, mask_channel_base, mask_channel_max, conv_clamp)
        self.mask_b4 = DiscriminatorEpilogue(mtop, self.cmap_dim, 4, mbstd_group_size, mbstd_num_channels,
                                             conv_clamp=conv_clamp)

    def blur_inputs(self, img: dict, blur_sigma: float) -> dict:
        """Also the mask, at mask_resolution, blurred in [0, 1] (the zero padding then reads as background)."""
        if blur_sigma <= 0:
            return img
        out = super().blur_inputs(img, blur_sigma)
        f = gaussian_filter(blur_sigma).to(img["image_mask"].device)
        out["image_mask"] = filter2d(_resize(img["image_mask"], self.mask_resolution), f)
        return out

    def mask_logits(self, mask, cmap):
        x_in = self._trunk_input(_resize(mask, self.mask_resolution) * 2 - 1)
        x = None
        for block in self.mask_blocks:
            x = block(x, x_in)
        return self.mask_b4(x, cmap)

    def forward(self, img, c, blur_sigma=0, update_emas=False, return_parts=False):
        """-> logits [B,1] = image branch + mask branch; with return_parts a dict
        (logits, logits_image, logits_mask)."""
        cmap = self.camera_embedding(c)
        img = self.blur_inputs(img, blur_sigma)
        li = self.image_logits(img, cmap)
        lm = self.mask_logits(img["image_mask"], cmap)
        if return_parts:
            return {"logits": li + lm, "logits_image": li, "logits_mask": lm}
        return li + lm
