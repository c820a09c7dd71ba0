"""One entry point for every character file: dispatch by extension."""
from __future__ import annotations

from pathlib import Path

from training.data.assets.character import Character
from training.errors import fail

GLTF_SUFFIXES = (".vrm", ".glb", ".gltf")
OBJ_SUFFIXES = (".obj",)
SUFFIXES = GLTF_SUFFIXES + OBJ_SUFFIXES


def load_character(path, **opts) -> Character:
    """Load a .vrm/.glb/.gltf (options: facing) or .obj (options: see obj_loader.load_obj)."""
    path = Path(path)
    if not path.is_file():
        raise fail(path, "file not found")
    suffix = path.suffix.lower()
    if suffix in GLTF_SUFFIXES:
        from training.data.assets.gltf_loader import load_gltf
        return load_gltf(path, **opts)
    if suffix in OBJ_SUFFIXES:
        from training.data.assets.obj_loader import load_obj
        return load_obj(path, **opts)
    raise fail(path, f"unsupported character file type {suffix!r} (expected one of {', '.join(SUFFIXES)})")
