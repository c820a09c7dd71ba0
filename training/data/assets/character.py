"""The in-memory character every loader produces and every renderer consumes.

All geometry is in the canonical frame (docs/DESIGN.md): metres, Y up, the
character faces +Z.  UVs follow glTF (origin top-left of the texture image).
"""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Material:
    name: str
    base_color_factor: np.ndarray = dataclasses.field(default_factory=lambda: np.ones(4, np.float32))
    texture: np.ndarray | None = None        # (H, W, 4) uint8 RGBA base-colour texture
    alpha_mode: str = "OPAQUE"                # OPAQUE | MASK | BLEND
    alpha_cutoff: float = 0.5
    double_sided: bool = True


@dataclasses.dataclass
class Primitive:
    name: str
    positions: np.ndarray                     # (N, 3) float32, bind pose
    faces: np.ndarray                         # (F, 3) int32
    material: int = 0                         # index into Character.materials
    uvs: np.ndarray | None = None             # (N, 2) float32
    colors: np.ndarray | None = None          # (N, 4) float32 in [0, 1]
    joints: np.ndarray | None = None          # (N, 4) int32 indices into Skeleton.names
    weights: np.ndarray | None = None         # (N, 4) float32, rows sum to 1


@dataclasses.dataclass
class Skeleton:
    names: list[str]
    parents: np.ndarray                       # (J,) int32, -1 for roots
    rest_global: np.ndarray                   # (J, 4, 4) joint transforms in the bind pose (canonical frame)
    humanoid: dict[str, int]                  # VRM humanoid bone name ('head', 'leftUpperArm', ...) -> joint

    def bone_position(self, bone: str) -> np.ndarray | None:
        j = self.humanoid.get(bone)
        return None if j is None else self.rest_global[j, :3, 3].copy()


@dataclasses.dataclass
class Character:
    name: str
    source: str
    primitives: list[Primitive]
    materials: list[Material]
    skeleton: Skeleton | None = None
    meta: dict = dataclasses.field(default_factory=dict)   # loader notes: format, vrm version, warnings

    def all_positions(self) -> np.ndarray:
        return np.concatenate([p.positions for p in self.primitives], 0)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        pts = self.all_positions()
        return pts.min(0), pts.max(0)

    def num_faces(self) -> int:
        return sum(len(p.faces) for p in self.primitives)

    def with_positions(self, positions: list[np.ndarray]) -> "Character":
        """A copy with new vertex positions per primitive; materials/textures are shared, meta is copied."""
        import copy
        prims = [dataclasses.replace(p, positions=np.asarray(q, np.float32)) for p, q in zip(self.primitives, positions)]
        return dataclasses.replace(self, primitives=prims, meta=copy.deepcopy(self.meta))
