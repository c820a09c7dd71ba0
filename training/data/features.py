"""Precomputed image-encoder features of a rendered set (``ortho_katepca_chonk``): the encoder, its
identity record (training refuses random-init features and mixing encoders) and the feature job.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np

from training import paths
from training.errors import UserError, fail, load_image, save_json_atomic, atomic_write
from training.images import on_white
from training.data.catalog import FEATURE_DTYPE, load_json


FEATURE_INFO = "feature_info.json"


# ------------------------------------------------------------------ features

def feature_dir(root, renderset: str) -> Path:
    return paths.renders_dir(root, renderset) / FEATURE_DTYPE


def feature_path(root, renderset: str, char_id: str, view: str) -> Path:
    return paths.render_path(root, renderset, FEATURE_DTYPE, char_id, view).with_suffix(".pt")


def load_feature_info(root, renderset: str) -> dict | None:
    p = feature_dir(root, renderset) / FEATURE_INFO
    return load_json(p) if p.exists() else None


def file_digest(path, n: int = 1 << 20) -> str:
    """sha256 of a file (weights identity for the feature marker)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(n):
            h.update(chunk)
    return h.hexdigest()[:16]


def weights_identity(weights: str | None, random_init: bool) -> str:
    if random_init:
        return "random-init"
    if weights is None:
        raise UserError("features need encoder weights: pass --weights PATH or --weights imagenet "
                        "(or --random-init to use an untrained encoder on purpose)")
    if weights == "imagenet":
        return "imagenet"
    p = Path(weights)
    if not p.is_file():
        raise fail(p, "encoder weights not found (download them, or pass --weights imagenet)")
    return f"file:{p.name}:sha256={file_digest(p)}"


def check_feature_info(existing: dict | None, info: dict) -> None:
    """Refuse to add features of another encoder to a folder (mixing would corrupt training)."""
    if existing is None:
        return
    keys = ("encoder", "weights", "random_init", "seed", "size", "layer")
    diff = [k for k in keys if existing.get(k) != info.get(k)]
    if diff:
        were = ", ".join(f"{k}={existing.get(k)!r}" for k in diff)
        raise UserError(f"{FEATURE_DTYPE}/{FEATURE_INFO}: existing features were made with {were}; "
                        "pass --overwrite to recompute them all")


def load_cond_image(path, size: int | None = None):
    """An ortho RGBA render as a [3,H,W] tensor on white in [-1,1] (area-resized to ``size``)."""
    import torch
    im = load_image(path, "RGBA")
    t = torch.from_numpy(on_white(np.asarray(im))).permute(2, 0, 1)
    if size and t.shape[-1] != size:
        t = torch.nn.functional.interpolate(t[None], size=(size, size), mode="area")[0]
    return t * 2.0 - 1.0


@dataclasses.dataclass
class FeatureJob:
    views: tuple = ("front", "back")
    size: int = 256
    batch: int = 8
    mirror: bool = True             # also store features of the mirrored image (<view>_mirror.pt)
    overwrite: bool = False


def generate_features(root, renderset: str, ids, encode, info: dict, job: FeatureJob,
                      device="cpu", progress: bool = True) -> dict:
    """Run ``encode([B,3,S,S] in [-1,1]) -> [B,C,h,w]`` on the ortho views; save fp16 tensors.

    ``info`` describes the encoder and goes to ``feature_info.json`` (written
    first, so a killed run leaves a consistently labelled folder).
    """
    import torch
    from tqdm import tqdm
    fdir = feature_dir(root, renderset)
    existing = None if job.overwrite else load_feature_info(root, renderset)
    info = dict(info, size=job.size, views=list(job.views), mirror=job.mirror, dtype="float16")
    check_feature_info(existing, info)
    info = dict(existing or {}, **info)       # keeps the recorded feature shape on resume
    save_json_atomic(fdir / FEATURE_INFO, info)

    todo = []   # (char_id, view, mirrored)
    skipped = 0
    for cid in ids:
        for v in job.views:
            for m in ((False, True) if job.mirror else (False,)):
                out = feature_path(root, renderset, cid, v + ("_mirror" if m else ""))
                if out.exists() and not job.overwrite:
                    skipped += 1
                else:
                    todo.append((cid, v, m))
    errors, written, shape = [], 0, None
    bar = tqdm(total=len(todo), desc=f"features {renderset}", unit="view", disable=not progress)
    for i in range(0, len(todo), job.batch):
        chunk, imgs = [], []
        for cid, v, m in todo[i:i + job.batch]:
            try:
                img = load_cond_image(paths.render_path(root, renderset, "ortho", cid, v), job.size)
            except UserError as e:
                errors.append(str(e))
                continue
            imgs.append(img.flip(-1) if m else img)
            chunk.append((cid, v, m))
        if chunk:
            with torch.no_grad():
                feats = encode(torch.stack(imgs).to(device)).float().cpu()
            shape = tuple(feats.shape[1:])
            for (cid, v, m), f in zip(chunk, feats):
                out = feature_path(root, renderset, cid, v + ("_mirror" if m else ""))
                with atomic_write(out) as fh:
                    torch.save(f.half().clone(), fh)
                written += 1
        bar.update(len(todo[i:i + job.batch]))
    bar.close()
    if shape is not None and info.get("shape") != list(shape):
        save_json_atomic(fdir / FEATURE_INFO, dict(info, shape=list(shape)))
    return {"written": written, "skipped": skipped, "errors": errors, "shape": shape}




def build_feature_encoder(weights: str | None = None, random_init: bool = False, depth: int = 50,
                          layer: str = "trunk", out_channels: int = 512, seed: int = 0, device="cpu"):
    """The model's image encoder (``training.encoders.ResNetEncoder``) for precomputing features.

    ``layer='trunk'``: the frozen ResNet layer4 output (2048 channels for
    ResNet-50, 8x8 at 256 px: PAniC-3D's precomputed features); ``'out'``: the
    encoder's full output after its 1x1 projection (meaningful with an encoder
    state dict, e.g. taken from a trained model).  Returns (module, info).
    """
    import torch
    from training.encoders import ResNetEncoder
    if layer not in ("trunk", "out"):
        raise UserError(f"--layer: expected trunk or out, got {layer!r}")
    if random_init and weights is not None:
        raise UserError("--random-init and --weights exclude each other")
    ident = weights_identity(weights, random_init)
    torch.manual_seed(seed)             # random init must be reproducible to be resumable
    enc = ResNetEncoder(depth=depth, out_channels=out_channels, weights=None if random_init else weights)
    if layer == "trunk":
        enc.proj = torch.nn.Identity()
    enc = enc.eval().requires_grad_(False).to(device)
    info = {"encoder": f"training.encoders.ResNetEncoder(depth={depth})", "layer": layer,
            "out_channels": out_channels if layer == "out" else None, "weights": ident,
            "random_init": bool(random_init), "seed": seed if random_init else None}
    return enc, info
