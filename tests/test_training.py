"""Training on CPU at tiny sizes: one tick per generator variant, a short fit, kill -9 and resume.

The data is a fake render tree (ray-cast ellipsoids laid out like
_scripts.data.render writes it, from tests.test_dataprep).
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_dataprep import GOOD, fake_render
from training import checkpoint, loss as L
from training.errors import UserError
from training.training_loop import TrainConfig, learning_config, train

REPO = Path(__file__).resolve().parent.parent

# smallest sizes the backbone accepts: 128 px conditioning -> 4x4 encoder features
TINY_G = {"framing": "body", "cond_resolution": 128, "enc_resolution": 4, "inject_image_resolutions": [8, 16]}
TINY_D = {"channel_base": 256, "channel_max": 32, "mapping_layers": 1}


def _blobs(i):
    """A slightly different character per index (colours and the side blob move)."""
    out = [(c, r, tuple(int((v + 37 * i * (k + 1)) % 256) for v in col)) for k, (c, r, col) in enumerate(GOOD)]
    c, r, col = out[2]
    return out[:2] + [((c[0], c[1] + 0.1 * i, c[2]), r, col)]


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("lustrous")
    for i in range(4):
        fake_render(root, "toy", f"toy{i:03d}", _blobs(i), res=32)
    return root


def tiny_args(root, runs, name, **over):
    """CLI flags of a tiny, deterministic CPU run."""
    a = {"data-root": root, "renderset": "toy", "dataset": "", "runs-dir": runs, "run-name": name,
         "preset": "tiny", "g-kwargs": json.dumps(TINY_G), "d-kwargs": json.dumps(TINY_D),
         "batch": 2, "workers": 0, "device": "cpu", "lpips-weight": 0, "mirror-prob": 0,
         "tick-kimg": 0.002, "snap-ticks": 1, "preview-ticks": 100, "preview-count": 2, "kimg": 0.002}
    a.update(over)
    argv = []
    for k, v in a.items():
        if v is True:
            argv.append(f"--{k}")
        elif v is False:
            argv.append(f"--no-{k}")
        else:
            argv += [f"--{k}", str(v)]
    return argv


def tiny_config(root, runs, name, **over):
    from _train.eg3dc.train import config_from_args
    return config_from_args(tiny_args(root, runs, name, **over))


def metrics(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def snapshot(run_dir):
    snaps = sorted(Path(run_dir).glob("network-snapshot-*.pt"))
    assert snaps, f"no snapshot in {run_dir}"
    return checkpoint.load_checkpoint(snaps[-1])


# ------------------------------------------------------------------ loss pieces

def test_silhouette_band_and_alpha_loss():
    a = torch.zeros(1, 1, 16, 16)
    a[..., 4:12, 4:12] = 1
    band = L.silhouette_band(a, 1)
    assert band[0, 0, 8, 8] == 0 and band[0, 0, 0, 0] == 0        # deep inside / far outside
    assert band[0, 0, 4, 8] == 1 and band[0, 0, 3, 8] == 1        # on both sides of the edge
    assert band.sum() == 10 * 10 - 6 * 6
    # an error confined to the band is ignored, one outside it is not
    pred = a.clone()
    pred[..., 3, 4:12] = 1
    assert L.alpha_loss(pred, a, 1) == 0
    assert L.alpha_loss(pred, a, 0) > 0
    pred2 = a.clone()
    pred2[..., 0, 0] = 1
    assert L.alpha_loss(pred2, a, 1) > 0


def test_depth_loss_only_on_mutually_opaque_pixels():
    gt_a = torch.zeros(1, 1, 4, 4)
    gt_a[..., :2, :] = 1
    pr_a = torch.zeros(1, 1, 4, 4)
    pr_a[..., :, :2] = 1
    gt = torch.zeros(1, 3, 4, 4)
    pr = torch.zeros(1, 3, 4, 4)
    pr[:, :, 2:, :] = 5.0           # wrong where the GT is empty: ignored
    pr[:, :, :2, 2:] = 5.0          # wrong where the prediction is empty: ignored
    assert L.depth_loss(pr, pr_a, gt, gt_a) == 0
    pr[:, 0, 0, 0] = 0.1            # wrong on a mutually opaque pixel: counted (1 of 4 pixels)
    assert torch.isclose(L.depth_loss(pr, pr_a, gt, gt_a), torch.tensor(0.01 / 4))
    # per-sample normalisation: a batch is the mean of its samples (splits over processes add up)
    both = torch.cat([pr, torch.zeros_like(pr)]), torch.cat([pr_a, gt_a])
    assert torch.isclose(L.depth_loss(both[0], both[1], torch.cat([gt, gt]), torch.cat([gt_a, gt_a])),
                         torch.tensor(0.01 / 8))


class _LinearD(torch.nn.Module):
    """logits = w * (2 sum(image) + 3 sum(image_raw)): R1 = w^2 (4 N_image + 9 N_raw) per sample."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(1.5))

    def blur_inputs(self, img, sigma):
        return img

    def forward(self, img, c):
        return self.w * (2 * img["image"].flatten(1).sum(1, keepdim=True) + 3 * img["image_raw"].flatten(1).sum(1, keepdim=True))


def test_r1_terms_match_analytic_gradient():
    D = _LinearD()
    real = L.r1_inputs({"image": torch.randn(3, 2, 4, 4), "image_raw": torch.randn(3, 2, 2, 2)})
    pen, pen_m, keep = L.r1_terms(D, real, torch.zeros(3, 25))
    assert pen_m is None and float(keep.detach()) == 0
    torch.testing.assert_close(pen, torch.full((3,), 1.5 ** 2 * (4 * 32 + 9 * 8)))
    (pen.mean() + keep).backward()        # d/dw of w^2 (4 N + 9 M)
    torch.testing.assert_close(D.w.grad, torch.tensor(2 * 1.5 * (4 * 32 + 9 * 8)))


def test_r1_terms_give_each_branchs_own_penalty():
    """r1_terms on a mask D: one gradient of the summed logits gives each branch's own R1 and the same D
    gradients as separate autograd.grad calls per branch (the earlier form of the loss), blur included."""
    from tests.test_networks import tiny_d
    from training.dual_discriminator import MaskDualDiscriminator
    torch.manual_seed(0)
    D = tiny_d(MaskDualDiscriminator, mask_resolution=16)
    imgs = {"image": torch.randn(4, 3, 32, 32), "image_raw": torch.randn(4, 3, 16, 16),
            "image_mask": torch.rand(4, 1, 32, 32)}
    c = torch.randn(4, 25)

    def grads_of(fn):
        D.zero_grad(set_to_none=True)
        pen, pen_m, keep = fn()
        (pen.mean() * 2.5 + pen_m.mean() * 0.5 + keep).backward()
        return pen.detach(), pen_m.detach(), {n: p.grad.clone() for n, p in D.named_parameters()}

    def separate(sigma):
        x = L.r1_inputs(imgs)
        parts = D(D.blur_inputs(x, sigma), c, return_parts=True)
        g = torch.autograd.grad(parts["logits_image"].sum(), [x["image"], x["image_raw"]], create_graph=True)
        (gm,) = torch.autograd.grad(parts["logits_mask"].sum(), [x["image_mask"]], create_graph=True)
        return sum(v.square().flatten(1).sum(1) for v in g), gm.square().flatten(1).sum(1), parts["logits"].sum() * 0

    for sigma in (0.0, 1.5):
        ref = grads_of(lambda: separate(sigma))
        got = grads_of(lambda: L.r1_terms(D, L.r1_inputs(imgs), c, mask=True, sigma=sigma))
        torch.testing.assert_close(got[:2], ref[:2])
        assert got[2].keys() == ref[2].keys()
        for n in ref[2]:
            torch.testing.assert_close(got[2][n], ref[2][n], rtol=1e-4, atol=1e-6, msg=n)


def test_view_weights_and_lpips_errors():
    assert L.parse_view_weights("front=1, back=0.5,left") == {"front": 1.0, "back": 0.5, "left": 1.0}
    with pytest.raises(UserError):
        L.parse_view_weights("front=x")
    old = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = "/nonexistent-torch-home"
    try:
        with pytest.raises(UserError, match="download"):
            L.load_lpips("vgg")
    finally:
        if old is None:
            os.environ.pop("TORCH_HOME")
        else:
            os.environ["TORCH_HOME"] = old


# ------------------------------------------------------------------ full ticks

@pytest.mark.parametrize("variant", ["TriPlaneGenerator", "TriPlaneGenerator_v0", "TriPlaneGenerator_v1"])
def test_one_tick_per_variant(toy_data, tmp_path, variant):
    torch.set_num_threads(1)
    mask_d = variant == "TriPlaneGenerator_v1"
    over = {"generator": variant, "r1-interval": 1, "tv-interval": 1, "tv-points": 64,
            "discriminator": "MaskDualDiscriminator" if mask_d else "DualDiscriminator",
            "view-weights": "front=1,back=1,left=1,right=1", "preview-ticks": 1}
    if variant == "TriPlaneGenerator_v0":   # exercise the LPIPS term with a random backbone (no download)
        over.update({"lpips-weight": 1, "lpips-net": "alex", "lpips-random-init": True})
    cfg = tiny_config(toy_data, tmp_path, "tick", **over)
    run = train(cfg)
    (rec,) = metrics(run)
    assert rec["step"] == 1 and rec["kimg"] == pytest.approx(0.002) and rec["nan_skips"] == 0
    keys = {"G/gan", "D/loss", "D/r1", "G/tv", "recon/total", "recon/back/depth", "recon/left/alpha",
            "recon/right/l1_image", "recon/front/l1_image_raw"}
    if mask_d:
        keys.add("D/r1_mask")
    if variant == "TriPlaneGenerator_v0":
        keys.add("recon/front/lpips_image")
    assert keys <= set(rec), sorted(keys - set(rec))
    assert all(np.isfinite(v) for v in rec.values())
    saved = json.loads((run / "config.json").read_text())
    assert saved == cfg.to_dict() and saved["generator"] == variant
    ck = snapshot(run)
    assert ck["step"] == 1 and set(ck["modules"]) >= {"G", "G_ema", "D", "opt_G", "opt_D"}
    assert ck["modules"]["G_ema"]["class"].endswith("." + variant)
    G = checkpoint.load_generator(sorted(run.glob("network-snapshot-*.pt"))[-1], expected=variant)
    # the optimiser moved G away from its EMA copy (beta < 1)
    diffs = [(ck["modules"]["G"]["state_dict"][k] - v).abs().max() for k, v in G.state_dict().items()
             if v.dtype.is_floating_point]
    assert max(diffs) > 0
    from PIL import Image
    grid = Image.open(sorted(run.glob("preview-*.png"))[-1])
    assert grid.size == (8 * 128, 2 * 128)   # 2 inputs + 3 predictions + 3 ground truths; 2 samples


def test_short_fit_lowers_reconstruction(toy_data, tmp_path):
    """Reconstruction only (no GAN) on one character: the loss falls well below its start."""
    torch.set_num_threads(1)
    fake_render(toy_data, "one", "one000", _blobs(1), res=32)
    # z = 0: with a random z the target is a moving one for a recon-only fit; depth off: its
    # mutually-opaque mask switches on and off while alpha crosses 0.5 (a noisy curve, not a wrong one)
    cfg = tiny_config(toy_data, tmp_path, "fit", renderset="one", batch=1, kimg=0.040, **{
        "generator": "TriPlaneGenerator", "tick-kimg": 0.010, "snap-ticks": 100, "gan-weight": 0,
        "tv-weight": 0, "depth-weight": 0, "no-random-z": True, "no-random-views": True, "glr": 0.003, "beta1": 0.9})
    run = train(cfg)
    recs = metrics(run)
    first, last = recs[0]["recon/total"], recs[-1]["recon/total"]
    assert [r["step"] for r in recs] == [1, 11, 21, 31, 40]
    assert last < 0.7 * first, (first, last)


def test_gan_warm_up_leaves_D_alone_until_it_starts(toy_data, tmp_path):
    """--gan-start-kimg: reconstruction only (D untouched, no GAN stats) until that many kimg, then the GAN."""
    torch.set_num_threads(1)
    cfg = tiny_config(toy_data, tmp_path, "warm", kimg=0.008, **{"tick-kimg": 0.002, "gan-start-kimg": 0.004,
                                                                 "r1-interval": 2, "tv-interval": 2, "tv-points": 64})
    run = train(cfg)
    recs = metrics(run)
    assert [r["step"] for r in recs] == [1, 2, 3, 4]
    warm, late = recs[:2], recs[2:]
    assert all("G/gan" not in r and "D/loss" not in r and "D/r1" not in r and "recon/total" in r for r in warm)
    assert all("G/gan" in r and "D/loss" in r for r in late) and any("D/r1" in r for r in late)
    lc = cfg.loss                                        # D's blur fades from the GAN's start
    assert L.blur_sigma(lc, 0) == L.blur_sigma(lc, lc.gan_start_kimg * 1e3) == lc.blur_init_sigma > 0
    assert L.blur_sigma(lc, (lc.gan_start_kimg + lc.blur_fade_kimg) * 1e3) == 0
    # D's weights after the warm-up are its initial ones: a second run stopped at the GAN's start
    cfg0 = tiny_config(toy_data, tmp_path, "warm0", kimg=0.004, **{"tick-kimg": 0.002, "gan-start-kimg": 0.004})
    from training.run.train_step import build_networks
    torch.manual_seed(cfg0.seed)
    _, D_init = build_networks(cfg0)
    D_warm = snapshot(train(cfg0))["modules"]["D"]
    # never stepped: stored as a marker without weights and rebuilt from the seed on resume (training.run.snapshots)
    assert D_warm["untrained"] and D_warm["state_dict"] == {} and D_init.state_dict()


# ------------------------------------------------------------------ kill -9 and resume

def _cli(args, **kw):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "_train.eg3dc.train", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def _wait_for_snapshot(p, run, timeout=120):
    """Until the CLI run p has written its first snapshot into run (failing if p exits first)."""
    deadline = time.time() + timeout
    while not list(run.glob("network-snapshot-*.pt")):
        assert p.poll() is None, p.stdout.read()
        assert time.time() < deadline
        time.sleep(0.05)


def test_kill_and_resume_matches_uninterrupted_run(toy_data, tmp_path):
    det = {"no-ray-perturb": True, "no-random-views": True, "kimg": 0.012, "no-progress": True,
           "r1-interval": 2, "tv-interval": 2, "tv-points": 64}
    args = tiny_args(toy_data, tmp_path, "killed", **det)
    p = _cli(args)
    run = tmp_path / "killed" / "00000"
    _wait_for_snapshot(p, run)
    p.send_signal(signal.SIGKILL)
    p.wait()
    killed_at = checkpoint.load_checkpoint(sorted(run.glob("network-snapshot-*.pt"))[-1])
    assert killed_at["step"] < 6, "run finished before it was killed"
    config_before = (run / "config.json").read_text()

    r = _cli(args)
    out, _ = r.communicate(timeout=180)
    assert r.returncode == 0, out
    assert f"resuming network-snapshot-{killed_at['step'] * 2 / 1000:010.3f}.pt, step {killed_at['step']}" in out
    assert not (tmp_path / "killed" / "00001").exists()          # same run folder
    assert (run / "config.json").read_text() == config_before
    resumed = snapshot(run)
    assert resumed["step"] == 6
    steps = [m["step"] for m in metrics(run)]
    assert steps[-1] == 6

    torch.set_num_threads(1)
    straight = snapshot(train(tiny_config(toy_data, tmp_path, "straight", **det)))
    assert learning_config(straight["training_config"]) | {"run_name": "killed"} == \
        learning_config(resumed["training_config"])
    for net in ("G", "G_ema", "D"):
        a, b = resumed["modules"][net]["state_dict"], straight["modules"][net]["state_dict"]
        for k in a:
            assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), (net, k)


def test_resume_refuses_other_settings(toy_data, tmp_path):
    train(tiny_config(toy_data, tmp_path, "r"))
    with pytest.raises(UserError, match="other settings.*glr"):
        train(tiny_config(toy_data, tmp_path, "r", glr=0.01))
    # runtime keys may change: a longer run continues the same folder
    run = train(tiny_config(toy_data, tmp_path, "r", kimg=0.004))
    assert run.name == "00000" and snapshot(run)["step"] == 2
    # --resume PATH: a new run (folder) starting from that snapshot's weights and counters, other settings allowed
    snap = sorted(run.glob("network-snapshot-*.pt"))[-1]
    run2 = train(tiny_config(toy_data, tmp_path, "r", kimg=0.006, glr=0.01, resume=str(snap)))
    assert run2.name == "00001" and snapshot(run2)["step"] == 3
    assert json.loads((run2 / "config.json").read_text())["glr"] == 0.01
    # ... and the optimizer steps at it (Adam's saved state carries the old rate)
    assert metrics(run2)[-1]["glr"] / 0.01 == pytest.approx(metrics(run)[-1]["glr"] / TrainConfig().glr)
    with pytest.raises(UserError, match="not found"):
        train(tiny_config(toy_data, tmp_path, "r", resume=str(tmp_path / "missing.pt")))


def test_sigterm_to_the_process_group_stops_with_a_snapshot(toy_data, tmp_path):
    """A scheduler's SIGTERM reaches the trainer and its data workers: the step finishes, a snapshot
    of that step is written, the process exits 0."""
    args = tiny_args(toy_data, tmp_path, "term", kimg=1, workers=1, **{"snap-ticks": 1000, "no-progress": True})
    p = _cli(args, start_new_session=True)
    run = tmp_path / "term" / "00000"
    _wait_for_snapshot(p, run)
    time.sleep(1.0)
    os.killpg(p.pid, signal.SIGTERM)
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 0, out
    stopped = [line for line in out.splitlines() if line.startswith("stopped by signal at step")]
    assert stopped, out
    step = int(stopped[0].split("step ")[1].split(";")[0])
    assert snapshot(run)["step"] == step == metrics(run)[-1]["step"]
    assert not list(run.glob(".*tmp*"))                        # no temporary files left behind


def test_auto_resume_skips_released_run_folders(toy_data, tmp_path):
    """A run folder marked RELEASED (a shipped model) is not continued by --resume auto: a run of the same
    name starts the next numbered folder, and the released files stay as they are."""
    from training.run.snapshots import RELEASED_MARKER
    run = train(tiny_config(toy_data, tmp_path, "rel", kimg=0.004))
    (run / RELEASED_MARKER).write_text("released")
    before = sorted(p.name for p in run.iterdir())
    run2 = train(tiny_config(toy_data, tmp_path, "rel", kimg=0.004))
    assert run2.name == "00001" and snapshot(run2)["step"] == 2
    assert sorted(p.name for p in run.iterdir()) == before


def test_resume_from_transport_export(toy_data, tmp_path):
    """A bf16 export of G_ema + D (what comes back from the GPU machine) continues a run: G restarts as G_ema."""
    run = train(tiny_config(toy_data, tmp_path, "t", kimg=0.004))
    snap = sorted(run.glob("network-snapshot-*.pt"))[-1]
    small = checkpoint.export_bf16(snap, tmp_path / "transport.pt", keep=["G_ema", "D"])
    ck = checkpoint.load_checkpoint(small)
    assert set(ck["modules"]) == {"G_ema", "D"} and ck["step"] == 2
    with pytest.raises(UserError, match="no module"):
        checkpoint.export_bf16(snap, tmp_path / "x.pt", keep=["G_ema", "nope"])
    run2 = train(tiny_config(toy_data, tmp_path, "t2", kimg=0.006, resume=str(small)))
    assert snapshot(run2)["step"] == 3
    # a released model (G_ema alone) continues too: D starts from its initialisation
    g_only = checkpoint.export_bf16(snap, tmp_path / "release.pt", keep=["G_ema"])
    run3 = train(tiny_config(toy_data, tmp_path, "t3", kimg=0.006, resume=str(g_only)))
    assert snapshot(run3)["step"] == 3


def test_lr_warmup_wherever_adam_starts_without_its_moments(toy_data, tmp_path):
    """--lr-warmup-kimg ramps the learning rates linearly from a new run's first step and again from a resume
    off an export of the weights alone (Adam's moments start from zero); a resume with the optimizers' state
    continues the ramp where it stopped."""
    base = metrics(train(tiny_config(toy_data, tmp_path, "flat", kimg=0.004)))[0]["glr"]
    ramp = lambda run: [round(m["glr"] / base, 6) for m in metrics(run)]     # noqa: E731
    run = train(tiny_config(toy_data, tmp_path, "w", kimg=0.004, **{"lr-warmup-kimg": 0.008}))   # 4 steps of 2
    assert ramp(run) == [0.25, 0.5]
    run = train(tiny_config(toy_data, tmp_path, "w", kimg=0.012, **{"lr-warmup-kimg": 0.008}))   # moments kept
    assert run.name == "00000" and ramp(run) == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    snap = sorted(run.glob("network-snapshot-*.pt"))[-1]
    g_only = checkpoint.export_bf16(snap, tmp_path / "release.pt", keep=["G_ema"])
    run2 = train(tiny_config(toy_data, tmp_path, "w2", kimg=0.016, resume=str(g_only), **{"lr-warmup-kimg": 0.008}))
    assert ramp(run2) == [0.25, 0.5]


def test_guarded_compile_gives_frozen_and_training_module_their_own_graphs():
    """training_loop.guard_requires_grad: a module compiled while frozen (D in Gmain) gets its weight
    gradients once it trains (Dmain), and loses them again when frozen; gradients as eager."""
    from training.run.compiler import guard_requires_grad
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.LeakyReLU(0.2),
                              torch.nn.Conv2d(8, 2, 3, padding=1))
    x = torch.randn(2, 3, 8, 8)
    restore = guard_requires_grad(True)
    try:
        compiled = torch.compile(net, dynamic=False)
        for trains in (False, True, False, True):
            net.requires_grad_(trains)
            net.zero_grad(set_to_none=True)
            xi = x.clone().requires_grad_(True)
            compiled(xi).square().mean().backward()
            got = [p.grad for p in net.parameters()]
            assert xi.grad is not None
            assert all((g is not None) == trains for g in got)
            if trains:
                net.zero_grad(set_to_none=True)
                net(x).square().mean().backward()
                for g, p in zip(got, net.parameters()):
                    torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-6)
    finally:
        restore()


def test_compile_flag_trains_like_eager(toy_data, tmp_path, monkeypatch):
    """--compile, with torch.compile stood in by a pass-through that records what it wraps: G's parts are
    compiled in place (checkpoint keys unchanged; backbone and super-resolution channels-last), Gmain/Dmain
    run a compiled D with the compiled arithmetic (unfolded FIR filters, the Triton lookup, which is the
    gather lookup on a CPU), R1 runs the eager D folded; the run learns the eager run's
    weights, and the arithmetic setting is restored afterwards.  The compiled graphs are laid out
    channels-last by inductor (forced while training, restored afterwards); R1's images are channels-last."""
    from torch._inductor import config as inductor_config
    from training import networks_stylegan2 as nets
    from training import volumetric_rendering as vr
    torch.set_num_threads(1)
    det = {"no-ray-perturb": True, "no-random-views": True, "kimg": 0.008, "no-progress": True,
           "r1-interval": 2, "tv-interval": 2, "tv-points": 64}
    eager_dir = train(tiny_config(toy_data, tmp_path, "eager", **det))

    wrapped, d_calls = [], []

    class Compiled:
        def __init__(self, fn):
            self.fn = fn

        def __call__(self, *args, **kwargs):
            return self.fn(*args, **kwargs)

    caches = set()

    def fake_compile(fn=None, **kw):
        wrapped.append(getattr(fn, "__self__", fn))
        caches.add(os.environ.get("TORCHINDUCTOR_CACHE_DIR"))
        return Compiled(fn)

    real_run_D = L.run_D

    def recording_run_D(D, img, c):
        d_calls.append((isinstance(D, Compiled), is_r1_call(D, img), dict(nets.FOLD), vr.LOOKUP))
        layouts.append((is_r1_call(D, img), inductor_config.force_layout_optimization,
                        all(v.is_contiguous(memory_format=torch.channels_last) for v in img.values())))
        return real_run_D(D, img, c)

    layouts = []
    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.setattr(L, "run_D", recording_run_D)
    before = (dict(nets.FOLD), vr.LOOKUP, inductor_config.force_layout_optimization)
    env = os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)     # as in a fresh process: the run folder's cache
    try:
        compiled_dir = train(tiny_config(toy_data, tmp_path, "compiled", compile=True, **det))
        assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ          # restored when train() returns
    finally:
        if env is not None:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = env
    assert (dict(nets.FOLD), vr.LOOKUP, inductor_config.force_layout_optimization) == before
    # compiled kernels go beside the run folders, where every later run of the name finds them
    assert caches == {str(tmp_path / "compiled" / "inductor_cache")} and (tmp_path / "compiled" / "inductor_cache").is_dir()
    assert all(forced for _, forced, _ in layouts)
    assert any(r1 for r1, _, _ in layouts) and all(cl for r1, _, cl in layouts if r1)

    kinds = {getattr(m, "__name__", type(m).__name__) for m in wrapped}
    assert {"ResNetEncoder", "PatchAggregationEncoder", "TriplaneBackbone", "SuperresolutionHybrid",
            "render_field", "MaskDualDiscriminator"} <= kinds
    off = {"up": False, "down": False, "down_1x1": False}
    first = [cl for cl in d_calls if not cl[1]]         # Gmain (fakes) and Dmain
    r1 = [cl for cl in d_calls if cl[1]]
    assert first and all(comp and fold == off and lookup == "triton" for comp, _, fold, lookup in first)
    # channels-last backbone and super-resolution (G.compile_parts); "triton" is the gather lookup on a CPU
    compiled_G = [m for m in wrapped if type(m).__name__ in ("TriplaneBackbone", "SuperresolutionHybrid")]
    assert compiled_G and all(b.channels_last for m in compiled_G for b in m.modules() if hasattr(b, "channels_last"))
    assert r1 and all(not comp and all(fold.values()) for comp, _, fold, _ in r1)
    # the first step starts from the same weights: the same losses (every phase ran: R1 interval 2)
    m_eager, m_comp = metrics(eager_dir)[0], metrics(compiled_dir)[0]
    for k in ("G/loss", "G/gan", "recon/total", "D/loss", "D/r1", "G/tv"):
        assert abs(m_eager[k] - m_comp[k]) <= 1e-4 * max(1.0, abs(m_eager[k])), k
    # the first tick states the first step's time (and, compiled, the seconds spent compiling); later ones not
    assert m_comp["compiled"] and not m_eager["compiled"] and "compile_s" in m_comp and "compile_s" not in m_eager
    assert 0 < m_comp["first_step_s"] <= m_comp["sec_per_tick"] and m_eager["first_step_s"] > 0
    assert not any("first_step_s" in m for m in metrics(compiled_dir)[1:])
    # later Adam steps amplify rounding in near-zero gradients (updates of about +-lr), so the weights agree
    # within 2 lr per optimizer step (6 each: G 4 Gmain + 2 Greg, D 4 Dmain + 2 R1); the same keys
    eager, compiled = snapshot(eager_dir), snapshot(compiled_dir)
    for net in ("G", "G_ema", "D"):
        a, b = eager["modules"][net]["state_dict"], compiled["modules"][net]["state_dict"]
        assert a.keys() == b.keys()
        assert max(float((a[k].float() - b[k].float()).abs().max()) for k in a) <= 2 * 6 * 0.0025, net


def is_r1_call(D, img):
    """R1: images that need a gradient into a D that learns (G main: D frozen; D main: images detached)."""
    net = getattr(D, "fn", D)           # the pass-through compile wrapper of test_compile_flag_trains_like_eager
    return img["image"].requires_grad and next(net.parameters()).requires_grad


def test_r1_bf16_runs_the_penalty_under_autocast(toy_data, tmp_path, monkeypatch):
    """--r1-bf16 with --bf16 on: R1's D forward runs under bf16 autocast (fp32 without the flag)."""
    seen = {}
    real_run_D = L.run_D

    def recording_run_D(D, img, c):
        if is_r1_call(D, img):
            seen.setdefault(torch.is_autocast_enabled("cpu"), 0)
            seen[torch.is_autocast_enabled("cpu")] += 1
        return real_run_D(D, img, c)

    monkeypatch.setattr(L, "run_D", recording_run_D)
    torch.set_num_threads(1)
    base = {"no-ray-perturb": True, "kimg": 0.004, "no-progress": True, "r1-interval": 1, "bf16": "on"}
    train(tiny_config(toy_data, tmp_path, "r1fp32", **base))
    assert set(seen) == {False}
    seen.clear()
    run = train(tiny_config(toy_data, tmp_path, "r1bf16", **base, **{"r1-bf16": True}))
    assert set(seen) == {True}
    assert all(np.isfinite(m["D/r1"]) for m in metrics(run))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_compile_with_cuda_graphs_trains_like_eager_on_gpu(toy_data, tmp_path):
    """--compile --compile-mode reduce-overhead on a GPU (run on the device machine; CI has none): every phase
    runs under CUDA-graph trees (one step = one iteration; G's parts called again by Greg and the rendered
    views within a step), D main joined (batch 4: minibatch-std groups of 4), and the first step's losses are
    the eager run's."""
    det = {"device": "cuda", "bf16": "off", "batch": 4, "no-ray-perturb": True, "no-random-views": True,
           "kimg": 0.032, "no-progress": True, "r1-interval": 2, "tv-interval": 2, "tv-points": 64}
    eager_dir = train(tiny_config(toy_data, tmp_path, "eager_gpu", compile=False, **det))   # compiled by default
    graphs_dir = train(tiny_config(toy_data, tmp_path, "graphs_gpu", compile=True,
                                   **{"compile-mode": "reduce-overhead"}, **det))
    m_eager, m_graphs = metrics(eager_dir), metrics(graphs_dir)
    for k in ("G/loss", "G/gan", "recon/total", "D/loss", "D/r1", "G/tv"):
        assert abs(m_eager[0][k] - m_graphs[0][k]) <= 1e-2 * max(1.0, abs(m_eager[0][k])), k
    assert m_graphs[-1]["step"] == 8 and m_graphs[-1]["nan_skips"] == 0
    assert all(np.isfinite(v) for m in m_graphs for v in m.values() if isinstance(v, float))


def test_bad_compile_mode_fails_before_work(toy_data, tmp_path, capsys):
    import dataclasses
    cfg = dataclasses.replace(tiny_config(toy_data, tmp_path, "badmode", compile=True), compile_mode="fast")
    with pytest.raises(UserError, match="--compile-mode 'fast'"):
        train(cfg)                              # a config from a file or from code
    assert not any(tmp_path.iterdir())         # no run directory started
    with pytest.raises(SystemExit):             # the command line lists the choices
        tiny_config(toy_data, tmp_path, "badmode", **{"compile-mode": "fast"})
    assert "invalid choice: 'fast'" in capsys.readouterr().err


def test_compile_is_the_default_on_cuda_only(toy_data, tmp_path, monkeypatch):
    """--compile unset: compiled when training on CUDA, eager on a CPU (a CPU run never calls torch.compile);
    --compile / --no-compile win on either."""
    from training.run.compiler import resolve_compile
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    unset = tiny_config(toy_data, tmp_path, "c")
    assert unset.compile is None and resolve_compile(unset, cuda) and not resolve_compile(unset, cpu)
    off, on = tiny_config(toy_data, tmp_path, "c", compile=False), tiny_config(toy_data, tmp_path, "c", compile=True)
    assert not resolve_compile(off, cuda) and resolve_compile(on, cpu)

    def no_compile(*args, **kwargs):
        raise AssertionError("torch.compile called in a CPU run without --compile")

    monkeypatch.setattr(torch, "compile", no_compile)
    (rec,) = metrics(train(unset))
    assert rec["compiled"] is False and "compile_s" not in rec


def test_snapshot_of_other_settings_names_them(tmp_path):
    """A snapshot whose G was built with other settings (here a run from before superresolution_noise_mode,
    which trained with noise in the super-resolution) fails to load with the settings that differ named."""
    from training.run.snapshots import load_snapshot
    from training.triplane import build_preset
    old = build_preset("tiny", variant="TriPlaneGenerator", rendering_kwargs={"superresolution_noise_mode": "random"})
    old.config["rendering_kwargs"].pop("superresolution_noise_mode")      # as saved before the key existed
    path = tmp_path / "network-snapshot-000001.pt"
    checkpoint.save_checkpoint(path, {"G": old}, step=1, kimg=0.0)
    now = build_preset("tiny", variant="TriPlaneGenerator")
    with pytest.raises(UserError, match=r"G does not match .*rendering_kwargs\.superresolution_noise_mode: "
                                        r"'random' -> 'none'"):
        load_snapshot(path, {"G": now}, {}, torch.device("cpu"))
    load_snapshot(path, {"G": build_preset("tiny", variant="TriPlaneGenerator", rendering_kwargs={
        "superresolution_noise_mode": "random"})}, {}, torch.device("cpu"))       # the same settings load
