"""Train the line-removal U-Net on (ortho_lines, ortho) render pairs.

    python -m _train.img2img.train --renderset synth_body --out _train/img2img/runs/lines.pt \
        [--steps 2000] [--crop 128] [--batch 8] [--data-root DIR]

Characters are split by id hash: 1 in 10 is held out and its L1 to the clean
render is reported before (lined input) and after (network output).
"""
from __future__ import annotations

import argparse
import json
import time
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from _train.img2img.model import LineRemovalUNet
from training import paths
from training.errors import UserError, cli_main, fail, load_image
from training.images import on_white

VIEWS = ("front", "back", "left", "right")


def on_white_file(path) -> np.ndarray:
    return on_white(load_image(path, "RGBA"))


def find_pairs(root: Path, renderset: str) -> list[tuple[str, Path, Path]]:
    base = paths.renders_dir(root, renderset)
    lined = sorted((base / "ortho_lines").glob("*/*/*.png"))
    if not lined:
        raise fail(base / "ortho_lines", "no line renders (render with `python -m _scripts.data.render ... --lines`)")
    pairs = []
    for p in lined:
        clean = base / "ortho" / p.relative_to(base / "ortho_lines")
        if clean.exists() and p.stem in VIEWS:
            pairs.append((p.parent.name, p, clean))
    return pairs


def is_held_out(char_id: str) -> bool:
    return zlib.crc32(char_id.encode()) % 10 == 0


def held_out_ids(ids: list[str]) -> set[str]:
    """1 in 10 characters by id hash; at least one (the smallest hash) so the score is never on training data."""
    held = {i for i in ids if is_held_out(i)}
    return held or {min(ids, key=lambda i: zlib.crc32(i.encode()))}


def load_pairs(pairs) -> tuple[torch.Tensor, torch.Tensor]:
    x = np.stack([on_white_file(p) for _, p, _ in pairs])
    y = np.stack([on_white_file(c) for _, _, c in pairs])
    to_t = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2) * 2 - 1
    return to_t(x), to_t(y)


@torch.no_grad()
def held_out_l1(net: LineRemovalUNet, x: torch.Tensor, y: torch.Tensor, batch: int = 8) -> tuple[float, float]:
    """Mean L1 (in [0,1] units) of the lined input and of the network output to the clean render."""
    net.eval()
    pred = torch.cat([net(x[i:i + batch]) for i in range(0, len(x), batch)])
    return float((x - y).abs().mean() / 2), float((pred - y).abs().mean() / 2)


def train(root: Path, renderset: str, out: Path, steps: int = 2000, crop: int = 128, batch: int = 8,
          lr: float = 2e-3, channels: int = 32, seed: int = 0, device: str = "cpu", log=print,
          levels: int = 3) -> dict:
    torch.manual_seed(seed)
    pairs = find_pairs(root, renderset)
    held = held_out_ids(sorted({p[0] for p in pairs}))
    train_pairs = [p for p in pairs if p[0] not in held]
    test_pairs = [p for p in pairs if p[0] in held]
    if not train_pairs:
        raise fail(paths.renders_dir(root, renderset), "too few characters to hold one out")
    xs, ys = load_pairs(train_pairs)
    xt, yt = load_pairs(test_pairs)
    res = xs.shape[-1]
    crop = min(crop, res)
    net = LineRemovalUNet(channels=channels, levels=levels).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(seed)
    t0 = time.time()
    for step in (bar := tqdm(range(steps), desc="line removal", disable=None)):
        idx = torch.randint(len(xs), (batch,), generator=g)
        i, j = torch.randint(res - crop + 1, (2,), generator=g).tolist()
        x, y = xs[idx, :, i:i + crop, j:j + crop], ys[idx, :, i:i + crop, j:j + crop]
        if torch.rand((), generator=g) < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        x, y = x.to(device), y.to(device)
        net.train()
        loss = F.l1_loss(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(l1=f"{loss.item():.4f}")
    before, after = held_out_l1(net.cpu(), xt, yt)
    stats = {"held_out_characters": len({p[0] for p in test_pairs}), "train_images": len(xs),
             "l1_lined": before, "l1_output": after, "steps": steps, "seconds": time.time() - t0}
    from training.checkpoint import save_checkpoint
    save_checkpoint(out, {"line_removal": net}, step=steps, kimg=steps * batch / 1000,
                    training_config={"renderset": renderset, "resolution": res, "crop": crop, "batch": batch, "lr": lr,
                                     "channels": channels, "levels": levels, **stats})
    log(json.dumps(stats))
    return stats


@cli_main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--renderset", required=True)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--levels", type=int, default=3, help="U-Net down-sampling levels (crop divisible by 2**levels)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    paths.add_data_root_arg(ap)
    a = ap.parse_args(argv)
    if a.steps < 1 or a.crop % 2 ** a.levels:
        raise UserError(f"--steps must be >= 1 and --crop a multiple of {2 ** a.levels}")
    train(paths.data_root(a.data_root), a.renderset, a.out, a.steps, a.crop, a.batch, a.lr, a.channels, a.seed, a.device,
          levels=a.levels)


if __name__ == "__main__":
    main()
