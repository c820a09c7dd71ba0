"""Inference helpers: density cropping, front pasting, density grids and meshes.

All points are framed coordinates (metres, docs/DESIGN.md).  The helpers take
a generator ``G`` only through its public methods (``sample_density``,
``sample_color``, ``render``, ``synthesize``) and the planes it synthesised.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from training import cameras

AXIS_CAMERAS = {   # unit vector from the origin to each orthographic camera
    "front": (0.0, 0.0, 1.0), "back": (0.0, 0.0, -1.0), "left": (1.0, 0.0, 0.0),
    "right": (-1.0, 0.0, 0.0), "top": (0.0, 1.0, 0.0)}


def roi_bounds(roi, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """ROI as a cube side (centred) or a pair (lo[3], hi[3]) -> tensors lo, hi."""
    if isinstance(roi, (int, float)):
        h = float(roi) / 2
        lo, hi = [-h] * 3, [h] * 3
    else:
        lo, hi = roi
    return (torch.as_tensor(lo, dtype=torch.float32, device=device),
            torch.as_tensor(hi, dtype=torch.float32, device=device))


def crop_density(sigma: torch.Tensor, xyz: torch.Tensor, roi) -> torch.Tensor:
    """Zero density [B,N,1] at points [B,N,3] outside the ROI (a cube side or (lo, hi) box)."""
    lo, hi = roi_bounds(roi, xyz.device)
    inside = ((xyz >= lo) & (xyz <= hi)).all(-1, keepdim=True)
    return sigma * inside.to(sigma.dtype)


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


# ---------------------------------------------------------------- density grid and mesh

def _single(planes):
    p = planes["planes"] if isinstance(planes, dict) else planes
    if p.shape[0] != 1:
        raise ValueError(f"expected the planes of one character (batch 1), got batch {p.shape[0]}")
    return planes


def grid_axis(resolution: int, box: float) -> torch.Tensor:
    """Node positions along one axis: resolution points from -box/2 to box/2 inclusive."""
    return torch.linspace(-box / 2, box / 2, resolution)


@torch.no_grad()
def density_grid(G, planes, resolution: int = 256, chunk: int = 2 ** 18, box: float | None = None,
                 roi=None, device=None) -> torch.Tensor:
    """Density on a resolution^3 node grid over the box, indexed [x, y, z] (float32, on CPU).

    Points are generated and queried ``chunk`` at a time, so memory stays
    bounded by the chunk (the output itself is resolution^3 floats).
    """
    planes = _single(planes)
    p = planes["planes"] if isinstance(planes, dict) else planes
    device = device or p.device
    box = float(box if box is not None else G.field.box_warp)
    axis = grid_axis(resolution, box).to(device)
    total = resolution ** 3
    out = torch.empty(total, dtype=torch.float32)
    for s in range(0, total, chunk):
        idx = torch.arange(s, min(s + chunk, total), device=device)
        xyz = torch.stack([axis[idx // resolution ** 2], axis[(idx // resolution) % resolution],
                           axis[idx % resolution]], -1)[None]
        sigma = G.sample_density(planes, xyz)
        if roi is not None:
            sigma = crop_density(sigma, xyz, roi)
        out[s:s + idx.numel()] = sigma[0, :, 0].float().cpu()
    return out.reshape(resolution, resolution, resolution)


def occupancy(sigma: torch.Tensor, step: float = 1.0) -> np.ndarray:
    """1 - exp(-density * step): the opacity of a slab ``step`` metres thick.  Density is already
    activated by the decoder and is not activated again (REFERENCE lists the double activation as a defect).
    step = 1 reproduces the reference's 1 - exp(-density)."""
    return (1.0 - torch.exp(-sigma.double() * step)).numpy()


def nearest_axis_view_dirs(normals: torch.Tensor) -> torch.Tensor:
    """Ray direction of the axis camera (front/back/left/right/top) that best faces each normal [N,3]."""
    axes = torch.tensor(list(AXIS_CAMERAS.values()), dtype=normals.dtype, device=normals.device)
    best = (normals @ axes.T).argmax(-1)
    return -axes[best]


@torch.no_grad()
def extract_mesh(G, planes, resolution: int = 256, level: float = 0.5, step: float = 1.0,
                 chunk: int = 2 ** 18, roi=None, colors: str | None = "axis", box: float | None = None):
    """Marching cubes on the occupancy grid -> trimesh.Trimesh in framed coordinates.

    colors: 'axis' (vertex colour seen from the axis camera facing the normal), 'front' (seen from the
    front), or None.  An empty Trimesh is returned when the level is never crossed.
    """
    import trimesh
    from skimage import measure
    box = float(box if box is not None else G.field.box_warp)
    sigma = density_grid(G, planes, resolution, chunk, box=box, roi=roi)
    occ = occupancy(sigma, step)
    if not (occ.min() < level < occ.max()):
        return trimesh.Trimesh(vertices=np.zeros((0, 3)), faces=np.zeros((0, 3), dtype=np.int64))
    h = box / (resolution - 1)
    verts, faces, normals, _ = measure.marching_cubes(occ, level=level, spacing=(h, h, h))
    verts = verts - box / 2
    # occupied = larger values: skimage's normals then point outwards but its faces wind inwards
    faces = faces[:, ::-1]
    mesh = trimesh.Trimesh(vertices=verts, faces=np.ascontiguousarray(faces), vertex_normals=normals, process=False)
    if colors:
        p = planes["planes"] if isinstance(planes, dict) else planes
        v = torch.from_numpy(verts).float().to(p.device)
        n = torch.from_numpy(normals.copy()).float().to(p.device)
        dirs = nearest_axis_view_dirs(n) if colors == "axis" else \
            torch.tensor([0.0, 0.0, -1.0], device=p.device).expand_as(v)
        rgb = torch.cat([G.sample_color(planes, v[None, s:s + chunk], dirs[None, s:s + chunk])[0]
                         for s in range(0, v.shape[0], chunk)])
        rgba = np.concatenate([(rgb.cpu().numpy() * 255).round().astype(np.uint8),
                               np.full((v.shape[0], 1), 255, np.uint8)], 1)
        mesh.visual.vertex_colors = rgba
    return mesh


__all__ = ["crop_density", "roi_bounds", "paste_front", "render_with_front_paste", "density_grid",
           "occupancy", "extract_mesh", "nearest_axis_view_dirs", "front_camera", "grid_axis"]
