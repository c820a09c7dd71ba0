"""Start-up of a training run: impossible values, a generator framed unlike the data and a configuration that
does not fit in memory are refused in one line before anything is written; set-up scripts find the venv."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.test_training import TINY_D, TINY_G, tiny_args, tiny_config, toy_data  # noqa: F401 (fixture)
from training.run import memory
from training.errors import UserError
from training.training_loop import train

REPO = Path(__file__).resolve().parent.parent


def _cli(args, env=None):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "_train.eg3dc.train", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("flag,value,match", [
    ("batch", 0, "--batch 0: expected at least 1"),
    ("kimg", -1, "--kimg -1.0: expected more than 0"),
    ("tick-kimg", 0, "--tick-kimg 0.0: expected more than 0"),
    ("mirror-prob", 1.5, r"--mirror-prob 1.5: expected in \[0, 1\]"),
    ("glr", "nan", "--glr nan: not a finite number"),
    ("workers", -2, "--workers -2: expected at least 0"),
    ("snap-keep", -1, "--snap-keep -1: expected at least 0"),
    ("snap-keep-best", "val/psnr_side", "--snap-keep-best val/psnr_side: needs a held-out metric"),
    ("snap-keep-best", "ray/psnr", "--snap-keep-best ray/psnr: needs a held-out metric"),
    ("l1-weight", -4, "--l1-weight -4.0: expected at least 0"),
    ("tv-points", 0, "--tv-points 0: expected at least 1"),
    ("view-weights", "front=1,top=1", "top not among --ortho-views"),
])
def test_impossible_values_are_one_line_errors(toy_data, tmp_path, flag, value, match):  # noqa: F811
    with pytest.raises(UserError, match=match):
        train(tiny_config(toy_data, tmp_path, "bad", **{flag: value}))
    assert not (tmp_path / "bad").exists()


def test_batch_zero_on_the_command_line(toy_data, tmp_path):  # noqa: F811
    r = _cli(tiny_args(toy_data, tmp_path, "zero", batch=0))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines() == ["error: --batch 0: expected at least 1"]


def test_generator_framing_must_match_the_renders(toy_data, tmp_path):  # noqa: F811
    head = json.dumps(dict(TINY_G, framing="head"))       # the toy renders are body framing
    with pytest.raises(UserError, match="rendered with body framing but the generator is built for head"):
        train(tiny_config(toy_data, tmp_path, "framing", **{"g-kwargs": head}))
    assert not (tmp_path / "framing").exists()


def test_failed_start_leaves_no_run_folder_and_takes_no_number(toy_data, tmp_path):  # noqa: F811
    run = train(tiny_config(toy_data, tmp_path, "n", **{"resume": "none"}))
    assert run.name == "00000"
    with pytest.raises(UserError, match="--d-kwargs"):        # fails after the run folder was chosen
        train(tiny_config(toy_data, tmp_path, "n", **{"resume": "none", "d-kwargs": '{"nope": 1}'}))
    assert sorted(p.name for p in (tmp_path / "n").iterdir()) == ["00000"]
    assert train(tiny_config(toy_data, tmp_path, "n", **{"resume": "none"})).name == "00001"


# ------------------------------------------------------------------ memory

def test_memory_check_refuses_with_the_estimate_and_a_batch_that_fits(toy_data, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cfg = tiny_config(toy_data, tmp_path, "mem", batch=4)
    from training.training_loop import build_dataset
    from training.dataset import collate
    sample = collate([build_dataset(cfg)[0]])
    cpu = torch.device("cpu")
    p1, p4 = memory.cached_probe(cfg, sample, 1, cpu), memory.cached_probe(cfg, sample, 4, cpu)   # cached:
    assert (tmp_path / "cache" / "anime3d" / "memory_probe.json").is_file()                      # train() reuses
    assert p4 > p1 > 0
    f = memory.PROBE_FACTOR["cpu"]
    extra = memory.resident() + memory.RUNTIME_OVERHEAD["cpu"]    # workers 0
    p1, p4 = f * p1, f * p4
    per_image = (p4 - p1) / 3
    # room for 2 images per step, not 4
    avail = int((extra + p1 + 1.5 * per_image) / memory.FIT_FRACTION)
    monkeypatch.setattr(memory, "available", lambda device: (avail, "RAM available"))
    monkeypatch.setattr(memory, "rough_bound", lambda cfg, b: avail)      # too close to skip the probe
    monkeypatch.setattr(memory, "probe_step", lambda *a, **k: pytest.fail("probed again"))
    with pytest.raises(UserError) as e:
        train(cfg)
    msg = str(e.value)
    assert msg.startswith("--batch 4: this configuration needs about ") and "RAM available" in msg
    assert "--batch 2 fits" in msg and "\n" not in msg, msg
    assert not (tmp_path / "mem").exists()
    monkeypatch.setattr(memory, "probe_step", lambda *a, **k: pytest.fail("probed again"))
    with pytest.raises(UserError, match="--batch 2 fits"):      # the cached probes: no probe at all
        train(cfg)
    # --no-memory-check trusts the user
    assert train(tiny_config(toy_data, tmp_path, "mem", batch=4, **{"no-memory-check": True})).name == "00000"


_MEASURE = r"""
import json, sys, torch
from training.run import distributed, memory, train_step
from training import training_loop
from training.dataset import collate
from training.loss import ReconGANLoss
from tests.test_training import tiny_config
def hwm():
    return int([l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]) * 1024
torch.set_num_threads(1)
torch.set_flush_denormal(True)
cfg = tiny_config(sys.argv[1], sys.argv[2], "m", batch=2)
ds = training_loop.build_dataset(cfg)
batch = collate([ds[0], ds[1]])
before = memory.resident()
G, D = train_step.build_networks(cfg)
import copy; G_ema = copy.deepcopy(G)
lc = cfg.loss
opt_G = train_step.make_optimizer(G.parameters(), cfg.glr, cfg, lc.tv_interval)
opt_D = train_step.make_optimizer(D.parameters(), cfg.dlr, cfg, lc.r1_interval)
G.requires_grad_(False); D.requires_grad_(False)
loss = ReconGANLoss(G, D, lc, box=2.1, use_mask_d=train_step.use_mask_discriminator(D), ortho_views=ds.ortho_views)
for name, m, opt in (("Gmain", G, opt_G), ("Greg", G, opt_G), ("Dmain", D, opt_D), ("Dreg", D, opt_D)):
    m.requires_grad_(True); opt.zero_grad(set_to_none=True)
    if loss.accumulate_gradients(name, batch, gain=1, step=0, cur_nimg=0) is not None:
        distributed.guarded_step(opt, list(m.parameters()), distributed.Dist())
    m.requires_grad_(False)
train_step.update_ema(G_ema, G, 0.5)
print(json.dumps({"measured": hwm() - before}))
"""


def test_estimate_agrees_with_a_measured_step(toy_data, tmp_path):  # noqa: F811
    """A real step's peak resident memory (above the process's memory before it) against the estimate
    (probe + the CPU runtime overhead): the formula the refusal uses, checked on this machine."""
    r = subprocess.run([sys.executable, "-c", _MEASURE, str(toy_data), str(tmp_path)], cwd=REPO, capture_output=True,
                       text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    measured = json.loads(r.stdout.strip().splitlines()[-1])["measured"]
    from training.dataset import collate
    from training.training_loop import build_dataset
    cfg = tiny_config(toy_data, tmp_path, "m", batch=2)
    probe = memory.probe_step(cfg, collate([build_dataset(cfg)[0]]), 2, torch.device("cpu"))["peak"]
    assert 0.25 * measured < probe < measured                  # the probe sees tensors only: below, not far
    est = memory.PROBE_FACTOR["cpu"] * probe + memory.RUNTIME_OVERHEAD["cpu"]
    # above (a refusal errs on the safe side), by at most 2x plus the constant runtime overhead: at this tiny
    # size the constant dominates, and the allocator's high-water mark varies from machine to machine
    assert measured < est < 2 * measured + memory.RUNTIME_OVERHEAD["cpu"], (measured, probe, est)


def test_rough_bound_skips_the_probe_only_far_below_the_memory(toy_data, tmp_path, monkeypatch):  # noqa: F811
    cfg = tiny_config(toy_data, tmp_path, "rough", batch=2)
    from training.dataset import collate
    from training.training_loop import build_dataset
    sample = collate([build_dataset(cfg)[0]])
    probe = memory.probe_step(cfg, sample, 2, torch.device("cpu"))["peak"]
    assert memory.rough_bound(cfg, 2) > probe          # a bound: it may skip the probe safely
    monkeypatch.setattr(memory, "available", lambda device: (10 * 2 ** 40, "RAM available"))
    monkeypatch.setattr(memory, "probe_step", lambda *a, **k: pytest.fail("probed a tiny run"))
    assert not memory.estimate(cfg, sample, 2, torch.device("cpu")).probed


# ------------------------------------------------------------------ the documented set-up

def _clean_env(**kw):
    return {"HOME": os.environ.get("HOME", "/root"), "PATH": "/usr/bin:/bin", **kw}


@pytest.mark.skipif(not (REPO / ".venv" / "bin" / "python").exists(), reason="needs the project's .venv")
def test_load_sh_activates_the_venv():
    """README: `source _env/load.sh; python -m _scripts...` from a plain shell finds torch."""
    r = subprocess.run(["bash", "-c", "source _env/load.sh && python -c 'import torch, sys; print(sys.prefix)'"],
                       cwd=REPO, env=_clean_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()).resolve() == (REPO / ".venv").resolve()


@pytest.mark.skipif(not (REPO / ".venv" / "bin" / "python").exists(), reason="needs the project's .venv")
def test_launchers_find_the_venv_and_say_when_torch_is_missing():
    r = subprocess.run(["_configs/panic_head/train_1gpu.sh", "--help"], cwd=REPO, env=_clean_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("usage: python -m _train.eg3dc.train"), r.stderr
    no_torch = subprocess.run(["_configs/launch.sh", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120,
                              env=_clean_env(PYTHON="/usr/bin/python3", VIRTUAL_ENV="/nowhere"))
    if no_torch.returncode == 0:
        pytest.skip("/usr/bin/python3 has torch here")
    assert no_torch.returncode == 2 and "cannot import torch; run make/setup" in no_torch.stderr
