"""The snapshots and logs of a run folder (``_train/eg3dc/runs/<name>/<NNNNN>/``): names, what a snapshot
holds, how many are kept, and the clean-up when a run resumes (docs/training.md "Run folder").

- Names: ``network-snapshot-<kimg>.pt`` with the kimg written ``%010.3f`` like the previews
  (``network-snapshot-000004.096.pt`` after 4096 images): unique for every snapshot of a run (two
  snapshots are never taken at the same image count), and sorted by name = sorted by time.  Older runs'
  ``network-snapshot-<kimg:06d>.pt`` are still read (``snapshot_key``).
- Content: G, G_ema, D and both Adam states, except a discriminator that has never taken an optimiser
  step (a run without the GAN term, or still in its reconstruction-only warm-up): it equals its seeded
  initialisation, so it is stored as a marker (``checkpoint.UNTRAINED``) and rebuilt on resume.
- Retention: the newest ``snap_keep`` snapshots of the folder are kept (0 keeps all).
- Resume: orphaned temporary files of a run killed while writing (``.<name>.<random>.tmp*``) are
  removed, and ``metrics.jsonl`` loses the ticks after the resumed snapshot's step, so steps never go
  backwards.  Readers never see temporary files: they match ``network-snapshot-*.pt`` only.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from .errors import atomic_write

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


def prune(run_dir: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` snapshots (``keep <= 0``: keep all); returns the deleted ones."""
    if keep <= 0:
        return []
    old = run_snapshots(run_dir)[:-keep]
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
    from .checkpoint import untrained
    mods = {**nets, **opts}
    if "D" in nets and "opt_D" in opts and not opts["opt_D"].state:
        mods["D"] = untrained(nets["D"])
    return mods
