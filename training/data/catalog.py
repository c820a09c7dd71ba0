"""A rendered set's metadata: renderset and per-character meta JSON, view cameras, the ids that are
complete, in a subset or failed, and foreground masks from alpha.

Everything reads the tree of docs/DESIGN.md (``renders/<renderset>/...``).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from training import cameras, paths
from training.errors import fail, load_image


MASK_THRESHOLD = 200            # NOVA-3D: foreground = alpha > 200
ORTHO_NAMES = tuple(cameras.ORTHO_VIEWS)          # front, left, right, back, top
SPLITS = ("train", "val", "test")
FEATURE_DTYPE = "ortho_katepca_chonk"    # precomputed encoder features (training.data.features)
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
