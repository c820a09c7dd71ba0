"""Cleaning, foreground masks and precomputed encoder features for a rendered set.

Everything reads the tree of docs/DESIGN.md (``renders/<renderset>/...``) and
writes through the atomic helpers of ``training.errors``, so every job can be
killed and re-run: finished outputs are skipped.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np

from . import cameras, paths
from .errors import UserError, fail, load_image, save_json_atomic, save_png_atomic, atomic_write
from .images import on_white

MASK_THRESHOLD = 200            # NOVA-3D: foreground = alpha > 200
ORTHO_NAMES = tuple(cameras.ORTHO_VIEWS)          # front, left, right, back, top
SPLITS = ("train", "val", "test")
FEATURE_DTYPE = "ortho_katepca_chonk"
FEATURE_INFO = "feature_info.json"
REQUIRED_DTYPES = ("ortho", "ortho_xyza", "rgb", "xyza")


# ------------------------------------------------------------------ metadata

def load_json(path) -> dict:
    path = Path(path)
    if not path.exists():
        raise fail(path, "file not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise fail(path, f"not valid json ({e})") from None


def load_renderset_meta(root, renderset: str) -> dict:
    """``<renderset>_meta.json`` or {} when the renderer did not write one."""
    p = paths.renderset_meta_path(root, renderset)
    return load_json(p) if p.exists() else {}


def load_char_meta(root, renderset: str, char_id: str) -> dict:
    return load_json(paths.char_meta_path(root, renderset, char_id))


def _views_block(meta: dict, dtype: str):
    """The per-dtype view list of a meta json, whichever nesting the renderer used."""
    for holder in (meta.get("views"), meta.get("cameras"), meta):
        if isinstance(holder, dict) and dtype in holder:
            return holder[dtype]
    return None


def _as_named(block) -> dict[str, dict]:
    if isinstance(block, dict):
        return {str(k): dict(v, name=v.get("name", k)) for k, v in block.items() if isinstance(v, dict)}
    if isinstance(block, list):
        return {str(v["name"]): v for v in block if isinstance(v, dict) and "name" in v}
    return {}


# image dtypes share the cameras of the dtype that holds them in the meta json
CAMERA_DTYPE = {"ortho_xyza": "ortho", "ortho_mask": "ortho", "ortho_lines": "ortho", "xyza": "rgb", "rgb_mask": "rgb",
                "xyza60": "rgb60", FEATURE_DTYPE: "ortho"}


def _run_jobs(fn, jobs: list, workers: int, chunksize: int, **bar) -> list:
    """fn over jobs in order with a progress bar; a spawn pool of ``workers`` processes when > 1."""
    from tqdm import tqdm
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp
        with mp.get_context("spawn").Pool(workers) as pool:
            return list(tqdm(pool.imap(fn, jobs, chunksize=chunksize), total=len(jobs), unit="char", **bar))
    return list(tqdm(map(fn, jobs), total=len(jobs), unit="char", **bar))


def framing_of(meta: dict, rs_meta: dict | None = None) -> str | None:
    for m in (meta, rs_meta or {}):
        f = m.get("framing")
        if isinstance(f, dict):
            f = f.get("name")
        if isinstance(f, str) and f in cameras.FRAMINGS:
            return f
    return None


def meta_views(meta: dict, dtype: str, char_id: str, rs_meta: dict | None = None) -> dict[str, dict]:
    """name -> View json (elev, azim, dist, fov, near, far, boxwarp[, cam25]) for one dtype.

    Falls back to the renderset meta's fixed views, then to the view sets of
    ``training.cameras`` for the character's framing (the renderer builds its
    cameras from the same functions, so they agree).
    """
    dtype = CAMERA_DTYPE.get(dtype, dtype)
    for m in (meta, rs_meta or {}):
        views = _as_named(_views_block(m, dtype))
        if views:
            return views
    framing = framing_of(meta, rs_meta)
    if framing is None or dtype not in ("ortho", "rgb", "rgb60"):
        return {}
    seed = int((rs_meta or {}).get("seed", meta.get("seed", 0)))
    return {v.name: v.to_json() for v in cameras.view_set(dtype, framing, char_id, seed)}


def view_cam25(view: dict) -> np.ndarray:
    if "cam25" in view:
        return np.asarray(view["cam25"], np.float32)
    return cameras.View.from_json(view).cam25()


def read_failures(root, renderset: str) -> dict[str, str]:
    """id -> error of ``failures.jsonl`` (a torn last line from a killed run is ignored)."""
    p = paths.renders_dir(root, renderset) / "failures.jsonl"
    out: dict[str, str] = {}
    if not p.exists():
        return out
    for line in p.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "id" in rec:
            out[str(rec["id"])] = str(rec.get("error", ""))
    return out


def _ids_under(folder: Path, files: bool) -> set[str]:
    """Character ids of ``folder/<shard>/<id>[.json]``."""
    if not folder.is_dir():
        return set()
    out = set()
    for shard in folder.iterdir():
        if not shard.is_dir():
            continue
        for e in shard.iterdir():
            if files and e.suffix == ".json" and not e.name.startswith("."):
                out.add(e.stem)
            elif not files and e.is_dir():
                out.add(e.name)
    return out


def complete_ids(root, renderset: str) -> list[str]:
    """Characters whose per-character meta json (their last file) exists."""
    return sorted(_ids_under(paths.renders_dir(root, renderset) / "meta", files=True))


def candidate_ids(root, renderset: str) -> list[str]:
    """Every character the renderer touched: finished, partial or failed."""
    rd = paths.renders_dir(root, renderset)
    if not rd.is_dir():
        raise fail(rd, "renderset not found (render it with `python -m _scripts.data.render`)")
    ids = _ids_under(rd / "meta", True) | set(read_failures(root, renderset))
    for dtype in REQUIRED_DTYPES:
        ids |= _ids_under(rd / dtype, False)
    return sorted(ids)


def select_ids(root, renderset: str, dataset: str | None = None, split: str = "all") -> list[str]:
    """A subset csv when ``dataset`` is given, else every finished character of the renderset."""
    rd = paths.renders_dir(root, renderset)
    if not rd.is_dir():
        raise fail(rd, "renderset not found (render it with `python -m _scripts.data.render`)")
    return paths.read_subset(root, dataset, split) if dataset else complete_ids(root, renderset)


# ------------------------------------------------------------------ images

def load_alpha(path) -> np.ndarray:
    """uint8 alpha [H,W] of an RGBA png (an image without alpha is fully opaque)."""
    im = load_image(path)
    if "A" not in im.getbands():
        return np.full((im.height, im.width), 255, np.uint8)
    return np.asarray(im.getchannel("A"))


def mask_from_alpha(alpha: np.ndarray, threshold: int = MASK_THRESHOLD) -> np.ndarray:
    return np.asarray(alpha) > threshold


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


# ------------------------------------------------------------------ features

def feature_dir(root, renderset: str) -> Path:
    return paths.renders_dir(root, renderset) / FEATURE_DTYPE


def feature_path(root, renderset: str, char_id: str, view: str) -> Path:
    return paths.render_path(root, renderset, FEATURE_DTYPE, char_id, view).with_suffix(".pt")


def load_feature_info(root, renderset: str) -> dict | None:
    p = feature_dir(root, renderset) / FEATURE_INFO
    return load_json(p) if p.exists() else None


def file_digest(path, n: int = 1 << 20) -> str:
    """sha256 of a file (weights identity for the feature marker)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(n):
            h.update(chunk)
    return h.hexdigest()[:16]


def weights_identity(weights: str | None, random_init: bool) -> str:
    if random_init:
        return "random-init"
    if weights is None:
        raise UserError("features need encoder weights: pass --weights PATH or --weights imagenet "
                        "(or --random-init to use an untrained encoder on purpose)")
    if weights == "imagenet":
        return "imagenet"
    p = Path(weights)
    if not p.is_file():
        raise fail(p, "encoder weights not found (download them, or pass --weights imagenet)")
    return f"file:{p.name}:sha256={file_digest(p)}"


def check_feature_info(existing: dict | None, info: dict) -> None:
    """Refuse to add features of another encoder to a folder (mixing would corrupt training)."""
    if existing is None:
        return
    keys = ("encoder", "weights", "random_init", "seed", "size", "layer")
    diff = [k for k in keys if existing.get(k) != info.get(k)]
    if diff:
        were = ", ".join(f"{k}={existing.get(k)!r}" for k in diff)
        raise UserError(f"{FEATURE_DTYPE}/{FEATURE_INFO}: existing features were made with {were}; "
                        "pass --overwrite to recompute them all")


def load_cond_image(path, size: int | None = None):
    """An ortho RGBA render as a [3,H,W] tensor on white in [-1,1] (area-resized to ``size``)."""
    import torch
    im = load_image(path, "RGBA")
    t = torch.from_numpy(on_white(np.asarray(im))).permute(2, 0, 1)
    if size and t.shape[-1] != size:
        t = torch.nn.functional.interpolate(t[None], size=(size, size), mode="area")[0]
    return t * 2.0 - 1.0


@dataclasses.dataclass
class FeatureJob:
    views: tuple = ("front", "back")
    size: int = 256
    batch: int = 8
    mirror: bool = True             # also store features of the mirrored image (<view>_mirror.pt)
    overwrite: bool = False


def generate_features(root, renderset: str, ids, encode, info: dict, job: FeatureJob,
                      device="cpu", progress: bool = True) -> dict:
    """Run ``encode([B,3,S,S] in [-1,1]) -> [B,C,h,w]`` on the ortho views; save fp16 tensors.

    ``info`` describes the encoder and goes to ``feature_info.json`` (written
    first, so a killed run leaves a consistently labelled folder).
    """
    import torch
    from tqdm import tqdm
    fdir = feature_dir(root, renderset)
    existing = None if job.overwrite else load_feature_info(root, renderset)
    info = dict(info, size=job.size, views=list(job.views), mirror=job.mirror, dtype="float16")
    check_feature_info(existing, info)
    info = dict(existing or {}, **info)       # keeps the recorded feature shape on resume
    save_json_atomic(fdir / FEATURE_INFO, info)

    todo = []   # (char_id, view, mirrored)
    skipped = 0
    for cid in ids:
        for v in job.views:
            for m in ((False, True) if job.mirror else (False,)):
                out = feature_path(root, renderset, cid, v + ("_mirror" if m else ""))
                if out.exists() and not job.overwrite:
                    skipped += 1
                else:
                    todo.append((cid, v, m))
    errors, written, shape = [], 0, None
    bar = tqdm(total=len(todo), desc=f"features {renderset}", unit="view", disable=not progress)
    for i in range(0, len(todo), job.batch):
        chunk, imgs = [], []
        for cid, v, m in todo[i:i + job.batch]:
            try:
                img = load_cond_image(paths.render_path(root, renderset, "ortho", cid, v), job.size)
            except UserError as e:
                errors.append(str(e))
                continue
            imgs.append(img.flip(-1) if m else img)
            chunk.append((cid, v, m))
        if chunk:
            with torch.no_grad():
                feats = encode(torch.stack(imgs).to(device)).float().cpu()
            shape = tuple(feats.shape[1:])
            for (cid, v, m), f in zip(chunk, feats):
                out = feature_path(root, renderset, cid, v + ("_mirror" if m else ""))
                with atomic_write(out) as fh:
                    torch.save(f.half().clone(), fh)
                written += 1
        bar.update(len(todo[i:i + job.batch]))
    bar.close()
    if shape is not None and info.get("shape") != list(shape):
        save_json_atomic(fdir / FEATURE_INFO, dict(info, shape=list(shape)))
    return {"written": written, "skipped": skipped, "errors": errors, "shape": shape}


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


def build_feature_encoder(weights: str | None = None, random_init: bool = False, depth: int = 50,
                          layer: str = "trunk", out_channels: int = 512, seed: int = 0, device="cpu"):
    """The model's image encoder (``training.encoders.ResNetEncoder``) for precomputing features.

    ``layer='trunk'``: the frozen ResNet layer4 output (2048 channels for
    ResNet-50, 8x8 at 256 px: PAniC-3D's precomputed features); ``'out'``: the
    encoder's full output after its 1x1 projection (meaningful with an encoder
    state dict, e.g. taken from a trained model).  Returns (module, info).
    """
    import torch
    from .encoders import ResNetEncoder
    if layer not in ("trunk", "out"):
        raise UserError(f"--layer: expected trunk or out, got {layer!r}")
    if random_init and weights is not None:
        raise UserError("--random-init and --weights exclude each other")
    ident = weights_identity(weights, random_init)
    torch.manual_seed(seed)             # random init must be reproducible to be resumable
    enc = ResNetEncoder(depth=depth, out_channels=out_channels, weights=None if random_init else weights)
    if layer == "trunk":
        enc.proj = torch.nn.Identity()
    enc = enc.eval().requires_grad_(False).to(device)
    info = {"encoder": f"training.encoders.ResNetEncoder(depth={depth})", "layer": layer,
            "out_channels": out_channels if layer == "out" else None, "weights": ident,
            "random_init": bool(random_init), "seed": seed if random_init else None}
    return enc, info
