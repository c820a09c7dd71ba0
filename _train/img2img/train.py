"""Train the line-removal U-Net on (ortho_lines, ortho) render pairs.

    python -m _train.img2img.train --renderset synth_body --out _train/img2img/runs/lines.pt \\
        [--steps 2000] [--crop 128] [--batch 8] [--data-root DIR]

Characters are split by id hash: 1 in 10 is held out and scored before (lined
input) and after (network output): the L1 to the clean render over the image,
and over the dark pixels that are not lines (black bows, eyes, dark clothes),
which a line remover must keep.  Render the set from characters with dark
parts (`python -m _scripts.data.synth --dark-parts 0.5`) so that it learns to.
Documentation: docs/inference.md ("Line removal").
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from _train.img2img.model import LineRemovalUNet
from training import paths
from training.errors import UserError, cli_main, fail, load_image
from training.images import on_white

VIEWS = ("front", "back", "left", "right")
LINE_TOL = 4 / 255          # a pixel where the lined render differs from the clean one by more is a line pixel
DARK = 0.25                 # luminance (on white, [0,1]) below which a clean pixel is dark
DARK_WEIGHT = 4.0           # loss weight of dark non-line pixels (the remover's failure: it paints them white)


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


def load_pairs(pairs, progress=None) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for _, p, c in pairs:
        xs.append(on_white_file(p))
        ys.append(on_white_file(c))
        if progress is not None:
            progress()
    to_t = lambda a: torch.from_numpy(np.stack(a)).permute(0, 3, 1, 2) * 2 - 1
    return to_t(xs), to_t(ys)


def luminance(img: torch.Tensor) -> torch.Tensor:
    """[B,3,H,W] in [-1,1] -> [B,1,H,W] luminance in [0,1] (Rec. 601)."""
    w = torch.tensor([0.299, 0.587, 0.114], dtype=img.dtype, device=img.device).view(1, 3, 1, 1)
    return ((img + 1) / 2 * w).sum(1, keepdim=True)


def masks(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(line, dark) boolean [B,1,H,W] masks of a lined image x and its clean render y: line pixels are where
    they differ, grown by one pixel (the anti-aliased edge of a line); dark pixels are dark in y and no line."""
    line = ((x - y).abs().amax(1, keepdim=True) > 2 * LINE_TOL)
    line = F.max_pool2d(line.float(), 3, 1, 1) > 0
    dark = (luminance(y) < DARK) & ~line
    return line, dark


def loss_weights(x: torch.Tensor, y: torch.Tensor, dark_weight: float) -> torch.Tensor:
    """Per-pixel L1 weights: 1, and ``dark_weight`` on dark non-line pixels; mean 1 over the batch."""
    _, dark = masks(x, y)
    w = 1.0 + (dark_weight - 1.0) * dark.float()
    return w / w.mean()


@torch.no_grad()
def held_out_scores(net: LineRemovalUNet, x: torch.Tensor, y: torch.Tensor, batch: int = 8) -> dict:
    """L1 (in [0,1] units) to the clean render, of the lined input and of the network output: over the whole
    image, and over the dark pixels that are not lines (``dark``: the input is right there, any change is
    the remover's error); ``dark_removed``: share of those pixels the output lightens by more than 0.25."""
    net.eval()
    pred = torch.cat([net(x[i:i + batch]) for i in range(0, len(x), batch)])
    _, dark = masks(x, y)
    n = int(dark.sum())
    err = (pred - y).abs().mean(1, keepdim=True) / 2
    out = {"l1_lined": float((x - y).abs().mean() / 2), "l1_output": float((pred - y).abs().mean() / 2),
           "dark_pixels": n, "dark_fraction": n / dark.numel()}
    if n:
        out["l1_dark_lined"] = float(((x - y).abs().mean(1, keepdim=True) / 2)[dark].mean())
        out["l1_dark_output"] = float(err[dark].mean())
        out["dark_removed"] = float(((luminance(pred) - luminance(y)) > 0.25)[dark].float().mean())
    return out


def held_out_l1(net: LineRemovalUNet, x: torch.Tensor, y: torch.Tensor, batch: int = 8) -> tuple[float, float]:
    """Mean L1 (in [0,1] units) of the lined input and of the network output to the clean render."""
    s = held_out_scores(net, x, y, batch)
    return s["l1_lined"], s["l1_output"]


class Progress:
    """A tqdm bar on a terminal; elsewhere (a log file, a pipe) a line every ``every`` seconds and at the end."""

    def __init__(self, total: int, desc: str, enabled: bool = True, every: float = 30.0, stream=None):
        self.total, self.desc, self.every = total, desc, every
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.n, self.t0, self.last, self.post = 0, time.time(), time.time(), ""
        self.bar = None
        if enabled and self.stream.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=desc, file=self.stream, dynamic_ncols=True)

    def update(self, n: int = 1, **post) -> None:
        self.n += n
        if post:
            self.post = " ".join(f"{k} {v}" for k, v in post.items())
        if self.bar is not None:
            self.bar.update(n)
            if post:
                self.bar.set_postfix(post, refresh=False)
        elif self.enabled and (time.time() - self.last >= self.every or self.n >= self.total):
            self.last = time.time()
            el = self.last - self.t0
            eta = el / self.n * (self.total - self.n) if self.n else 0.0
            print(f"{self.desc}: {self.n}/{self.total} ({100 * self.n / max(self.total, 1):.0f}%) {self.post} "
                  f"{el:.0f} s, {eta:.0f} s left", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def train(root: Path, renderset: str, out: Path, steps: int = 2000, crop: int = 128, batch: int = 8,
          lr: float = 2e-3, channels: int = 32, seed: int = 0, device: str = "cpu", log=print,
          levels: int = 3, dark_weight: float = DARK_WEIGHT, progress: bool = True) -> dict:
    torch.manual_seed(seed)
    pairs = find_pairs(root, renderset)
    held = held_out_ids(sorted({p[0] for p in pairs}))
    train_pairs = [p for p in pairs if p[0] not in held]
    test_pairs = [p for p in pairs if p[0] in held]
    if not train_pairs:
        raise fail(paths.renders_dir(root, renderset), "too few characters to hold one out")
    bar = Progress(len(pairs), "line removal: loading", progress, every=10.0)
    xs, ys = load_pairs(train_pairs, bar.update)
    xt, yt = load_pairs(test_pairs, bar.update)
    bar.close()
    res = xs.shape[-1]
    crop = min(crop, res)
    net = LineRemovalUNet(channels=channels, levels=levels).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(seed)
    t0 = time.time()
    bar = Progress(steps, "line removal", progress)
    for step in range(steps):
        idx = torch.randint(len(xs), (batch,), generator=g)
        i, j = torch.randint(res - crop + 1, (2,), generator=g).tolist()
        x, y = xs[idx, :, i:i + crop, j:j + crop], ys[idx, :, i:i + crop, j:j + crop]
        if torch.rand((), generator=g) < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        x, y = x.to(device), y.to(device)
        net.train()
        w = loss_weights(x, y, dark_weight) if dark_weight != 1.0 else 1.0
        loss = ((net(x) - y).abs() * w).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.update(1, **({"l1": f"{loss.item():.4f}"} if step % 10 == 0 or step == steps - 1 else {}))
    bar.close()
    scores = held_out_scores(net.cpu(), xt, yt)
    stats = {"held_out_characters": len({p[0] for p in test_pairs}), "train_images": len(xs), **scores,
             "steps": steps, "dark_weight": dark_weight, "seconds": time.time() - t0}
    from training.checkpoint import save_checkpoint
    save_checkpoint(out, {"line_removal": net}, step=steps, kimg=steps * batch / 1000,
                    training_config={"renderset": renderset, "resolution": res, "crop": crop, "batch": batch, "lr": lr,
                                     "channels": channels, "levels": levels, **stats})
    line = (f"line removal: held-out L1 {stats['l1_lined']:.4f} with lines -> {stats['l1_output']:.4f} "
            f"({stats['held_out_characters']} characters)")
    if "l1_dark_output" in stats:
        line += (f"; dark pixels that are not lines ({100 * stats['dark_fraction']:.1f}% of the image): "
                 f"L1 {stats['l1_dark_output']:.4f}, {100 * stats['dark_removed']:.2f}% lightened")
    log(line)
    log(json.dumps(stats))
    return stats


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """The docstring as written; every option's default after its help (none for required ones and flags)."""

    def _get_help_string(self, action):
        h = action.help or ""
        if action.default is not None and action.default is not False and action.default != argparse.SUPPRESS \
                and "%(default)" not in h:
            h += " (default: %(default)s)"
        return h


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m _train.img2img.train", description=__doc__, formatter_class=_Formatter)
    ap.add_argument("--renderset", required=True, help="renders/<NAME> with ortho and ortho_lines (render --lines)")
    ap.add_argument("--out", required=True, type=Path, help="checkpoint to write (python -m _scripts.infer --remove-lines)")
    ap.add_argument("--steps", type=int, default=2000, help="optimiser steps")
    ap.add_argument("--crop", type=int, default=128, help="random crop size of a training image (pixels)")
    ap.add_argument("--batch", type=int, default=8, help="crops per step")
    ap.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (cosine decay to 0)")
    ap.add_argument("--channels", type=int, default=32, help="U-Net width at full resolution")
    ap.add_argument("--levels", type=int, default=3, help="U-Net down-sampling levels (crop divisible by 2**levels)")
    ap.add_argument("--dark-weight", type=float, default=DARK_WEIGHT,
                    help="loss weight of dark pixels that are not lines (1: plain L1)")
    ap.add_argument("--seed", type=int, default=0, help="initialisation, crops and flips")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, cuda:1, ...")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    paths.add_data_root_arg(ap)
    return ap


@cli_main
def main(argv=None):
    a = parser().parse_args(argv)
    if a.steps < 1 or a.batch < 1 or a.levels < 1:
        raise UserError("--steps, --batch and --levels must be >= 1")
    if a.channels < 8 or a.channels % 8:
        raise UserError(f"--channels {a.channels}: expected a multiple of 8 (the U-Net's group norm)")
    if a.crop < 2 ** a.levels or a.crop % 2 ** a.levels:
        raise UserError(f"--crop {a.crop}: expected a positive multiple of {2 ** a.levels} (2**--levels)")
    if not a.lr > 0 or not a.dark_weight >= 0:
        raise UserError("--lr must be > 0 and --dark-weight >= 0")
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {a.device}: CUDA is not available here")
    train(paths.data_root(a.data_root), a.renderset, a.out, a.steps, a.crop, a.batch, a.lr, a.channels, a.seed, a.device,
          levels=a.levels, dark_weight=a.dark_weight, progress=not a.no_progress)


if __name__ == "__main__":
    main()
