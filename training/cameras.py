"""Cameras: the one place that builds them (conventions in docs/DESIGN.md).

A camera is a 25-d vector: row-major 4x4 cam2world (OpenCV axes: x right,
y down, z forward) followed by row-major 3x3 normalised intrinsics.  A
negative focal length marks an orthographic camera whose image covers
``1/|fx|`` world units.
"""
from __future__ import annotations

import dataclasses
import math
import zlib

import numpy as np
import torch

FOV_DEG = 30.0


@dataclasses.dataclass(frozen=True)
class Framing:
    name: str
    box: float    # side of the region-of-interest cube (metres)
    dist: float   # camera distance from the framing origin
    near: float   # ray start
    far: float    # ray end
    fov: float = FOV_DEG


FRAMINGS = {
    "head": Framing("head", box=0.7, dist=1.0, near=0.5, far=1.5),
    "body": Framing("body", box=2.1, dist=3.0, near=1.5, far=4.5),
}


def get_framing(name: str) -> Framing:
    if name not in FRAMINGS:
        raise ValueError(f"unknown framing {name!r}: expected one of {sorted(FRAMINGS)}")
    return FRAMINGS[name]


ORTHO_VIEWS = {"front": (0.0, 0.0), "left": (0.0, 90.0), "right": (0.0, -90.0),
               "back": (0.0, 180.0), "top": (90.0, 0.0)}
GRID60_ELEVS = [60.0, 40.0, 20.0, 0.0, -20.0]
GRID60_AZIMS = [-180.0 + 30.0 * i for i in range(12)]
SPIN12 = list(range(42, 48)) + list(range(36, 42))
N_RANDOM_VIEWS = 8


def look_at_pose(elev: float, azim: float, dist: float) -> np.ndarray:
    """4x4 cam2world (OpenCV axes) for a camera on the sphere looking at the origin."""
    e, a = math.radians(elev), math.radians(azim)
    eye = dist * np.array([math.cos(e) * math.sin(a), math.sin(e), math.cos(e) * math.cos(a)])
    fwd = -eye / np.linalg.norm(eye)
    up = np.array([0.0, 1.0, 0.0])
    if abs(fwd @ up) > 0.999:  # looking straight down/up: image "up" points away from the azimuth
        up = np.array([-math.sin(a), 0.0, -math.cos(a)]) * np.sign(elev)
    right = np.cross(fwd, up)
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, down, fwd, eye
    return pose


def intrinsics(ortho: bool, fov: float = FOV_DEG, extent: float = 0.7) -> np.ndarray:
    f = -1.0 / extent if ortho else 0.5 / math.tan(math.radians(fov) / 2)
    return np.array([[f, 0.0, 0.5], [0.0, f, 0.5], [0.0, 0.0, 1.0]])


@dataclasses.dataclass(frozen=True)
class View:
    """One named camera of a view set, in framed space."""
    name: str
    elev: float
    azim: float
    dist: float
    fov: float      # degrees; negative for orthographic (REFERENCE convention)
    near: float
    far: float
    box: float

    @property
    def ortho(self) -> bool:
        return self.fov < 0

    def cam2world(self) -> np.ndarray:
        return look_at_pose(self.elev, self.azim, self.dist)

    def intrinsics(self) -> np.ndarray:
        return intrinsics(self.ortho, abs(self.fov), self.box)

    def cam25(self) -> np.ndarray:
        return np.concatenate([self.cam2world().reshape(-1), self.intrinsics().reshape(-1)]).astype(np.float32)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["boxwarp"] = d.pop("box")
        d["cam25"] = [float(x) for x in self.cam25()]
        return d

    @staticmethod
    def from_json(d: dict) -> "View":
        return View(d["name"], d["elev"], d["azim"], d["dist"], d["fov"], d["near"], d["far"], d["boxwarp"])


def make_view(name: str, elev: float, azim: float, framing: Framing, ortho: bool) -> View:
    return View(name, float(elev), float(azim), framing.dist, -framing.fov if ortho else framing.fov,
                framing.near, framing.far, framing.box)


def random_view_angles(char_id: str, index: int, seed: int = 0) -> tuple[float, float]:
    """Seeded per (seed, character, view index) so any process reproduces them."""
    rng = np.random.default_rng(zlib.crc32(f"{seed}/{char_id}/{index}".encode()))
    elev = float(np.clip(rng.normal(0.0, 20.0), -85.0, 85.0))
    azim = float(rng.uniform(-180.0, 180.0))
    return elev, azim


def view_set(kind: str, framing: Framing | str, char_id: str | None = None, seed: int = 0) -> list[View]:
    """The named views of a dtype: 'ortho', 'rgb' (random), 'rgb60' (grid), 'spin12'."""
    fr = get_framing(framing) if isinstance(framing, str) else framing
    if kind == "ortho":
        return [make_view(n, e, a, fr, True) for n, (e, a) in ORTHO_VIEWS.items()]
    if kind == "rgb":
        if char_id is None:
            raise ValueError("random views need the character id")
        return [make_view(f"{i:04d}", *random_view_angles(char_id, i, seed), fr, False) for i in range(N_RANDOM_VIEWS)]
    if kind in ("rgb60", "spin12"):
        grid = [make_view(f"{ei * 12 + ai:04d}", e, a, fr, False)
                for ei, e in enumerate(GRID60_ELEVS) for ai, a in enumerate(GRID60_AZIMS)]
        return grid if kind == "rgb60" else [grid[i] for i in SPIN12]
    raise ValueError(f"unknown view set {kind!r}")


def orbit_views(n: int, framing: Framing | str, elev: float = 0.0, ortho: bool = False) -> list[View]:
    """n views evenly spaced in azimuth (turntables), starting at the front."""
    fr = get_framing(framing) if isinstance(framing, str) else framing
    return [make_view(f"{i:04d}", elev, 360.0 * i / n, fr, ortho) for i in range(n)]


# ---------------------------------------------------------------- torch side

def split_cam25(cam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[B,25] -> cam2world [B,4,4], intrinsics [B,3,3]."""
    return cam[..., :16].reshape(*cam.shape[:-1], 4, 4), cam[..., 16:25].reshape(*cam.shape[:-1], 3, 3)


def is_ortho(cam: torch.Tensor) -> torch.Tensor:
    return cam[..., 16] < 0


def pixel_grid(res: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """[res*res, 2] normalised (u, v) pixel centres, row-major (v outer)."""
    t = (torch.arange(res, device=device, dtype=dtype) + 0.5) / res
    v, u = torch.meshgrid(t, t, indexing="ij")
    return torch.stack([u.reshape(-1), v.reshape(-1)], -1)


def rays(cam: torch.Tensor, res: int, uv: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """World-space ray origins and unit directions [B, N, 3] for pixel centres.

    Orthographic rays are parallel and start on the camera plane; perspective
    rays start at the camera centre.  ``uv`` ([N,2] or [B,N,2]) overrides the grid.
    """
    c2w, K = split_cam25(cam.float())
    B = cam.shape[0]
    if uv is None:
        uv = pixel_grid(res, cam.device)
    if uv.dim() == 2:
        uv = uv.unsqueeze(0).expand(B, -1, -1)
    fx, fy, cx, cy = K[:, 0, 0, None], K[:, 1, 1, None], K[:, 0, 2, None], K[:, 1, 2, None]
    x = (uv[..., 0] - cx) / fx.abs()
    y = (uv[..., 1] - cy) / fy.abs()
    ortho = (fx < 0).unsqueeze(-1)                                     # [B,1,1]
    ones, zeros = torch.ones_like(x), torch.zeros_like(x)
    d_cam = torch.where(ortho, torch.stack([zeros, zeros, ones], -1), torch.stack([x, y, ones], -1))
    o_cam = torch.where(ortho, torch.stack([x, y, zeros], -1), torch.zeros_like(d_cam))
    R, t = c2w[:, :3, :3], c2w[:, :3, 3]
    dirs = torch.nn.functional.normalize(d_cam @ R.transpose(1, 2), dim=-1)
    origins = o_cam @ R.transpose(1, 2) + t[:, None, :]
    return origins, dirs


def project(points: torch.Tensor, cam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """World points [B,N,3] -> normalised pixel coords uv [B,N,2] and depth along the view axis [B,N]."""
    c2w, K = split_cam25(cam.float())
    R, t = c2w[:, :3, :3], c2w[:, :3, 3]
    p = (points - t[:, None, :]) @ R                                    # world -> camera
    fx, fy, cx, cy = K[:, 0, 0, None], K[:, 1, 1, None], K[:, 0, 2, None], K[:, 1, 2, None]
    ortho = fx < 0
    z = p[..., 2]
    zs = torch.where(ortho, torch.ones_like(z), z.clamp_min(1e-8))
    u = p[..., 0] / zs * fx.abs() + cx
    v = p[..., 1] / zs * fy.abs() + cy
    return torch.stack([u, v], -1), z


def mirror(cam: torch.Tensor) -> torch.Tensor:
    """Camera of the horizontally mirrored image (world x -> -x): left and right views swap."""
    c2w, K = split_cam25(cam)
    S = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0], dtype=cam.dtype, device=cam.device))
    c2w = S @ c2w @ S
    return torch.cat([c2w.reshape(*cam.shape[:-1], 16), K.reshape(*cam.shape[:-1], 9)], -1)


def as_tensor(views, device=None) -> torch.Tensor:
    """List of View -> [B,25] float tensor."""
    return torch.from_numpy(np.stack([v.cam25() for v in views])).to(device)
