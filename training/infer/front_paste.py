"""Front pasting (REFERENCE section 4): the rendered pixels whose surface point the front camera sees
are replaced by the input front image.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from training import cameras


# ---------------------------------------------------------------- front pasting

def paste_front(image: torch.Tensor, xyz: torch.Tensor, alpha: torch.Tensor, front_image: torch.Tensor,
                front_depth: torch.Tensor, front_cam: torch.Tensor, tol: float,
                alpha_threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace rendered pixels by the input front image where their surface point is visible from the front.

    image [B,3,S,S]; xyz, alpha [B,3|1,n,n] (renderer outputs, upsampled to S here); front_image [B,3,H,W]
    (same value range as image); front_depth [B,1,m,m] the ray distance rendered from the orthographic
    front camera front_cam [B,25].  A point is visible when its depth along the front camera axis is
    within ``tol`` metres of the front depth at its projection.  Returns (image, pasted mask [B,1,S,S]).
    """
    B, _, S, _ = image.shape
    xyz = F.interpolate(xyz.float(), size=(S, S), mode="bilinear", align_corners=False)
    alpha = F.interpolate(alpha.float(), size=(S, S), mode="bilinear", align_corners=False)
    pts = xyz.flatten(2).transpose(1, 2)                                     # [B,S*S,3]
    uv, z = cameras.project(pts, front_cam)
    grid = (uv * 2 - 1).reshape(B, S, S, 2)
    d_front = F.grid_sample(front_depth.float(), grid, mode="bilinear", align_corners=False,
                            padding_mode="border")[:, 0]
    inside = ((uv >= 0) & (uv <= 1)).all(-1).reshape(B, S, S)
    visible = inside & ((z.reshape(B, S, S) - d_front).abs() < tol) & (alpha[:, 0] > alpha_threshold)
    src = F.grid_sample(front_image.float(), grid, mode="bilinear", align_corners=False, padding_mode="border")
    mask = visible[:, None].to(image.dtype)
    return image * (1 - mask) + src.to(image.dtype) * mask, mask


def front_camera(framing: str, batch: int, device=None) -> torch.Tensor:
    fr = cameras.get_framing(framing)
    return cameras.as_tensor([cameras.make_view("front", 0.0, 0.0, fr, ortho=True)] * batch, device)


@torch.no_grad()
def render_with_front_paste(G, cond: dict, c: torch.Tensor, neural_rendering_resolution: int | None = None,
                            tol: float | None = None, front_resolution: int | None = None,
                            z: torch.Tensor | None = None, **render_kw) -> dict:
    """G(cond, c) with front pasting (REFERENCE section 4); adds 'pasted_mask' to the output."""
    syn = G.synthesize(cond, z)
    out = G.render(syn, c, neural_rendering_resolution, **render_kw)
    B = c.shape[0]
    m = front_resolution or out["image_raw"].shape[-1]
    fcam = front_camera(G.framing, B, c.device)
    front = G.render(syn, fcam, m, superresolve=False, **render_kw)
    box = G.field.box_warp
    img, mask = paste_front(out["image"], out["image_xyz"], out["image_alpha"], cond["front"].to(out["image"]),
                            front["image_depth"], fcam, tol if tol is not None else 0.02 * box)
    out["image"], out["pasted_mask"] = img, mask
    return out
