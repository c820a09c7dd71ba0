"""The dataset render job (library side of ``python -m _scripts.data.render``): which characters a
source folder holds, loading and framing one, rendering its view sets into the data tree
(``training.paths``) with the rasteriser of ``training.data.raster``, and the renderset's meta JSON.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from training import cameras
from training.errors import UserError
from training.images import on_white
from training.data.raster import Rasteriser, gl_renderer_name, rasteriser, to_uint8


# ---------------------------------------------------------------- dataset renders
# (library side of `python -m _scripts.data.render`; the data tree layout is training.paths)

VIEW_SET_OF = {"ortho": "ortho", "ortho_xyza": "ortho", "ortho_lines": "ortho",
               "rgb": "rgb", "xyza": "rgb", "rgb60": "rgb60", "xyza60": "rgb60"}
DTYPES = tuple(VIEW_SET_OF)
DEFAULT_DTYPES = ("ortho", "ortho_xyza", "rgb", "xyza")
CHARACTER_SUFFIXES = (".vrm", ".glb", ".gltf", ".obj")
OBJ_OPTIONS = ("up_axis", "forward_axis", "include", "exclude", "texture")
GLTF_OPTIONS = ("facing",)


@dataclasses.dataclass
class RenderSettings:
    renderset: str
    framing: str
    size: int = 512
    dtypes: tuple = DEFAULT_DTYPES
    seed: int = 0
    arm_angle: float = 60.0
    supersample: int = 2
    load_options: dict = dataclasses.field(default_factory=dict)   # loader keywords given by the user

    def __post_init__(self):
        cameras.get_framing(self.framing)
        bad = [d for d in self.dtypes if d not in VIEW_SET_OF]
        if bad:
            raise UserError(f"--dtypes: unknown {', '.join(bad)} (known: {', '.join(DTYPES)})")
        if self.size < 8:
            raise UserError(f"--size: {self.size} is too small (at least 8)")


def find_characters(src) -> list[tuple[str, "Path"]]:
    """(id, file) for a character file or every character file under a folder (id = file stem)."""
    from training.errors import fail
    src = Path(src)
    if src.is_file():
        if src.suffix.lower() not in CHARACTER_SUFFIXES:
            raise fail(src, f"not a character file (expected {', '.join(CHARACTER_SUFFIXES)})")
        files = [src]
    elif src.is_dir():
        files = sorted(p for p in src.rglob("*") if p.suffix.lower() in CHARACTER_SUFFIXES
                       and p.is_file() and not any(part.startswith(".") for part in p.relative_to(src).parts))
    else:
        raise fail(src, "no such file or folder")
    seen: dict[str, Path] = {}
    for f in files:
        if f.stem in seen:
            raise fail(f, f"character id {f.stem!r} is also used by {seen[f.stem]} (ids are file stems)")
        seen[f.stem] = f
    return list(seen.items())


def loader_options(path, options: dict) -> dict:
    """The subset of user loader options that applies to this file type (None = not given)."""
    keys = OBJ_OPTIONS if Path(path).suffix.lower() == ".obj" else GLTF_OPTIONS
    return {k: v for k, v in options.items() if k in keys and v is not None}


def prepare_character(path, framing: str, arm_angle: float, options: dict | None = None):
    """Load, lower the arms (when a humanoid skeleton exists), frame.
    Returns ``training.data.assets.framing.FramedCharacter`` (geometry in framed space)."""
    from training.data.assets.framing import frame
    from training.data.assets.load import load_character
    from training.data.assets.pose import lower_arms
    from training.errors import fail
    ch = load_character(path, **loader_options(path, options or {}))
    if ch.num_faces() == 0:
        raise fail(path, "empty mesh (no triangles to render)")
    if arm_angle:
        ch = lower_arms(ch, arm_angle)
    return frame(ch, framing)


def load_framed_character(meta, posed: bool = True):
    """Rebuild the rendered ground truth from a per-character meta json (dict or path): the same
    file, loader options, arm angle and framing.  Returns a FramedCharacter whose geometry matches
    the renders' xyza.  ``posed=False``: the bind pose (arms not lowered), moved by the recorded
    origin, so it sits in the same framed space."""
    import dataclasses as dc
    import json
    from training.data.assets.framing import FramedCharacter
    from training.data.assets.load import load_character
    from training.errors import fail
    if not isinstance(meta, dict):
        p = Path(meta)
        try:
            meta = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            raise fail(p, f"unreadable render meta ({e})") from None
    opts, origin = meta["options"], np.asarray(meta["origin"], np.float64)
    if posed:
        framed = prepare_character(meta["source_file"], meta["framing"], opts["arm_angle"], opts["load"])
        if np.abs(framed.origin - origin).max() > 1e-4:
            raise fail(meta["source_file"], "the file changed since it was rendered (framing origin differs)")
        return framed
    ch = load_character(meta["source_file"], **loader_options(meta["source_file"], opts["load"]))
    out = ch.with_positions([p.positions - origin for p in ch.primitives])
    if out.skeleton is not None:
        rest = out.skeleton.rest_global.copy()
        rest[:, :3, 3] -= origin.astype(rest.dtype)
        out.skeleton = dc.replace(out.skeleton, rest_global=rest)
    return FramedCharacter(out, meta["framing"], origin, float(meta["box"]), bool(meta.get("head_estimated")),
                           meta.get("head_source", "recorded"))


def _encode(dtype: str, out: dict) -> np.ndarray:
    if dtype == "ortho":
        return to_uint8(out["rgba"])
    if dtype == "ortho_lines":
        return to_uint8(out["lines_rgba"])
    if dtype in ("rgb", "rgb60"):
        return to_uint8(on_white(out["rgba"]))
    return to_uint8(out["xyza"])   # ortho_xyza, xyza, xyza60


def done_dtypes(root, renderset: str, char_id: str) -> set:
    """Dtypes already complete for a character (its meta json is written last)."""
    import json
    from training.paths import char_meta_path
    p = char_meta_path(root, renderset, char_id)
    if not p.exists():
        return set()
    try:
        return set(json.loads(p.read_text()).get("dtypes", []))
    except (OSError, ValueError):
        return set()


def render_character(root, settings: RenderSettings, path, char_id: str, source: str | None = None,
                     rast: Rasteriser | None = None) -> dict | None:
    """Render the missing dtypes of one character into the data tree; write its meta json last.
    Returns the meta, or None when it was already complete.  On any error the images written
    by this call are removed again, so an incomplete character leaves nothing behind."""
    import json
    import os
    from training.errors import save_json_atomic, save_png_atomic
    from training.paths import char_meta_path, render_path
    done = done_dtypes(root, settings.renderset, char_id)
    todo = [d for d in settings.dtypes if d not in done]
    if not todo:
        return None
    rast = rast or rasteriser(settings.size, settings.supersample)
    framed = prepare_character(path, settings.framing, settings.arm_angle, settings.load_options)
    ch = framed.character
    fr = cameras.get_framing(settings.framing)
    sets = {}
    for d in todo:
        sets.setdefault(VIEW_SET_OF[d], []).append(d)
    written = []
    try:
        views_json = {}
        with rast.upload(ch) as scene:
            for vs, dtypes in sets.items():
                views = cameras.view_set(vs, fr, char_id=char_id, seed=settings.seed)
                views_json[vs] = {v.name: v.to_json() for v in views}
                for v in views:
                    out = scene.render(v, lines="ortho_lines" in dtypes)
                    for d in dtypes:
                        p = render_path(root, settings.renderset, d, char_id, v.name)
                        save_png_atomic(p, _encode(d, out))
                        written.append(p)
        meta_p = char_meta_path(root, settings.renderset, char_id)
        old = json.loads(meta_p.read_text()) if done else {}
        views_json = {**old.get("views", {}), **views_json}
        lo, hi = ch.bounds()
        meta = {
            "id": char_id,
            "source": source,
            "source_file": str(Path(path).resolve()),
            "framing": settings.framing,
            "box": fr.box,
            "origin": [float(x) for x in framed.origin],
            "head_estimated": bool(framed.head_estimated),
            "head_source": framed.head_source,
            "inside_fraction": framed.inside_fraction(),
            "framed_bounds": [[float(x) for x in lo], [float(x) for x in hi]],
            "size": settings.size,
            "supersample": settings.supersample,
            "seed": settings.seed,
            "dtypes": sorted(done | set(todo)),
            "options": {"arm_angle": settings.arm_angle,
                        "load": loader_options(path, settings.load_options)},
            "loader": _jsonable(ch.meta),
            "renderer": gl_renderer_name(),
            "views": views_json,
        }
        save_json_atomic(meta_p, meta)
        return meta
    except BaseException:
        for p in written:
            try:
                os.unlink(p)
            except OSError:
                pass
        raise


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return x.item()
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)


def renderset_meta(settings: RenderSettings) -> dict:
    """Renderset-wide settings and the fixed views' cameras (random views are per character)."""
    fr = cameras.get_framing(settings.framing)
    fixed = {vs: {v.name: v.to_json() for v in cameras.view_set(vs, fr)}
             for vs in sorted({VIEW_SET_OF[d] for d in settings.dtypes} - {"rgb"})}
    return {"renderset": settings.renderset, "framing": settings.framing, "box": fr.box,
            "dist": fr.dist, "near": fr.near, "far": fr.far, "fov": fr.fov,
            "size": settings.size, "supersample": settings.supersample, "dtypes": list(settings.dtypes),
            "seed": settings.seed, "arm_angle": settings.arm_angle,
            "views": fixed,
            "random_views": "rgb/xyza: 8 per character, seeded by (seed, id, index); cameras in meta/<shard>/<id>.json"}
