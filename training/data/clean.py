"""Cleaning a rendered set and splitting it: the checks that drop broken renders, the id-hash split
into train/val/test, the subset CSVs and drop records, and the ``data_clean`` job.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np

from training import paths
from training.errors import UserError, fail, atomic_write
from training.data.catalog import (MASK_THRESHOLD, ORTHO_NAMES, REQUIRED_DTYPES, SPLITS, _run_jobs, candidate_ids, load_json,
                                 load_renderset_meta,
                                 framing_of, load_alpha, mask_from_alpha, meta_views, read_failures)


# ------------------------------------------------------------------ cleaning

@dataclasses.dataclass
class CleanConfig:
    min_coverage: float = 0.005     # fraction of the image; body characters cover ~5-15%
    border_tol: float = 0.01        # fraction of one image edge allowed to be foreground
    threshold: int = MASK_THRESHOLD
    required: tuple = REQUIRED_DTYPES
    check_views: tuple = ORTHO_NAMES


def cut_edges(framing: str | None, view: str) -> tuple[str, ...]:
    """Image edges that must stay clear.

    Head framing crops the body at the bottom of the box by design (and the top
    view looks down onto the shoulders), so only the top edge of the side
    views is checked there; body framing is centred and must fit entirely.
    """
    if framing == "head":
        return () if view == "top" else ("top",)
    return ("top", "bottom", "left", "right")


def edge_fractions(mask: np.ndarray) -> dict[str, float]:
    return {"top": float(mask[0].mean()), "bottom": float(mask[-1].mean()),
            "left": float(mask[:, 0].mean()), "right": float(mask[:, -1].mean())}


def check_character(root, renderset: str, char_id: str, cfg: CleanConfig,
                    failures: dict[str, str], rs_meta: dict) -> tuple[str | None, str]:
    """(reason, detail) why the character must go, or (None, '') to keep it.

    Reasons: failed, incomplete, unreadable, empty, nearly_empty, cut_off.
    """
    mp = paths.char_meta_path(root, renderset, char_id)
    if not mp.exists():
        if char_id in failures:
            return "failed", failures[char_id][:300]
        return "incomplete", "no meta json (render unfinished)"
    try:
        meta = load_json(mp)
    except UserError as e:
        return "unreadable", str(e)
    for dtype in cfg.required:
        views = meta_views(meta, dtype, char_id, rs_meta)
        folder = paths.render_path(root, renderset, dtype, char_id, "x").parent
        names = list(views) or sorted(p.stem for p in folder.glob("*.png"))
        if not names:
            return "incomplete", f"no {dtype} views"
        missing = [n for n in names if not paths.render_path(root, renderset, dtype, char_id, n).exists()]
        if missing:
            return "incomplete", f"missing {dtype}/{','.join(missing[:4])}"
    framing = framing_of(meta, rs_meta)
    coverage, cut = {}, []
    for view in cfg.check_views:
        p = paths.render_path(root, renderset, "ortho", char_id, view)
        if not p.exists():
            if view in ("front", "back"):
                return "incomplete", f"missing ortho/{view}"
            continue
        try:
            alpha = load_alpha(p)
        except UserError as e:
            return "unreadable", str(e)
        coverage[view] = float(alpha.mean() / 255.0)
        fg = mask_from_alpha(alpha, cfg.threshold)
        fr = edge_fractions(fg)
        cut += [f"{view} {edge} {fr[edge]:.1%}" for edge in cut_edges(framing, view) if fr[edge] > cfg.border_tol]
    fb = [coverage[v] for v in ("front", "back") if v in coverage] or list(coverage.values())
    if not fb or max(fb) == 0.0:
        return "empty", "no foreground in the ortho views"
    if min(fb) < cfg.min_coverage:
        v = min((v for v in coverage if v in ("front", "back")), key=coverage.get, default=None)
        return "nearly_empty", f"coverage {min(fb):.4f} < {cfg.min_coverage} ({v})"
    if cut:
        return "cut_off", "; ".join(cut[:4])
    return None, ""


CHECK_FAILED = "check_failed"     # not a drop: the character could not be checked at all (a job failure)


def _check_star(args):
    try:
        return args[2], check_character(*args)
    except Exception as e:  # noqa: BLE001 - one character must not stop the job (training.jobs rule)
        return args[2], (CHECK_FAILED, f"{type(e).__name__}: {e}")


def clean(root, renderset: str, cfg: CleanConfig, workers: int = 1, progress: bool = True,
          check_failures: list | None = None):
    """Check every candidate of a renderset -> (kept ids, drops [{id, key, reason, detail}], candidates).
    Characters that could not be checked (an unexpected error, not a verdict on the render) are neither
    kept nor dropped: they go to ``check_failures`` as (id, reason)."""
    cands = candidate_ids(root, renderset)
    failures = read_failures(root, renderset)
    rs_meta = load_renderset_meta(root, renderset)
    lacking = [d for d in cfg.required if "dtypes" in rs_meta and d not in rs_meta["dtypes"]]
    if lacking:     # every character would be "incomplete": say why once instead
        have = ",".join(d for d in cfg.required if d not in lacking)
        raise fail(paths.renderset_meta_path(root, renderset),
                   f"rendered without {', '.join(lacking)}; render them or pass --require {have}")
    jobs = [(root, renderset, cid, cfg, failures, rs_meta) for cid in cands]
    results = dict(_run_jobs(_check_star, jobs, workers, 8, desc=f"clean {renderset}", disable=not progress))
    kept, drops = [], []
    for cid in cands:
        reason, detail = results[cid]
        if reason is None:
            kept.append(cid)
        elif reason == CHECK_FAILED:
            if check_failures is not None:
                check_failures.append((cid, detail))
        else:
            drops.append({"id": cid, "key": paths.key_of(cid), "reason": reason, "detail": detail})
    return kept, drops, cands


def id_unit(char_id: str) -> float:
    """Stable hash of an id in [0, 1): the split does not change as characters are added."""
    return int.from_bytes(hashlib.sha1(char_id.encode()).digest()[:8], "big") / 2.0 ** 64


def parse_ratios(text) -> tuple[float, float, float]:
    try:
        r = [float(x) for x in str(text).split(",")] if isinstance(text, str) else [float(x) for x in text]
    except ValueError:
        raise UserError(f"--ratios: expected three numbers like 0.8,0.1,0.1, got {text!r}") from None
    if len(r) != 3 or min(r) < 0 or sum(r) <= 0:
        raise UserError(f"--ratios: expected three non-negative numbers like 0.8,0.1,0.1, got {text!r}")
    s = sum(r)
    return tuple(x / s for x in r)


def split_ids(ids, ratios=(0.8, 0.1, 0.1), ensure: bool = True) -> dict[str, list[str]]:
    """Deterministic train/val/test split by id hash.

    With ``ensure``, a tiny set still gets one test character (from 2 ids) and
    one val character (from 3 ids) when their ratio is non-zero: the ids with
    the highest hashes move over, so the choice is deterministic too.
    """
    ratios = parse_ratios(ratios)
    bounds = (ratios[0], ratios[0] + ratios[1])
    out = {s: [] for s in SPLITS}
    for cid in sorted(set(ids)):
        u = id_unit(cid)
        out["train" if u < bounds[0] else "val" if u < bounds[1] else "test"].append(cid)
    if ensure:
        for split, need in (("test", 2), ("val", 3)):
            if out[split] or ratios[SPLITS.index(split)] == 0 or len(set(ids)) < need:
                continue
            donors = [s for s in SPLITS if s != split and len(out[s]) > 1] or \
                     [s for s in SPLITS if s != split and out[s]]
            donor = max(donors, key=lambda s: len(out[s]))
            cid = max(out[donor], key=id_unit)
            out[donor].remove(cid)
            out[split].append(cid)
    return {s: sorted(v) for s, v in out.items()}


def write_subset(root, dataset: str, split: str, ids) -> Path:
    p = paths.subset_csv(root, dataset, split)
    with atomic_write(p, "w") as f:
        f.writelines(paths.key_of(c) + "\n" for c in sorted(ids))
    return p


def drops_path(root, dataset: str) -> Path:
    return Path(root) / "subsets" / f"{dataset}_drops.jsonl"


def write_drops(root, dataset: str, drops) -> Path:
    p = drops_path(root, dataset)
    with atomic_write(p, "w") as f:
        f.writelines(json.dumps(d) + "\n" for d in drops)
    return p


def read_drops(root, dataset: str) -> list[dict]:
    p = drops_path(root, dataset)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def reason_counts(drops) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in drops:
        out[d["reason"]] = out.get(d["reason"], 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))




# ------------------------------------------------------------------ the data_clean job

def run_clean(root, dataset: str, renderset: str | None = None, phase: str = "all",
              cfg: CleanConfig | None = None, ratios=(0.8, 0.1, 0.1), workers: int = 1,
              progress: bool = True, log=print, report=None) -> dict[str, list[str]]:
    """``filter``: check renders -> ``<dataset>_all.csv`` + ``<dataset>_drops.jsonl``;
    ``split``: ``_all.csv`` -> ``_{train,val,test}.csv``; ``all``: both.

    A dropped character is a result of cleaning, not a failure of the job; a character that could not
    be checked at all goes to ``report`` (a ``training.jobs.JobReport``) as a failure.

    Logs the before -> after count of every split (before = the split the
    unfiltered characters would get) and the drops per reason.  Returns the
    written subsets.
    """
    root = paths.data_root(root)
    renderset = renderset or dataset
    cfg = cfg or CleanConfig()
    if phase not in ("all", "filter", "split"):
        raise UserError(f"--phase: expected all, filter or split, got {phase!r}")
    ratios = parse_ratios(ratios)
    out: dict[str, list[str]] = {}
    if phase in ("all", "filter"):
        failed: list[tuple[str, str]] = []
        kept, drops, cands = clean(root, renderset, cfg, workers, progress, check_failures=failed)
        if report is not None:
            report.done(len(kept) + len(drops))
            for cid, why in failed:
                report.failed(cid, why)
        log(f"renderset {renderset}: {len(cands)} characters")
        counts = reason_counts(drops)
        log(f"dropped {len(drops)}" + (": " + ", ".join(f"{k} {v}" for k, v in counts.items()) if drops else ""))
        for d in drops[:10]:
            log(f"  {d['key']}: {d['reason']} ({d['detail']})")
        if len(drops) > 10:
            log(f"  ... {len(drops) - 10} more")
        write_subset(root, dataset, "all", kept)
        dp = write_drops(root, dataset, drops)
        log(f"wrote {paths.subset_csv(root, dataset, 'all')} and {dp}")
        out["all"] = kept
    else:
        kept = paths.read_subset(root, dataset, "all")
        drops = read_drops(root, dataset)
    if phase in ("all", "split"):
        dropped = [d["id"] for d in drops]
        if not kept:
            raise fail(paths.subset_csv(root, dataset, "all"), "no character survived cleaning; nothing to split")
        before = split_ids(sorted(set(kept) | set(dropped)), ratios)
        after = split_ids(kept, ratios)
        log(f"all: {len(kept) + len(set(dropped) - set(kept))} -> {len(kept)}")
        for s in SPLITS:
            write_subset(root, dataset, s, after[s])
            log(f"{s}: {len(before[s])} -> {len(after[s])}")
        log(f"wrote {Path(root) / 'subsets'}/{dataset}_{{train,val,test}}.csv")
        out.update(after)
    return out
