"""Foreground masks of a rendered set (``ortho_mask``, ``rgb_mask``, ``rgb60_mask``) from the renders' alpha,
written atomically so that the job can be killed and re-run (finished masks are skipped).
"""
from __future__ import annotations


import numpy as np

from training import paths
from training.errors import UserError, save_png_atomic
from training.data.catalog import MASK_THRESHOLD, _run_jobs, load_alpha, mask_from_alpha


# ------------------------------------------------------------------ masks

MASK_SOURCES = {"ortho": ("ortho", "ortho_mask"), "rgb": ("xyza", "rgb_mask"), "rgb60": ("xyza60", "rgb60_mask")}


def _mask_one(args) -> tuple[int, int, list[str]]:
    """Masks of one character -> (written, skipped, errors): every view is tried, each failure listed."""
    root, renderset, char_id, src, dst, threshold, overwrite = args
    folder = paths.render_path(root, renderset, src, char_id, "x").parent
    views = sorted(p.stem for p in folder.glob("*.png") if not p.name.startswith("."))
    if not views:
        return 0, 0, [f"{folder}: no {src} views"]
    written = skipped = 0
    errors = []
    for v in views:
        out = paths.render_path(root, renderset, dst, char_id, v)
        if out.exists() and not overwrite:
            skipped += 1
            continue
        try:
            mask = mask_from_alpha(load_alpha(folder / f"{v}.png"), threshold)
            save_png_atomic(out, (mask * 255).astype(np.uint8))
            written += 1
        except UserError as e:
            errors.append(str(e))
    return written, skipped, errors


def generate_masks(root, renderset: str, ids, kind: str = "ortho", threshold: int = MASK_THRESHOLD,
                   overwrite: bool = False, workers: int = 1, progress: bool = True) -> dict:
    """Foreground masks (alpha > threshold, 0/255 grey PNG) for every view of ``kind``.

    ``ortho`` masks come from the RGBA ortho renders; ``rgb`` views are on white,
    so theirs come from the alpha of the xyza render of the same view.
    """
    if kind not in MASK_SOURCES:
        raise UserError(f"mask kind {kind!r}: expected one of {sorted(MASK_SOURCES)}")
    src, dst = MASK_SOURCES[kind]
    jobs = [(root, renderset, cid, src, dst, int(threshold), overwrite) for cid in ids]
    results = _run_jobs(_mask_one, jobs, workers, 4, desc=f"{dst} {renderset}", disable=not progress)
    errors = [e for _, _, errs in results for e in errs]
    return {"characters": len(ids), "written": sum(r[0] for r in results),
            "skipped": sum(r[1] for r in results), "errors": errors,
            "failed_characters": [cid for cid, (_, _, errs) in zip(ids, results) if errs]}
