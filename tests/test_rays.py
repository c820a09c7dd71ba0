"""The ray reconstruction path: full-resolution patches (dataset.RaySampling), G.render_rays, the ray loss,
and the recipe files that turn it on."""
import json

import pytest
import torch

from tests.test_dataprep import GOOD, fake_render
from tests.test_training import TINY_G, metrics, tiny_args
from training import cameras, configs
from training.dataset import CharacterDataset, RaySampling, collate
from training.errors import UserError
from training.loss import LossConfig, ReconGANLoss, ssim
from training.triplane import build_preset

torch.set_num_threads(1)
RES = 48


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("rays")
    for cid in ("a0001", "b0002"):
        fake_render(root, "toy", cid, GOOD, res=RES)
    return root


@pytest.mark.parametrize("mirror", [0.0, 1.0])
def test_ray_patches_line_up_with_their_cameras(tree, mirror):
    """Every covered patch pixel's surface point projects through the patch's camera onto the pixel's own uv
    (ortho and perspective views, strides 1 and 2, plain and mirrored): the patches, their cameras and their
    uv agree, so the loss compares each rendered ray with its own target pixel."""
    rs = RaySampling(views=5, pool=("ortho", "rgb"), patches=2, size=8, scales=(1, 2), fg_fraction=0.9)
    ds = CharacterDataset(tree, "toy", None, mirror_prob=mirror, rays=rs)
    torch.manual_seed(0)
    checked = 0
    for i in range(len(ds)):
        s = ds[i]
        M = rs.views * rs.patches
        assert s["ray_rgb"].shape == (M, 3, 8, 8) and s["ray_alpha"].shape == (M, 1, 8, 8)
        assert s["ray_xyz"].shape == (M, 3, 8, 8) and s["ray_uv"].shape == (M, 64, 2) and s["ray_cam"].shape == (M, 25)
        assert bool(s["mirrored"]) == (mirror == 1.0)
        for m in range(M):
            a = s["ray_alpha"][m, 0].reshape(-1)
            keep = a > 0.99                 # fully covered pixels: their point is one surface point
            if keep.sum() == 0:
                continue
            pts = s["ray_xyz"][m].reshape(3, -1).T[keep][None]
            uv, _ = cameras.project(pts, s["ray_cam"][m][None])
            px = (s["ray_uv"][m, 1, 0] - s["ray_uv"][m, 0, 0]).item()      # the patch's pixel size
            err = (uv[0] - s["ray_uv"][m][keep]).abs().max().item() / px
            assert err < 0.75, (i, m, err)
            checked += int(keep.sum())
    assert checked > 200
    # patches are centred on the character most of the time: most pixels are covered
    assert s["ray_alpha"].mean() > 0.3


def test_ray_sampling_rejects_bad_settings(tree):
    with pytest.raises(UserError, match="unknown view set"):
        RaySampling(views=2, pool=("ortho", "nope"))
    with pytest.raises(UserError, match="scales"):
        RaySampling(views=2, scales=(0,))
    with pytest.raises(UserError, match="none of the view sets"):
        CharacterDataset(tree, "toy", None, rays=RaySampling(views=2, pool=("rgb60",)))


def test_render_rays_equals_render_on_the_pixel_grid():
    torch.manual_seed(0)
    G = build_preset("tiny", "TriPlaneGenerator_v1", superresolution="none").eval()
    cond = {"front": torch.rand(2, 3, 64, 64) * 2 - 1, "back": torch.rand(2, 3, 64, 64) * 2 - 1}
    cam = cameras.as_tensor([cameras.make_view("v", 10, 30, cameras.get_framing("head"), False),
                             cameras.make_view("front", 0, 0, cameras.get_framing("head"), True)])
    with torch.no_grad():
        syn = G.synthesize(cond)
        img = G.render(syn, cam, 12, perturb=False)
        o, d = cameras.rays(cam, 12)
        rays = G.render_rays(syn, o, d, perturb=False)
    assert torch.allclose(rays["rgb"].reshape(2, 12, 12, 3).permute(0, 3, 1, 2), img["image_raw"], atol=1e-5)
    assert torch.allclose(rays["alpha"].reshape(2, 1, 12, 12), img["image_alpha"], atol=1e-6)
    # no super-resolution: the image is the neural rendering resized, and there are no SR weights
    assert G.superresolution is None and not any(k.startswith("superresolution.") for k in G.state_dict())
    assert img["image"].shape[-1] == G.img_resolution
    assert torch.allclose(torch.nn.functional.interpolate(img["image_raw"], size=(G.img_resolution,) * 2,
                                                          mode="bilinear", align_corners=False), img["image"])


@pytest.mark.parametrize("variant", ["TriPlaneGenerator", "TriPlaneGenerator_v1"])
@pytest.mark.parametrize("perturb", [False, True])
def test_compiled_ray_march_is_one_graph_like_eager(variant, perturb):
    """G.render_rays through compile_renderer (render_field_rays, the ray loss's march) traces without a graph
    break (fullgraph) and gives the eager rays and gradients, planes and field parameters alike (deterministic
    samples; with perturbed samples, finite values in range and gradients everywhere).  aot_eager: dynamo +
    autograd tracing, no code generation (inductor on a CPU takes minutes)."""
    import copy
    torch.manual_seed(0)
    G = build_preset("tiny", variant, superresolution="none").train()
    cond = {"front": torch.rand(2, 3, 64, 64) * 2 - 1, "back": torch.rand(2, 3, 64, 64) * 2 - 1}
    cam = cameras.as_tensor([cameras.make_view("v", 10, 30, cameras.get_framing("head"), False),
                             cameras.make_view("front", 0, 0, cameras.get_framing("head"), True)])
    o, d = cameras.rays(cam, 0, uv=torch.rand(2, 40, 2, generator=torch.Generator().manual_seed(1)))
    planes = G.synthesize(cond)["planes"].detach()
    runs = {}
    for name in ("eager", "compiled"):
        H = copy.deepcopy(G)
        if name == "compiled":
            H.compile_renderer(backend="aot_eager", fullgraph=True)
            assert H._render_rays_fn is not G._render_rays_fn
        p = planes.clone().requires_grad_(True)
        torch.manual_seed(2)            # the same stratified jitter and importance samples
        out = H.render_rays(p, o, d, perturb=perturb)
        (out["rgb"].square().sum() + out["depth"].mean() + out["alpha"].sum() + out["xyz"].abs().mean()).backward()
        runs[name] = (out, p.grad, [q.grad for q in H.field.parameters()])
    (a, ga, pa), (b, gb, pb) = runs["eager"], runs["compiled"]
    assert b["rgb"].shape == (2, 40, 3) and b["alpha"].shape == (2, 40)
    if perturb:
        assert all(torch.isfinite(b[k]).all() for k in ("rgb", "alpha", "depth", "xyz"))
        assert b["alpha"].min() >= 0 and b["alpha"].max() <= 1 + 1e-5
        assert gb.abs().sum() > 0 and all(g is not None for g in pb)
        return
    for k in ("rgb", "alpha", "depth", "xyz"):
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gb, ga, rtol=1e-4, atol=1e-6)
    for x, y in zip(pb, pa):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)


def test_ssim_is_one_for_equal_images_and_falls_with_noise():
    torch.manual_seed(0)
    a = torch.rand(2, 3, 16, 16)
    assert ssim(a, a).item() == pytest.approx(1.0, abs=1e-5)
    assert ssim(a, (a + 0.3 * torch.randn_like(a)).clamp(0, 1)) < ssim(a, (a + 0.05 * torch.randn_like(a)).clamp(0, 1)) < 1


def test_ray_loss_terms_and_gradients(tree):
    """Each ray term is present with its weight, finite, and reaches the backbone and the encoder."""
    rs = RaySampling(views=3, pool=("ortho", "rgb"), patches=2, size=8, scales=(1, 2))
    ds = CharacterDataset(tree, "toy", None, rays=rs)
    torch.manual_seed(0)
    batch = collate([ds[0], ds[1]])
    G = build_preset("tiny", "TriPlaneGenerator_v1", framing="body", superresolution="none",
                     cond_resolution=128, enc_resolution=4, inject_image_resolutions=[8, 16])
    cfg = LossConfig(gan_weight=0, lpips_weight=0, view_weights="", ray_ssim_weight=0.2, ray_grad_weight=0.5,
                     ray_depth_weight=1.0)
    loss = ReconGANLoss(G, None, cfg, box=2.1)
    G.requires_grad_(True)
    planes = G.synthesize(ReconGANLoss.cond_of(batch))
    total, stats = loss.ray_reconstruction(G, planes, batch)
    assert {"ray/l1", "ray/ssim", "ray/grad", "ray/alpha", "ray/depth", "ray/total", "ray/psnr"} <= set(stats)
    assert torch.isfinite(total) and total > 0
    total.backward()
    for part in (G.backbone, G.encoder, G.back_encoder, G.field):
        assert sum(p.grad.abs().sum() for p in part.parameters() if p.grad is not None) > 0, part


def test_trainer_runs_the_ray_recipe_and_fits_the_patches(tmp_path, monkeypatch):
    """The trainer with ray views on (and everything else off): ray/* stats per tick, the patch PSNR rises
    over a short fit of two characters, and the held-out character's PSNRs (val/*) are logged with the
    training time; the snapshots kept are the newest and the best on the held-out side views."""
    from training.data import clean
    from training.run import snapshots
    from training.training_loop import train
    from _train.eg3dc.train import config_from_args
    pruned = []
    prune = snapshots.prune
    monkeypatch.setattr(snapshots, "prune", lambda run, keep, best="": pruned.append(best) or prune(run, keep, best))
    root = tmp_path / "data"
    for i, cid in enumerate(("a0001", "b0002", "c0003")):
        fake_render(root, "toy", cid, GOOD, res=32)
    clean.write_subset(root, "toy", "train", ["a0001", "b0002"])
    clean.write_subset(root, "toy", "val", ["c0003"])
    argv = tiny_args(root, tmp_path / "runs", "rays", **{
        "dataset": "toy", "val-count": 1, "val-ticks": 2, "val-resolution": 16,
        "ray-views": 4, "ray-patches": 2, "ray-patch-size": 8, "ray-scales": "1,2", "view-weights": "",
        "gan-weight": 0, "no-random-z": True, "ortho-views": "front,back", "discriminator": "DualDiscriminator",
        "kimg": 0.24, "tick-kimg": 0.04, "snap-ticks": 2, "snap-keep": 1, "snap-keep-best": "val/psnr_side",
        "glr": 0.005, "beta1": 0.9,
        "ray-depth-weight": 1.0, "freeze-bn": False})
    argv += ["--g-kwargs", json.dumps({**TINY_G, "superresolution": "none"})]
    run = train(config_from_args(argv))
    rec = metrics(run)
    assert all("ray/psnr" in r and "ray/depth" in r for r in rec)
    assert not any(k.startswith("recon/front") for r in rec for k in r)
    first, last = rec[0]["ray/psnr"], sum(r["ray/psnr"] for r in rec[-3:]) / 3
    assert last > first + 2.0, (first, last)
    val = [r for r in rec if "val/psnr_front" in r]
    assert len(val) >= 3 and val[-1] is rec[-1]                 # every 2nd tick and the last
    assert {"val/psnr_back", "val/psnr_side", "val/psnr_rgb"} <= set(val[-1])
    assert val[-1]["val/psnr_front"] > val[0]["val/psnr_front"]
    assert all(b["train_s"] > a["train_s"] for a, b in zip(rec, rec[1:]))
    assert pruned and set(pruned) == {"val/psnr_side"}
    best = max(val, key=lambda r: (r["val/psnr_side"], r["kimg"]))
    kept = sorted(p.name for p in run.glob("network-snapshot-*.pt"))
    assert kept == sorted({snapshots.snapshot_name(round(best["kimg"] * 1000)),
                           snapshots.snapshot_name(round(rec[-1]["kimg"] * 1000))})


def test_every_recipe_and_preset_loads():
    """Each file of _configs/recipes gives a TrainConfig (with a description), each preset's keys are
    constructor keywords of its class."""
    import inspect
    from _train.eg3dc.train import config_from_args
    from training.triplane import GENERATORS, PRESETS
    names = configs.recipes()
    assert {"release/nova_v1", "release/panic_body", "release/panic_head", "panic_head", "nova_body"} <= set(names)
    for n in names:
        assert configs.load_config(configs.resolve_recipe(n)).get("description"), n
        cfg = config_from_args(["--config", n])
        assert cfg.preset in PRESETS, n
        if n.startswith("release/") and n != "release/base":       # G and D build (sizes D accepts)
            from training.run.train_step import build_networks
            G, D = build_networks(cfg)
            assert G.superresolution is None and G.img_resolution == D.img_resolution, n
    for n in PRESETS:
        p = PRESETS[n]
        params = inspect.signature(GENERATORS[p["class"]].__init__).parameters
        assert set(p["kwargs"]) <= set(params), (n, set(p["kwargs"]) - set(params))
    with pytest.raises(UserError, match="config file not found"):
        config_from_args(["--config", "no/such/recipe"])


def test_flags_are_documented_and_list_their_choices(capsys):
    from _train.eg3dc.train import build_parser
    from training.loss import LossConfig as LC
    from training.training_loop import TrainConfig
    for cls in (TrainConfig, LC):
        docs = configs.field_docs(cls)
        assert all(docs.values()) and set(docs) >= {f for f in cls.__dataclass_fields__}, cls
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    assert "views per character and step" in text and "{auto,cpu,cuda}" in text and "nova_body_small" in text


def test_chunked_march_equals_one_march_and_inference_is_chunked(monkeypatch):
    """Without gradients G.render marches its rays in chunks (bounded memory at any size): the same image
    as one march."""
    from training import triplane
    from training import volumetric_rendering as vr
    torch.manual_seed(0)
    G = build_preset("tiny", "TriPlaneGenerator_v1", superresolution="none").eval()
    cond = {"front": torch.rand(2, 3, 64, 64) * 2 - 1, "back": torch.rand(2, 3, 64, 64) * 2 - 1}
    cam = cameras.as_tensor([cameras.make_view("v", 10, 30, cameras.get_framing("head"), False)] * 2)
    calls = []
    real = vr.render_rays
    monkeypatch.setattr(vr, "render_rays", lambda *a, **k: calls.append(a[1].shape[1]) or real(*a, **k))
    with torch.no_grad():
        syn = G.synthesize(cond)
        monkeypatch.setattr(triplane, "INFERENCE_RAY_CHUNK", 1 << 20)
        whole = G.render(syn, cam, 20, perturb=False)
        n_whole = len(calls)
        monkeypatch.setattr(triplane, "INFERENCE_RAY_CHUNK", 2 * 64)       # 64 rays of each image at a time
        parts = G.render(syn, cam, 20, perturb=False)
    assert n_whole == 1 and calls[1:] == [64] * 6 + [400 - 6 * 64]
    for k in ("image_raw", "image_alpha", "image_depth"):
        assert torch.allclose(whole[k], parts[k], atol=1e-6), k


def test_render_resolution_is_smaller_on_a_cpu():
    from training.infer import reconstruct as R
    G = build_preset("tiny", "TriPlaneGenerator_v1", neural_rendering_resolution=256, img_resolution=256)
    assert R.render_resolution(G, "cpu") == R.CPU_RENDER_RESOLUTION < 256
    assert R.render_resolution(G, "cuda") == 256 and R.render_resolution(G, "cpu", 48) == 48
    with pytest.raises(UserError, match="too small"):
        R.render_resolution(G, "cpu", 4)


def test_lpips_follows_the_generator_to_its_device():
    """load_lpips builds the network on the CPU; the loss moves it to G's device (else a GPU run with
    --lpips-weight > 0 fails on its first step)."""
    pytest.importorskip("lpips")
    G = build_preset("tiny", "TriPlaneGenerator_v1", framing="body", superresolution="none",
                     cond_resolution=128, enc_resolution=4, inject_image_resolutions=[8, 16]).to("meta")
    loss = ReconGANLoss(G, None, LossConfig(gan_weight=0, lpips_weight=1.0, lpips_net="alex", lpips_random_init=True),
                        box=2.1)
    assert {p.device.type for p in loss.lpips.parameters()} == {"meta"}
    assert {b.device.type for b in loss.lpips.buffers()} == {"meta"}
