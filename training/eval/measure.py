"""Measure a generated evaluation tree against the ground-truth renders (``_scripts.eval.measure``).

Per character: image metrics on the ortho front and back views, on the ortho
left and right views (subset "side" = their mean: with the back an input of
the two-view models, the sides and the 360 ring are their novel views) and on
the 12 spin views (subset "360" = mean over them), geometry on the extracted
mesh.
Then the mean over characters of each per-character value (REFERENCE
section 5: "average per character, then over characters").  FID pools every
view of every character.  A metric that cannot be computed is reported as
unavailable with the reason, never as a number.
"""
from __future__ import annotations

import csv
import io
import json
import math
import time
from pathlib import Path

import numpy as np

from training import cameras, paths
from training.data import catalog
from training.errors import UserError, atomic_write, fail, load_image, save_json_atomic
from training.eval import geometry as geo
from training.eval.image import PAIR_METRICS, ImageMetrics, MetricUnavailable, on_white

SUBSETS = ("front", "back", "side", "360")
SIDE_VIEWS = ("left", "right")
ORTHO_EVAL_VIEWS = ("front", "left", "right", "back")
SPIN_DTYPE = "rgb60"          # the spin views are the elevation-0 row of the 60-view grid
TABLE_ORDER = [(s, m) for s in SUBSETS for m in PAIR_METRICS] + [("all", "fid")] + \
    [("geom", m) for m in geo.GEOM_METRICS]
# which way each metric improves (_scripts.eval.compare, _scripts.quickstart_report)
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "clip": True, "lpips": False, "fid": False,
                    **dict.fromkeys(geo.DISTANCE_METRICS, False), **dict.fromkeys(geo.F1_THRESHOLDS, True)}


def spin_names() -> list[str]:
    return [f"{i:04d}" for i in cameras.SPIN12]


def generated_ids(out_dir: Path) -> list[str]:
    """Characters whose generation finished (their meta json, the last file, exists)."""
    return sorted(p.stem for p in (Path(out_dir) / "meta").glob("*/*.json") if not p.name.startswith("."))


def _load_pair(pred_path: Path, gt_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Both on white in [0,1]; the prediction is resized to the ground truth's size when they differ."""
    from PIL import Image
    gt = load_image(gt_path)
    pred = load_image(pred_path)
    if pred.size != gt.size:
        resample = Image.BOX if pred.size[0] > gt.size[0] else Image.BICUBIC
        pred = pred.convert("RGBA").resize(gt.size, resample)
    return on_white(pred), on_white(gt)


def load_rois(path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``--roi FILE``: {"name": [xmin, ymin, zmin, xmax, ymax, zmax], ...} in framed metres."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise fail(path, "file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise fail(path, f"not valid json ({e})") from None
    if not isinstance(raw, dict) or not raw:
        raise fail(path, 'expected {"name": [xmin, ymin, zmin, xmax, ymax, zmax], ...}')
    out = {}
    for name, box in raw.items():
        b = np.asarray(box, np.float64) if isinstance(box, list) else None
        if b is None or b.shape != (6,) or not np.all(b[:3] < b[3:]):
            raise fail(path, f"box {name!r}: expected [xmin, ymin, zmin, xmax, ymax, zmax] with min < max")
        out[str(name)] = (b[:3], b[3:])
    return out


DEPENDENCE_SIZE = 64          # input dependence is measured on 64-px copies (colour and layout, not detail)


def input_dependence(preds: np.ndarray, gts: np.ndarray) -> dict[str, float]:
    """How much the predictions vary with the input, over a set of characters ([N,H,W,3] on white, N >= 2).

    spread: per-pixel std over characters of the predictions / the same for the ground truth (0: one output
    for every input).  devcorr: Pearson correlation of each prediction's deviation from the mean prediction
    with its ground truth's deviation from the mean ground truth (0: the variation is unrelated to the input;
    a model that outputs the set's mean image scores 0 on both, whatever its PSNR).
    """
    p = preds.astype(np.float64) - preds.mean(0)
    g = gts.astype(np.float64) - gts.mean(0)
    gs = np.sqrt((g ** 2).mean(0)).mean()
    den = np.sqrt((p ** 2).sum() * (g ** 2).sum())
    return {"spread": float(np.sqrt((p ** 2).mean(0)).mean() / gs) if gs > 0 else float("nan"),
            "devcorr": float((p * g).sum() / den) if den > 0 else 0.0}


def _small(img: np.ndarray) -> np.ndarray:
    from PIL import Image
    im = Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8))
    return on_white(im.resize((DEPENDENCE_SIZE,) * 2, Image.BOX))


def _mean(vals):
    vals = [v for v in vals if v is not None]
    return float(np.mean(vals)) if vals else None


class Measurer:
    def __init__(self, root, renderset: str, out_dir, *, device="auto", weights_dir=None, random_init=False,
                 geometry: bool = True, rois=None, fid_min_images: int | None = None, n_samples=geo.N_SAMPLES,
                 gt_mesh_fn=None, log=print):
        self.root, self.renderset, self.out_dir = Path(root), renderset, Path(out_dir)
        self.metrics = ImageMetrics(device, weights_dir, random_init)
        self.unavailable = dict(self.metrics.unavailable)
        self.fid = None
        try:
            from training.eval.fid import FID_MIN_IMAGES, FIDMetric
            self.fid = FIDMetric(device, weights_dir, random_init,
                                 FID_MIN_IMAGES if fid_min_images is None else fid_min_images)
        except MetricUnavailable as e:
            self.unavailable["fid"] = str(e)
        self.geometry = geometry
        self.rois = rois or {}
        self.n_samples = n_samples
        self.rs_meta = catalog.load_renderset_meta(self.root, renderset)
        self.log = log
        if gt_mesh_fn is None:
            from training.eval.gt_mesh import ground_truth_mesh
            gt_mesh_fn = ground_truth_mesh
        self.gt_mesh_fn = gt_mesh_fn
        # (pred, gt) 64-px copies per subset; "side" pools the left and right views
        self._dependence_pairs: dict[str, list] = {"front": [], "back": [], "side": []}
        self._fid_pred: list[np.ndarray] = []
        self._fid_gt: list[np.ndarray] = []

    # ---------------------------------------------------------- images

    def _pairs(self, char_id: str, dtype: str, views) -> tuple[list, list, list[str]]:
        preds, gts, names = [], [], []
        for v in views:
            gp = paths.render_path(self.root, self.renderset, dtype, char_id, v)
            pp = self.out_dir / dtype / paths.shard_of(char_id) / char_id / f"{v}.png"
            if not gp.exists() or not pp.exists():
                continue
            a, b = _load_pair(pp, gp)
            preds.append(a), gts.append(b), names.append(v)
        return preds, gts, names

    def images(self, char_id: str) -> dict:
        """{subset: {metric: value}} plus per-view values under 'views'."""
        out: dict = {"views": {}}
        po, go, no = self._pairs(char_id, "ortho", ORTHO_EVAL_VIEWS)
        ps, gs, ns = self._pairs(char_id, SPIN_DTYPE, spin_names())
        if po:
            s = self.metrics(po, go)
            for sub, pairs in self._dependence_pairs.items():
                for v in (SIDE_VIEWS if sub == "side" else (sub,)):
                    if v in no:
                        pairs.append((_small(po[no.index(v)]), _small(go[no.index(v)])))
            for i, v in enumerate(no):
                out["views"][f"ortho/{v}"] = {m: float(s[m][i]) for m in s}
        if ps:
            s = self.metrics(ps, gs)
            for i, v in enumerate(ns):
                out["views"][f"{SPIN_DTYPE}/{v}"] = {m: float(s[m][i]) for m in s}
            if len(ns) < 12:
                out["360_views"] = len(ns)
        for sub, key in (("front", "ortho/front"), ("back", "ortho/back")):
            if key in out["views"]:
                out[sub] = dict(out["views"][key])
        side = [out["views"][f"ortho/{v}"] for v in SIDE_VIEWS if f"ortho/{v}" in out["views"]]
        if side:
            out["side"] = {m: float(np.mean([d[m] for d in side])) for m in side[0]}
        spin = [out["views"][f"{SPIN_DTYPE}/{v}"] for v in ns]
        if spin:
            out["360"] = {m: float(np.mean([d[m] for d in spin])) for m in spin[0]}
        if self.fid is not None and po + ps:
            self._fid_pred.append(self.fid.features(po + ps).astype(np.float32))
            self._fid_gt.append(self.fid.features(go + gs).astype(np.float32))
        return out

    # ---------------------------------------------------------- geometry

    def geometry_of(self, char_id: str) -> dict:
        import trimesh
        mesh_path = self.out_dir / "mesh" / paths.shard_of(char_id) / char_id / "mesh.ply"
        if not mesh_path.exists():
            return {"error": f"{mesh_path}: no predicted mesh"}
        pred = trimesh.load(mesh_path, process=False, force="mesh")
        meta = catalog.load_char_meta(self.root, self.renderset, char_id)
        framing = catalog.framing_of(meta, self.rs_meta) or "body"
        box = cameras.get_framing(framing).box
        try:
            gt = self.gt_mesh_fn(self.root, self.renderset, char_id, meta, self.rs_meta)
        except UserError as e:
            return {"error": str(e)}
        cube = (np.full(3, -box / 2), np.full(3, box / 2))
        out = {"gt_faces_visible": int(len(gt.faces)), "pred_faces": int(len(pred.faces))}
        out.update(geo.geometry_scores(pred, gt, cube, self.n_samples))
        for name, (lo, hi) in self.rois.items():
            lo, hi = np.maximum(lo, cube[0]), np.minimum(hi, cube[1])
            try:
                out[f"roi:{name}"] = geo.geometry_scores(pred, gt, (lo, hi), self.n_samples)
            except ValueError as e:
                out[f"roi:{name}"] = {"error": str(e)}
        return out

    # ---------------------------------------------------------- all

    def run(self, ids: list[str], progress: bool = True, report=None) -> dict:
        """Measure every character; one whose files cannot be read is a failure (``report``, a
        ``training.jobs.JobReport``, when given; else the error is raised) and left out of the means."""
        from tqdm import tqdm
        per_char: dict[str, dict] = {}
        failures: dict[str, str] = {}
        t0 = time.time()
        most = len(ids) * (len(ORTHO_EVAL_VIEWS) + len(cameras.SPIN12))
        if self.fid is not None and most < self.fid.min_images:    # known now: skip the Inception passes
            self.unavailable["fid"] = f"FID needs at least {self.fid.min_images} images per side (have at most {most})"
            self.fid = None
        for cid in tqdm(ids, desc="measure", disable=not progress, unit="char"):
            try:
                rec = self.images(cid)
                if self.geometry:
                    try:
                        rec["geom"] = self.geometry_of(cid)
                    except ValueError as e:         # e.g. ground truth empty inside the region
                        rec["geom"] = {"error": f"{cid}: {e}"}
            except UserError as e:
                if report is None:
                    raise
                failures[cid] = str(e)
                report.failed(cid, str(e))
                continue
            per_char[cid] = rec
        if report is not None:
            report.done(len(per_char))
        table = self.summarise(per_char)
        return {"renderset": self.renderset, "n_characters": len(per_char), "table": table,
                "unavailable": self.unavailable, "per_character": per_char, "failures": failures,
                "seconds": round(time.time() - t0, 2)}

    def summarise(self, per_char: dict) -> list[dict]:
        rows = []
        for sub, m in TABLE_ORDER:
            if sub == "all":
                continue
            if m in self.unavailable:
                rows.append({"subset": sub, "metric": m, "value": None, "n": 0, "note": "unavailable"})
                continue
            if sub == "geom" and not self.geometry:
                continue
            vals = [rec[sub][m] for rec in per_char.values() if isinstance(rec.get(sub), dict) and m in rec[sub]]
            notes = []
            if sub == "360" and not vals:
                notes.append(f"no {SPIN_DTYPE} ground truth to compare with (render the set with --grid60)")
            if sub == "geom":
                errs = [rec["geom"]["error"] for rec in per_char.values() if "error" in rec.get("geom", {})]
                if errs:
                    notes.append(f"{len(errs)} character(s) without geometry, first: {errs[0]}")
                finite = [v for v in vals if math.isfinite(v)]
                if m in geo.DISTANCE_METRICS and len(finite) < len(vals):
                    # an empty predicted mesh has no CD; leaving it out is reported, and its F1 counts as 0
                    notes.append(f"{len(vals) - len(finite)} empty prediction(s) left out of CD (F1 counts them as 0)")
                    vals = finite if finite else vals
            rows.append({"subset": sub, "metric": m, "value": _mean(vals), "n": len(vals),
                         "note": "; ".join(notes) or None})
        for sub, pairs in self._dependence_pairs.items():
            dep = input_dependence(np.stack([a for a, _ in pairs]), np.stack([b for _, b in pairs])) \
                if len(pairs) >= 2 else {}
            for m in ("spread", "devcorr"):
                rows.append({"subset": sub, "metric": m, "value": dep.get(m), "n": len(pairs),
                             "note": None if dep else "needs at least 2 characters"})
        for name in self.rois:
            for m in geo.GEOM_METRICS:
                vals = [rec["geom"][f"roi:{name}"].get(m) for rec in per_char.values()
                        if isinstance(rec.get("geom", {}).get(f"roi:{name}"), dict)]
                rows.append({"subset": f"geom:{name}", "metric": m, "value": _mean(vals), "n": len(vals), "note": None})
        # FID over all views pooled
        if self.fid is not None:
            try:
                fa = np.concatenate(self._fid_pred).astype(np.float64) if self._fid_pred else np.zeros((0, 2048))
                fb = np.concatenate(self._fid_gt).astype(np.float64) if self._fid_gt else np.zeros((0, 2048))
                rows.append({"subset": "all", "metric": "fid", "value": self.fid.from_features(fa, fb),
                             "n": len(fa), "note": None})
            except MetricUnavailable as e:
                self.unavailable["fid"] = str(e)
        if "fid" in self.unavailable:
            rows.append({"subset": "all", "metric": "fid", "value": None, "n": 0, "note": "unavailable"})
        return rows


# ------------------------------------------------------------------ output

def format_table(rows: list[dict], unavailable: dict) -> str:
    """The seed's table: one 'subset metric value' row each (unavailable metrics say so)."""
    lines = [f"{'subset':<10} {'metric':<7} {'value':>9}"]
    for r in rows:
        v = r["value"]
        if v is None:
            val = "n/a"
        else:
            val = f"{v:9.3f}" if math.isfinite(v) else "inf"
        lines.append(f"{r['subset']:<10} {r['metric']:<7} {val:>9}")
    for r in rows:
        if r.get("note") and r["note"] != "unavailable":
            lines.append(f"# {r['subset']} {r['metric']}: {r['note']}")
    for m, why in unavailable.items():
        lines.append(f"# {m}: unavailable: {why}")
    return "\n".join(lines)


def _json_safe(x):
    if isinstance(x, float) and not math.isfinite(x):
        return "inf" if x > 0 else ("-inf" if x < 0 else "nan")
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def write_outputs(out_dir: Path, result: dict) -> dict[str, Path]:
    out_dir = Path(out_dir)
    files = {"json": out_dir / "measure.json", "csv": out_dir / "measure.csv"}
    save_json_atomic(files["json"], _json_safe(result))
    cols = [f"{s}/{m}" for s, m in TABLE_ORDER if s != "all"]
    for rec in result["per_character"].values():
        for k in rec.get("geom", {}):
            if k.startswith("roi:"):
                cols += [f"geom:{k[4:]}/{m}" for m in geo.GEOM_METRICS if f"geom:{k[4:]}/{m}" not in cols]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id"] + cols)
    for cid, rec in result["per_character"].items():
        row = [cid]
        for c in cols:
            sub, m = c.split("/")
            d = rec.get("geom", {}).get("roi:" + sub[5:]) if sub.startswith("geom:") else rec.get(sub)
            v = d.get(m) if isinstance(d, dict) else None
            row.append("" if v is None else (f"{v:.6g}" if math.isfinite(v) else "inf"))
        w.writerow(row)
    with atomic_write(files["csv"], "w") as f:
        f.write(buf.getvalue())
    return files
