"""Paired comparison of two models measured on the same characters (``_scripts.eval.compare``).

NOVA-3D's claim is a difference: the two-view model against the one-view model trained the same way.
A difference of two means says little without its spread, so the comparison is paired, per character:
for each subset the lead of model A (A - B for PSNR, SSIM and F1; B - A for the chamfer distance, so a
positive lead is always A doing better), its mean, standard error and range, and the share of characters
A wins.  The 360 ring is also broken down by the spin view's azimuth (0 = the front, +-180 = the back),
which shows where on the ring a lead comes from.

Input: the ``measure.json`` that ``_scripts.eval.measure`` writes for each model (``per_character``).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from training import cameras
from training.errors import fail
from training.eval import geometry as geo
from training.eval.measure import HIGHER_IS_BETTER, SPIN_DTYPE, SUBSETS

# (subset, metric): PSNR and SSIM of each view subset, then CD, its halves and F1@10
METRICS = [(s, m) for m in ("psnr", "ssim") for s in SUBSETS] + \
    [("geom", m) for m in (*geo.DISTANCE_METRICS, "f1@10")]


def load_measure(path) -> dict:
    """A measure.json's per-character records and its name; one-line errors for what is not one."""
    path = Path(path)
    if not path.is_file():
        raise fail(path, "measure.json not found (run _scripts.eval.measure first)")
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise fail(path, f"not a JSON file ({e})") from None
    if not isinstance(d, dict) or not isinstance(d.get("per_character"), dict):
        raise fail(path, "no per_character records: not a measure.json of _scripts.eval.measure")
    if not d["per_character"]:
        raise fail(path, "no measured characters")
    return {"name": d.get("inferquery") or path.parent.name, "renderset": d.get("renderset"),
            "per_character": d["per_character"], "path": str(path)}


def _value(rec: dict, subset: str, metric: str) -> float | None:
    v = rec.get(subset, {}).get(metric) if isinstance(rec.get(subset), dict) else None
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _stats(diffs: list[float], a: list[float], b: list[float]) -> dict:
    d = np.asarray(diffs, dtype=np.float64)
    n = len(d)
    return {"n": n, "a": float(np.mean(a)), "b": float(np.mean(b)), "lead": float(d.mean()),
            "se": float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else None,
            "min": float(d.min()), "max": float(d.max()), "wins": float(np.mean(d > 0))}


def paired(a: dict, b: dict) -> dict:
    """A's lead over B on the characters both measured: per metric and per spin view of the 360 ring."""
    if a["renderset"] and b["renderset"] and a["renderset"] != b["renderset"]:
        raise fail(b["path"], f"measured on {b['renderset']}, not on {a['renderset']} like {a['path']}")
    ids = sorted(set(a["per_character"]) & set(b["per_character"]))
    if not ids:
        raise fail(b["path"], f"no character in common with {a['path']}")
    pa, pb = a["per_character"], b["per_character"]
    rows = []
    for subset, metric in METRICS:
        higher = HIGHER_IS_BETTER[metric]
        va, vb, d = [], [], []
        for c in ids:
            x, y = _value(pa[c], subset, metric), _value(pb[c], subset, metric)
            if x is None or y is None:
                continue
            va.append(x)
            vb.append(y)
            d.append(x - y if higher else y - x)
        if d:
            rows.append({"subset": subset, "metric": metric, **_stats(d, va, vb)})
    ring = []
    for view in cameras.view_set("spin12", "body"):     # the 12 spin views (angles are the same in any framing)
        key = f"{SPIN_DTYPE}/{view.name}"
        both = [c for c in ids if key in pa[c].get("views", {}) and key in pb[c].get("views", {})]
        if both:
            va = [pa[c]["views"][key]["psnr"] for c in both]
            vb = [pb[c]["views"][key]["psnr"] for c in both]
            ring.append({"view": view.name, "azim": view.azim, **_stats([x - y for x, y in zip(va, vb)], va, vb)})
    ring.sort(key=lambda r: r["azim"])
    return {"a": a["name"], "b": b["name"], "renderset": a["renderset"] or b["renderset"], "n": len(ids),
            "only_a": len(set(pa) - set(ids)), "only_b": len(set(pb) - set(ids)), "metrics": rows, "ring": ring}


def format_comparison(c: dict) -> str:
    """The comparison as text: one row per metric, then the ring by azimuth."""
    se = lambda r: f"{r['se']:.2f}" if r["se"] is not None else "-"   # noqa: E731
    out = [f"A = {c['a']}, B = {c['b']}: {c['n']} characters of {c['renderset']} measured by both"
           + (f" ({c['only_a']} only by A, {c['only_b']} only by B, left out)" if c["only_a"] or c["only_b"] else ""),
           "lead: A - B (B - A for the cd rows), positive = A better; se = standard error of the mean lead",
           f"{'subset':<6} {'metric':<7} {'A':>8} {'B':>8} {'lead':>7} {'se':>5} {'min':>7} {'max':>7} {'A wins':>6}"]
    for r in c["metrics"]:
        out.append(f"{r['subset']:<6} {r['metric']:<7} {r['a']:8.3f} {r['b']:8.3f} {r['lead']:+7.2f} {se(r):>5} "
                   f"{r['min']:+7.2f} {r['max']:+7.2f} {r['wins']:6.0%}")
    if c["ring"]:
        out.append("360 ring, PSNR by azimuth (0 = front, +-180 = back)")
        out.append(f"{'azim':>6} {'A':>8} {'B':>8} {'lead':>7} {'se':>5}")
        for r in c["ring"]:
            out.append(f"{r['azim']:6.0f} {r['a']:8.3f} {r['b']:8.3f} {r['lead']:+7.2f} {se(r):>5}")
    return "\n".join(out)
