"""Model benchmark: the trainer's own training step at a training recipe, timed back to back (images/s, peak
memory, compile time, FLOPs, MFU), and the networks alone (forward, forward+backward, batch-1 inference,
mesh extraction).

    python -m _scripts.bench.models                                   # CPU: recipe 'tiny', eager
    python -m _scripts.bench.models --config eg3d_ffhq512 --train-only --compile both --r1-bf16 both --json a.json
    python -m _scripts.bench.models --config release/nova_v1 --train-only --compile both --json b.json
    python -m _scripts.bench.models --config nova_body --train-only --compile both --r1-bf16 both --json c.json
    python -m _scripts.bench.models --config eg3d_ffhq512 --batch 1 --networks-only --compile-infer --mesh-res 256

The step is training.run.train_step.TrainStep, the object training_loop.train() runs: the recipe's phases on their
intervals (Gmain with its reconstruction renders and ray patches, Greg, Dmain, Dreg), requires_grad
toggling, the NaN/Inf guard, fused Adam and the EMA update, compiled as the trainer compiles it.  Every
trainer flag is accepted (--config RECIPE, --batch, --preset, --g-kwargs, --ray-views, ...) and builds the
TrainConfig the trainer would build; the benchmark's own flags sweep --compile, --bf16, --r1-bf16 and
--nr, one configuration per combination.  Batches are synthetic by default (the dataset's keys and shapes,
ray patches included, copied to the device inside the step loop as the trainer copies them) or, with
--data real, come from the trainer's data loader (then also timed alone).  Weights are random unless
--pretrained: the speed does not depend on them.  FLOPs are counted on one eager step with the
configuration's arithmetic (torch.utils.flop_counter: matmul/conv only, so MFU is a lower bound).
Each configuration catches CUDA out-of-memory ({"error": "OOM"}) and goes on; --json is rewritten after
every configuration.

One script of about 1000 lines: the measurement method (timing, FLOP counting, sweeps, the networks-alone
and mesh timings, the summary) is the benchmark's own and is read as one; the step it times is the
library's (training.run.train_step), not a copy.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import math
import os
import platform
import resource
import time
import traceback

import numpy as np
import torch

from _train.eg3dc import train as train_cli
from training import cameras, configs
from training.run import compiler, distributed, train_step
from training import training_loop
from training.errors import UserError, cli_main, save_json_atomic

FLOPS_NOTE = ("matmul/conv FLOPs only (torch.utils.flop_counter.FlopCounterMode): grid_sample, elementwise "
              "ops, normalisations and sorting are not counted, so MFU is a lower bound")
# dense (no sparsity) bf16 tensor-core peaks, matched in order against torch.cuda.get_device_name()
PEAK_BF16 = [("H200", 989.4e12, "H200 dense bf16"),
             ("H100 PCIE", 756e12, "H100 PCIe dense bf16"),
             ("H100 NVL", 835e12, "H100 NVL dense bf16"),
             ("H100", 989.4e12, "H100 SXM/HBM3 dense bf16"),
             ("A100", 312e12, "A100 dense bf16")]
D_SIZES = {"tiny": dict(channel_base=256, channel_max=32)}      # build_D (the part benchmarks of variants.py)
# trainer fields the benchmark sweeps with flags of its own
SWEPT = ("compile", "bf16", "r1_bf16", "neural_rendering_resolution")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m _scripts.bench.models", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="recipes (--config NAME): " + ", ".join(configs.recipes()))
    b = p.add_argument_group("benchmark")
    b.add_argument("--compile", dest="sweep_compile", nargs="?", const="on", default="auto",
                   choices=["auto", "on", "off", "both"],
                   help="the trainer's compiled path (G.compile_parts + compiled D for Gmain/Dmain): on (no value), "
                   "off, both (eager first), auto (default: as the trainer, on for CUDA, off on a CPU)")
    b.add_argument("--bf16", dest="sweep_bf16", default=None, choices=["auto", "on", "off", "both"],
                   help="bf16 autocast of Gmain/Dmain (default: the recipe's; auto = on for CUDA)")
    b.add_argument("--r1-bf16", dest="sweep_r1_bf16", nargs="?", const="on", default=None,
                   choices=["on", "off", "both"],
                   help="R1 (Dreg) under bf16 autocast when bf16 is on: on (no value), off, both (default: the "
                   "recipe's; the trainer's default is fp32)")
    b.add_argument("--nr", type=int, nargs="*", default=None,
                   help="neural rendering resolution(s) (default: the generator's own)")
    b.add_argument("--samples", type=int, nargs=2, default=None, metavar=("COARSE", "FINE"),
                   help="depth_resolution and depth_resolution_importance (merged into --g-kwargs' "
                   "rendering_kwargs; default: the preset's)")
    b.add_argument("--data", default="synthetic", choices=["synthetic", "real"],
                   help="synthetic batches with the dataset's keys and shapes (default), or the trainer's data "
                   "loader over --data-root/--renderset/--dataset (then also timed alone)")
    b.add_argument("--pretrained", action="store_true",
                   help="load the recipe's pretrained weights (ImageNet encoder, LPIPS backbone) from the torch hub "
                   "cache; default: random weights of the same shapes")
    b.add_argument("--steps", type=int, default=None,
                   help="timed steps, rounded up to whole cycles of the phases' intervals (default: one cycle)")
    b.add_argument("--warmup", type=int, default=None,
                   help="untimed steps after the first one (default 1 on a CPU, 3 on CUDA: CUDA graphs record)")
    b.add_argument("--train-only", action="store_true",
                   help="only the training step (not the networks alone: compiles only the training graphs)")
    b.add_argument("--networks-only", action="store_true",
                   help="only the networks alone: G/D forward (+backward), batch-1 inference, mesh")
    b.add_argument("--phase-times", action="store_true",
                   help="also time each phase of one more cycle on its own (synchronising between phases)")
    b.add_argument("--parts", action="store_true",
                   help="also time forward+backward of G's parts: encoder, synthesize (encoder + backbone), "
                   "render (planes -> raw image, no super-resolution), super-resolution")
    b.add_argument("--compile-infer", nargs="?", const="reduce-overhead", default=None, choices=compiler.COMPILE_MODES,
                   metavar="MODE", help="also time batch-1 inference with the whole eval forward compiled "
                   "(MODE default reduce-overhead = CUDA graphs)")
    b.add_argument("--mesh-res", type=int, default=None,
                   help="time density grid + marching cubes at this resolution, once per run (first configuration); "
                   "0 = off (default: 256 on CUDA, off on CPU)")
    b.add_argument("--mesh-level", default="0.5",
                   help="occupancy level for marching cubes: a number (infer.py's default 0.5) or 'median' "
                   "(the grid's median occupancy: gives a surface even for untrained networks)")
    b.add_argument("--peak-tflops", type=float, default=None,
                   help="peak dense bf16 TFLOP/s for MFU (default: from the GPU name; CPU: none, MFU n/a)")
    b.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    b.add_argument("--profile", action="store_true",
                   help="print the top kernels of one training step and of the R1 phase (and of G forward+backward "
                   "unless --train-only)")
    b.add_argument("--profile-trace", default=None, metavar="FILE.json.gz",
                   help="with --profile: write the training step's chrome trace there (gzipped)")
    b.add_argument("--gpu-lock", default=None, metavar="FILE",
                   help="hold an exclusive lock on FILE while timing the step (after its first, compiling, step): "
                   "benchmarks run side by side compile together and time one at a time")
    b.add_argument("--gpu-lock-peers", type=int, default=1, metavar="N",
                   help="with --gpu-lock: N benchmarks side by side; each waits (up to 10 min) until all N have "
                   "compiled before timing, so that no first step (compiling, autotuning) runs beside a timing")
    b.add_argument("--json", default=None, help="write the results here (a list, one entry per configuration)")
    train_cli.build_parser(p, skip=SWEPT)       # the trainer's flags: --config, --batch, --preset, ...
    a = p.parse_args(argv)
    if a.mesh_level != "median":
        try:
            float(a.mesh_level)
        except ValueError:
            p.error(f"--mesh-level: {a.mesh_level!r} is neither a number nor 'median'")
    if a.train_only and a.networks_only:
        p.error("--train-only and --networks-only exclude each other")
    return a


# ---------------------------------------------------------------- configurations

def base_config(a, device) -> training_loop.TrainConfig:
    """The TrainConfig the trainer builds from the same flags; the CPU default recipe is 'tiny', else
    'eg3d_ffhq512'.  Random weights unless --pretrained; --samples into the generator's rendering_kwargs."""
    if a.config is None:
        a.config = "tiny" if device.type == "cpu" else "eg3d_ffhq512"
    cfg = train_cli.config_from_namespace(a)
    g_kwargs = dict(cfg.g_kwargs)
    if a.samples:
        rk = dict(g_kwargs.get("rendering_kwargs") or {})
        rk.update(depth_resolution=a.samples[0], depth_resolution_importance=a.samples[1])
        g_kwargs["rendering_kwargs"] = rk
    loss = cfg.loss
    if not a.pretrained:
        if "encoder_weights" in g_kwargs:
            g_kwargs["encoder_weights"] = None
        loss = dataclasses.replace(loss, lpips_random_init=True)
    return dataclasses.replace(cfg, g_kwargs=g_kwargs, loss=loss, device=device.type)


def _modes(flag: str | None, recipe_value):
    return {"on": [True], "off": [False], "both": [False, True]}.get(flag, [recipe_value])


def configurations(a, cfg: training_loop.TrainConfig, device) -> list[training_loop.TrainConfig]:
    """One TrainConfig per (nr, bf16, R1 precision, compile): eager before compiled, so that a run cut short
    keeps the quicker results; R1's precision only where a GAN with R1 runs and bf16 is on."""
    bf16s = ({"on": ["on"], "off": ["off"], "both": ["off", "on"], "auto": ["auto"]}[a.sweep_bf16]
             if a.sweep_bf16 else [cfg.bf16])
    compiles = {"auto": [None], "on": [True], "off": [False], "both": [False, True]}[a.sweep_compile]
    out = []
    for nr in a.nr or [cfg.neural_rendering_resolution]:
        for bf16 in bf16s:
            on = train_step.resolve_bf16(dataclasses.replace(cfg, bf16=bf16), device)
            r1s = _modes(a.sweep_r1_bf16, cfg.loss.r1_bf16) if on and train_step.uses_r1(cfg.loss) else [False]
            for r1 in r1s:
                for comp in compiles:
                    out.append(dataclasses.replace(cfg, neural_rendering_resolution=nr or 0, bf16=bf16,
                                                   compile=comp, loss=dataclasses.replace(cfg.loss, r1_bf16=r1)))
    return out


# ---------------------------------------------------------------- batches

def synthetic_batch(cfg: training_loop.TrainConfig, G, index: int, generator: torch.Generator | None = None) -> dict:
    """A batch with the keys, shapes and dtypes of training.dataset.CharacterDataset + collate for ``cfg``
    (renders assumed at --resolution, else the generator's output size): random images, an ellipse as each
    character's silhouette, the dataset's cameras (ortho views of --ortho-views, random perspective views)
    and, with --ray-views > 0, ray patches (RaySampling's ray_rgb/alpha/xyz/uv/cam) at pixel strides of
    --ray-scales.  ``index`` names the samples (per-sample noise of the loss is drawn from the ids)."""
    g = generator or torch.Generator().manual_seed(index)
    B = cfg.batch
    S = cfg.resolution or G.img_resolution
    cs = cfg.cond_resolution or S
    fr = cameras.get_framing(G.framing)
    ortho = {v.name: v for v in cameras.view_set("ortho", fr)}
    views = tuple(v.strip() for v in cfg.ortho_views.split(",") if v.strip())
    ids = [f"synthetic{index:05d}_{i:03d}" for i in range(B)]

    def rand(*shape):
        return torch.rand(*shape, generator=g)

    def silhouette(n, size):           # [n,1,size,size] in {0,1}: an ellipse around a jittered centre
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
        c = (rand(n, 2, 1, 1) - 0.5) * 0.4
        r = 0.3 + 0.4 * rand(n, 2, 1, 1)
        inside = ((xx - c[:, :1]) / r[:, :1]).square() + ((yy - c[:, 1:]) / r[:, 1:]).square() < 1
        return inside.float()

    def on_white(n, size, alpha):
        return (rand(n, 3, size, size) * alpha + (1 - alpha)) * 2 - 1

    out = {"id": ids, "mirrored": torch.zeros(B, dtype=torch.bool), "box": torch.full((B,), float(fr.box))}
    for v in ("front", "back"):
        m = silhouette(B, cs)
        out[f"cond_{v}"] = on_white(B, cs, m)
        out[f"cond_{v}_mask"] = m
    V = len(views)
    a = silhouette(B * V, S)
    out["ortho_rgb"] = on_white(B * V, S, a).reshape(B, V, 3, S, S)
    out["ortho_alpha"] = a.reshape(B, V, 1, S, S)
    out["ortho_xyz"] = ((rand(B * V, 3, S, S) - 0.5) * fr.box * a).reshape(B, V, 3, S, S)
    out["ortho_cam"] = cameras.as_tensor([ortho[v] for v in views])[None].expand(B, V, 25).contiguous()
    m = silhouette(B, S)
    out["rgb"] = on_white(B, S, m)
    out["rgb_mask"] = m
    out["rgb_cam"] = cameras.as_tensor([cameras.view_set("rgb", fr, char_id=i)[int(k)]
                                        for i, k in zip(ids, torch.randint(cameras.N_RANDOM_VIEWS, (B,),
                                                                           generator=g))])
    if cfg.use_features:
        raise UserError("--use-features: synthetic batches hold no encoder features; benchmark with --data real")
    if cfg.ray_views > 0:
        out.update(synthetic_rays(cfg, fr, ids, S, g))
    return out


def synthetic_rays(cfg: training_loop.TrainConfig, fr, ids, S: int, g: torch.Generator) -> dict:
    """RaySampling's keys: M = ray_views x ray_patches patches of P x P pixels per character, each at a pixel
    stride drawn from --ray-scales (those that fit the render, as dataset.sample_patches), from ortho and
    random perspective cameras."""
    B, M = len(ids), cfg.ray_views * cfg.ray_patches
    P = min(cfg.ray_patch_size, S)
    try:
        scales = [k for k in (int(t) for t in cfg.ray_scales.split(",") if t.strip()) if P * k <= S]
    except ValueError:
        raise UserError(f"--ray-scales: expected comma-separated integers, got {cfg.ray_scales!r}") from None
    scales = scales or [max(S // P, 1)]
    pool = [v for v in cameras.view_set("ortho", fr) if v.name != "top"]
    uv, cams = [], []
    for i in ids:
        pool_i = pool + cameras.view_set("rgb", fr, char_id=i)
        for view in torch.randperm(len(pool_i), generator=g)[:cfg.ray_views].tolist():
            for _ in range(cfg.ray_patches):     # the view's patches share its camera, as in the dataset
                k = scales[int(torch.randint(len(scales), (), generator=g))]
                n = S // k
                y0, x0 = (int(torch.randint(n - P + 1, (), generator=g)) for _ in range(2))
                vv, uu = torch.meshgrid(torch.arange(y0, y0 + P, dtype=torch.float32),
                                        torch.arange(x0, x0 + P, dtype=torch.float32), indexing="ij")
                uv.append(torch.stack([(uu.reshape(-1) + 0.5) / n, (vv.reshape(-1) + 0.5) / n], -1))
                cams.append(pool_i[view])
    alpha = (torch.rand(B, M, 1, P, P, generator=g) > 0.3).float()
    out = {"ray_rgb": (torch.rand(B, M, 3, P, P, generator=g) * alpha + (1 - alpha)) * 2 - 1,
           "ray_alpha": alpha,
           "ray_xyz": (torch.rand(B, M, 3, P, P, generator=g) - 0.5) * fr.box * alpha,
           "ray_uv": torch.stack(uv).reshape(B, M, P * P, 2),
           "ray_cam": cameras.as_tensor(cams).reshape(B, M, 25)}
    if cfg.loss.ray_depth_weight <= 0:          # the dataset loads surface points only for the depth term
        del out["ray_xyz"]
    return out


class SyntheticBatches:
    """An endless iterator over ``n`` distinct synthetic batches (pinned host memory on CUDA, so that the
    step loop's copy to the device is the trainer's non-blocking copy)."""

    def __init__(self, cfg, G, device, n: int = 4):
        self.items = [synthetic_batch(cfg, G, i) for i in range(n)]
        if device.type == "cuda":
            self.items = [{k: (v.pin_memory() if torch.is_tensor(v) else v) for k, v in b.items()}
                          for b in self.items]
        self.i = 0

    def __iter__(self):
        return self

    def __next__(self):
        self.i += 1
        return self.items[(self.i - 1) % len(self.items)]


# ---------------------------------------------------------------- timing

class Clock:
    """Wall time of a callable (synchronised on CUDA) and peak memory over the runs."""

    def __init__(self, device):
        self.device = device

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def reset_peak(self):
        self.sync()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()

    def peak_gib(self):
        peak = (torch.cuda.max_memory_allocated() if self.device.type == "cuda"
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        return peak / 2 ** 30

    def seconds(self, fn):
        self.sync()
        t = time.perf_counter()
        out = fn()
        self.sync()
        return time.perf_counter() - t, out

    def mark(self):
        """A point on the device's timeline (a recorded CUDA event; the wall clock on a CPU), no sync."""
        if self.device.type == "cuda":
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def between(self, marks) -> list[float]:
        """Seconds between consecutive marks (synchronises once)."""
        self.sync()
        if self.device.type == "cuda":
            return [a.elapsed_time(b) / 1000 for a, b in zip(marks, marks[1:])]
        return [b - a for a, b in zip(marks, marks[1:])]

    def __call__(self, fn, steps, warmup):
        for _ in range(warmup):
            fn()
        self.reset_peak()
        times = [self.seconds(fn)[0] for _ in range(max(1, steps))]
        mean = sum(times) / len(times)
        times.sort()
        return {"ms": 1000 * times[len(times) // 2], "ms_min": 1000 * times[0], "ms_mean": 1000 * mean,
                "peak_gib": self.peak_gib()}


class PhaseTimes:
    """phase_clock of TrainStep: each phase's wall time, synchronised before and after."""

    def __init__(self, clock):
        self.clock, self.times = clock, {}

    def __call__(self, name, fn):
        dt, out = self.clock.seconds(fn)
        self.times.setdefault(name, []).append(dt)
        return out

    def summary(self) -> dict:    # median ms of each phase
        return {k: 1000 * sorted(v)[len(v) // 2] for k, v in self.times.items()}


class StepRunner:
    """The trainer's loop body: the next batch to the device, then the step at (step, step x batch images)."""

    def __init__(self, trainer: train_step.TrainStep, batches, device, batch: int):
        self.trainer, self.batches, self.device, self.batch = trainer, batches, device, batch
        self.step = 0

    def __call__(self, phase_clock=None, step: int | None = None):
        s = self.step if step is None else step
        self.trainer(training_loop.to_device(next(self.batches), self.device), s, s * self.batch, phase_clock=phase_clock)
        if step is None:
            self.step += 1


def peak_flops(dev_name: str, a) -> tuple[float | None, str]:
    if a.peak_tflops:
        return a.peak_tflops * 1e12, "--peak-tflops"
    if dev_name.startswith("CPU"):
        return None, "n/a on CPU (give --peak-tflops)"
    up = dev_name.upper()
    for key, peak, what in PEAK_BF16:
        if key in up:
            return peak, what
    return None, f"unknown GPU {dev_name!r} (give --peak-tflops)"


def count_flops(fn) -> int:
    """FLOPs of one call of fn (forward and any backward it runs): matmul/conv only."""
    from torch.utils.flop_counter import FlopCounterMode
    fc = FlopCounterMode(display=False)
    if hasattr(fc, "mod_tracker"):
        # the per-module breakdown's global module hooks break autograd.grad w.r.t. leaf inputs (R1); totals only
        fc.mod_tracker = _NoModuleTracker()
    with fc:
        fn()
    return int(fc.get_total_flops())


class _NoModuleTracker:
    parents = {"Global"}

    def __enter__(self):
        return self

    def __exit__(self, *args):
        return False


def step_flops(run: StepRunner) -> dict[str, int]:
    """FLOPs of each phase of one step in which every phase runs (step 0), the EMA included (none counted)."""
    flops = {}

    def clock(name, fn):
        flops[name] = count_flops(fn)
    run(phase_clock=clock, step=0)
    return flops


def step_begin():
    """Marks a new iteration for CUDA-graph trees (reduce-overhead); a no-op otherwise."""
    if hasattr(torch, "compiler") and hasattr(torch.compiler, "cudagraph_mark_step_begin"):
        torch.compiler.cudagraph_mark_step_begin()


def time_steps(run: StepRunner, clock: Clock, n: int, batch: int) -> dict:
    """``n`` steps back to back, as a training run takes them: no sync until the end, each step's time read
    from device events (the host queues the next step while the device runs)."""
    clock.reset_peak()
    marks = [clock.mark()]
    for _ in range(n):
        run()
        marks.append(clock.mark())
    times = clock.between(marks)
    srt = sorted(times)
    total = sum(times)
    return {"steps": n, "ms": 1000 * srt[len(srt) // 2], "ms_min": 1000 * srt[0], "ms_mean": 1000 * total / n,
            "images_per_s": batch * n / total, "step_ms": [round(1000 * t, 2) for t in times],
            "peak_gib": clock.peak_gib()}


def time_loader(batches, clock: Clock, n: int, batch: int) -> dict:
    """The data loader alone: ``n`` batches as fast as its workers deliver them."""
    dt, _ = clock.seconds(lambda: [next(batches) for _ in range(n)])
    return {"batches": n, "ms_per_batch": 1000 * dt / n, "images_per_s": batch * n / dt}


def wait_for_peers(path: str, n: int, timeout_s: float = 600):
    """Marks this benchmark compiled (path.ready.PID) and waits until n benchmarks are."""
    import glob
    open(f"{path}.ready.{os.getpid()}", "w").close()
    t0 = time.perf_counter()
    while len(glob.glob(f"{path}.ready.*")) < n and time.perf_counter() - t0 < timeout_s:
        time.sleep(1)
    print(f"  [{len(glob.glob(f'{path}.ready.*'))}/{n} peers compiled after {time.perf_counter() - t0:.0f} s]",
          flush=True)


@contextlib.contextmanager
def gpu_lock(path: str | None):
    """An exclusive flock on path (none: no lock): side-by-side benchmarks time one at a time."""
    if not path:
        yield
        return
    import fcntl
    with open(path, "a") as f:
        t0 = time.perf_counter()
        fcntl.flock(f, fcntl.LOCK_EX)
        print(f"  [gpu lock {path}: waited {time.perf_counter() - t0:.1f} s]", flush=True)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def section(res: dict, key: str, fn, device):
    """res[key] = fn(); CUDA OOM -> {'error': 'OOM'} (the configuration goes on).  Prints a progress line
    (wall time included: compilation happens in the first calls), so a run stopped by a timeout still shows
    how far it got."""
    t0 = time.perf_counter()
    try:
        res[key] = fn()
    except torch.cuda.OutOfMemoryError:
        res[key] = {"error": "OOM"}
    free(device)
    print(f"  [{key}: done in {time.perf_counter() - t0:.1f} s wall]", flush=True)


def free(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def error_string(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:2000]


# ---------------------------------------------------------------- one configuration

def bench_config(a, cfg: training_loop.TrainConfig, d: distributed.Dist, clock: Clock, res: dict, peak) -> None:
    """Fills res as it goes (partial results survive an error).  Seeds, data, networks, step and batches in
    train()'s order, so the first step is the trainer's first step."""
    device = d.device
    torch._dynamo.reset()       # a fresh cache per configuration (new modules; stay under the recompile limit)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    ds = training_loop.build_dataset(cfg) if a.data == "real" else None
    nets, opts = train_step.build_models(cfg, device)
    G, D = nets["G"], nets["D"]
    res.update({"generator": type(G).__name__, "discriminator": type(D).__name__,
                "img_resolution": G.img_resolution,
                "nr": cfg.neural_rendering_resolution or G.neural_rendering_resolution,
                "samples": [G.rendering_kwargs["depth_resolution"], G.rendering_kwargs["depth_resolution_importance"]],
                "params_G": sum(p.numel() for p in G.parameters()),
                "params_D": sum(p.numel() for p in D.parameters())})
    res["flops"], res["flops_note"] = {}, FLOPS_NOTE
    res["peak_flops"], res["peak_source"] = peak
    compiled = compiler.resolve_compile(cfg, device)
    views = ds.ortho_views if ds is not None else tuple(v.strip() for v in cfg.ortho_views.split(",") if v.strip())
    trainer = None
    try:
        if not a.networks_only:
            eager = train_step.TrainStep(dataclasses.replace(cfg, compile=False), d, nets, opts, views)
            batches = training_loop.rank_batches(ds, cfg, d, cfg.batch, 0) if ds is not None else SyntheticBatches(cfg, G, device)
            run = StepRunner(eager, batches, device, cfg.batch)
            res["phases"] = {name: k for name, _, _, k in eager.phases}
            if compiled:    # the FLOPs on the eager networks, then the trainer compiles G in place
                count_flops_of(a, run, G, cfg, res)
                trainer = run.trainer = train_step.TrainStep(cfg, d, nets, opts, views)
            else:
                trainer = eager
            first_step(run, clock, res)         # the trainer's first step: every phase runs, every graph compiles
            if not compiled:                    # after it, so that the first step is exactly the trainer's
                count_flops_of(a, run, G, cfg, res)
            res["precision"] = trainer.precision()
            res["step"] = trainer.describe()
            res["d_fresh_fakes"] = cfg.loss.d_fresh_fakes and "Dmain" in res["phases"]
            free(device)
            bench_train(a, run, cfg, clock, res, peak, ds)
        if not a.train_only:
            if trainer is None:
                res["flops"]["G_forward"] = g_forward_flops(G, cfg, device)
                if compiled:                    # the networks as the trainer compiles them
                    trainer = train_step.TrainStep(cfg, d, nets, opts, views)
            bench_networks(a, G, D, cfg, clock, res, peak, device)
    finally:
        if trainer is not None:
            trainer.close()


def count_flops_of(a, run: StepRunner, G, cfg, res: dict) -> None:
    """res['flops'] of each phase of one eager step with the configuration's arithmetic (compiling unfolds the
    FIR filters: fewer FLOPs), per batch; the step's FLOPs per image; G's forward unless --train-only."""
    from training.triplane import set_compiled_arithmetic
    restore = set_compiled_arithmetic(compiler.resolve_compile(cfg, run.device))
    try:
        with gpu_lock(a.gpu_lock):      # eager memory peaks are high: one benchmark at a time
            res["flops"].update(step_flops(run))
    finally:
        restore()
    res["flops_per_train_image"] = sum(res["flops"][n] / k for n, k in res["phases"].items()) / cfg.batch
    if not a.train_only:
        res["flops"]["G_forward"] = g_forward_flops(G, cfg, run.device)


def first_step(run: StepRunner, clock: Clock, res: dict) -> None:
    """Step 0, synchronised: its wall time, and the seconds of it spent compiling when compiled."""
    c0 = compiler.compile_seconds()
    first_s, _ = clock.seconds(lambda: run(step=0))
    c1 = compiler.compile_seconds()
    t = res["train_step"] = {"first_step_s": first_s}
    if run.trainer.compiled and c0 is not None and c1 is not None:
        t["compile_s"] = c1 - c0
    print(f"  [first step: {first_s:.1f} s" + (f", {t['compile_s']:.1f} s of it compiling" if "compile_s" in t
                                                else "") + "]", flush=True)


def bench_train(a, run: StepRunner, cfg, clock: Clock, res: dict, peak, ds) -> None:
    """After the first step: warm-up, then whole cycles of the phases back to back."""
    device, trainer, t = clock.device, run.trainer, res["train_step"]
    run.step = 1
    warm = a.warmup if a.warmup is not None else (1 if device.type == "cpu" else 3)
    t["warmup_steps"] = warm
    t["warmup_s"], _ = clock.seconds(lambda: [run() for _ in range(warm)])
    n = trainer.cycle * max(1, math.ceil((a.steps or trainer.cycle) / trainer.cycle))
    lock = contextlib.nullcontext()
    if a.gpu_lock:
        wait_for_peers(a.gpu_lock, a.gpu_lock_peers)
        lock = gpu_lock(a.gpu_lock)
    with lock:
        if a.profile:
            profile(run, device, rows=40, trace=a.profile_trace)
            if "Dreg" in res["phases"]:
                print("R1 phase (eager D, double backward):")
                profile(lambda: run(phase_clock=only("Dreg"), step=0), device, rows=25)
        run.step = trainer.cycle * math.ceil(run.step / trainer.cycle)     # whole cycles from a cycle's start
        try:
            t.update(time_steps(run, clock, n, cfg.batch))
        except torch.cuda.OutOfMemoryError:
            t["error"] = "OOM"
            return
        if a.phase_times:
            phases = PhaseTimes(clock)
            for _ in range(trainer.cycle):
                run(phase_clock=phases)
            t["phase_ms"] = phases.summary()
        if ds is not None:
            t["data_loader"] = time_loader(run.batches, clock, n, cfg.batch)
    t["achieved_tflops"] = res["flops_per_train_image"] * t["images_per_s"] / 1e12
    res["mfu"] = {"train": res["flops_per_train_image"] * t["images_per_s"] / peak[0] if peak[0] else None}
    _, t["nan_skips"] = trainer.tick_stats()       # read once, as a tick end does


def only(name):
    """A phase_clock that runs the phase ``name`` and skips the others (profiling one phase)."""
    return lambda n, fn: fn() if n == name else None


# ---------------------------------------------------------------- the networks alone

def make_inputs(G, batch, device):
    res = G.cond_resolution
    g = torch.Generator().manual_seed(0)
    cond = {"front": torch.rand(batch, 3, res, res, generator=g) * 2 - 1,
            "back": torch.rand(batch, 3, res, res, generator=g) * 2 - 1}
    cond["front_mask"] = (cond["front"][:, :1] > 0).float()
    cond["back_mask"] = (cond["back"][:, :1] > 0).float()
    views = cameras.view_set("rgb", G.framing, char_id="bench") * ((batch + 7) // 8)
    c = cameras.as_tensor(views[:batch])
    return {k: v.to(device) for k, v in cond.items()}, c.to(device)


def build_D(preset, G, device):
    from training.dual_discriminator import DualDiscriminator, MaskDualDiscriminator
    cls = MaskDualDiscriminator if G.use_mask else DualDiscriminator
    return cls(c_dim=25, img_resolution=G.img_resolution, **D_SIZES.get(preset, {})).to(device)


def d_input(G, out, use_mask):
    """What training/loss.py gives D: the mask at the neural-rendering size (D resizes it itself).  Contiguous
    (image_raw is a channel slice of the feature image): fakes and reals then share one compiled D graph."""
    img = {"image": out["image"], "image_raw": out["image_raw"]}
    if use_mask:
        img["image_mask"] = out["image_alpha"]
    return {k: v.contiguous() for k, v in img.items()}


def autocast_of(cfg, device):
    return ((lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if train_step.resolve_bf16(cfg, device)
            else contextlib.nullcontext)


def g_forward_flops(G, cfg, device) -> int:
    """FLOPs of G's forward at the benchmark's batch, with the configuration's arithmetic (eager G)."""
    from training.triplane import set_compiled_arithmetic
    cond, c = make_inputs(G, cfg.batch, device)
    z = torch.randn(cfg.batch, G.z_dim, device=device)
    restore = set_compiled_arithmetic(compiler.resolve_compile(cfg, device))
    try:
        with torch.no_grad(), autocast_of(cfg, device)():
            return count_flops(lambda: G(cond, c, z=z, neural_rendering_resolution=cfg.neural_rendering_resolution
                                         or None))
    finally:
        restore()


def bench_networks(a, G, D, cfg, clock: Clock, res: dict, peak, device) -> None:
    """G and D alone (G compiled in place when the configuration compiles, D eager), batch-1 inference (eager,
    and the whole eval forward compiled with --compile-infer) and, once per run, the mesh."""
    ac = autocast_of(cfg, device)
    nr = cfg.neural_rendering_resolution or None
    cond, c = make_inputs(G, cfg.batch, device)
    z = torch.randn(cfg.batch, G.z_dim, device=device)
    G.requires_grad_(True)
    D.requires_grad_(True)

    def g_fwd():
        step_begin()
        with torch.no_grad(), ac():
            return G(cond, c, z=z, neural_rendering_resolution=nr)

    def g_fwd_bwd():
        step_begin()
        with ac():
            out = G(cond, c, z=z, neural_rendering_resolution=nr)
            loss = out["image"].float().square().mean() + out["image_raw"].float().square().mean()
        loss.backward()

    fake = {k: v.detach().float() for k, v in d_input(G, g_fwd(), train_step.use_mask_discriminator(D)).items()}

    def d_fwd():
        with torch.no_grad(), ac():
            return D(fake, c)

    def d_fwd_bwd():
        with ac():
            loss = torch.nn.functional.softplus(D(fake, c)).float().mean()
        loss.backward()

    steps, warm = a.steps or 3, a.warmup if a.warmup is not None else 1
    fl = res["flops"]
    if a.profile and not a.train_only:
        profile(g_fwd_bwd, device)
    section(res, "G_forward", lambda: clock(g_fwd, steps, warm), device)
    section(res, "G_forward_backward", lambda: clock(g_fwd_bwd, steps, warm), device)
    section(res, "D_forward", lambda: clock(d_fwd, steps, warm), device)
    section(res, "D_forward_backward", lambda: clock(d_fwd_bwd, steps, warm), device)
    G.zero_grad(set_to_none=True)
    D.zero_grad(set_to_none=True)
    if "ms" in res.get("G_forward", {}):
        res["G_images_per_s"] = cfg.batch / (res["G_forward"]["ms"] / 1000)
        mfu = res.setdefault("mfu", {"train": None})
        mfu["G_forward"] = fl["G_forward"] / cfg.batch * res["G_images_per_s"] / peak[0] if peak[0] else None
    if a.parts:
        section(res, "parts", lambda: bench_parts(G, cond, c, z, nr, ac, clock, steps, warm), device)
    G.requires_grad_(False)
    D.requires_grad_(False)

    # batch-1 inference (conditioning included), eval mode, eager and compiled
    uncompile_G(G)
    G.eval()
    cond1 = {k: v[:1] for k, v in cond.items()}
    c1 = c[:1]

    def g_infer1():
        with torch.no_grad(), ac():
            return G(cond1, c1, neural_rendering_resolution=nr)["image"]

    section(res, "G_inference_batch1", lambda: clock(g_infer1, steps, warm), device)
    if a.compile_infer:
        res["G_inference_batch1_compiled"] = bench_compiled_infer(G, cond1, c1, nr, ac, clock, a, g_infer1)
        free(device)
    if a.mesh_res and not a._mesh_done:
        a._mesh_done = True
        res["mesh"] = bench_mesh(G, cond1, clock, a)
        free(device)
    train_step.set_train_mode(G, cfg.freeze_bn)


def uncompile_G(G):
    """Back to the eager forward of every part (in-place compiles keep the modules)."""
    from training.triplane import render_field, render_field_rays
    object.__setattr__(G, "_render_fn", render_field)
    object.__setattr__(G, "_render_rays_fn", render_field_rays)
    for m in G.modules():
        if getattr(m, "_compiled_call_impl", None) is not None:
            m._compiled_call_impl = None


def bench_parts(G, cond, c, z, nr, ac, clock, steps, warm) -> dict:
    """Forward+backward of G's parts on inputs from one forward pass (detached, requiring grad where
    training's gradient flows through them): encoder, synthesize (encoder(s) + backbone), render (planes
    -> raw feature image, no super-resolution) and super-resolution.  The backbone's share is synthesize
    minus encoder (minus the back/mask encoders for two-view presets)."""
    with torch.no_grad(), ac():
        front = G._prep(cond["front"])
        syn = G.synthesize(cond, z)
        raw = G.render(syn, c, nr, superresolve=False)
    planes = syn["planes"].detach().float()
    ws = syn["ws"].detach()
    feat_img = raw["image_features"].detach().float()

    def loss_of(*ts):
        return sum(t.float().square().mean() for t in ts)

    def encoder():
        with ac():
            loss = loss_of(G.encoder(front))
        loss.backward()

    def synthesize():
        step_begin()
        with ac():
            loss = loss_of(G.synthesize(cond, z)["planes"])
        loss.backward()

    def render():
        step_begin()
        p = planes.clone().requires_grad_(True)
        with ac():
            out = G.render(p, c, nr, superresolve=False)
            loss = loss_of(out["image_features"], out["image_alpha"])
        loss.backward()

    def superresolution():
        step_begin()
        f = feat_img.clone().requires_grad_(True)
        with ac():
            loss = loss_of(G.superresolution(f[:, :3], f, ws, noise_mode="random"))
        loss.backward()

    out = {}
    parts = [("encoder", encoder), ("synthesize", synthesize), ("render", render)]
    if G.superresolution is not None:
        parts.append(("superresolution", superresolution))
    for name, fn in parts:
        try:
            out[name] = clock(fn, steps, warm)
        except torch.cuda.OutOfMemoryError:
            out[name] = {"error": "OOM"}
        G.zero_grad(set_to_none=True)
    return out


def bench_compiled_infer(G, cond1, c1, nr, ac, clock, a, g_infer1) -> dict:
    """Batch-1 inference with the whole eval forward compiled; any failure becomes an error string."""
    mode = a.compile_infer
    r = {"mode": mode}
    try:
        def fwd(cond, c):
            return G(cond, c, neural_rendering_resolution=nr)["image"]

        fn = torch.compile(fwd, **compiler.compile_kwargs(mode))

        def run():
            step_begin()
            with torch.no_grad(), ac():
                return fn(cond1, c1)

        r["compile_s"], out = clock.seconds(run)          # first call: tracing + compilation
        out = out.float().clone()
        ref = g_infer1().float()
        r["max_abs_diff_vs_eager"] = float((out - ref).abs().max())
        r.update(clock(run, a.steps or 3, max(3, a.warmup or 0)))   # CUDA graphs record on the 2nd/3rd call
    except torch.cuda.OutOfMemoryError:
        r["error"] = "OOM"
    except Exception as e:      # noqa: BLE001 -- a compile failure is a result, not a crash of the benchmark
        traceback.print_exc()
        r["error"] = error_string(e)
    return r


def bench_mesh(G, cond1, clock, a) -> dict:
    """training.infer.meshing.density_grid + skimage marching cubes, and the whole extract_mesh over the full
    grid (uncarved: a random-init model renders nothing opaque, so a carved mesh would be empty; the carved
    path users run is timed by _scripts.bench.infer); fp32, z = 0."""
    from training.infer import meshing
    res_ = a.mesh_res
    r = {"resolution": res_}
    try:
        with torch.no_grad():
            planes = G.synthesize(cond1)
        r["grid_s"], sigma = clock.seconds(lambda: meshing.density_grid(G, planes, res_))
        occ = meshing.occupancy(sigma)
        r["occupancy_min_median_max"] = [float(occ.min()), float(np.median(occ)), float(occ.max())]
        level = float(np.median(occ)) if a.mesh_level == "median" else float(a.mesh_level)
        r["level"], r["level_rule"] = level, a.mesh_level
        from skimage import measure
        if occ.min() < level < occ.max():
            t = time.perf_counter()
            measure.marching_cubes(occ, level=level)
            r["marching_cubes_s"] = time.perf_counter() - t
        else:
            r["marching_cubes_s"] = 0.0          # the level is never crossed: nothing to extract
        r["extract_mesh_s"], mesh = clock.seconds(lambda: meshing.extract_mesh(G, planes, res_, level=level,
                                                                                          carve=False))
        r["vertices"], r["faces"] = int(len(mesh.vertices)), int(len(mesh.faces))
    except torch.cuda.OutOfMemoryError:
        r["error"] = "OOM"
    except Exception as e:      # noqa: BLE001 -- e.g. skimage/trimesh missing: keep the grid time
        traceback.print_exc()
        r["error"] = error_string(e)
    return r


# ---------------------------------------------------------------- profiles

def profile(fn, device, rows=25, trace=None):
    """Prints the top kernels of one call of fn (after one untimed call); trace: also write the
    chrome trace there, gzipped."""
    from torch.profiler import ProfilerActivity, profile as prof
    fn()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with prof(activities=acts) as p:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(p.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=60))
    if trace:
        import gzip
        import shutil
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            p.export_chrome_trace(f"{d}/trace.json")
            with open(f"{d}/trace.json", "rb") as src, gzip.open(f"{trace}.part", "wb") as dst:
                shutil.copyfileobj(src, dst)
        os.replace(f"{trace}.part", trace)
        print(f"  profile trace: {trace}")
    if device.type == "cuda":
        print(kernel_classes(p.key_averages()))


KERNEL_CLASSES = (      # (class, substrings of the kernel name), first match wins
    ("layout transposes (cuDNN)", ("nchwToNhwc", "nhwcToNchw")),
    ("convolutions (cuDNN/CUTLASS)", ("xmma", "cutlass", "cudnn", "conv", "implicit_convolve", "sm90_", "sm80_")),
    ("gemm", ("gemm", "cublas", "Kernel2")),
    ("triton reductions", ("triton_red", "triton_per")),
    ("triton pointwise", ("triton_poi", "triton_")),
    ("copies", ("copy", "Memcpy", "Memset")),
    ("optimizer", ("adam", "Adam")),
    ("other aten kernels", ("at::native", "void at::")),
)


def kernel_classes(events) -> str:
    """Self CUDA time of the profile's kernels (device-side events) summed by class, in ms."""
    sums, total = {}, 0.0
    for e in events:
        t = getattr(e, "self_device_time_total", None)
        if t is None:
            t = getattr(e, "self_cuda_time_total", 0)
        if not t or e.key.startswith("aten::") or getattr(e, "device_type", None) is not None and \
                "CUDA" not in str(e.device_type):
            continue
        cls = next((c for c, keys in KERNEL_CLASSES if any(k in e.key for k in keys)), "other")
        sums[cls] = sums.get(cls, 0.0) + t / 1000
        total += t / 1000
    lines = [f"  kernel time by class ({total:.1f} ms):"]
    lines += [f"    {k:32s} {v:8.2f} ms  {100 * v / max(total, 1e-9):5.1f} %"
              for k, v in sorted(sums.items(), key=lambda kv: -kv[1])]
    return "\n".join(lines)


# ---------------------------------------------------------------- report

def fmt(r):
    if not r or "error" in r:
        return f"error: {(r or {}).get('error', 'not run')}"
    return f"{r['ms']:8.1f} ms (min {r['ms_min']:.1f})  peak {r['peak_gib']:.2f} GiB"


def pct(x):
    return "n/a" if x is None else f"{100 * x:.1f}%"


def report(r):
    print(f"\n{r['config']}: {r.get('generator', '?')} preset={r.get('preset')} batch={r['batch']} nr={r.get('nr')} "
          f"samples={'+'.join(map(str, r.get('samples', ['?'])))} sr={r.get('img_resolution', '?')} "
          f"{'compiled (' + r['compile_mode'] + ')' if r['compile'] else 'eager'}, {r['data']} batches")
    if "step" in r:
        print(f"  {r['step']}")
    if "params_G" in r:
        print(f"  params: G {r['params_G'] / 1e6:.2f} M, D {r['params_D'] / 1e6:.2f} M")
    if "flops_per_train_image" in r:
        fl, b = r["flops"], r["batch"]
        print(f"  GFLOP/image (matmul/conv): train step {r['flops_per_train_image'] / 1e9:.2f} = "
              + " + ".join(f"{n}{'' if k == 1 else f'/{k}'} {fl[n] / k / b / 1e9:.3g}" for n, k in r["phases"].items()))
    t = r.get("train_step")
    if t:
        if "first_step_s" in t:
            comp = f" ({t['compile_s']:.1f} s compiling)" if "compile_s" in t else ""
            print(f"  first step {t['first_step_s']:.1f} s{comp}; {t.get('warmup_steps', 0)} warm-up steps "
                  f"{t.get('warmup_s', 0.0):.1f} s")
        if "error" in t:
            print(f"  train step           error: {t['error']}")
        elif "images_per_s" in t:
            print(f"  train step: {t['steps']} steps back to back, median {t['ms']:.1f} ms, mean {t['ms_mean']:.1f} ms"
                  f" -> {t['images_per_s']:.1f} images/s, {t['achieved_tflops']:.2f} TFLOP/s, MFU "
                  f"{pct(r['mfu']['train'])} of {r['peak_source']}; peak {t['peak_gib']:.2f} GiB")
        if "phase_ms" in t:
            print("  phases (median ms, synchronised): " + ", ".join(f"{k} {v:.1f}" for k, v in t["phase_ms"].items()))
        if "data_loader" in t:
            dl = t["data_loader"]
            print(f"  data loader alone: {dl['ms_per_batch']:.1f} ms/batch -> {dl['images_per_s']:.1f} images/s")
    for k in ("G_forward", "G_forward_backward", "D_forward", "D_forward_backward", "G_inference_batch1"):
        if k in r:
            print(f"  {k:20s} {fmt(r[k])}")
    for k, v in (r.get("parts") or {}).items():
        print(f"  part {k:15s} fwd+bwd {fmt(v)}")
    if "G_inference_batch1_compiled" in r:
        ci = r["G_inference_batch1_compiled"]
        extra = "" if "error" in ci else (f"; compile {ci['compile_s']:.1f} s, "
                                          f"max |diff| vs eager {ci['max_abs_diff_vs_eager']:.2g}")
        print(f"  {'G_infer_b1_compiled':20s} {fmt(ci)} [{ci['mode']}]{extra}")
    if "G_images_per_s" in r:
        print(f"  G forward images/s   {r['G_images_per_s']:.1f}; MFU {pct(r['mfu'].get('G_forward'))}")
    if "mesh" in r:
        m = r["mesh"]
        if "grid_s" in m:
            print(f"  mesh {m['resolution']}^3: density grid {m['grid_s']:.2f} s"
                  + (f", marching cubes {m['marching_cubes_s']:.2f} s, extract_mesh {m['extract_mesh_s']:.2f} s"
                     f" -> {m['vertices']} vertices, {m['faces']} faces at level {m['level']:.3g}"
                     f" ({m['level_rule']})" if "faces" in m else ""))
        if "error" in m:
            print(f"  mesh error: {m['error']}")
    if "error" in r:
        print(f"  error: {r['error']}")


@cli_main
def main(argv=None):
    a = parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    d = distributed.setup_distributed(a.device or "auto")
    if d.world > 1:
        raise UserError("the benchmark runs in one process (start it without torchrun)")
    device = d.device
    cpu = device.type == "cpu"
    a.mesh_res = a.mesh_res if a.mesh_res is not None else (0 if cpu else 256)
    a._mesh_done = False
    if not cpu:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    cfg = base_config(a, device)
    clock = Clock(device)
    dev_name = torch.cuda.get_device_name(device) if not cpu else f"CPU ({platform.processor() or 'cpu'}, " \
        f"{torch.get_num_threads()} threads)"
    peak = peak_flops(dev_name, a)
    recipe = str(configs.resolve_recipe(a.config))
    print(f"device: {dev_name}; torch {torch.__version__}; recipe {recipe}; peak for MFU: "
          f"{'n/a' if peak[0] is None else f'{peak[0] / 1e12:.1f} TFLOP/s'} ({peak[1]}); FLOPs: {FLOPS_NOTE}; "
          f"inductor cache {os.environ.get('TORCHINDUCTOR_CACHE_DIR') or 'inductor default'}")
    results = []
    for c in configurations(a, cfg, device):
        compiled = compiler.resolve_compile(c, device)
        r = {"config": a.config, "recipe": recipe, "preset": c.preset, "batch": c.batch,
             "nr": c.neural_rendering_resolution or None, "bf16": train_step.resolve_bf16(c, device),
             "r1_bf16": c.loss.r1_bf16, "compile": compiled, "compile_mode": c.compile_mode if compiled else None,
             "data": a.data, "pretrained": a.pretrained, "device": dev_name, "torch": torch.__version__}
        results.append(r)
        try:
            bench_config(a, c, d, clock, r, peak)
        except torch.cuda.OutOfMemoryError:
            r["error"] = "OOM"
        except UserError:
            raise       # bad input (a recipe, missing data): one line, not a result
        except Exception as e:      # noqa: BLE001 -- record it and go on with the next configuration
            traceback.print_exc()
            r["error"] = error_string(e)
        free(device)
        report(r)
        if a.json:
            save_json_atomic(a.json, results)
    return results


if __name__ == "__main__":
    main()
