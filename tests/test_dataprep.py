"""Cleaning, masks and features on tiny ray-cast render trees (fake_render also serves test_dataset)."""
import json

import numpy as np
import pytest
import torch

from training import cameras, paths
from training.data import catalog, clean, features, masks
from training.errors import UserError, save_json_atomic, save_png_atomic

RES = 32

# a body-framed "character": torso, head and a red blob on its left (+x) side,
# so left and right views differ and mirroring is visible
GOOD = [((0.0, 0.0, 0.0), (0.3, 0.75, 0.2), (60, 90, 200)),
        ((0.0, 0.8, 0.0), (0.2, 0.2, 0.2), (250, 210, 180)),
        ((0.45, -0.2, 0.05), (0.1, 0.1, 0.1), (230, 30, 30))]
TALL = [((0.0, 0.0, 0.0), (0.3, 1.4, 0.2), (60, 90, 200))]        # leaves the box: cut off
TINY = [((0.0, 0.0, 0.0), (0.06, 0.06, 0.06), (60, 90, 200))]      # nearly empty


def raycast(view: cameras.View, res: int, blobs):
    """First hits of the view's pixel rays on ellipsoids -> (RGBA uint8, xyza uint8)."""
    o, d = cameras.rays(torch.from_numpy(view.cam25())[None], res)
    o, d = o[0].double(), d[0].double()
    t_best = torch.full((res * res,), float("inf"), dtype=torch.float64)
    col = torch.zeros(res * res, 3, dtype=torch.float64)
    for c, r, rgb in blobs:
        c, r = torch.tensor(c, dtype=torch.float64), torch.tensor(r, dtype=torch.float64)
        oc, dd = (o - c) / r, d / r
        a, b, cc = (dd * dd).sum(-1), 2 * (oc * dd).sum(-1), (oc * oc).sum(-1) - 1
        disc = b * b - 4 * a * cc
        t = (-b - disc.clamp_min(0).sqrt()) / (2 * a)
        hit = (disc > 0) & (t > 0) & (t < t_best)
        t_best = torch.where(hit, t, t_best)
        col[hit] = torch.tensor(rgb, dtype=torch.float64)
    hit = torch.isfinite(t_best)
    p = o + torch.where(hit, t_best, torch.zeros_like(t_best))[:, None] * d
    alpha = hit.double() * 255
    rgba = torch.cat([col * hit[:, None], alpha[:, None]], -1)
    xyz = ((p + view.box / 2) / view.box).clamp(0, 1) * 255 * hit[:, None]
    xyza = torch.cat([xyz, alpha[:, None]], -1)
    as_img = lambda x: x.round().to(torch.uint8).reshape(res, res, 4).numpy()
    return as_img(rgba), as_img(xyza)


def fake_render(root, renderset, char_id, blobs, framing="body", res=RES, meta_views=True,
                skip=(), seed=0):
    """Write one character the way _scripts.data.render lays it out (meta json last)."""
    ortho = cameras.view_set("ortho", framing)
    rgb = cameras.view_set("rgb", framing, char_id, seed)[:3]
    for v in ortho:
        rgba, xyza = raycast(v, res, blobs)
        for dtype, img in (("ortho", rgba), ("ortho_xyza", xyza)):
            if (dtype, v.name) not in skip:
                save_png_atomic(paths.render_path(root, renderset, dtype, char_id, v.name), img)
    for v in rgb:
        rgba, xyza = raycast(v, res, blobs)
        a = rgba[..., 3:4] / 255.0
        white = (rgba[..., :3] * a + 255 * (1 - a)).round().astype(np.uint8)
        save_png_atomic(paths.render_path(root, renderset, "rgb", char_id, v.name), white)
        save_png_atomic(paths.render_path(root, renderset, "xyza", char_id, v.name), xyza)
    meta = {"id": char_id, "framing": framing}
    if meta_views:
        meta["views"] = {"ortho": [v.to_json() for v in ortho], "rgb": [v.to_json() for v in rgb]}
    else:       # renderer that only names its views: cameras come from training.cameras
        meta["views"] = {}
        save_json_atomic(paths.renderset_meta_path(root, renderset), {"framing": framing, "seed": seed})
    save_json_atomic(paths.char_meta_path(root, renderset, char_id), meta)


def make_set(root, rs="toy"):
    """8 good characters + one of each defect."""
    ids = [f"good{i:02d}" for i in range(8)]
    for cid in ids:
        fake_render(root, rs, cid, GOOD)
    fake_render(root, rs, "empty0", [])
    fake_render(root, rs, "tiny01", TINY)
    fake_render(root, rs, "tall02", TALL)
    fake_render(root, rs, "hole03", GOOD, skip={("ortho_xyza", "left")})
    (paths.renders_dir(root, rs) / "failures.jsonl").write_text(
        json.dumps({"id": "fail04", "error": "raw/x.vrm: truncated file"}) + "\n" + '{"id": "torn')
    return ids


def test_clean_drops_defects_and_splits_deterministically(tmp_path, capsys):
    good = make_set(tmp_path)
    lines = []
    out = clean.run_clean(tmp_path, "toy", phase="all", progress=False, log=lines.append)
    assert sorted(out["all"]) == good
    drops = {d["id"]: d["reason"] for d in clean.read_drops(tmp_path, "toy")}
    assert drops == {"empty0": "empty", "tiny01": "nearly_empty", "tall02": "cut_off",
                     "hole03": "incomplete", "fail04": "failed"}
    assert paths.read_subset(tmp_path, "toy", "all") == good
    split = {s: paths.read_subset(tmp_path, "toy", s) for s in catalog.SPLITS}
    assert sorted(sum(split.values(), [])) == good                 # a partition
    assert all(split[s] for s in catalog.SPLITS)                 # tiny set still gets val and test
    assert "all: 13 -> 8" in lines
    assert any(line.startswith("dropped 5:") for line in lines)
    # the split of each id is a function of the id: same on a re-run and on a subset
    again = clean.split_ids(good)
    assert again == {s: split[s] for s in catalog.SPLITS}
    big = [f"c{i:05d}" for i in range(2000)]
    s_big = clean.split_ids(big, "0.8,0.1,0.1")
    assert abs(len(s_big["train"]) - 1600) < 80 and abs(len(s_big["test"]) - 200) < 50
    s_half = clean.split_ids(big[:1000], (0.8, 0.1, 0.1))
    assert all(set(s_half[s]) <= set(s_big[s]) for s in catalog.SPLITS)
    # phase split alone reproduces the csvs from _all.csv
    lines2 = []
    clean.run_clean(tmp_path, "toy", phase="split", progress=False, log=lines2.append)
    assert {s: paths.read_subset(tmp_path, "toy", s) for s in catalog.SPLITS} == split
    assert "all: 13 -> 8" in lines2


def test_clean_script_and_head_framing(tmp_path, capsys):
    from _scripts.train import data_clean
    # head framing: the body below the box crosses the bottom edge by design, not a cut
    fake_render(tmp_path, "heads", "h0001", [((0, -0.5, 0), (0.15, 0.6, 0.1), (200, 0, 0))], framing="head")
    fake_render(tmp_path, "heads", "h0002", [((0, 0.2, 0), (0.15, 0.6, 0.1), (200, 0, 0))], framing="head")
    data_clean.main(["--dataset", "heads", "--data-root", str(tmp_path), "--quiet"])
    printed = capsys.readouterr().out
    assert "all: 2 -> 1" in printed and "cut_off 1" in printed
    assert paths.read_subset(tmp_path, "heads", "all") == ["h0001"]
    with pytest.raises(SystemExit) as e:
        data_clean.main(["--dataset", "nope", "--data-root", str(tmp_path)])
    assert e.value.code == 2
    assert "renders/nope: renderset not found" in capsys.readouterr().err
    with pytest.raises(UserError, match="ratios"):
        clean.split_ids(["a"], "0.8,0.2")


def test_masks_threshold_and_resume(tmp_path):
    rs, cid = "toy", "m0001"
    fake_render(tmp_path, rs, cid, GOOD)
    # overwrite the front alpha with a ramp that straddles the threshold
    ramp = np.zeros((RES, RES, 4), np.uint8)
    ramp[..., 3] = np.arange(RES * RES).reshape(RES, RES) % 256
    save_png_atomic(paths.render_path(tmp_path, rs, "ortho", cid, "front"), ramp)
    r = masks.generate_masks(tmp_path, rs, [cid], "ortho", progress=False)
    assert r["written"] == 5 and not r["errors"]
    m = np.asarray(catalog.load_image(paths.render_path(tmp_path, rs, "ortho_mask", cid, "front")))
    assert set(np.unique(m)) <= {0, 255}
    assert np.array_equal(m == 255, ramp[..., 3] > 200)
    # rgb masks come from the xyza alpha of the same view
    r = masks.generate_masks(tmp_path, rs, [cid], "rgb", progress=False)
    assert r["written"] == 3
    xa = catalog.load_alpha(paths.render_path(tmp_path, rs, "xyza", cid, "0001"))
    mr = np.asarray(catalog.load_image(paths.render_path(tmp_path, rs, "rgb_mask", cid, "0001")))
    assert np.array_equal(mr == 255, xa > 200) and 0 < (mr > 0).mean() < 0.5
    # resumable: nothing to do the second time
    assert masks.generate_masks(tmp_path, rs, [cid], "rgb", progress=False)["skipped"] == 3
    # the script on a subset
    from _scripts.train import generate_human_ortho_mask
    clean.write_subset(tmp_path, "human_rutileEB", "all", [cid])
    with pytest.raises(SystemExit):   # renderset human_rutileEB does not exist
        generate_human_ortho_mask.main(["--data-root", str(tmp_path), "--quiet"])
    generate_human_ortho_mask.main(["--data-root", str(tmp_path), "--renderset", rs, "--quiet", "--overwrite"])


class TinyEncoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 6, 4, stride=4)

    def forward(self, x):
        return self.conv(x)


def test_features_shape_marker_and_refusals(tmp_path):
    from training.dataset import CharacterDataset
    rs = "toy"
    ids = ["f0001", "f0002"]
    for cid in ids:
        fake_render(tmp_path, rs, cid, GOOD)
    enc = TinyEncoder()
    info = {"encoder": "TinyEncoder", "weights": "random-init", "random_init": True, "seed": 0, "layer": "out"}
    job = features.FeatureJob(size=16, batch=3)
    r = features.generate_features(tmp_path, rs, ids, enc, info, job, progress=False)
    assert r["written"] == 8 and r["shape"] == (6, 4, 4)
    f = torch.load(features.feature_path(tmp_path, rs, "f0001", "front"), weights_only=True)
    assert f.dtype == torch.float16 and f.shape == (6, 4, 4)
    img = features.load_cond_image(paths.render_path(tmp_path, rs, "ortho", "f0001", "front"), 16)
    assert torch.allclose(f.float(), enc(img[None])[0], atol=1e-2)
    fm = torch.load(features.feature_path(tmp_path, rs, "f0001", "front_mirror"), weights_only=True)
    assert torch.allclose(fm.float(), enc(img.flip(-1)[None])[0], atol=1e-2)
    marker = features.load_feature_info(tmp_path, rs)
    assert marker["random_init"] is True and marker["shape"] == [6, 4, 4]
    # resume skips; another encoder may not mix into the folder
    assert features.generate_features(tmp_path, rs, ids, enc, info, job, progress=False)["skipped"] == 8
    with pytest.raises(UserError, match="existing features"):
        features.generate_features(tmp_path, rs, ids, enc, dict(info, weights="imagenet", random_init=False),
                                     job, progress=False)
    # training refuses random-init features unless asked
    with pytest.raises(UserError, match="randomly initialised"):
        CharacterDataset(tmp_path, rs, use_features=True)
    ds = CharacterDataset(tmp_path, rs, use_features=True, allow_random_features=True, mirror_prob=1.0)
    s = ds[0]
    assert s["feat_front"].shape == (6, 4, 4) and torch.allclose(s["feat_front"], fm.float())
    # weights: missing file named, nothing chosen -> a clear message
    with pytest.raises(UserError, match="missing.pth: encoder weights not found"):
        features.weights_identity(str(tmp_path / "missing.pth"), False)
    with pytest.raises(UserError, match="--random-init"):
        features.weights_identity(None, False)


def test_generate_feature_script_with_resnet(tmp_path, capsys):
    from _scripts.train import generate_feature
    torch.set_num_threads(1)
    fake_render(tmp_path, "toy", "r0001", GOOD, res=64)
    base = ["--renderset", "toy", "--data-root", str(tmp_path), "--depth", "18", "--size", "64", "--quiet"]
    with pytest.raises(SystemExit) as e:       # weights must be chosen explicitly
        generate_feature.main(base)
    assert e.value.code == 2 and "--random-init" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        generate_feature.main(base + ["--weights", str(tmp_path / "nowhere" / "resnet18.pth")])
    assert "resnet18.pth: encoder weights not found" in capsys.readouterr().err
    generate_feature.main(base + ["--random-init"])
    capsys.readouterr()
    f = torch.load(features.feature_path(tmp_path, "toy", "r0001", "back"), weights_only=True)
    assert f.shape == (512, 2, 2) and f.dtype == torch.float16      # resnet18 layer4, stride 32
    info = features.load_feature_info(tmp_path, "toy")
    assert info["random_init"] and info["layer"] == "trunk" and info["shape"] == [512, 2, 2]
    # a second run with the same seed finds everything done; another seed may not mix in
    generate_feature.main(base + ["--random-init"])
    assert "generate_feature: 0 features written, 4 skipped, 0 failed" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        generate_feature.main(base + ["--random-init", "--seed", "1"])
    assert "existing features were made with seed=0" in capsys.readouterr().err


def test_clean_names_dtypes_the_renderset_lacks(tmp_path):
    fake_render(tmp_path, "toy", "g0001", GOOD)
    save_json_atomic(paths.renderset_meta_path(tmp_path, "toy"), {"framing": "body", "dtypes": ["ortho", "ortho_xyza"]})
    with pytest.raises(UserError, match="rendered without rgb, xyza; render them or pass --require ortho,ortho_xyza"):
        clean.run_clean(tmp_path, "toy", progress=False, log=lambda s: None)
    cfg = clean.CleanConfig(required=("ortho", "ortho_xyza"))
    assert clean.run_clean(tmp_path, "toy", cfg=cfg, progress=False, log=lambda s: None)["all"] == ["g0001"]
