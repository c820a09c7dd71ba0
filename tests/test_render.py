"""Ground-truth rasteriser (training/data/raster.py) and the render script (_scripts/data/render.py).

Unit tests on analytic shapes, then the real models through the render script
into a temporary data tree (size 64..128 to stay fast on CPU/llvmpipe).
"""
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from training import cameras, paths
from training.errors import UserError
from training.images import on_white
from training.data import raster, render
from training.data.assets.character import Character, Material, Primitive

torch.set_num_threads(1)

REAL = Path(os.environ.get("REAL_MODELS_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "real_models")).resolve()
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


def _pixel_err(xyz, alpha, view, res, mask=None):
    """Reprojection error (pixels) of the surface points of fully covered pixels."""
    ys, xs = np.nonzero((alpha >= 0.999) if mask is None else mask)
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
        outs = [scene.render(v, depth=True) for v in ortho + persp]
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
    assert np.allclose(out["xyza"][..., 3], a, atol=2e-3)                        # xyza alpha = coverage


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


def test_blended_primitives_drawn_back_to_front():
    """Two 50% planes, red at z=+0.1 and blue at z=-0.1: whichever is nearer the camera is on top."""
    quad = np.array([[-0.25, -0.25, 0], [0.25, -0.25, 0], [0.25, 0.25, 0], [-0.25, 0.25, 0]], np.float32)
    tris = np.array([[0, 1, 2], [0, 2, 3]], np.int32)
    mats = [Material("red", np.array([1, 0, 0, 0.5], np.float32), alpha_mode="BLEND"),
            Material("blue", np.array([0, 0, 1, 0.5], np.float32), alpha_mode="BLEND")]
    ch = Character("t", "memory", [Primitive("r", quad + [0, 0, 0.1], tris, 0),
                                   Primitive("b", quad - [0, 0, 0.1], tris, 1)], mats)
    views = {v.name: v for v in cameras.view_set("ortho", "head")}
    front, back = raster.render_views(ch, [views["front"], views["back"]], size=16)
    c = 8
    assert np.allclose(front["rgba"][c, c], [2 / 3, 0, 1 / 3, 0.75], atol=0.01)   # red over blue
    assert np.allclose(back["rgba"][c, c], [1 / 3, 0, 2 / 3, 0.75], atol=0.01)    # blue over red


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
    return on_white(o["rgba"]).mean(-1) - on_white(o["lines_rgba"]).mean(-1)


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


# ---------------------------------------------------------------- real models through the render script

from _scripts.data import render as render_script   # noqa: E402

SIZE = 128
MODELS = {"godette": (GODETTE, []), "model": (RAI, ["--texture", str(RAI_TEX)])}   # id = file stem
needs_models = pytest.mark.skipif(not (GODETTE.exists() and RAI.exists()), reason="real models not found")


def _render(root, src, framing, *extra):
    return render_script.run(["--src", str(src), "--renderset", f"rs_{framing}", "--framing", framing,
                              "--size", str(SIZE), "--data-root", str(root), *extra])


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("lustrous")
    for framing in ("head", "body"):
        for cid, (src, extra) in MODELS.items():
            stats = _render(root, src, framing, *extra)
            assert stats.result == {"found": 1, "skipped": 0, "rendered": 1, "failed": 0}
    return root


def _img(root, framing, dtype, cid, view):
    return np.asarray(Image.open(paths.render_path(root, f"rs_{framing}", dtype, cid, view)))


def _meta(root, framing, cid):
    return json.loads(paths.char_meta_path(root, f"rs_{framing}", cid).read_text())


CASES = [(f, c) for f in ("head", "body") for c in MODELS]


@needs_models
@pytest.mark.parametrize("framing,cid", CASES)
def test_tree_files_sizes_and_meta(tree, framing, cid):
    meta = _meta(tree, framing, cid)
    assert meta["framing"] == framing and meta["box"] == cameras.get_framing(framing).box
    assert set(meta["views"]) == {"ortho", "rgb"} and len(meta["views"]["rgb"]) == 8
    assert Path(meta["source_file"]).exists() and meta["options"]["arm_angle"] == 60.0
    # the OBJ has no skeleton: its head is estimated, and the meta says so
    assert meta["head_estimated"] == (framing == "head" and cid == "model")
    if cid == "model":
        assert meta["options"]["load"]["texture"] == str(RAI_TEX.resolve())
    for dtype, views, channels in (("ortho", cameras.ORTHO_VIEWS, 4), ("ortho_xyza", cameras.ORTHO_VIEWS, 4),
                                   ("rgb", meta["views"]["rgb"], 3), ("xyza", meta["views"]["rgb"], 4)):
        for v in views:
            im = _img(tree, framing, dtype, cid, v)
            assert im.shape == (SIZE, SIZE, channels), (dtype, v)
    front = _img(tree, framing, "ortho", cid, "front")
    assert front[0, 0, 3] == 0 and front[..., 3].max() == 255                      # transparent background
    rgb = _img(tree, framing, "rgb", cid, "0000")
    assert np.all(rgb[_img(tree, framing, "xyza", cid, "0000")[..., 3] == 0] == 255)  # white background
    rs = json.loads(paths.renderset_meta_path(tree, f"rs_{framing}").read_text())
    assert rs["size"] == SIZE and set(rs["views"]["ortho"]) == set(cameras.ORTHO_VIEWS)


@needs_models
@pytest.mark.parametrize("framing,cid", CASES)
def test_front_back_mirrored_silhouettes_different_colours(tree, framing, cid):
    f = _img(tree, framing, "ortho", cid, "front").astype(np.float32) / 255
    b = _img(tree, framing, "ortho", cid, "back")[:, ::-1].astype(np.float32) / 255
    fm, bm = f[..., 3] > 0.5, b[..., 3] > 0.5
    assert fm.mean() > 0.03
    assert (fm & bm).sum() / (fm | bm).sum() > 0.9
    both = (f[..., 3] == 1) & (b[..., 3] == 1)
    assert np.abs(f[..., :3] - b[..., :3])[both].mean() > 0.05
    # the front view sees the nearer surface: z(front) >= z(back) on the same line of sight
    zf = raster.decode_xyza(_img(tree, framing, "ortho_xyza", cid, "front"), 1.0)[0][..., 2]
    zb = raster.decode_xyza(_img(tree, framing, "ortho_xyza", cid, "back")[:, ::-1], 1.0)[0][..., 2]
    assert np.all(zf[both] >= zb[both] - 2 / 255)


@needs_models
@pytest.mark.parametrize("framing,cid", CASES)
def test_xyza_inside_box_and_reprojects(tree, framing, cid):
    meta = _meta(tree, framing, cid)
    box = meta["box"]
    lo, hi = (np.array(b) for b in meta["framed_bounds"])
    q = box / 255
    for vs, dtype in (("ortho", "ortho_xyza"), ("rgb", "xyza")):
        for name, vj in meta["views"][vs].items():
            raw = _img(tree, framing, dtype, cid, name)
            xyz, a = raster.decode_xyza(raw, box)
            full = a == 1
            assert full.sum() > 20
            pts = xyz[full]
            # inside the box (and, unclipped, inside the character's own bounds)
            assert np.all(np.abs(pts) <= box / 2 + 1e-6)
            inside = np.all((pts >= -box / 2 + q) & (pts <= box / 2 - q), 1)
            assert np.all((pts[inside] >= lo - q) & (pts[inside] <= hi + q))
            if framing == "body":
                assert inside.mean() > 0.999                    # the whole character fits the body box
            # the camera in the meta puts every (unclipped) surface point back on its own pixel
            keep = full & np.all(np.abs(xyz) <= box / 2 - q, -1)
            err = _pixel_err(xyz, a, cameras.View.from_json(vj), SIZE, keep)
            assert np.quantile(err, 0.99) < 0.75 and err.max() < 2.0, (name, err.max())


@needs_models
def test_meta_rebuilds_the_rendered_character(tree):
    meta = _meta(tree, "body", "model")
    framed = render.load_framed_character(meta)
    assert np.allclose(framed.origin, meta["origin"])
    v = cameras.View.from_json(meta["views"]["ortho"]["front"])
    out = raster.render_views(framed.character, [v], size=SIZE)[0]
    saved = _img(tree, "body", "ortho", "model", "front").astype(int)
    assert np.abs(raster.to_uint8(out["rgba"]).astype(int) - saved).max() <= 1
    # bind pose (arms up) in the same framed space: the file's own positions minus the recorded origin
    from training.data.assets.load import load_character
    bind = render.load_framed_character(meta, posed=False).character
    raw = load_character(RAI, **meta["options"]["load"])
    assert np.allclose(bind.all_positions() + np.array(meta["origin"]), raw.all_positions(), atol=1e-5)


@needs_models
def test_resume_skips_complete_and_adds_new_dtypes(tree):
    meta_p = paths.char_meta_path(tree, "rs_head", "godette")
    front_p = paths.render_path(tree, "rs_head", "ortho", "godette", "front")
    t_meta, t_front = meta_p.stat().st_mtime_ns, front_p.stat().st_mtime_ns
    assert _render(tree, GODETTE, "head").result == {"found": 1, "skipped": 1, "rendered": 0, "failed": 0}
    assert meta_p.stat().st_mtime_ns == t_meta
    # asking for more dtypes renders only those
    assert _render(tree, GODETTE, "head", "--lines")["rendered"] == 1
    assert front_p.stat().st_mtime_ns == t_front
    lines = _img(tree, "head", "ortho_lines", "godette", "front")
    plain = _img(tree, "head", "ortho", "godette", "front")
    assert lines.shape == plain.shape and np.all(lines[..., 3] >= plain[..., 3])
    assert (lines[..., :3].max(-1) < 40).sum() > (plain[..., :3].max(-1) < 40).sum() + 50   # dark lines added
    assert "ortho_lines" in _meta(tree, "head", "godette")["dtypes"]
    # a renderset keeps its settings
    with pytest.raises(UserError, match="size"):
        render_script.run(["--src", str(GODETTE), "--renderset", "rs_head", "--framing", "head",
                           "--size", "64", "--data-root", str(tree)])


@needs_models
def test_corrupt_file_is_recorded_and_the_run_goes_on(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "good.vrm").symlink_to(GODETTE)
    (src / "broken.vrm").write_bytes(GODETTE.read_bytes()[:5000])          # truncated
    (src / "junk.obj").write_text("v 0 0 0\nthis is not obj\nf 1 2 9\n")
    root = tmp_path / "root"
    stats = render_script.run(["--src", str(src), "--renderset", "rs", "--framing", "body", "--size", "32",
                               "--dtypes", "ortho", "--data-root", str(root), "--workers", "2"])
    assert stats.result == {"found": 3, "skipped": 0, "rendered": 1, "failed": 2}
    assert stats.exit_code == 1
    fails = [json.loads(line) for line in (paths.renders_dir(root, "rs") / "failures.jsonl").read_text().splitlines()]
    assert sorted(f["id"] for f in fails) == ["broken", "junk"]
    for f in fails:
        assert f["id"] in f["error"] and "\n" not in f["error"]            # one line naming the file
    assert paths.char_meta_path(root, "rs", "good").exists()
    assert not paths.char_meta_path(root, "rs", "broken").exists()
    assert not (paths.renders_dir(root, "rs") / "ortho" / "n" / "broken").exists()  # nothing partial
    leftovers = [p for p in paths.renders_dir(root, "rs").rglob("*") if p.name.startswith(".")]
    assert leftovers == []                                                      # no temporary files


def test_unwritable_output_is_a_clear_error(tmp_path, capsys):
    root = tmp_path / "root"
    root.write_text("a file where the data root folder should be")
    obj = tmp_path / "tri.obj"
    obj.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    with pytest.raises(SystemExit) as e:
        render_script.main(["--src", str(obj), "--renderset", "rs", "--framing", "body", "--data-root", str(root)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(root) in err[0]


def test_bad_arguments(tmp_path):
    with pytest.raises(UserError, match="shard"):
        render_script.run(["--src", str(tmp_path), "--renderset", "r", "--framing", "head", "--shard", "3/2"])
    with pytest.raises(UserError, match="dtypes"):
        render_script.run(["--src", str(tmp_path), "--renderset", "r", "--framing", "head", "--dtypes", "ortho,nope"])
    with pytest.raises(UserError, match="no such"):
        render_script.run(["--src", str(tmp_path / "missing"), "--renderset", "r", "--framing", "head"])


def test_shards_partition_ids():
    ids = [f"c{i:03d}" for i in range(200)]
    parts = [{c for c in ids if render_script.in_shard(c, i, 3)} for i in range(3)]
    assert set().union(*parts) == set(ids) and sum(map(len, parts)) == len(ids)
    assert all(len(p) > 40 for p in parts)
