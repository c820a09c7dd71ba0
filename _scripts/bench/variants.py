"""Compiled forward+backward of one part of the EG3D training step under named variants, side by side: the
triplane lookup (inductor's gather vs the fused Triton kernel, with a check that they agree), the
super-resolution (noise, channels-last activations and gradients, grouped modulated convs), the
discriminator and the backbone (channels-last activations and gradients).  Each variant is compiled on its
own (torch.compile, default mode: no CUDA graphs) and timed as _scripts.bench.models times (its Clock:
median of synchronised runs, peak memory); --profile adds the kernel time by class.  The whole step's effect is measured by _scripts.bench.models; this is where the parts' variants
are compared quickly (a part compiles in under a minute, the whole step in 4-5).

    python -m _scripts.bench.variants --parts lookup sr --json out.json          # GPU, EG3D FFHQ-512 sizes
    python -m _scripts.bench.variants --device cpu --size tiny --parts sr        # CPU smoke run
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from _scripts.bench.models import Clock, build_D, d_input, kernel_classes, make_inputs
from training import networks_stylegan2 as nets
from training import volumetric_rendering as vr
from training.errors import cli_main, save_json_atomic
from training.superresolution import SuperresolutionHybrid
from training.triplane import build_preset, set_compiled_arithmetic
from training.run.compiler import force_layout_optimization, guard_requires_grad

# (batch, neural rendering resolution, samples per ray, plane resolution): EG3D FFHQ-512 and a CPU size
SIZES = {"eg3d": dict(preset="eg3d_ffhq512", batch=16, nr=64, samples=48, img=512),
         "tiny": dict(preset="tiny", batch=2, nr=16, samples=8, img=None)}
PARTS = ("lookup", "sr", "D", "backbone")
# name -> settings: noise (SR noise inputs), cl (channels-last activations), grads (CHANNELS_LAST_GRADS),
# fused (grouped modulated convs)
SR_VARIANTS = {"base": dict(noise=True, cl=False, grads=True, fused=False),
               "no_noise": dict(noise=False, cl=False, grads=True, fused=False),
               "no_noise_cl_nograds": dict(noise=False, cl=True, grads=False, fused=False),
               "no_noise_cl": dict(noise=False, cl=True, grads=True, fused=False),
               "no_noise_fused": dict(noise=False, cl=False, grads=True, fused=True)}
CL_VARIANTS = {"base": dict(cl=False, grads=True), "cl_nograds": dict(cl=True, grads=False),
               "cl": dict(cl=True, grads=True)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--size", default=None, choices=sorted(SIZES), help="default: eg3d on CUDA, tiny on CPU")
    p.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    p.add_argument("--sr-variants", nargs="+", default=list(SR_VARIANTS), choices=list(SR_VARIANTS))
    p.add_argument("--cl-variants", nargs="+", default=list(CL_VARIANTS), choices=list(CL_VARIANTS),
                   help="variants of D and the backbone")
    p.add_argument("--lookup-blocks", nargs="*", default=["64,4"],
                   help="Triton lookup (points per program, warps) pairs to time, forward and backward alike")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--no-compile", action="store_true", help="eager (CPU smoke runs)")
    p.add_argument("--profile", action="store_true", help="kernel time by class for each variant")
    p.add_argument("--json", default=None)
    return p.parse_args(argv)


def maybe_compile(fn, a):
    torch._dynamo.reset()
    return fn if a.no_compile else torch.compile(fn)


def kernel_profile(fn, device):
    if device.type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as p:
        fn()
        torch.cuda.synchronize()
    return kernel_classes(p.key_averages())


def run_variant(name, fn, clock, a, device, out):
    t0 = time.perf_counter()
    try:
        r = clock(fn, a.steps, a.warmup)
        if a.profile:
            r["kernels"] = kernel_profile(fn, device)
    except Exception as e:      # one variant's failure (e.g. out of memory) does not stop the others
        r = {"error": f"{type(e).__name__}: {e}"[:1000]}
    r["wall_s"] = round(time.perf_counter() - t0, 1)
    out[name] = r
    line = f"{r['ms']:8.2f} ms" if "ms" in r else r["error"].splitlines()[0]
    print(f"  {name:28s} {line}  ({r['wall_s']} s wall)", flush=True)
    if r.get("kernels"):
        print(r["kernels"], flush=True)
    if device.type == "cuda":
        torch.cuda.empty_cache()


def bench_lookup(a, size, device, clock, ac):
    """Mean triplane feature at the coarse pass's points: gather (inductor) vs the Triton kernel."""
    from training import triplane_triton
    B, C, R = size["batch"], 32, 256 if size["preset"] == "eg3d_ffhq512" else 32
    N = size["nr"] ** 2 * size["samples"]
    g = torch.Generator(device="cpu").manual_seed(0)
    # the backbone's output under inductor's layout: channels-last [B, 96, R, R] viewed as [B, 3, 32, R, R]
    planes = torch.randn(B, 3 * C, R, R, generator=g).to(device, torch.bfloat16)
    planes = planes.contiguous(memory_format=torch.channels_last).view(B, 3, C, R, R)
    xyz = ((torch.rand(B, N, 3, generator=g) - 0.5) * 0.7).to(device)
    gout = torch.randn(B, N, C, generator=g).to(device)
    res = {"points": B * N}

    def make(lookup):
        def f(p):
            vr.LOOKUP = lookup
            return vr.triplane_features(p, xyz, 0.7)
        cf = maybe_compile(f, a)

        def fwd():
            with torch.no_grad():
                return cf(planes)

        def fwd_bwd():
            p = planes.detach().requires_grad_(True)
            (cf(p) * gout).sum().backward()
            return p.grad
        return fwd, fwd_bwd

    old = vr.LOOKUP
    try:
        outs = {}
        for lookup in ("gather", "triton"):
            if lookup == "triton" and not triplane_triton.available(planes):
                print("  triton: not available here")
                continue
            blocks = a.lookup_blocks if lookup == "triton" else ["-"]
            for blk in blocks:
                name = lookup if blk == "-" else f"triton_{blk.replace(',', 'x')}"
                if lookup == "triton":
                    n, w = (int(v) for v in blk.split(","))
                    triplane_triton.CONFIG.update(fwd=(n, w), bwd=(n, w))
                fwd, fwd_bwd = make(lookup)
                outs[name] = (fwd().float(), fwd_bwd().float())
                run_variant(f"{name} forward", fwd, clock, a, device, res)
                run_variant(f"{name} forward+backward", fwd_bwd, clock, a, device, res)
        ref = outs.get("gather")
        for name, (f, gp) in outs.items():
            if name != "gather" and ref is not None:
                res[f"{name} max_abs_diff"] = {"features": (f - ref[0]).abs().max().item(),
                                               "plane_grad": (gp - ref[1]).abs().max().item(),
                                               "plane_grad_scale": ref[1].abs().max().item()}
                print(f"  {name} vs gather: {res[f'{name} max_abs_diff']}", flush=True)
    finally:
        vr.LOOKUP = old
    return res


def bench_sr(a, size, device, clock, ac):
    B, nr = size["batch"], size["nr"]
    G = build_preset(size["preset"])
    kw = dict(channels=G.superresolution.channels, img_resolution=G.superresolution.img_resolution,
              input_resolution=G.superresolution.input_resolution,
              block_channels=(G.superresolution.block0.out_channels, G.superresolution.block1.out_channels))
    del G
    g = torch.Generator(device="cpu").manual_seed(0)
    feat = torch.randn(B, kw["channels"], nr, nr, generator=g).to(device)
    ws = torch.randn(B, 3, 512, generator=g).to(device)
    res = {}
    for name in a.sr_variants:
        v = SR_VARIANTS[name]
        torch.manual_seed(0)
        sr = SuperresolutionHybrid(**kw, use_noise=v["noise"], channels_last=v["cl"]).to(device).train()
        nets.CHANNELS_LAST_GRADS = v["grads"]
        fused = True if v["fused"] else None
        f = maybe_compile(lambda x, w: sr(x[:, :3], x, w, noise_mode="random", fused_modconv=fused), a)

        def fwd_bwd():
            x = feat.detach().requires_grad_(True)
            with ac():
                y = f(x, ws)
            y.float().square().mean().backward()
        run_variant(name, fwd_bwd, clock, a, device, res)
        del sr, f
    return res


def bench_cl_part(part, a, size, device, clock, ac):
    """D on a joined fake+real batch (D main) or the backbone (planes from z, front image, encoder features)."""
    B = size["batch"]
    res = {}
    for name in a.cl_variants:
        v = CL_VARIANTS[name]
        torch.manual_seed(0)
        G = build_preset(size["preset"]).to(device).train()
        cond, c = make_inputs(G, B, device)
        nets.CHANNELS_LAST_GRADS = v["grads"]
        if part == "D":
            D = build_D(size["preset"], G, device).train()
            with torch.no_grad(), ac():
                fake = d_input(G, G(cond, c), G.use_mask)
            img = {k: torch.cat([t, t]).detach().float() for k, t in fake.items()}
            cc = torch.cat([c, c])
            del G
            if v["cl"]:
                nets.set_channels_last(D)
            f = maybe_compile(D, a)

            def fwd_bwd():
                x = {k: t.requires_grad_(False) for k, t in img.items()}
                with ac():
                    y = f(x, cc)
                F.softplus(y).float().mean().backward()
        else:
            if v["cl"]:
                nets.set_channels_last(G.backbone)
            with torch.no_grad():
                front = G._prep(cond["front"])
                feat = G.encoder(front)
            z = torch.randn(B, G.z_dim, device=device)
            f = maybe_compile(G.backbone, a)

            def fwd_bwd():
                with ac():
                    planes, _ = f(z, front, feat, c=None)
                planes.float().square().mean().backward()
        run_variant(name, fwd_bwd, clock, a, device, res)
        del f
    return res


@cli_main
def main(argv=None):
    a = parse_args(argv)
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("variants: --device cuda but no CUDA device here")
    size = SIZES[a.size or ("eg3d" if device.type == "cuda" else "tiny")]
    ac = (lambda: torch.autocast(device.type, dtype=torch.bfloat16))
    clock = Clock(device)
    restore_arith = set_compiled_arithmetic(not a.no_compile)
    restore_layout = force_layout_optimization(True)
    restore_guards = guard_requires_grad(True)
    old_grads = nets.CHANNELS_LAST_GRADS        # the variants switch it
    out = {"size": size, "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
           "torch": torch.__version__}
    try:
        for part in a.parts:
            print(f"== {part}", flush=True)
            if part == "lookup":
                out[part] = bench_lookup(a, size, device, clock, ac)
            elif part == "sr":
                out[part] = bench_sr(a, size, device, clock, ac)
            else:
                out[part] = bench_cl_part(part, a, size, device, clock, ac)
            if a.json:
                save_json_atomic(a.json, out)
    finally:
        nets.CHANNELS_LAST_GRADS = old_grads
        restore_layout()
        restore_guards()
        restore_arith()
    return out


if __name__ == "__main__":
    main()
