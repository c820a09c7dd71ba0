"""Renderer, fusion, generators and inference helpers (tiny sizes, CPU)."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from training import cameras
from training.infer import front_paste, meshing
from training import volumetric_rendering as vr
from training.errors import UserError
from training.fusion import ConcatFusion, DirectionAwareFusion
from training.triplane import GENERATORS, TriplaneField, build_preset, render_field

torch.set_num_threads(1)
BOX = 0.7
R_BALL = 0.2


# ---------------------------------------------------------------- analytic triplane: a density ball

def ball_planes(res=64, channels=4, box=BOX):
    """Every plane holds (a^2 + b^2) of its two in-plane coordinates (metres) in channel 0, so the mean over
    the three planes is 2/3 |p|^2; channels 1..3 hold a constant colour code."""
    t = (torch.arange(res) + 0.5) / res * 2 - 1                 # grid pixel centres
    a = t * box / 2
    sq = a[None, :] ** 2 + a[:, None] ** 2
    planes = torch.zeros(1, 3, channels, res, res)
    planes[:, :, 0] = sq
    planes[:, :, 1] = 0.3
    return planes


def ball_field(r=R_BALL, box=BOX, fusion=None):
    f = TriplaneField(plane_channels=4, plane_layers=1, decoder_hidden=4, decoder_features=3, box_warp=box,
                      fusion=fusion)
    A, Bw, c = 30000.0, 10.0, 20.0
    with torch.no_grad():
        d = f.decoder
        d.fc1.weight.zero_(); d.fc1.bias.zero_(); d.fc2.weight.zero_(); d.fc2.bias.zero_()
        # hidden 0 = softplus(A * (2/3 r^2 - mean)) = softplus(2/3 A (r^2 - |p|^2)): > 0 inside the ball only
        d.fc1.weight[0, 0] = -A
        d.fc1.bias[0] = A * 2 / 3 * r ** 2
        # density = softplus(B * h0 - c): ~0 outside, huge inside
        d.fc2.weight[0, 0] = Bw
        d.fc2.bias[0] = 1 - c
        # colour: r from channel 1 (0.3 -> sigmoid(3 * 0.3 * 3)), g, b constant
        d.fc1.weight[1, 1] = 3.0
        d.fc2.weight[1, 1] = 3.0
        d.fc2.bias[2] = 2.0
        d.fc2.bias[3] = -2.0
    return f


class AnalyticG:
    """The generator methods the inference helpers use, on hand-built planes."""

    def __init__(self, field, framing="head"):
        self.field, self.framing = field, framing

    def sample_density(self, planes, xyz, view_dirs=None):
        dirs = torch.zeros_like(xyz) if view_dirs is None else view_dirs
        return self.field(planes, xyz, dirs)[0]

    def sample_color(self, planes, xyz, view_dirs=None):
        return self.field(planes, xyz, view_dirs)[1][..., :3].clamp(0, 1)

    def render(self, planes, c, n, superresolve=False, **kw):
        fr = cameras.get_framing(self.framing)
        out = vr.render_image(lambda x, d: self.field(planes, x, d), c, n, box_warp=self.field.box_warp,
                              ray_start=fr.near, ray_end=fr.far, depth_resolution=32,
                              depth_resolution_importance=32, perturb=False)
        return {"image_raw": out["features"][:, :3] * 2 - 1, "image": out["features"][:, :3] * 2 - 1,
                "image_depth": out["depth"], "image_alpha": out["alpha"], "image_xyz": out["xyz"]}


def render_ball(cam, n, **kw):
    f, planes = ball_field(), ball_planes()
    opts = dict(box_warp=BOX, ray_start=0.5, ray_end=1.5, depth_resolution=32, depth_resolution_importance=32,
                perturb=False)
    opts.update(kw)
    planes = planes.expand(cam.shape[0], -1, -1, -1, -1)
    with torch.no_grad():
        return vr.render_image(lambda x, d: f(planes, x, d), cam, n, **opts)


# ---------------------------------------------------------------- plane layout and sampling

@pytest.mark.parametrize("k,view", [(0, "front"), (1, "top"), (2, "left")])
def test_planes_are_laid_out_like_their_ortho_view(k, view):
    """Plane k sampled at a point equals the pixel that point projects to in the plane's ortho view."""
    res = 16
    t = (torch.arange(res) + 0.5) / res
    planes = torch.zeros(1, 3, 2, res, res)
    planes[0, k, 0] = t[None, :].expand(res, res)       # u of the pixel centre (column)
    planes[0, k, 1] = t[:, None].expand(res, res)       # v (row)
    g = torch.Generator().manual_seed(k)
    xyz = (torch.rand(1, 200, 3, generator=g) - 0.5) * BOX * (1 - 1.5 / res)
    feats = vr.sample_planes(planes, vr.plane_coords(xyz, BOX))          # [1,3,N,2]
    cam = cameras.as_tensor([v for v in cameras.view_set("ortho", "head") if v.name == view])
    uv, _ = cameras.project(xyz, cam)
    assert torch.allclose(feats[0, k], uv[0], atol=1e-5)
    assert feats[0, [i for i in range(3) if i != k]].abs().max() == 0


def test_multilayer_planes_interpolate_along_the_perpendicular_axis():
    L, res = 3, 8
    planes = torch.zeros(1, 3, L * 1, res, res)
    planes[0, 0, :] = torch.tensor([0.0, 1.0, 2.0])[:, None, None]     # XY sheets at z = -2/3, 0, 2/3 (grid)
    z = torch.tensor([-1.0, -2 / 3, -1 / 3, 0.0, 1 / 3, 2 / 3, 1.0]) * BOX / 2
    xyz = torch.stack([torch.zeros_like(z), torch.zeros_like(z), z], -1)[None]
    f = vr.sample_planes(planes, vr.plane_coords(xyz, BOX), layers=L)[0, 0, :, 0]
    assert torch.allclose(f, torch.tensor([0.0, 0.0, 0.5, 1.0, 1.5, 2.0, 2.0]), atol=1e-5)


@pytest.mark.parametrize("layers", [1, 3])
def test_gather_lookup_equals_grid_sample(layers, monkeypatch):
    """LOOKUP='gather' (channels-last rows) gives grid_sample's values and plane gradients, inside the
    box, on its faces and outside it (zero padding), with one and several sheets."""
    g = torch.Generator().manual_seed(layers)
    planes = torch.randn(2, 6, layers * 5, 7, 9, generator=g)[..., :7]          # non-contiguous input too
    coords = torch.rand(2, 6, 300, 3, generator=g) * 2.6 - 1.3
    coords[:, :, :8] = torch.tensor([-1.0, 1.0, 0.0]).repeat(8, 1) * torch.rand(8, 1, generator=g).round()
    weight = torch.randn(2, 6, 300, 5, generator=g)

    def run(lookup):
        monkeypatch.setattr(vr, "LOOKUP", lookup)
        p = planes.clone().requires_grad_(True)
        f = vr.sample_planes(p, coords, layers)
        (f * weight).sum().backward()
        return f, p.grad

    f_ref, g_ref = run("grid_sample")
    f, grad = run("gather")
    assert f.shape == f_ref.shape == (2, 6, 300, 5)
    assert torch.allclose(f, f_ref, atol=1e-5) and torch.allclose(grad, g_ref, atol=1e-5)
    assert f_ref.abs().sum() > 0 and (f_ref[..., 0] == 0).any()     # some points outside: zero padding seen


def test_gather_lookup_reads_bf16_planes_with_fp32_arithmetic(monkeypatch):
    """The gather lookup reads bf16 planes (autocast's backbone output) without an fp32 copy, yet gives the
    values and plane gradients of the fp32 copy: interpolation in fp32, and each texel's gradient summed over
    its many points (and 4 corners) in fp32 before the one rounding to bf16 (summing in bf16 would differ:
    checked)."""
    monkeypatch.setattr(vr, "LOOKUP", "gather")
    g = torch.Generator().manual_seed(0)
    planes = torch.randn(2, 3, 8, 4, 4, generator=g).bfloat16()      # few texels, many points on each
    coords = torch.rand(2, 3, 4000, 3, generator=g) * 2 - 1
    weight = torch.randn(2, 3, 4000, 8, generator=g)

    def run(p):
        p = p.clone().requires_grad_(True)
        f = vr.sample_planes(p, coords)
        (f * weight).sum().backward()
        return f, p.grad

    f, grad = run(planes)
    f_ref, grad_ref = run(planes.float())
    assert f.dtype == torch.float32 and grad.dtype == torch.bfloat16
    assert torch.equal(f, f_ref) and torch.equal(grad, grad_ref.bfloat16())
    table = planes.permute(0, 1, 3, 4, 2).reshape(-1, 8)        # the control: index_add in bf16 rounds per add
    idx = torch.randint(0, table.shape[0], (24000,), generator=g)
    rows = torch.randn(24000, 8, generator=g)
    in_bf16 = torch.zeros_like(table).index_add_(0, idx, rows.bfloat16())
    assert not torch.equal(in_bf16, torch.zeros(table.shape).index_add_(0, idx, rows).bfloat16())


TRITON_CHECK = r"""
import sys
import torch
from training import volumetric_rendering as vr, triplane_triton
from training.triplane import build_preset
assert triplane_triton.available(torch.zeros(1)), "the interpreter should make the kernels available on the CPU"
part, L = sys.argv[1], int(sys.argv[2])     # "kernel" or "field"; sheets
g = torch.Generator().manual_seed(L)
B, C, R, N, BOX = 2, 5, 8, 600, 0.7


def lookup(kind, planes, xyz, grad):
    vr.LOOKUP = kind
    p = planes.detach().clone().requires_grad_(True)
    assert vr.fused_lookup(p, xyz) == (kind == "triton"), "the fused kernel, not a fallback"
    f = vr.triplane_features(p, xyz, BOX, L)
    (f * grad).sum().backward()
    return f, p.grad


if part == "kernel":
    xyz = (torch.rand(B, N, 3, generator=g) - 0.5) * BOX * 1.2     # some points in the border texels and outside
    xyz[:, :6] = torch.tensor([[0.35, 0.35, -0.35], [-0.35, 0.0, 0.35], [0.0, -0.35, 0.0],
                               [0.36, 0.0, 0.0], [0.0, 0.0, 0.0], [0.1, -0.2, 0.3]])
    # along each axis (each plane's perpendicular one): the outer sheets' centres, just inside and beyond them
    # (clamped), the inner sheets' centres and midway between, the box's faces and beyond
    t = torch.tensor([1 - 1 / L, 1 - 1 / L - 1e-3, 1 - 1 / L + 1e-3, 1 - 2 / L, 1 - 2.5 / L, 1.0, 1.1])
    t = torch.cat([t, -t]) * BOX / 2
    on_axes = (torch.rand(3, len(t), 3, generator=g) - 0.5) * BOX * 0.8
    for a in range(3):
        on_axes[a, :, a] = t
    xyz[:, 6:6 + 3 * len(t)] = on_axes.reshape(-1, 3)
    grad = torch.randn(B, N, C, generator=g)
    big = torch.randn(B, 6 * L * C, R, R, generator=g)
    cases = {"fp32": torch.randn(B, 3, L * C, R, R, generator=g),
             "bf16": torch.randn(B, 3, L * C, R, R, generator=g).bfloat16(),
             # the backbone's NHWC output as [B, 6, L*C, R, R], its back triplane: strided, read in place
             "channels-last back half":
                 big.contiguous(memory_format=torch.channels_last).view(B, 6, L * C, R, R)[:, 3:]}
    for name, planes in cases.items():
        f_ref, g_ref = lookup("gather", planes, xyz, grad)
        f_gs, g_gs = lookup("grid_sample", planes, xyz, grad)
        f, gr = lookup("triton", planes, xyz, grad)
        assert f.dtype == torch.float32 and gr.dtype == planes.dtype and gr.shape == planes.shape, name
        assert torch.allclose(f, f_ref, atol=1e-6, rtol=0), (name, (f - f_ref).abs().max())
        tol = 1e-5 if planes.dtype == torch.float32 else 2 ** -7 * g_ref.float().abs().max().item()
        assert torch.allclose(gr.float(), g_ref.float(), atol=tol, rtol=0), (name, (gr.float() - g_ref.float()).abs().max())
        # and grid_sample's (which reads an fp32 copy: its bf16 gradient rounds per texel too)
        assert torch.allclose(f, f_gs, atol=1e-5), (name, (f - f_gs).abs().max())
        assert torch.allclose(gr.float(), g_gs.float(), atol=tol), (name, (gr.float() - g_gs.float()).abs().max())
        assert f_ref.abs().sum() > 0 and gr.float().abs().sum() > 0
else:
    # the generators' field: the fused kernel once per triplane (two-view: front and back) = the gather lookup
    torch.manual_seed(0)
    for variant in ("TriPlaneGenerator", "TriPlaneGenerator_v1"):
        G = build_preset("tiny", variant, plane_layers=L)
        P = 6 if variant.endswith("v1") else 3
        planes = torch.randn(B, P, L * G.config["plane_channels"], 16, 16, generator=g)
        pts = (torch.rand(B, 50, 3, generator=g) - 0.5) * 0.7
        dirs = torch.nn.functional.normalize(torch.randn(B, 50, 3, generator=g), dim=-1)
        out = {}
        for kind in ("gather", "triton"):
            vr.LOOKUP = kind
            assert vr.fused_lookup(planes, pts) == (kind == "triton")
            out[kind] = torch.cat(G.field.features(planes, pts, dirs), -1)
        assert torch.allclose(out["gather"], out["triton"], atol=1e-5), variant
print("OK")
"""


def _run_triton_check(*args):
    import os
    import subprocess
    import sys
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    r = subprocess.run([sys.executable, "-c", TRITON_CHECK, *map(str, args)], env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip().endswith("OK"), r.stdout[-2000:] + r.stderr[-4000:]


@pytest.mark.parametrize("layers", [1, 3])
def test_triton_lookup_equals_gather(layers):
    """The fused Triton lookup (volumetric_rendering LOOKUP='triton', training/triplane_triton.py), run on
    the CPU by Triton's interpreter, gives the gather (and grid_sample) lookup's mean features and plane
    gradients: one and three sheets, fp32 and bf16 planes, a strided channels-last view read in place,
    points on the border texels, outside the box, and on, between and beyond the outer sheets."""
    pytest.importorskip("triton")
    _run_triton_check("kernel", layers)


@pytest.mark.parametrize("layers", [1, 3])
def test_triton_lookup_gives_the_generators_field_features(layers):
    """The one- and two-view generators' field features with the fused lookup (once per triplane) equal the
    gather lookup's, with one and three sheets (nova_v1's)."""
    pytest.importorskip("triton")
    _run_triton_check("field", layers)


@pytest.mark.parametrize("layers", [1, 3])
def test_triton_kernels_write_only_their_outputs_for_torch_compile(layers):
    """torch's mutation analysis of the lookup kernels (identify_mutated_tensors, on their Triton IR for an
    H100 target: no GPU needed) finds only the output written.  A kernel that seemed to write its points (a
    helper call taking their pointer did) made inductor copy them, and CUDA graphs skipped the
    field's forward graph and re-recorded its backward on most steps (1-1.5 s steps on the H100)."""
    triton = pytest.importorskip("triton")
    from unittest import mock
    from triton.backends.compiler import GPUTarget
    from torch._higher_order_ops.triton_kernel_wrap import identify_mutated_tensors
    from training import triplane_triton as tt

    class H100:
        def get_current_target(self):
            return GPUTarget("cuda", 90, 32)

    B, N, C, R = 2, 128, 32, 16
    planes = torch.randn(B, 3, R, R, layers * C).permute(0, 1, 4, 2, 3)
    xyz, out, gplanes = torch.rand(B, N, 3) - 0.5, torch.empty(B, N, C), torch.zeros(B, 3, R, R, layers * C)
    sizes = dict(C=C, L=layers, BLOCK_N=64, BLOCK_C=32)
    fwd = dict(planes_ptr=planes, xyz_ptr=xyz, out_ptr=out, N=N, R=R, scale=1.0,
               **dict(zip(["s_b", "s_p", "s_c", "s_y", "s_x"], planes.stride())), **sizes)
    bwd = dict(grad_ptr=out, xyz_ptr=xyz, gplanes_ptr=gplanes, N=N, R=R, scale=1.0, **sizes)
    with mock.patch.object(triton.runtime.driver, "_active", H100(), create=True):
        assert identify_mutated_tensors(tt._triplane_mean_fwd, fwd, {}) == ["out_ptr"]
        assert identify_mutated_tensors(tt._triplane_mean_bwd, bwd, {}) == ["gplanes_ptr"]


def test_triton_lookup_falls_back_to_gather_where_it_cannot_run(monkeypatch):
    """LOOKUP='triton' (the compiled default) on a device without Triton's kernels or with points that need a
    gradient: the gather lookup, same numbers."""
    g = torch.Generator().manual_seed(1)
    planes = torch.randn(1, 3, 6, 5, 5, generator=g)
    xyz = (torch.rand(1, 40, 3, generator=g) - 0.5) * BOX
    monkeypatch.setattr(vr, "LOOKUP", "gather")
    ref = vr.triplane_features(planes, xyz, BOX)
    monkeypatch.setattr(vr, "LOOKUP", "triton")
    monkeypatch.setattr(vr.triplane_triton, "_INTERPRET", False)        # a CPU tensor: no kernel
    assert not vr.fused_lookup(planes, xyz)
    assert torch.equal(vr.triplane_features(planes, xyz, BOX), ref)
    monkeypatch.setattr(vr.triplane_triton, "available", lambda t: True)
    assert not vr.fused_lookup(planes, xyz.clone().requires_grad_(True))
    assert vr.fused_lookup(planes, xyz)
    monkeypatch.setattr(vr, "LOOKUP", "gather")
    assert not vr.fused_lookup(planes, xyz)


def test_ray_box_intersection():
    o = torch.tensor([[[0.0, 0.0, 1.0], [0.1, 0.2, 1.0], [0.5, 0.0, 1.0]]])
    d = torch.tensor([[[0.0, 0.0, -1.0]] * 3])
    enter, leave = vr.ray_box(o, d, BOX / 2)
    assert torch.allclose(enter[0, :2], torch.tensor([0.65, 0.65])) and torch.allclose(leave[0, :2], torch.tensor([1.35, 1.35]))
    assert enter[0, 2] > leave[0, 2]          # misses the box


def test_sample_pdf_follows_weights():
    edges = torch.linspace(0, 1, 11)[None]
    w = torch.zeros(1, 10)
    w[0, 3] = 1.0
    s = vr.sample_pdf(edges, w + 1e-6, 64, deterministic=True)
    assert ((s >= 0.3) & (s <= 0.4)).float().mean() > 0.95


def test_search_right_compiled_branch_is_searchsorted(monkeypatch):
    """The count that compiled graphs use instead of searchsorted gives its indices, ties and ends included
    (u exactly on a cdf value, below the first, above the last; flat stretches of zero weight)."""
    g = torch.Generator().manual_seed(0)
    w = torch.rand(64, 12, generator=g) * (torch.rand(64, 12, generator=g) > 0.3)
    cdf = torch.cat([torch.zeros(64, 1), (w / w.sum(-1, keepdim=True).clamp_min(1e-8)).cumsum(-1)], -1)
    u = torch.cat([torch.rand(64, 20, generator=g), cdf[:, [0, 3, 7, 12]], torch.full((64, 2), -0.5),
                   torch.full((64, 2), 1.5)], -1)
    eager = vr.search_right(cdf, u)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert torch.equal(vr.search_right(cdf, u), eager)
    assert torch.equal(eager, torch.searchsorted(cdf, u, right=True))


# ---------------------------------------------------------------- rendering an analytic ball

@pytest.mark.parametrize("framing", ["head"])
def test_ball_silhouette_and_depth_orthographic(framing):
    n = 32
    cam = cameras.as_tensor(cameras.view_set("ortho", framing))      # front, left, right, back, top
    out = render_ball(cam, n)
    o, d = cameras.rays(cam, n)
    # distance of each (parallel) ray from the ball centre
    closest = (o - (o * d).sum(-1, keepdim=True) * d).norm(dim=-1).reshape(-1, n, n)
    alpha = out["alpha"][:, 0]
    assert (alpha[closest < R_BALL - 0.01] > 0.99).all()
    assert (alpha[closest > R_BALL + 0.01] < 0.01).all()
    # the disk has the right area: pixel centres inside radius r (+-2 boundary pixels), ~pi r^2
    assert ((alpha.sum((1, 2)) - (closest < R_BALL).sum((1, 2))).abs() <= 2).all()
    assert abs(alpha.sum((1, 2)).mean() * (BOX / n) ** 2 / (math.pi * R_BALL ** 2) - 1) < 0.05
    # depth: ray distance to the sphere's front surface (camera plane at distance 1)
    inside = closest < R_BALL - 0.02
    expect = 1.0 - torch.sqrt((R_BALL ** 2 - closest ** 2).clamp_min(0))
    assert (out["depth"][:, 0][inside] - expect[inside]).abs().max() < 0.01
    # xyz lies on the sphere
    r = out["xyz"].norm(dim=1)
    assert (r[inside] - R_BALL).abs().max() < 0.01
    # background is at ray_end with zero alpha; white background composited
    assert torch.allclose(out["features"][:, :, 0, 0], torch.ones(5, 3), atol=1e-3)


def test_ball_perspective_silhouette_and_centre_depth():
    n = 24
    views = cameras.view_set("rgb", "head", char_id="ball")[:3]
    cam = cameras.as_tensor(views)
    out = render_ball(cam, n)
    o, d = cameras.rays(cam, n)
    closest = (o - (o * d).sum(-1, keepdim=True) * d).norm(dim=-1).reshape(-1, n, n)
    alpha = out["alpha"][:, 0]
    assert (alpha[closest < R_BALL - 0.01] > 0.99).all() and (alpha[closest > R_BALL + 0.01] < 0.01).all()
    tc = (o * d).sum(-1).neg().reshape(-1, n, n)          # distance to the ray's closest approach
    expect = tc - torch.sqrt((R_BALL ** 2 - closest ** 2).clamp_min(0))
    inside = closest < R_BALL - 0.02
    assert (out["depth"][:, 0][inside] - expect[inside]).abs().max() < 0.01


def test_roi_crop_shrinks_the_silhouette():
    n = 32
    f, planes = ball_field(), ball_planes()
    cam = cameras.as_tensor(cameras.view_set("ortho", "head")[:1])
    with torch.no_grad():
        out = vr.render_image(lambda x, d: f(planes, x, d, roi=([-1, 0.0, -1], [1, 1, 1])), cam, n,
                              box_warp=BOX, ray_start=0.5, ray_end=1.5, depth_resolution=24,
                              depth_resolution_importance=24, perturb=False)
    a = out["alpha"][0, 0]
    assert a[: n // 2 - 1].max() > 0.99 and a[n // 2 + 1:].max() < 1e-3     # only y >= 0 (image top) is kept


# ---------------------------------------------------------------- generators

@pytest.fixture(scope="module")
def tiny_generators():
    torch.manual_seed(0)
    return {name: build_preset("tiny", variant=name).eval() for name in GENERATORS}


def _cond(B, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"front": torch.rand(B, 3, 64, 64, generator=g) * 2 - 1, "back": torch.rand(B, 3, 64, 64, generator=g) * 2 - 1}


@pytest.mark.parametrize("name", list(GENERATORS))
def test_generator_outputs(tiny_generators, name):
    G = tiny_generators[name]
    B = 2
    cam = cameras.as_tensor([cameras.view_set("ortho", "head")[0], cameras.view_set("rgb", "head", char_id="a")[0]])
    with torch.no_grad():
        out = G(_cond(B), cam)
    n, S = G.neural_rendering_resolution, G.img_resolution
    assert out["image"].shape == (B, 3, S, S) and torch.isfinite(out["image"]).all()
    assert out["image_raw"].shape == (B, 3, n, n) and out["image_raw"].abs().max() <= 1.0021
    assert out["image_depth"].shape == (B, 1, n, n) and out["image_alpha"].shape == (B, 1, n, n)
    assert out["image_xyz"].shape == (B, 3, n, n)
    a = out["image_alpha"]
    assert a.min() >= 0 and a.max() <= 1 + 1e-5
    assert (out["image_depth"] >= 0.5 - 1e-4).all() and (out["image_depth"] <= 1.5 + 1e-4).all()
    hit = (a > 1e-3).expand_as(out["image_xyz"])
    assert (out["image_xyz"][hit].abs() <= BOX / 2 + 1e-4).all()    # surface points lie inside the box
    P = 6 if G.two_view else 3
    assert out["planes"].shape[:2] == (B, P)
    # eval mode is deterministic (constant noise, midpoint samples)
    with torch.no_grad():
        again = G(_cond(B), cam)
    assert torch.equal(out["image"], again["image"])


@pytest.mark.parametrize("name", ["TriPlaneGenerator", "TriPlaneGenerator_v1"])
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(1)
    G = build_preset("tiny", variant=name, use_mask=True).train()
    cond = _cond(2, seed=3)
    cond["front_mask"] = (cond["front"][:, :1] > 0).float()
    cond["back_mask"] = (cond["back"][:, :1] > 0).float()
    cam = cameras.as_tensor(cameras.view_set("rgb", "head", char_id="g")[:2])
    out = G(cond, cam, z=torch.randn(2, G.z_dim))
    loss = out["image"].square().mean() + out["image_raw"].square().mean() + out["image_alpha"].mean() \
        + out["image_depth"].mean()
    loss.backward()
    missing = [n for n, p in G.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    groups = {n.split(".")[0] for n, p in G.named_parameters() if p.grad.abs().sum() > 0}
    expected = {"encoder", "mask_encoder", "backbone", "field", "superresolution"}
    if G.two_view:
        expected.add("back_encoder")
    assert expected <= groups


def test_v1_colour_depends_on_view_direction_and_density_never_does(tiny_generators):
    """NeRF's sigma(x), c(x, d): _v1's direction-aware fusion steers colour only; density is the same for any
    direction (the shape, the mesh and the density regulariser do not depend on the camera).  _v0 and the
    single-view generator are direction-blind altogether."""
    xyz = (torch.rand(1, 64, 3) - 0.5) * BOX * 0.8
    d1 = torch.tensor([0.0, 0.0, -1.0]).expand(1, 64, 3)
    d2 = torch.nn.functional.normalize(torch.randn(1, 64, 3), dim=-1)
    for name, colour_changes in [("TriPlaneGenerator_v1", True), ("TriPlaneGenerator_v0", False),
                                 ("TriPlaneGenerator", False)]:
        G = tiny_generators[name]
        with torch.no_grad():
            syn = G.synthesize(_cond(1))
            c1, c2 = G.sample_color(syn, xyz, d1), G.sample_color(syn, xyz, d2)
            s1, s2 = G.sample_density(syn, xyz, d1), G.sample_density(syn, xyz, d2)
            # the renderer's path (field forward with directions) gives the same densities as well
            f1, f2 = G.field(syn["planes"].float(), xyz, d1)[0], G.field(syn["planes"].float(), xyz, d2)[0]
        assert torch.equal(s1, s2) and torch.equal(f1, f2), name
        assert torch.allclose(f1, s1, atol=1e-6), name
        assert s1.abs().sum() > 0, name
        assert ((c1 - c2).abs().max() > 1e-4) if colour_changes else torch.equal(c1, c2), name


def test_old_v1_layout_is_refused_with_a_clear_message(tmp_path):
    from training import checkpoint
    G = build_preset("tiny", "TriPlaneGenerator_v1")
    sd = {k: v for k, v in G.state_dict().items() if not k.startswith("field.fusion.geo.")}
    path = checkpoint.save_checkpoint(tmp_path / "old.pt", {"G_ema": G}, step=0, kimg=0)
    data = torch.load(path, weights_only=True)
    data["modules"]["G_ema"]["state_dict"] = sd
    torch.save(data, path)
    with pytest.raises(UserError, match="density depended on the view direction"):
        checkpoint.load_generator(path)


def test_two_view_synthesis_uses_each_view(tiny_generators):
    """Front planes come from the front image, back planes from the back image (same backbone)."""
    G = tiny_generators["TriPlaneGenerator_v0"]
    a, b = _cond(1, seed=1), _cond(1, seed=2)
    mixed = {"front": a["front"], "back": b["back"]}
    with torch.no_grad():
        pa, pm = G.synthesize(a)["planes"], G.synthesize(mixed)["planes"]
    assert torch.equal(pa[:, :3], pm[:, :3]) and not torch.allclose(pa[:, 3:], pm[:, 3:])


def test_direction_aware_fusion_takes_the_back_colour_from_behind():
    """Toy fit: the front triplane holds colour field A, the back one colour field B; targets are A for
    points seen from the front and B for points seen from behind.  The attention fusion learns it (a point
    seen from behind takes the back view's colour); the direction-blind concatenation cannot."""
    torch.manual_seed(0)
    res, C = 8, 4
    planes = torch.zeros(1, 6, C, res, res)
    planes[0, 0, :3] = torch.rand(3, res, res) * 3          # XY of the front triplane: colour A (x3: mean of 3)
    planes[0, 3, :3] = torch.rand(3, res, res) * 3          # XY of the back triplane: colour B
    N = 512
    xyz = (torch.rand(1, N, 3) - 0.5) * BOX * 0.9
    front_dir = torch.nn.functional.normalize(torch.tensor([0.0, 0.0, -1.0]) + 0.3 * torch.randn(1, N, 3), dim=-1)
    back_dir = front_dir * torch.tensor([1.0, 1.0, -1.0])
    coords = vr.plane_coords(xyz, BOX)
    col_a = vr.sample_planes(planes[:, :3], coords)[:, 0, :, :3] / 3
    col_b = vr.sample_planes(planes[:, 3:], vr.plane_coords(xyz * torch.tensor([-1.0, 1.0, -1.0]), BOX))[:, 0, :, :3] / 3
    results = {}
    for fusion in ("attention", "concat"):
        torch.manual_seed(1)
        f = TriplaneField(plane_channels=C, decoder_hidden=32, decoder_features=3, box_warp=BOX, fusion=fusion,
                          fusion_dim=32)
        opt = torch.optim.Adam(f.parameters(), lr=1e-2)
        for _ in range(200):
            pf = f(planes, xyz, front_dir)[1]
            pb = f(planes, xyz, back_dir)[1]
            loss = (pf - col_a).square().mean() + (pb - col_b).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            pb = f(planes, xyz, back_dir)[1]
            _, attn = f.features(planes, xyz, back_dir, return_attention=True)
        results[fusion] = ((pb - col_b).abs().mean().item(), (pb - col_a).abs().mean().item(), attn)
    err_b, err_a, attn = results["attention"]
    assert err_b < 0.05 and err_a > 4 * err_b
    assert attn[..., 1].mean() > 0.9                        # seen from behind: the back triplane is chosen
    assert results["concat"][0] > 2 * err_b


def test_fusions_direction_sensitivity_at_init():
    torch.manual_seed(0)
    ff, fb = torch.randn(1, 16, 8), torch.randn(1, 16, 8)
    xyz = torch.rand(1, 16, 3) * 2 - 1
    d1 = torch.nn.functional.normalize(torch.randn(1, 16, 3), dim=-1)
    d2 = -d1
    att, cat = DirectionAwareFusion(8, 16), ConcatFusion(8)
    (g1, a1), (g2, a2) = att(ff, fb, xyz, d1), att(ff, fb, xyz, d2)
    assert torch.equal(g1, g2) and not torch.allclose(a1, a2)       # geometry blind, appearance not
    (_, _), a = att(ff, fb, xyz, d1, return_attention=True)
    assert a.shape == (1, 16, 2) and torch.allclose(a.sum(-1), torch.ones(1, 16))
    assert torch.equal(cat(ff, fb, xyz, d1)[1], cat(ff, fb, xyz, d2)[1])


def test_folded_attention_equals_the_direct_form_with_its_gradients():
    """forward() folds the key, value and output layers into small matrices; the function and every
    parameter's gradient are those of the direct per-candidate keys and values."""
    torch.manual_seed(0)
    att = DirectionAwareFusion(16, 32)
    ff, fb = torch.randn(2, 64, 16, requires_grad=True), torch.randn(2, 64, 16, requires_grad=True)
    xyz = torch.rand(2, 64, 3) * 2 - 1
    dirs = torch.nn.functional.normalize(torch.randn(2, 64, 3), dim=-1)
    w = torch.randn(2, 64, 16)
    results = []
    for fn in (lambda: att(ff, fb, xyz, dirs, return_attention=True),
               lambda: att.attention_reference(ff, fb, xyz, dirs)):
        att.zero_grad(); ff.grad = fb.grad = None
        (geo, app), attn = fn()
        (geo.sin() * w + app * w.cos() + attn[..., :1] * app).sum().backward()
        grads = {n: p.grad.clone() for n, p in att.named_parameters()}
        results.append((app.detach(), attn.detach(), ff.grad.clone(), fb.grad.clone(), grads))
    (a1, t1, gf1, gb1, g1), (a2, t2, gf2, gb2, g2) = results
    assert (t1 - 0.5).abs().max() > 0.05                                   # the attention really chooses
    assert torch.allclose(a1, a2, atol=1e-5) and torch.allclose(t1, t2, atol=1e-6)
    assert torch.allclose(gf1, gf2, atol=1e-5) and torch.allclose(gb1, gb2, atol=1e-5)
    for n in g2:
        assert g2[n].abs().max() > 0 and torch.allclose(g1[n], g2[n], atol=1e-5, rtol=1e-4), n


def test_decoder_split_rows_equal_the_whole_mlp():
    """With an appearance feature the decoder runs its density row on the geometry feature and its feature
    rows on the appearance: the same numbers as the whole MLP on each."""
    torch.manual_seed(0)
    d = vr.OSGDecoder(16, 32, 32)
    geo, app = torch.randn(2, 50, 16), torch.randn(2, 50, 16)
    sigma, rgb = d(geo, appearance=app)
    sigma_g, _ = d(geo)
    _, rgb_a = d(app)
    assert torch.allclose(sigma, sigma_g, atol=1e-6) and torch.allclose(rgb, rgb_a, atol=1e-6)
    assert torch.allclose(d.density(geo), sigma_g, atol=1e-6)
    assert not torch.allclose(rgb, d(geo)[1])


# ---------------------------------------------------------------- inference helpers

def test_density_grid_chunking_is_exact():
    G, planes = AnalyticG(ball_field()), ball_planes()
    full = meshing.density_grid(G, planes, resolution=20, chunk=20 ** 3)
    chunked = meshing.density_grid(G, planes, resolution=20, chunk=777)
    assert torch.equal(full, chunked)
    # indexed [x, y, z] over nodes -box/2..box/2
    axis = meshing.grid_axis(20, BOX)
    i, j, k = 3, 9, 14
    p = torch.tensor([[[axis[i], axis[j], axis[k]]]])
    assert torch.allclose(full[i, j, k], G.sample_density(planes, p)[0, 0, 0])


def test_mesh_of_the_analytic_ball_is_a_sphere():
    G, planes = AnalyticG(ball_field()), ball_planes()
    mesh = meshing.extract_mesh(G, planes, resolution=48, colors="axis")
    r = np.linalg.norm(mesh.vertices, axis=1)
    assert abs(r.mean() - R_BALL) < 0.004 and r.std() < 0.003
    # normals point outwards, faces wind outwards (positive volume), colours from the decoder
    assert (np.einsum("ij,ij->i", mesh.vertex_normals, mesh.vertices) > 0).mean() > 0.99
    assert mesh.volume > 0 and abs(mesh.volume - 4 / 3 * math.pi * R_BALL ** 3) < 0.05 * 4 / 3 * math.pi * R_BALL ** 3
    expect = G.sample_color(planes, torch.zeros(1, 1, 3), torch.tensor([[[0.0, 0.0, -1.0]]]))[0, 0].detach().numpy()
    assert np.abs(mesh.visual.vertex_colors[:, :3] / 255.0 - expect).max() < 0.02


def test_front_pasting_replaces_only_front_visible_pixels():
    G, planes = AnalyticG(ball_field()), ball_planes()
    n = 24
    views = {v.name: v for v in cameras.view_set("ortho", "head")}
    fcam = cameras.as_tensor([views["front"]])
    front_img = torch.rand(1, 3, 48, 48) * 2 - 1
    front = G.render(planes, fcam, n)
    for name, expect_any in [("front", True), ("back", False), ("left", True)]:
        cam = cameras.as_tensor([views[name]])
        out = G.render(planes, cam, n)
        img, mask = front_paste.paste_front(out["image"], out["image_xyz"], out["image_alpha"], front_img,
                                          front["image_depth"], fcam, tol=0.02)
        if name == "front":
            # every clearly covered pixel shows the input image
            covered = out["image_alpha"][0, 0] > 0.99
            assert mask[0, 0][covered].all()
            src = torch.nn.functional.interpolate(front_img, size=(n, n), mode="bilinear", align_corners=False,
                                                  antialias=True)
            assert mask.sum() > 0 and torch.isfinite(src).all()
        if name == "back":
            assert mask.sum() == 0 and torch.equal(img, out["image"])
        if name == "left":
            # the left view sees half its silhouette from the front (z > 0: image left half)
            m = mask[0, 0]
            assert m[:, : n // 2].sum() > 0 and m[:, n // 2 + 2:].sum() == 0
        assert expect_any == bool(mask.sum() > 0)


def test_compiled_field_is_not_a_submodule_and_copies_stay_eager(tiny_generators):
    import copy
    G = copy.deepcopy(tiny_generators["TriPlaneGenerator"])
    keys = list(G.state_dict())
    G.compile_renderer()            # lazy: nothing is compiled until called
    assert list(G.state_dict()) == keys and G._render_fn is not render_field
    ema = copy.deepcopy(G)
    assert ema._render_fn is render_field and list(ema.state_dict()) == keys


@pytest.mark.parametrize("variant", ["TriPlaneGenerator", "TriPlaneGenerator_v1"])
@pytest.mark.parametrize("perturb", [False, True])
def test_compiled_ray_march_is_one_graph_like_eager(tiny_generators, variant, perturb):
    """compile_renderer traces the whole march (rays, both sample passes, importance sampling, compositing)
    without a graph break (fullgraph), and gives the eager images and gradients (deterministic samples;
    with perturbed samples, finite values in range).  aot_eager: dynamo + autograd tracing, no codegen."""
    import copy
    G = copy.deepcopy(tiny_generators[variant]).train()
    c = cameras.as_tensor(cameras.view_set("rgb", "head", char_id="cm")[:2])
    planes = G.synthesize(_cond(2))["planes"].detach()
    runs = {}
    for name in ("eager", "compiled"):
        if name == "compiled":
            G.compile_renderer(backend="aot_eager", fullgraph=True)
        p = planes.clone().requires_grad_(True)
        G.zero_grad()
        out = G.render(p, c, 16, superresolve=False, perturb=perturb)
        (out["image_raw"].square().sum() + out["image_depth"].mean()).backward()
        runs[name] = (out, p.grad, [q.grad for q in G.field.parameters()])
    (a, ga, pa), (b, gb, pb) = runs["eager"], runs["compiled"]
    if perturb:
        assert all(torch.isfinite(b[k]).all() for k in ("image_raw", "image_alpha", "image_depth"))
        assert b["image_alpha"].min() >= 0 and b["image_alpha"].max() <= 1 + 1e-5
        assert gb.abs().sum() > 0 and all(g is not None for g in pb)
        return
    for k in ("image_raw", "image_alpha", "image_depth", "image_xyz"):
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gb, ga, rtol=1e-4, atol=1e-6)
    for x, y in zip(pb, pa):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)


_GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="the GPU's lookups (Triton, gather) need a GPU")


@pytest.mark.parametrize("device,sheets", [("cpu", 3), pytest.param("cuda", 1, marks=_GPU),
                                           pytest.param("cuda", 3, marks=_GPU)])
def test_compiled_training_march_passes_gradients_to_encoders_and_backbone(device, sheets):
    """G compiled as the trainer compiles it (compile_parts under set_compiled_arithmetic: encoders,
    backbone in NHWC and the ray march) gives the eager rays and every network the eager gradients.  The
    march's lookup is the gather lookup on a CPU, the fused Triton lookup on a GPU (one sheet, and nova_v1's
    3 sheets).  The gather lookup had returned fp32 rows
    through a no-op .float(), and compiled, the planes' gradient came back as zeros: the encoders and the
    backbone learned nothing while the decoder alone followed the loss (nova_v1 trained compiled on a GPU
    lost its density within 2 kimg)."""
    from training.triplane import set_compiled_arithmetic
    torch.manual_seed(0)
    G = build_preset("tiny", variant="TriPlaneGenerator_v1", plane_layers=sheets).to(device).train()
    cond = {k: v.to(device) for k, v in _cond(2).items()}
    cam = cameras.as_tensor(cameras.view_set("rgb", "head", char_id="g")[:2]).to(device)
    o, d = cameras.rays(cam, 0, uv=torch.rand(2, 96, 2, generator=torch.Generator().manual_seed(0)).to(device))
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False   # fp32 on both sides
    runs = {}
    try:
        for name in ("eager", "compiled"):
            restore = set_compiled_arithmetic(True) if name == "compiled" else (lambda: None)
            try:
                if name == "compiled":
                    G.compile_parts(backend="aot_eager" if device == "cpu" else "inductor")
                G.requires_grad_(True)
                G.zero_grad(set_to_none=True)
                torch.manual_seed(1)        # the backbone's noise inputs
                out = G.render_rays(G.synthesize(cond), o, d, perturb=False)
                (out["rgb"].float().square().mean() + out["alpha"].float().mean()).backward()
                runs[name] = out, {n: p.grad for n, p in G.named_parameters() if p.grad is not None}
            finally:
                restore()
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    (out_e, grads_e), (out_c, grads_c) = runs["eager"], runs["compiled"]
    for k in ("rgb", "alpha", "depth"):
        torch.testing.assert_close(out_c[k].float(), out_e[k].float(), rtol=1e-4, atol=1e-5)
    assert set(grads_c) == set(grads_e)
    # a noise strength's gradient is the upstream gradient times the noise drawn, and inductor on a GPU draws
    # its own random numbers (the rays do not depend on them: the strengths start at zero)
    tol = 1e-3 if device == "cpu" else 1e-2     # the GPU's fused BatchNorm reductions: 3e-3 on a bias
    for part in ("encoder.", "backbone.", "field."):
        names = [n for n in grads_e if n.startswith(part) and not (device != "cpu" and "noise_strength" in n)]
        total = sum(float(grads_e[n].norm()) for n in names)
        assert names and total > 0, part
        # relative to each gradient, or to a ten-thousandth of the part's where a gradient is nearly zero
        # (the key bias adds the same logit to both views: its gradient is rounding noise)
        rel = {n: float((grads_c[n] - grads_e[n]).norm()) / max(float(grads_e[n].norm()), 1e-4 * total)
               for n in names}
        worst = max(names, key=rel.get)
        assert rel[worst] < tol, f"{worst}: |compiled - eager| / |eager| = {rel[worst]:.3g}"


def test_bf16_autocast_stays_close_to_fp32(tiny_generators):
    G = tiny_generators["TriPlaneGenerator_v1"]
    c = cameras.as_tensor(cameras.view_set("rgb", "head", char_id="bf")[:2])
    with torch.no_grad():
        a = G(_cond(2), c)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            b = G(_cond(2), c)
    # compositing is fp32 whatever the autocast; lookups too, so geometry stays within a few mm
    assert b["image_alpha"].dtype == torch.float32 and b["image_depth"].dtype == torch.float32
    assert (a["image_alpha"] - b["image_alpha"]).abs().max() < 0.02
    assert (a["image_depth"] - b["image_depth"]).abs().max() < 0.02
    assert (a["image_raw"] - b["image_raw"].float()).abs().max() < 0.02


def test_ablation_and_precomputed_features():
    torch.manual_seed(0)
    G = build_preset("tiny", variant="TriPlaneGenerator_v0", back_encoder="resnet").eval()
    assert G.back_encoder is None and G.config["back_encoder"] == "resnet"
    c = cameras.as_tensor(cameras.view_set("ortho", "head")[:1])
    cond = _cond(1)
    with torch.no_grad():
        feat = G.encoder(torch.nn.functional.interpolate(cond["front"], size=64))
        out = G(cond, c)
        G1 = build_preset("tiny", variant="TriPlaneGenerator").eval()
        p1 = G1.synthesize(cond)["planes"]
        p2 = G1.synthesize({**cond, "feat_front": G1.encoder(cond["front"])})["planes"]
    assert out["image"].shape == (1, 3, 32, 32) and feat.shape[1] == G.config["enc_channels"]
    assert torch.allclose(p1, p2, atol=1e-6)
    with pytest.raises(ValueError, match="feat_front"):
        G1.synthesize({**cond, "feat_front": torch.zeros(1, 3, 2, 2)})


def test_compile_parts_without_superresolution(monkeypatch):
    """superresolution="none" (the release recipes: the field renders at full size) has no super-resolution
    network: compile_parts compiles and lays out what exists (it had failed on the missing network)."""
    import training.triplane as T
    wrapped = []
    monkeypatch.setattr(torch, "compile", lambda fn=None, **kw: wrapped.append(getattr(fn, "__self__", fn)) or fn)
    G = T.build_preset("tiny", superresolution="none")
    assert G.superresolution is None
    G.compile_parts()
    assert G.backbone in wrapped and all(b.channels_last for b in G.backbone.modules() if hasattr(b, "channels_last"))
