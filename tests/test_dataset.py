"""CharacterDataset on a tiny ray-cast render tree: keys, ranges, xyz vs cameras, mirroring, sampling."""
import itertools

import numpy as np

import pytest
import torch

from tests.test_dataprep import GOOD, RES, fake_render
from training import cameras, paths
from training.data import catalog, clean, masks
from training.dataset import CharacterDataset, InfiniteSampler, collate, decode_xyz, make_loader
from training.errors import UserError

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    for cid in ("a0001", "b0002", "c0003"):
        fake_render(root, "toy", cid, GOOD)
    fake_render(root, "bare", "a0001", GOOD, meta_views=False)   # cameras from training.cameras
    clean.write_subset(root, "toy", "train", ["a0001", "b0002"])
    return root


def own_pixels_reproject(xyz, alpha, cam, res):
    """Project the covered pixels' points with the camera; return the max pixel-index error."""
    m = alpha[0] > 0.5
    v, u = torch.nonzero(m, as_tuple=True)
    pts = xyz[:, m].T[None]
    uv, _ = cameras.project(pts, cam[None])
    pix = uv[0] * res - 0.5
    return max((pix[:, 0] - u).abs().max().item(), (pix[:, 1] - v).abs().max().item()), int(m.sum())


def test_sample_keys_shapes_ranges(tree):
    ds = CharacterDataset(tree, "toy", "toy", "train")
    assert len(ds) == 2 and ds.ids == ["a0001", "b0002"]
    s = ds[0]
    V = 4
    assert s["id"] == "a0001"
    for k in ("cond_front", "cond_back"):
        assert s[k].shape == (3, RES, RES) and s[k].min() >= -1 and s[k].max() <= 1
        assert s[k + "_mask"].shape == (1, RES, RES) and set(s[k + "_mask"].unique().tolist()) <= {0.0, 1.0}
        # background is white, the character is not
        assert torch.all(s[k][:, s[k + "_mask"][0] == 0] == 1) and s[k + "_mask"].mean() > 0.05
    assert s["ortho_rgb"].shape == (V, 3, RES, RES) and s["ortho_rgb"].abs().max() <= 1
    assert s["ortho_alpha"].shape == (V, 1, RES, RES) and 0 <= s["ortho_alpha"].min() <= s["ortho_alpha"].max() <= 1
    assert s["ortho_xyz"].shape == (V, 3, RES, RES) and s["ortho_xyz"].abs().max() <= 2.1 / 2 + 1e-6
    assert s["ortho_cam"].shape == (V, 25) and s["rgb_cam"].shape == (25,)
    assert s["rgb"].shape == (3, RES, RES) and s["rgb_mask"].shape == (1, RES, RES)
    assert torch.equal(s["cond_front"], s["ortho_rgb"][0]) and torch.equal(s["cond_back"], s["ortho_rgb"][1])
    # cameras are the ones of training.cameras: front, back, left, right
    ortho = {v.name: v for v in cameras.view_set("ortho", "body")}
    want = cameras.as_tensor([ortho[n] for n in ("front", "back", "left", "right")])
    assert torch.allclose(s["ortho_cam"], want, atol=1e-6)
    assert not s["mirrored"] and float(s["box"]) == pytest.approx(2.1)
    # perspective mask = where the white-background image is not white
    assert torch.equal(s["rgb_mask"][0] > 0, (s["rgb"] < 1).any(0))
    # resized: area on images, coverage-weighted on xyz
    r = CharacterDataset(tree, "toy", "toy", "train", resolution=16, cond_resolution=8, random_views=False)[0]
    assert r["ortho_rgb"].shape == (V, 3, 16, 16) and r["cond_front"].shape == (3, 8, 8)
    assert r["rgb"].shape == (3, 16, 16) and r["cond_back_mask"].shape == (1, 8, 8)
    assert r["ortho_xyz"].abs().max() <= 1.05 + 1e-6


def test_xyz_decodes_to_framed_points_on_camera_rays(tree):
    s = CharacterDataset(tree, "toy", "toy", "train", random_views=False)[1]
    for i in range(4):
        err, n = own_pixels_reproject(s["ortho_xyz"][i], s["ortho_alpha"][i], s["ortho_cam"][i], RES)
        assert n > 50 and err < 0.1, (i, err)   # 8-bit xyz over 2.1 m: <= 0.062 px at 32 px; a half-pixel slip fails
    # front view sees the front (z > 0) of the torso, the left view the +x side
    front, left = s["ortho_xyz"][0], s["ortho_xyz"][2]
    assert front[2][s["ortho_alpha"][0, 0] > 0.5].mean() > 0.05
    assert left[0][s["ortho_alpha"][2, 0] > 0.5].mean() > 0.05


def test_mirror_swaps_left_right_and_mirrors_cameras(tree):
    plain = CharacterDataset(tree, "toy", ids=["c0003"], random_views=False)[0]
    ds = CharacterDataset(tree, "toy", ids=["c0003"], random_views=False, mirror_prob=1.0)
    m = ds[0]
    assert m["mirrored"]
    flip = lambda t: t.flip(-1)
    # front stays front (mirrored), left slot holds the mirrored right view
    assert torch.equal(m["cond_front"], flip(plain["cond_front"]))
    assert torch.equal(m["ortho_rgb"][2], flip(plain["ortho_rgb"][3]))
    assert torch.equal(m["ortho_rgb"][3], flip(plain["ortho_rgb"][2]))
    assert not torch.equal(m["ortho_rgb"][2], plain["ortho_rgb"][2])      # the red blob moved sides
    assert torch.equal(m["ortho_alpha"][2], flip(plain["ortho_alpha"][3]))
    # mirrored cameras of the swapped views are the canonical cameras again
    assert torch.allclose(m["ortho_cam"], cameras.mirror(plain["ortho_cam"][[0, 1, 3, 2]]), atol=1e-6)
    assert torch.allclose(m["ortho_cam"], plain["ortho_cam"], atol=1e-6)
    assert torch.allclose(m["rgb_cam"], cameras.mirror(plain["rgb_cam"][None])[0])
    assert torch.equal(m["rgb"], flip(plain["rgb"]))
    # x of the points negated: they still land on their own pixels with the mirrored cameras
    assert torch.allclose(m["ortho_xyz"][0], flip(plain["ortho_xyz"][0]) * torch.tensor([-1., 1, 1])[:, None, None])
    for i in range(4):
        err, n = own_pixels_reproject(m["ortho_xyz"][i], m["ortho_alpha"][i], m["ortho_cam"][i], RES)
        assert n > 50 and err < 0.1
    top = CharacterDataset(tree, "toy", ids=["c0003"], ortho_views=("top",), mirror_prob=1.0)[0]
    err, n = own_pixels_reproject(top["ortho_xyz"][0], top["ortho_alpha"][0], top["ortho_cam"][0], RES)
    assert n > 20 and err < 0.1
    # perspective view: mirror its decoded xyza the same way and reproject with the mirrored camera
    name = sorted(catalog.meta_views(catalog.load_char_meta(tree, "toy", "c0003"), "rgb", "c0003"))[0]
    xyza = torch.from_numpy(np.asarray(
        catalog.load_image(paths.render_path(tree, "toy", "xyza", "c0003", name), "RGBA")).copy())
    xyz, a = decode_xyz(xyza.permute(2, 0, 1).float() / 255, 2.1)
    xyz = flip(xyz) * torch.tensor([-1., 1, 1])[:, None, None]
    err, n = own_pixels_reproject(xyz, flip(a), m["rgb_cam"], RES)
    assert n > 20 and err < 0.25   # perspective magnifies the 8-bit quantisation
    # probability: about half the samples mirrored
    half = CharacterDataset(tree, "toy", ids=["c0003"], mirror_prob=0.5)
    torch.manual_seed(0)
    k = sum(bool(half[0]["mirrored"]) for _ in range(16))
    assert 2 <= k <= 14


def test_cameras_from_view_sets_when_meta_has_none(tree):
    a = CharacterDataset(tree, "bare", random_views=False)[0]
    b = CharacterDataset(tree, "toy", ids=["a0001"], random_views=False)[0]
    assert torch.allclose(a["ortho_cam"], b["ortho_cam"]) and torch.allclose(a["rgb_cam"], b["rgb_cam"])


def test_missing_subset_and_render_are_user_errors(tree, tmp_path):
    with pytest.raises(UserError, match="toy_val.csv: subset not found"):
        CharacterDataset(tree, "toy", "toy", "val")
    with pytest.raises(UserError, match="renders/nothing: renderset not found"):
        CharacterDataset(tree, "nothing")
    with pytest.raises(UserError, match="zzzz9.json: render missing"):
        CharacterDataset(tree, "toy", ids=["a0001", "zzzz9"])
    with pytest.raises(UserError, match="use_features|no precomputed features"):
        CharacterDataset(tree, "toy", use_features=True)
    # a view file deleted after cleaning: the error names it
    fake_render(tmp_path, "t", "d0004", GOOD)
    p = paths.render_path(tmp_path, "t", "ortho_xyza", "d0004", "right")
    p.unlink()
    with pytest.raises(UserError, match="right.png: file not found"):
        CharacterDataset(tmp_path, "t")[0]


def test_collate_and_infinite_sampler(tree):
    ds = CharacterDataset(tree, "toy", resolution=8)
    b = collate([ds[0], ds[1], ds[2]])
    assert b["id"] == ["a0001", "b0002", "c0003"]
    assert b["ortho_xyz"].shape == (3, 4, 3, 8, 8) and b["rgb_cam"].shape == (3, 25) and b["mirrored"].shape == (3,)
    # ranks of a pass are disjoint and cover the set; passes reshuffle; DistributedSampler-style API
    n = 10
    data = list(range(n))
    s0, s1 = InfiniteSampler(data, 2, 0, seed=3), InfiniteSampler(data, 2, 1, seed=3)
    p0, p1 = list(itertools.islice(iter(s0), 5)), list(itertools.islice(iter(s1), 5))
    assert sorted(p0 + p1) == data
    stream = list(itertools.islice(iter(s0), 50))
    assert len(stream) == 50 and stream[:5] == p0 and stream[5:10] != p0
    s0.set_epoch(1)
    assert list(itertools.islice(iter(s0), 5)) == stream[5:10]
    odd = [list(itertools.islice(iter(InfiniteSampler(list(range(3)), 2, r)), 2)) for r in (0, 1)]
    assert set(odd[0] + odd[1]) == {0, 1, 2}
    it = make_loader(ds, batch_size=2, num_workers=0)
    for _ in range(3):
        batch = next(it)
        assert batch["cond_front"].shape == (2, 3, 8, 8) and len(batch["id"]) == 2


GODETTE = paths.REPO.parent / "shared" / "data" / "real_models" / "godette" / "godette.vrm"


@pytest.fixture(scope="module")
def real_tree(tmp_path_factory):
    """godette.vrm through the real pipeline: render (64 px, body) -> clean -> masks."""
    if not GODETTE.exists():
        pytest.skip(f"{GODETTE} not available")
    from _scripts.data import render
    root = tmp_path_factory.mktemp("real")
    stats = render.run(["--src", str(GODETTE), "--renderset", "real", "--framing", "body", "--size", "64",
                        "--data-root", str(root)])
    assert stats["rendered"] == 1, (root / "renders/real/failures.jsonl").read_text()
    clean.run_clean(root, "real", progress=False, log=lambda s: None)
    for kind in ("ortho", "rgb"):
        assert not masks.generate_masks(root, "real", ["godette"], kind, progress=False)["errors"]
    return root


def test_real_render_pipeline(real_tree):
    assert paths.read_subset(real_tree, "real", "all") == ["godette"]     # a body render fits its frame
    ds = CharacterDataset(real_tree, "real", ids=["godette"], random_views=False)
    s = ds[0]
    mirrored = CharacterDataset(real_tree, "real", ids=["godette"], random_views=False, mirror_prob=1.0)[0]
    assert s["ortho_rgb"].shape == (4, 3, 64, 64) and float(s["box"]) == pytest.approx(2.1)
    for sample in (s, mirrored):
        for i in range(4):
            # fully covered pixels: the 2x2 supersamples all hit, so their mean point lies on the pixel's ray
            full = (sample["ortho_alpha"][i] > 0.999).float()
            err, n = own_pixels_reproject(sample["ortho_xyz"][i], full, sample["ortho_cam"][i], 64)
            assert n > 100 and err < 0.2, (i, err)
    # masks written by generate_*_mask are what the dataset uses: alpha > 200 of the renders
    a = catalog.load_alpha(paths.render_path(real_tree, "real", "ortho", "godette", "front"))
    assert torch.equal(s["cond_front_mask"][0].bool(), torch.from_numpy(a > 200))
    # a character that does not face the camera symmetrically: mirrored left == flipped right
    assert torch.equal(mirrored["ortho_rgb"][2], s["ortho_rgb"][3].flip(-1))
    # front and back views differ (face vs hair), their silhouettes are near mirror images
    fa, ba = s["ortho_alpha"][0, 0] > 0.5, s["ortho_alpha"][1, 0] > 0.5
    both = fa & ba.flip(-1)
    assert (s["cond_front"] - s["cond_back"].flip(-1)).abs()[:, both].mean() > 0.1
    assert (fa ^ ba.flip(-1)).float().sum() < 0.1 * fa.float().sum()
