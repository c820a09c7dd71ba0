"""End to end: tiny rendered set + tiny untrained checkpoint -> generate -> measure (table, JSON, CSV, HTML)."""
import csv
import json
import re

import numpy as np
import pytest
import torch

from training.errors import UserError
from training.infer import meshing

torch.set_num_threads(1)

IDS = ["char01", "char02"]
CENTRE = np.array([0.0, 0.7, 0.0])      # the hidden inner sphere sits inside the body


def _toy_characters(raw):
    import trimesh
    for k, cid in enumerate(IDS):
        body = trimesh.creation.capsule(height=0.8 + 0.2 * k, radius=0.25, count=[12, 12])
        body.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]))   # upright
        body.apply_translation(CENTRE)
        head = trimesh.creation.icosphere(subdivisions=2, radius=0.2)
        head.apply_translation([0, 1.45 + 0.2 * k, 0.0])
        nose = trimesh.creation.box(extents=[0.08, 0.08, 0.1])
        nose.apply_translation([0, 1.45 + 0.2 * k, 0.22])
        inner = trimesh.creation.icosphere(subdivisions=1, radius=0.1)
        inner.apply_translation(CENTRE)
        parts = [body, head, nose, inner]
        for p, c in zip(parts, [[200, 60, 60, 255], [240, 210, 180, 255], [30, 30, 200, 255], [0, 255, 0, 255]]):
            p.visual.vertex_colors = np.tile(c, (len(p.vertices), 1))
        d = raw / cid[-1] / cid
        d.mkdir(parents=True)
        trimesh.util.concatenate(parts).export(d / f"{cid}.glb")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from _scripts.data import render
    base = tmp_path_factory.mktemp("eval_e2e")
    root, proj = base / "data", base / "proj"
    mp = pytest.MonkeyPatch()
    mp.setenv("PROJECT_DN", str(proj))
    _toy_characters(root / "raw" / "toy")
    render.run(["--src", str(root / "raw" / "toy"), "--source", "toy", "--renderset", "toy", "--framing", "body",
                "--size", "32", "--grid60", "--data-root", str(root)])
    (root / "subsets").mkdir()
    (root / "subsets" / "toy_test.csv").write_text("".join(f"{c[-1]}/{c}\n" for c in IDS))
    from training.checkpoint import save_checkpoint
    from training.triplane import build_preset
    torch.manual_seed(0)
    G = build_preset("tiny", framing="body")
    save_checkpoint(proj / "_train/eg3dc/runs/toyrun/00000/network-snapshot-000000.pt", {"G_ema": G}, step=0, kimg=0)
    yield {"root": root, "proj": proj}
    mp.undo()


def generate_views():
    from training.eval.generate import eval_views
    return eval_views("body")


def test_generate_then_measure(toy, capsys):
    from _scripts.eval import generate, measure
    root, proj = toy["root"], toy["proj"]
    args = ["--generator_module", "training.triplane.TriPlaneGenerator_v1", "--dataset", "toy",
            "--inferquery", "toyrun-00000-0", "--batch", "2", "--mesh-resolution", "24", "--samples", "8", "8",
            "--data-root", str(root), "--no-progress"]
    out = generate.run(args)
    assert out["done"] == 2 and out["failed"] == 0
    ev = root / "temp/eval/toyrun-00000-0/toy"
    assert out["out"] == ev
    for cid in IDS:
        d = cid[-1] + "/" + cid
        for v in ("front", "left", "right", "back"):
            assert (ev / "ortho" / d / f"{v}.png").exists()
        assert len(list((ev / "rgb60" / d).glob("*.png"))) == 12
        assert (ev / "rgb60" / d / "0042.png").exists()          # spin12 = grid indices 42..47, 36..41
        assert (ev / "input" / d / "back.png").exists()
        assert (ev / "mesh" / d / "mesh.ply").exists() and (ev / "mesh" / d / "mesh.glb").exists()
        step = json.loads((ev / "meta" / cid[-1] / f"{cid}.json").read_text())["mesh"]["step"]
        assert step in (meshing.mesh_step_for("body"), 1.0)       # the framing's, or the published fallback
    assert generate.run(args)["skipped"] == 2                   # resumable: nothing left to do
    with pytest.raises(UserError, match="other settings"):      # one tree never mixes two settings
        generate.run([x if x != "24" else "20" for x in args])   # another mesh resolution
    pasted = generate.run(args + ["--front-paste", "--no-mesh", "--limit", "1", "--name", "toyrun-paste"])
    assert pasted["done"] == 1 and (root / "temp/eval/toyrun-paste/toy/ortho/1/char01/front.png").exists()

    roi = proj / "roi.json"
    roi.write_text(json.dumps({"upper": [-1, 0, -1, 1, 1, 1]}))
    res = measure.run(["--inferquery", "toyrun-00000-0", "--dataset", "toy", "--data-root", str(root),
                       "--random-init", "--samples", "2000", "--no-progress", "--device", "cpu", "--roi", str(roi)])
    printed = capsys.readouterr().out
    for sub, met in [("front", "psnr"), ("back", "lpips"), ("360", "clip"), ("geom", "cd"), ("geom", "f1@5")]:
        assert re.search(rf"^{re.escape(sub)}\s+{re.escape(met)}\s+(\S+)$", printed, re.M), (sub, met, printed)
    result = res["result"]
    rows = {(r["subset"], r["metric"]): r for r in result["table"]}
    assert rows[("front", "psnr")]["n"] == 2 and 0 < rows[("front", "psnr")]["value"] < 100
    assert rows[("360", "ssim")]["value"] is not None
    assert rows[("geom:upper", "f1@10")]["n"] == 2
    assert "fid" in result["unavailable"]                        # 32 images < the FID minimum: said, not zero
    js = json.loads((ev / "measure.json").read_text())
    assert set(js["per_character"]) == set(IDS)
    assert len(js["per_character"]["char01"]["views"]) == 16
    with open(ev / "measure.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["id"] for r in table] == IDS and table[0]["front/psnr"] != ""
    page = (ev / "report.html").read_text()
    assert page.count("<img") >= 2 * 2 * 16
    for src in re.findall(r'src="([^"]+)"', page)[:40]:          # relative links that resolve
        assert (ev / src).resolve().exists(), src
    # self-contained variant: thumbnails embedded
    from training.eval import report as eval_report
    views = [(d, v.name) for d, v in generate_views()]
    p = eval_report.write_report(proj / "standalone.html", result, root=root, renderset="toy", eval_dir=ev,
                                 views=views, thumbs=16)
    assert p.read_text().count('src="data:image/jpeg;base64,') == 2 * (2 + 2 * 16)


def test_ground_truth_mesh_hides_inner_surfaces(toy):
    from training.data import catalog
    from training.eval import geometry as geo
    from training.eval.gt_mesh import ground_truth_mesh
    root = toy["root"]
    meta = catalog.load_char_meta(root, "toy", "char01")
    gt = ground_truth_mesh(root, "toy", "char01", meta, use_cache=False)
    origin = np.asarray(meta["origin"])
    r = np.linalg.norm(gt.vertices - (CENTRE - origin), axis=1)
    assert len(gt.faces) > 100
    assert r.min() > 0.2                       # the inner sphere (r = 0.1) is gone, the body (r = 0.25) stays
    same = geo.geometry_scores(gt, gt.copy(), (np.full(3, -1.05), np.full(3, 1.05)), n=2000)
    assert same["cd"] == pytest.approx(0.0, abs=1e-6) and same["f1@5"] == pytest.approx(100.0)


def test_ground_truth_source_found_in_moved_tree(toy):
    from training.data import catalog
    from training.errors import UserError
    from training.eval.gt_mesh import source_file
    root = toy["root"]
    meta = catalog.load_char_meta(root, "toy", "char02")
    moved = dict(meta, source_file="/elsewhere/raw/toy/2/char02/char02.glb")
    assert source_file(root, moved) == root / "raw/toy/2/char02/char02.glb"
    with pytest.raises(UserError, match="source file not found"):
        source_file(root, dict(moved, source="other"))


def test_oracle_tree_scores_perfect(toy, capsys, monkeypatch):
    """Ground truth copied into an evaluation tree: every metric must be at its best value, which checks
    that measure pairs each prediction with its own view and that meshes share the framed frame."""
    import shutil
    from _scripts.eval import measure
    from training import paths
    from training.data import catalog
    from training.eval.generate import eval_views, meta_path
    from training.eval.gt_mesh import ground_truth_mesh
    root, proj = toy["root"], toy["proj"]
    ev = root / "temp/eval/oracle/toy"
    for cid in IDS:
        for dtype, v in eval_views("body"):
            dst = ev / dtype / cid[-1] / cid / f"{v.name}.png"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(paths.render_path(root, "toy", dtype, cid, v.name), dst)
        gt = ground_truth_mesh(root, "toy", cid, catalog.load_char_meta(root, "toy", cid))
        (ev / "mesh" / cid[-1] / cid).mkdir(parents=True)
        gt.export(ev / "mesh" / cid[-1] / cid / "mesh.ply")
        meta_path(ev, cid).parent.mkdir(parents=True, exist_ok=True)
        meta_path(ev, cid).write_text("{}")
    # FID plumbing (features pooled over characters): a cheap stand-in for the Inception features
    from training.eval import fid
    monkeypatch.setattr(fid.FIDMetric, "features",
                        lambda self, imgs: np.stack([a[::8, ::8].reshape(-1)[:24] for a in imgs]).astype(np.float64))
    res = measure.run(["--inferquery", "oracle", "--dataset", "toy", "--data-root", str(root), "--random-init",
                       "--samples", "2000", "--no-progress", "--device", "cpu", "--fid-min", "20"])
    rows = {(r["subset"], r["metric"]): r["value"] for r in res["result"]["table"]}
    for sub in ("front", "back", "360"):
        assert rows[(sub, "psnr")] == pytest.approx(100.0)
        assert rows[(sub, "ssim")] == pytest.approx(100.0, abs=1e-4)
        assert rows[(sub, "lpips")] == pytest.approx(0.0, abs=1e-4)
        if "clip" not in res["result"]["unavailable"]:       # (a machine without open_clip says so instead)
            assert rows[(sub, "clip")] == pytest.approx(100.0, abs=1e-3)
    if "fid" not in res["result"]["unavailable"] or "package" not in res["result"]["unavailable"]["fid"]:
        assert rows[("all", "fid")] == pytest.approx(0.0, abs=1e-3)
    assert rows[("geom", "cd")] == pytest.approx(0.0, abs=1e-6)
    assert rows[("geom", "f1@5")] == pytest.approx(100.0) and rows[("geom", "f1@10")] == pytest.approx(100.0)
    for sub in ("front", "back"):    # the ground truth depends on its input perfectly
        assert rows[(sub, "spread")] == pytest.approx(1.0) and rows[(sub, "devcorr")] == pytest.approx(1.0)
