"""A tiny two-view generator fitted in a few dozen CPU steps to a toy character, and its front/back images:
a checkpoint whose reconstructions have a real silhouette (tests of the pipeline and the web demo)."""
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tests.test_dataprep import GOOD, raycast
from training import cameras
from training.infer import artwork
from training.checkpoint import save_checkpoint
from training.triplane import build_preset


def toy_images(folder: Path, res: int = 96) -> tuple[Path, Path]:
    """Ortho front and back ray-cast renders (RGBA) of the toy body-framed character."""
    fr = cameras.get_framing("body")
    views = {v.name: v for v in cameras.view_set("ortho", fr)}
    out = []
    for name in ("front", "back"):
        rgba, _ = raycast(views[name], res, GOOD)
        p = Path(folder) / f"toy_{name}.png"
        Image.fromarray(rgba).save(p)
        out.append(p)
    return out[0], out[1]


def fit_demo_model(path: Path, front: Path, back: Path, steps: int = 60, res: int = 24, seed: int = 0,
                   lr: float = 0.002) -> Path:
    """Fit a tiny TriPlaneGenerator_v1 (body framing, every parameter: L1 on the raw and super-resolved
    images, alpha L2; lr 0.002: at 0.005 the density of this toy fit can die within ten steps, softplus(x - 1)
    saturating at zero) so that, conditioned on the prepared ``front``/``back`` (as _scripts.infer prepares
    them), it renders the toy character; save it."""
    torch.manual_seed(seed)
    G = build_preset("tiny", framing="body")
    fr = cameras.get_framing("body")
    views = cameras.view_set("ortho", fr) + cameras.view_set("rgb", fr, "toy", 0)
    tgt, alp = [], []
    for v in views:
        rgba, _ = raycast(v, res, GOOD)
        a = torch.from_numpy(rgba[..., 3:] / 255.0).float()
        tgt.append((torch.from_numpy(rgba[..., :3] / 255.0).float() * a + (1 - a)).permute(2, 0, 1))
        alp.append(a.permute(2, 0, 1))
    tgt, alp = torch.stack(tgt) * 2 - 1, torch.stack(alp)
    cams = cameras.as_tensor(views)
    cond = {}
    for k, p in (("front", front), ("back", back)):
        img, mask = artwork.to_tensor(artwork.prepare(p, "body", 512).rgba, G.cond_resolution)
        cond[k], cond[f"{k}_mask"] = img[None], mask[None]
    G.eval()            # eval-mode noise: the planes are the ones inference will synthesise
    opt = torch.optim.Adam(G.parameters(), lr=lr)
    for _ in range(steps):
        idx = torch.randint(0, len(views), (3,))
        planes = G.synthesize(cond)
        out = G.render({k: v.expand(3, *v.shape[1:]) for k, v in planes.items()}, cams[idx], res, perturb=True)
        big = torch.nn.functional.interpolate(tgt[idx], size=out["image"].shape[-2:], mode="bilinear",
                                              align_corners=False)
        loss = (out["image_raw"] - tgt[idx]).abs().mean() + (out["image"] - big).abs().mean() \
            + 10 * ((out["image_alpha"] - alp[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return save_checkpoint(path, {"G_ema": G.eval()}, step=steps, kimg=steps / 1000)
