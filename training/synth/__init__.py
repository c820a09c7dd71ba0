"""Procedural anime-style characters: the embedded default dataset (no downloads needed).

``generate(seed, index)`` builds character ``synth_<seed>_<index:06d>`` and
returns its GLB bytes; the same (seed, index) always gives the same bytes.
``write_dataset`` writes ``raw/<source>/<shard>/<id>/<id>.glb`` for a range of indices.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from .. import paths
from ..errors import atomic_write
from .build import Builder
from .glb import png_bytes, write_glb
from .params import sample_params
from .skeleton import BONES

__all__ = ["char_id", "generate", "build_character", "write_dataset", "Generated"]


def char_id(seed: int, index: int) -> str:
    return f"synth_{seed}_{index:06d}"


@dataclasses.dataclass
class Generated:
    id: str
    glb: bytes
    params: dict
    head_position: list[float]
    num_triangles: int


def _rng(seed: int, index: int) -> np.random.Generator:
    # each character has its own stream: character i is the same whatever --n is
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(index), 0x5E17])))


def build_character(seed: int, index: int):
    """Parameters, parts, atlas and joint positions (for tests and previews)."""
    rng = _rng(seed, index)
    params = sample_params(rng)
    b = Builder(params, rng)
    parts, atlas = b.build()
    return params, parts, atlas, b.joints(), b.d


def generate(seed: int, index: int) -> Generated:
    params, parts, atlas, joints, dims = build_character(seed, index)
    head = joints[BONES.index("head")]
    cid = char_id(seed, index)
    extras = {"anime3d": {
        "id": cid,
        "humanoid": {name: i for i, name in enumerate(BONES)},
        "head_position": [round(float(x), 6) for x in head],
        "seed": int(seed), "index": int(index),
        "params": params,
        "dims": {k: round(float(v), 5) for k, v in dims.items()},
        "frame": "metres, Y up, faces +Z, T-pose",
    }}
    glb = write_glb(parts, png_bytes(atlas.image), joints, extras)
    return Generated(cid, glb, params, extras["anime3d"]["head_position"], sum(len(p.faces) for p in parts))


def glb_path(root, source: str, cid: str) -> Path:
    return paths.raw_dir(root, source) / paths.shard_of(cid) / cid / f"{cid}.glb"


def write_dataset(root, n: int, seed: int, source: str = "synth", start: int = 0, progress: bool = True) -> dict:
    """Write characters ``start .. start+n-1``; existing files are kept (resumable). Returns counts."""
    from tqdm import tqdm
    done = skipped = 0
    for i in tqdm(range(start, start + n), desc=f"synth {source}", unit="char", disable=not progress):
        cid = char_id(seed, i)
        out = glb_path(root, source, cid)
        if out.exists():
            skipped += 1
            continue
        g = generate(seed, i)
        with atomic_write(out) as f:
            f.write(g.glb)
        done += 1
    return {"written": done, "skipped": skipped, "root": str(paths.raw_dir(root, source))}
