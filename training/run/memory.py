"""How much memory a training configuration needs, checked before training starts.

A run that does not fit is killed by the kernel's out-of-memory killer (CPU) or stops with a CUDA
out-of-memory traceback, minutes into start-up and without saying what would fit.  ``check`` estimates
the peak of one process and refuses, with the estimate and the largest ``--batch`` that fits, when it
exceeds the memory available.

The estimate is a *probe step*: one training step (G main, G reg, D main, D reg, the optimiser steps
and the EMA update) of the real networks and losses at the real per-process batch, run on fake
tensors (``torch._subclasses.FakeTensorMode``: shapes and dtypes only, no arithmetic, no memory), with
every tensor storage that comes alive counted while it lives.  Its peak covers weights, gradients,
Adam states and activations; the EMA copy is added from the parameter count, and on the CPU the
process's memory so far, a fixed runtime overhead (kernel libraries, allocator slack, measured) and
the data-loader workers.  When it does not fit, the step is also probed at batch 1 to split the peak
into a fixed part and a per-image part, which gives the largest batch that fits.  Probe results are
cached (~/.cache/anime3d/memory_probe.json): a resumed run does not probe again.

The estimate is ``PROBE_FACTOR`` x the probe + ``RUNTIME_OVERHEAD``, fitted to real steps on the CPU
(docs/training.md, "Memory check").  A configuration whose rough bound (``rough_bound``) is far below
the available memory is accepted without the probe.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import weakref
from pathlib import Path

import torch

from training.errors import UserError

GiB = 2 ** 30
# the probe sees tensors only: kernels' scratch buffers, libraries paged in and allocator slack come on top.
# Fitted to real steps on the CPU (peak resident memory above the process's before them; probe in brackets):
# panic_head b1 6.67 GiB (6.18), tiny b2 2.67 (1.61), the tests' tiny b2 0.49 (0.24) and b8 0.70 (0.41)
PROBE_FACTOR = {"cpu": 1.1, "cuda": 0.8}
RUNTIME_OVERHEAD = {"cpu": 0.75 * GiB, "cuda": 0}
# On a GPU the check only refuses what clearly cannot fit (a lower bound: 0.8 x the probe): the probe of the
# four GPU runs of docs/results.md (bf16) read 0.53-1.11 x their measured peak (cuDNN's workspaces and the
# caching allocator are not modelled), and a CUDA out-of-memory error stops a run with a message anyway.
CPU_WORKER = 0.3 * GiB              # a forked data-loader worker: its own Python objects and prefetched batches
FIT_FRACTION = 0.9                  # the estimate must stay below this share of the available memory
ROUGH_SHARE = 0.25                  # below this share of the available memory the probe is skipped


# ---------------------------------------------------------------- available memory

def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _cgroup_available() -> int | None:
    """Room left under a cgroup v2 (or v1) memory limit, when the process runs under one."""
    for limit_f, usage_f in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                             ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                              "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_f).read_text().strip()
            usage = int(Path(usage_f).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:
            return max(int(limit) - usage, 0)
    return None


def available(device: torch.device) -> tuple[int | None, str]:
    """(bytes available to this process, what that is), None when unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free), f"free on {torch.cuda.get_device_name(device)}"
    vals = [v for v in (_meminfo_available(), _cgroup_available()) if v is not None]
    return (min(vals), "RAM available") if vals else (None, "RAM")


def resident() -> int:
    """This process's resident memory now (CPU)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# ---------------------------------------------------------------- the probe

def _import_networks(lpips_too: bool = False) -> None:
    """Import the network modules before a meta/fake context: tensors made at import time (module
    constants) must be real ones."""
    import importlib
    for m in ("training.triplane", "training.dual_discriminator", "training.loss"):
        importlib.import_module(m)
    if lpips_too:
        with contextlib.suppress(ImportError):
            import lpips  # noqa: F401

class _LiveBytes(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the bytes of every tensor storage created inside, while it lives; keeps the peak."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._refs: dict[int, weakref.ref] = {}

    def _track(self, t) -> None:
        st = t.untyped_storage()
        key = st._cdata
        if key in self._refs:
            return
        n = st.nbytes()
        self.live += n
        self.peak = max(self.peak, self.live)

        def gone(_ref, key=key, n=n):
            self.live -= n
            self._refs.pop(key, None)
        self._refs[key] = weakref.ref(st, gone)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._track(t)
        return out


def _fake_batch(sample: dict, batch: int, device) -> dict:
    out = {}
    for k, v in sample.items():
        if torch.is_tensor(v):
            out[k] = torch.zeros((batch,) + tuple(v.shape[1:]), dtype=v.dtype, device=device)
        else:
            out[k] = [f"probe{i}" for i in range(batch)]
    return out


def probe_step(cfg, sample: dict, batch: int, device: torch.device) -> dict:
    """Peak bytes of one training step of ``cfg`` at ``batch`` images per process, on fake tensors.
    ``sample``: one collated dataset item (its shapes are used)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from training.run import distributed, train_step
    from training.loss import ReconGANLoss, gan_active
    lc = cfg.loss
    gan_nimg = lc.gan_start_kimg * 1000     # the GAN's phases run from here: the step's largest form
    _import_networks(lc.lpips_weight > 0)
    with FakeTensorMode(allow_non_fake_inputs=True), _LiveBytes() as live, _quiet(), torch.device(device):
        G, D = train_step.build_networks(cfg)       # built on the device (.to() cannot move fake parameters)
        train_step.set_train_mode(G, cfg.freeze_bn)
        train_step.set_train_mode(D, cfg.freeze_bn)
        G.requires_grad_(False)
        D.requires_grad_(False)
        use_tv = lc.tv_weight > 0 and lc.tv_interval > 0
        use_r1 = lc.gan_weight > 0 and lc.r1_interval > 0 and (lc.r1_gamma > 0 or lc.r1_gamma_mask > 0)
        opt_G = train_step.make_optimizer(G.parameters(), cfg.glr, cfg, lc.tv_interval if use_tv else 0)
        opt_D = train_step.make_optimizer(D.parameters(), cfg.dlr, cfg, lc.r1_interval if use_r1 else 0)
        lp = None
        if lc.lpips_weight > 0:
            import lpips       # same network as the run's (missing weights are the run's own error)
            lp = lpips.LPIPS(net=lc.lpips_net, pretrained=False, pnet_rand=True, verbose=False)
            lp.eval().requires_grad_(False)
        b = _fake_batch(sample, batch, device)
        box = float(G.config.get("box_warp") or 0.7)
        autocast = torch.bfloat16 if train_step.resolve_bf16(cfg, device) else None
        loss = ReconGANLoss(G, D, lc, box=box, seed=cfg.seed,
                            neural_rendering_resolution=cfg.neural_rendering_resolution or None,
                            render_kwargs={"perturb": cfg.ray_perturb}, use_mask_d=train_step.use_mask_discriminator(D),
                            autocast_dtype=autocast, lpips_module=lp, ortho_views=sample_views(cfg))
        d = distributed.Dist(device=device)
        phases = [("Gmain", G, opt_G), ("Greg", G, opt_G), ("Dmain", D, opt_D), ("Dreg", D, opt_D)]
        for name, module, opt in phases:
            if name == "Greg" and not use_tv or name == "Dreg" and not use_r1 or \
                    name in ("Dmain", "Dreg") and not gan_active(lc, gan_nimg):
                continue
            module.requires_grad_(True)
            opt.zero_grad(set_to_none=True)
            stats = loss.accumulate_gradients(name, b, gain=1, step=0, cur_nimg=gan_nimg)
            module.requires_grad_(False)
            if stats is not None:
                distributed.guarded_step(opt, list(module.parameters()), d)
        g_bytes = sum(t.numel() * t.element_size() for t in list(G.parameters()) + list(G.buffers()))
    return {"peak": live.peak + g_bytes, "ema": g_bytes}


def sample_views(cfg) -> tuple:
    return tuple(v.strip() for v in cfg.ortho_views.split(",") if v.strip())


@contextlib.contextmanager
def _quiet():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ---------------------------------------------------------------- rough bound

def rough_bound(cfg, per_gpu: int) -> int:
    """A cheap estimate of a step's peak (bytes) from the sizes in the configuration, only used to skip
    the probe for runs far below the available memory.  Weights, gradients, Adam states, the EMA copy and
    the optimiser step's temporaries from the parameter counts (networks built on the meta device);
    activations per image from the ray samples, pixels and discriminator widths.  Within 1.1-3.9x of the
    probe on every preset (docs/training.md "Memory check"); the probe is skipped below a quarter of the
    available memory, so even a bound off by 2x leaves the run room."""
    from training.run import train_step
    from training.dual_discriminator import DiscriminatorBlock
    from training.loss import parse_view_weights
    _import_networks()
    with torch.device("meta"), _quiet():
        G, D = train_step.build_networks(cfg)
    gc, lc = G.config, cfg.loss
    gan = lc.gan_weight > 0
    params = sum(p.numel() for p in G.parameters()) * 7 + sum(p.numel() for p in D.parameters()) * (6 if gan else 1)
    nr = cfg.neural_rendering_resolution or gc.get("neural_rendering_resolution", 64)
    rk = gc.get("rendering_kwargs") or {}
    samples = int(rk.get("depth_resolution", 48)) + int(rk.get("depth_resolution_importance", 48))
    recon = sum(w > 0 for w in parse_view_weights(lc.view_weights).values())
    views = recon + gan
    width = gc.get("plane_channels", 32) * gc.get("plane_layers", 1) * 3 + 2 * gc.get("decoder_hidden", 64)
    img, plane, cond = gc.get("img_resolution", 512), gc.get("plane_resolution", 256), gc.get("cond_resolution", 256)
    act = views * nr * nr * samples * width * 4 * 6          # ray samples: features, MLP, weights (fwd + bwd)
    act += views * img * img * 1024 * 3                       # super-resolution
    act += plane * plane * 1024 * 8 + cond * cond * 1024 * 4  # backbone, encoders
    if gan:     # D on fakes and reals, R1's double backward
        act += sum(m.resolution ** 2 * m.conv0.weight.shape[0] for m in D.modules()
                   if isinstance(m, DiscriminatorBlock)) * 4 * 12 * 4
    if lc.lpips_weight > 0:   # VGG/AlexNet on every reconstructed view, super-resolved and raw
        act += recon * (img * img + max(nr, 64) ** 2) * 64 * 4 * 40
    return int(params * 4 + per_gpu * act)


# ---------------------------------------------------------------- the check

@dataclasses.dataclass
class Estimate:
    per_process: int            # bytes at the configured batch
    fixed: int                  # bytes independent of the batch
    per_image: int              # bytes per image of the per-process batch
    avail: int | None
    what: str
    probed: bool

    def fits(self, batch: int) -> bool:
        return self.avail is None or self.fixed + batch * self.per_image <= FIT_FRACTION * self.avail


def _cache_file() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "anime3d" / "memory_probe.json"


def _probe_key(cfg, sample: dict, batch: int, device: torch.device) -> str:
    """What a probe's result depends on: the learning settings, the batch, the device, the data's shapes."""
    import hashlib
    import json
    from training.training_loop import learning_config
    shapes = {k: list(v.shape[1:]) for k, v in sample.items() if torch.is_tensor(v)}
    key = [learning_config(cfg.to_dict()), batch, device.type, shapes, torch.__version__,
           torch.cuda.get_device_name(device) if device.type == "cuda" else None]
    return hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def cached_probe(cfg, sample: dict, batch: int, device: torch.device) -> int:
    """``probe_step``'s peak, remembered in ~/.cache/anime3d/memory_probe.json (a resumed or repeated run
    starts without probing again)."""
    import json
    from training.errors import save_json_atomic
    f, key = _cache_file(), _probe_key(cfg, sample, batch, device)
    try:
        cache = json.loads(f.read_text()) if f.is_file() else {}
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return int(cache[key])
    peak = probe_step(cfg, sample, batch, device)["peak"]
    cache[key] = peak
    with contextlib.suppress(UserError, OSError):     # a read-only home only costs the next run a probe
        save_json_atomic(f, dict(list(cache.items())[-200:]))
    return peak


def estimate(cfg, sample: dict, per_gpu: int, device: torch.device, procs_here: int = 1) -> Estimate:
    avail, what = available(device)
    if avail is not None and device.type == "cpu":
        avail = avail // max(procs_here, 1)      # CPU processes of one machine share its RAM
    kind = "cuda" if device.type == "cuda" else "cpu"
    extra = RUNTIME_OVERHEAD[kind]
    if kind == "cpu":
        extra += resident() + cfg.workers * CPU_WORKER
    rough = rough_bound(cfg, per_gpu) + extra
    if avail is not None and rough <= ROUGH_SHARE * avail:
        return Estimate(rough, rough, 0, avail, what, probed=False)
    full = int(PROBE_FACTOR[kind] * cached_probe(cfg, sample, per_gpu, device))
    est = Estimate(extra + full, extra + full, 0, avail, what, probed=True)
    if per_gpu > 1 and not est.fits(per_gpu):      # the batch-1 probe splits it, for the batch that fits
        one = int(PROBE_FACTOR[kind] * cached_probe(cfg, sample, 1, device))
        est.per_image = max((full - one) // (per_gpu - 1), 0)
        est.fixed = extra + full - per_gpu * est.per_image
    return est


def check(cfg, ds, per_gpu: int, device: torch.device, world: int = 1) -> Estimate | None:
    """Refuse (UserError) a configuration whose estimated peak does not fit; returns the estimate."""
    if not getattr(cfg, "memory_check", True):
        return None
    from training.dataset import collate
    procs_here = int(os.environ.get("LOCAL_WORLD_SIZE", world)) if device.type == "cpu" else 1
    with torch.random.fork_rng(devices=[]):       # the check must not move the run's random stream
        sample = collate([ds[0]])
        est = estimate(cfg, sample, per_gpu, device, procs_here)
    if est.fits(per_gpu):
        return est
    fit = next((b for b in range(per_gpu - 1, 0, -1) if est.fits(b)), 0)
    need = est.per_process / GiB
    have = est.avail / GiB
    where = f"{have:.1f} GiB {est.what}" + (f" ({procs_here} processes here)" if procs_here > 1 else "")
    if fit:
        hint = (f"--batch {fit * world} fits (about {(est.fixed + fit * est.per_image) / GiB:.1f} GiB"
                + (f", {fit} per process" if world > 1 else "") + ")")
    else:
        hint = ("even 1 image per process does not fit: lower --neural-rendering-resolution or the sample "
                "counts, use a smaller --preset, or a machine with more memory")
    about = "at least" if device.type == "cuda" else "about"
    raise UserError(f"--batch {cfg.batch}: this configuration needs {about} {need:.1f} GiB per process "
                    f"({est.fixed / GiB:.1f} GiB fixed + {est.per_image / GiB:.2f} GiB per image), "
                    f"{where}; {hint} (--no-memory-check skips this check)")
