"""Preparing real artwork for reconstruction: matte, crop and scale into the training framing.

The model was trained on orthographic renders: body framing centres the
character's bounding box in a square of side 2.1 m, head framing puts the head
origin (head bone + 0.1 m) in the middle of a 0.7 m square.  Artwork has no
metric scale, so we place its silhouette the way the renders place theirs.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image
from scipy import ndimage

from training.errors import fail, load_image


@dataclasses.dataclass
class PreparedView:
    rgba: np.ndarray        # (S, S, 4) uint8, character on transparent background, in framing
    matte_source: str       # 'alpha' or 'background'
    bbox: tuple             # (top, left, bottom, right) of the silhouette in the output image


MIN_SIDE = 16     # pixels: anything smaller cannot hold a recognisable character


def load_artwork(path) -> np.ndarray:
    """The image as RGBA uint8, with high-bit-depth greyscale scaled down (not clipped) and a clear error
    for images too small to hold a character."""
    im = load_image(path)
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        # 16-bit / 32-bit greyscale: Pillow's convert() clips at 255, turning the picture white
        a = np.asarray(im).astype(np.float64)
        top = 1.0 if im.mode == "F" and a.max() <= 1.0 else (255.0 if a.max() <= 255 else 65535.0)
        if im.mode in ("I", "F") and a.max() > 65535:
            raise fail(path, f"{im.mode} image with values up to {a.max():g}: not a 8- or 16-bit picture")
        im = Image.fromarray((np.clip(a / top, 0, 1) * 255 + 0.5).astype(np.uint8), "L")
    w, h = im.size
    if min(w, h) < MIN_SIDE:
        raise fail(path, f"the image is {w}x{h} pixels: too small to hold a character "
                         f"(at least {MIN_SIDE}x{MIN_SIDE}; artwork of 256 px or more works best)")
    return np.asarray(im.convert("RGBA"))


def matte(path, rgba: np.ndarray, tolerance: float = 0.12) -> tuple[np.ndarray, str]:
    """Foreground alpha: the image's own alpha when it has one, else a flood fill of the plain background.

    The background colour is the median of the border pixels; pixels within
    ``tolerance`` (RGB distance, 0..1) of it and connected to the border are background.
    """
    alpha = rgba[..., 3].astype(np.float32) / 255.0
    if (alpha < 0.99).mean() > 0.01:          # the artwork carries a real alpha channel
        source = "alpha"
    else:
        rgb = rgba[..., :3].astype(np.float32) / 255.0
        border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
        bg = np.median(border, 0)
        spread = np.abs(border - bg).max(1)
        if (spread > tolerance).mean() > 0.5:
            raise fail(path, "no alpha channel and no plain background to separate the character from "
                             "(give an RGBA image with a transparent background)")
        close = np.linalg.norm(rgb - bg, axis=-1) < tolerance * np.sqrt(3)
        labels, _ = ndimage.label(close)
        edge_labels = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        background = np.isin(labels, edge_labels[edge_labels > 0])
        fg = ~ndimage.binary_opening(background, iterations=1)
        # keep the character: drop specks (vignette corners, noise) far smaller than the main body
        labels, n = ndimage.label(fg)
        if n > 1:
            sizes = ndimage.sum(fg, labels, range(1, n + 1))
            fg = np.isin(labels, 1 + np.nonzero(sizes >= 0.02 * sizes.max())[0])
        alpha = ndimage.gaussian_filter(fg.astype(np.float32), 0.7)   # soften the stair-step edge
        source = "background"
        if (alpha > 0.5).sum() < 16:
            raise fail(path, "no character found: the image is one plain colour (no alpha channel, and "
                             "nothing differs from the background colour)")
    if (alpha > 0.5).sum() < 16:
        raise fail(path, "the image has no foreground (alpha is empty)")
    return np.clip(alpha, 0, 1), source


def place_in_framing(path, rgba: np.ndarray, alpha: np.ndarray, framing: str, size: int,
                     fill: float = 0.75, head_fill: float = 0.62) -> tuple[np.ndarray, tuple]:
    """Crop to the silhouette and scale it into a ``size`` square as the renders frame characters.

    body: silhouette bounding box centred, its height ``fill`` of the image
    (a 1.6 m character in the 2.1 m box fills 0.76).  head: the top of the
    silhouette's widest upper part is treated as the head; its width fills
    ``head_fill`` of the image and the head centre sits slightly above the middle.
    """
    ys, xs = np.nonzero(alpha > 0.5)
    top, bottom, left, right = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    h, w = bottom - top, right - left
    if framing == "body":
        scale = fill * size / max(h, w * fill / 0.95)   # tall characters by height; wide ones never spill out
        cy, cx = (top + bottom) / 2, (left + right) / 2
    elif framing == "head":
        # head = upper part of the silhouette; take rows down to 1.2 x its width (portraits end at the shoulders)
        row_width = (alpha > 0.5).sum(1)
        upper = row_width[top:top + max(1, h // 3)]
        head_w = float(np.percentile(upper[upper > 0], 75)) if (upper > 0).any() else w
        scale = head_fill * size / max(head_w, 1.0)
        cols = np.nonzero((alpha[top:top + max(1, int(head_w))] > 0.5).any(0))[0]
        cx = (cols.min() + cols.max() + 1) / 2 if len(cols) else (left + right) / 2
        cy = top + 0.5 * head_w + 0.06 * size / scale   # head origin is 0.1 m above the head bone
    else:
        raise ValueError(f"unknown framing {framing!r}")
    premul = rgba.astype(np.float32) / 255.0
    premul[..., 3] = alpha
    premul[..., :3] *= alpha[..., None]
    # affine map output pixel -> input pixel
    inv = 1.0 / scale
    out = np.stack([
        ndimage.affine_transform(premul[..., k], [inv, inv],
                                 offset=[cy - size / 2 * inv, cx - size / 2 * inv],
                                 output_shape=(size, size), order=1, mode="constant", cval=0.0)
        for k in range(4)], -1)
    a = out[..., 3:4]
    rgb = np.where(a > 1e-4, out[..., :3] / np.maximum(a, 1e-4), 1.0)
    result = np.concatenate([rgb, a], -1)
    ys, xs = np.nonzero(a[..., 0] > 0.5)
    if len(ys) == 0:
        raise fail(path, "the character vanished when scaled into the framing")
    return (np.clip(result, 0, 1) * 255 + 0.5).astype(np.uint8), (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)


def prepare(path, framing: str, size: int = 512, **kw) -> PreparedView:
    rgba = load_artwork(path)
    alpha, source = matte(path, rgba)
    out, bbox = place_in_framing(path, rgba, alpha, framing, size, **kw)
    return PreparedView(out, source, bbox)


def silhouette_mismatch(front: np.ndarray, back: np.ndarray) -> float:
    """1 - IoU of the front silhouette and the mirrored back silhouette (0 = perfect mirror images)."""
    fa, ba = front[..., 3] > 127, back[..., 3] > 127
    bm = ba[:, ::-1]
    union = (fa | bm).sum()
    return 1.0 - (fa & bm).sum() / max(union, 1)


def to_tensor(rgba: np.ndarray, size: int | None = None):
    """RGBA uint8 -> ([3,H,W] on white in [-1,1], [1,H,W] mask) torch tensors, optionally resized."""
    import torch
    im = Image.fromarray(rgba)
    if size is not None and size != rgba.shape[0]:
        im = im.resize((size, size), Image.BOX)
    a = np.asarray(im).astype(np.float32) / 255.0
    rgb = a[..., :3] * a[..., 3:] + (1 - a[..., 3:])
    t = torch.from_numpy(rgb).permute(2, 0, 1) * 2 - 1
    return t, torch.from_numpy((a[..., 3] > 0.5).astype(np.float32))[None]


def prepare_as_is(path, size: int = 512) -> PreparedView:
    """Artwork already in the training framing (e.g. an ortho render): matte it, pad to a square
    (centred) and resize, without cropping to the silhouette."""
    rgba = load_artwork(path).copy()
    alpha, source = matte(path, rgba)
    rgba[..., 3] = (alpha * 255 + 0.5).astype(np.uint8)
    h, w = alpha.shape
    side = max(h, w)
    sq = np.zeros((side, side, 4), np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    sq[top:top + h, left:left + w] = rgba
    im = Image.fromarray(sq)
    if side != size:
        im = im.resize((size, size), Image.LANCZOS)
    out = np.asarray(im)
    ys, xs = np.nonzero(out[..., 3] > 127)
    if len(ys) == 0:
        raise fail(path, "the character vanished when resized")
    return PreparedView(out, source, (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1))
