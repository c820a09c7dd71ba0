"""Line removal: a short training on (ortho_lines, ortho) synthetic renders lowers the held-out L1 and keeps
the dark regions that are not lines (characters with dark parts: black bows, tops, hair)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from _train.img2img import train as lr_train
from _train.img2img.model import LineRemovalUNet
from training.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def lined_renders(tmp_path_factory):
    from _scripts.data import render, synth
    root = tmp_path_factory.mktemp("lines_root")
    synth.main(["--n", "5", "--seed", "7", "--dark-parts", "0.6", "--data-root", str(root), "--quiet"])
    render.main(["--source", "synth", "--renderset", "lr", "--framing", "head", "--size", "48", "--lines",
                 "--dtypes", "ortho", "--data-root", str(root)])
    return root


def test_untrained_is_identity():
    net = LineRemovalUNet(channels=8, levels=2)
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    assert torch.allclose(net(x), x)


def _square_and_line():
    """A clean image (white, a black square, a light grey band) and the same with a dark 1-px line."""
    y = torch.ones(1, 3, 32, 32)
    y[..., 4:14, 4:14] = -1.0                     # black square: dark, not a line
    y[..., 20:28, :] = 0.6                        # light grey: not dark
    x = y.clone()
    x[..., 17, :] = -0.9                          # a line across white ...
    x[..., 2:28, 24] = -0.9                       # ... and one down through the grey band
    return x, y


def test_dark_mask_is_dark_non_line_pixels():
    x, y = _square_and_line()
    line, dark = lr_train.masks(x, y)
    assert line[0, 0, 17].all() and line[0, 0, 16].all() and line[0, 0, 18].all()      # grown by one pixel
    assert not line[0, 0, 8, 8] and dark[0, 0, 4:14, 4:14].all()                      # the square
    assert int(dark.sum()) == 100                                                     # only the square
    assert not dark[0, 0, 24].any()                                                   # grey is not dark


class _Whiten(torch.nn.Module):
    """A "remover" that paints everything white: the failure the dark score must catch."""

    def forward(self, x):
        return torch.ones_like(x)


def test_scores_catch_a_remover_that_whitens_dark_regions():
    x, y = _square_and_line()
    keep = lr_train.held_out_scores(LineRemovalUNet(channels=8, levels=2), x, y)      # identity: keeps the input
    assert keep["l1_dark_output"] == 0.0 and keep["dark_removed"] == 0.0 and keep["l1_output"] > 0
    white = lr_train.held_out_scores(_Whiten(), x, y)
    assert white["l1_dark_output"] == pytest.approx(1.0) and white["dark_removed"] == 1.0
    assert white["dark_pixels"] == 100 and white["dark_fraction"] == pytest.approx(100 / 1024)


def test_dark_weight_weights_dark_non_line_pixels():
    x, y = _square_and_line()
    w = lr_train.loss_weights(x, y, 4.0)
    assert w.mean().item() == pytest.approx(1.0)
    assert w[0, 0, 8, 8].item() == pytest.approx(4 * w[0, 0, 30, 30].item())        # square vs white


def test_short_training_lowers_held_out_l1(lined_renders, tmp_path):
    torch.set_num_threads(1)
    pairs = lr_train.find_pairs(lined_renders, "lr")
    ids = sorted({p[0] for p in pairs})
    assert len(ids) == 5 and len(pairs) == 20 and any(i.startswith("synthdark_") for i in ids)
    held = lr_train.held_out_ids(ids)
    out = tmp_path / "lines.pt"
    stats = lr_train.train(lined_renders, "lr", out, steps=150, crop=32, batch=8, lr=3e-3, channels=8, levels=2,
                           log=lambda *_: None, progress=False)
    assert stats["held_out_characters"] == len(held) >= 1
    assert stats["train_images"] == 4 * (5 - len(held))
    # the lines cost a clear L1 on the held-out renders, and the trained network removes most of it
    assert stats["l1_lined"] > 0.01
    assert stats["l1_output"] < 0.6 * stats["l1_lined"], stats
    # dark pixels that are not lines: the input is already right there, and the network keeps them
    # (better than it does the average pixel)
    assert stats["dark_pixels"] > 0 and stats["l1_dark_lined"] < 0.002
    assert stats["l1_dark_output"] < stats["l1_output"] and stats["dark_removed"] < 0.01, stats
    # the checkpoint records what infer needs and rebuilds to the same held-out score
    ck = load_checkpoint(out)
    e = ck["modules"]["line_removal"]
    assert ck["training_config"]["resolution"] == 48 and e["config"] == {"channels": 8, "levels": 2, "in_channels": 3}
    assert ck["training_config"]["l1_dark_output"] == stats["l1_dark_output"]
    net = LineRemovalUNet(**e["config"])
    net.load_state_dict(e["state_dict"])
    x, y = lr_train.load_pairs([p for p in pairs if p[0] in held])
    before, after = lr_train.held_out_l1(net, x, y)
    assert np.isclose(before, stats["l1_lined"]) and np.isclose(after, stats["l1_output"], rtol=1e-4)


def test_cli_shows_progress_and_defaults(lined_renders, tmp_path):
    """Not a terminal (a log file): progress lines while it trains; --help names the module and the defaults."""
    env = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "_train.img2img.train"]
    h = subprocess.run(cmd + ["--help"], capture_output=True, text=True, env=env, cwd=REPO)
    assert h.stdout.startswith("usage: python -m _train.img2img.train")
    options = h.stdout.split("options:", 1)[1]
    for flag, default in (("--steps", 2000), ("--crop", 128), ("--batch", 8), ("--dark-weight", 4.0), ("--seed", 0)):
        assert f"(default: {default})" in " ".join(options.split(f"  {flag} ", 1)[1].split("\n  --", 1)[0].split()), flag
    r = subprocess.run(cmd + ["--renderset", "lr", "--out", str(tmp_path / "l.pt"), "--steps", "20", "--crop", "32",
                              "--channels", "8", "--levels", "2", "--data-root", str(lined_renders)],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "line removal: 20/20 (100%)" in r.stderr and "line removal: loading: 20/20" in r.stderr
    assert "dark pixels that are not lines" in r.stdout
    bad = subprocess.run(cmd + ["--renderset", "lr", "--out", str(tmp_path / "b.pt"), "--channels", "12",
                                "--data-root", str(lined_renders)], capture_output=True, text=True, env=env, cwd=REPO)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: --channels 12")
