"""2-process gloo training (torchrun, DistributedDataParallel) takes the same step as 1 process with the
same global batch."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from tests.test_training import REPO, tiny_args, toy_data  # noqa: F401  (fixture)
from _train.eg3dc.train import config_from_args
from training import checkpoint
from training.training_loop import train

# Deterministic tiny run of one step in which every phase runs (Gmain, Greg, Dmain, Dreg):
# no ray jitter, fixed perspective view, no mirroring, no minibatch-std (its groups depend on the
# per-process batch), BatchNorm frozen (default).  Adam's eps is raised so a first step is a smooth
# function of the gradient (with eps 1e-8 it is lr * sign(g), where summation-order rounding flips
# the sign of near-zero gradients).
DET = {"no-ray-perturb": True, "no-random-views": True, "r1-interval": 1, "tv-interval": 1, "tv-points": 64,
       "batch": 4, "kimg": 0.004, "tick-kimg": 0.004, "eps": 1e-3, "no-progress": True,
       "view-weights": "front=1,back=1", "discriminator": "MaskDualDiscriminator"}
D_KW = {"channel_base": 256, "channel_max": 32, "mapping_layers": 1, "mbstd_num_channels": 0}
# StyleGAN noise inputs are drawn from each process's own RNG; their strengths start at 0, so they do
# not change the step's outputs, but the strengths' own gradients depend on the draws
SKIP = ("noise_strength",)


def _run(cmd, env_extra=None):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env_extra or {})}
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout + r.stderr


def _final(runs, name):
    snaps = sorted((runs / name / "00000").glob("network-snapshot-*.pt"))
    assert snaps
    return checkpoint.load_checkpoint(snaps[-1])


def _max_diff(a, b, net):
    sa, sb = a["modules"][net]["state_dict"], b["modules"][net]["state_dict"]
    assert sa.keys() == sb.keys()
    return max(float((sa[k].float() - sb[k].float()).abs().max()) for k in sa
               if not any(s in k for s in SKIP) and sa[k].is_floating_point())


def test_two_process_gloo_step_equals_one_process(toy_data, tmp_path):  # noqa: F811
    a1 = tiny_args(toy_data, tmp_path, "one", **DET, **{"d-kwargs": json.dumps(D_KW)})
    a2 = tiny_args(toy_data, tmp_path, "two", **DET, **{"d-kwargs": json.dumps(D_KW)})
    half = tiny_args(toy_data, tmp_path, "half", **{**DET, "batch": 2, "kimg": 0.002, "tick-kimg": 0.002},
                     **{"d-kwargs": json.dumps(D_KW)})
    torch.set_num_threads(1)
    train(config_from_args(a1))                                 # in-process: saves an interpreter start
    out = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "_train.eg3dc.train", *a2])
    assert "2 process(es) on cpu, batch 4 (2 per process)" in out
    # the gradients were averaged by DDP's reducer (G finds Greg's unused super-resolution parameters)
    assert "DistributedDataParallel: G find_unused_parameters=True, D find_unused_parameters=False" in out
    assert out.count("run folder:") == 1                       # only rank 0 reports and writes
    train(config_from_args(half))
    one, two, other = _final(tmp_path, "one"), _final(tmp_path, "two"), _final(tmp_path, "half")
    assert one["step"] == two["step"] == 1 and two["kimg"] == pytest.approx(0.004)
    assert two["extra"]["nan_skips"] == 0
    for net in ("G", "D", "G_ema"):
        print(f"{net}: max |1 process - 2 processes| = {_max_diff(one, two, net):.2e}, "
              f"max |batch 4 - batch 2| = {_max_diff(one, other, net):.2e}")
        # 1e-4 (4 % of lr): summation order moves near-cancelling gradients, e.g. _v1's direction query at
        # initialisation, whose halves from the two ranks almost cancel (3.3e-5 there, 3e-7 elsewhere)
        assert _max_diff(one, two, net) < 1e-4, net
    # the tolerance is meaningful: half of the same batch (rank 0's share alone) moves G and D elsewhere
    assert _max_diff(one, other, "G") > 1e-3 and _max_diff(one, other, "D") > 1e-3
    # and only rank 0 wrote: one run folder, no files from rank 1
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["00000"]


def check_grads(params, d) -> bool:
    """training_loop.nonfinite_flag read on the host: True if every gradient is finite on every rank."""
    from training.run.distributed import nonfinite_flag
    return float(nonfinite_flag(params, d)) == 0.0


def test_grad_check_and_nan_guard():
    """Single-process semantics of the gradient check: NaN/Inf anywhere -> flag 1 (the step is skipped)."""
    from training.run.distributed import Dist
    p = torch.nn.Parameter(torch.ones(3))
    q = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.tensor([1.0, 2.0, 3.0])
    q.grad = None                                  # unused parameter: zeros, not an error
    assert check_grads([p, q], Dist())
    assert torch.equal(q.grad, torch.zeros(2)) and torch.equal(p.grad, torch.tensor([1.0, 2.0, 3.0]))
    p.grad = torch.tensor([1.0, float("nan"), 3.0])
    assert not check_grads([p, q], Dist())
    p.grad = torch.tensor([1.0, float("inf"), 3.0])
    assert not check_grads([p, q], Dist())


@pytest.mark.parametrize("fused", [True, False])
def test_guarded_step_skips_nonfinite_steps_like_no_step(fused):
    """guarded_step: a NaN/Inf gradient leaves weights, Adam's moments and step count as if step() had not
    been called (fused Adam: on the device through found_inf; others: on the host); finite steps update as
    step() does.  The fused path is the one the trainer uses (adam() fuses on CPUs and GPUs)."""
    from training.run.distributed import Dist, guarded_step
    from training.run.train_step import adam
    p, ref = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    opt = adam([p], 0.1, (0.0, 0.99), 1e-8) if fused else torch.optim.Adam([p], 0.1, (0.0, 0.99), 1e-8)
    opt_ref = torch.optim.Adam([ref], 0.1, (0.0, 0.99), 1e-8)
    assert bool(opt.defaults["fused"]) == fused
    for g in ([1.0, 2.0, 3.0], [1.0, float("nan"), 3.0], [-1.0, 0.5, float("inf")], [0.5, -2.0, 1.0]):
        p.grad = torch.tensor(g)
        flag = guarded_step(opt, [p], Dist())
        finite = all(math.isfinite(v) for v in g)
        assert flag.shape == () and float(flag) == (0.0 if finite else 1.0)
        if finite:
            ref.grad = torch.tensor(g)
            opt_ref.step()
        torch.testing.assert_close(p.detach(), ref.detach())
        for k in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(opt.state[p][k], opt_ref.state[ref][k].to(opt.state[p][k]))
    assert float(opt.state[p]["step"]) == 2


def _nan_on_one_rank(rank, init_file, results):
    import torch.distributed as dist
    from training.run.distributed import Dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        p = torch.nn.Parameter(torch.ones(2))
        p.grad = torch.tensor([1.0, float("nan") if rank == 1 else 2.0])
        finite_only = torch.nn.Parameter(torch.ones(2))
        finite_only.grad = torch.ones(2)
        results[rank] = (check_grads([p], Dist(rank, 2)), check_grads([finite_only], Dist(rank, 2)))
    finally:
        dist.destroy_process_group()


def test_nan_guard_agrees_across_ranks(tmp_path):
    """A NaN on rank 1 only makes both ranks skip the step (the ranks' parameters never diverge)."""
    import torch.multiprocessing as mp
    results = mp.Manager().dict()
    mp.spawn(_nan_on_one_rank, args=(str(tmp_path / "pg"), results), nprocs=2, join=True)
    assert dict(results) == {0: (False, True), 1: (False, True)}
