"""Fused triplane lookup on the GPU: one Triton kernel reads the three planes at a point and writes the mean.

``triplane_features`` (the mean of the bilinear lookups of the three planes at framed points) is what every
sample of the renderer costs.  Written as plain indexing (volumetric_rendering's "gather" lookup),
torch.compile emits one kernel that recomputes each point's corner indices for every channel and writes the
three planes' features, then a second that averages them.  Here one program takes a block of points: it
computes the 12 corners and weights once per point, reads each corner's C channels as one row (channels-last
planes, such as the compiled backbone's output, are read in place; others are copied channels-last first)
and writes the fp32 mean once.  Planes of L sheets ([B,3,L*C,R,R], sheet-major channels) add a linear
interpolation between the two sheets around the point's coordinate along each plane's perpendicular axis
(clamped to the outer sheets, as grid_sample's path does): 8 corner rows per plane, each C channels at
offset l*C of the texel's L*C channels.  The sheet count is a compile-time constant, so one-sheet planes
compile to the bilinear kernel alone.  The backward scatter-adds each point's weighted gradient rows into an
fp32 channels-last plane gradient with atomic adds (the same arithmetic as the gather lookup's fp32
index_add), cast to the planes' dtype once at the end.

Wrapped as custom operators (torch.library.triton_op) so torch.compile keeps the kernels inside its graphs
(and CUDA graphs).  No gradient for the points themselves: the renderer's sample positions need none; the
caller falls back to the gather lookup when they require one.  Tests run the kernels on the CPU through
Triton's interpreter (TRITON_INTERPRET=1).
"""
from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:         # CPU-only installs: the gather lookup is used instead
    triton = None

# Points per program (BLOCK_N) and warps, forward and backward; tuned on the H100 (docs/results.md)
CONFIG = {"fwd": (64, 4), "bwd": (64, 4)}


_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"     # Triton's CPU interpreter (tests)


def available(t: torch.Tensor) -> bool:
    """Whether the fused lookup can run on t's device: CUDA with Triton, or Triton's CPU interpreter."""
    if triton is None:
        return False
    return t.is_cuda or (t.device.type == "cpu" and _INTERPRET)


if triton is not None:
    @triton.jit
    def _block(N, BLOCK_N: tl.constexpr):
        """This program's batch index and point indices [BLOCK_N] with their mask: the grid is (point blocks,
        batch).  The kernels load the points themselves: torch's mutation analysis of a kernel
        (identify_mutated_tensors) follows a written pointer back through every op but loads, so a helper
        call that took the points' pointer would mark the points as written; inductor then treats them as
        a mutated input and CUDA graphs skip the graph."""
        b = tl.program_id(1).to(tl.int64)
        n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        return b, n, n < N

    @triton.jit
    def _axis(t, R):
        # grid_sample with align_corners=False: texel centres at (2i + 1) / R - 1
        i = ((t + 1.0) * R - 1.0) / 2.0
        i0 = tl.floor(i)
        return i0.to(tl.int32), i - i0

    @triton.jit
    def _cell(px, py, pz, R, p: tl.constexpr):
        """Plane p's bilinear cell around each point: lower texel (x0, y0) and fractions (fx, fy)."""
        u = px      # volumetric_rendering.PLANE_AXES: XY (x, -y), XZ (x, z), YZ (-z, -y)
        v = -py
        if p == 1:
            v = pz
        if p == 2:
            u = -pz
        x0, fx = _axis(u, R)
        y0, fy = _axis(v, R)
        return x0, fx, y0, fy

    @triton.jit
    def _corner(x0, fx, y0, fy, R, mn, dx: tl.constexpr, dy: tl.constexpr):
        """Corner (dx, dy) of the cell: (x, y) texel (int64), weight, and whether it lies on the plane
        (grid_sample's zero padding)."""
        xi = x0 + dx
        yi = y0 + dy
        wx = fx
        if dx == 0:
            wx = 1.0 - fx
        wy = fy
        if dy == 0:
            wy = 1.0 - fy
        inside = (xi >= 0) & (xi < R) & (yi >= 0) & (yi < R) & mn
        return xi.to(tl.int64), yi.to(tl.int64), wx * wy, inside

    @triton.jit
    def _sheet(px, py, pz, p: tl.constexpr, L: tl.constexpr):
        """Plane p's lower sheet z0 and fraction fz along its perpendicular axis, clamped to the outer sheets'
        centres like the gather and grid_sample lookups (so only z0 + 1 can fall off the stack, at weight 0)."""
        w = pz      # perpendicular axes (PLANE_AXES): XY z, XZ y, YZ x
        if p == 1:
            w = py
        if p == 2:
            w = px
        w = tl.minimum(tl.maximum(w, 1.0 / L - 1.0), 1.0 - 1.0 / L)
        return _axis(w, L)

    @triton.jit
    def _triplane_mean_fwd(planes_ptr, xyz_ptr, out_ptr, N, R, scale,
                           s_b, s_p, s_c, s_y, s_x,
                           C: tl.constexpr, L: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
        b, n, mn = _block(N, BLOCK_N)
        pt = xyz_ptr + (b * N + n) * 3
        px = tl.load(pt, mask=mn, other=0.0) * scale
        py = tl.load(pt + 1, mask=mn, other=0.0) * scale
        pz = tl.load(pt + 2, mask=mn, other=0.0) * scale
        c = tl.arange(0, BLOCK_C)
        mc = c < C
        total = tl.zeros([BLOCK_N, BLOCK_C], dtype=tl.float32)
        for p in tl.static_range(3):
            x0, fx, y0, fy = _cell(px, py, pz, R, p)
            plane = planes_ptr + b * s_b + p * s_p
            acc = tl.zeros([BLOCK_N, BLOCK_C], dtype=tl.float32)
            if L == 1:
                for dy in tl.static_range(2):
                    for dx in tl.static_range(2):
                        xi, yi, w, inside = _corner(x0, fx, y0, fy, R, mn, dx, dy)
                        row = plane + yi * s_y + xi * s_x
                        vals = tl.load(row[:, None] + c[None, :] * s_c, mask=inside[:, None] & mc[None, :],
                                       other=0.0)
                        acc += w[:, None] * vals.to(tl.float32)
            else:
                z0, fz = _sheet(px, py, pz, p, L)
                for dz in tl.static_range(2):     # the gather lookup's order: sheet, then row, then column
                    zi = z0 + dz
                    wz = fz
                    if dz == 0:
                        wz = 1.0 - fz
                    on = mn & (zi >= 0) & (zi < L)
                    sheet = plane + zi.to(tl.int64) * (C * s_c)     # sheet-major channels: sheet l at l*C
                    for dy in tl.static_range(2):
                        for dx in tl.static_range(2):
                            xi, yi, w, inside = _corner(x0, fx, y0, fy, R, on, dx, dy)
                            row = sheet + yi * s_y + xi * s_x
                            vals = tl.load(row[:, None] + c[None, :] * s_c, mask=inside[:, None] & mc[None, :],
                                           other=0.0)
                            acc += (w * wz)[:, None] * vals.to(tl.float32)
            total += acc
        out = out_ptr + (b * N + n)[:, None] * C + c[None, :]
        tl.store(out, total / 3.0, mask=mn[:, None] & mc[None, :])

    @triton.jit
    def _triplane_mean_bwd(grad_ptr, xyz_ptr, gplanes_ptr, N, R, scale,
                           C: tl.constexpr, L: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
        # gplanes: fp32 [B, 3, R, R, L*C] contiguous (channels last: each corner's update is one row)
        b, n, mn = _block(N, BLOCK_N)
        pt = xyz_ptr + (b * N + n) * 3
        px = tl.load(pt, mask=mn, other=0.0) * scale
        py = tl.load(pt + 1, mask=mn, other=0.0) * scale
        pz = tl.load(pt + 2, mask=mn, other=0.0) * scale
        c = tl.arange(0, BLOCK_C)
        mc = c < C
        g = tl.load(grad_ptr + (b * N + n)[:, None] * C + c[None, :], mask=mn[:, None] & mc[None, :],
                    other=0.0).to(tl.float32) / 3.0
        for p in tl.static_range(3):
            x0, fx, y0, fy = _cell(px, py, pz, R, p)
            plane = gplanes_ptr + (b * 3 + p) * R * R * (L * C)
            if L == 1:
                for dy in tl.static_range(2):
                    for dx in tl.static_range(2):
                        xi, yi, w, inside = _corner(x0, fx, y0, fy, R, mn, dx, dy)
                        tl.atomic_add((plane + (yi * R + xi) * C)[:, None] + c[None, :], w[:, None] * g,
                                      mask=inside[:, None] & mc[None, :], sem="relaxed")
            else:
                z0, fz = _sheet(px, py, pz, p, L)
                for dz in tl.static_range(2):
                    zi = z0 + dz
                    wz = fz
                    if dz == 0:
                        wz = 1.0 - fz
                    on = mn & (zi >= 0) & (zi < L)
                    sheet = plane + zi.to(tl.int64) * C
                    for dy in tl.static_range(2):
                        for dx in tl.static_range(2):
                            xi, yi, w, inside = _corner(x0, fx, y0, fy, R, on, dx, dy)
                            tl.atomic_add((sheet + (yi * R + xi) * (L * C))[:, None] + c[None, :],
                                          (w * wz)[:, None] * g, mask=inside[:, None] & mc[None, :], sem="relaxed")

    def _launch(kernel, which, n_points, batch, *args, C, L):
        block_n, warps = CONFIG[which]
        grid = (triton.cdiv(n_points, block_n), batch)
        # wrap_triton lets torch.compile trace the launch; the interpreter's functions are not jit kernels
        launch = kernel if _INTERPRET else torch.library.wrap_triton(kernel)
        launch[grid](*args, C=C, L=L, BLOCK_N=block_n, BLOCK_C=triton.next_power_of_2(C), num_warps=warps)

    @torch.library.triton_op("anime3d::triplane_mean", mutates_args=())
    def _triplane_mean(planes: torch.Tensor, xyz: torch.Tensor, scale: float, layers: int) -> torch.Tensor:
        B, _, LC, R, _ = planes.shape
        N, C = xyz.shape[1], LC // layers
        out = torch.empty((B, N, C), device=planes.device, dtype=torch.float32)
        _launch(_triplane_mean_fwd, "fwd", N, B, planes, xyz, out, N, R, scale, *planes.stride(), C=C, L=layers)
        return out

    @torch.library.triton_op("anime3d::triplane_mean_backward", mutates_args=())
    def _triplane_mean_backward(grad: torch.Tensor, xyz: torch.Tensor, scale: float, R: int,
                                layers: int) -> torch.Tensor:
        B, N, C = grad.shape
        gplanes = torch.zeros((B, 3, R, R, layers * C), device=grad.device, dtype=torch.float32)
        _launch(_triplane_mean_bwd, "bwd", N, B, grad, xyz, gplanes, N, R, scale, C=C, L=layers)
        return gplanes

    def _setup_context(ctx, inputs, output):
        planes, xyz, scale, layers = inputs
        ctx.save_for_backward(xyz)
        ctx.scale, ctx.R, ctx.layers, ctx.dtype = scale, planes.shape[-1], layers, planes.dtype

    def _backward(ctx, grad):
        xyz, = ctx.saved_tensors
        g = torch.ops.anime3d.triplane_mean_backward(grad.contiguous(), xyz, ctx.scale, ctx.R, ctx.layers)
        return g.permute(0, 1, 4, 2, 3).to(ctx.dtype), None, None, None

    _triplane_mean.register_autograd(_backward, setup_context=_setup_context)


def triplane_mean(planes: torch.Tensor, xyz: torch.Tensor, box_warp: float, layers: int = 1) -> torch.Tensor:
    """Mean of the bilinear (trilinear across sheets) lookups of the three planes at framed points
    (volumetric_rendering's triplane_features): planes [B,3,L*C,R,R] of any dtype and strides, L = layers
    sheets, xyz [B,N,3] -> fp32 [B,N,C].  Gradients reach the planes only."""
    if triton is None:
        raise RuntimeError("triplane_triton.triplane_mean needs Triton (pip install triton; CUDA)")
    if planes.ndim != 5 or planes.shape[1] != 3 or planes.shape[3] != planes.shape[4]:
        raise ValueError(f"triplane_mean: planes must be [B,3,L*C,R,R], got {tuple(planes.shape)}")
    if layers < 1 or planes.shape[2] % layers:
        raise ValueError(f"triplane_mean: {planes.shape[2]} channels do not split into {layers} sheets")
    if xyz.requires_grad:
        raise ValueError("triplane_mean: no gradient for the points; use the gather lookup")
    if planes.stride(2) != 1:   # a corner's C channels R*R apart: C scattered loads (9x slower on the H100)
        planes = planes.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    return torch.ops.anime3d.triplane_mean(planes, xyz.float().contiguous(), 2.0 / box_warp, layers)
