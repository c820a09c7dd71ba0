"""Conditional EG3D training loop: one GPU, many GPUs (torchrun) or CPU.

Reads top to bottom: config -> distributed setup -> run folder -> data ->
networks -> optimisers -> resume -> loop (phases, EMA, ticks, snapshots,
previews) -> final snapshot.  Hyperparameters: REFERENCE section 4.

Multi-process: started by torchrun (RANK/WORLD_SIZE/LOCAL_RANK in the
environment).  G and D are wrapped in DistributedDataParallel (through
``PhaseForward``, so a whole phase is one DDP forward); DDP's reducer averages
gradients while backward runs.  R1 takes its gradient w.r.t. the real images,
not the parameters, so it works under DDP (see ``ReconGANLoss._dreg``).  G's
wrapper finds unused parameters (Greg uses only the density path); D's does
not need to (every D phase reaches every D parameter).  One process: no DDP,
the networks are called directly.  Only rank 0 writes files.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import math
import signal
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from training import dataset as dsm
from training.run import batchnorm, config_check, memory, snapshots
from training.run.compiler import compile_kwargs, compile_seconds, inductor_cache_dir, resolve_compile, use_inductor_cache
from training.run.distributed import Dist, StopFlag, broadcast_object, setup_distributed
from training.run.snapshots import load_snapshot, prepare_run_dir, save_snapshot, set_rng_state
from training.run.train_step import TrainStep, build_models, ema_beta, scale_lr, synchronize
from training.errors import UserError, fail, save_json_atomic, save_png_atomic
from training.images import to_uint8
from training.loss import LossConfig, ReconGANLoss, resize

# Keys that may change when a run resumes (where/how long it runs, not what it learns).
RUNTIME_KEYS = {"resume", "device", "workers", "kimg", "minutes", "tick_kimg", "snap_ticks", "preview_ticks",
                "data_root", "runs_dir", "progress", "tensorboard", "preview_count", "compile",
                "compile_mode", "snap_keep", "snap_keep_best", "memory_check", "val_count", "val_ticks",
                "val_resolution", "bn_recalibrate", "lr_warmup_kimg"}
RUNTIME_LOSS_KEYS = {"batch_views", "d_pair"}   # how, not what: the same numbers either way


@dataclasses.dataclass
class TrainConfig:
    # run
    run_name: str = "debug"  # name of the run: its folder is <runs-dir>/<run-name>/<NNNNN>/
    runs_dir: str = ""                  # default <project>/_train/eg3dc/runs
    resume: str = "auto"                # auto (latest snapshot of this run name) | none | <snapshot path>
    device: str = "auto"                # auto | cpu | cuda
    seed: int = 0  # seed of weights, data order, latents and regulariser points
    # data
    data_root: str = ""  # data tree root (default $LUSTROUS_DATA_ROOT or _data/lustrous)
    renderset: str = "rutileE"  # renders/<renderset>/ to train on
    dataset: str = "rutileEB"  # subsets/<dataset>_<split>.csv: the characters to use
    split: str = "train"  # split of the dataset (train, val, test, all)
    resolution: int = 0                 # target image size (0: as rendered)
    cond_resolution: int = 0            # conditioning image size (0: --resolution)
    ortho_views: str = "front,back,left,right"  # target ortho views loaded (weights: --view-weights)
    random_views: bool = True           # random perspective view per sample (else view 0000)
    mirror_prob: float = 0.5            # horizontal-mirror augmentation (swaps left/right, mirrors cameras)
    use_features: bool = False          # precomputed encoder features (feat_front/feat_back)
    ray_views: int = 0                  # views per character and step for the full-resolution ray loss (0: off)
    ray_pool: str = "ortho,rgb"         # view sets the ray views come from (ortho, rgb, rgb60), where rendered
    ray_patches: int = 2                # pixel patches per ray view
    ray_patch_size: int = 32            # patch side in pixels
    ray_scales: str = "1,2"             # pixel strides a patch is drawn at (area-averaged targets)
    ray_fg_fraction: float = 0.75       # patches centred on the character; the rest anywhere in its bounding box
    workers: int = 3  # data loader processes per training process (0: load in the main process)
    # networks
    generator: str = ""                 # TriPlaneGenerator | _v0 | _v1 ('' : the preset's own)
    preset: str = "nova_body"           # key of training.triplane.PRESETS ('' : --generator with --g-kwargs only)
    g_kwargs: dict = dataclasses.field(default_factory=dict)   # generator constructor overrides (sizes,
                                        # encoder_weights, ...); on the command line a JSON object merged
                                        # key by key over the config file's
    discriminator: str = "MaskDualDiscriminator"  # DualDiscriminator | MaskDualDiscriminator
    d_kwargs: dict = dataclasses.field(default_factory=dict)   # discriminator constructor overrides (as
                                        # --g-kwargs)
    neural_rendering_resolution: int = 0  # 0: the generator's own
    ray_perturb: bool = True            # stratified jitter + random importance samples (off: deterministic)
    freeze_bn: bool = True              # BatchNorm of the image encoders in eval mode (small per-GPU batches)
    # optimisation
    batch: int = 16                     # global batch (all GPUs); per-GPU = batch / world size
    glr: float = 0.0025  # generator learning rate (Adam)
    dlr: float = 0.002  # discriminator learning rate (Adam)
    beta1: float = 0.0  # Adam beta1 (StyleGAN's 0)
    beta2: float = 0.99  # Adam beta2
    eps: float = 1e-8  # Adam epsilon
    lr_warmup_kimg: float = 0.0         # learning rates ramp up linearly over this many kimg wherever Adam starts
                                        # without its moments (a new run, or one resumed from an export of the
                                        # weights alone): its first steps move every weight by about the full
                                        # learning rate, whatever its gradient (0: off)
    ema_kimg: float = -1.0              # EMA half-life; < 0: batch * 10 / 32
    ema_rampup: float = 0.0             # 0: off; else half-life <= cur_nimg * rampup
    bf16: str = "auto"                  # auto (on for CUDA) | on | off; R1 only with --r1-bf16
    compile: bool | None = None         # torch.compile G's parts and D for Gmain/Dmain (R1 stays eager); unset:
                                        # on when training on CUDA, off on a CPU (--no-compile: eager everywhere)
    compile_mode: str = "default"       # torch.compile mode: default | reduce-overhead (CUDA graphs) | max-autotune
                                        # | max-autotune-no-cudagraphs
    # schedule
    kimg: float = 25000.0  # stop after this many thousand training images
    minutes: float = 0.0                # ... or after this many minutes of this invocation (compiling included),
                                        # with a snapshot, as on a stop signal; 0: no time limit
    tick_kimg: float = 4.0  # a tick (log line, metrics.jsonl record) every this many kimg
    snap_ticks: int = 50  # snapshot every this many ticks (and at the end or on a stop signal)
    snap_keep: int = 3                  # snapshots kept in the run folder, the newest (0: all)
    snap_keep_best: str = ""            # also keep the snapshot whose tick scored highest on this metrics.jsonl
                                        # key (e.g. val/psnr_side; needs --val-count); "": the newest only
    preview_ticks: int = 10  # preview image every this many ticks
    preview_count: int = 4  # characters in the preview image
    val_count: int = 0                  # held-out characters (the dataset's val split) rendered for the val/*
                                        # PSNRs of metrics.jsonl (0: off); they are also the preview's characters
    val_ticks: int = 5                  # held-out PSNR every this many ticks (and at the end)
    val_resolution: int = 128           # rendering size of the held-out views
    bn_recalibrate: int = 64            # training characters over which G_ema's BatchNorm statistics are
                                        # re-estimated before each validation, preview and snapshot, where the
                                        # encoders' BatchNorm trains (--no-freeze-bn); 0: G_ema keeps copies of
                                        # G's running statistics (training.run.batchnorm)
    progress: bool = True  # progress bar (off: one JSON line per tick)
    tensorboard: bool = True  # TensorBoard event files in the run folder
    memory_check: bool = True           # refuse a configuration whose estimated peak memory does not fit
    # losses
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)  # the objective's weights (training.loss.LossConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "TrainConfig":
        d = dict(d)
        loss = LossConfig(**d.pop("loss", {}))
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        for k in ("g_kwargs", "d_kwargs"):      # configs saved before these were tables hold JSON text
            if isinstance(d.get(k), str):
                try:
                    d[k] = json.loads(d[k] or "{}")
                except json.JSONDecodeError as e:
                    raise UserError(f"config: {k} is not a JSON object ({e})") from None
            if k in d and not isinstance(d[k], dict):
                raise UserError(f"config: {k} must be a table of constructor keywords, not {d[k]!r}")
        extra = set(d) - known
        if extra:
            raise UserError(f"config: unknown keys {sorted(extra)}")
        return TrainConfig(loss=loss, **d)


def learning_config(d: dict) -> dict:
    """The part of a config that must not change when a run resumes (keys added since are defaults)."""
    try:
        d = TrainConfig.from_dict(d).to_dict()
    except (TypeError, UserError):
        pass
    out = {k: v for k, v in d.items() if k not in RUNTIME_KEYS}
    out["loss"] = {k: v for k, v in dict(out.get("loss", {})).items() if k not in RUNTIME_LOSS_KEYS}
    return out


# ---------------------------------------------------------------- data

def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def build_dataset(cfg: TrainConfig):
    views = tuple(v.strip() for v in cfg.ortho_views.split(",") if v.strip())
    rays = None
    if cfg.ray_views > 0:
        try:
            rays = dsm.RaySampling(views=cfg.ray_views, pool=tuple(_csv(cfg.ray_pool)), patches=cfg.ray_patches,
                                   size=cfg.ray_patch_size, scales=tuple(int(k) for k in _csv(cfg.ray_scales)),
                                   fg_fraction=cfg.ray_fg_fraction, depth=cfg.loss.ray_depth_weight > 0)
        except ValueError:
            raise UserError(f"--ray-scales: expected comma-separated integers, got {cfg.ray_scales!r}") from None
    ds = dsm.CharacterDataset(cfg.data_root or None, cfg.renderset, cfg.dataset or None, cfg.split,
                              resolution=cfg.resolution or None, cond_resolution=cfg.cond_resolution or None,
                              ortho_views=views, random_views=cfg.random_views, mirror_prob=cfg.mirror_prob,
                              use_features=cfg.use_features, rays=rays)
    if len(ds) < cfg.batch:
        raise UserError(f"{cfg.dataset}_{cfg.split}: {len(ds)} characters, fewer than --batch {cfg.batch}")
    return ds


def _worker_ignores_stop_signals(_worker_id):
    """A scheduler's SIGTERM reaches every process; workers keep serving until the main process has
    finished its step and written its snapshot (they exit with it)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class SkipSampler(torch.utils.data.Sampler):
    """An endless sampler with its first ``skip`` indices dropped: a resumed run sees the same data order."""

    def __init__(self, sampler, skip: int):
        self.sampler, self.skip = sampler, skip

    def __iter__(self):
        return itertools.islice(iter(self.sampler), self.skip, None)


def rank_batches(ds, cfg: TrainConfig, d: Dist, per_gpu: int, step: int):
    """Endless iterator of this rank's batches from ``step`` on: rank r takes every world-th index of a
    shared permutation, so the union over ranks is the global batch a single process would take."""
    sampler = dsm.InfiniteSampler(ds, num_replicas=d.world, rank=d.rank, shuffle=True, seed=cfg.seed,
                                  drop_last=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=per_gpu, sampler=SkipSampler(sampler, step * per_gpu),
                                         num_workers=cfg.workers, collate_fn=dsm.collate,
                                         pin_memory=d.device.type == "cuda", persistent_workers=cfg.workers > 0,
                                         worker_init_fn=_worker_ignores_stop_signals,
                                         generator=torch.Generator().manual_seed(cfg.seed * 1000 + d.rank + step))
    return iter(loader)


def to_device(batch: dict, device) -> dict:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


# ---------------------------------------------------------------- previews


@torch.no_grad()
def preview_grid(G, batch: dict, view_index: dict, size: int, nrr) -> np.ndarray:
    """Rows: samples.  Columns: input front/back, prediction front/back/side, ground truth front/back/side."""
    cond = ReconGANLoss.cond_of(batch)
    planes = G.synthesize(cond, z=None if not getattr(G, "z_dim", 0) else torch.zeros(
        batch["cond_front"].shape[0], G.z_dim, device=batch["cond_front"].device))
    kw = {} if not nrr else {"neural_rendering_resolution": nrr}
    cols = [resize(batch["cond_front"], size), resize(batch["cond_back"], size)]
    names = [n for n in ("front", "back", "left") if n in view_index]
    for n in names:
        cols.append(resize(G.render(planes, batch["ortho_cam"][:, view_index[n]], **kw)["image"].float(), size))
    for n in names:
        cols.append(resize(batch["ortho_rgb"][:, view_index[n]], size))
    rows = [np.concatenate([to_uint8(c[i]) for c in cols], 1) for i in range(cols[0].shape[0])]
    return np.concatenate(rows, 0)


# ---------------------------------------------------------------- held-out PSNR

VAL_VIEWS = ("front", "back", "left", "right")


def held_out_batch(cfg: TrainConfig, ds, device) -> dict | None:
    """The first --val-count characters of the dataset's val split (all four ortho views and the first
    perspective view, no mirroring): fixed for the whole run, so the val/* PSNRs form a learning curve."""
    if not ds.dataset:
        print("held-out PSNR off: --dataset names no split (every rendered character is trained on)")
        return None
    try:
        val = dsm.CharacterDataset(ds.root, ds.renderset, ds.dataset, "val", ortho_views=VAL_VIEWS,
                                   random_views=False, mirror_prob=0.0, resolution=ds.resolution,
                                   cond_resolution=ds.cond_resolution)
    except UserError as e:
        print(f"held-out PSNR off: {e}")
        return None
    return to_device(dsm.collate([val[i] for i in range(min(cfg.val_count, len(val)))]), device)


def bn_inputs(cfg: TrainConfig, ds, per_gpu: int, device) -> list[dict]:
    """The conditioning inputs of the first --bn-recalibrate training characters (no augmentation), in
    batches of the per-process training batch: what training_loop re-estimates G_ema's BatchNorm statistics
    on (training.run.batchnorm).  Empty where BatchNorm does not train (--freeze-bn) or the count is 0."""
    if cfg.freeze_bn or cfg.bn_recalibrate <= 0:
        return []
    ids = ds.ids[:cfg.bn_recalibrate]
    fixed = dsm.CharacterDataset(ds.root, ds.renderset, ids=ids, ortho_views=("front",), random_views=False,
                                 mirror_prob=0.0, resolution=ds.resolution, cond_resolution=ds.cond_resolution,
                                 use_features=ds.use_features)
    conds = []
    for s in range(0, len(ids), per_gpu):
        batch = dsm.collate([fixed[i] for i in range(s, min(s + per_gpu, len(ids)))])
        conds.append(to_device(ReconGANLoss.cond_of(batch), device))
    return conds


def psnr(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR [B] of images in [-1, 1] (as RGB in [0, 1])."""
    mse = ((pred.float() - gt.float()) / 2).square().flatten(1).mean(1).clamp_min(1e-10)
    return -10 * torch.log10(mse)


@torch.no_grad()
def validate(G, batch: dict, res: int) -> dict:
    """val/psnr_{front,back,side,rgb} of G's renders of the held-out batch (side: left and right; rgb: the
    first random perspective view), at res x res: the views the model did not see, and the input views."""
    planes = G.synthesize(ReconGANLoss.cond_of(batch), z=None if not getattr(G, "z_dim", 0) else torch.zeros(
        batch["cond_front"].shape[0], G.z_dim, device=batch["cond_front"].device))
    out = {}
    for i, name in enumerate(VAL_VIEWS):
        img = G.render(planes, batch["ortho_cam"][:, i], neural_rendering_resolution=res)["image"]
        out[name] = psnr(resize(img.float(), res), resize(batch["ortho_rgb"][:, i], res)).mean()
    img = G.render(planes, batch["rgb_cam"], neural_rendering_resolution=res)["image"]
    out["rgb"] = psnr(resize(img.float(), res), resize(batch["rgb"], res)).mean()
    out["side"] = (out.pop("left") + out.pop("right")) / 2
    return {f"val/psnr_{k}": float(v) for k, v in out.items()}


def train(cfg: TrainConfig) -> Path:
    deadline = time.time() + cfg.minutes * 60 if cfg.minutes > 0 else None     # --minutes: set-up included
    config_check.validate(cfg)
    d = setup_distributed(cfg.device)
    if cfg.batch % d.world:
        raise UserError(f"--batch {cfg.batch}: not divisible by the {d.world} processes")
    per_gpu = cfg.batch // d.world
    compile_kwargs(cfg.compile_mode)            # a bad --compile-mode fails before any work
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    if d.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True

    ds = build_dataset(cfg)  # first: a bad data path must not leave an empty run folder
    memory.check(cfg, ds, per_gpu, d.device, d.world)      # refuse what would be killed for memory

    # run folder (rank 0 decides, others follow)
    run_dir, resume_from = broadcast_object(prepare_run_dir(cfg) if d.main else None, d)
    run_dir = Path(run_dir)

    # networks: same seed everywhere, then rank 0's weights broadcast
    nets, opts = build_models(cfg, d.device)
    G, G_ema = nets["G"], nets["G_ema"]
    base_lr = {k: [g["lr"] for g in o.param_groups] for k, o in opts.items()}   # configured: read before a
                                                                                # snapshot's are loaded
    config_check.check_framing(G, ds)

    # resume: identical counters, config checked
    step, cur_nimg, tick, nan_skips, train_s = 0, 0, 0, 0, 0.0     # train_s: seconds of training, resumes included
    warmup_from = 0.0           # where Adam's moments started from zero (--lr-warmup-kimg counts from here)
    if resume_from is not None:
        data = load_snapshot(resume_from, nets, opts, d.device)
        saved = data.get("training_config") or {}
        old, new = learning_config(saved), learning_config(cfg.to_dict())
        if cfg.resume == "auto" and old != new:
            flat = lambda c: {**{k: v for k, v in c.items() if k != "loss"}, **c.get("loss", {})}  # noqa: E731
            fo, fn = flat(old), flat(new)
            diff = sorted(k for k in set(fo) | set(fn) if fo.get(k) != fn.get(k))
            raise fail(resume_from, f"run {cfg.run_name!r} was started with other settings ({', '.join(diff)}); "
                       "pass the same flags, or --resume none for a new run")
        extra = data.get("extra") or {}
        step, cur_nimg = int(extra.get("step", data.get("step", 0))), int(extra.get("nimg", data["kimg"] * 1000))
        tick, nan_skips = int(extra.get("tick", 0)), int(extra.get("nan_skips", 0))
        train_s = float(extra.get("train_s", 0.0))
        has_moments = any(k.startswith("opt_") for k in data["modules"])
        warmup_from = float(extra.get("lr_warmup_from", -math.inf)) if has_moments else float(cur_nimg)
        scale_lr(opts, base_lr, 1.0)    # the configured rates, not the snapshot's (a new --glr applies)
        if "rng" in extra:
            set_rng_state(extra["rng"], d.device)
        if d.main and resume_from.parent == run_dir:    # temporary files of a kill, ticks after the snapshot
            snapshots.prepare_resume(run_dir, step)

    # compiled kernels cached beside the run folders: a later run of the name loads instead of compiling
    restore_cache = None
    if resolve_compile(cfg, d.device):
        cache_dir = inductor_cache_dir(cfg)
        restore_cache = use_inductor_cache(cache_dir)
    # the step: DDP wrappers, torch.compile, the objective and its phases
    trainer = TrainStep(cfg, d, nets, opts, ds.ortho_views)

    # data: a resumed run skips what it has seen
    batches = rank_batches(ds, cfg, d, per_gpu, step)
    nrr = trainer.nrr

    # logging (rank 0)
    writer = pbar = None
    preview_batch = val_batch = None
    bn_conds = []
    if d.main:
        save_json_atomic(run_dir / "config.json", cfg.to_dict())
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                writer = SummaryWriter(str(run_dir), purge_step=cur_nimg + 1 if cur_nimg else None)
            except ImportError:
                writer = None
        if cfg.progress:
            try:
                from tqdm import tqdm
                pbar = tqdm(total=int(cfg.kimg * 1000), initial=cur_nimg, unit="img", unit_scale=True,
                            dynamic_ncols=True, desc=cfg.run_name)
            except ImportError:
                pbar = None
        val_batch = held_out_batch(cfg, ds, d.device) if cfg.val_count > 0 else None
        bn_conds = bn_inputs(cfg, ds, per_gpu, d.device)
        n_prev = min(cfg.preview_count, len(ds))
        if val_batch is not None:       # the held-out characters, all four ortho views
            preview_batch = {k: (v[:n_prev] if torch.is_tensor(v) or isinstance(v, list) else v)
                             for k, v in val_batch.items()}
            preview_views = {n: i for i, n in enumerate(VAL_VIEWS)}
        else:
            with torch.random.fork_rng(devices=[]):   # fixed preview views; the training RNG stream is untouched
                torch.manual_seed(cfg.seed)
                samples = [ds[i] for i in range(n_prev)]
            preview_batch = to_device(dsm.collate(samples), d.device)
            preview_views = {n: i for i, n in enumerate(ds.ortho_views)}
        print(f"run folder: {run_dir}" + (f" (resuming {resume_from.name}, step {step})" if resume_from else ""))
        print(f"{d.world} process(es) on {d.device.type}, batch {cfg.batch} ({per_gpu} per process), "
              f"G {sum(p.numel() for p in G.parameters()) / 1e6:.2f}M params, "
              f"D {sum(p.numel() for p in nets['D'].parameters()) / 1e6:.2f}M, bf16 {trainer.autocast is not None}")
        print(trainer.describe() + (f"; inductor cache {cache_dir}" if trainer.compiled else ""))
        if d.world > 1:
            print(f"{type(trainer.G_call).__name__}: G find_unused_parameters={trainer.G_call.find_unused_parameters}, "
                  f"D find_unused_parameters={trainer.D_call.find_unused_parameters}")

    stopper = StopFlag()
    tick_start_nimg, tick_start_time = cur_nimg, time.time()
    start_nimg = cur_nimg
    first_step = {}             # this process's first step: its time (compiling when compiled)
    done = cur_nimg >= cfg.kimg * 1000
    if d.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(d.device)
    try:
        while not done:
            batch = to_device(next(batches), d.device)
            if cfg.lr_warmup_kimg > 0 and cur_nimg - warmup_from < cfg.lr_warmup_kimg * 1000:   # its last step sets 1
                scale_lr(opts, base_lr, min(1.0, (cur_nimg - warmup_from + cfg.batch) / (cfg.lr_warmup_kimg * 1000)))
            if cur_nimg == start_nimg:      # the one host sync outside tick ends: the compile cost, stated
                t0, c0 = time.time(), compile_seconds()
                trainer(batch, step, cur_nimg)
                synchronize(d.device)
                first_step["first_step_s"] = time.time() - t0
                c1 = compile_seconds()
                if trainer.compiled and c0 is not None and c1 is not None:
                    first_step["compile_s"] = c1 - c0
                if d.main:
                    print(f"first step: {first_step['first_step_s']:.1f} s"
                          + (f", {first_step['compile_s']:.1f} s of it compiling" if "compile_s" in first_step
                             else ""), flush=True)
            else:
                trainer(batch, step, cur_nimg)
            step += 1
            cur_nimg += cfg.batch
            done = cur_nimg >= cfg.kimg * 1000
            if deadline is not None and time.time() >= deadline:
                stopper.stop = True             # --minutes: stop as on a signal (every process agrees below)
            stop = stopper.agreed(d)
            if pbar is not None:
                pbar.update(cfg.batch)
            # the first tick of a process ends after one step (early feedback), later ones every tick_kimg
            if not (done or stop or cur_nimg - start_nimg == cfg.batch
                    or cur_nimg >= tick_start_nimg + cfg.tick_kimg * 1000):
                continue

            # ---- end of tick: log, snapshot, preview
            means, skipped = trainer.tick_stats()
            nan_skips += skipped
            now = time.time()
            tick_kimg = (cur_nimg - tick_start_nimg) / 1000
            rec = {"tick": tick, "step": step, "kimg": cur_nimg / 1000,
                   "sec_per_tick": now - tick_start_time,
                   "sec_per_kimg": (now - tick_start_time) / max(tick_kimg, 1e-9),
                   "nan_skips": nan_skips, "ema_beta": ema_beta(cfg, cur_nimg),
                   "glr": opts["opt_G"].param_groups[0]["lr"]}
            if first_step:          # the first tick of this process
                rec.update(first_step, compiled=trainer.compiled)
                first_step = {}
            if d.device.type == "cuda":
                rec["gpu_mem_gb"] = torch.cuda.max_memory_allocated(d.device) / 2 ** 30
            rec.update(means)
            train_s += now - tick_start_time
            rec["train_s"] = train_s
            val_due = val_batch is not None and (done or stop or tick % max(cfg.val_ticks, 1) == 0)
            snap_due = done or stop or tick % max(cfg.snap_ticks, 1) == 0
            preview_due = d.main and (done or stop or tick % max(cfg.preview_ticks, 1) == 0)
            if bn_conds and (val_due or snap_due or preview_due):
                batchnorm.recalibrate(G_ema, bn_conds)     # statistics of G_ema's own weights
            if val_due:
                rec.update(validate(G_ema, val_batch, cfg.val_resolution))
            if d.main:
                with open(run_dir / "metrics.jsonl", "a") as f:  # append-only log: a cut line is harmless
                    f.write(json.dumps(rec) + "\n")
                if writer is not None:
                    for k, v in rec.items():
                        if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("tick", "step"):
                            writer.add_scalar(k, v, global_step=int(cur_nimg))
                    writer.flush()
                if pbar is not None:
                    short = {k.split("/")[-1] if k.startswith("recon/") else k: v for k, v in rec.items()
                             if k in ("G/gan", "D/loss", "recon/total", "G/tv", "D/r1")}
                    pbar.set_postfix({"kimg": f"{cur_nimg / 1000:.4g}", "s/kimg": f"{rec['sec_per_kimg']:.1f}",
                                      **{k: f"{v:.3g}" for k, v in short.items()}}, refresh=False)
                elif cfg.progress:
                    print(json.dumps(rec), flush=True)
            if snap_due:
                if d.main:
                    save_snapshot(run_dir / snapshots.snapshot_name(cur_nimg), nets, opts, step, cur_nimg, cfg,
                                  {"tick": tick + 1, "nan_skips": nan_skips, "train_s": train_s,
                                   "lr_warmup_from": warmup_from}, d.device)
                    snapshots.prune(run_dir, cfg.snap_keep, cfg.snap_keep_best)
            if preview_due:
                G_ema.eval()
                grid = preview_grid(G_ema, preview_batch, preview_views, 128, nrr)
                save_png_atomic(run_dir / f"preview-{cur_nimg / 1000:010.3f}.png", grid)  # kimg, sortable
            tick += 1
            tick_start_nimg, tick_start_time = cur_nimg, time.time()
            if stop:
                if d.main:
                    why = "time limit (--minutes)" if deadline is not None and time.time() >= deadline else "signal"
                    print(f"stopped by {why} at step {step}; snapshot written", flush=True)
                break
    finally:
        stopper.restore()
        trainer.close()
        if restore_cache is not None:
            restore_cache()
        if pbar is not None:
            pbar.close()
        if writer is not None:
            writer.close()
    if d.world > 1:
        dist.barrier()
    return run_dir
