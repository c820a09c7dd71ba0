"""Model benchmark: parameters, forward / forward+backward time, images/s and peak memory of G and D.

    python -m _scripts.bench.models --preset nova_body --batch 4 --bf16 both --device cuda
    python -m _scripts.bench.models --preset eg3d_ffhq512 --batch 16 --train-step --compile --nr 64 128
    python -m _scripts.bench.models                       # CPU: the tiny preset, batch 2

Presets come from training.triplane.PRESETS.  --train-step times a full GAN
step the EG3D way (G main, D main on fake+real, R1 on real every 16 steps,
Adam updates; images/s = batch / mean step time over 16 steps).  --compile
compiles the generator's per-point field, backbone and super-resolution
(not D: R1 differentiates D twice).  fp32 runs on CUDA allow TF32 matmuls.
"""
from __future__ import annotations

import argparse
import contextlib
import platform
import resource
import time

import torch
import torch.nn.functional as F

from training import cameras
from training.errors import UserError, cli_main, save_json_atomic
from training.triplane import PRESETS, build_preset

D_SIZES = {"tiny": dict(channel_base=256, channel_max=32)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m _scripts.bench.models", description=__doc__.split("\n")[0])
    p.add_argument("--preset", default=None, choices=sorted(PRESETS), help="default: tiny on CPU, nova_body on CUDA")
    p.add_argument("--variant", default=None, help="generator class instead of the preset's (e.g. TriPlaneGenerator_v0)")
    p.add_argument("--batch", type=int, default=None, help="default: 2 on CPU, 4 on CUDA")
    p.add_argument("--nr", type=int, nargs="*", default=None, help="neural rendering resolution(s) (default: preset)")
    p.add_argument("--bf16", default="off", choices=["on", "off", "both"])
    p.add_argument("--compile", action="store_true")
    p.add_argument("--device", default=None, choices=["cuda", "cpu"])
    p.add_argument("--steps", type=int, default=None, help="timed iterations (default 3 CPU / 10 CUDA)")
    p.add_argument("--warmup", type=int, default=None, help="untimed iterations first (default 1 CPU / 3 CUDA)")
    p.add_argument("--train-step", action="store_true", help="also time full GAN steps with R1 every 16")
    p.add_argument("--samples", type=int, nargs=2, default=None, metavar=("COARSE", "FINE"),
                   help="depth_resolution and depth_resolution_importance (default: preset)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--profile", action="store_true", help="print the top kernels of G forward+backward")
    p.add_argument("--json", default=None, help="write the results here")
    return p.parse_args(argv)


class Clock:
    """Wall time of a callable (synchronised on CUDA) and peak memory over the runs."""

    def __init__(self, device):
        self.device = device

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def __call__(self, fn, steps, warmup):
        for _ in range(warmup):
            fn()
        self.sync()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(steps):
            t = time.perf_counter()
            fn()
            self.sync()
            times.append(time.perf_counter() - t)
        peak = (torch.cuda.max_memory_allocated() if self.device.type == "cuda"
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        times.sort()
        return {"ms": 1000 * times[len(times) // 2], "ms_min": 1000 * times[0], "peak_gib": peak / 2 ** 30}


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
    img = {"image": out["image"], "image_raw": out["image_raw"]}
    if use_mask:
        img["image_mask"] = F.interpolate(out["image_alpha"], size=out["image"].shape[-2:], mode="bilinear",
                                          align_corners=False)
    return img


def bench_config(a, preset, device, nr, bf16, clock) -> dict:
    torch.manual_seed(0)
    overrides = {}
    if a.samples:
        overrides["rendering_kwargs"] = dict(depth_resolution=a.samples[0], depth_resolution_importance=a.samples[1])
    G = build_preset(preset, variant=a.variant, **overrides).to(device).train()
    D = build_D(preset, G, device).train()
    if a.compile:
        G.compile_renderer()
        G.backbone = torch.compile(G.backbone)
        G.superresolution = torch.compile(G.superresolution)
    cond, c = make_inputs(G, a.batch, device)
    ac = (torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext)
    res = {"preset": preset, "generator": type(G).__name__, "batch": a.batch, "nr": nr, "bf16": bf16,
           "compile": a.compile, "img_resolution": G.img_resolution,
           "samples": [G.rendering_kwargs["depth_resolution"], G.rendering_kwargs["depth_resolution_importance"]],
           "params_G": sum(p.numel() for p in G.parameters()), "params_D": sum(p.numel() for p in D.parameters())}
    z = torch.randn(a.batch, G.z_dim, device=device)

    def g_fwd():
        with torch.no_grad(), ac():
            return G(cond, c, z=z, neural_rendering_resolution=nr)

    def g_fwd_bwd():
        with ac():
            out = G(cond, c, z=z, neural_rendering_resolution=nr)
            loss = out["image"].float().square().mean() + out["image_raw"].float().square().mean()
        loss.backward()

    with torch.no_grad(), ac():
        fake = d_input(G, G(cond, c, z=z, neural_rendering_resolution=nr), G.use_mask)
    fake = {k: v.detach().float() for k, v in fake.items()}

    def d_fwd():
        with torch.no_grad(), ac():
            return D(fake, c)

    def d_fwd_bwd():
        with ac():
            loss = F.softplus(D(fake, c)).float().mean()
        loss.backward()

    steps, warm = a.steps, a.warmup
    if a.profile:
        profile(g_fwd_bwd, device)
    res["G_forward"] = clock(g_fwd, steps, warm)
    res["G_forward_backward"] = clock(g_fwd_bwd, steps, warm)
    res["D_forward"] = clock(d_fwd, steps, warm)
    res["D_forward_backward"] = clock(d_fwd_bwd, steps, warm)
    res["G_images_per_s"] = a.batch / (res["G_forward"]["ms"] / 1000)
    G.zero_grad(set_to_none=True)
    D.zero_grad(set_to_none=True)
    # inference at batch 1 (conditioning included), eval mode
    G.eval()
    cond1 = {k: v[:1] for k, v in cond.items()}

    def g_infer1():
        with torch.no_grad(), ac():
            return G(cond1, c[:1], neural_rendering_resolution=nr)["image"]

    res["G_inference_batch1"] = clock(g_infer1, steps, warm)
    G.train()
    if a.train_step:
        res["train_step"] = train_steps(G, D, cond, c, z, nr, ac, clock, a)
    return res


def profile(fn, device, rows=25):
    from torch.profiler import ProfilerActivity, profile as prof
    fn()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with prof(activities=acts) as p:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(p.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=60))


def train_steps(G, D, cond, c, z, nr, ac, clock, a) -> dict:
    """Full EG3D-style steps: G main, D main (fake + real), R1 on real every 16th step; Adam updates."""
    opt_G = torch.optim.Adam(G.parameters(), lr=0.0025, betas=(0.0, 0.99), eps=1e-8)
    opt_D = torch.optim.Adam(D.parameters(), lr=0.002, betas=(0.0, 0.99), eps=1e-8)
    S, n = G.img_resolution, nr or G.neural_rendering_resolution
    real = {"image": torch.rand(a.batch, 3, S, S, device=c.device) * 2 - 1}
    real["image_raw"] = F.interpolate(real["image"], size=(n, n), mode="bilinear", antialias=True, align_corners=False)
    if G.use_mask:
        real["image_mask"] = (real["image"][:, :1] > 0).float()
    counter = {"i": 0}

    def step():
        counter["i"] += 1
        # G main
        opt_G.zero_grad(set_to_none=True)
        with ac():
            out = G(cond, c, z=z, neural_rendering_resolution=nr)
            loss = F.softplus(-D(d_input(G, out, G.use_mask), c)).float().mean()
        loss.backward()
        opt_G.step()
        # D main on the (detached) fakes and the reals
        opt_D.zero_grad(set_to_none=True)
        fake = {k: v.detach() for k, v in d_input(G, out, G.use_mask).items()}
        with ac():
            loss = F.softplus(D(fake, c)).float().mean() + F.softplus(-D(real, c)).float().mean()
        loss.backward()
        if counter["i"] % 16 == 0:     # lazy R1 (double backward through D: not compiled)
            r = {k: v.detach().requires_grad_(True) for k, v in real.items()}
            with ac():
                logits = D(r, c)
            grads = torch.autograd.grad(logits.float().sum(), [r["image"], r["image_raw"]], create_graph=True)
            penalty = sum(g.float().square().flatten(1).sum(1) for g in grads).mean() * (5.0 / 2) * 16
            penalty.backward()
        opt_D.step()

    r = clock(step, max(16, a.steps), a.warmup)
    # the median step misses the R1 step: report the mean over a 16-step cycle as well
    t = time.perf_counter()
    for _ in range(16):
        step()
    clock.sync()
    cycle = (time.perf_counter() - t) / 16
    r["ms_mean_with_r1"] = 1000 * cycle
    r["images_per_s"] = a.batch / cycle
    return r


def fmt(r):
    return f"{r['ms']:8.1f} ms (min {r['ms_min']:.1f})  peak {r['peak_gib']:.2f} GiB"


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
    if a.threads:
        torch.set_num_threads(a.threads)
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
    print(f"device: {dev_name}; torch {torch.__version__}")
    for nr in nrs:
        for bf16 in modes:
            r = bench_config(a, preset, device, nr, bf16, clock)
            r["device"] = dev_name
            results.append(r)
            print(f"\n{r['generator']} preset={preset} batch={a.batch} nr={nr or 'preset'} "
                  f"samples={r['samples'][0]}+{r['samples'][1]} sr={r['img_resolution']} "
                  f"{'bf16' if bf16 else 'fp32/tf32' if not cpu else 'fp32'}{' compiled' if a.compile else ''}")
            print(f"  params: G {r['params_G'] / 1e6:.2f} M, D {r['params_D'] / 1e6:.2f} M")
            for k in ("G_forward", "G_forward_backward", "D_forward", "D_forward_backward", "G_inference_batch1"):
                print(f"  {k:20s} {fmt(r[k])}")
            print(f"  G forward images/s   {r['G_images_per_s']:.1f}")
            if "train_step" in r:
                t = r["train_step"]
                print(f"  train step           {fmt(t)}; mean with R1 {t['ms_mean_with_r1']:.1f} ms "
                      f"-> {t['images_per_s']:.1f} images/s")
            if not cpu:
                torch.cuda.empty_cache()
    if a.json:
        save_json_atomic(a.json, results)
    return results


if __name__ == "__main__":
    main()
