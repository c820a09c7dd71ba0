"""Triplane sampling, the triplane decoder and the volume renderer.

Plane layout (each plane is stored the way its orthographic camera sees it, so
image-space conditioning lines up with the planes; see docs/models.md):

    plane 0  XY  = front view   grid (u, v) = ( x, -y), perpendicular axis z
    plane 1  XZ  = top view     grid (u, v) = ( x,  z), perpendicular axis y
    plane 2  YZ  = left view    grid (u, v) = (-z, -y), perpendicular axis x

Framed coordinates are scaled by ``2 / box_warp`` to the grid range [-1, 1].
Multi-layer planes ([B, 3, L*C, R, R], layer-major channels) hold L sheets
along the perpendicular axis, sheet l centred at ``(2l + 1) / L - 1``; samples
are linearly interpolated between sheets (clamped to the outer sheets).

The renderer clips every ray to its intersection with the box before placing
samples, so no sample is spent outside the region of interest (where the
planes are zero anyway) and the decoder never sees "outside" points.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from training import cameras, triplane_triton

# rows: (axis for grid u, sign), (axis for grid v, sign), perpendicular axis
PLANE_AXES = (((0, 1.0), (1, -1.0), 2),    # XY: front view
              ((0, 1.0), (2, 1.0), 1),     # XZ: top view
              ((2, -1.0), (1, -1.0), 0))   # YZ: left view


def plane_coords(xyz: torch.Tensor, box_warp: float) -> torch.Tensor:
    """Framed points [B,N,3] -> grid coords [B,3,N,3] = (u, v, perpendicular) per plane, in [-1, 1] inside the box."""
    p = xyz * (2.0 / box_warp)
    out = []
    for (iu, su), (iv, sv), iw in PLANE_AXES:
        out.append(torch.stack([p[..., iu] * su, p[..., iv] * sv, p[..., iw]], -1))
    return torch.stack(out, 1)


# How sample_planes reads the planes: "grid_sample" (F.grid_sample on the [C,R,R] planes) or "gather"
# (the planes as a channels-last table, the 4 (8 with sheets) corner rows of C contiguous values gathered
# and weighted: coalesced reads, and a backward that scatter-adds whole rows instead of single values
# strided by R*R; plain indexing that torch.compile fuses), or "triton": triplane_features (any number of
# sheets) by fused Triton kernels, forward and backward (training/triplane_triton.py; CUDA only: elsewhere,
# and for points that need a gradient, "gather").  Same numbers (tested); speed only.
LOOKUPS = ("grid_sample", "gather", "triton")
LOOKUP = LOOKUPS[0]


def sample_planes(planes: torch.Tensor, coords: torch.Tensor, layers: int = 1) -> torch.Tensor:
    """Bilinear lookup of all planes in one grid_sample (or one gather: ``LOOKUP``).

    planes [B,P,L*C,R,R], coords [B,P,N,3] -> features [B,P,N,C].  P is any
    number of planes (3 for one triplane, 6 for front+back stacked).
    """
    B, P, LC, R, _ = planes.shape
    N = coords.shape[2]
    C = LC // layers
    # fp32 lookups even under autocast: bf16 grid coordinates would snap to ~1/256 of the plane
    coords = coords.float()
    if LOOKUP != "grid_sample":     # reads the planes at their own width, interpolates in fp32
        return _sample_planes_gather(planes, coords, layers)
    planes = planes.float()
    if layers == 1:
        grid = coords[..., :2].reshape(B * P, 1, N, 2)
        f = F.grid_sample(planes.reshape(B * P, C, R, R), grid, mode="bilinear",
                          padding_mode="zeros", align_corners=False)               # [BP,C,1,N]
    else:
        # sheets along the perpendicular axis become the depth of a 3D texture
        vol = planes.reshape(B * P, layers, C, R, R).transpose(1, 2)               # [BP,C,L,R,R]
        w = coords[..., 2].clamp(1.0 / layers - 1.0, 1.0 - 1.0 / layers)
        grid = torch.cat([coords[..., :2], w[..., None]], -1).reshape(B * P, 1, 1, N, 3)
        f = F.grid_sample(vol, grid, mode="bilinear", padding_mode="zeros",
                          align_corners=False).reshape(B * P, C, 1, N)
    return f.reshape(B, P, C, N).transpose(2, 3)


class _GatherRows(torch.autograd.Function):
    """(table[idx] for idx in idxs) in fp32 from a table of any float dtype, the table's gradient summed in
    fp32 over all the lookups before one cast back: the (bf16 under autocast) planes are read at their own
    width, half the bytes of an fp32 copy, while each texel's gradient (a sum over thousands of points) is
    not rounded on the way; so the numbers are those of an fp32 copy of the table (tested).  On the H100's
    EG3D step: about 3.5 ms less GPU time than gathering from an fp32 copy (docs/results.md)."""

    @staticmethod
    def forward(ctx, table, *idxs):
        ctx.save_for_backward(*idxs)
        ctx.table_shape, ctx.table_dtype = table.shape, table.dtype
        rows = (table.index_select(0, i) for i in idxs)
        # no .float() on fp32 rows: under torch.compile that no-op makes each output an alias of an
        # intermediate, and the table's gradient came back as zeros (the planes, encoders and backbone of a
        # compiled training step learned nothing)
        return tuple(r if r.dtype == torch.float32 else r.float() for r in rows)

    @staticmethod
    def backward(ctx, *grads):
        g = grads[0].new_zeros(ctx.table_shape, dtype=torch.float32)
        for i, gi in zip(ctx.saved_tensors, grads):
            g.index_add_(0, i, gi.float())
        return (g.to(ctx.table_dtype),) + (None,) * len(grads)


def _sample_planes_gather(planes: torch.Tensor, coords: torch.Tensor, layers: int) -> torch.Tensor:
    """sample_planes by gathering channels-last rows: grid_sample's bilinear (trilinear across sheets)
    interpolation with align_corners=False and zero padding, written out.  The table keeps the planes'
    dtype; interpolation and gradients are fp32 (_GatherRows)."""
    B, P, LC, R, _ = planes.shape
    N, C = coords.shape[2], LC // layers
    table = planes.reshape(B * P, layers, C, R, R).permute(0, 1, 3, 4, 2).reshape(-1, C)
    base = (torch.arange(B * P, device=planes.device) * (layers * R * R)).view(B, P, 1)

    def axis(t, size):   # grid coordinate -> (lower index, [(offset, weight), (offset, weight)])
        i = ((t + 1) * size - 1) / 2
        i0 = i.floor()
        f = i - i0
        return i0.long(), ((0, 1 - f), (1, f))

    x0, wx = axis(coords[..., 0], R)
    y0, wy = axis(coords[..., 1], R)
    if layers == 1:
        z0, wz = torch.zeros_like(x0), ((0, None),)
    else:   # sheets: the same clamp as grid_sample's path below keeps z inside the outer sheets
        z0, wz = axis(coords[..., 2].clamp(1.0 / layers - 1.0, 1.0 - 1.0 / layers), layers)
    idxs, weights = [], []
    for dz, fz in wz:
        for dy, fy in wy:
            for dx, fx in wx:
                xi, yi, zi = x0 + dx, y0 + dy, z0 + dz
                inside = (xi >= 0) & (xi < R) & (yi >= 0) & (yi < R) & (zi >= 0) & (zi < layers)
                weights.append(fx * fy * inside if fz is None else fx * fy * fz * inside)
                idx = base + (zi.clamp(0, layers - 1) * R + yi.clamp(0, R - 1)) * R + xi.clamp(0, R - 1)
                idxs.append(idx.reshape(-1))
    out = None
    for w, rows in zip(weights, _GatherRows.apply(table, *idxs)):     # one gradient sum for all corners
        term = w[..., None] * rows.view(B, P, N, C)
        out = term if out is None else out + term
    return out


def fused_lookup(planes: torch.Tensor, xyz: torch.Tensor) -> bool:
    """Whether triplane_features runs the fused Triton kernel here (LOOKUP "triton", planes of any number of
    sheets on a device it runs on, points without gradient)."""
    return LOOKUP == "triton" and not xyz.requires_grad and triplane_triton.available(planes)


def triplane_features(planes: torch.Tensor, xyz: torch.Tensor, box_warp: float, layers: int = 1) -> torch.Tensor:
    """Mean of the three plane features at framed points: planes [B,3,L*C,R,R], xyz [B,N,3] -> [B,N,C]."""
    if fused_lookup(planes, xyz):
        return triplane_triton.triplane_mean(planes, xyz, box_warp, layers)
    return sample_planes(planes, plane_coords(xyz, box_warp), layers).mean(1)


DENSITY_ROW, FEATURE_ROWS = slice(0, 1), slice(1, None)     # OSGDecoder's outputs


class OSGDecoder(nn.Module):
    """Triplane feature -> (density, features). FC C->hidden, softplus, FC hidden->1+F."""

    def __init__(self, in_features: int = 32, hidden: int = 64, out_features: int = 32):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, 1 + out_features)

    def _mlp(self, feat: torch.Tensor, rows: slice = slice(None)) -> torch.Tensor:
        """The MLP's output ``rows`` (all: density then features) at ``feat``."""
        # the output rows are padded with zero rows to a multiple of 8: rows of 33 bf16 values are not
        # 16-byte aligned, and the GPU's GEMMs for their gradients fell back to slow unaligned kernels
        w, b = self.fc2.weight[rows], self.fc2.bias[rows]
        n, pad = w.shape[0], -w.shape[0] % 8
        if pad:
            w, b = F.pad(w, (0, 0, 0, pad)), F.pad(b, (0, pad))
        return F.linear(F.softplus(self.fc1(feat)), w, b)[..., :n]

    @staticmethod
    def _sigma(raw: torch.Tensor, density_noise: float = 0.0) -> torch.Tensor:
        if density_noise > 0:
            raw = raw + torch.randn_like(raw) * density_noise
        return F.softplus(raw.float() - 1.0)                         # REFERENCE density activation

    def density(self, feat: torch.Tensor) -> torch.Tensor:
        return self._sigma(self._mlp(feat, DENSITY_ROW))

    def forward(self, feat: torch.Tensor, density_noise: float = 0.0,
                appearance: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Density from ``feat``; colour/features from ``appearance`` when given (a view-dependent feature:
        the same MLP: its density row on ``feat``, its feature rows on ``appearance``), else from ``feat``."""
        if appearance is None or appearance is feat:
            x = self._mlp(feat)
            raw_sigma, raw_rgb = x[..., DENSITY_ROW], x[..., FEATURE_ROWS]
        else:   # the density row on the geometry feature, the feature rows on the appearance: each its part
            raw_sigma = self._mlp(feat, DENSITY_ROW)
            raw_rgb = self._mlp(appearance.to(feat.dtype), FEATURE_ROWS)
        sigma = self._sigma(raw_sigma, density_noise)
        rgb = torch.sigmoid(raw_rgb) * (1 + 2 * 0.001) - 0.001   # EG3D: lets features reach 0 and 1
        return sigma, rgb


# ------------------------------------------------------------------ rays

def ray_box(origins: torch.Tensor, dirs: torch.Tensor, half: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Slab test against the cube [-half, half]^3: entry and exit distances [B,R] (entry > exit: miss)."""
    inv = 1.0 / torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
    t0 = (-half - origins) * inv
    t1 = (half - origins) * inv
    return torch.minimum(t0, t1).amax(-1), torch.maximum(t0, t1).amin(-1)


def search_right(cdf: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """torch.searchsorted(cdf, u, right=True) for non-decreasing rows cdf [M,K], u [M,n]: the number of
    entries <= u.  Compiled, as that count (one fused reduction over K): inductor's searchsorted kernel
    (torch 2.11, Triton) failed to compile for the deterministic u, a query block broadcast along the rows
    ("Loop-carried variable low has initial type <[1, 8]> ... re-assigned to <[128, 8]>").  Eager,
    searchsorted itself (no [M,n,K] temporary)."""
    if torch.compiler.is_compiling():
        return (cdf[:, None, :] <= u[..., None]).sum(-1)
    return torch.searchsorted(cdf, u, right=True)


def sample_pdf(edges: torch.Tensor, weights: torch.Tensor, n: int, deterministic: bool) -> torch.Tensor:
    """Inverse-CDF samples [M,n] from a piecewise-constant pdf on bins edges [M,K+1], weights [M,K]."""
    pdf = weights / weights.sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), pdf.cumsum(-1)], -1).contiguous()
    M = weights.shape[0]
    if deterministic:
        u = torch.linspace(0.5 / n, 1 - 0.5 / n, n, device=weights.device).expand(M, n)
    else:
        u = torch.rand(M, n, device=weights.device)
    u = u.contiguous()
    idx = search_right(cdf, u).clamp(1, cdf.shape[-1] - 1)
    lo, hi = idx - 1, idx
    c0, c1 = cdf.gather(1, lo), cdf.gather(1, hi)
    e0, e1 = edges.gather(1, lo), edges.gather(1, hi)
    frac = (u - c0) / (c1 - c0).clamp_min(1e-8)
    return e0 + frac * (e1 - e0)


def compositing_weights(t: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Midpoint-rule alpha compositing weights in fp32 for sorted t, sigma [B,R,S].

    Returns the interval weights w [B,R,S-1] and per-sample weights [B,R,S] such that
    sum_i w_i * (f_i + f_{i+1}) / 2 == sum_s ws_s * f_s (no midpoint tensor needed).
    """
    t, sigma = t.float(), sigma.float()
    delta = t[..., 1:] - t[..., :-1]
    alpha = 1.0 - torch.exp(-0.5 * (sigma[..., 1:] + sigma[..., :-1]) * delta)
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[..., :1]), 1.0 - alpha + 1e-10], -1), -1)[..., :-1]
    w = alpha * trans
    return w, 0.5 * (F.pad(w, (0, 1)) + F.pad(w, (1, 0)))


def composite(t: torch.Tensor, sigma: torch.Tensor, feat: torch.Tensor):
    """t, sigma [B,R,S] (t sorted), feat [B,R,S,F] -> feature [B,R,F], alpha [B,R],
    depth numerator [B,R], interval weights [B,R,S-1]."""
    w, ws = compositing_weights(t, sigma)
    return torch.einsum("brs,brsf->brf", ws, feat.float()), w.sum(-1), (ws * t.float()).sum(-1), w


def _smooth_weights(w: torch.Tensor) -> torch.Tensor:
    """EG3D's max-pool + blur of the coarse weights so importance samples also cover the neighbours."""
    M = w.shape[0]
    w = F.max_pool1d(w.reshape(M, 1, -1), 3, 1, padding=1)
    w = F.avg_pool1d(F.pad(w, (1, 1), mode="replicate"), 3, 1)
    return w.reshape(M, -1) + 0.01


def render_rays(field, origins: torch.Tensor, dirs: torch.Tensor, *, box_warp: float,
                ray_start: float, ray_end: float, depth_resolution: int = 48,
                depth_resolution_importance: int = 48, clip_to_box: bool = True,
                white_back: bool = True, perturb: bool = True) -> dict:
    """March rays through a field.

    ``field(xyz [B,N,3], dirs [B,N,3]) -> (sigma [B,N,1], features [B,N,F] in [0,1])``.
    Returns features (white background composited where requested, in [0,1]),
    alpha (accumulated weight), depth (expected ray distance; ray_end where the
    ray hits nothing) and xyz (expected point), each [B,R,...].
    """
    B, R, _ = origins.shape
    t_near = torch.full((B, R), float(ray_start), device=origins.device)
    t_far = torch.full((B, R), float(ray_end), device=origins.device)
    if clip_to_box:
        enter, leave = ray_box(origins, dirs, box_warp / 2)
        t_near = torch.maximum(t_near, enter)
        t_far = torch.minimum(t_far, leave)
        t_far = torch.maximum(t_far, t_near)      # a miss becomes an empty interval: zero weight
    D = depth_resolution
    frac = torch.arange(D, device=origins.device, dtype=torch.float32)
    jitter = torch.rand(B, R, D, device=origins.device) if perturb else torch.full((B, R, D), 0.5, device=origins.device)
    span = (t_far - t_near)[..., None]
    t_c = t_near[..., None] + span * (frac + jitter) / D                   # one sample per stratum

    def run(t):
        S = t.shape[-1]
        xyz = (origins[:, :, None] + t[..., None] * dirs[:, :, None]).reshape(B, R * S, 3)
        d = dirs[:, :, None].expand(B, R, S, 3).reshape(B, R * S, 3)
        sigma, feat = field(xyz, d)
        return sigma.reshape(B, R, S), feat.reshape(B, R, S, -1)

    sigma, feat = run(t_c)
    if depth_resolution_importance > 0:
        with torch.no_grad():
            w, _ = compositing_weights(t_c, sigma)
            t_f = sample_pdf(t_c.reshape(B * R, D), _smooth_weights(w.reshape(B * R, D - 1)),
                             depth_resolution_importance, deterministic=not perturb).reshape(B, R, -1)
        sigma_f, feat_f = run(t_f)
        t_all, order = torch.sort(torch.cat([t_c, t_f], -1), -1)
        w, ws = compositing_weights(t_all, torch.cat([sigma, sigma_f], -1).gather(-1, order))
        # composite is linear in the features: move the (small) weights back to the unsorted
        # sample order instead of sorting the (large) feature tensors
        ws_u = torch.zeros_like(ws).scatter(-1, order, ws)
        feat_out = torch.einsum("brs,brsf->brf", ws_u[..., :D], feat.float()) + \
            torch.einsum("brs,brsf->brf", ws_u[..., D:], feat_f.float())
        alpha, depth_num = w.sum(-1), (ws * t_all).sum(-1)
    else:
        feat_out, alpha, depth_num, _ = composite(t_c, sigma, feat)
    depth = torch.where(alpha > 1e-4, depth_num / alpha.clamp_min(1e-4), torch.full_like(alpha, float(ray_end)))
    xyz = origins + depth[..., None] * dirs
    if white_back:
        feat_out = feat_out + (1.0 - alpha[..., None])
    return {"features": feat_out, "alpha": alpha, "depth": depth, "xyz": xyz}


def resolve_ray_range(rendering_kwargs: dict, framing: str) -> tuple[float, float]:
    """'auto' ray_start/ray_end -> the framing's near/far (cameras.FRAMINGS)."""
    fr = cameras.get_framing(framing)
    start, end = rendering_kwargs.get("ray_start", "auto"), rendering_kwargs.get("ray_end", "auto")
    return (fr.near if start == "auto" else float(start)), (fr.far if end == "auto" else float(end))


def render_rays_chunked(field, origins: torch.Tensor, dirs: torch.Tensor, chunk: int | None = None, **kw) -> dict:
    """render_rays over at most ``chunk`` rays at a time (all B images together), outputs joined: the same
    numbers as one call (rays are independent), with the memory of a chunk.  None: one call."""
    B, R, _ = origins.shape
    step = max(int(chunk) // B, 1) if chunk else R
    if step >= R:
        return render_rays(field, origins, dirs, **kw)
    parts = [render_rays(field, origins[:, i:i + step], dirs[:, i:i + step], **kw) for i in range(0, R, step)]
    return {k: torch.cat([p[k] for p in parts], 1) for k in parts[0]}


def render_image(field, cam: torch.Tensor, resolution: int, chunk: int | None = None, **kw) -> dict:
    """Render a [B,25] camera at resolution x resolution: images [B,F,n,n], alpha/depth [B,1,n,n], xyz [B,3,n,n].
    ``chunk``: march at most this many rays at a time (render_rays_chunked)."""
    origins, dirs = cameras.rays(cam, resolution)
    out = render_rays_chunked(field, origins, dirs, chunk, **kw)
    B, n = cam.shape[0], resolution

    def img(x):
        return x.reshape(B, n, n, -1).permute(0, 3, 1, 2).contiguous()

    return {"features": img(out["features"]), "alpha": img(out["alpha"][..., None]),
            "depth": img(out["depth"][..., None]), "xyz": img(out["xyz"])}


__all__ = ["PLANE_AXES", "plane_coords", "sample_planes", "triplane_features", "OSGDecoder", "ray_box",
           "search_right", "sample_pdf", "compositing_weights", "composite", "render_rays", "render_rays_chunked",
           "render_image",
           "resolve_ray_range"]


# ---------------------------------------------------------------- region of interest

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
