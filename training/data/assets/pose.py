"""Posing: lower the arms from the T-pose by linear-blend skinning.

VRoid characters come in a T-pose; the published renders lower the upper
arms by about 60 deg first (REFERENCE section 3) so the arms do not stretch
the full-body box and hide less of the torso.
"""
from __future__ import annotations


import numpy as np

from training.data.assets.character import Character, Skeleton


def _descendants(parents: np.ndarray, root: int) -> np.ndarray:
    """Boolean mask of ``root`` and every joint below it."""
    mask = np.zeros(len(parents), bool)
    mask[root] = True
    changed = True
    while changed:          # joints are not guaranteed to be topologically ordered
        new = mask | ((parents >= 0) & mask[np.maximum(parents, 0)])
        changed = bool((new != mask).any())
        mask = new
    return mask


def _rotation_about(pivot: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    """4x4 rotation by ``angle`` (radians) about the line through ``pivot`` along unit ``axis``."""
    x, y, z = axis
    c, s = np.cos(angle), np.sin(angle)
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    r = np.eye(3) + s * k + (1 - c) * (k @ k)
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = pivot - r @ pivot
    return m


def skin(character: Character, posed_global: np.ndarray) -> Character:
    """New Character with vertices moved by linear-blend skinning to ``posed_global`` joint transforms."""
    sk = character.skeleton
    rest = sk.rest_global.astype(np.float64)
    mats = posed_global @ np.linalg.inv(rest)                   # (J, 4, 4) skin matrices
    positions = []
    for p in character.primitives:
        if p.joints is None or p.weights is None:
            positions.append(p.positions)
            continue
        ph = np.concatenate([p.positions.astype(np.float64), np.ones((len(p.positions), 1))], 1)
        new = np.zeros((len(ph), 3))
        for k in range(p.joints.shape[1]):
            w = p.weights[:, k:k + 1].astype(np.float64)
            if not w.any():
                continue
            new += w * np.einsum("nij,nj->ni", mats[p.joints[:, k]], ph)[:, :3]
        positions.append(new)
    out = character.with_positions(positions)
    out.skeleton = Skeleton(names=list(sk.names), parents=sk.parents.copy(),
                            rest_global=posed_global.astype(np.float32), humanoid=dict(sk.humanoid))
    return out


def lower_arms(character: Character, angle_deg: float = 60.0) -> Character:
    """Rotate both upper arms down by ``angle_deg`` about the forward (+Z) axis; children follow.

    Returns a new Character (the input is not changed) whose skeleton holds the
    posed joint transforms.  Characters without a skeleton or arm bones come
    back unchanged, with a note in ``meta['notes']``.
    """
    sk = character.skeleton
    arms = [b for b in ("leftUpperArm", "rightUpperArm") if sk is not None and b in sk.humanoid]
    if not arms:
        out = character.with_positions([p.positions for p in character.primitives])
        out.meta.setdefault("notes", []).append("no humanoid upper-arm bones: arms not lowered")
        return out
    rest = sk.rest_global.astype(np.float64)
    posed = rest.copy()
    forward = np.array([0.0, 0.0, 1.0])                         # canonical frame: the character faces +Z
    for bone in arms:
        j = sk.humanoid[bone]
        pivot = rest[j, :3, 3]
        # which way is "down" depends on the side the arm sticks out to: use the arm's own direction
        below = _descendants(sk.parents, j)
        below[j] = False
        tips = rest[below, :3, 3] if below.any() else None
        side = np.sign((tips.mean(0) - pivot)[0]) if tips is not None else (1.0 if bone.startswith("left") else -1.0)
        if side == 0:
            side = 1.0 if bone.startswith("left") else -1.0
        m = _rotation_about(pivot, forward, -side * np.radians(angle_deg))
        sub = _descendants(sk.parents, j)
        posed[sub] = m @ rest[sub]
    out = skin(character, posed)
    out.meta["pose"] = {"lower_arms_deg": float(angle_deg), "bones": arms}
    if len(arms) == 1:
        out.meta.setdefault("notes", []).append(f"only {arms[0]} found: one arm lowered")
    return out
