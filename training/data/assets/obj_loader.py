"""OBJ + MTL -> Character (canonical frame), with clean-up of messy exports.

Real OBJ exports carry axis conventions the file does not state (Blender:
Z up, character faces -Y), textures the MTL forgets to name, and objects that
are not the character (rig widgets, ground planes, helper cubes).  This loader
parses objects/groups itself so those parts can be selected by name
(``include``/``exclude`` globs) or dropped automatically, and records every
decision in ``Character.meta``.  OBJ has no skeleton.
"""
from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import numpy as np

from training.data.assets.character import Character, Material, Primitive
from training.errors import UserError, fail, load_image

_AXES = {"+x": (1, 0, 0), "-x": (-1, 0, 0), "+y": (0, 1, 0), "-y": (0, -1, 0), "+z": (0, 0, 1), "-z": (0, 0, -1)}
# name tokens of parts that are never the character
_JUNK_TOKENS = {"wgt", "widget", "widgets", "ground", "floor", "backdrop", "background", "grid", "camera", "lamp"}


class _Part:
    def __init__(self, obj: str | None, group: str | None, material: str | None):
        self.obj, self.group, self.material = obj, group, material
        self.v: list[int] = []      # corner position indices (0-based), 3 per triangle
        self.vt: list[int] = []     # corner uv indices or -1

    @property
    def name(self) -> str:
        return "/".join(n for n in (self.obj, self.group) if n) or "default"

    def names(self) -> list[str]:
        return [n for n in (self.obj, self.group, self.name) if n]


def _parse_obj(path: Path):
    verts, colors, uvs = [], [], []
    parts: dict[tuple, _Part] = {}
    mtllibs: list[str] = []
    obj = group = mat = None
    part = None
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise fail(path, f"cannot read ({e.strerror or e})") from None
    if "\x00" in text[:4096]:
        raise fail(path, "not an OBJ text file (binary data)")
    for lineno, line in enumerate(text.splitlines(), 1):
        t = line.split()
        if not t or t[0].startswith("#"):
            continue
        k = t[0]
        try:
            if k == "v":
                if len(t) < 4:      # e.g. a file cut off in the middle of a vertex line
                    raise ValueError(f"expected 3 coordinates, got {len(t) - 1}")
                verts.append([float(x) for x in t[1:4]])
                if len(t) >= 7:
                    colors.append([float(x) for x in t[4:7]])
            elif k == "vt":
                uvs.append([float(t[1]), float(t[2]) if len(t) > 2 else 0.0])
            elif k == "f":
                key = (obj, group, mat)
                part = parts.get(key)
                if part is None:
                    part = parts[key] = _Part(obj, group, mat)
                corners = [c.split("/") for c in t[1:]]
                vi = [int(c[0]) for c in corners]
                ti = [int(c[1]) if len(c) > 1 and c[1] else 0 for c in corners]
                nv, nt = len(verts), len(uvs)
                vi = [i - 1 if i > 0 else nv + i for i in vi]       # negative = relative
                ti = [i - 1 if i > 0 else (nt + i if i < 0 else -1) for i in ti]
                for a in range(1, len(vi) - 1):                      # polygon -> fan
                    part.v += [vi[0], vi[a], vi[a + 1]]
                    part.vt += [ti[0], ti[a], ti[a + 1]]
            elif k == "o":
                obj, group = " ".join(t[1:]) or None, None
            elif k == "g":
                group = " ".join(t[1:]) or None
            elif k == "usemtl":
                mat = " ".join(t[1:]) or None
            elif k == "mtllib":
                mtllibs.append(line.strip()[len("mtllib"):].strip())
        except (ValueError, IndexError) as e:
            why = f" ({e})" if str(e).startswith("expected") else ""
            last = lineno == len(text.splitlines()) and not text.endswith("\n")
            raise fail(path, f"line {lineno}: malformed {k!r} statement{why}"
                             + (" (the file ends there: truncated?)" if last else "")) from None
    verts = np.array(verts, np.float64).reshape(-1, 3)
    uvs = np.array(uvs, np.float32).reshape(-1, 2)
    colors = np.array(colors, np.float32).reshape(-1, 3) if len(colors) == len(verts) and len(colors) else None
    for p in parts.values():
        v = np.asarray(p.v, np.int64)
        if len(v) and (v.min() < 0 or v.max() >= len(verts)):
            raise fail(path, f"part {p.name}: face refers to a missing vertex")
        t = np.asarray(p.vt, np.int64)
        if len(t) and t.max() >= len(uvs):
            raise fail(path, f"part {p.name}: face refers to a missing texture coordinate")
    return verts, uvs, colors, list(parts.values()), mtllibs


def _parse_mtl(path: Path, notes: list[str], warnings: list[str]) -> dict[str, dict]:
    mats: dict[str, dict] = {}
    cur = None
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        msg = f"material library {path.name} not found: grey base colour"
        notes.append(msg)
        warnings.append(msg)
        return mats
    for line in lines:
        t = line.split()
        if not t or t[0].startswith("#"):
            continue
        try:
            if t[0] == "newmtl":
                cur = mats.setdefault(" ".join(t[1:]), {})
            elif cur is None:
                continue
            elif t[0] == "Kd":
                cur["Kd"] = [float(x) for x in t[1:4]]
            elif t[0] == "d":
                cur["d"] = float(t[-1])
            elif t[0] == "Tr":
                cur["d"] = 1.0 - float(t[-1])
            elif t[0] == "map_Kd":
                cur["map_Kd"] = t[-1]            # options (-s, -o ...) precede the file name
        except ValueError:
            notes.append(f"{path.name}: malformed line {line.strip()!r} ignored")
    return mats


def _matches(part: _Part, patterns) -> bool:
    return any(fnmatch.fnmatchcase(n.lower(), pat.lower()) for n in part.names() for pat in patterns)


def _junk_name(part: _Part) -> str | None:
    for n in part.names():
        tokens = set(re.split(r"[^a-z0-9]+", n.lower()))
        hit = tokens & _JUNK_TOKENS
        if hit:
            return f"name token {sorted(hit)[0]!r}"
        if n.lower().startswith("wgt"):
            return "rig widget name"
    return None


def _auto_drop(verts: np.ndarray, parts: list[_Part]) -> tuple[list[_Part], list[dict]]:
    """Drop rig widgets, ground planes and parts far outside the main body."""
    kept, dropped = [], []
    for p in parts:
        reason = _junk_name(p)
        (dropped if reason else kept).append((p, reason))
    dropped = [{"name": p.name, "reason": r, "faces": len(p.v) // 3} for p, r in dropped]
    kept = [p for p, _ in kept]
    if not kept:
        return kept, dropped
    # robust body box: vertex percentiles over the remaining parts (helpers have few vertices);
    # repeat, since a huge helper widens the first box enough to hide a smaller one
    while True:
        pts = np.concatenate([verts[np.unique(p.v)] for p in kept])
        lo, hi = np.percentile(pts, 2, 0), np.percentile(pts, 98, 0)
        ext = hi - lo
        margin = np.maximum(0.5 * ext, 0.1 * ext.max())
        out = []
        for p in kept:
            q = verts[np.unique(p.v)]
            plo, phi = q.min(0), q.max(0)
            pext = phi - plo
            if np.any(plo < lo - margin) or np.any(phi > hi + margin):
                dropped.append({"name": p.name, "reason": "far outside the main body", "faces": len(p.v) // 3})
            elif (len(p.v) // 3 <= 4 and pext.min() < 0.02 * pext.max() and pext.max() > 0.9 * ext.max()
                  and ext.min() > 0.05 * ext.max()):     # a body-sized card beside a solid body
                dropped.append({"name": p.name, "reason": "big flat quad", "faces": len(p.v) // 3})
            else:
                out.append(p)
        if len(out) == len(kept) or not out:
            break
        kept = out
    return out, dropped


def _basis(path: Path, up: str, forward: str) -> np.ndarray:
    """Rotation taking file coordinates to canonical (Y up, faces +Z, X = Y x Z)."""
    u = np.array(_AXES[up], np.float64)
    f = np.array(_AXES[forward], np.float64)
    if abs(u @ f) > 0:
        raise fail(path, f"up axis {up} and forward axis {forward} are not perpendicular")
    return np.stack([np.cross(u, f), u, f])


def _toe_direction(p: np.ndarray) -> float:
    """Sign-carrying hint of where the toes point along canonical Z (feet slice vs shins)."""
    y = p[:, 1]
    h = y.max() - y.min()
    feet = p[y < y.min() + 0.04 * h]
    shins = p[(y > y.min() + 0.10 * h) & (y < y.min() + 0.20 * h)]
    if len(feet) < 3 or len(shins) < 3:
        return 0.0
    return float((feet[:, 2].max() + feet[:, 2].min()) / 2 - (shins[:, 2].max() + shins[:, 2].min()) / 2)


def load_obj(path, up_axis: str = "auto", forward_axis: str = "auto", include=None, exclude=None,
             texture=None, auto_clean: bool = True, scale: float = 1.0) -> Character:
    """Load an OBJ (+MTL).

    up_axis: 'y' | 'z' | 'auto' (the larger of the Y/Z extents is the height).
    forward_axis: where the character looks in the file: '+z' '-z' '+y' '-y' or
      'auto' (Y-up files: +z; Z-up files: -y, Blender's front).
    include / exclude: glob patterns (case-insensitive) on object, group or
      'object/group' names; include keeps only matching parts.
    texture: image used for materials whose MTL names no map_Kd.
    auto_clean: drop rig widgets, ground planes and far-away helper parts.
    scale: file units -> metres.
    """
    path = Path(path)
    include = [include] if isinstance(include, str) else list(include or [])
    exclude = [exclude] if isinstance(exclude, str) else list(exclude or [])
    if up_axis not in ("y", "z", "auto"):
        raise fail(path, f"up_axis must be 'y', 'z' or 'auto', got {up_axis!r}")
    if forward_axis not in ("auto", *[a for a in _AXES if a[1] != "x"]):
        raise fail(path, f"forward_axis must be one of +z -z +y -y auto, got {forward_axis!r}")
    notes: list[str] = []
    warnings: list[str] = []        # notes that change how the character looks (also in notes)
    verts, uvs, vcolors, parts, mtllibs = _parse_obj(path)
    parts = [p for p in parts if p.v]
    if not parts:
        raise fail(path, "empty mesh (no faces)")

    dropped: list[dict] = []
    if include:
        dropped += [{"name": p.name, "reason": "not included", "faces": len(p.v) // 3}
                    for p in parts if not _matches(p, include)]
        parts = [p for p in parts if _matches(p, include)]
    if exclude:
        dropped += [{"name": p.name, "reason": "excluded", "faces": len(p.v) // 3}
                    for p in parts if _matches(p, exclude)]
        parts = [p for p in parts if not _matches(p, exclude)]
    if auto_clean and parts:
        parts, auto = _auto_drop(verts, parts)
        dropped += auto
    if not parts:
        raise fail(path, "empty mesh (every part was excluded or dropped: "
                         + ", ".join(f"{d['name']} ({d['reason']})" for d in dropped) + ")")

    # axes: decide on the kept parts only
    pts = np.concatenate([verts[np.unique(p.v)] for p in parts])
    ext = pts.max(0) - pts.min(0)
    up = up_axis if up_axis != "auto" else ("z" if ext[2] > ext[1] else "y")
    forward = forward_axis if forward_axis != "auto" else ("-y" if up == "z" else "+z")
    rot = _basis(path, "+" + up, forward) * float(scale)

    # materials
    mtl: dict[str, dict] = {}
    for lib in mtllibs:
        mtl.update(_parse_mtl(path.parent / lib, notes, warnings))
    override = None
    if texture is not None:
        override = np.asarray(load_image(texture, "RGBA"), np.uint8)
    tex_cache: dict[str, np.ndarray | None] = {}
    materials: list[Material] = []
    mat_index: dict[str | None, int] = {}
    for p in parts:
        if p.material in mat_index:
            continue
        props = mtl.get(p.material, {}) if p.material else {}
        if p.material and p.material not in mtl:
            notes.append(f"material {p.material} not in the MTL: grey base colour")
            if mtl:
                warnings.append(notes[-1])
        tex = None
        if "map_Kd" in props:
            tp = (path.parent / props["map_Kd"].replace("\\", "/"))
            if str(tp) not in tex_cache:
                try:
                    tex_cache[str(tp)] = np.asarray(load_image(tp, "RGBA"), np.uint8)
                except UserError as e:
                    notes.append(f"texture named in the MTL: {e}: "
                                 + ("--texture used instead" if override is not None else "base colour only"))
                    if override is None:
                        warnings.append(notes[-1])
                    tex_cache[str(tp)] = None
            tex = tex_cache[str(tp)]
        if tex is None and override is not None:
            tex = override
        kd = props.get("Kd", [0.8, 0.8, 0.8])
        d = float(props.get("d", 1.0))
        # with a texture the MTL's Kd is usually the exporter's default grey: unlit renders use the texture as is
        factor = [1.0, 1.0, 1.0, d] if tex is not None else [*kd, d]
        mat_index[p.material] = len(materials)
        materials.append(Material(name=p.material or "default", base_color_factor=np.array(factor, np.float32),
                                  texture=tex, alpha_mode="BLEND" if d < 1.0 else "OPAQUE", double_sided=True))
    if texture is not None:
        notes.append(f"texture {Path(texture).name} used for materials without map_Kd")
    if not any(m.texture is not None for m in materials):
        notes.append("no textures: base colour only")

    # primitives: one per part; corners deduplicated on (position, uv)
    prims = []
    for p in parts:
        v = np.asarray(p.v, np.int64)
        t = np.asarray(p.vt, np.int64)
        key = np.stack([v, t], 1)
        uniq, inv = np.unique(key, axis=0, return_inverse=True)
        pos = verts[uniq[:, 0]] @ rot.T
        has_uv = bool((uniq[:, 1] >= 0).all()) and len(uvs) > 0
        uv = None
        if has_uv:
            uv = uvs[uniq[:, 1]].copy()
            uv[:, 1] = 1.0 - uv[:, 1]            # OBJ origin bottom-left -> glTF top-left
        col = None
        if vcolors is not None:
            col = np.concatenate([vcolors[uniq[:, 0]], np.ones((len(uniq), 1), np.float32)], 1).clip(0, 1)
        prims.append(Primitive(name=p.name, positions=pos.astype(np.float32),
                               faces=inv.reshape(-1, 3).astype(np.int32), material=mat_index[p.material],
                               uvs=uv, colors=col))

    all_pts = np.concatenate([q.positions for q in prims])
    toe = _toe_direction(all_pts)
    if toe < -0.01 * (all_pts[:, 1].max() - all_pts[:, 1].min()):
        notes.append("feet seem to point -Z: the forward axis may be wrong (set forward_axis)")
    meta = {"format": "obj", "up_axis": up, "forward_axis": forward, "scale": float(scale),
            "dropped": dropped, "parts": [p.name for p in parts], "notes": notes, "warnings": warnings,
            "toe_direction_z": toe}
    if texture is not None:
        meta["texture"] = str(texture)
    return Character(name=path.stem, source=str(path), primitives=prims, materials=materials,
                     skeleton=None, meta=meta)
