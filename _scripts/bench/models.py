"""Model benchmark: parameters, FLOPs, forward / forward+backward time, images/s, MFU, peak memory, batch-1
inference (eager and compiled) and mesh extraction time.

    python -m _scripts.bench.models --preset nova_body --batch 4 --bf16 both --device cuda
    python -m _scripts.bench.models --preset eg3d_ffhq512 --batch 16 --train-step --compile --nr 64 128
    python -m _scripts.bench.models --preset eg3d_ffhq512 --batch 16 --nr 64 --bf16 on --compile-infer --mesh-res 256
    python -m _scripts.bench.models                       # CPU: the tiny preset, batch 2

Presets come from training.triplane.PRESETS.  --train-step times full GAN
steps the way training/training_loop.py runs them (phases G main, D main on
fake + real, lazy R1 on real every 16th step in fp32; only the phase's network
requires grad; Adam updates): 16 steps, one of them with R1, images/s = batch /
mean step time.  FLOPs are counted once per configuration with
torch.utils.flop_counter.FlopCounterMode on the eager networks: matmul/conv
FLOPs only (grid_sample, elementwise ops, normalisations, sorting are not
counted), so MFU (flops_per_train_image x images/s / peak dense bf16 of the
GPU) is a lower bound.  --compile compiles the generator's encoders, backbone,
super-resolution and ray march (rays, samples, field, compositing: one graph)
with --compile-mode (G.compile_parts; not D, see --compile-d: R1
differentiates D twice) and picks the compiled
arithmetic (triplane.set_compiled_arithmetic: unfolded FIR, gather lookup);
--compile-infer compiles the whole eval forward (conditioning images -> final
image) for the batch-1 inference timing (default mode reduce-overhead: CUDA
graphs).  fp32 runs on CUDA allow TF32 matmuls.
Each configuration catches CUDA out-of-memory ({"error": "OOM"}) and goes on;
--json is rewritten after every configuration.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import math
import os
import platform
import resource
import time
import traceback

import numpy as np
import torch
import torch.nn.functional as F

from training import cameras
from training.errors import UserError, cli_main, save_json_atomic
from training import networks_stylegan2 as nets
from training import volumetric_rendering as vr
from training.dual_discriminator import join_pair, pair_group, split_pair
from training.loss import LossConfig, r1_inputs, r1_terms
from training.triplane import PRESETS, SR_NOISE_MODES, build_preset, set_compiled_arithmetic
from training.training_loop import COMPILE_MODES, adam, compile_kwargs, force_layout_optimization, guard_requires_grad

D_SIZES = {"tiny": dict(channel_base=256, channel_max=32)}
FLOPS_NOTE = ("matmul/conv FLOPs only (torch.utils.flop_counter.FlopCounterMode): grid_sample, elementwise "
              "ops, normalisations and sorting are not counted, so MFU is a lower bound")
# dense (no sparsity) bf16 tensor-core peaks, matched in order against torch.cuda.get_device_name()
PEAK_BF16 = [("H200", 989.4e12, "H200 dense bf16"),
             ("H100 PCIE", 756e12, "H100 PCIe dense bf16"),
             ("H100 NVL", 835e12, "H100 NVL dense bf16"),
             ("H100", 989.4e12, "H100 SXM/HBM3 dense bf16"),
             ("A100", 312e12, "A100 dense bf16")]
R1_INTERVAL = LossConfig.r1_interval     # lazy R1 as the trainer's defaults
R1_GAMMA = LossConfig.r1_gamma


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m _scripts.bench.models", description=__doc__.split("\n")[0])
    p.add_argument("--preset", default=None, choices=sorted(PRESETS), help="default: tiny on CPU, nova_body on CUDA")
    p.add_argument("--variant", default=None, help="generator class instead of the preset's (e.g. TriPlaneGenerator_v0)")
    p.add_argument("--batch", type=int, default=None, help="default: 2 on CPU, 4 on CUDA")
    p.add_argument("--nr", type=int, nargs="*", default=None, help="neural rendering resolution(s) (default: preset)")
    p.add_argument("--bf16", default="off", choices=["on", "off", "both"])
    p.add_argument("--compile", action="store_true", help="compile G's field, backbone and super-resolution")
    p.add_argument("--compile-mode", default="default", choices=COMPILE_MODES, help="torch.compile mode for --compile")
    p.add_argument("--compile-d", action="store_true",
                   help="also compile D for its first-order uses (G main, D main); R1 keeps the eager D")
    p.add_argument("--guard-requires-grad", default="on", choices=["on", "off"],
                   help="compiled graphs guard on their parameters' requires_grad (training_loop.guard_requires_grad; "
                   "on, as the trainer) or dynamo's default (off)")
    p.add_argument("--r1-bf16", action="store_true", help="run the R1 phase under bf16 autocast (default fp32)")
    p.add_argument("--d-pair", default="on", choices=["on", "off"],
                   help="D main on fakes and reals as one joined batch (on, the trainer's default) or two calls")
    p.add_argument("--fold", default="auto", choices=["auto", "on", "off", "skip-off"],
                   help="FIR filters folded into resampling convs (networks_stylegan2.set_fold): on = the eager "
                   "default; off = filter passes + cheaper convs (half the FLOPs; fastest compiled); skip-off = "
                   "only D's 1x1 skip convs unfolded; auto (default) = off with --compile, else on")
    p.add_argument("--channels-last", nargs="?", const="G,D", default="auto", metavar="PARTS",
                   help="NHWC activations (networks_stylegan2.set_channels_last) in PARTS, comma-separated of "
                   f"{', '.join(CHANNELS_LAST_PARTS)} (no value: G,D); none; auto (default) = as the trainer: "
                   "backbone and super-resolution with --compile (G.compile_parts), none without")
    p.add_argument("--sr-noise", default=None, choices=SR_NOISE_MODES,
                   help="the generator's superresolution_noise_mode (default: the preset's, EG3D's none)")
    p.add_argument("--lookup", default="auto", choices=["auto", *vr.LOOKUPS],
                   help="triplane lookup (volumetric_rendering.LOOKUP); auto (default) = gather with --compile "
                   "(fastest compiled), else grid_sample (fastest eager)")
    p.add_argument("--train-only", action="store_true",
                   help="with --train-step: time only the train step (no separate G/D forward timings, no batch-1 "
                   "inference): compiles only the training graphs")
    p.add_argument("--parts", action="store_true",
                   help="also time forward+backward of G's parts: encoder, synthesize (encoder + backbone), "
                   "render (planes -> raw image, no super-resolution), super-resolution")
    p.add_argument("--compile-infer", nargs="?", const="reduce-overhead", default=None, choices=COMPILE_MODES,
                   metavar="MODE", help="also time batch-1 inference with the whole eval forward compiled "
                   "(MODE default reduce-overhead = CUDA graphs)")
    p.add_argument("--device", default=None, choices=["cuda", "cpu"])
    p.add_argument("--steps", type=int, default=None, help="timed iterations (default 3 CPU / 10 CUDA)")
    p.add_argument("--warmup", type=int, default=None, help="untimed iterations first (default 1 CPU / 3 CUDA)")
    p.add_argument("--train-step", action="store_true",
                   help=f"also time full GAN steps with R1 every {R1_INTERVAL} (steps rounded up to {R1_INTERVAL}s)")
    p.add_argument("--samples", type=int, nargs=2, default=None, metavar=("COARSE", "FINE"),
                   help="depth_resolution and depth_resolution_importance (default: preset)")
    p.add_argument("--mesh-res", type=int, default=None,
                   help="time density grid + marching cubes at this resolution, once per run (first configuration); "
                   "0 = off (default: 256 on CUDA, off on CPU)")
    p.add_argument("--mesh-level", default="0.5",
                   help="occupancy level for marching cubes: a number (infer.py's default 0.5) or 'median' "
                   "(the grid's median occupancy: gives a surface even for untrained networks)")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="peak dense bf16 TFLOP/s for MFU (default: from the GPU name; CPU: none, MFU n/a)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--profile", action="store_true",
                   help="print the top kernels of G forward+backward (not with --train-only) and of one train "
                   "step and the R1 phase (with --train-step)")
    p.add_argument("--layout-opt", default="force", choices=["auto", "force"],
                   help="inductor's layout for compiled graphs with convolutions (training_loop."
                   "force_layout_optimization): force (default, as the trainer) = channels-last in every such "
                   "graph; auto = its heuristics (which keep the super-resolution NCHW)")
    p.add_argument("--phase-times", action="store_true",
                   help="with --train-step: also time each phase of the step (synchronising between phases)")
    p.add_argument("--gpu-lock", default=None, metavar="FILE",
                   help="hold an exclusive lock on FILE while timing/profiling the train step (after its first, "
                   "compiling, step): benchmarks run side by side compile together and time one at a time")
    p.add_argument("--gpu-lock-peers", type=int, default=1, metavar="N",
                   help="with --gpu-lock: N benchmarks side by side; each waits (up to 10 min) until all N have "
                   "compiled before timing, so that no first step (compiling, autotuning) runs beside a timing")
    p.add_argument("--profile-trace", default=None, metavar="FILE.json.gz",
                   help="with --profile: write the train step's chrome trace there (gzipped)")
    p.add_argument("--r1-layout", default="nhwc", choices=["nhwc", "nchw"],
                   help="memory layout of R1's real images: nhwc (default, as the trainer: the eager D's cuDNN "
                   "convs need no NCHW<->NHWC transposes) or nchw")
    p.add_argument("--json", default=None, help="write the results here (a list, one entry per configuration)")
    a = p.parse_args(argv)
    bad = set(filter(None, a.channels_last.split(","))) - set(CHANNELS_LAST_PARTS) - {"auto", "none"}
    if bad:
        p.error(f"--channels-last: unknown part(s) {', '.join(sorted(bad))}; parts: {', '.join(CHANNELS_LAST_PARTS)}")
    if a.mesh_level != "median":
        try:
            float(a.mesh_level)
        except ValueError:
            p.error(f"--mesh-level: {a.mesh_level!r} is neither a number nor 'median'")
    return a


CHANNELS_LAST_PARTS = ("G", "D", "backbone", "superresolution")


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


def step_begin():
    """Marks a new iteration for CUDA-graph trees (reduce-overhead); a no-op otherwise."""
    if hasattr(torch, "compiler") and hasattr(torch.compiler, "cudagraph_mark_step_begin"):
        torch.compiler.cudagraph_mark_step_begin()


def compile_G(G, mode: str, channels_last: bool = True):
    """G.compile_parts: encoders, backbone, super-resolution (in place) and the ray march; with
    channels_last, NHWC backbone and super-resolution, as the trainer."""
    G.compile_parts(channels_last=channels_last, **compile_kwargs(mode))


def uncompile_G(G):
    """Back to the eager forward of every part (in-place compiles keep the modules)."""
    from training.triplane import render_field
    object.__setattr__(G, "_render_fn", render_field)
    for m in G.modules():
        if getattr(m, "_compiled_call_impl", None) is not None:
            m._compiled_call_impl = None


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


def bench_config(a, preset, device, nr, bf16, clock, res: dict, peak) -> None:
    """Fills res as it goes (partial results survive an error)."""
    torch.manual_seed(0)
    if a.compile or a.compile_d or a.compile_infer:
        torch._dynamo.reset()      # a fresh cache per configuration (new modules; stay under the recompile limit)
    overrides = {}
    rk = {}
    if a.samples:
        rk.update(depth_resolution=a.samples[0], depth_resolution_importance=a.samples[1])
    if a.sr_noise:
        rk.update(superresolution_noise_mode=a.sr_noise)
    if rk:
        overrides["rendering_kwargs"] = rk
    G = build_preset(preset, variant=a.variant, **overrides).to(device).train()
    D = build_D(preset, G, device).train()
    for part in filter(None, a.channels_last.split(",")) if a.channels_last not in ("auto", "none") else ():
        nets.set_channels_last({"G": G, "D": D, "backbone": G.backbone, "superresolution": G.superresolution}[part])
    cond, c = make_inputs(G, a.batch, device)
    ac = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    res.update({"generator": type(G).__name__, "img_resolution": G.img_resolution,
                "nr": nr or G.neural_rendering_resolution,
                "samples": [G.rendering_kwargs["depth_resolution"], G.rendering_kwargs["depth_resolution_importance"]],
                "params_G": sum(p.numel() for p in G.parameters()),
                "params_D": sum(p.numel() for p in D.parameters())})
    z = torch.randn(a.batch, G.z_dim, device=device)

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

    with torch.no_grad(), ac():
        fake = d_input(G, G(cond, c, z=z, neural_rendering_resolution=nr), G.use_mask)
    fake = {k: v.detach().float() for k, v in fake.items()}

    D_first = {"net": D}       # D for G main / D main (compiled with --compile-d)

    def d_fwd():
        with torch.no_grad(), ac():
            return D_first["net"](fake, c)

    def d_fwd_bwd():
        with ac():
            loss = F.softplus(D_first["net"](fake, c)).float().mean()
        loss.backward()

    # ---- FLOPs, once, on the eager networks (compiling does not change the matmul/conv work); eager memory
    #      peaks are high: under --gpu-lock, one benchmark at a time
    with gpu_lock(a.gpu_lock):
        fl = {"G_forward": count_flops(g_fwd), "G_forward_backward": count_flops(g_fwd_bwd),
              "D_forward_backward": count_flops(d_fwd_bwd)}
        phases = PhaseTimes(clock) if a.phase_times else None
        step, parts = make_train_step(G, D, cond, c, z, nr, ac, a.batch, r1_bf16=a.r1_bf16 and bf16,
                                      D_first=D_first, d_pair=a.d_pair == "on", phase_clock=phases,
                                      r1_channels_last=a.r1_layout == "nhwc")
        fl.update({f"train_{k}": count_flops(fn) for k, fn in parts.items()})    # also warms the R1 path
        free(device)
    G.requires_grad_(True)
    D.requires_grad_(True)
    G.zero_grad(set_to_none=True)
    D.zero_grad(set_to_none=True)
    per_image = (fl["train_G_main"] + fl["train_D_main"] + fl["train_R1"] / R1_INTERVAL) / a.batch
    res["flops"] = fl                           # per batch of a.batch images
    res["flops_per_train_image"] = per_image
    res["flops_note"] = FLOPS_NOTE
    res["peak_flops"], res["peak_source"] = peak

    # ---- timings of the parts (compiled when asked)
    if a.compile:
        compile_G(G, a.compile_mode, channels_last=a.channels_last == "auto")
    if a.compile_d:     # first-order uses only: D_first shares D's parameters; R1 differentiates eager D twice
        D_first["net"] = torch.compile(D, dynamic=False,    # batch n in G main, 2n joined in D main
                                       **compile_kwargs(a.compile_mode))
    steps, warm = a.steps, a.warmup
    only_train = a.train_only and a.train_step
    if a.profile and not only_train:    # --train-only: the train step's profile below, nothing else compiled
        profile(g_fwd_bwd, device)
    if not only_train:
        section(res, "G_forward", lambda: clock(g_fwd, steps, warm), device)
        section(res, "G_forward_backward", lambda: clock(g_fwd_bwd, steps, warm), device)
        G.zero_grad(set_to_none=True)
        section(res, "D_forward", lambda: clock(d_fwd, steps, warm), device)
        section(res, "D_forward_backward", lambda: clock(d_fwd_bwd, steps, warm), device)
        D.zero_grad(set_to_none=True)
    if "ms" in res.get("G_forward", {}):
        res["G_images_per_s"] = a.batch / (res["G_forward"]["ms"] / 1000)
    mfu = {"G_forward": None, "train": None}
    if peak[0] and "G_images_per_s" in res:
        mfu["G_forward"] = fl["G_forward"] / a.batch * res["G_images_per_s"] / peak[0]
    if a.parts:
        section(res, "parts", lambda: bench_parts(G, cond, c, z, nr, ac, clock, steps, warm), device)
    if a.train_step:
        G.requires_grad_(False)     # as make_train_step left them: each phase turns on its own network
        D.requires_grad_(False)
        lock = contextlib.nullcontext()
        if a.gpu_lock:      # the first step compiles (mostly CPU work) before the lock is taken
            res["train_compile_s"] = clock.seconds(step)[0]
            print(f"  [first train step (compiles): {res['train_compile_s']:.1f} s wall]", flush=True)
            wait_for_peers(a.gpu_lock, a.gpu_lock_peers)
            lock = gpu_lock(a.gpu_lock)
        with lock:
            if a.profile:
                for _ in range(max(1, warm)):
                    step()
                profile(step, device, rows=40, trace=a.profile_trace)
                print("R1 phase (eager D, double backward):")
                profile(parts["R1"], device, rows=25)
            section(res, "train_step", lambda: train_steps(step, clock, a, phases), device)
        t = res["train_step"]
        if "images_per_s" in t:
            t["achieved_tflops"] = per_image * t["images_per_s"] / 1e12
            if peak[0]:
                mfu["train"] = per_image * t["images_per_s"] / peak[0]
    res["mfu"] = mfu                            # fraction of the peak dense bf16 throughput (see peak_source)
    G.requires_grad_(True)
    D.requires_grad_(True)
    G.zero_grad(set_to_none=True)
    D.zero_grad(set_to_none=True)
    del parts, step
    free(device)
    if only_train:
        return

    # ---- batch-1 inference (conditioning included), eval mode, eager and compiled
    if a.compile:
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
    for name, fn in (("encoder", encoder), ("synthesize", synthesize), ("render", render),
                     ("superresolution", superresolution)):
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

        fn = torch.compile(fwd, **compile_kwargs(mode))

        def run():
            step_begin()
            with torch.no_grad(), ac():
                return fn(cond1, c1)

        r["compile_s"], out = clock.seconds(run)          # first call: tracing + compilation
        out = out.float().clone()
        ref = g_infer1().float()
        r["max_abs_diff_vs_eager"] = float((out - ref).abs().max())
        r.update(clock(run, a.steps, max(3, a.warmup)))   # CUDA graphs record on the 2nd/3rd call
    except torch.cuda.OutOfMemoryError:
        r["error"] = "OOM"
    except Exception as e:      # noqa: BLE001 -- a compile failure is a result, not a crash of the benchmark
        traceback.print_exc()
        r["error"] = error_string(e)
    return r


def bench_mesh(G, cond1, clock, a) -> dict:
    """training.inference.density_grid + skimage marching cubes, and the whole extract_mesh as
    _scripts/infer.py calls it (its own grid, marching cubes and vertex colours); fp32, z = 0."""
    from training import inference
    res_ = a.mesh_res
    r = {"resolution": res_}
    try:
        with torch.no_grad():
            planes = G.synthesize(cond1)
        r["grid_s"], sigma = clock.seconds(lambda: inference.density_grid(G, planes, res_))
        occ = inference.occupancy(sigma)
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
        r["extract_mesh_s"], mesh = clock.seconds(lambda: inference.extract_mesh(G, planes, res_, level=level))
        r["vertices"], r["faces"] = int(len(mesh.vertices)), int(len(mesh.faces))
    except torch.cuda.OutOfMemoryError:
        r["error"] = "OOM"
    except Exception as e:      # noqa: BLE001 -- e.g. skimage/trimesh missing: keep the grid time
        traceback.print_exc()
        r["error"] = error_string(e)
    return r


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


def make_train_step(G, D, cond, c, z, nr, ac, batch, r1_bf16=False, D_first=None, d_pair=True, phase_clock=None,
                    r1_channels_last=True):
    """One GAN step as training/training_loop.py runs its phases: G main, D main (fake + real: one joined D
    call when d_pair, as the trainer's default), R1 on real every 16th step (fp32 unless r1_bf16, gain 16);
    only the phase's network requires grad; Adam updates.
    D_first['net'] (default D) is the D of the first-order phases, a compiled D sharing D's parameters.
    phase_clock(name, fn) (default: call fn) runs each phase of step(), e.g. timing it.
    Returns (step, {'G_main': fn, 'D_main': fn, 'R1': fn})."""
    run = phase_clock or (lambda name, fn: fn())
    D_first = D_first if D_first is not None else {"net": D}
    opt_G = adam(G.parameters(), 0.0025, (0.0, 0.99), 1e-8)     # fused on a GPU, as the trainer's
    opt_D = adam(D.parameters(), 0.002, (0.0, 0.99), 1e-8)
    S, n = G.img_resolution, nr or G.neural_rendering_resolution
    real = {"image": torch.rand(batch, 3, S, S, device=c.device) * 2 - 1}
    real["image_raw"] = F.interpolate(real["image"], size=(n, n), mode="bilinear", antialias=True, align_corners=False)
    if G.use_mask:
        real["image_mask"] = (real["image_raw"][:, :1] > 0).float()
    st = {"i": 0, "fake": None}
    G.requires_grad_(False)
    D.requires_grad_(False)

    def g_main():
        G.requires_grad_(True)
        opt_G.zero_grad(set_to_none=True)
        with ac():
            out = G(cond, c, z=z, neural_rendering_resolution=nr)
            img = d_input(G, out, G.use_mask)
            loss = F.softplus(-D_first["net"](img, c)).float().mean()
        loss.backward()
        G.requires_grad_(False)
        opt_G.step()
        st["fake"] = {k: v.detach().float() for k, v in img.items()}

    group = pair_group(D, batch) if d_pair else None

    def d_main():
        D.requires_grad_(True)
        opt_D.zero_grad(set_to_none=True)
        with ac():
            Df, fake = D_first["net"], st["fake"]
            if group is None:
                loss = F.softplus(Df(fake, c)).float().mean() + F.softplus(-Df(real, c)).float().mean()
            else:
                logits = Df({k: join_pair(fake[k], real[k], group) for k in fake}, join_pair(c, c, group))
                f_logits, r_logits = split_pair(logits, group)
                loss = F.softplus(f_logits).float().mean() + F.softplus(-r_logits).float().mean()
        loss.backward()
        D.requires_grad_(False)
        opt_D.step()

    def r1():       # lazy R1 like training/loss.py (double backward through D: D is not compiled)
        D.requires_grad_(True)
        opt_D.zero_grad(set_to_none=True)
        with nets.fold_setting(True):      # eager D: folded convs (fewer kernels) whatever the compiled use
            with ac() if r1_bf16 else contextlib.nullcontext():
                pen, _, keep = r1_terms(D, r1_inputs(real, channels_last=r1_channels_last), c)
        (pen.mean() * (R1_GAMMA / 2) * R1_INTERVAL + keep).backward()
        D.requires_grad_(False)
        opt_D.step()

    def step():
        st["i"] += 1
        step_begin()
        run("G_main", g_main)
        run("D_main", d_main)
        if st["i"] % R1_INTERVAL == 0:
            run("R1", r1)
        return st["i"] % R1_INTERVAL == 0

    return step, {"G_main": g_main, "D_main": d_main, "R1": r1}


class PhaseTimes:
    """phase_clock of make_train_step: each phase's wall time (synchronised before and after), when on."""

    def __init__(self, clock):
        self.clock, self.on, self.times = clock, False, {}

    def __call__(self, name, fn):
        if not self.on:
            return fn()
        dt, out = self.clock.seconds(fn)
        self.times.setdefault(name, []).append(dt)
        return out

    def summary(self) -> dict:    # median ms of each phase
        return {k: 1000 * sorted(v)[len(v) // 2] for k, v in self.times.items()}


def step_stats(times: list[float], had_r1: list[bool], batch: int) -> dict:
    """Median plain step, mean R1 step, mean over the cycles and images/s (times in seconds)."""
    plain = sorted(t for t, r in zip(times, had_r1) if not r)
    with_r1 = [t for t, r in zip(times, had_r1) if r]
    mean = sum(times) / len(times)
    return {"ms": 1000 * plain[len(plain) // 2], "ms_min": 1000 * plain[0],
            "ms_r1_step": 1000 * sum(with_r1) / max(1, len(with_r1)), "ms_mean_with_r1": 1000 * mean,
            "images_per_s": batch / mean, "step_ms": [round(1000 * t, 2) for t in times]}


def train_steps(step, clock, a, phases: PhaseTimes | None = None) -> dict:
    """Warm-up, then whole 16-step cycles (exactly one R1 step in each), timed two ways:
    - synchronised: each step alone, the device idle before and after it (step_ms: a CUDA graph
      re-recorded shows as a spike), the headline until session 8;
    - ``pipelined``: the same number of steps back to back, no sync until the end, each step's time read
      from device events; the CPU queues the next step's work while the GPU runs, as in a training run
      (EG3D's sec/kimg is measured so; the trainer syncs once per tick);
    then, with phases, one more cycle with each phase timed on its own."""
    for _ in range(a.warmup):
        step()
    n = R1_INTERVAL * max(1, math.ceil(a.steps / R1_INTERVAL))
    clock.reset_peak()
    times, had_r1 = [], []
    for _ in range(n):
        dt, r1 = clock.seconds(step)
        times.append(dt)
        had_r1.append(r1)
    r = {**step_stats(times, had_r1, a.batch), "steps": n}
    clock.sync()
    marks, had_r1 = [clock.mark()], []
    for _ in range(n):
        had_r1.append(step())
        marks.append(clock.mark())
    r["pipelined"] = step_stats(clock.between(marks), had_r1, a.batch)
    r["peak_gib"] = clock.peak_gib()
    if phases is not None:
        phases.on = True
        for _ in range(R1_INTERVAL):
            step()
        phases.on = False
        r["phase_ms"] = phases.summary()
    return r


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


def fmt(r):
    if not r or "error" in r:
        return f"error: {(r or {}).get('error', 'not run')}"
    return f"{r['ms']:8.1f} ms (min {r['ms_min']:.1f})  peak {r['peak_gib']:.2f} GiB"


def pct(x):
    return "n/a" if x is None else f"{100 * x:.1f}%"


def report(r, cpu):
    print(f"\n{r.get('generator', '?')} preset={r['preset']} batch={r['batch']} nr={r.get('nr')} "
          f"samples={'+'.join(map(str, r.get('samples', ['?'])))} sr={r.get('img_resolution', '?')} "
          f"{'bf16' if r['bf16'] else 'fp32' if cpu else 'fp32/tf32'}"
          f"{' compiled (' + r['compile_mode'] + ')' if r['compile'] else ''}"
          f"{' +D compiled' if r.get('compile_d') else ''}{' R1 bf16' if r.get('r1_bf16') else ''}"
          f"{' no requires_grad guards' if r.get('guard_requires_grad') is False else ''}"
          f"{' channels-last ' + r['channels_last'] if r.get('channels_last') not in (None, '', 'auto') else ''}"
          f"{' SR noise ' + r['sr_noise'] if r.get('sr_noise') not in (None, 'preset') else ''}"
          f"{' layout-opt auto' if r.get('layout_opt') == 'auto' else ''}{' R1 NCHW' if r.get('r1_layout') == 'nchw' else ''}"
          f" lookup={r.get('lookup')} "
          f"fold={','.join(k for k, v in (r.get('fold') or {}).items() if v) or 'none'}")
    if "params_G" in r:
        print(f"  params: G {r['params_G'] / 1e6:.2f} M, D {r['params_D'] / 1e6:.2f} M")
    if "flops" in r:
        fl, b = r["flops"], r["batch"]
        print(f"  GFLOP/image: G fwd {fl['G_forward'] / b / 1e9:.2f}, G fwd+bwd {fl['G_forward_backward'] / b / 1e9:.2f},"
              f" D fwd+bwd {fl['D_forward_backward'] / b / 1e9:.3f}; train step {r['flops_per_train_image'] / 1e9:.2f}"
              f" (G main {fl['train_G_main'] / b / 1e9:.2f} + D main {fl['train_D_main'] / b / 1e9:.3f}"
              f" + R1/16 {fl['train_R1'] / 16 / b / 1e9:.3f})  [matmul/conv FLOPs only]")
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
        print(f"  G forward images/s   {r['G_images_per_s']:.1f}; MFU {pct(r['mfu']['G_forward'])}")
    if "train_step" in r:
        t = r["train_step"]
        if "error" in t:
            print(f"  train step           {fmt(t)}")
        else:
            print(f"  train step           {fmt(t)}; R1 step {t['ms_r1_step']:.1f} ms; mean with R1 "
                  f"{t['ms_mean_with_r1']:.1f} ms -> {t['images_per_s']:.1f} images/s, "
                  f"{t['achieved_tflops']:.2f} TFLOP/s, MFU {pct(r['mfu']['train'])} of {r['peak_source']}")
            if "pipelined" in t:
                p = t["pipelined"]
                print(f"  pipelined steps      {p['ms']:.1f} ms (min {p['ms_min']:.1f}); R1 step {p['ms_r1_step']:.1f} ms;"
                      f" mean with R1 {p['ms_mean_with_r1']:.1f} ms -> {p['images_per_s']:.1f} images/s"
                      f" (no sync between steps)")
            if "phase_ms" in t:
                print("  phases (median ms, synchronised): "
                      + ", ".join(f"{k} {v:.1f}" for k, v in t["phase_ms"].items()))
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
    if a.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device available")
    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cpu = device.type == "cpu"
    preset = a.preset or ("tiny" if cpu else "nova_body")
    a.batch = a.batch or (2 if cpu else 4)
    a.steps = a.steps or (3 if cpu else 10)
    a.warmup = a.warmup if a.warmup is not None else (1 if cpu else 3)
    a.mesh_res = a.mesh_res if a.mesh_res is not None else (0 if cpu else 256)
    a._mesh_done = False
    if a.threads:
        torch.set_num_threads(a.threads)
    # denormals after a few Adam steps slow CPU convolutions down up to 100x (GPUs flush them anyway)
    flush = cpu and torch.set_flush_denormal(True)
    # the arithmetic variants: 'auto' = the optimum with or without compile; restored when the run ends
    restore_arithmetic = set_compiled_arithmetic(a.compile)
    restore_layout = force_layout_optimization(a.layout_opt == "force")
    restore_guards = guard_requires_grad(a.guard_requires_grad == "on")    # on: as the trainer
    try:
        if a.fold != "auto":
            nets.set_fold(a.fold != "off", down_1x1=False if a.fold == "skip-off" else None)
        if a.lookup != "auto":
            vr.LOOKUP = a.lookup
        return run_all(a, device, preset)
    finally:
        if flush:
            torch.set_flush_denormal(False)
        restore_arithmetic()
        restore_layout()
        restore_guards()


def run_all(a, device, preset):
    cpu = device.type == "cpu"
    if not cpu:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    clock = Clock(device)
    modes = {"on": [True], "off": [False], "both": [False, True]}[a.bf16]
    nrs = a.nr or [None]
    results = []
    dev_name = torch.cuda.get_device_name(device) if not cpu else f"CPU ({platform.processor() or 'cpu'}, " \
        f"{torch.get_num_threads()} threads)"
    peak = peak_flops(dev_name, a)
    print(f"device: {dev_name}; torch {torch.__version__}; peak for MFU: "
          f"{'n/a' if peak[0] is None else f'{peak[0] / 1e12:.1f} TFLOP/s'} ({peak[1]}); FLOPs: {FLOPS_NOTE}")
    for nr in nrs:
        for bf16 in modes:
            r = {"preset": preset, "batch": a.batch, "nr": nr, "bf16": bf16, "compile": a.compile,
                 "compile_d": a.compile_d, "guard_requires_grad": a.guard_requires_grad == "on",
                 "d_pair": a.d_pair == "on", "r1_bf16": a.r1_bf16 and bf16, "r1_layout": a.r1_layout,
                 "fold": dict(nets.FOLD), "layout_opt": a.layout_opt, "channels_last": a.channels_last, "lookup": vr.LOOKUP,
                 "sr_noise": a.sr_noise or "preset",
                 "compile_mode": a.compile_mode if a.compile or a.compile_d else None, "device": dev_name,
                 "torch": torch.__version__}
            results.append(r)
            try:
                bench_config(a, preset, device, nr, bf16, clock, r, peak)
            except torch.cuda.OutOfMemoryError:
                r["error"] = "OOM"
            except Exception as e:      # noqa: BLE001 -- record it and go on with the next configuration
                traceback.print_exc()
                r["error"] = error_string(e)
            free(device)
            report(r, cpu)
            if a.json:
                save_json_atomic(a.json, results)
    return results


if __name__ == "__main__":
    main()
