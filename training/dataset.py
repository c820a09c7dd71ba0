"""Training samples read from the rendered tree (docs/DESIGN.md "Training sample").

One item = one character: the front/back conditioning images on white, the
orthographic targets with alpha, surface points (framed metres) and cameras,
one perspective view with its mask and camera, and optionally precomputed
encoder features.  Horizontal mirroring is the one augmentation: it maps the
world x -> -x, so images flip, left and right swap, cameras go through
``cameras.mirror`` and the x of every surface point changes sign.
"""
from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import torch
import torch.nn.functional as F

from training import cameras, paths
from training.data import catalog, features
from training.errors import UserError, fail, load_image

SWAP_LR = {"left": "right", "right": "left"}


def _area(t: torch.Tensor, size: int | None) -> torch.Tensor:
    """Area resize of a [C,H,W] tensor to size x size (no-op when it already is)."""
    if not size or t.shape[-1] == size and t.shape[-2] == size:
        return t
    return F.interpolate(t[None], size=(size, size), mode="area")[0]


def _rgba(path) -> torch.Tensor:
    """[4,H,W] float in [0,1] (an RGB file gets an opaque alpha)."""
    im = load_image(path, "RGBA")
    return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 255.0


def _on_white(rgba: torch.Tensor) -> torch.Tensor:
    return rgba[:3] * rgba[3:4] + (1.0 - rgba[3:4])


def _mask(path, fallback_alpha: torch.Tensor, size: int | None) -> torch.Tensor:
    """[1,H,W] in {0,1}: a precomputed mask file when there is one, else alpha > 200."""
    if path.exists():
        m = torch.from_numpy(np.asarray(load_image(path, "L")) > 127).float()[None]
    else:
        m = (fallback_alpha * 255.0 > catalog.MASK_THRESHOLD).float()
    return (_area(m, size) > 0.5).float()


def decode_xyz(xyza: torch.Tensor, box: float, size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """xyza [4,H,W] in [0,1] -> (xyz [3,h,w] framed metres, coverage [1,h,w]).

    Resizing averages the points weighted by coverage, so silhouette pixels do
    not get pulled towards the background; uncovered pixels hold 0 (the origin).
    """
    a = xyza[3:4]
    xyz = (xyza[:3] * box - box / 2.0) * a
    if size:
        xyz, a = _area(xyz, size), _area(a, size)
    return torch.where(a > 1e-6, xyz / a.clamp_min(1e-6), torch.zeros_like(xyz)), a


XYZ_DTYPE = {"ortho": "ortho_xyza", "rgb": "xyza", "rgb60": "xyza60"}   # surface points of each view set


@dataclasses.dataclass(frozen=True)
class RaySampling:
    """Pixel patches drawn at full image resolution from several views of a character, for the ray
    reconstruction loss (``loss.ReconGANLoss.ray_reconstruction``).  Full resolution matters most in body
    framing, where a character is 46 px tall in a 64-px rendering; patches keep the pixels' 2D layout for
    the structural losses (SSIM, image gradients)."""
    views: int = 0                  # views per character and step (0: off)
    pool: tuple = ("ortho", "rgb")  # view sets they are drawn from (ortho: front/back/left/right; rgb: random
                                    # perspective; rgb60: the 60-view grid), where rendered
    patches: int = 2                # patches per view
    size: int = 32                  # patch side (pixels)
    scales: tuple = (1, 2)          # pixel stride of a patch, drawn per patch: targets are area-averaged
    fg_fraction: float = 0.75       # patches centred on a foreground pixel; the others anywhere in the
                                    # character's bounding box grown by half a patch (edges, background)
    depth: bool = True              # also load the views' surface points (xyza) for the depth term

    def __post_init__(self):
        if self.views < 0 or self.patches < 1 or self.size < 2:
            raise UserError(f"ray sampling: views >= 0, patches >= 1 and size >= 2 needed, got {self}")
        if not self.scales or any(int(k) < 1 for k in self.scales):
            raise UserError(f"ray sampling: scales must be positive integers, got {self.scales}")
        bad = [p for p in self.pool if p not in XYZ_DTYPE]
        if bad:
            raise UserError(f"ray sampling: unknown view set(s) {bad}, expected some of {list(XYZ_DTYPE)}")
        if not 0.0 <= self.fg_fraction <= 1.0:
            raise UserError(f"ray sampling: fg_fraction must be in [0, 1], got {self.fg_fraction}")


def sample_patches(rgb: torch.Tensor, alpha: torch.Tensor, xyz: torch.Tensor | None, cfg: RaySampling,
                   n: int) -> dict:
    """``n`` patches of cfg.size^2 pixels from one view (rgb [3,H,W] on white in [-1,1], alpha [1,H,W],
    xyz [3,H,W] or None; xyz must already be coverage-weighted averages at every scale: pass the
    full-resolution points and they are area-averaged with alpha here).  Returns rgb/alpha/xyz patches
    [n,C,P,P] and the pixel centres uv [n,P*P,2] in the view's normalised image coordinates."""
    H, W = rgb.shape[-2:]
    P = cfg.size
    scales = [int(k) for k in cfg.scales if P * int(k) <= min(H, W)] or [max(min(H, W) // P, 1)]
    out = {"rgb": [], "alpha": [], "xyz": [], "uv": []}
    for _ in range(n):
        k = scales[int(torch.randint(len(scales), ()))]
        h, w = H // k, W // k
        if k > 1:
            r = F.avg_pool2d(rgb[None, :, :h * k, :w * k], k)[0]
            a = F.avg_pool2d(alpha[None, :, :h * k, :w * k], k)[0]
            x = None
            if xyz is not None:
                x = F.avg_pool2d((xyz * alpha)[None, :, :h * k, :w * k], k)[0]
                x = torch.where(a > 1e-6, x / a.clamp_min(1e-6), torch.zeros_like(x))
        else:
            r, a, x = rgb, alpha, xyz
        Pk = min(P, h, w)
        fg = (a[0] > 0.5).nonzero()
        if len(fg) and bool(torch.rand(()) < cfg.fg_fraction):
            cy, cx = fg[int(torch.randint(len(fg), ()))].tolist()
        elif len(fg):
            lo, hi = fg.min(0).values - Pk // 2, fg.max(0).values + Pk // 2
            cy = int(torch.randint(int(lo[0]), int(hi[0]) + 1, ()))
            cx = int(torch.randint(int(lo[1]), int(hi[1]) + 1, ()))
        else:
            cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
        y0 = min(max(cy - Pk // 2, 0), h - Pk)
        x0 = min(max(cx - Pk // 2, 0), w - Pk)
        sl = (slice(None), slice(y0, y0 + Pk), slice(x0, x0 + Pk))
        out["rgb"].append(r[sl])
        out["alpha"].append(a[sl])
        out["xyz"].append(x[sl] if x is not None else torch.zeros(3, Pk, Pk))
        vv, uu = torch.meshgrid(torch.arange(y0, y0 + Pk, dtype=torch.float32),
                                torch.arange(x0, x0 + Pk, dtype=torch.float32), indexing="ij")
        out["uv"].append(torch.stack([(uu.reshape(-1) + 0.5) / w, (vv.reshape(-1) + 0.5) / h], -1))
    return {k: torch.stack(v) for k, v in out.items()}


class CharacterDataset(torch.utils.data.Dataset):
    """Characters of ``renders/<renderset>`` listed by ``subsets/<dataset>_<split>.csv``.

    ``dataset=None`` takes every finished character of the renderset (split
    ignored); ``ids`` gives an explicit list.  ``resolution`` area-resizes
    every image (``cond_resolution`` overrides it for the conditioning pair).
    ``random_views`` draws the perspective view at random (else view 0);
    ``mirror_prob`` is the chance of the horizontal-mirror augmentation.
    ``rays`` (RaySampling) adds full-resolution pixel patches of several views
    (``ray_rgb``, ``ray_alpha``, ``ray_xyz`` [V*K,C,P,P], ``ray_uv`` [V*K,P*P,2],
    ``ray_cam`` [V*K,25]).
    Randomness comes from torch's generator, which DataLoader seeds per worker.
    """

    def __init__(self, root, renderset: str, dataset: str | None = None, split: str = "train",
                 resolution: int | None = None, ortho_views=("front", "back", "left", "right"),
                 random_views: bool = True, mirror_prob: float = 0.0, use_features: bool = False,
                 cond_resolution: int | None = None, allow_random_features: bool = False,
                 rgb_dtype: str = "rgb", ids=None, rays: RaySampling | None = None):
        self.root = paths.data_root(root)
        self.renderset = renderset
        self.dataset, self.split = dataset, split
        self.resolution = resolution
        self.cond_resolution = cond_resolution or resolution
        self.ortho_views = tuple(ortho_views)
        bad = [v for v in self.ortho_views if v not in cameras.ORTHO_VIEWS]
        if bad:
            raise UserError(f"ortho_views: unknown view(s) {bad}, expected some of {list(cameras.ORTHO_VIEWS)}")
        self.random_views = random_views
        if not 0.0 <= mirror_prob <= 1.0:
            raise UserError(f"mirror_prob: expected a probability in [0, 1], got {mirror_prob}")
        self.mirror_prob = float(mirror_prob)
        self.rgb_dtype = rgb_dtype
        self.xyz_dtype = {"rgb": "xyza", "rgb60": "xyza60"}.get(rgb_dtype, "xyza")
        self.mask_dtype = f"{rgb_dtype}_mask"
        rd = paths.renders_dir(self.root, renderset)
        if not rd.is_dir():
            raise fail(rd, "renderset not found (render it with `python -m _scripts.data.render`)")
        self.ids = list(ids) if ids is not None else catalog.select_ids(self.root, renderset, dataset, split)
        if not self.ids:
            where = paths.subset_csv(self.root, dataset, split) if dataset else rd / "meta"
            raise fail(where, "no characters")
        missing = [c for c in self.ids if not paths.char_meta_path(self.root, renderset, c).exists()]
        if missing:
            raise fail(paths.char_meta_path(self.root, renderset, missing[0]),
                       f"render missing ({len(missing)} of {len(self.ids)} characters are not rendered; "
                       "re-run the render or data_clean)")
        self.rs_meta = catalog.load_renderset_meta(self.root, renderset)
        self.use_features = use_features
        self.feature_info = None
        if use_features:
            info = features.load_feature_info(self.root, renderset)
            fdir = features.feature_dir(self.root, renderset)
            if info is None:
                raise fail(fdir / features.FEATURE_INFO,
                           "no precomputed features (run `python -m _scripts.train.generate_feature`)")
            if info.get("random_init") and not allow_random_features:
                raise fail(fdir / features.FEATURE_INFO, "features come from a randomly initialised encoder; "
                           "recompute them with real weights or allow random features explicitly")
            self.feature_info = info
        self._meta_cache: dict[str, dict] = {}
        self.rays = rays if rays is not None and rays.views > 0 else None
        # view sets present on disk (meta_views falls back to computed cameras for sets never rendered)
        self.ray_pool = tuple(p for p in (self.rays.pool if self.rays else ())
                              if (rd / p).is_dir())
        if self.rays and not self.ray_pool:
            raise fail(rd, f"ray sampling: none of the view sets {list(self.rays.pool)} is rendered")

    def __len__(self) -> int:
        return len(self.ids)

    # ---------------------------------------------------------- pieces

    def _views(self, char_id: str, dtype: str) -> dict[str, dict]:
        meta = self._meta_cache.get(char_id)
        if meta is None:
            meta = self._meta_cache[char_id] = catalog.load_char_meta(self.root, self.renderset, char_id)
        views = catalog.meta_views(meta, dtype, char_id, self.rs_meta)
        if not views:
            raise fail(paths.char_meta_path(self.root, self.renderset, char_id), f"no {dtype} cameras")
        return views

    def _path(self, dtype: str, char_id: str, view: str):
        return paths.render_path(self.root, self.renderset, dtype, char_id, view)

    @staticmethod
    def _box(view: dict, cam: np.ndarray) -> float:
        if "boxwarp" in view:
            return float(view["boxwarp"])
        return 1.0 / abs(float(cam[16]))        # orthographic extent

    def _ortho(self, char_id: str, view: str, ortho_meta: dict, size: int | None, cond_size: int | None):
        if view not in ortho_meta:
            raise fail(paths.char_meta_path(self.root, self.renderset, char_id), f"no camera for ortho view {view!r}")
        vj = ortho_meta[view]
        cam = catalog.view_cam25(vj)
        rgba = _rgba(self._path("ortho", char_id, view))
        xyz, _ = decode_xyz(_rgba(self._path("ortho_xyza", char_id, view)), self._box(vj, cam), size)
        white = _on_white(rgba)
        return {"rgb": _area(white, size) * 2 - 1, "alpha": _area(rgba[3:4], size).clamp(0, 1), "xyz": xyz,
                "cam": torch.from_numpy(cam), "box": self._box(vj, cam), "rgba": rgba,
                "cond": _area(white, cond_size) * 2 - 1}

    def _feature(self, char_id: str, view: str, mirrored: bool) -> torch.Tensor:
        path = features.feature_path(self.root, self.renderset, char_id, view)
        mpath = features.feature_path(self.root, self.renderset, char_id, view + "_mirror")
        if mirrored and mpath.exists():
            return torch.load(mpath, weights_only=True).float()
        if not path.exists():
            raise fail(path, "feature file missing (run `python -m _scripts.train.generate_feature`)")
        f = torch.load(path, weights_only=True).float()
        return f.flip(-1) if mirrored else f    # approximate when no mirrored features were stored

    # ---------------------------------------------------------- item

    def __getitem__(self, index: int) -> dict:
        char_id = self.ids[index]
        mirrored = self.mirror_prob > 0 and bool(torch.rand(()) < self.mirror_prob)
        src = (lambda v: SWAP_LR.get(v, v)) if mirrored else (lambda v: v)
        ortho_meta = self._views(char_id, "ortho")
        size, csize = self.resolution, self.cond_resolution
        loaded = {v: self._ortho(char_id, src(v), ortho_meta, size, csize)
                  for v in dict.fromkeys(self.ortho_views + ("front", "back"))}

        def flip(t):
            return t.flip(-1) if mirrored else t

        def mirror_xyz(t):
            return t * torch.tensor([-1.0, 1.0, 1.0])[:, None, None] if mirrored else t

        def cam_of(c):
            return cameras.mirror(c[None])[0] if mirrored else c

        out = {"id": char_id, "mirrored": torch.tensor(mirrored), "box": torch.tensor(loaded["front"]["box"])}
        for v in ("front", "back"):
            o = loaded[v]
            out[f"cond_{v}"] = flip(o["cond"])
            out[f"cond_{v}_mask"] = flip(_mask(self._path("ortho_mask", char_id, src(v)), o["rgba"][3:4], csize))
        vs = [loaded[v] for v in self.ortho_views]
        out["ortho_rgb"] = torch.stack([flip(o["rgb"]) for o in vs])
        out["ortho_alpha"] = torch.stack([flip(o["alpha"]) for o in vs])
        out["ortho_xyz"] = torch.stack([mirror_xyz(flip(o["xyz"])) for o in vs])
        out["ortho_cam"] = torch.stack([cam_of(o["cam"]) for o in vs])

        rgb_meta = self._views(char_id, self.rgb_dtype)
        names = sorted(rgb_meta)
        name = names[int(torch.randint(len(names), ()))] if self.random_views else names[0]
        rgba = _rgba(self._path(self.rgb_dtype, char_id, name))
        xyza_path = self._path(self.xyz_dtype, char_id, name)
        mask_path = self._path(self.mask_dtype, char_id, name)
        cov = _rgba(xyza_path)[3:4] if not mask_path.exists() else None
        out["rgb"] = flip(_area(_on_white(rgba), size) * 2 - 1)
        out["rgb_mask"] = flip(_mask(mask_path, cov, size))
        out["rgb_cam"] = cam_of(torch.from_numpy(catalog.view_cam25(rgb_meta[name])))
        if self.use_features:
            out["feat_front"] = self._feature(char_id, "front", mirrored)
            out["feat_back"] = self._feature(char_id, "back", mirrored)
        if self.rays is not None:
            out.update(self._ray_patches(char_id, ortho_meta, mirrored))
        return out

    def _ray_patches(self, char_id: str, ortho_meta: dict, mirrored: bool) -> dict:
        """RaySampling.views distinct views drawn from the pool, RaySampling.patches patches from each.  A
        mirrored sample flips each view's image and mirrors its camera: a view of the mirrored character."""
        cfg = self.rays
        cands = []
        for dtype in self.ray_pool:
            meta = ortho_meta if dtype == "ortho" else self._views(char_id, dtype)
            names = [n for n in sorted(meta) if dtype != "ortho" or n in ("front", "back", "left", "right")]
            cands += [(dtype, n, meta[n]) for n in names]
        pick = torch.randperm(len(cands))[:cfg.views].tolist()
        parts, cams = [], []
        for i in pick:
            dtype, name, vj = cands[i]
            cam = catalog.view_cam25(vj)
            rgba = _rgba(self._path(dtype, char_id, name))
            rgb, alpha = _on_white(rgba) * 2 - 1, rgba[3:4]
            xyz = None
            if cfg.depth or dtype != "ortho":
                xyza = _rgba(self._path(XYZ_DTYPE[dtype], char_id, name))
                if dtype != "ortho":        # perspective views are stored on white: coverage is their alpha
                    alpha = xyza[3:4]
                if cfg.depth:
                    xyz, _ = decode_xyz(xyza, self._box(vj, cam))
            if mirrored:
                rgb, alpha = rgb.flip(-1), alpha.flip(-1)
                xyz = xyz.flip(-1) * torch.tensor([-1.0, 1.0, 1.0])[:, None, None] if xyz is not None else None
                cam = cameras.mirror(torch.from_numpy(cam)[None])[0].numpy()
            parts.append(sample_patches(rgb, alpha, xyz, cfg, cfg.patches))
            cams += [torch.from_numpy(np.asarray(cam, np.float32))] * cfg.patches
        out = {f"ray_{k}": torch.cat([p[k] for p in parts]) for k in parts[0]}
        out["ray_cam"] = torch.stack(cams)
        if not cfg.depth:
            del out["ray_xyz"]
        return out


def collate(batch: list[dict]) -> dict:
    """Stack tensors along a new batch axis; strings (ids) become lists."""
    out = {}
    for k in batch[0]:
        vals = [b[k] for b in batch]
        out[k] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else vals
    return out


class InfiniteSampler(torch.utils.data.Sampler):
    """Endless index stream, one reshuffle per pass, split across ranks.

    Same arguments and ``set_epoch`` as ``DistributedSampler``: every rank
    builds the same permutation from ``seed + epoch`` and takes every
    ``num_replicas``-th index from ``rank``, so ranks never overlap within a
    pass and together cover the dataset (padded by wrapping).
    """

    def __init__(self, dataset, num_replicas: int = 1, rank: int = 0, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside 0..{num_replicas - 1}")
        self.dataset, self.num_replicas, self.rank = dataset, num_replicas, rank
        self.shuffle, self.seed, self.drop_last, self.epoch = shuffle, seed, drop_last, 0
        n = len(dataset)
        # drop_last on a set smaller than the world would starve every rank: wrap instead
        self.num_samples = max(n // num_replicas, 1 if n else 0) if drop_last else math.ceil(n / num_replicas)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def pass_indices(self, epoch: int) -> list[int]:
        n = len(self.dataset)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(n, generator=g).tolist()
        else:
            order = list(range(n))
        total = self.num_samples * self.num_replicas
        order = (order * math.ceil(total / max(n, 1)))[:total] if total > n else order[:total]
        return order[self.rank::self.num_replicas]

    def __iter__(self):
        if len(self.dataset) == 0:
            return
        for epoch in itertools.count(self.epoch):
            yield from self.pass_indices(epoch)


def make_loader(dataset, batch_size: int, rank: int = 0, num_replicas: int = 1, num_workers: int = 2,
                seed: int = 0, pin_memory: bool = False):
    """An endless iterator of collated batches for one rank (batch_size = per-rank batch)."""
    sampler = InfiniteSampler(dataset, num_replicas=num_replicas, rank=rank, seed=seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate,
                                         num_workers=num_workers, pin_memory=pin_memory,
                                         persistent_workers=num_workers > 0,
                                         generator=torch.Generator().manual_seed(seed * 1000 + rank))
    return iter(loader)
