"""Analytic checks of the evaluation metrics (training/eval)."""
import numpy as np
import pytest
import torch
import trimesh

from training.eval import geometry as geo
from training.eval import image as im

torch.set_num_threads(1)


def _images(n=2, res=32, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.random((res, res, 3)).astype(np.float32) for _ in range(n)]


# ------------------------------------------------------------------ image metrics

def test_on_white_composites_alpha():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255                      # red, but fully transparent except one pixel
    rgba[0, 0, 3] = 255
    out = im.on_white(rgba)
    assert out.shape == (4, 4, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0], [1, 0, 0])
    np.testing.assert_allclose(out[1, 1], [1, 1, 1])


def test_psnr_cap_and_known_shift():
    a = np.full((16, 16, 3), 0.5, np.float32)
    assert im.psnr(a, a) == pytest.approx(im.PSNR_CAP_DB)
    assert im.psnr(a, a + 0.1) == pytest.approx(20.0, abs=1e-4)      # MSE 0.01 -> 20 dB
    assert im.psnr(a, a + 0.01) == pytest.approx(40.0, abs=1e-3)
    with pytest.raises(ValueError):
        im.psnr(a, a[:8])


def test_ssim_identical_and_different():
    a, b = _images(2, 32)
    assert im.ssim(a, a) == pytest.approx(100.0, abs=1e-6)
    assert im.ssim(a, b) < 20.0


def test_ssim_batched_matches_scikit_image():
    a, b = _images(2, 48, seed=3)
    c = np.clip(a * 0.8 + 0.1, 0, 1)
    ref = [im.ssim(a, b), im.ssim(a, c), im.ssim(a, a)]
    np.testing.assert_allclose(im.ssim_batch([a, a, a], [b, c, a]), ref, atol=1e-6)


def test_lpips_random_init_identical_is_zero():
    m = im.LPIPSMetric(device="cpu", random_init=True)
    a, b = _images(2, 64)
    s = m([a, a], [a, b])
    assert s.shape == (2,)
    assert s[0] == pytest.approx(0.0, abs=1e-6)
    assert s[1] > 0.0


def test_clip_random_init_identical_is_100_and_pads_without_distortion():
    pytest.importorskip("open_clip")
    m = im.CLIPMetric(device="cpu", random_init=True)
    wide = np.ones((32, 64, 3), np.float32)
    wide[8:24, 24:40] = 0.0                 # black 16x16 square in the middle of a 2:1 image
    other = np.ones_like(wide)
    s = m([wide, wide], [wide, other])
    assert s[0] == pytest.approx(100.0, abs=1e-3)
    assert s[1] < 100.0
    # padding keeps the square square: after pad-to-64 + resize-to-224 it spans 56 x 56 pixels
    x = im.clip_preprocess(torch.from_numpy(wide).permute(2, 0, 1)[None])
    dark = (x[0, 0] < x[0, 0].max() - 1.0)
    rows, cols = dark.any(1).nonzero(), dark.any(0).nonzero()
    assert abs((rows.max() - rows.min()) - (cols.max() - cols.min())) <= 2


def test_missing_weights_are_unavailable_with_file_name(tmp_path, monkeypatch):
    pytest.importorskip("open_clip")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(im, "_clip_cached_file", lambda: None)
    metrics = im.ImageMetrics(device="cpu", weights_dir=tmp_path)
    assert "alexnet-owt-7be5be79.pth" in metrics.unavailable["lpips"]
    assert "open_clip_model.safetensors" in metrics.unavailable["clip"]
    a, b = _images(2, 16)
    out = metrics([a], [b])
    assert set(out) == {"psnr", "ssim"}            # the others still computed, no silent zeros


def test_fid_identical_sets_near_zero_and_min_images():
    from training.eval.fid import FIDMetric, frechet_distance
    rng = np.random.default_rng(0)
    fa, fb = rng.normal(size=(200, 8)), rng.normal(size=(200, 8)) + 1.0
    assert frechet_distance(fa, fa) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(fa, fb) == pytest.approx(8.0, rel=0.3)   # |mu diff|^2 = 8
    pytest.importorskip("pytorch_fid")
    m = FIDMetric(device="cpu", random_init=True, min_images=3)
    with pytest.raises(im.MetricUnavailable):
        m(_images(2, 32), _images(2, 32))


# ------------------------------------------------------------------ geometry

def _sphere(r, sub=5):
    return trimesh.creation.icosphere(subdivisions=sub, radius=r)


BOX = ([-1, -1, -1], [1, 1, 1])


def test_identical_meshes_cd0_f1_100():
    s = _sphere(0.3, 4)
    out = geo.geometry_scores(s, s.copy(), BOX, n=2000)
    assert out["cd"] == pytest.approx(0.0, abs=1e-6)
    assert out["f1@5"] == pytest.approx(100.0) and out["f1@10"] == pytest.approx(100.0)


def test_sphere_offset_cd_and_f1_flip():
    r, d = 0.3, 0.0075                       # F1@5 (t=5 mm < d) must be 0, F1@10 (t=10 mm > d) 100
    out = geo.geometry_scores(_sphere(r), _sphere(r + d), BOX, n=3000)
    assert out["cd"] == pytest.approx(d * 100, rel=0.02)     # metres x 100
    assert out["f1@5"] == pytest.approx(0.0)
    assert out["f1@10"] == pytest.approx(100.0)
    # flip exactly around t = d
    th = {"below": d * 0.95, "above": d * 1.05}
    out = geo.mesh_distances(_sphere(r), _sphere(r + d), n=3000, thresholds=th)
    assert out["below"] == pytest.approx(0.0) and out["above"] == pytest.approx(100.0)


def test_cd_halves_tell_missing_from_extra_surface():
    # the prediction has one of the truth's two spheres: nothing extra (accuracy ~0), the other one missing
    # (completeness: half the truth's samples lie on the missing sphere, whose points are on average
    # D + r^2 / 3D - r = 0.5 + 0.01 / 1.5 - 0.1 m from the kept sphere's surface)
    a = _sphere(0.1, 4)
    b = _sphere(0.1, 4).apply_translation([0.5, 0, 0])
    out = geo.mesh_distances(a, trimesh.util.concatenate([a, b]), n=4000)
    assert out["cd_acc"] == pytest.approx(0.0, abs=1e-6)
    assert out["cd_comp"] == pytest.approx(0.5 * 100 * (0.5 + 0.01 / 1.5 - 0.1), rel=0.03)
    assert out["cd"] == pytest.approx((out["cd_acc"] + out["cd_comp"]) / 2)
    swapped = geo.mesh_distances(trimesh.util.concatenate([a, b]), a, n=4000)    # extra surface instead
    assert swapped["cd_comp"] == pytest.approx(0.0, abs=1e-6) and swapped["cd_acc"] > 10


def test_point_to_mesh_not_point_to_point():
    # a coarse plane: point-to-sample distances would be large, point-to-surface must be ~0
    plane = trimesh.Trimesh([[-1, 0, -1], [1, 0, -1], [1, 0, 1], [-1, 0, 1]], [[0, 1, 2], [0, 2, 3]])
    pts = np.array([[0.3, 0.0, 0.1], [0.2, 0.002, -0.4]])
    np.testing.assert_allclose(geo.point_to_mesh(pts, plane), [0.0, 0.002], atol=1e-9)


def test_f1_averaged_over_characters():
    s, s2 = _sphere(0.3, 4), _sphere(0.3075, 4)
    per_char = [geo.geometry_scores(s, s.copy(), BOX, n=2000),      # perfect
                geo.geometry_scores(s, s2, BOX, n=2000)]            # last one: F1@5 = 0
    avg = geo.average_over_characters(per_char)
    assert avg["f1@5"] == pytest.approx(50.0)                      # the published script would say 0
    assert avg["f1@10"] == pytest.approx(100.0)
    assert avg["cd"] == pytest.approx(per_char[1]["cd"] / 2)


def test_crop_cuts_at_box_and_hidden_removal():
    s = _sphere(0.3, 4)
    half = geo.crop_mesh(s, [-1, 0, -1], [1, 1, 1])
    assert half.vertices[:, 1].min() >= -1e-9
    assert half.area == pytest.approx(s.area / 2, rel=0.02)
    # inner sphere hidden inside the outer one: removing it (mask) restores a perfect score
    inner = _sphere(0.1, 3)
    gt = trimesh.util.concatenate([s, inner])
    visible = np.r_[np.ones(len(s.faces), bool), np.zeros(len(inner.faces), bool)]
    with_inner = geo.geometry_scores(s, gt, BOX, n=2000)
    removed = geo.geometry_scores(s, gt, BOX, n=2000, gt_visible=visible)
    assert with_inner["f1@10"] < 95.0 and removed["f1@10"] == pytest.approx(100.0)
    # fallback visibility from observed surface points marks the outer faces only
    pts = geo.sample_surface(s, 30000, seed=3)
    mask = geo.faces_near_points(gt, pts, tol=1e-6)
    assert mask[:len(s.faces)].mean() > 0.9 and not mask[len(s.faces):].any()


def test_empty_prediction_scores_worst():
    empty = trimesh.Trimesh(np.zeros((0, 3)), np.zeros((0, 3), int))
    out = geo.mesh_distances(empty, _sphere(0.3, 2), n=100)
    assert out["cd"] == out["cd_acc"] == out["cd_comp"] == float("inf") and out["f1@5"] == 0.0


def test_roi_file_validation(tmp_path):
    from training.errors import UserError
    from training.eval.measure import load_rois
    good = tmp_path / "roi.json"
    good.write_text('{"head": [-0.35, 0.3, -0.35, 0.35, 1.0, 0.35]}')
    lo, hi = load_rois(good)["head"]
    assert lo[1] == 0.3 and hi[1] == 1.0
    bad = tmp_path / "bad.json"
    bad.write_text('{"head": [1, 1, 1, 0, 0, 0]}')
    with pytest.raises(UserError, match="bad.json"):
        load_rois(bad)
    with pytest.raises(UserError, match="not found"):
        load_rois(tmp_path / "missing.json")


def test_lpips_loads_alexnet_trunk_from_weights_dir(tmp_path):
    import torchvision
    torch.manual_seed(1)
    alex = torchvision.models.alexnet(weights=None)
    feats = {k: v for k, v in alex.state_dict().items() if k.startswith("features.")}  # the trunk is all LPIPS uses
    torch.save(feats, tmp_path / im.ALEXNET_FILE)
    m = im.LPIPSMetric(device="cpu", weights_dir=tmp_path)
    torch.testing.assert_close(m.net.net.slice1[0].weight, feats["features.0.weight"])
    torch.testing.assert_close(m.net.net.slice5._modules["10"].bias, feats["features.10.bias"])
    a, b = _images(2, 64)
    s = m([a], [b])
    assert np.isfinite(s).all() and s[0] > 0


def test_input_dependence_separates_mean_output_from_real_predictions():
    from training.eval.measure import input_dependence
    rng = np.random.default_rng(0)
    gts = rng.random((6, 16, 16, 3))
    same = np.repeat(gts.mean(0, keepdims=True), 6, 0)          # one output whatever the input
    dep = input_dependence(same, gts)
    assert dep["spread"] == pytest.approx(0.0, abs=1e-9) and dep["devcorr"] == pytest.approx(0.0, abs=1e-6)
    noisy = rng.random((6, 16, 16, 3))                           # varies, but not with the input
    dep = input_dependence(noisy, gts)
    assert dep["spread"] == pytest.approx(1.0, abs=0.1) and abs(dep["devcorr"]) < 0.1
    half = 0.5 * gts + 0.25                                      # faithful but washed out
    dep = input_dependence(half, gts)
    assert dep["spread"] == pytest.approx(0.5) and dep["devcorr"] == pytest.approx(1.0)
