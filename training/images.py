"""Image conversions shared by data, training, evaluation and inference."""
from __future__ import annotations

import numpy as np


def on_white(image) -> np.ndarray:
    """PIL image / uint8 or float array (gray, RGB or RGBA) -> [H,W,3] float32 in [0,1] over white."""
    a = np.asarray(image)
    a = a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32)
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, -1)
    elif a.shape[-1] == 2:      # gray + alpha
        a = np.concatenate([np.repeat(a[..., :1], 3, -1), a[..., 1:]], -1)
    if a.shape[-1] == 4:
        alpha = a[..., 3:4]
        a = a[..., :3] * alpha + (1.0 - alpha)
    return np.clip(a[..., :3], 0.0, 1.0)


def to_uint8(img) -> np.ndarray:
    """Network image [3,H,W] tensor in [-1,1] -> HxWx3 uint8."""
    return ((img.float().clamp(-1, 1) + 1) * 127.5 + 0.5).byte().permute(1, 2, 0).cpu().numpy()
