"""Procedural anime-style characters: the embedded default dataset (no downloads needed).

``generate(seed, index)`` builds character ``synth_<seed>_<index:06d>`` and
returns its GLB bytes; the same (seed, index) always gives the same bytes.
``generate(seed, index, dark=True)`` is the same character with dark parts
(``synthdark_<seed>_<index:06d>``: black bow, often a black top, hair, legwear).
``write_dataset`` writes ``raw/<source>/<shard>/<id>/<id>.glb`` for a range of indices.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from training import paths
from training.errors import atomic_write
from training.data.synth.build import Builder
from training.data.synth.glb import png_bytes, write_glb
from training.data.synth.params import apply_dark_parts, sample_params
from training.data.synth.skeleton import BONES

__all__ = ["char_id", "generate", "build_character", "write_dataset", "Generated"]


def char_id(seed: int, index: int, dark: bool = False) -> str:
    return f"synth{'dark' if dark else ''}_{seed}_{index:06d}"


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


def _dark_rng(seed: int, index: int) -> np.random.Generator:
    # a stream of its own: the dark variant of a character is that character with some colours changed
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(index), 0xDA2C])))


def has_dark_parts(seed: int, index: int, fraction: float) -> bool:
    """Whether character ``index`` is drawn with dark parts when a ``fraction`` of the dataset has them."""
    return fraction >= 1.0 or (fraction > 0.0 and _dark_rng(seed, index).random() < fraction)


def build_character(seed: int, index: int, dark: bool = False):
    """Parameters, parts, atlas and joint positions (for tests and previews)."""
    rng = _rng(seed, index)
    params = sample_params(rng)
    if dark:
        drng = _dark_rng(seed, index)
        drng.random()       # the draw of has_dark_parts
        apply_dark_parts(params, drng)
    b = Builder(params, rng)
    parts, atlas = b.build()
    return params, parts, atlas, b.joints(), b.d


def generate(seed: int, index: int, dark: bool = False) -> Generated:
    params, parts, atlas, joints, dims = build_character(seed, index, dark)
    head = joints[BONES.index("head")]
    cid = char_id(seed, index, dark)
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


def write_dataset(root, n: int, seed: int, source: str = "synth", start: int = 0, progress: bool = True,
                  dark_parts: float = 0.0, report=None) -> dict:
    """Write characters ``start .. start+n-1``; existing files are kept (resumable). Returns counts.

    ``dark_parts``: fraction of the characters drawn with dark parts (chosen per index, deterministic).
    A character that cannot be built or written is a failure of ``report`` (a ``training.jobs.JobReport``;
    raised when there is none) and the others are still written."""
    from tqdm import tqdm
    from training.errors import UserError, fail
    out_dir = paths.raw_dir(root, source)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise fail(out_dir, f"cannot write here ({e.strerror or e})") from None
    done = skipped = 0
    for i in tqdm(range(start, start + n), desc=f"synth {source}", unit="char", disable=not progress):
        dark = has_dark_parts(seed, i, dark_parts)
        cid = char_id(seed, i, dark)
        out = glb_path(root, source, cid)
        if out.exists():
            skipped += 1
            continue
        try:
            g = generate(seed, i, dark)
            with atomic_write(out) as f:
                f.write(g.glb)
        except Exception as e:  # noqa: BLE001 - one character must not stop the job
            if report is None:
                raise
            report.failed(cid, str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}")
            continue
        done += 1
    if report is not None:
        report.done(done)
        report.skipped(skipped)
    return {"written": done, "skipped": skipped, "root": str(out_dir)}
