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

import copy
import dataclasses
import functools
import importlib
import itertools
import json
import math
import os
import re
import signal
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from . import cameras, config_check, memory, paths, snapshots
from .errors import UserError, fail, save_json_atomic, save_png_atomic
from .images import to_uint8
from .loss import LossConfig, ReconGANLoss, resize

SNAPSHOT_RE = re.compile(r"network-snapshot-(\d+(?:\.\d+)?)\.pt$")   # kimg: 000920 (older runs), 000920.016
RELEASED_MARKER = "RELEASED"     # in a run folder holding a released model (docs/model_card.md)
# Keys that may change when a run resumes (where/how long it runs, not what it learns).
RUNTIME_KEYS = {"resume", "device", "workers", "kimg", "tick_kimg", "snap_ticks", "preview_ticks",
                "data_root", "runs_dir", "progress", "tensorboard", "preview_count", "compile",
                "compile_mode", "snap_keep", "memory_check", "val_count", "val_ticks", "val_resolution"}
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
    ema_kimg: float = -1.0              # EMA half-life; < 0: batch * 10 / 32
    ema_rampup: float = 0.0             # 0: off; else half-life <= cur_nimg * rampup
    bf16: str = "auto"                  # auto (on for CUDA) | on | off; R1 only with --r1-bf16
    compile: bool | None = None         # torch.compile G's parts and D for Gmain/Dmain (R1 stays eager); unset:
                                        # on when training on CUDA, off on a CPU (--no-compile: eager everywhere)
    compile_mode: str = "default"       # torch.compile mode: default | reduce-overhead (CUDA graphs) | max-autotune
                                        # | max-autotune-no-cudagraphs
    # schedule
    kimg: float = 25000.0  # stop after this many thousand training images
    tick_kimg: float = 4.0  # a tick (log line, metrics.jsonl record) every this many kimg
    snap_ticks: int = 50  # snapshot every this many ticks (and at the end or on a stop signal)
    snap_keep: int = 3                  # snapshots kept in the run folder, the newest (0: all)
    preview_ticks: int = 10  # preview image every this many ticks
    preview_count: int = 4  # characters in the preview image
    val_count: int = 0                  # held-out characters (the dataset's val split) rendered for the val/*
                                        # PSNRs of metrics.jsonl (0: off); they are also the preview's characters
    val_ticks: int = 5                  # held-out PSNR every this many ticks (and at the end)
    val_resolution: int = 128           # rendering size of the held-out views
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


# ---------------------------------------------------------------- distributed

@dataclasses.dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_arg: str) -> Dist:
    """From torchrun's environment: NCCL on GPUs, gloo on CPU; single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device_arg not in ("auto", "cpu", "cuda"):
        raise UserError(f"--device: {device_arg!r} is not auto, cpu or cuda")
    use_cuda = torch.cuda.is_available() if device_arg == "auto" else device_arg == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device visible")
    if use_cuda:
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
        torch.set_flush_denormal(True)   # denormal weights after Adam steps slow CPU convolutions up to 100x
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo",
                                **({"device_id": device} if use_cuda else {}))
    return Dist(rank, world, local, device)


def broadcast_object(obj, d: Dist):
    if d.world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sync_params(module: torch.nn.Module, d: Dist) -> None:
    """Every rank starts from rank 0's parameters and buffers (DDP does this itself for G and D)."""
    if d.world == 1:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=0)


class PhaseForward(torch.nn.Module):
    """A network whose forward is ``fn(net, *args)``.  A phase calls G or D several times (synthesize, render,
    real and fake logits) before one backward; wrapped in DDP, this makes the whole phase one forward, which
    is what DDP's reducer expects."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, fn, *args):
        return fn(self.net, *args)


def wrap_ddp(net: torch.nn.Module, d: Dist, find_unused: bool) -> DistributedDataParallel:
    """DDP over ``net`` (rank 0's weights broadcast on construction).  Buffers are not broadcast each forward
    (BatchNorm is frozen, the rest are constants); gradients live in the reducer's buckets (no copy)."""
    net.requires_grad_(True)  # DDP registers only parameters that require grad
    ddp = DistributedDataParallel(PhaseForward(net), device_ids=[d.device.index] if d.device.type == "cuda" else None,
                                  broadcast_buffers=False, gradient_as_bucket_view=True,
                                  find_unused_parameters=find_unused)
    net.requires_grad_(False)
    return ddp


def nonfinite_flag(params: list[torch.Tensor], d: Dist) -> torch.Tensor:
    """After DDP has averaged the gradients: a 0-d float tensor on the device, 1 if any gradient is NaN/Inf
    on any rank (every rank then skips the step), else 0; no sync with the host.  Parameters the phase did
    not use get zero gradients, as the 1-process loop always gave them, so Adam's moments move the same way
    with or without DDP."""
    grads = []
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    if not grads:
        return torch.zeros((), device=d.device)
    norms = torch._foreach_norm(grads, float("inf"))     # NaN/Inf anywhere -> a non-finite max
    bad = (~torch.isfinite(torch.stack(norms))).any().float()
    if d.world > 1:
        dist.all_reduce(bad)  # identical averaged gradients give identical flags; this makes sure of it
    return bad.clamp(max=1.0)


def guarded_step(opt: torch.optim.Optimizer, params: list[torch.Tensor], d: Dist) -> torch.Tensor:
    """opt.step() unless a gradient is NaN/Inf on some rank; returns nonfinite_flag (1: skipped).  A fused
    Adam (adam()) takes the flag as found_inf, as under GradScaler: its kernel leaves the weights, moments
    and step count alone, so the host never waits for the GPU between steps.  Other optimizers read it."""
    bad = nonfinite_flag(params, d)
    if opt.defaults.get("fused"):
        opt.found_inf = bad
        opt.step()
        opt.found_inf = None        # read by every later step() call: set for this one only
    elif not bad.item():
        opt.step()
    return bad


# ---------------------------------------------------------------- run folder

def runs_root(cfg: TrainConfig) -> Path:
    return Path(cfg.runs_dir) if cfg.runs_dir else paths.project_dir() / "_train" / "eg3dc" / "runs"


def latest_snapshot(run_dir: Path) -> Path | None:
    snaps = [p for p in run_dir.glob("network-snapshot-*.pt") if SNAPSHOT_RE.search(p.name)]
    return max(snaps, key=lambda p: (float(SNAPSHOT_RE.search(p.name).group(1)), p.stat().st_mtime)) if snaps else None


def numbered_dirs(name_dir: Path) -> list[Path]:
    return sorted((p for p in name_dir.glob("[0-9]" * 5) if p.is_dir()), key=lambda p: p.name)


def prepare_run_dir(cfg: TrainConfig) -> tuple[Path, Path | None]:
    """(run folder, snapshot to resume from).  auto: latest folder holding a snapshot, else a new one."""
    name_dir = runs_root(cfg) / cfg.run_name
    existing = numbered_dirs(name_dir)
    if cfg.resume == "auto":
        for run_dir in reversed(existing):
            if (run_dir / RELEASED_MARKER).exists():    # a shipped model: continued only by --resume PATH
                continue
            snap = latest_snapshot(run_dir)
            if snap is not None:
                return run_dir, snap
        snap = None
    elif cfg.resume == "none":
        snap = None
    else:
        snap = Path(cfg.resume)
        if not snap.is_file():
            raise fail(snap, "snapshot to resume from not found")
    nxt = int(existing[-1].name) + 1 if existing else 0
    return name_dir / f"{nxt:05d}", snap      # made by the first file written: a failed start leaves nothing


# ---------------------------------------------------------------- networks

def build_networks(cfg: TrainConfig):
    """Generator from a preset of training.triplane (optionally another variant, JSON overrides); D sized to it."""
    triplane = importlib.import_module("training.triplane")
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
    ddm = importlib.import_module("training.dual_discriminator")
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


# ---------------------------------------------------------------- data

def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def build_dataset(cfg: TrainConfig):
    dsm = importlib.import_module("training.dataset")
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
    dsm = importlib.import_module("training.dataset")
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


# ---------------------------------------------------------------- snapshots

def rng_state(device) -> dict:
    st = {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(
        np.frombuffer(json.dumps(_np_state()).encode(), dtype=np.uint8).copy())}
    if device.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(device)
    return st


def _np_state():
    s = np.random.get_state()
    return [s[0], s[1].tolist(), int(s[2]), int(s[3]), float(s[4])]


def set_rng_state(st: dict, device) -> None:
    # the snapshot was loaded onto the training device; RNG states must be CPU byte tensors
    torch.set_rng_state(st["torch"].cpu())
    s = json.loads(bytes(st["numpy"].cpu().tolist()).decode())
    np.random.set_state((s[0], np.array(s[1], dtype=np.uint32), s[2], s[3], s[4]))
    if device.type == "cuda" and "cuda" in st:
        torch.cuda.set_rng_state(st["cuda"].cpu(), device)


def save_snapshot(path: Path, nets: dict, opts: dict, step: int, cur_nimg: int, cfg: TrainConfig, extra: dict,
                  device) -> None:
    """Atomic: a kill during the write leaves the previous snapshots untouched."""
    ckpt = importlib.import_module("training.checkpoint")
    state = {"step": step, "nimg": cur_nimg, "rng": rng_state(device), **extra}
    ckpt.save_checkpoint(path, modules=snapshots.resumable_modules(nets, opts), step=step, kimg=cur_nimg / 1000,
                         training_config=cfg.to_dict(), extra=state)


def load_snapshot(path: Path, nets: dict, opts: dict, device) -> dict:
    ckpt = importlib.import_module("training.checkpoint")
    data = ckpt.load_checkpoint(path, map_location=device)
    mods = data["modules"]
    for name, m in nets.items():
        src = name
        if name == "G" and "G" not in mods and "G_ema" in mods:
            src = "G_ema"     # a transport export (G_ema + D): training continues from the averaged weights
        if src not in mods:
            if name == "D" and "G_ema" in mods and not any(k.startswith("opt_") for k in mods):
                # an export of G_ema alone (a released model): D starts from its initialisation
                print(f"{path}: no D in this export; D starts from its initialisation")
                continue
            raise fail(path, f"snapshot has no {name}")
        if mods[src].get("untrained"):      # never stepped: the network as built from the seed (training.snapshots)
            continue
        try:
            m.load_state_dict(mods[src]["state_dict"])
        except RuntimeError as e:
            saved, hint = mods[src].get("config"), ""
            if saved is not None and getattr(m, "config", None) is not None:   # e.g. a key added since
                changes = ckpt.config_changes(ckpt.saved_config(type(m), saved), m.config)
                hint = f"; the snapshot's {name} was built with other settings ({'; '.join(changes)})" if changes else ""
            raise fail(path, f"{name} does not match this configuration ({str(e).splitlines()[0]}){hint}") from None
    for name, o in opts.items():
        if name in mods:
            o.load_state_dict(mods[name]["state_dict"])
    return data


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
    dsm = importlib.import_module("training.dataset")
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


# ---------------------------------------------------------------- signals

class StopFlag:
    """SIGTERM/SIGINT set a flag; the loop finishes its step, writes a snapshot and exits."""

    def __init__(self):
        self.stop = False
        self._old = {}
        for s in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[s] = signal.signal(s, self._handler)
            except ValueError:  # not the main thread
                pass

    def _handler(self, signum, frame):
        self.stop = True

    def agreed(self, d: Dist) -> bool:
        if d.world == 1:
            return self.stop
        t = torch.tensor([float(self.stop)], device=d.device)
        dist.all_reduce(t)
        return bool(t.item() > 0)

    def restore(self):
        for s, h in self._old.items():
            signal.signal(s, h)


# ---------------------------------------------------------------- training

def resolve_bf16(cfg: TrainConfig, device) -> bool:
    if cfg.bf16 not in ("auto", "on", "off"):
        raise UserError(f"--bf16: {cfg.bf16!r} is not auto, on or off")
    if cfg.bf16 == "auto":
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    return cfg.bf16 == "on"


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_kwargs(mode: str) -> dict:
    """torch.compile keyword arguments of a --compile-mode."""
    if mode not in COMPILE_MODES:
        raise UserError(f"--compile-mode {mode!r}: not one of {', '.join(COMPILE_MODES)}")
    return {} if mode == "default" else {"mode": mode}


def force_layout_optimization(on: bool = True):
    """Inductor's channels-last layout in every compiled graph with convolutions (on), or its heuristic
    (off).  The heuristic keeps a graph NCHW when a conv has under half as many output as input channels,
    and reads a transposed conv's [in, out] weight as [out, in]: G's super-resolution (an upsampling conv of
    32 -> 256 channels) stayed NCHW and cuDNN transposed around each of its convs (EG3D step on the H100:
    197 -> 186 ms, docs/results.md).  Returns a function that restores the previous setting."""
    from torch._inductor import config as inductor_config
    old = inductor_config.force_layout_optimization
    inductor_config.force_layout_optimization = bool(on)

    def restore():
        inductor_config.force_layout_optimization = old
    return restore


def guard_requires_grad(on: bool = True):
    """Make compiled graphs guard on their parameters' requires_grad (on), or leave dynamo's default (off).
    By default (torch 2.11) dynamo skips the tensor guards of a module whose attribute dicts have not
    changed, and requires_grad_() changes no dict: a module compiled while frozen then replays its
    no-weight-gradient graph once it trains (its parameters silently get no gradient: pytorch#139476), and
    one compiled while training keeps computing weight gradients when frozen (D's in G main: 3.1 ms of
    cuDNN weight-gradient kernels in the EG3D step on the H100).  With the guards, each state gets its
    own graph.  Returns a function that restores the previous setting."""
    from torch._dynamo import config as dynamo_config
    old = dynamo_config.skip_tensor_guards_with_matching_dict_tags
    dynamo_config.skip_tensor_guards_with_matching_dict_tags = not on

    def restore():
        dynamo_config.skip_tensor_guards_with_matching_dict_tags = old
    return restore


def uses_cudagraphs(mode: str) -> bool:
    """Whether a --compile-mode records CUDA graphs (inductor's own table of the modes' options)."""
    from torch._inductor import list_mode_options
    return bool(list_mode_options(mode).get("triton.cudagraphs"))


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


def resolve_compile(cfg: TrainConfig, device) -> bool:
    """--compile / --no-compile as given; unset: compiled on CUDA, eager on a CPU (where compiling costs
    minutes and gains little)."""
    return device.type == "cuda" if cfg.compile is None else bool(cfg.compile)


INDUCTOR_CACHE = "inductor_cache"   # in <runs-dir>/<run-name>/: every run of the name reuses its kernels


def inductor_cache_dir(cfg: TrainConfig) -> Path:
    """Where compiled kernels are cached: $TORCHINDUCTOR_CACHE_DIR when set, else <runs-dir>/<run-name>/
    inductor_cache, so a resumed or repeated run loads the kernels instead of generating them again (the
    default, a folder of /tmp, is lost with the machine)."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    env = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    # importing torch._dynamo writes the default into the environment: that one is not the user's choice
    return Path(env) if env and env != default_cache_dir() else runs_root(cfg) / cfg.run_name / INDUCTOR_CACHE


def use_inductor_cache(path: Path):
    """Point inductor (and Triton, whose cache follows it) at ``path``; returns a function that restores the
    environment."""
    old = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    path.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)

    def restore():
        if old is None:
            os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
        else:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = old
    return restore


def compile_seconds() -> float | None:
    """Seconds this process has spent compiling so far (dynamo's frame and backward compiles, code generation
    and autotuning included), None where this torch does not count them."""
    try:
        from torch._dynamo.utils import calculate_time_spent
        return float(calculate_time_spent().get("total_wall_time", 0.0))
    except (ImportError, AttributeError):
        return None


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


def train(cfg: TrainConfig) -> Path:
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
    config_check.check_framing(G, ds)

    # resume: identical counters, config checked
    step, cur_nimg, tick, nan_skips, train_s = 0, 0, 0, 0, 0.0     # train_s: seconds of training, resumes included
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
        n_prev = min(cfg.preview_count, len(ds))
        if val_batch is not None:       # the held-out characters, all four ortho views
            preview_batch = {k: (v[:n_prev] if torch.is_tensor(v) or isinstance(v, list) else v)
                             for k, v in val_batch.items()}
            preview_views = {n: i for i, n in enumerate(VAL_VIEWS)}
        else:
            with torch.random.fork_rng(devices=[]):   # fixed preview views; the training RNG stream is untouched
                torch.manual_seed(cfg.seed)
                samples = [ds[i] for i in range(n_prev)]
            preview_batch = to_device(importlib.import_module("training.dataset").collate(samples), d.device)
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
                   "nan_skips": nan_skips, "ema_beta": ema_beta(cfg, cur_nimg)}
            if first_step:          # the first tick of this process
                rec.update(first_step, compiled=trainer.compiled)
                first_step = {}
            if d.device.type == "cuda":
                rec["gpu_mem_gb"] = torch.cuda.max_memory_allocated(d.device) / 2 ** 30
            rec.update(means)
            train_s += now - tick_start_time
            rec["train_s"] = train_s
            if val_batch is not None and (done or stop or tick % max(cfg.val_ticks, 1) == 0):
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
            if done or stop or tick % max(cfg.snap_ticks, 1) == 0:
                if d.main:
                    save_snapshot(run_dir / snapshots.snapshot_name(cur_nimg), nets, opts, step, cur_nimg, cfg,
                                  {"tick": tick + 1, "nan_skips": nan_skips, "train_s": train_s}, d.device)
                    snapshots.prune(run_dir, cfg.snap_keep)
            if d.main and (done or stop or tick % max(cfg.preview_ticks, 1) == 0):
                G_ema.eval()
                grid = preview_grid(G_ema, preview_batch, preview_views, 128, nrr)
                save_png_atomic(run_dir / f"preview-{cur_nimg / 1000:010.3f}.png", grid)  # kimg, sortable
            tick += 1
            tick_start_nimg, tick_start_time = cur_nimg, time.time()
            if stop:
                if d.main:
                    print(f"stopped by signal at step {step}; snapshot written", flush=True)
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


def cleanup_distributed():
    if dist.is_initialized():
        dist.destroy_process_group()
