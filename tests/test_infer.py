"""_scripts.infer end to end on a tiny two-view checkpoint (random init, CPU)."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from _scripts import infer
from _train.img2img.model import LineRemovalUNet
from training.infer import artwork, meshing
from training.checkpoint import save_checkpoint
from training.triplane import build_preset

MESH_RES = 24
TURNTABLE = 5


def _character(path, flip=False, alpha=True):
    """A little figure: body, head and one arm (asymmetric, so the back is the mirrored front)."""
    img = np.zeros((120, 90, 4), np.uint8)
    img[..., :3] = 255
    img[10:35, 33:57] = (250, 210, 180, 255)     # head
    img[35:95, 30:60] = (60, 90, 200, 255)       # body
    img[40:80, 60:70] = (250, 210, 180, 255)     # arm on one side
    img[95:115, 33:57] = (40, 40, 40, 255)       # legs
    if flip:
        img = img[:, ::-1].copy()
    if not alpha:
        img[..., 3] = 255
    Image.fromarray(img).save(path)
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("infer")
    G = build_preset("tiny", framing="body").eval()
    save_checkpoint(d / "G.pt", {"G_ema": G}, step=0, kimg=0.0)
    front, back = _character(d / "front.png"), _character(d / "back.png", flip=True, alpha=False)
    # a random-init field is nearly constant: put the marching-cubes level at its median so a surface exists
    cond = {}
    for k, p in (("front", front), ("back", back)):
        img, mask = artwork.to_tensor(artwork.prepare(p, "body", 512).rgba, G.cond_resolution)
        cond[k], cond[f"{k}_mask"] = img[None], mask[None]
    with torch.no_grad():
        planes = G.synthesize(cond)
        occ = meshing.occupancy(meshing.density_grid(G, planes, MESH_RES), meshing.mesh_step_for("body"))
        alphas = meshing.render_raw(G, planes, meshing.mesh_views("body"), 32)
    level = float(np.median(occ))
    # ... and count pixels as opaque well below the random field's typical rendered alpha, so that it is carved
    # to a part of the box, not to nothing
    opacity = 0.7 * min(float(a["alpha"].median()) for a in alphas.values())
    return d, G, front, back, (level, opacity)


def _run(argv):
    with pytest.raises(SystemExit) as e:
        infer.main([str(a) for a in argv])
    return e.value.code


def test_infer_writes_every_output(setup, capsys):
    d, G, front, back, level = setup
    out = d / "out"
    infer.main(["--front", str(front), "--back", str(back), "--ckpt", str(d / "G.pt"), "--out", str(out),
                "--turntable", str(TURNTABLE), "--views", "20,45;-10,200", "--mesh-resolution", str(MESH_RES),
                "--density-threshold", repr(level[0]), "--opacity-threshold", repr(level[1]), "--device", "cpu"])
    s = json.loads((out / "summary.json").read_text())
    assert s["framing"] == "body" and s["generator"] == "TriPlaneGenerator_v1"
    assert s["matte"] == {"front": "alpha", "back": "background"}
    assert s["silhouette_mismatch"] < infer.MISMATCH_WARN      # the back is the mirrored front
    for name in ["input_front.png", "input_back.png", "triplane.pt", "turntable.gif", "mesh.glb", "mesh.ply",
                 "view_e20_a45.png", "view_e-10_a200.png"] + [f"ortho_{v}.png" for v in
                                                             ("front", "back", "left", "right")]:
        assert (out / name).is_file() and name in s["outputs"], name
    assert Image.open(out / "ortho_front.png").size == (G.img_resolution,) * 2
    # turntable: N frames
    gif = Image.open(out / "turntable.gif")
    assert gif.n_frames == TURNTABLE == s["turntable_frames"]
    # triplane round-trips: two-view planes [1, 6, C, R, R]
    planes = torch.load(out / "triplane.pt", weights_only=True)
    assert planes["planes"].shape[:2] == (1, 6)
    # mesh: same vertex count as the summary, vertex colours equal to the field's colour there
    import trimesh
    m = trimesh.load(out / "mesh.glb", force="mesh")
    nv = s["mesh"]["vertices"]
    assert nv > 100 and len(m.vertices) == nv and len(m.faces) == s["mesh"]["faces"]
    vc = np.asarray(m.visual.vertex_colors)
    assert vc.shape == (nv, 4) and vc[:, :3].std() > 0
    assert np.abs(m.vertices).max() <= G.field.box_warp / 2 + 1e-4      # inside the framing box
    ply = trimesh.load(out / "mesh.ply", process=False)
    assert len(ply.vertices) == nv
    with torch.no_grad():
        col = G.sample_color(planes, torch.from_numpy(np.asarray(m.vertices[:50], np.float32))[None])[0]
    # the exported colours are seen from the axis cameras: compare loosely with one default direction
    assert np.abs(col.numpy() * 255 - vc[:50, :3]).mean() < 40


def test_keep_framing_and_line_removal(setup, tmp_path):
    d, G, front, back, level = setup
    net = LineRemovalUNet(channels=8, levels=2)
    save_checkpoint(tmp_path / "lines.pt", {"line_removal": net}, step=0, kimg=0.0,
                    training_config={"resolution": 64})
    out = tmp_path / "out"
    infer.main([str(a) for a in ["--front", front, "--back", back, "--ckpt", d / "G.pt", "--out", out, "--turntable", "0",
                "--mesh-resolution", "8", "--keep-framing", "--remove-lines", tmp_path / "lines.pt"]])
    s = json.loads((out / "summary.json").read_text())
    assert "turntable.gif" not in s["outputs"] and s["line_removal"].endswith("lines.pt")
    # kept framing: the 90x120 image is padded to a square, not cropped to the silhouette
    a = np.asarray(Image.open(out / "input_front.png"))
    assert a.shape[:2] == (G.cond_resolution,) * 2
    col = (a < 250).any(-1).any(0).nonzero()[0]
    assert col.min() > G.cond_resolution * 0.2        # the padding is there


@pytest.mark.parametrize("case", ["not_image", "empty_alpha", "lines_ckpt", "corrupt_ckpt", "no_back"])
def test_bad_inputs(setup, tmp_path, capsys, case):
    d, G, front, back, level = setup
    ckpt = d / "G.pt"
    f, b = front, back
    if case == "not_image":
        f = tmp_path / "notes.png"
        f.write_text("not an image")
    elif case == "empty_alpha":
        f = tmp_path / "empty.png"
        Image.fromarray(np.zeros((64, 64, 4), np.uint8)).save(f)
    elif case == "lines_ckpt":
        ckpt = tmp_path / "lines.pt"
        save_checkpoint(ckpt, {"line_removal": LineRemovalUNet(channels=8, levels=1)}, step=0, kimg=0.0)
    elif case == "corrupt_ckpt":
        ckpt = tmp_path / "bad.pt"
        ckpt.write_bytes((d / "G.pt").read_bytes()[:2000])
    argv = ["--front", f, "--ckpt", ckpt, "--out", tmp_path / "out", "--mesh-resolution", "8", "--turntable", "0"]
    if case != "no_back":
        argv += ["--back", b]
    assert _run(argv) == 2
    full = capsys.readouterr().err.strip()
    # progress lines ("[  0.1 s] stage") may come first; the error is one line, the last, no traceback
    assert "Traceback" not in full and all(x.startswith("[") for x in full.splitlines()[:-1]), full
    err = full.splitlines()[-1]
    assert err.startswith("error: ")
    expect = {"not_image": "not a readable image", "empty_alpha": "no foreground", "lines_ckpt": "line-removal",
              "corrupt_ckpt": "checkpoint", "no_back": "--back"}[case]
    assert expect in err, err
    assert not (tmp_path / "out" / "summary.json").exists()


def test_single_view_head_checkpoint(setup, tmp_path, caplog):
    """PAniC-3D variant in head framing: the back image is ignored with a warning; artwork is head-framed."""
    d, _, front, back, _ = setup
    torch.manual_seed(1)
    G1 = build_preset("tiny", variant="TriPlaneGenerator")
    save_checkpoint(tmp_path / "G1.pt", {"G_ema": G1}, step=0, kimg=0.0)
    out = tmp_path / "out"
    with caplog.at_level("WARNING"):
        s = infer.reconstruct(front, tmp_path / "G1.pt", out, back=back, turntable=2, mesh_resolution=8,
                              device="cpu")
    assert "ignored" in caplog.text
    assert s["generator"] == "TriPlaneGenerator" and s["framing"] == "head"
    assert "input_back.png" not in s["outputs"] and "silhouette_mismatch" not in s
    planes = torch.load(out / "triplane.pt", weights_only=True)
    assert planes["planes"].shape[:2] == (1, 3)


# ---------------------------------------------------------------- model choice, device, help, progress

def write_registry(path, entries):
    """A release registry (the format of _configs/release.toml) with the given models."""
    lines = ["[models]"]
    for name, e in entries.items():
        lines.append(f"[models.{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in e.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def registered(tmp_path, monkeypatch, G_path, default=True):
    """G_path installed as the released model 'toy_body' (a run folder under a temporary project)."""
    from training.infer.release import file_sha256
    proj = tmp_path / "proj"
    snap = proj / "_train/eg3dc/runs/toyrel/00000/network-snapshot-000000.pt"
    snap.parent.mkdir(parents=True)
    snap.write_bytes(G_path.read_bytes())
    monkeypatch.setenv("PROJECT_DN", str(proj))
    entry = {"description": "toy", "generator": "TriPlaneGenerator_v1", "framing": "body", "two_view": True,
             "inferquery": "toyrel-00000-000000", "sha256": file_sha256(snap), "default": default}
    return write_registry(tmp_path / "release.toml", {"toy_body": entry})


def test_default_and_named_released_model(setup, tmp_path, monkeypatch, capsys):
    d, G, front, back, level = setup
    reg = registered(tmp_path, monkeypatch, d / "G.pt")
    base = ["--front", front, "--back", back, "--registry", reg, "--turntable", "0", "--mesh-resolution", "8",
            "--device", "cpu"]
    infer.main([str(a) for a in base + ["--out", tmp_path / "o1"]])            # no --ckpt: the default model
    s = json.loads((tmp_path / "o1" / "summary.json").read_text())
    assert s["model"] == "toy_body" and s["checkpoint"].endswith("network-snapshot-000000.pt")
    infer.main([str(a) for a in base + ["--out", tmp_path / "o2", "--model", "toy_body"]])
    assert json.loads((tmp_path / "o2" / "summary.json").read_text())["model"] == "toy_body"
    assert _run(base + ["--out", tmp_path / "o3", "--model", "nope"]) == 2
    err = capsys.readouterr().err
    assert "'nope' is not a released model (choose from toy_body)" in err
    assert _run(base + ["--out", tmp_path / "o3", "--model", "toy_body", "--ckpt", d / "G.pt"]) == 2
    assert "not both" in capsys.readouterr().err
    # a changed file is refused (sha256)
    snap = tmp_path / "proj/_train/eg3dc/runs/toyrel/00000/network-snapshot-000000.pt"
    snap.write_bytes(snap.read_bytes()[:-10] + b"0123456789")
    assert _run(base + ["--out", tmp_path / "o4"]) == 2
    assert "sha256 differs" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["empty", "missing"])
def test_without_ckpt_and_without_released_models_says_so(setup, tmp_path, capsys, case):
    d, G, front, back, level = setup
    reg = tmp_path / "release.toml"
    if case == "empty":
        write_registry(reg, {})
    argv = ["--front", front, "--back", back, "--registry", reg, "--out", tmp_path / "out"]
    assert _run(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err and "--ckpt PATH" in err, err
    assert ("no released models are listed" if case == "empty" else "release registry not found") in err
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_cuda_without_a_gpu_is_one_line(setup, tmp_path, capsys):
    d, G, front, back, level = setup
    assert _run(["--front", front, "--back", back, "--ckpt", d / "G.pt", "--out", tmp_path / "o",
                 "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --device cuda: no CUDA GPU") and "\n" not in err


def test_help_shows_defaults_and_the_module_usage(capsys):
    with pytest.raises(SystemExit):
        infer.main(["--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m _scripts.infer")
    assert "(default: 256)" in out and "(default: auto)" in out and "(default: 24)" in out


def test_progress_lines_and_no_random_init_line(setup, tmp_path, capsys, caplog):
    d, G, front, back, level = setup
    with caplog.at_level("INFO"):
        infer.main([str(a) for a in ["--front", front, "--back", back, "--ckpt", d / "G.pt", "--out",
                                     tmp_path / "o", "--turntable", "3", "--mesh-resolution", "8", "--device", "cpu"]])
    err = capsys.readouterr().err
    for stage in ("loading the model", "encoding the artwork", "turntable: 3/3 frames", "extracting the mesh",
                  "writing the mesh files"):
        assert stage in err, err
    assert "random init" not in err and "random init" not in caplog.text
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert {"load", "encode", "ortho", "turntable", "mesh", "write", "total"} <= set(s["seconds"])


def test_texture_flag_writes_a_textured_glb(setup, tmp_path):
    import trimesh
    d, G, front, back, level = setup
    out = tmp_path / "o"
    infer.main([str(a) for a in ["--front", front, "--back", back, "--ckpt", d / "G.pt", "--out", out,
                                 "--turntable", "0", "--mesh-resolution", str(MESH_RES), "--density-threshold",
                                 repr(level[0]), "--opacity-threshold", repr(level[1]), "--texture",
                                 "--texture-size", "128", "--texture-faces", "500", "--device", "cpu", "--quiet"]])
    s = json.loads((out / "summary.json").read_text())
    m = trimesh.load(out / "mesh.glb", force="mesh")
    assert isinstance(m.visual, trimesh.visual.TextureVisuals) and m.visual.uv.shape == (len(m.vertices), 2)
    assert m.visual.material.baseColorTexture.size == (128, 128)
    assert len(m.faces) == s["texture"]["faces"] <= 500
    ply = trimesh.load(out / "mesh.ply", process=False)     # the vertex-coloured mesh, full resolution
    assert len(ply.vertices) == s["mesh"]["vertices"] and np.asarray(ply.visual.vertex_colors).shape[1] == 4


def test_bench_times_a_trained_checkpoint_at_the_users_thresholds(setup, tmp_path):
    """bench.infer calibrates the carve to a random field only; a --ckpt is timed at _scripts.infer's defaults."""
    from _scripts.bench import infer as bench_infer
    d, _, front, back, _ = setup
    common = ["--front", str(front), "--back", str(back), "--device", "cpu", "--mesh-resolution", str(MESH_RES),
              "--repeat", "1"]
    bench_infer.main(["--ckpt", str(d / "G.pt"), "--json", str(tmp_path / "ckpt.json")] + common)
    mesh = json.loads((tmp_path / "ckpt.json").read_text())["runs"][0]["mesh"]
    user = infer.parser()
    assert (mesh["opacity_threshold"], mesh["level"]) == (user.get_default("opacity_threshold"),
                                                          user.get_default("density_threshold"))
    bench_infer.main(["--preset", "tiny", "--json", str(tmp_path / "random.json")] + common)
    mesh = json.loads((tmp_path / "random.json").read_text())["runs"][0]["mesh"]
    assert mesh["opacity_threshold"] != user.get_default("opacity_threshold")   # calibrated to the random field
