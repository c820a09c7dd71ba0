"""Triplane generators: single view (PAniC-3D) and front+back (NOVA-3D, _v0 concat / _v1 attention).

    cond front --ResNet--> enc feat --+
    cond front ------------------------+--> TriplaneBackbone --> front planes --+
    cond back  --PAT-----> enc feat --+--> (same backbone)  --> back planes  --+--> field: sample both,
                                                                                 fuse (_v0/_v1), decode
    camera --> rays (box-clipped) --> stratified + importance samples --> field --> composite
           --> raw image/features [n x n] --> SuperresolutionHybrid --> image [S x S]

The single-view generator has only the front branch and no fusion.  Back
planes are sampled in the back camera's frame (framed points rotated 180 deg
about Y), so both triplanes are laid out like the image that conditioned them.
Everything size-like is a constructor keyword stored in ``G.config``.
"""
from __future__ import annotations

import copy
import json
from collections.abc import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from training import cameras
from training import volumetric_rendering as vr
from training.fusion import FUSIONS

DEFAULT_RENDERING = {
    "ray_start": "auto",          # 'auto': the framing's near/far (cameras.FRAMINGS)
    "ray_end": "auto",
    "depth_resolution": 48,
    "depth_resolution_importance": 48,
    "white_back": True,
    "density_noise": 0.0,
    "clip_to_box": True,          # samples only inside the box
    # EG3D's setting (and default): "none" = no per-pixel noise in the super-resolution blocks (they then have
    # no noise parameters), "random" = StyleGAN2's noise inputs (checkpoints from before this key)
    "superresolution_noise_mode": "none",
}
SR_NOISE_MODES = ("none", "random")
# "stylegan": two StyleGAN blocks super-resolve the neural rendering (EG3D, PAniC-3D, NOVA-3D); "none": the
# image is the neural rendering itself, resized (a field trained on full-resolution rays renders sharp at any
# neural_rendering_resolution)
SUPERRESOLUTIONS = ("stylegan", "none")
# per-call overrides accepted by G(...) / G.render(...)
RENDER_OVERRIDES = set(DEFAULT_RENDERING) | {"perturb", "roi"}

BACK_ROTATION = torch.tensor([-1.0, 1.0, -1.0])
INFERENCE_RAY_CHUNK = 1 << 15     # rays marched at a time when rendering without gradients   # 180 deg about Y: framed -> back camera's frame


def _jsonable(d: dict) -> dict:
    """Normalise a config through JSON (tuples -> lists) and fail early on non-plain values."""
    return json.loads(json.dumps(d))


class TriplaneField(nn.Module):
    """Per-point field on one triplane ([B,3,...]) or a front+back pair ([B,6,...], with a fusion)."""

    def __init__(self, plane_channels: int = 32, plane_layers: int = 1, decoder_hidden: int = 64,
                 decoder_features: int = 32, box_warp: float = 0.7, fusion: str | None = None, fusion_dim: int = 64):
        super().__init__()
        self.plane_layers, self.box_warp = plane_layers, box_warp
        self.fusion = None if fusion is None else (
            FUSIONS[fusion](plane_channels, fusion_dim) if fusion == "attention" else FUSIONS[fusion](plane_channels))
        self.decoder = OSGDecoder(plane_channels, decoder_hidden, decoder_features)

    def _pair(self, planes: torch.Tensor, xyz: torch.Tensor):
        """Front and back triplane features [B,N,C] of a front+back pair ([B,6,...])."""
        xyz_back = xyz * BACK_ROTATION.to(xyz)
        if vr.fused_lookup(planes, xyz):     # one fused kernel per triplane
            return (vr.triplane_features(planes[:, :3], xyz, self.box_warp, self.plane_layers),
                    vr.triplane_features(planes[:, 3:], xyz_back, self.box_warp, self.plane_layers))
        # one lookup of the 6 planes
        coords = torch.cat([vr.plane_coords(xyz, self.box_warp), vr.plane_coords(xyz_back, self.box_warp)], 1)
        feats = vr.sample_planes(planes, coords, self.plane_layers)
        return feats[:, :3].mean(1), feats[:, 3:].mean(1)

    def features(self, planes: torch.Tensor, xyz: torch.Tensor, dirs: torch.Tensor, return_attention: bool = False):
        """(geometry feature, appearance feature), each [B,N,C] (and the fusion's attention [B,N,2] when
        asked).  Density is decoded from the geometry feature, which never sees the view direction."""
        if self.fusion is None:
            f = vr.triplane_features(planes, xyz, self.box_warp, self.plane_layers)
            return ((f, f), None) if return_attention else (f, f)
        f_front, f_back = self._pair(planes, xyz)
        return self.fusion(f_front, f_back, xyz * (2.0 / self.box_warp), dirs.to(f_front.dtype),
                           return_attention=return_attention)

    def forward(self, planes, xyz, dirs, density_noise: float = 0.0, roi=None):
        geo, app = self.features(planes, xyz, dirs)
        sigma, feat = self.decoder(geo, density_noise, appearance=app)
        if roi is not None:
            sigma = vr.crop_density(sigma, xyz, roi)
        return sigma, feat

    def density(self, planes, xyz, roi=None) -> torch.Tensor:
        """Density [B,N,1] at framed points: the geometry path alone (no view direction exists here)."""
        if self.fusion is None:
            geo = vr.triplane_features(planes, xyz, self.box_warp, self.plane_layers)
        else:
            geo = self.fusion.geometry(*self._pair(planes, xyz))
        sigma = self.decoder.density(geo)
        if roi is not None:
            sigma = vr.crop_density(sigma, xyz, roi)
        return sigma


OSGDecoder = vr.OSGDecoder


def render_field(field: TriplaneField, planes: torch.Tensor, cam: torch.Tensor, resolution: int,
                 density_noise: float = 0.0, roi=None, **march_kw) -> dict:
    """The field of ``planes`` seen from cameras cam [B,25] (vr.render_image).  A plain function of the
    field module so that compile_renderer compiles the whole ray march as one graph: rays, both sample
    passes, importance sampling and compositing (compiling the field alone left the rest eager: the
    EG3D NR 64 step's eager kernels 317 -> 116)."""
    return vr.render_image(lambda xyz, dirs: field(planes, xyz, dirs, density_noise, roi), cam, resolution,
                           **march_kw)


def render_field_rays(field: TriplaneField, planes: torch.Tensor, origins: torch.Tensor, dirs: torch.Tensor,
                      density_noise: float = 0.0, roi=None, **march_kw) -> dict:
    """The field of ``planes`` along rays [B,R,3] (vr.render_rays); compiled like render_field."""
    return vr.render_rays(lambda xyz, d: field(planes, xyz, d, density_noise, roi), origins, dirs, **march_kw)


def _planes_and_ws(planes):
    """synthesize() returns {'planes', 'ws'}; the sampling methods also take the bare plane tensor."""
    if isinstance(planes, dict):
        return planes["planes"], planes.get("ws")
    return planes, None


def default_view_dirs(xyz: torch.Tensor) -> torch.Tensor:
    """Direction of an elevation-0 camera orbiting the vertical axis and looking through each point."""
    d = torch.stack([-xyz[..., 0], torch.zeros_like(xyz[..., 1]), -xyz[..., 2]], -1)
    n = d.norm(dim=-1, keepdim=True)
    front = torch.tensor([0.0, 0.0, -1.0], device=xyz.device, dtype=xyz.dtype).expand_as(d)
    return torch.where(n > 1e-6, d / n.clamp_min(1e-6), front)


class _Generator(nn.Module):
    """Shared body of the three variants (``two_view`` and ``fusion`` set by subclasses)."""

    two_view = False
    fusion = None

    def __init__(self, *, framing: str = "head", z_dim: int = 512, w_dim: int = 512, c_dim: int = 0,
                 mapping_layers: int = 2, cond_resolution: int = 256, plane_resolution: int = 256,
                 plane_channels: int = 32, plane_layers: int = 1, channel_base: int = 32768, channel_max: int = 512,
                 enc_channels: int = 512, enc_resolution: int = 8, encoder_depth: int = 50, encoder_stages: int = 4,
                 encoder_weights: str | None = None, inject_image_resolutions=(16, 32, 64, 128, 256),
                 cross_average: bool = True, use_mask: bool = False, back_encoder: str = "pat",
                 pat_dims=(64, 128, 320, 512), pat_depths=(2, 2, 6, 2), mask_base_channels: int = 32,
                 decoder_hidden: int = 64, decoder_features: int = 32, fusion_dim: int = 64,
                 img_resolution: int = 512, neural_rendering_resolution: int = 64, superresolution: str = "stylegan",
                 sr_channels=(256, 128),
                 sr_input_resolution: int | None = None, box_warp: float | None = None, rendering_kwargs: dict | None = None):
        super().__init__()
        cfg = dict(locals())
        for k in ("self", "__class__"):
            cfg.pop(k, None)
        cfg["encoder_weights"] = None   # checkpoints carry trained weights; the pretrained file is a training input
        fr = cameras.get_framing(framing)
        if sr_input_resolution is None:   # EG3D: 64..128 renders are resized to img/4 before two x2 blocks
            sr_input_resolution = next(r for r in (img_resolution // 4, img_resolution // 2, img_resolution)
                                       if r >= min(neural_rendering_resolution, img_resolution))
            cfg["sr_input_resolution"] = sr_input_resolution
        cfg["box_warp"] = box_warp = float(box_warp if box_warp is not None else fr.box)
        cfg["rendering_kwargs"] = {**DEFAULT_RENDERING, **(rendering_kwargs or {})}
        unknown = set(cfg["rendering_kwargs"]) - set(DEFAULT_RENDERING)
        if unknown:
            raise ValueError(f"unknown rendering_kwargs {sorted(unknown)}")
        if cfg["rendering_kwargs"]["superresolution_noise_mode"] not in SR_NOISE_MODES:
            raise ValueError(f"superresolution_noise_mode must be one of {SR_NOISE_MODES}, not "
                             f"{cfg['rendering_kwargs']['superresolution_noise_mode']!r}")
        if superresolution not in SUPERRESOLUTIONS:
            raise ValueError(f"superresolution must be one of {SUPERRESOLUTIONS}, not {superresolution!r}")
        if back_encoder not in ("pat", "resnet"):
            raise ValueError(f"back_encoder must be 'pat' or 'resnet', not {back_encoder!r}")
        self.config = _jsonable(cfg)
        self.rendering_kwargs = self.config["rendering_kwargs"]
        self.framing, self.z_dim, self.c_dim = framing, z_dim, c_dim
        self.cond_resolution, self.use_mask = cond_resolution, use_mask
        self.neural_rendering_resolution = neural_rendering_resolution
        self.img_resolution = img_resolution

        # imported here so the field and renderer work without the network modules loaded
        from training.encoders import MaskEncoder, PatchAggregationEncoder, ResNetEncoder
        from training.networks_stylegan2 import TriplaneBackbone
        from training.superresolution import SuperresolutionHybrid

        self.encoder = ResNetEncoder(depth=encoder_depth, out_channels=enc_channels, weights=encoder_weights,
                                     stages=encoder_stages)
        enc_stride = 32 if encoder_stages == 4 else 16     # every encoder gives the same feature-map size
        self.back_encoder = None
        if self.two_view and back_encoder == "pat":
            self.back_encoder = PatchAggregationEncoder(in_channels=3, out_channels=enc_channels,
                                                        dims=tuple(pat_dims), depths=tuple(pat_depths),
                                                        out_stride=enc_stride)
        self.mask_encoder = MaskEncoder(out_channels=enc_channels, base_channels=mask_base_channels,
                                        num_down=enc_stride.bit_length() - 1) if use_mask else None
        self.backbone = TriplaneBackbone(
            z_dim=z_dim, w_dim=w_dim, c_dim=c_dim, mapping_layers=mapping_layers,
            plane_resolution=plane_resolution, plane_channels=plane_channels, n_planes=3,
            plane_layers=plane_layers, channel_base=channel_base, channel_max=channel_max,
            cond_resolution=cond_resolution, enc_channels=enc_channels, enc_resolution=enc_resolution,
            inject_image_resolutions=list(inject_image_resolutions), cross_average=cross_average)
        self.field = TriplaneField(plane_channels, plane_layers, decoder_hidden, decoder_features, box_warp,
                                   self.fusion, fusion_dim)
        self.superresolution = None if superresolution == "none" else SuperresolutionHybrid(
            channels=decoder_features, img_resolution=img_resolution, input_resolution=sr_input_resolution,
            w_dim=w_dim, block_channels=tuple(sr_channels),
            use_noise=self.rendering_kwargs["superresolution_noise_mode"] == "random")
        object.__setattr__(self, "_render_fn", render_field)
        object.__setattr__(self, "_render_rays_fn", render_field_rays)

    @staticmethod
    def config_from_checkpoint(config: dict) -> dict:
        """A saved constructor config for this code version: generators saved before
        superresolution_noise_mode existed were built and trained with noise in the super-resolution."""
        rk = config.get("rendering_kwargs")
        if isinstance(rk, dict) and "superresolution_noise_mode" not in rk:
            config = {**config, "rendering_kwargs": {**rk, "superresolution_noise_mode": "random"}}
        return config

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        if (strict and self.fusion == "attention" and "field.fusion.query.0.weight" in state_dict
                and "field.fusion.geo.weight" not in state_dict):
            raise RuntimeError("weights of the earlier TriPlaneGenerator_v1 layout, whose density depended on the "
                               "view direction (one fused feature for density and colour); this layout decodes "
                               "density from a direction-blind geometry feature: retrain the model")
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # ------------------------------------------------------------ conditioning

    def _prep(self, img: torch.Tensor) -> torch.Tensor:
        if img.shape[-1] != self.cond_resolution or img.shape[-2] != self.cond_resolution:
            img = F.interpolate(img.float(), size=(self.cond_resolution,) * 2, mode="bilinear",
                                align_corners=False, antialias=True)
        return img

    def _mask(self, cond: dict, key: str) -> torch.Tensor:
        if key not in cond:
            raise ValueError(f"this generator was built with use_mask=True: cond needs {key!r}")
        return self._prep(cond[key])

    def _noise_mode(self) -> str:
        return "random" if self.training else "const"   # deterministic outputs in eval mode

    def _front_features(self, cond: dict, front: torch.Tensor) -> torch.Tensor:
        """Front encoder output, or the dataset's precomputed ``feat_front`` when it has the right channels."""
        feat = cond.get("feat_front")
        if feat is None:
            return self.encoder(front)
        if feat.shape[1] != self.config["enc_channels"]:
            raise ValueError(f"cond['feat_front'] has {feat.shape[1]} channels; this generator's encoder "
                             f"gives {self.config['enc_channels']}")
        return feat.to(front.dtype)

    def synthesize(self, cond: dict, z: torch.Tensor | None = None, c: torch.Tensor | None = None) -> dict:
        """Conditioning images -> {'planes': [B,3 or 6,L*C,R,R], 'ws': [B,num_ws,w_dim]}.

        ``z=None`` uses zeros (deterministic reconstruction); training passes random z.
        """
        front = self._prep(cond["front"])
        B = front.shape[0]
        if z is None:
            z = torch.zeros(B, self.z_dim, device=front.device)
        c = c if self.c_dim > 0 else None
        if not self.two_view:
            feat = self._front_features(cond, front)
            if self.mask_encoder is not None:
                feat = feat + self.mask_encoder(self._mask(cond, "front_mask"))
            planes, ws = self.backbone(z, front, feat, c=c, noise_mode=self._noise_mode())
            return {"planes": planes, "ws": ws}
        if "back" not in cond:
            raise ValueError("two-view generators need cond['back']")
        back = self._prep(cond["back"])
        if self.back_encoder is None:       # ablation: one ResNet for both views
            feat = self.encoder(torch.cat([front, back]))
        else:
            feat = torch.cat([self._front_features(cond, front), self.back_encoder(back)])
        if self.mask_encoder is not None:
            feat = feat + self.mask_encoder(torch.cat([self._mask(cond, "front_mask"), self._mask(cond, "back_mask")]))
        # one backbone pass for both views: the same network, the same z
        planes, ws = self.backbone(torch.cat([z, z]), torch.cat([front, back]), feat,
                                   c=None if c is None else torch.cat([c, c]), noise_mode=self._noise_mode())
        # [B,6,...]: front planes then back planes, joined as 4-D images so that NHWC planes stay NHWC
        flat = planes.flatten(1, 2)
        planes = torch.cat([flat[:B], flat[B:]], 1).unflatten(1, (2 * planes.shape[1], planes.shape[2]))
        return {"planes": planes, "ws": ws[:B]}

    # ------------------------------------------------------------ rendering

    def _render_kw(self, overrides: dict) -> dict:
        unknown = set(overrides) - RENDER_OVERRIDES
        if unknown:
            raise TypeError(f"unknown rendering options {sorted(unknown)}")
        kw = {**self.rendering_kwargs, **overrides}
        start, end = vr.resolve_ray_range(kw, self.framing)
        return kw, start, end

    def render(self, planes, c: torch.Tensor, neural_rendering_resolution: int | None = None,
               ws: torch.Tensor | None = None, superresolve: bool = True, **render_kw) -> dict:
        """Render planes from cameras c [B,25]; super-resolves when ws is known (from synthesize)."""
        planes, ws_p = _planes_and_ws(planes)
        ws = ws if ws is not None else ws_p
        n = neural_rendering_resolution or self.neural_rendering_resolution
        kw, start, end = self._render_kw(render_kw)
        noise, roi = kw.pop("density_noise"), kw.pop("roi", None)
        planes = planes.float()      # once per render (lookups are fp32; bf16 planes from autocast)
        perturb = kw.pop("perturb", self.training)

        # without gradients (evaluation, inference) the rays are marched in chunks: memory stays bounded at
        # any resolution and batch (8 views at 256 px took 18 GB in one piece on the CPU)
        march = {} if torch.is_grad_enabled() else {"chunk": INFERENCE_RAY_CHUNK}
        out = self._render_fn(self.field, planes, c, n, noise, roi, box_warp=self.field.box_warp,
                              ray_start=start, ray_end=end, depth_resolution=kw["depth_resolution"],
                              depth_resolution_importance=kw["depth_resolution_importance"],
                              clip_to_box=kw["clip_to_box"], white_back=kw["white_back"], perturb=perturb,
                              **march)
        feature_image = out["features"] * 2 - 1
        rgb = feature_image[:, :3]
        result = {"image_raw": rgb, "image_features": feature_image, "image_depth": out["depth"],
                  "image_alpha": out["alpha"], "image_xyz": out["xyz"], "planes": planes}
        if superresolve and ws is not None and self.superresolution is not None:
            result["image"] = self.superresolution(rgb, feature_image, ws, noise_mode=self._noise_mode())
        else:
            result["image"] = F.interpolate(rgb, size=(self.img_resolution,) * 2, mode="bilinear",
                                            align_corners=False)
        return result

    def render_rays(self, planes, origins: torch.Tensor, dirs: torch.Tensor, **render_kw) -> dict:
        """March arbitrary rays [B,R,3] (world origins, unit directions) through the field of ``planes``: the
        renderer of ``render`` without the image grid or the super-resolution, for losses on rays sampled at
        full image resolution.  Returns rgb [B,R,3] in [-1,1] (on white where the rendering composites on
        white), alpha [B,R], depth [B,R] and xyz [B,R,3]."""
        planes, _ = _planes_and_ws(planes)
        kw, start, end = self._render_kw(render_kw)
        noise, roi = kw.pop("density_noise"), kw.pop("roi", None)
        perturb = kw.pop("perturb", self.training)
        out = self._render_rays_fn(self.field, planes.float(), origins, dirs, noise, roi,
                                   box_warp=self.field.box_warp, ray_start=start, ray_end=end,
                                   depth_resolution=kw["depth_resolution"],
                                   depth_resolution_importance=kw["depth_resolution_importance"],
                                   clip_to_box=kw["clip_to_box"], white_back=kw["white_back"], perturb=perturb)
        return {"rgb": out["features"][..., :3] * 2 - 1, "alpha": out["alpha"], "depth": out["depth"],
                "xyz": out["xyz"]}

    def forward(self, cond: dict, c: torch.Tensor, z: torch.Tensor | None = None,
                neural_rendering_resolution: int | None = None, **render_kw) -> dict:
        syn = self.synthesize(cond, z)
        out = self.render(syn, c, neural_rendering_resolution, **render_kw)
        out["ws"] = syn["ws"]
        return out

    # ------------------------------------------------------------ point queries

    def sample_density(self, planes, xyz: torch.Tensor, view_dirs: torch.Tensor | None = None) -> torch.Tensor:
        """Density [B,N,1] at framed points, a function of position only (``view_dirs`` is accepted for
        symmetry with sample_color and ignored)."""
        planes, _ = _planes_and_ws(planes)
        return self.field.density(planes, xyz)

    def sample_color(self, planes, xyz: torch.Tensor, view_dirs: torch.Tensor | None = None) -> torch.Tensor:
        """Colour [B,N,3] in [0,1] at framed points seen along view_dirs (ray directions)."""
        planes, _ = _planes_and_ws(planes)
        dirs = default_view_dirs(xyz) if view_dirs is None else view_dirs
        return self.field(planes, xyz, dirs)[1][..., :3].clamp(0, 1)

    def compile_parts(self, channels_last: bool = True, **compile_kw) -> "_Generator":
        """torch.compile the encoders, the backbone, the super-resolution (in place: state_dict keys and
        checkpoints unchanged) and the ray march.  First derivatives only, as training needs.  Pair
        with set_compiled_arithmetic(True).  ``channels_last``: the backbone and the super-resolution
        compute in NHWC, gradients included (networks_stylegan2.set_channels_last, CHANNELS_LAST_GRADS):
        forward+backward at EG3D's sizes on the H100, super-resolution 45.5 -> 40.2 ms, backbone 37.3 ->
        32.2 ms); the planes come out NHWC, as the Triton lookup reads them."""
        if channels_last:
            from training.networks_stylegan2 import set_channels_last
            for m in (self.backbone, self.superresolution):     # superresolution="none": no such network
                if m is not None:
                    set_channels_last(m)
        for m in (self.encoder, self.back_encoder, self.mask_encoder, self.backbone, self.superresolution):
            if m is not None:
                m.compile(**compile_kw)
        return self.compile_renderer(**compile_kw)

    def compile_renderer(self, **compile_kw) -> "_Generator":
        """torch.compile the ray march (render_field: rays, samples, field lookups + fusion + decoder,
        compositing) as one graph, static shapes (a new neural rendering resolution compiles its own graph).
        The generator needs only first derivatives (R1 differentiates D alone), so this is safe in training."""
        object.__setattr__(self, "_render_fn", torch.compile(render_field, dynamic=False, **compile_kw))
        object.__setattr__(self, "_render_rays_fn", torch.compile(render_field_rays, dynamic=False, **compile_kw))
        return self

    # the compiled march lives outside nn.Module's registry (no state_dict keys) and is not copied or
    # pickled: copies (EMA) start eager and may be compiled again
    def __getstate__(self):
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
        state = dict(state)
        state.pop("_render_fn", None)
        state.pop("_render_rays_fn", None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        object.__setattr__(self, "_render_fn", render_field)
        object.__setattr__(self, "_render_rays_fn", render_field_rays)


class TriPlaneGenerator(_Generator):
    """PAniC-3D: one front image -> triplane."""


class TriPlaneGenerator_v0(_Generator):
    """NOVA-3D front + back, concatenation fusion (direction-blind)."""
    two_view = True
    fusion = "concat"


class TriPlaneGenerator_v1(_Generator):
    """NOVA-3D front + back, direction-aware attention fusion."""
    two_view = True
    fusion = "attention"


def set_compiled_arithmetic(compiled: bool):
    """Pick the arithmetic variants that run fastest with (True) or without torch.compile; the numbers are
    the same either way (tested).  Compiled: FIR filters as separate passes, which compile fuses, before
    convs of half the FLOPs, and the fused Triton triplane lookup (the gather lookup where Triton cannot
    run); eager: filters folded into the convs and grid_sample.  Measured on the H100 in docs/results.md
    (Model throughput).  Returns a function that restores the previous setting."""
    from training import networks_stylegan2 as nets
    old_fold, old_lookup = nets.set_fold(not compiled), vr.LOOKUP
    vr.LOOKUP = "triton" if compiled else "grid_sample"     # "triton": "gather" where Triton cannot run

    def restore():
        nets.set_fold(**old_fold)
        vr.LOOKUP = old_lookup
    return restore


GENERATORS = {c.__name__: c for c in (TriPlaneGenerator, TriPlaneGenerator_v0, TriPlaneGenerator_v1)}

# ---------------------------------------------------------------- presets: _configs/models/<name>.toml

class _Presets(Mapping):
    """name -> {'class', 'kwargs'} of the generator presets in _configs/models (training.configs)."""

    def __getitem__(self, name):
        from training import configs
        if name not in configs.model_presets():
            raise KeyError(name)
        p = configs.model_preset(name)
        return {"class": p["class"], "kwargs": p["kwargs"]}

    def __iter__(self):
        from training import configs
        return iter(configs.model_presets())

    def __len__(self):
        return len(list(iter(self)))


PRESETS = _Presets()


def build_preset(name: str, variant: str | None = None, **overrides) -> _Generator:
    """Instantiate a preset (optionally as another variant and with keyword overrides)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: expected one of {sorted(PRESETS)}")
    p = PRESETS[name]
    kwargs = copy.deepcopy(p["kwargs"])
    rk = {**kwargs.pop("rendering_kwargs", {}), **overrides.pop("rendering_kwargs", {})}
    kwargs.update(overrides)
    return GENERATORS[variant or p["class"]](rendering_kwargs=rk, **kwargs)
