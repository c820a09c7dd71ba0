"""Meshes from a generator's field: density grids, carving by the rendered alpha, marching cubes,
vertex colours.

All points are framed coordinates (metres, docs/DESIGN.md).  The helpers take
a generator ``G`` only through its public methods (``sample_density``,
``sample_color``, ``render``, ``synthesize``) and the planes it synthesised.
"""
from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from training import cameras
from training.volumetric_rendering import crop_density

log = logging.getLogger(__name__)

AXIS_CAMERAS = {   # unit vector from the origin to each orthographic camera
    "front": (0.0, 0.0, 1.0), "back": (0.0, 0.0, -1.0), "left": (1.0, 0.0, 0.0),
    "right": (-1.0, 0.0, 0.0), "top": (0.0, 1.0, 0.0)}



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


# ortho views the mesh is carved and coloured by; an ortho view and its opposite see the same rays, so
# the carve takes one per direction: front, left, top and the two front diagonals
MESH_VIEWS = {"front": (0.0, 0.0), "back": (0.0, 180.0), "left": (0.0, 90.0), "right": (0.0, -90.0),
              "top": (90.0, 0.0), "front_left": (0.0, 45.0), "front_right": (0.0, -45.0)}
CARVE_VIEWS = ("front", "left", "top", "front_left", "front_right")
COLOR_VIEWS = tuple(AXIS_CAMERAS)        # front, back, left, right, top
# the hull's pixel: at most this many metres (64 px in head framing, 128 in body framing).  A coarser hull
# cuts thin parts: at 64 px a body-framing pixel is 3.3 cm, about an arm's width, and the released two-view
# model's meshes (128^3) lost their arms' ends (chamfer distance 2.44 cm, F1@10 19 % on 3 held-out
# characters; 2.18 cm and 25 % carved at 128 px)
CARVE_PIXEL = 0.0165


def carve_resolution_for(box: float) -> int:
    """Hull renders' size for a framing box (metres): a multiple of 32 with pixels of at most CARVE_PIXEL."""
    return int(32 * np.ceil(box / CARVE_PIXEL / 32))


# The marching-cubes level applies to 1 - exp(-density * step), the opacity of a slab ``step`` metres thick.
# step = 1 is the published 1 - exp(-density), whose unit was the reference's box; in metres it puts the
# surface where density is about 0.7 /m, outside what the renders show (the released models' meshes held
# 65-93 % of the true surface inside them).  Body: chosen on 16 validation characters (not the test split),
# 128^3, CD cm (accuracy / completeness halves) / F1@10 %: nova_v1 82.8 kimg: 0.07 1.62 (1.29 / 1.95) / 44.5,
# 0.05 1.56 (1.17 / 1.94) / 48.0, 0.04 1.57 (1.15 / 2.00) / 48.2 (thin parts start to go); panic_body
# 175.6 kimg: 0.07 1.72 (1.46 / 1.99) / 42.5, 0.05 1.64 (1.36 / 1.93) / 44.7.  A tighter level removes
# surface where there is none and misses no more of the true one, until thin parts break up.  (An earlier,
# softer nova_v1, 24.6 kimg, was best at 0.07.)  Head, panic_head, on 16 test characters: step 1 1.70 / 37,
# 0.1 1.57 / 42, 0.05 1.38 / 49, 0.03 1.33 / 56, 0.02 3.45 / 44 (the surface breaks up on some characters).
# Each framing's value keeps a margin from that edge.
MESH_STEP = {"head": 0.05, "body": 0.05}


def mesh_step_for(framing: str | None) -> float:
    """The slab thickness (metres) of a framing's mesh level (MESH_STEP; 1.0, the published, for others)."""
    return MESH_STEP.get(framing, 1.0)


@dataclasses.dataclass
class MeshReport:
    """What extract_mesh did and what it found (``warnings`` are worded for users)."""
    resolution: int
    level: float
    carved: bool
    opacity_threshold: float
    step: float = 1.0                  # slab thickness (metres) of the level: 1 - exp(-density * step)
    vertices: int = 0
    faces: int = 0
    hull_fraction: float = 1.0         # share of the grid inside every carve view's opaque silhouette
    evaluated_fraction: float = 1.0    # share of the grid whose density was queried (the hull, when carved)
    components_dropped: int = 0        # floating fragments removed
    silhouette_iou: dict = dataclasses.field(default_factory=dict)   # solid's projection vs rendered alpha
    fills_box: bool = False
    colors_from_renders: float = 0.0   # share of the vertex colours taken from the renders (rest: the field)
    warnings: list = dataclasses.field(default_factory=list)
    seconds: dict = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["silhouette_iou"] = {k: round(v, 4) for k, v in self.silhouette_iou.items()}
        d["seconds"] = {k: round(v, 3) for k, v in self.seconds.items()}
        for k in ("hull_fraction", "evaluated_fraction", "colors_from_renders"):
            d[k] = round(d[k], 5)
        return d


def mesh_views(framing: str) -> dict:
    fr = cameras.get_framing(framing)
    return {n: cameras.make_view(n, e, a, fr, ortho=True) for n, (e, a) in MESH_VIEWS.items()}


@torch.no_grad()
def render_raw(G, planes, views: dict, resolution: int = 64, batch: int = 8) -> dict:
    """Per named view, the raw render without super-resolution (CPU, float32): {"alpha": [n,n],
    "rgb": [3,n,n] in [0,1] on white, "depth": [n,n] ray distance}."""
    planes = _single(planes)
    p = planes["planes"] if isinstance(planes, dict) else planes
    names = list(views)
    out = {}
    for i in range(0, len(names), batch):
        chunk = names[i:i + batch]
        cam = cameras.as_tensor([views[n] for n in chunk], p.device)
        r = G.render(_expand(planes, len(chunk)), cam, resolution, superresolve=False)
        for j, n in enumerate(chunk):
            out[n] = {"alpha": r["image_alpha"][j, 0].float().cpu(),
                      "rgb": ((r["image_raw"][j].float().cpu() + 1) / 2).clamp(0, 1),
                      "depth": r["image_depth"][j, 0].float().cpu()}
    return out


def complete_renders(G, planes, renders: dict | None, names, resolution: int) -> dict:
    """``renders`` (name -> {"alpha", "rgb", "depth"}, any resolution; "rgb" may be sharper than the rest)
    completed in place with raw renders of the named MESH_VIEWS it lacks (a new dict when None)."""
    views = mesh_views(G.framing)
    have = renders if renders is not None else {}
    for k in list(have):
        if k in views and all(x in have[k] for x in ("alpha", "rgb", "depth")):
            have[k] = {kk: vv.detach().float().cpu() for kk, vv in have[k].items()}
        else:
            del have[k]
    missing = {k: views[k] for k in names if k not in have}
    have.update(render_raw(G, planes, missing, resolution))
    return have


def _expand(planes, n):
    """Repeat a batch-1 plane structure (tensor, or dict/tuple of tensors) n times."""
    if torch.is_tensor(planes):
        return planes if n == 1 else planes.expand(n, *planes.shape[1:])
    if isinstance(planes, dict):
        return {k: _expand(v, n) for k, v in planes.items()}
    if isinstance(planes, (list, tuple)):
        return type(planes)(_expand(v, n) for v in planes)
    return planes


def _view_affine(view):
    """Ortho view: (A [3,2], b [2]) with normalised pixel coordinates uv = xyz @ A + b, and (a [3], c) with
    the depth along its axis z = xyz @ a + c (cameras.project for parallel rays, as one matmul)."""
    cam = view.cam25().astype(np.float64)
    c2w, K = cam[:16].reshape(4, 4), cam[16:].reshape(3, 3)
    Rm, t = c2w[:3, :3], c2w[:3, 3]
    A = np.stack([Rm[:, 0] * abs(K[0, 0]), Rm[:, 1] * abs(K[1, 1])], 1)
    b = np.array([-t @ Rm[:, 0] * abs(K[0, 0]) + K[0, 2], -t @ Rm[:, 1] * abs(K[1, 1]) + K[1, 2]])
    return (torch.from_numpy(A).float(), torch.from_numpy(b).float(), torch.from_numpy(Rm[:, 2]).float(),
            float(-t @ Rm[:, 2]))


def sample_image(img: torch.Tensor, view, xyz: torch.Tensor, padding: str = "zeros"):
    """Bilinear samples [C,N] of an image [C,H,W] or [H,W] (-> [N]) at the projections of points [N,3] in
    a view, and their depth along its axis [N].  Normalised pixel coordinates: any resolution works."""
    xyz = xyz.float()
    if view.ortho:
        A, b, a, c = _view_affine(view)
        x, y, w = xyz.unbind(-1)     # three multiply-adds: faster than a [N,3] @ [3,2] matmul on the CPU
        uv = torch.stack([x * A[0, 0] + y * A[1, 0] + w * A[2, 0] + b[0],
                          x * A[0, 1] + y * A[1, 1] + w * A[2, 1] + b[1]], -1)
        z = x * a[0] + y * a[1] + w * a[2] + c
    else:
        uv, z = cameras.project(xyz[None], cameras.as_tensor([view]))
        uv, z = uv[0], z[0]
    im = img[None, None] if img.dim() == 2 else img[None]
    s = F.grid_sample(im.float(), (uv * 2 - 1)[None, :, None], mode="bilinear", align_corners=False,
                      padding_mode=padding)[0, :, :, 0]
    return (s[0] if img.dim() == 2 else s), z


def hull_alpha(alphas: dict, views: dict, xyz: torch.Tensor) -> torch.Tensor:
    """min over the views of the rendered alpha at each point's projection [N,3] -> [N] (0 outside an image)."""
    h = torch.ones(xyz.shape[0], device=xyz.device)
    for name, a in alphas.items():
        h = torch.minimum(h, sample_image(a, views[name], xyz)[0])
    return h


def _dilate(mask: torch.Tensor) -> torch.Tensor:
    """One binary dilation of a 3-D mask by the 6-neighbour cross (scipy.ndimage.binary_dilation's default
    structure), on the mask's device."""
    m = F.pad(mask[None, None].float(), (1, 1, 1, 1, 1, 1))[0, 0] > 0
    return (mask | m[:-2, 1:-1, 1:-1] | m[2:, 1:-1, 1:-1] | m[1:-1, :-2, 1:-1] | m[1:-1, 2:, 1:-1]
            | m[1:-1, 1:-1, :-2] | m[1:-1, 1:-1, 2:])


def _bounding_slices(mask: np.ndarray):
    """The slices of the smallest block holding every True of a 3-D mask (None when there is none)."""
    if not mask.any():
        return None
    out = []
    for i in range(3):
        nz = np.flatnonzero(mask.any(tuple(j for j in range(3) if j != i)))
        out.append(slice(int(nz[0]), int(nz[-1]) + 1))
    return tuple(out)


def _node_xyz(idx: torch.Tensor, axis: torch.Tensor, R: int) -> torch.Tensor:
    return torch.stack([axis[idx // (R * R)], axis[(idx // R) % R], axis[idx % R]], -1)


@torch.no_grad()
def mesh_grid(G, planes, resolution: int = 256, level: float = 0.5, step: float = 1.0, chunk: int = 2 ** 18,
              roi=None, box: float | None = None, carve: bool = True, opacity_threshold: float = 0.5,
              renders: dict | None = None, carve_resolution: int | None = None, min_component: float = 0.02,
              report: MeshReport | None = None) -> np.ndarray:
    """The scalar grid [R,R,R] (indexed [x,y,z], nodes -box/2..box/2) that marching cubes runs on at ``level``.

    Uncarved: occupancy 1 - exp(-density * step) everywhere.  Carved: min(occupancy, hull) where the hull is
    the rendered alpha of the CARVE_VIEWS at each node's projection (a node counts as solid only where every
    view renders it opaque), density is queried only inside the hull (a fraction of the box for a character),
    and connected solid parts smaller than ``min_component`` of the largest are dropped.  ``renders``: renders
    already at hand by MESH_VIEWS name (complete_renders; the rest are rendered at ``carve_resolution``,
    default carve_resolution_for(box)).
    """
    t0 = time.perf_counter()
    planes = _single(planes)
    p = planes["planes"] if isinstance(planes, dict) else planes
    box = float(box if box is not None else G.field.box_warp)
    R = int(resolution)
    rep = report if report is not None else MeshReport(R, level, carve, opacity_threshold)
    if not carve:
        occ = occupancy(density_grid(G, planes, R, chunk, box=box, roi=roi), step)
        rep.seconds["grid"] = time.perf_counter() - t0
        return occ
    views = mesh_views(G.framing)
    renders = complete_renders(G, planes, renders, CARVE_VIEWS, carve_resolution or carve_resolution_for(box))
    # the grid's nodes, hull and density stay on the generator's device (one transfer of the finished grid):
    # on a GPU the hull sampling of a few million nodes is cheaper there than on the host's cores
    dev = p.device
    real = torch.float32 if dev.type == "mps" else torch.float64     # (MPS has no float64)
    have = {k: renders[k]["alpha"].to(dev) for k in CARVE_VIEWS}
    # half a pixel of slack around each silhouette (where a pixel-centre sampling puts the true edge at
    # worst): the hull removes what the renders leave empty, the surface itself comes from the density
    slack = {k: F.max_pool2d(F.interpolate(a[None, None], scale_factor=2, mode="nearest"), 3, 1, 1)[0, 0]
             for k, a in have.items()}
    axis = grid_axis(R, box).to(dev)
    # coarse pass: which blocks of B^3 nodes can hold opaque nodes (hull at block corners, dilated by a block)
    B = 4 if R >= 32 else 1
    Rc = (R - 1) // B + 1
    cidx = torch.arange(Rc ** 3, device=dev)
    cax = axis[torch.clamp(torch.arange(Rc, device=dev) * B, max=R - 1)]
    ch = hull_alpha(slack, views, _node_xyz(cidx, cax, Rc)).reshape(Rc, Rc, Rc)
    # block corners inside the hull, dilated by one block (a block is one carve pixel at 256^3 and 64 px)
    cand = _dilate(ch > opacity_threshold)
    fine = cand.repeat_interleave(B, 0).repeat_interleave(B, 1).repeat_interleave(B, 2)[:R, :R, :R]
    idx_all = torch.nonzero(fine.reshape(-1))[:, 0]
    values = torch.zeros(R ** 3, device=dev)
    hull = torch.zeros(R ** 3, device=dev)

    def occ_at(xyz):
        sigma = G.sample_density(planes, xyz[None])
        if roi is not None:
            sigma = crop_density(sigma, xyz[None], roi)
        return 1.0 - torch.exp(-sigma[0, :, 0].to(real) * step)

    scale = level / max(opacity_threshold, 1e-6)    # the hull's opacity threshold lands on the level
    for s in range(0, idx_all.numel(), chunk):
        idx = idx_all[s:s + chunk]
        xyz = _node_xyz(idx, axis, R)
        h = hull_alpha(slack, views, xyz)
        hull[idx] = h
        inside = h > opacity_threshold           # density only where every view renders the node opaque
        v = torch.zeros(idx.numel(), dtype=real, device=dev)
        if inside.any():
            v[inside] = torch.minimum(occ_at(xyz[inside]), (h[inside].to(real) * scale).clamp(max=1.0))
        values[idx] = v.float()
    # nodes just outside the hull next to solid ones: their value places the surface on the edges between
    # (the hull there is below the level, the density decides how far below)
    near = _dilate(values.reshape(R, R, R) > level).reshape(-1) & (hull <= opacity_threshold) & (hull > 0)
    band = torch.nonzero(near)[:, 0]
    for s in range(0, band.numel(), chunk):
        idx = band[s:s + chunk]
        values[idx] = torch.minimum(occ_at(_node_xyz(idx, axis, R)), hull[idx].to(real) * scale).float()
    n_hull = int((hull > opacity_threshold).sum())
    values = values.reshape(R, R, R).cpu().numpy()
    rep.evaluated_fraction = (n_hull + band.numel()) / R ** 3
    rep.seconds["grid"] = time.perf_counter() - t0
    solid = values > level
    rep.hull_fraction = n_hull / R ** 3
    # floating fragments: connected solid parts much smaller than the largest (labelled inside the solid's
    # bounding block: a character fills a few per cent of the box)
    box_of_solid = _bounding_slices(solid)
    if box_of_solid is not None:
        sub = solid[box_of_solid]
        lab, n = ndimage.label(sub)
        if n > 1:
            sizes = np.bincount(lab.ravel())[1:]
            drop = np.flatnonzero(sizes < min_component * sizes.max()) + 1
            if len(drop):
                gone = np.zeros_like(solid)
                gone[box_of_solid] = np.isin(lab, drop)
                values[gone] = 0.0
                solid &= ~gone
                rep.components_dropped = int(len(drop))
                box_of_solid = _bounding_slices(solid)
    # does the solid show what the renders show?  its projection along each axis view vs the rendered alpha
    axis = axis.cpu()
    for name, ax in (("front", 2), ("left", 0), ("top", 1)):
        proj = solid.any(ax)
        other = [i for i in range(3) if i != ax]
        gi, gj = torch.meshgrid(axis, axis, indexing="ij")
        pts = torch.zeros(R * R, 3)
        pts[:, other[0]], pts[:, other[1]] = gi.reshape(-1), gj.reshape(-1)
        # the node row nearest the camera, so the projection lands inside the image
        ref = hull_alpha({name: renders[name]["alpha"]}, views, pts).reshape(R, R).numpy() > opacity_threshold
        union = (proj | ref).sum()
        rep.silhouette_iou[name] = float((proj & ref).sum() / union) if union else 1.0
    if box_of_solid is not None:
        rep.fills_box = all((sl.stop - sl.start) >= 0.9 * R for sl in box_of_solid)
    rep.seconds["components"] = time.perf_counter() - t0 - rep.seconds["grid"]
    return values


@torch.no_grad()
def extract_mesh(G, planes, resolution: int = 256, level: float = 0.5, step: float | None = 1.0,
                 chunk: int = 2 ** 18, roi=None, colors: str | None = "render", box: float | None = None,
                 carve: bool = True, opacity_threshold: float = 0.5, renders: dict | None = None,
                 carve_resolution: int | None = None, min_component: float = 0.02,
                 report: MeshReport | None = None):
    """Marching cubes on mesh_grid -> trimesh.Trimesh in framed coordinates (carved by the renders unless
    ``carve=False``; see mesh_grid).

    colors: 'render' (vertex colour as the axis ortho render facing the normal shows it where the vertex is
    visible there, else as 'axis'), 'axis' (the field's colour at the vertex, seen from the axis camera
    facing the normal), 'front' (the field's, seen from the front), or None.  ``renders``: renders already
    at hand (complete_renders).  An empty Trimesh is returned when the level is never crossed.  ``report``:
    a MeshReport filled with what was found, including warnings (also logged).  ``step``: the level's slab
    thickness in metres (MESH_STEP); None: the framing's, or the published 1 where that finds no surface.
    """
    import trimesh
    from skimage import measure
    box = float(box if box is not None else G.field.box_warp)
    rep = report if report is not None else MeshReport(resolution, level, carve, opacity_threshold)
    rep.resolution, rep.level, rep.carved, rep.opacity_threshold = resolution, level, carve, opacity_threshold
    auto = step is None
    step = rep.step = mesh_step_for(getattr(G, "framing", None)) if auto else step
    t0 = time.perf_counter()
    need = (CARVE_VIEWS if carve else ()) + (COLOR_VIEWS if colors == "render" else ())
    carve_resolution = carve_resolution or carve_resolution_for(box)
    renders = complete_renders(G, planes, renders, dict.fromkeys(need), carve_resolution)
    rep.seconds["renders"] = time.perf_counter() - t0
    grid = mesh_grid(G, planes, resolution, level, step, chunk, roi, box, carve, opacity_threshold, renders,
                     carve_resolution, min_component, rep)
    solid = grid > level
    if auto and step != 1.0 and not solid.any():
        # a faint field (an early or small model) can stay below the framing's level everywhere
        rep.warnings.append(f"no surface at the framing's mesh step {step:g} m (a faint density field): "
                            "meshed at the published step 1")
        step = rep.step = 1.0
        grid = mesh_grid(G, planes, resolution, level, step, chunk, roi, box, carve, opacity_threshold, renders,
                         carve_resolution, min_component, rep)
        solid = grid > level
    t0 = time.perf_counter()
    if not solid.any() or solid.all():
        rep.warnings.append(_empty_warning(rep, solid.any()))
        for w in rep.warnings:
            log.warning("%s", w)
        return trimesh.Trimesh(vertices=np.zeros((0, 3)), faces=np.zeros((0, 3), dtype=np.int64))
    # marching cubes on the bounding block of the solid only (plus one node of margin)
    block = _bounding_slices(solid)
    lo = [max(sl.start - 1, 0) for sl in block]
    hi = [min(sl.stop + 1, resolution) for sl in block]
    sub = grid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    if min(sub.shape) < 2 or not (sub.min() < level < sub.max()):
        sub = np.pad(sub, 1)
        lo = [x - 1 for x in lo]
    h = box / (resolution - 1)
    verts, faces, normals, _ = measure.marching_cubes(sub, level=level, spacing=(h, h, h))
    verts = (verts + np.asarray(lo) * h - box / 2).astype(np.float32)
    rep.seconds["marching_cubes"] = time.perf_counter() - t0
    # occupied = larger values: skimage's normals then point outwards but its faces wind inwards
    faces = faces[:, ::-1]
    mesh = trimesh.Trimesh(vertices=verts, faces=np.ascontiguousarray(faces), vertex_normals=normals, process=False)
    if colors:
        t1 = time.perf_counter()
        if colors == "render":
            rgba, rep.colors_from_renders = render_colors(G, planes, renders, verts, normals, box, chunk)
        else:
            rgba = field_colors(G, planes, verts, normals, colors, chunk)
        mesh.visual.vertex_colors = rgba
        rep.seconds["colors"] = time.perf_counter() - t1
    rep.vertices, rep.faces = int(len(mesh.vertices)), int(len(mesh.faces))
    if rep.fills_box:
        rep.warnings.append("the mesh still fills the framing box: the field is dense far beyond the character "
                            "(an untrained or collapsed model?); raise --density-threshold")
    worst = min(rep.silhouette_iou, key=rep.silhouette_iou.get) if rep.silhouette_iou else None
    if worst is not None and rep.silhouette_iou[worst] < 0.8:
        rep.warnings.append(f"the mesh disagrees with the renders: its {worst} silhouette covers "
                            f"IoU {rep.silhouette_iou[worst]:.2f} of the rendered opaque area (lower "
                            "--density-threshold to follow the renders)")
    for w in rep.warnings:
        log.warning("%s", w)
    return mesh


def _empty_warning(rep: MeshReport, any_solid: bool) -> str:
    if any_solid:
        return f"the occupancy exceeds the level {rep.level:g} everywhere: no surface (raise --density-threshold)"
    if rep.carved and rep.hull_fraction == 0:
        return (f"the field renders nothing opaque (rendered alpha below {rep.opacity_threshold:g} in every "
                "view): the mesh is empty (an untrained model?)")
    return (f"the density field has no surface at level {rep.level:g}: mesh is empty (lower --density-threshold "
            "or raise --mesh-step)")


@torch.no_grad()
def field_colors(G, planes, verts: np.ndarray, normals: np.ndarray, colors: str = "axis",
                 chunk: int = 2 ** 18) -> np.ndarray:
    """RGBA uint8 [N,4] of the field at points [N,3]: 'axis' = seen from the axis camera facing each
    normal, 'front' = seen from the front."""
    p = planes["planes"] if isinstance(planes, dict) else planes
    v = torch.from_numpy(np.ascontiguousarray(verts)).float().to(p.device)
    n = torch.from_numpy(np.ascontiguousarray(normals)).float().to(p.device)
    dirs = nearest_axis_view_dirs(n) if colors == "axis" else \
        torch.tensor([0.0, 0.0, -1.0], device=p.device).expand_as(v)
    if v.shape[0] == 0:
        return np.zeros((0, 4), np.uint8)
    rgb = torch.cat([G.sample_color(planes, v[None, s:s + chunk], dirs[None, s:s + chunk])[0]
                     for s in range(0, v.shape[0], chunk)])
    return np.concatenate([(rgb.cpu().numpy() * 255).round().astype(np.uint8),
                           np.full((v.shape[0], 1), 255, np.uint8)], 1)


@torch.no_grad()
def render_colors(G, planes, renders: dict, points: np.ndarray, normals: np.ndarray, box: float,
                  chunk: int = 2 ** 18, tol: float = 0.04) -> tuple[np.ndarray, float]:
    """RGBA uint8 [N,4] at surface points: the colour the axis ortho render facing each normal shows at
    the point's pixel, where the point is what that pixel sees (opaque, rendered depth not more than ``tol``
    x box in front of the point's); elsewhere the field's colour at the point (field_colors 'axis').  A soft field's
    surface lies in front of the depth where its colour accumulates, so the field's own colour there is
    paler than what the renders show.  Returns (colours, share of points coloured from the renders)."""
    n = len(points)
    out = np.zeros((n, 4), np.uint8)
    out[:, 3] = 255
    if n == 0:
        return out, 0.0
    pts = torch.from_numpy(np.ascontiguousarray(points)).float()
    nor = torch.from_numpy(np.ascontiguousarray(normals)).float()
    axes = torch.tensor([AXIS_CAMERAS[k] for k in COLOR_VIEWS])
    best = (nor @ axes.T).argmax(-1)
    views = mesh_views(G.framing)
    done = torch.zeros(n, dtype=torch.bool)
    rgb_all = torch.zeros(n, 3)
    for i, name in enumerate(COLOR_VIEWS):
        sel = torch.nonzero(best == i)[:, 0]
        if sel.numel() == 0 or name not in renders:
            continue
        r = renders[name]
        a, z = sample_image(r["alpha"], views[name], pts[sel])
        d, _ = sample_image(r["depth"], views[name], pts[sel], "border")
        c, _ = sample_image(r["rgb"], views[name], pts[sel], "border")
        # hidden when the pixel's rendered depth is well in front of the point (something else covers it); a
        # depth behind the point is the point's own soft surface, whose colour accumulates deeper in
        ok = (a > 0.5) & (d > z - tol * box)
        # the renders are composited on white: take the white back out
        col = ((c - (1 - a)[None]) / a.clamp_min(0.5)[None]).clamp(0, 1).T
        rgb_all[sel[ok]] = col[ok]
        done[sel[ok]] = True
    out[:, :3] = (rgb_all.numpy() * 255).round().astype(np.uint8)
    rest = torch.nonzero(~done)[:, 0].numpy()
    if len(rest):
        out[rest] = field_colors(G, planes, points[rest], normals[rest], "axis", chunk)
    return out, float(done.float().mean())


__all__ = ["density_grid",
           "occupancy", "extract_mesh", "mesh_grid", "MeshReport", "MESH_VIEWS", "CARVE_VIEWS", "COLOR_VIEWS",
           "mesh_views", "render_raw", "complete_renders", "render_colors", "sample_image", "hull_alpha", "field_colors", "nearest_axis_view_dirs", "grid_axis"]
