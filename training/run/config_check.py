"""Start-up checks of a training configuration: impossible values and a generator framed unlike the data.

Each problem is one ``UserError`` naming the flag, before any folder is made or any network built
(``validate``), or as soon as the networks and data exist (``check_framing``).
"""
from __future__ import annotations

import dataclasses
import math

from training.errors import UserError

# field: (lowest, lowest allowed itself?, highest or None, highest allowed itself?)
_RANGES = {
    "batch": (1, True, None, False), "kimg": (0, False, None, False), "tick_kimg": (0, False, None, False),
    "snap_ticks": (1, True, None, False), "snap_keep": (0, True, None, False),
    "preview_ticks": (1, True, None, False), "preview_count": (0, True, None, False),
    "workers": (0, True, None, False), "seed": (0, True, 2 ** 32 - 1, True),
    "resolution": (0, True, None, False), "cond_resolution": (0, True, None, False),
    "neural_rendering_resolution": (0, True, None, False), "mirror_prob": (0, True, 1, True),
    "glr": (0, False, None, False), "dlr": (0, False, None, False), "beta1": (0, True, 1, False),
    "beta2": (0, True, 1, False), "eps": (0, False, None, False), "ema_rampup": (0, True, None, False),
    "minutes": (0, True, None, False), "bn_recalibrate": (0, True, None, False),
}
_LOSS_RANGES = {
    "r1_interval": (0, True, None, False), "tv_interval": (0, True, None, False),
    "tv_points": (1, True, None, False), "alpha_band_px": (0, True, None, False),
    "blur_fade_kimg": (0, True, None, False), "gan_start_kimg": (0, True, None, False),
}
_LOSS_NON_NEGATIVE = ("gan_weight", "r1_gamma", "r1_gamma_mask", "blur_init_sigma", "lpips_weight", "l1_weight",
                      "alpha_weight", "depth_weight", "recon_sr_weight", "recon_raw_weight", "tv_weight",
                      "tv_perturb")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check(name: str, value, lo, lo_ok, hi, hi_ok) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{_flag(name)} {value}: not a finite number")
    bad = value < lo or (value == lo and not lo_ok) or \
        (hi is not None and (value > hi or (value == hi and not hi_ok)))
    if bad:
        want = (f"at least {lo}" if lo_ok else f"more than {lo}") if hi is None else \
            f"in {'[' if lo_ok else '('}{lo}, {hi}{']' if hi_ok else ')'}"
        raise UserError(f"{_flag(name)} {value}: expected {want}")


def validate(cfg) -> None:
    """Impossible values of TrainConfig / LossConfig -> UserError naming the flag."""
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if f.name in _RANGES:
            _check(f.name, v, *_RANGES[f.name])
        elif isinstance(v, float) and not math.isfinite(v):
            _check(f.name, v, 0, True, None, False)
    lc = cfg.loss
    for f in dataclasses.fields(lc):
        v = getattr(lc, f.name)
        if f.name in _LOSS_RANGES:
            _check(f.name, v, *_LOSS_RANGES[f.name])
        elif f.name in _LOSS_NON_NEGATIVE:
            _check(f.name, v, 0, True, None, False)
    from training.loss import parse_view_weights
    weights = parse_view_weights(lc.view_weights)
    for name, w in weights.items():
        if not math.isfinite(w) or w < 0:
            raise UserError(f"--view-weights {lc.view_weights}: weight {w} of {name!r} is not a number >= 0")
    views = [v.strip() for v in cfg.ortho_views.split(",") if v.strip()]
    if not views:
        raise UserError("--ortho-views: no view given (e.g. front,back,left,right)")
    unknown = sorted(n for n, w in weights.items() if w > 0 and n not in views)
    if unknown:
        raise UserError(f"--view-weights {lc.view_weights}: {', '.join(unknown)} not among --ortho-views "
                        f"{cfg.ortho_views}")
    if cfg.snap_keep_best and not (cfg.snap_keep_best.startswith("val/") and cfg.val_count > 0):
        raise UserError(f"--snap-keep-best {cfg.snap_keep_best}: needs a held-out metric (val/psnr_front, "
                        "val/psnr_back, val/psnr_side, val/psnr_rgb) and --val-count > 0")


def data_framing(ds) -> str | None:
    """The framing the dataset's characters were rendered with (their meta json, else the renderset's)."""
    from training.data import catalog
    if not getattr(ds, "ids", None):
        return None
    meta = catalog.load_char_meta(ds.root, ds.renderset, ds.ids[0])
    return catalog.framing_of(meta, getattr(ds, "rs_meta", None))


def check_framing(G, ds) -> None:
    """A generator framed for heads cannot learn body renders (and evaluation refuses the pair later)."""
    from training import paths
    g = (getattr(G, "config", None) or {}).get("framing")
    r = data_framing(ds)
    if g and r and g != r:
        raise UserError(f"{paths.renders_dir(ds.root, ds.renderset)}: rendered with {r} framing but the generator "
                        f"is built for {g} framing; pass --g-kwargs '{{\"framing\": \"{r}\"}}' (keep its other "
                        f"overrides) or train on a renderset rendered with --framing {g}")
