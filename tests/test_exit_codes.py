"""Every data job follows one rule (training/jobs.py, docs/DESIGN.md "Data jobs: failures and exit codes"):
process what can be processed, record each failure with its reason, print a summary, exit 1 when anything
failed and 2 when the job cannot start (one line, nothing written), never leave a half-written result.

Each job gets one bad item among good ones, and an input it cannot start from."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from tests.test_dataprep import GOOD, fake_render
from training import paths
from training.data import clean, features, masks

IDS = ["good01", "good02", "bad003"]


def run_job(main, argv, capsys):
    """(exit code, stdout, stderr) of a job's main()."""
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def no_temporary_files(root: Path):
    left = [p for p in Path(root).rglob(".*") if ".tmp" in p.name]
    assert not left, left


def corrupt(p: Path):
    p.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")


@pytest.fixture()
def tree(tmp_path):
    for cid in IDS:
        fake_render(tmp_path, "toy", cid, GOOD)
    return tmp_path


# ------------------------------------------------------------------ render

def _obj(path: Path, texture: str | None = None):
    m = trimesh.creation.box(extents=(0.4, 1.2, 0.3))
    m.apply_translation((0, 0.6, 0))
    lines = ["mtllib m.mtl", "usemtl skin"] + [f"v {x:.4f} {y:.4f} {z:.4f}" for x, y, z in m.vertices] + \
            ["vt 0 0", "vt 1 0", "vt 1 1"] + [f"f {a + 1}/1 {b + 1}/2 {c + 1}/3" for a, b, c in m.faces]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    mtl = "newmtl skin\nKd 0.8 0.5 0.4\n" + (f"map_Kd {texture}\n" if texture else "")
    (path.parent / "m.mtl").write_text(mtl)


def test_render(tmp_path, capsys):
    from _scripts.data import render
    src = tmp_path / "src"
    _obj(src / "a" / "good.obj")
    _obj(src / "b" / "notex.obj", texture="missing_diffuse.png")           # a texture the MTL names, absent
    _obj(src / "c" / "cut.obj")
    text = (src / "c" / "cut.obj").read_text()
    fourth = [i for i, line in enumerate(text.splitlines(True)) if line.startswith("v ")][3]
    head = "".join(text.splitlines(True)[:fourth])
    (src / "c" / "cut.obj").write_text(head + text.splitlines()[fourth].split()[0] + " " +
                                       text.splitlines()[fourth].split()[1])     # cut off inside a vertex line
    root = tmp_path / "data"
    argv = ["--src", str(src), "--renderset", "rs", "--framing", "body", "--size", "32", "--dtypes", "ortho",
            "--data-root", str(root)]
    code, _, err = run_job(render.main, argv, capsys)
    assert code == 1, err
    summary = err[err.index("render: 2 rendered, 0 skipped, 1 failed"):]
    assert "1 with warnings" in summary
    assert "warning: notex: texture named in the MTL" in summary and "missing_diffuse.png" in summary
    assert "cut.obj: line" in summary and "malformed 'v' statement (expected 3 coordinates, got 1)" in summary
    assert "(the file ends there: truncated?)" in summary and "Traceback" not in err
    fails = [json.loads(x) for x in (paths.renders_dir(root, "rs") / "failures.jsonl").read_text().splitlines()]
    assert [f["id"] for f in fails] == ["cut"]
    assert paths.char_meta_path(root, "rs", "good").exists() and not paths.char_meta_path(root, "rs", "cut").exists()
    warn = json.loads(paths.char_meta_path(root, "rs", "notex").read_text())["loader"]["warnings"]
    assert len(warn) == 1 and "missing_diffuse.png" in warn[0]
    assert not (paths.renders_dir(root, "rs") / "ortho" / "t").exists()   # nothing half-written for "cut"
    no_temporary_files(root)
    # a re-run: the good ones are complete, the cut one fails again
    code, _, err = run_job(render.main, argv, capsys)
    assert code == 1 and "render: 0 rendered, 2 skipped, 1 failed" in err
    # every input failed: still 1; an empty folder: 2 (nothing to do is a mistake), one line
    (src / "a" / "good.obj").unlink(), (src / "b" / "notex.obj").unlink()
    code, _, err = run_job(render.main, argv[:-2] + ["--data-root", str(tmp_path / "d2")], capsys)
    assert code == 1 and "render: 0 rendered, 0 skipped, 1 failed" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run_job(render.main, ["--src", str(tmp_path / "empty")] + argv[2:], capsys)
    assert code == 2 and err.strip().splitlines() == [f"error: {tmp_path / 'empty'}: no character files "
                                                      "(.vrm, .glb, .gltf, .obj) here"]


# ------------------------------------------------------------------ data_clean

def test_data_clean(tree, capsys, monkeypatch):
    from _scripts.train import data_clean
    real = clean.check_character

    def check(root, rs, cid, *a):      # one character whose check itself breaks (not a verdict on it)
        if cid == "bad003":
            raise PermissionError(13, "Permission denied", "ortho/3/bad003/front.png")
        return real(root, rs, cid, *a)
    monkeypatch.setattr(clean, "check_character", check)
    code, out, err = run_job(data_clean.main, ["--dataset", "toy", "--data-root", str(tree), "--quiet"], capsys)
    assert code == 1, err
    assert "data_clean: 2 checked, 0 skipped, 1 failed" in err and "bad003: PermissionError" in err
    assert paths.read_subset(tree, "toy", "all") == ["good01", "good02"]
    assert "bad003" not in (tree / "subsets" / "toy_drops.jsonl").read_text()      # a failure, not a drop
    monkeypatch.setattr(clean, "check_character", real)
    code, _, err = run_job(data_clean.main, ["--dataset", "toy", "--data-root", str(tree), "--quiet"], capsys)
    assert code == 0 and "0 failed" in err
    code, _, err = run_job(data_clean.main, ["--dataset", "nope", "--data-root", str(tree)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "renderset not found" in err


# ------------------------------------------------------------------ masks

@pytest.mark.parametrize("kind,src", [("ortho", "ortho"), ("rgb", "xyza")])
def test_masks(tree, capsys, kind, src):
    from _scripts.train import generate_ortho_mask, generate_rgb_mask
    main = generate_ortho_mask.main if kind == "ortho" else generate_rgb_mask.main
    views = sorted(p.stem for p in paths.render_path(tree, "toy", src, "bad003", "x").parent.glob("*.png"))
    corrupt(paths.render_path(tree, "toy", src, "bad003", views[0]))
    corrupt(paths.render_path(tree, "toy", src, "bad003", views[-1]))
    code, _, err = run_job(main, ["--renderset", "toy", "--data-root", str(tree), "--quiet"], capsys)
    assert code == 1, err
    dst = masks.MASK_SOURCES[kind][1]
    n = len(views)
    assert f"generate_{kind}_mask: {3 * n - 2} masks written, 0 skipped, 2 failed" in err
    assert err.count("not a readable image") >= 2          # both bad views, not only the first
    rec = [json.loads(x) for x in (paths.renders_dir(tree, "toy") / dst / "failures.jsonl").read_text().splitlines()]
    assert len(rec) == 2 and all("not a readable image" in r["error"] for r in rec)
    for v in views[1:-1]:                                   # the bad character's good views are done
        assert paths.render_path(tree, "toy", dst, "bad003", v).exists()
    assert not paths.render_path(tree, "toy", dst, "bad003", views[0]).exists()
    no_temporary_files(tree)
    code, _, err = run_job(main, ["--renderset", "nope", "--data-root", str(tree)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------ features

def test_features(tree, capsys):
    from _scripts.train import generate_feature
    torch.set_num_threads(1)
    corrupt(paths.render_path(tree, "toy", "ortho", "bad003", "front"))
    argv = ["--renderset", "toy", "--data-root", str(tree), "--depth", "18", "--size", "32", "--quiet",
            "--random-init", "--no-mirror"]
    code, _, err = run_job(generate_feature.main, argv, capsys)
    assert code == 1, err
    assert "generate_feature: 5 features written, 0 skipped, 1 failed" in err and "front.png" in err
    assert features.feature_path(tree, "toy", "bad003", "back").exists()
    assert not features.feature_path(tree, "toy", "bad003", "front").exists()
    assert (features.feature_dir(tree, "toy") / "failures.jsonl").is_file()
    no_temporary_files(tree)
    code, _, err = run_job(generate_feature.main, argv[:1] + ["nope"] + argv[2:], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------ synth

def test_synth(tmp_path, capsys, monkeypatch):
    from _scripts.data import synth as script
    import training.data.synth as ts
    real = ts.generate
    monkeypatch.setattr(ts, "generate", lambda seed, i, dark=False: (_ for _ in ()).throw(MemoryError("boom"))
                        if i == 1 else real(seed, i, dark))
    root = tmp_path / "d"
    code, _, err = run_job(script.main, ["--n", "3", "--data-root", str(root), "--quiet"], capsys)
    assert code == 1, err
    assert "synth: 2 written, 0 skipped, 1 failed" in err and "synth_0_000001: MemoryError: boom" in err
    assert len(list((root / "raw" / "synth").rglob("*.glb"))) == 2
    assert (root / "raw" / "synth" / "failures.jsonl").is_file()
    no_temporary_files(root)
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro" / "raw").write_text("a file where the folder should be")
    code, _, err = run_job(script.main, ["--n", "1", "--data-root", str(tmp_path / "ro")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "cannot write here" in err


# ------------------------------------------------------------------ contact sheet

def test_contact_sheet(tree, capsys):
    from _scripts.data import contact_sheet
    corrupt(paths.render_path(tree, "toy", "ortho", "bad003", "back"))
    out = tree / "sheet.png"
    code, _, err = run_job(contact_sheet.main, ["--src", "toy", "--out", str(out), "--data-root", str(tree),
                                                "--cell", "32"], capsys)
    assert code == 1, err
    assert "contact_sheet: 2 characters on the sheet, 0 skipped, 1 failed" in err and "back.png" in err
    assert out.is_file()
    code, _, err = run_job(contact_sheet.main, ["--src", "nope", "--out", str(out), "--data-root", str(tree)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------ evaluation

@pytest.fixture()
def eval_tree(tree, tmp_path, monkeypatch):
    from training.checkpoint import save_checkpoint
    from training.triplane import build_preset
    (tree / "subsets").mkdir()
    (tree / "subsets" / "toy_test.csv").write_text("".join(paths.key_of(c) + "\n" for c in IDS))
    torch.manual_seed(0)
    runs = tmp_path / "myruns"
    save_checkpoint(runs / "toyrun" / "00000" / "network-snapshot-000000.004.pt",
                    {"G_ema": build_preset("tiny", framing="body")}, step=2, kimg=0.004)
    monkeypatch.setenv("PROJECT_DN", str(tmp_path / "elsewhere"))    # the clone: nothing may land there
    return tree, runs


GEN = ["--dataset", "toy", "--batch", "2", "--no-mesh", "--samples", "4", "4", "--no-progress", "--device", "cpu"]


def test_eval_generate(eval_tree, capsys):
    from _scripts.eval import generate
    root, runs = eval_tree
    paths.char_meta_path(root, "toy", "bad003").write_text("{ not json")
    argv = GEN + ["--inferquery", "toyrun-00000-0", "--runs-dir", str(runs), "--data-root", str(root)]
    code, out, err = run_job(generate.main, argv, capsys)
    assert code == 1, err
    assert "generate: 2 generated, 0 skipped, 1 failed" in err and "bad003" in err and "not valid json" in err
    ev = root / "temp" / "eval" / "toyrun-00000-0" / "toy"     # under the data root, not the clone
    assert json.loads(out.strip().splitlines()[-1])["out"] == str(ev)
    assert (ev / "meta" / "1" / "good01.json").exists() and not (ev / "meta" / "3" / "bad003.json").exists()
    assert "bad003" in (ev / "failures.jsonl").read_text()
    assert not (Path(paths.project_dir()) / "temp").exists()
    no_temporary_files(root)
    # --inferquery finds runs only where --runs-dir says; the message says where it looked
    code, _, err = run_job(generate.main, GEN + ["--inferquery", "toyrun-00000-0", "--data-root", str(root)], capsys)
    assert code == 2 and "snapshot not found" in err and "--runs-dir" in err


def test_eval_measure(eval_tree, capsys):
    from _scripts.eval import generate, measure
    root, runs = eval_tree
    code, _, err = run_job(generate.main, GEN + ["--inferquery", "toyrun-00000-0", "--runs-dir", str(runs),
                                                 "--data-root", str(root)], capsys)
    assert code == 0, err
    corrupt(paths.render_path(root, "toy", "ortho", "good02", "left"))     # one unreadable ground-truth view
    ms = ["--inferquery", "toyrun-00000-0", "--dataset", "toy", "--data-root", str(root), "--random-init",
          "--no-geometry", "--no-progress", "--device", "cpu"]
    code, out, err = run_job(measure.main, ms, capsys)
    assert code == 1, err
    assert "measure: 2 measured, 0 skipped, 1 failed" in err and "good02" in err and "left.png" in err
    ev = root / "temp" / "eval" / "toyrun-00000-0" / "toy"
    js = json.loads((ev / "measure.json").read_text())
    assert set(js["per_character"]) == {"good01", "bad003"} and set(js["failures"]) == {"good02"}
    assert js["n_characters"] == 2 and "front" in out
    no_temporary_files(root)
    # --weights DIR that does not exist: refused before anything is measured (the table stays)
    before = (ev / "measure.json").read_bytes()
    code, _, err = run_job(measure.main, ms + ["--weights", str(root / "no_such_dir")], capsys)
    assert code == 2 and err.strip().splitlines() == [f"error: {root / 'no_such_dir'}: --weights: no such folder"]
    assert (ev / "measure.json").read_bytes() == before
    code, _, err = run_job(measure.main, ms[:1] + ["never-generated"] + ms[2:], capsys)
    assert code == 2 and "no generated tree" in err
