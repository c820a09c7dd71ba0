"""Ground-truth mesh for the geometry metrics: the rendered character, in the
rendered pose and framing, with its hidden inner surfaces removed.

The per-character render meta json records the source file, loader options,
arm angle and framing; ``training.data.render.load_framed_character`` rebuilds the
exact character that was rendered.  Hidden faces are removed with
``training.data.raster.visible_faces`` (faces seen, depth- and alpha-tested, from
the 60-view grid, the ortho views and top/bottom).  When no OpenGL context can
be made, the documented fallback keeps the faces that carry a surface point of
the ground-truth xyza renders (within one 8-bit xyza quantum), which also
drops inner surfaces but is coarser.

Results are cached (PLY) under ``<data root>/temp/eval/_gt/<renderset>/`` keyed by the
meta json's content, so measuring several checkpoints pays once.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import trimesh

from training import paths
from training.data import catalog
from training.errors import UserError, atomic_path, fail
from training.eval import geometry as geo

XYZA_DTYPES = ("ortho_xyza", "xyza60", "xyza")


def cache_path(renderset: str, char_id: str, meta: dict, root=None) -> Path:
    key = hashlib.sha1(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:12]
    return paths.eval_root(root) / "_gt" / renderset / paths.shard_of(char_id) / f"{char_id}-{key}.ply"


def source_file(root, meta: dict) -> Path:
    """The rendered file: its recorded absolute path, else the same name under this data root's
    ``raw/<source>/<shard>/<id>/`` (a data tree moved to another machine)."""
    src = meta.get("source_file")
    if src and Path(src).is_file():
        return Path(src)
    if src and meta.get("source") and meta.get("id"):
        alt = paths.raw_dir(root, meta["source"]) / paths.shard_of(meta["id"]) / meta["id"] / Path(src).name
        if alt.is_file():
            return alt
    raise fail(src or "meta json", "ground-truth source file not found (needed for geometry metrics)")


def _framed(meta: dict, root=None):
    from training.data import render
    meta = dict(meta, source_file=str(source_file(root, meta)))
    res = render.load_framed_character(meta, posed=True)
    return res.character if hasattr(res, "character") else res[0]


def _visible_by_raster(character, framing: str) -> np.ndarray:
    from training.data import raster
    masks = raster.visible_faces(character, framing=framing)
    return np.concatenate(masks) if masks else np.zeros(0, bool)


def _points_from_xyza(root, renderset: str, char_id: str, box: float) -> np.ndarray:
    from training.errors import load_image
    pts = []
    for dtype in XYZA_DTYPES:
        folder = paths.renders_dir(root, renderset) / dtype / paths.shard_of(char_id) / char_id
        for p in sorted(folder.glob("*.png")) if folder.is_dir() else []:
            a = np.asarray(load_image(p, "RGBA"), np.float32) / 255.0
            m = a[..., 3] > 0.99          # fully covered pixels only (edges mix foreground and background)
            pts.append(a[m][:, :3] * box - box / 2)
    return np.concatenate(pts) if pts else np.zeros((0, 3))


def character_mesh(character) -> trimesh.Trimesh:
    vs, fs, off = [], [], 0
    for p in character.primitives:
        vs.append(np.asarray(p.positions, np.float64))
        fs.append(np.asarray(p.faces, np.int64) + off)
        off += len(p.positions)
    if not vs:
        return geo.as_mesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64))
    return geo.as_mesh(np.concatenate(vs), np.concatenate(fs))


def ground_truth_mesh(root, renderset: str, char_id: str, meta: dict, rs_meta: dict | None = None,
                      use_cache: bool = True) -> trimesh.Trimesh:
    """Visible surface of the rendered character in framed space (metres)."""
    cp = cache_path(renderset, char_id, meta, root)
    if use_cache and cp.exists():
        return trimesh.load(cp, process=False, force="mesh")
    framing = catalog.framing_of(meta, rs_meta) or "body"
    box = float(meta.get("box") or 2.1)
    ch = _framed(meta, root)
    mesh = character_mesh(ch)
    try:
        visible = _visible_by_raster(ch, framing)
        method = "raster"
    except UserError:
        raise
    except Exception:   # no GL context on this machine: documented fallback from the xyza renders
        pts = _points_from_xyza(root, renderset, char_id, box)
        if len(pts) == 0:
            raise fail(paths.renders_dir(root, renderset), f"{char_id}: no OpenGL for visible_faces and no xyza "
                       "renders for the fallback; cannot remove hidden surfaces") from None
        sel = np.random.default_rng(0).permutation(len(pts))[:200_000]
        visible = geo.faces_near_points(mesh, pts[sel], tol=box / 255.0)
        method = "xyza"
    mesh = geo.remove_hidden(mesh, visible)
    mesh.metadata["visibility"] = method
    if use_cache:
        with atomic_path(cp) as tmp:
            mesh.export(tmp)
    return mesh
