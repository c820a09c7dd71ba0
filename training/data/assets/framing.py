"""Framing: where the region of interest sits on a character (docs/DESIGN.md).

``head``: origin = head bone + (0, 0.1, 0), box 0.7.  ``body``: origin = centre
of the bounding box of the (posed) mesh, box 2.1.  Framed space = canonical
frame minus the origin.  Without a head bone the head is taken from the
file's ``head_position`` (synthetic GLBs) or estimated from the mesh, and the
result says so.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from training.data.assets.character import Character
from training.cameras import get_framing
from training.errors import fail

HEAD_OFFSET = np.array([0.0, 0.1, 0.0])
# estimated head bone: this fraction of the height below the top of the mesh
# (anime proportions: head ~1/5 of the height, the head bone sits near the jaw)
HEAD_DEPTH_FRACTION = 0.2


@dataclasses.dataclass
class FramedCharacter:
    character: Character          # geometry and skeleton in framed space
    framing: str                  # 'head' | 'body'
    origin: np.ndarray            # (3,) framing origin in the canonical frame
    box: float                    # side of the ROI cube
    head_estimated: bool          # head framing without a head bone: origin from the mesh
    head_source: str              # 'bone' | 'head_position' | 'estimated' | 'none' (body framing)

    def to_dict(self) -> dict:
        return {"framing": self.framing, "origin": [float(v) for v in self.origin], "box": float(self.box),
                "head_estimated": bool(self.head_estimated), "head_source": self.head_source}

    def __iter__(self):
        """``character, info = frame(...)`` unpacks to the framed character and ``to_dict()``."""
        return iter((self.character, self.to_dict()))

    def inside_fraction(self) -> float:
        """Fraction of vertices inside the ROI cube (1.0 = nothing cut off)."""
        pts = self.character.all_positions()
        return float((np.abs(pts) <= self.box / 2).all(1).mean())


def estimate_head(character: Character) -> np.ndarray:
    """Head-bone position guessed from the mesh: below the top, centred on the slice above it."""
    pts = character.all_positions().astype(np.float64)
    lo, hi = pts.min(0), pts.max(0)
    h = hi[1] - lo[1]
    top = pts[pts[:, 1] >= hi[1] - HEAD_DEPTH_FRACTION * h]
    cx = (top[:, 0].min() + top[:, 0].max()) / 2
    cz = (top[:, 2].min() + top[:, 2].max()) / 2
    return np.array([cx, hi[1] - HEAD_DEPTH_FRACTION * h, cz])


def head_position(character: Character) -> tuple[np.ndarray, str]:
    """(head bone position, source) in the canonical frame."""
    sk = character.skeleton
    if sk is not None and "head" in sk.humanoid:
        return sk.bone_position("head").astype(np.float64), "bone"
    if "head_position" in character.meta:
        return np.asarray(character.meta["head_position"], np.float64), "head_position"
    return estimate_head(character), "estimated"


def frame(character: Character, framing: str) -> FramedCharacter:
    """Framing origin and box for ``character`` (pose it first) and the character moved into framed space."""
    fr = get_framing(framing)
    if not character.primitives or sum(len(p.positions) for p in character.primitives) == 0:
        raise fail(character.source, "empty mesh: nothing to frame")
    if framing == "head":
        head, source = head_position(character)
        origin = head + HEAD_OFFSET
    else:
        lo, hi = character.bounds()
        origin, source = (lo.astype(np.float64) + hi) / 2, "none"
    out = character.with_positions([p.positions - origin for p in character.primitives])
    if out.skeleton is not None:
        rest = out.skeleton.rest_global.copy()
        rest[:, :3, 3] -= origin.astype(np.float32)
        out.skeleton = dataclasses.replace(out.skeleton, rest_global=rest, humanoid=dict(out.skeleton.humanoid))
    if "head_position" in out.meta:
        out.meta["head_position"] = (np.asarray(out.meta["head_position"]) - origin).tolist()
    framed = FramedCharacter(character=out, framing=framing, origin=origin, box=fr.box,
                             head_estimated=source == "estimated", head_source=source)
    out.meta["framing"] = framed.to_dict()
    if framed.head_estimated:
        out.meta.setdefault("notes", []).append("no head bone: head position estimated from the mesh")
    return framed
