"""Humanoid skeleton of a synthetic character (VRM humanoid bone names) and skinning weights.

The character is built in T-pose (arms along +-X); the character's left is +X.
Joint transforms carry no rotation, so a joint's bind matrix is a translation.
"""
from __future__ import annotations

import numpy as np

BONES = [
    "hips", "spine", "chest", "neck", "head",
    "leftShoulder", "leftUpperArm", "leftLowerArm", "leftHand",
    "rightShoulder", "rightUpperArm", "rightLowerArm", "rightHand",
    "leftUpperLeg", "leftLowerLeg", "leftFoot",
    "rightUpperLeg", "rightLowerLeg", "rightFoot",
]
PARENT = {
    "hips": None, "spine": "hips", "chest": "spine", "neck": "chest", "head": "neck",
    "leftShoulder": "chest", "leftUpperArm": "leftShoulder", "leftLowerArm": "leftUpperArm", "leftHand": "leftLowerArm",
    "rightShoulder": "chest", "rightUpperArm": "rightShoulder", "rightLowerArm": "rightUpperArm", "rightHand": "rightLowerArm",
    "leftUpperLeg": "hips", "leftLowerLeg": "leftUpperLeg", "leftFoot": "leftLowerLeg",
    "rightUpperLeg": "hips", "rightLowerLeg": "rightUpperLeg", "rightFoot": "rightLowerLeg",
}
J = {name: i for i, name in enumerate(BONES)}


def rigid(n: int, bone: str) -> tuple[np.ndarray, np.ndarray]:
    joints = np.zeros((n, 4), np.int64)
    joints[:, 0] = J[bone]
    weights = np.zeros((n, 4), np.float64)
    weights[:, 0] = 1.0
    return joints, weights


def chain(s: np.ndarray, anchors: list[tuple[float, str]]) -> tuple[np.ndarray, np.ndarray]:
    """Piecewise-linear blend between bones along a scalar ``s`` per vertex.

    ``anchors``: increasing ``(s_value, bone)``; between two anchors naming
    different bones the weight ramps linearly (a soft joint), elsewhere it is rigid.
    """
    xs = np.array([a for a, _ in anchors], np.float64)
    names = [b for _, b in anchors]
    uniq = list(dict.fromkeys(names))
    w_all = np.stack([np.interp(s, xs, [1.0 if b == u else 0.0 for b in names]) for u in uniq], -1)
    order = np.argsort(-w_all, axis=1, kind="stable")[:, :4]
    n = len(s)
    joints = np.zeros((n, 4), np.int64)
    weights = np.zeros((n, 4), np.float64)
    k = min(4, len(uniq))
    ids = np.array([J[u] for u in uniq])
    joints[:, :k] = ids[order[:, :k]]
    weights[:, :k] = np.take_along_axis(w_all, order[:, :k], 1)
    weights /= weights.sum(1, keepdims=True)
    joints[weights == 0] = 0
    return joints, weights


def joint_positions(dims: dict) -> np.ndarray:
    """World positions (J, 3) of the joints from the body dimensions computed in ``build``."""
    d = dims
    pos = {
        "hips": (0, d["hip_y"], 0), "spine": (0, d["waist_y"], 0), "chest": (0, d["chest_y"], 0),
        "neck": (0, d["shoulder_y"], 0), "head": (0, d["head_bone_y"], d["head_bone_z"]),
    }
    for side, sx in (("left", 1.0), ("right", -1.0)):
        pos[side + "Shoulder"] = (sx * d["neck_r"], d["arm_y"], 0)
        pos[side + "UpperArm"] = (sx * d["shoulder_x"], d["arm_y"], 0)
        pos[side + "LowerArm"] = (sx * d["elbow_x"], d["arm_y"], 0)
        pos[side + "Hand"] = (sx * d["wrist_x"], d["arm_y"], 0)
        pos[side + "UpperLeg"] = (sx * d["hip_x"], d["leg_top_y"], 0)
        pos[side + "LowerLeg"] = (sx * d["hip_x"], d["knee_y"], 0)
        pos[side + "Foot"] = (sx * d["hip_x"], d["ankle_y"], 0)
    return np.array([pos[b] for b in BONES], np.float64)
