"""Ground-truth rasteriser (training/raster.py) and the render script (_scripts/data/render.py).

Unit tests on analytic shapes, then the real models through the render script
into a temporary data tree (size 64..128 to stay fast on CPU/llvmpipe).
"""
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from training import cameras, paths, raster
from training.assets.character import Character, Material, Primitive

torch.set_num_threads(1)

REAL = Path(os.environ.get("REAL_MODELS_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "real_models"))
GODETTE = REAL / "godette" / "godette.vrm"
RAI = REAL / "rai_girl" / "model.obj"
RAI_TEX = REAL / "rai_girl" / "diffuse_map.png"


def _char(meshes, materials=None):
    prims = []
    for i, m in enumerate(meshes):
        if isinstance(m, Primitive):
            prims.append(m)
        else:
            prims.append(Primitive(f"p{i}", np.asarray(m.vertices, np.float32), np.asarray(m.faces, np.int32), material=0))
    return Character("t", "memory", prims, materials or [Material("m", np.array([1.0, 0.5, 0.25, 1.0], np.float32))])


def _pixel_err(xyz, alpha, view, res):
    """Reprojection error (pixels) of the surface points of fully covered pixels."""
    ys, xs = np.nonzero(alpha >= 0.999)
    uv, _ = cameras.project(torch.from_numpy(np.ascontiguousarray(xyz[ys, xs], np.float32))[None],
                            cameras.as_tensor([view]))
    return np.abs(uv[0].numpy() * res - 0.5 - np.stack([xs, ys], 1)).max(1)


# ---------------------------------------------------------------- analytic shapes

def test_sphere_silhouette_and_xyz_match_analytic():
    r, origin, res = 0.2, np.array([0.3, 1.2, -0.1]), 96
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=r)
    ch = _char([sphere.apply_translation(origin)])
    rast = raster.Rasteriser(res, 2)
    fr = cameras.get_framing("head")
    ortho = cameras.view_set("ortho", fr)
    persp = [cameras.make_view("p", 10.0, 35.0, fr, False)]
    with rast.upload(ch, origin) as scene:
        outs = [scene.render(v) for v in ortho + persp]
    px = fr.box / res
    for v, o in zip(ortho, outs[:5]):
        a = o["rgba"][..., 3]
        assert abs(a.sum() * px * px / (math.pi * r * r) - 1) < 0.01          # disc area
        radius = np.linalg.norm(o["xyz"][a > 0.999], axis=1)
        assert np.all(np.abs(radius - r) < 0.002)                              # points on the sphere
        assert _pixel_err(o["xyz"], a, v, res).max() < 0.01                     # exact pixel centres
        assert np.allclose(o["rgba"][a > 0.999, :3], [1.0, 128 / 255, 64 / 255], atol=2 / 255)
        assert np.all(o["rgba"][a == 0] == 0)                                   # transparent background
    # perspective: the silhouette is a disc of radius f * r / sqrt(d^2 - r^2) (image units)
    v, o = persp[0], outs[5]
    f = 0.5 / math.tan(math.radians(fr.fov) / 2)
    rad_img = f * r / math.sqrt(fr.dist ** 2 - r ** 2) * res
    assert abs(o["rgba"][..., 3].sum() / (math.pi * rad_img ** 2) - 1) < 0.015
    assert _pixel_err(o["xyz"], o["rgba"][..., 3], v, res).max() < 0.02
    # the nearest point is on the line of sight at distance d - r
    assert abs(o["depth"][o["depth"] > 0].min() - (fr.dist - r)) < 0.01


def test_xyza_encoding_round_trip():
    xyz = np.random.default_rng(0).uniform(-0.35, 0.35, (8, 8, 3)).astype(np.float32)
    enc = raster.encode_xyza(xyz, np.ones((8, 8), np.float32), 0.7)
    dec, a = raster.decode_xyza(raster.to_uint8(enc), 0.7)
    assert np.abs(dec - xyz).max() <= 0.7 / 255 / 2 + 1e-6 and np.all(a == 1)


def _quad_with_alpha(mode, cutoff=0.5):
    """A front-facing square whose texture alpha is 0.3 on the left half, 0.8 on the right."""
    pos = np.array([[-0.2, -0.2, 0], [0.2, -0.2, 0], [0.2, 0.2, 0], [-0.2, 0.2, 0]], np.float32)
    uv = np.array([[0, 1], [1, 1], [1, 0], [0, 0]], np.float32)
    tex = np.zeros((4, 4, 4), np.uint8)
    tex[..., 0] = 255
    tex[:, :2, 3], tex[:, 2:, 3] = round(0.3 * 255), round(0.8 * 255)
    prim = Primitive("q", pos, np.array([[0, 1, 2], [0, 2, 3]], np.int32), uvs=uv)
    mat = Material("m", texture=tex, alpha_mode=mode, alpha_cutoff=cutoff)
    return _char([prim], [mat])


@pytest.mark.parametrize("mode,left,right", [("OPAQUE", 1.0, 1.0), ("MASK", 0.0, 1.0), ("BLEND", 0.3, 0.8)])
def test_alpha_modes(mode, left, right):
    res = 64
    out = raster.render_views(_quad_with_alpha(mode), [cameras.view_set("ortho", "head")[0]], size=res)[0]
    a = out["rgba"][..., 3]
    # texels are nearest-sampled at their centres: sample well inside each half
    c = res // 2
    assert abs(a[c, c - 10] - left) < 0.02 and abs(a[c, c + 10] - right) < 0.02
    if left > 0:
        assert out["rgba"][c, c - 10, 0] > 0.98                                  # straight alpha: full red
    assert np.allclose(out["xyza"][..., 3], a)                                   # xyza alpha = coverage


def test_blend_is_drawn_over_opaque_and_xyz_weighted():
    """A 50% transparent red plane in front of an opaque blue one."""
    res = 32
    quad = np.array([[-0.25, -0.25, 0], [0.25, -0.25, 0], [0.25, 0.25, 0], [-0.25, 0.25, 0]], np.float32)
    tris = np.array([[0, 1, 2], [0, 2, 3]], np.int32)
    mats = [Material("blue", np.array([0, 0, 1, 1], np.float32)),
            Material("red", np.array([1, 0, 0, 0.5], np.float32), alpha_mode="BLEND")]
    # the blended plane comes first in the file: the renderer must still draw it last
    prims = [Primitive("front", quad + [0, 0, 0.1], tris, 1), Primitive("back", quad - [0, 0, 0.1], tris, 0)]
    ch = Character("t", "memory", prims, mats)
    out = raster.render_views(ch, [cameras.view_set("ortho", "head")[0]], size=res)[0]
    c = res // 2
    assert np.allclose(out["rgba"][c, c], [0.5, 0, 0.5, 1], atol=0.02)
    # blended surfaces mix their positions by alpha weight: z = (0.1 + (-0.1)) / 2
    assert abs(out["xyz"][c, c, 2]) < 0.003


def test_visible_faces_removes_enclosed_surfaces():
    outer = trimesh.creation.box((0.4, 0.4, 0.4))
    inner = trimesh.creation.icosphere(subdivisions=2, radius=0.1)
    ch = _char([outer, inner])
    vis = raster.visible_faces(ch, framing="head", res=128)
    assert vis[0].all() and not vis[1].any()
    # open the box's front: the inner sphere's front half becomes visible
    keep = outer.face_normals[:, 2] < 0.5
    ch.primitives[0] = Primitive("open", ch.primitives[0].positions, ch.primitives[0].faces[keep])
    vis = raster.visible_faces(ch, [cameras.view_set("ortho", "head")[0]], res=128)
    front = inner.face_normals[:, 2] > 0.3
    assert vis[1][front].all() and not vis[1][inner.face_normals[:, 2] < -0.3].any()


def _darkening(o):
    """How much the lines darken each pixel (images on white)."""
    return raster.on_white(o["rgba"]).mean(-1) - raster.on_white(o["lines_rgba"]).mean(-1)


def test_contour_lines_on_silhouette_and_creases_only():
    from scipy.ndimage import binary_erosion, maximum_filter
    res = 64
    v = cameras.make_view("v", 30.0, 45.0, cameras.get_framing("head"), True)   # a box shows 3 faces
    box = raster.render_views(_char([trimesh.creation.box((0.3, 0.3, 0.3))]), [v], size=res, lines=True)[0]
    sphere = raster.render_views(_char([trimesh.creation.icosphere(subdivisions=4, radius=0.2)]), [v],
                                 size=res, lines=True)[0]
    for o in (box, sphere):
        inside = o["rgba"][..., 3] > 0.5
        rim = inside & ~binary_erosion(inside)
        # the silhouette is outlined (anti-aliased 1 px lines straddle the edge: look next door too)
        assert np.all(maximum_filter(_darkening(o), 3)[rim] > 0.25)
        assert np.all(o["lines_rgba"][..., 3] >= o["rgba"][..., 3] - 1e-6)
        assert np.all(_darkening(o) > -1e-6)
    core = lambda o: binary_erosion(o["rgba"][..., 3] > 0.5, iterations=2)
    # the box's 3 visible crease edges (each ~0.3 m * sqrt(2/3) long) are drawn 1 px wide, the flat
    # faces stay clean; the smooth sphere gets no inner lines
    contrast = np.mean([1.0, 0.5, 0.25]) - np.mean(raster.LINE_COLOR)
    line_px = _darkening(box)[core(box)].sum() / contrast
    expected = 3 * 0.3 * math.sqrt(2 / 3) / 0.7 * res
    assert 0.6 * expected < line_px < 1.2 * expected
    assert _darkening(sphere)[core(sphere)].max() < 0.01


def test_projection_matches_camera_conventions():
    """GL clip coordinates of a point give the same (u, v) as cameras.project."""
    pts = np.random.default_rng(1).uniform(-0.3, 0.3, (50, 3))
    for v in cameras.view_set("ortho", "head") + cameras.view_set("rgb", "head", "abc"):
        w2c, P = raster._camera(v)[:2]
        clip = np.c_[pts, np.ones(len(pts))] @ P.T
        ndc = clip[:, :3] / clip[:, 3:]
        uv, z = cameras.project(torch.tensor(pts, dtype=torch.float32)[None], cameras.as_tensor([v]))
        assert np.allclose((ndc[:, :2] + 1) / 2, uv[0].numpy(), atol=1e-5)
        assert np.all(np.abs(ndc[:, 2]) < 1)   # the box lies between near and far
