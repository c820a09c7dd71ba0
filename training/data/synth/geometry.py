"""Parametric meshes in numpy: swept tubes (limbs, torso, hair strands), ellipsoids, flat cards.

Every builder returns a ``Part``: positions, triangles, per-vertex surface
coordinates ``(u, v)`` in [0, 1] (u around the tube, v along it) and, once
rigged, four joint indices and weights per vertex.  Atlas placement of the
``(u, v)`` happens in ``build.py`` (``Part.uv`` holds the final atlas UVs).

Around-coordinate convention: u = 0.25 is the tube's *front* (the ``front``
reference vector), u = 0.75 its back, so textures painted for a tube put the
front in the first half of the tile and the back in the second.
"""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Part:
    name: str
    pos: np.ndarray                  # (N, 3) float64
    faces: np.ndarray                # (F, 3) int64
    st: np.ndarray                   # (N, 2) surface coordinates (u around, v along) in [0, 1]
    uv: np.ndarray | None = None     # (N, 2) atlas UVs (glTF: origin top-left)
    joints: np.ndarray | None = None  # (N, 4) int
    weights: np.ndarray | None = None  # (N, 4) float
    material: int = 0                # 0 opaque, 1 alpha-mask


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(n, 1e-12)


def tube_faces(k: int, m: int) -> np.ndarray:
    """Quads of a (k rings x m+1 columns) grid, wound so normals point outwards."""
    i, j = np.meshgrid(np.arange(k - 1), np.arange(m), indexing="ij")
    a = i * (m + 1) + j
    b = a + 1
    c = a + (m + 1)
    d = c + 1
    f = np.stack([np.stack([a, c, d], -1), np.stack([a, d, b], -1)], 2)
    return f.reshape(-1, 3)


def sweep(name: str, path, rf, rs, front=(0.0, 0.0, 1.0), m: int = 12, arc=(0.0, 1.0),
          modulate=None, caps: bool = False) -> Part:
    """Elliptic tube along ``path`` (K,3).

    ``rf``/``rs``: radius towards ``front`` and sideways (scalars or (K,)).
    ``front``: (3,) or (K,3) reference vector made perpendicular to the path.
    ``arc``: range of u covered (partial tubes: open jackets, face halves).
    ``modulate(u, v) -> factor`` scales the radius (pleats, spikes).
    """
    path = np.asarray(path, np.float64)
    k = len(path)
    rf = np.broadcast_to(np.asarray(rf, np.float64), (k,))
    rs = np.broadcast_to(np.asarray(rs, np.float64), (k,))
    t = np.gradient(path, axis=0)
    t = _unit(t)
    fr = np.broadcast_to(np.asarray(front, np.float64), (k, 3))
    f = _unit(fr - (fr * t).sum(-1, keepdims=True) * t)
    s = np.cross(t, f)
    u = np.linspace(arc[0], arc[1], m + 1)
    seg = np.linalg.norm(np.diff(path, axis=0), axis=-1)
    v = np.concatenate([[0.0], np.cumsum(seg)])
    v = v / max(v[-1], 1e-12)
    a = 2 * np.pi * (u - 0.25)
    uu, vv = np.meshgrid(u, v)                      # (k, m+1)
    fac = modulate(uu, vv) if modulate is not None else 1.0
    cf = (rf[:, None] * np.cos(a)[None] * fac)[..., None]
    cs = (rs[:, None] * np.sin(a)[None] * fac)[..., None]
    pos = path[:, None] + cf * f[:, None] + cs * s[:, None]
    pos = pos.reshape(-1, 3)
    faces = tube_faces(k, m)
    st = np.stack([uu, vv], -1).reshape(-1, 2)
    if caps:
        n0 = len(pos)
        pos = np.concatenate([pos, path[[0, -1]]])
        st = np.concatenate([st, [[0.5, 0.0], [0.5, 1.0]]])
        j = np.arange(m)
        first = np.stack([np.full(m, n0), j + 1, j], -1)
        last0 = (k - 1) * (m + 1)
        last = np.stack([np.full(m, n0 + 1), last0 + j, last0 + j + 1], -1)
        faces = np.concatenate([faces, first, last])
    return Part(name, pos, faces, st)


def ellipsoid(name: str, center, radii, axis=(0.0, 1.0, 0.0), front=(0.0, 0.0, 1.0),
              k: int = 10, m: int = 14, polar=(0.0, 1.0), arc=(0.0, 1.0), modulate=None) -> Part:
    """Ellipsoid with semi-axes ``radii = (along axis, towards front, sideways)``.

    v runs from the -axis pole (v=0) to the +axis pole (v=1); ``polar`` crops that range.
    """
    c = np.asarray(center, np.float64)
    ax = _unit(np.asarray(axis, np.float64))
    th = np.pi * np.linspace(polar[0], polar[1], k)          # 0 at -axis pole
    path = c + (-np.cos(th))[:, None] * radii[0] * ax
    sin = np.maximum(np.sin(th), 0.0)
    p = sweep(name, path, radii[1] * sin, radii[2] * sin, front=front, m=m, arc=arc, modulate=modulate)
    return p


def card(name: str, center, right, up, width: float, height: float, nx: int = 1, ny: int = 1) -> Part:
    """Flat rectangle; st = (0,0) top-left, (1,1) bottom-right as seen from the front."""
    c = np.asarray(center, np.float64)
    r = _unit(np.asarray(right, np.float64))
    u_ = _unit(np.asarray(up, np.float64))
    s, t = np.meshgrid(np.linspace(0, 1, nx + 1), np.linspace(0, 1, ny + 1))
    pos = c + ((s - 0.5) * width)[..., None] * r + ((0.5 - t) * height)[..., None] * u_
    i, j = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    a = i * (nx + 1) + j
    f = np.stack([np.stack([a, a + nx + 1, a + 1], -1), np.stack([a + 1, a + nx + 1, a + nx + 2], -1)], 2)
    return Part(name, pos.reshape(-1, 3), f.reshape(-1, 3), np.stack([s, t], -1).reshape(-1, 2))


def smooth_path(points, n: int) -> np.ndarray:
    """Catmull-Rom-like resampling of a few control points into ``n`` points."""
    p = np.asarray(points, np.float64)
    seg = np.linalg.norm(np.diff(p, axis=0), axis=-1)
    d = np.concatenate([[0.0], np.cumsum(seg)])
    d = d / max(d[-1], 1e-12)
    t = np.linspace(0, 1, n)
    # piecewise-linear then a light smoothing pass keeps it monotone and cheap
    out = np.stack([np.interp(t, d, p[:, i]) for i in range(3)], -1)
    for _ in range(2):
        out[1:-1] = 0.25 * out[:-2] + 0.5 * out[1:-1] + 0.25 * out[2:]
    return out


def merge(parts: list[Part]) -> Part:
    """Concatenate parts sharing one material (indices offset)."""
    pos, faces, uv, j, w = [], [], [], [], []
    off = 0
    for p in parts:
        pos.append(p.pos)
        faces.append(p.faces + off)
        uv.append(p.uv)
        j.append(p.joints)
        w.append(p.weights)
        off += len(p.pos)
    return Part(parts[0].name, np.concatenate(pos), np.concatenate(faces), None,
                np.concatenate(uv), np.concatenate(j), np.concatenate(w), parts[0].material)
