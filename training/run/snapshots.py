"""The snapshots and logs of a run folder (``_train/eg3dc/runs/<name>/<NNNNN>/``): names, what a snapshot
holds, how many are kept, and the clean-up when a run resumes (docs/training.md "Run folder").

- Names: ``network-snapshot-<kimg>.pt`` with the kimg written ``%010.3f`` like the previews
  (``network-snapshot-000004.096.pt`` after 4096 images): unique for every snapshot of a run (two
  snapshots are never taken at the same image count), and sorted by name = sorted by time.  Older runs'
  ``network-snapshot-<kimg:06d>.pt`` are still read (``snapshot_key``).
- Content: G, G_ema, D and both Adam states, except a discriminator that has never taken an optimiser
  step (a run without the GAN term, or still in its reconstruction-only warm-up): it equals its seeded
  initialisation, so it is stored as a marker (``checkpoint.UNTRAINED``) and rebuilt on resume.
- Retention: the newest ``snap_keep`` snapshots of the folder are kept (0 keeps all), and with
  ``snap_keep_best`` the one whose tick scored highest on that held-out metric (``best_snapshot``).
- Resume: orphaned temporary files of a run killed while writing (``.<name>.<random>.tmp*``) are
  removed, and ``metrics.jsonl`` loses the ticks after the resumed snapshot's step, so steps never go
  backwards.  Readers never see temporary files: they match ``network-snapshot-*.pt`` only.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from training import checkpoint as ckpt
from training import paths
from training.errors import atomic_write, fail

if TYPE_CHECKING:
    from training.training_loop import TrainConfig

PREFIX = "network-snapshot-"
NAME_RE = re.compile(r"^network-snapshot-(\d+(?:\.\d+)?)\.(pt|pkl)$")


def snapshot_name(cur_nimg: int) -> str:
    return f"{PREFIX}{cur_nimg / 1000:010.3f}.pt"


def snapshot_key(name: str) -> float | None:
    """kimg of a snapshot file name (either naming), None for anything else (temporary files included)."""
    m = NAME_RE.match(Path(name).name)
    return float(m[1]) if m else None


def run_snapshots(run_dir: Path) -> list[Path]:
    """The ``.pt`` snapshots of a run folder, oldest first."""
    snaps = [p for p in Path(run_dir).glob(f"{PREFIX}*.pt") if snapshot_key(p.name) is not None]
    return sorted(snaps, key=lambda p: (snapshot_key(p.name), p.stat().st_mtime))


def best_snapshot(run_dir: Path, metric: str) -> Path | None:
    """The snapshot whose tick scored highest on ``metric`` in metrics.jsonl (the record of the same kimg;
    the newer one of equal scores), None where no snapshot's tick has it."""
    p = Path(run_dir) / "metrics.jsonl"
    scores = {}
    for line in (p.read_text(errors="replace").splitlines() if p.is_file() else ()):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue                    # a torn last line
        if isinstance(rec, dict) and isinstance(rec.get(metric), (int, float)) and "kimg" in rec:
            scores[round(float(rec["kimg"]), 3)] = float(rec[metric])
    scored = [(scores[k], k, s) for s in run_snapshots(run_dir) if (k := round(snapshot_key(s.name), 3)) in scores]
    return max(scored)[2] if scored else None


def release_choice(run_dir: Path) -> Path | None:
    """The snapshot a run's release export is made of: its best on the run's ``snap_keep_best`` metric
    (config.json), else (no such metric, or no snapshot scored) the newest."""
    cfg = Path(run_dir) / "config.json"
    metric = json.loads(cfg.read_text()).get("snap_keep_best") if cfg.is_file() else None
    best = best_snapshot(run_dir, metric) if metric else None
    snaps = run_snapshots(run_dir)
    return best or (snaps[-1] if snaps else None)


def prune(run_dir: Path, keep: int, best_metric: str = "") -> list[Path]:
    """Delete all but the newest ``keep`` snapshots (``keep <= 0``: keep all) and, with ``best_metric``, the
    best one on it (``best_snapshot``); returns the deleted ones."""
    if keep <= 0:
        return []
    best = best_snapshot(run_dir, best_metric) if best_metric else None
    old = [p for p in run_snapshots(run_dir)[:-keep] if p != best]
    for p in old:
        p.unlink(missing_ok=True)
    return old


def is_temporary(p: Path) -> bool:
    """A file of ``training.errors.atomic_write``/``atomic_path`` that was never renamed (``.<name>.<x>.tmp*``)."""
    return p.name.startswith(".") and ".tmp" in p.name and p.is_file()


def remove_orphans(run_dir: Path) -> list[Path]:
    """Remove the temporary files a killed writer left in a run folder (a snapshot's can be gigabytes)."""
    gone = [p for p in Path(run_dir).iterdir() if is_temporary(p)] if Path(run_dir).is_dir() else []
    for p in gone:
        p.unlink(missing_ok=True)
    return gone


def truncate_metrics(run_dir: Path, step: int) -> int:
    """Drop the lines of ``metrics.jsonl`` after ``step`` (ticks logged after the snapshot a run resumes
    from: they are run again) and a torn last line; returns how many lines were dropped."""
    p = Path(run_dir) / "metrics.jsonl"
    if not p.is_file():
        return 0
    lines = p.read_text(errors="replace").splitlines()
    keep = []
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and int(rec.get("step", 0)) <= step:
            keep.append(line)
    if len(keep) != len(lines):
        with atomic_write(p, "w") as f:
            f.writelines(line + "\n" for line in keep)
    return len(lines) - len(keep)


def prepare_resume(run_dir: Path, step: int, log=print) -> None:
    """Clean-up before a run continues in ``run_dir`` from a snapshot of ``step``."""
    orphans = remove_orphans(run_dir)
    if orphans:
        log(f"removed {len(orphans)} temporary file(s) left by a killed run: {', '.join(p.name for p in orphans)}")
    dropped = truncate_metrics(run_dir, step)
    if dropped:
        log(f"metrics.jsonl: dropped {dropped} line(s) logged after step {step} (they are trained again)")


def resumable_modules(nets: dict, opts: dict) -> dict:
    """The modules a snapshot stores: every network and optimiser, except D while it has never taken a
    step (its Adam state is empty): a marker, rebuilt from the seed on resume."""
    from training.checkpoint import untrained
    mods = {**nets, **opts}
    if "D" in nets and "opt_D" in opts and not opts["opt_D"].state:
        mods["D"] = untrained(nets["D"])
    return mods


SNAPSHOT_RE = re.compile(r"network-snapshot-(\d+(?:\.\d+)?)\.pt$")   # kimg: 000920 (older runs), 000920.016
RELEASED_MARKER = "RELEASED"     # in a run folder holding a released model (docs/model_card.md)


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
    state = {"step": step, "nimg": cur_nimg, "rng": rng_state(device), **extra}
    ckpt.save_checkpoint(path, modules=resumable_modules(nets, opts), step=step, kimg=cur_nimg / 1000,
                         training_config=cfg.to_dict(), extra=state)


def load_snapshot(path: Path, nets: dict, opts: dict, device) -> dict:
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
        if mods[src].get("untrained"):      # never stepped: the network as built from the seed (training.run.snapshots)
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



