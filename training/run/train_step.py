"""One training step, the one definition of it: the networks and optimisers a run trains (build_models),
and TrainStep, the phases (G main, G regularisation, D main, D regularisation) with their DDP
wrappers, compilation and guards.  ``train()`` runs it, and so does the model benchmark
(``_scripts.bench.models``), so that a change of speed shows in both or neither.
"""
from __future__ import annotations

import copy
import functools
import math

import torch

from training import cameras
from training.errors import UserError
from training.loss import LossConfig, ReconGANLoss

from training import dual_discriminator as ddm, triplane
from training.run.distributed import Dist, guarded_step, sync_params, wrap_ddp
from training.run.compiler import compile_kwargs, force_layout_optimization, guard_requires_grad, uses_cudagraphs, resolve_compile
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from training.training_loop import TrainConfig


# ---------------------------------------------------------------- networks

def build_networks(cfg: TrainConfig):
    """Generator from a preset of training.triplane (optionally another variant, JSON overrides); D sized to it."""
    g_over, d_over = copy.deepcopy(cfg.g_kwargs), copy.deepcopy(cfg.d_kwargs)
    if cfg.generator and cfg.generator not in triplane.GENERATORS:
        raise UserError(f"--generator: {cfg.generator!r} is not one of {sorted(triplane.GENERATORS)}")
    try:
        if cfg.preset:
            if cfg.preset not in triplane.PRESETS:
                raise UserError(f"--preset: {cfg.preset!r} is not one of {sorted(triplane.PRESETS)}")
            G = triplane.build_preset(cfg.preset, cfg.generator or None, **g_over)
        else:
            G = triplane.GENERATORS[cfg.generator or "TriPlaneGenerator"](**g_over)
    except (TypeError, ValueError) as e:
        raise UserError(f"--g-kwargs: {e}") from None
    if not hasattr(ddm, cfg.discriminator):
        raise UserError(f"--discriminator: {cfg.discriminator!r} not in training.dual_discriminator")
    try:
        D = getattr(ddm, cfg.discriminator)(**discriminator_kwargs(G, d_over))
    except (TypeError, ValueError) as e:
        raise UserError(f"--d-kwargs: {e}") from None
    return G, D


def discriminator_kwargs(G, overrides: dict) -> dict:
    """Discriminator sizes follow the generator's output unless overridden."""
    gc = getattr(G, "config", {}) or {}
    kw = {"c_dim": 25, "img_resolution": gc.get("img_resolution", 512), "img_channels": 3}
    kw.update(overrides)
    return kw


def set_train_mode(module: torch.nn.Module, freeze_bn: bool) -> None:
    """Train mode; with freeze_bn, BatchNorm keeps its running statistics (batch-size independent, so 1 and
    N processes compute the same thing, and 2-4 images per GPU give no usable batch statistics)."""
    module.train()
    if freeze_bn:
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()


def use_mask_discriminator(D) -> bool:
    return "Mask" in type(D).__name__



# ---------------------------------------------------------------- training

def resolve_bf16(cfg: TrainConfig, device) -> bool:
    if cfg.bf16 not in ("auto", "on", "off"):
        raise UserError(f"--bf16: {cfg.bf16!r} is not auto, on or off")
    if cfg.bf16 == "auto":
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    return cfg.bf16 == "on"



def adam(params, lr, betas, eps) -> torch.optim.Adam:
    """Adam, fused into one kernel per step when the parameters are on one GPU or the CPU (the default
    for-each implementation launches several kernels per parameter group: 8.8 ms of a 200 ms EG3D step on
    the H100, about 1 ms fused); the same update either way.  Fused, it also skips a step on a device-side
    flag (guarded_step), so the CPU runs the trainer's path too."""
    params = list(params)
    kinds = {p.device.type for p in params}
    fused = len(kinds) == 1 and kinds <= {"cuda", "cpu"}
    return torch.optim.Adam(params, lr=lr, betas=betas, eps=eps, fused=fused or None)


def make_optimizer(params, lr, cfg: TrainConfig, reg_interval: int):
    """Adam; with lazy regularisation every N steps, lr and betas are scaled as in StyleGAN2."""
    ratio = reg_interval / (reg_interval + 1) if reg_interval > 0 else 1.0
    return adam(params, lr * ratio, (cfg.beta1 ** ratio, cfg.beta2 ** ratio), cfg.eps)



def scale_lr(opts: dict, base_lr: dict, scale: float) -> None:
    """Set each optimizer's learning rates to ``scale`` times ``base_lr`` ({name: [lr per param group]})."""
    for name, o in opts.items():
        for g, lr in zip(o.param_groups, base_lr[name]):
            g["lr"] = lr * scale


def build_models(cfg: TrainConfig, device) -> tuple[dict, dict]:
    """({'G', 'G_ema', 'D'}, {'opt_G', 'opt_D'}) on ``device``: the networks in train mode (BatchNorm frozen
    with --freeze-bn), G_ema a frozen copy of G, none requiring grad (each phase turns on its own), and
    Adam with the lazy-regularisation scaling of the phases that run."""
    lc = cfg.loss
    G, D = build_networks(cfg)
    G, D = G.to(device), D.to(device)
    set_train_mode(G, cfg.freeze_bn)
    set_train_mode(D, cfg.freeze_bn)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    G.requires_grad_(False)
    D.requires_grad_(False)
    opt_G = make_optimizer(G.parameters(), cfg.glr, cfg, lc.tv_interval if uses_tv(lc) else 0)
    opt_D = make_optimizer(D.parameters(), cfg.dlr, cfg, lc.r1_interval if uses_r1(lc) else 0)
    return {"G": G, "G_ema": G_ema, "D": D}, {"opt_G": opt_G, "opt_D": opt_D}


def uses_tv(lc: LossConfig) -> bool:
    return lc.tv_weight > 0 and lc.tv_interval > 0


def uses_r1(lc: LossConfig) -> bool:
    return lc.gan_weight > 0 and lc.r1_interval > 0 and (lc.r1_gamma > 0 or lc.r1_gamma_mask > 0)


class TrainStep:
    """One training step, the one definition of it: ``train()`` runs it, and so does the model benchmark
    (_scripts.bench.models), so a change of speed shows in both or neither.

    Built after the networks (build_models) and any resume: the DDP wrappers (several processes),
    torch.compile (G's parts in place and a compiled D for the first-order phases; R1 differentiates the
    eager D twice), the objective (ReconGANLoss) and the phases.  A call runs the phases due at ``step``
    (Gmain every step, Greg every tv_interval, Dmain every step, Dreg every r1_interval), each: its network
    requires grad, zero_grad, the phase's forward + backward (DDP averages the gradients during backward),
    the NaN/Inf-guarded Adam step; then the EMA update of G_ema.  Nothing waits for the device: the loss
    terms and skip flags are summed there until ``tick_stats()`` reads them.  ``close()`` restores the
    global compile settings."""

    def __init__(self, cfg: TrainConfig, d: Dist, nets: dict, opts: dict, ortho_views):
        lc = cfg.loss
        self.cfg, self.d = cfg, d
        G, D, self.G_ema = nets["G"], nets["D"], nets["G_ema"]
        self.G, self.D = G, D
        # multi-process: DDP wrappers (constructing them broadcasts rank 0's G and D); G finds unused
        # parameters because Greg uses only the density path (super-resolution idle); every D phase uses all of D
        self.G_call = self.D_call = None
        if d.world > 1:
            sync_params(self.G_ema, d)
            self.G_call, self.D_call = wrap_ddp(G, d, find_unused=True), wrap_ddp(D, d, find_unused=False)
        # torch.compile (after G_ema's copy and the DDP wrappers): G's parts in place; D for its first-order
        # phases as a separate handle, so R1 differentiates the eager D twice
        # (reduce-overhead: CUDA graphs, each step marked as a new iteration; fakes are used within their step)
        self.compiled = resolve_compile(cfg, d.device)
        self.cudagraphs = self.compiled and uses_cudagraphs(cfg.compile_mode) and d.device.type == "cuda"
        self._restores = []      # the global compile settings, undone by close()
        D_compiled = None
        if self.compiled:
            from training.triplane import set_compiled_arithmetic
            kw = compile_kwargs(cfg.compile_mode)
            self._restores += [set_compiled_arithmetic(True), force_layout_optimization(True),
                               guard_requires_grad(True)]    # D is frozen in Gmain, trained in Dmain: a graph each
            G.compile_parts(**kw)
            D_compiled = torch.compile(D, dynamic=False, **kw)   # static graphs: batch n (Gmain), 2n (Dmain joined)
        self.autocast = torch.bfloat16 if resolve_bf16(cfg, d.device) else None
        box = float(G.config.get("box_warp") or cameras.get_framing(G.config.get("framing", "head")).box)
        self.nrr = cfg.neural_rendering_resolution or None
        self.loss = ReconGANLoss(G, D, lc, box=box, seed=cfg.seed, neural_rendering_resolution=self.nrr,
                                 render_kwargs={"perturb": cfg.ray_perturb},
                                 use_mask_d=use_mask_discriminator(D), autocast_dtype=self.autocast,
                                 ortho_views=ortho_views, G_call=self.G_call, D_call=self.D_call,
                                 D_compiled=D_compiled)
        self.phases = [("Gmain", G, opts["opt_G"], 1)]
        if uses_tv(lc):
            self.phases.append(("Greg", G, opts["opt_G"], lc.tv_interval))
        if lc.gan_weight > 0:
            self.phases.append(("Dmain", D, opts["opt_D"], 1))
        if uses_r1(lc):
            self.phases.append(("Dreg", D, opts["opt_D"], lc.r1_interval))
        self.sums: dict[str, torch.Tensor] = {}     # stats summed on the device over the tick
        self.counts: dict[str, int] = {}
        self.skipped = torch.zeros((), device=d.device)  # steps skipped for NaN/Inf gradients this tick

    @property
    def cycle(self) -> int:
        """Steps after which the phases repeat (the least common multiple of their intervals)."""
        return math.lcm(*(interval for *_, interval in self.phases))

    def precision(self) -> dict[str, str]:
        """How each phase computes: bf16 autocast or fp32 (TF32 matrix products on CUDA)."""
        fp32 = "fp32/TF32" if self.d.device.type == "cuda" else "fp32"
        bf16 = "bf16 autocast" if self.autocast is not None else fp32
        lc = self.cfg.loss
        table = {"Gmain": bf16, "Greg": fp32, "Dmain": bf16,
                 "Dreg": bf16 if lc.r1_bf16 and self.autocast is not None else fp32}
        return {name: table[name] for name, *_ in self.phases}

    def describe(self) -> str:
        """One line: each phase with its interval and precision, and how it runs."""
        prec = self.precision()
        parts = [f"{n}{'' if k == 1 else f' every {k}'} ({prec[n]})" for n, _, _, k in self.phases]
        lc = self.cfg.loss
        extra = []
        if lc.gan_weight > 0:
            extra.append(f"D main on {'fresh fakes (a second G forward)' if lc.d_fresh_fakes else 'Gmain fakes'}")
            if lc.blur_init_sigma > 0 and lc.blur_fade_kimg > 0:
                extra.append(f"D input blur sigma {lc.blur_init_sigma:g} fading over {lc.blur_fade_kimg:g} kimg")
        mode = f"compiled ({self.cfg.compile_mode})" if self.compiled else "eager"
        return f"step: {', '.join(parts + extra)}, EMA; {mode}"

    def __call__(self, batch: dict, step: int, cur_nimg: int, phase_clock=None) -> None:
        """The phases due at ``step`` and the EMA update.  ``phase_clock(name, fn)`` (default: ``fn()``) runs
        each phase and the EMA ('ema'), e.g. to time them or count their FLOPs."""
        run = phase_clock or _call
        if self.cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        for name, module, opt, interval in self.phases:
            if step % interval == 0:
                run(name, functools.partial(self._phase, name, module, opt, interval, batch, step, cur_nimg))
        run("ema", functools.partial(update_ema, self.G_ema, self.G, ema_beta(self.cfg, cur_nimg)))

    def _phase(self, name, module, opt, interval, batch, step, cur_nimg) -> None:
        module.requires_grad_(True)
        opt.zero_grad(set_to_none=True)
        stats = self.loss.accumulate_gradients(name, batch, gain=interval, step=step, cur_nimg=cur_nimg)
        module.requires_grad_(False)
        if stats is None:       # phase off now (the GAN's warm-up): no optimizer step
            return
        # no host sync within a step: the skip flag and the stats stay on the device until the tick ends
        self.skipped = self.skipped + guarded_step(opt, list(module.parameters()), self.d)
        for k, v in stats.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
            self.counts[k] = self.counts.get(k, 0) + 1

    def tick_stats(self) -> tuple[dict[str, float], int]:
        """(mean of each loss term since the last call, steps skipped for NaN/Inf gradients): reads the
        device once, then starts the next tick's sums."""
        means = {k: float(self.sums[k]) / self.counts[k] for k in self.sums}
        skipped = int(self.skipped)
        self.sums, self.counts = {}, {}
        self.skipped = torch.zeros((), device=self.d.device)
        return means, skipped

    def close(self) -> None:
        for restore in reversed(self._restores):
            restore()
        self._restores = []


def _call(name, fn):
    return fn()


def synchronize(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------- EMA

@torch.no_grad()
def update_ema(G_ema, G, beta: float) -> None:
    """G_ema <- beta * G_ema + (1 - beta) * G, one fused for-each op (two kernels per tensor before)."""
    torch._foreach_lerp_(list(G_ema.parameters()), list(G.parameters()), 1.0 - beta)
    bufs = list(G_ema.buffers())
    if bufs:
        torch._foreach_copy_(bufs, list(G.buffers()))


def ema_beta(cfg: TrainConfig, cur_nimg: int) -> float:
    ema_nimg = (cfg.ema_kimg if cfg.ema_kimg >= 0 else cfg.batch * 10 / 32) * 1000
    if cfg.ema_rampup > 0:
        ema_nimg = min(ema_nimg, cur_nimg * cfg.ema_rampup)
    return 0.5 ** (cfg.batch / max(ema_nimg, 1e-8))
