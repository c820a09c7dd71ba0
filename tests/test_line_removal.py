"""Line removal: a short training on (ortho_lines, ortho) synthetic renders lowers the held-out L1."""
import numpy as np
import pytest
import torch

from _train.img2img import train as lr_train
from _train.img2img.model import LineRemovalUNet
from training.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def lined_renders(tmp_path_factory):
    from _scripts.data import render, synth
    root = tmp_path_factory.mktemp("lines_root")
    synth.main(["--n", "5", "--seed", "7", "--data-root", str(root)])
    render.main(["--source", "synth", "--renderset", "lr", "--framing", "body", "--size", "48", "--lines",
                 "--dtypes", "ortho", "--data-root", str(root)])
    return root


def test_untrained_is_identity():
    net = LineRemovalUNet(channels=8, levels=2)
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    assert torch.allclose(net(x), x)


def test_short_training_lowers_held_out_l1(lined_renders, tmp_path):
    torch.set_num_threads(1)
    pairs = lr_train.find_pairs(lined_renders, "lr")
    ids = sorted({p[0] for p in pairs})
    assert len(ids) == 5 and len(pairs) == 20
    held = lr_train.held_out_ids(ids)
    out = tmp_path / "lines.pt"
    stats = lr_train.train(lined_renders, "lr", out, steps=150, crop=32, batch=8, lr=3e-3, channels=8, levels=2,
                           log=lambda *_: None)
    assert stats["held_out_characters"] == len(held) >= 1
    assert stats["train_images"] == 4 * (5 - len(held))
    # the lines cost a clear L1 on the held-out renders, and the trained network removes most of it
    assert stats["l1_lined"] > 0.01
    assert stats["l1_output"] < 0.6 * stats["l1_lined"], stats
    # the checkpoint records what infer needs and rebuilds to the same held-out score
    ck = load_checkpoint(out)
    e = ck["modules"]["line_removal"]
    assert ck["training_config"]["resolution"] == 48 and e["config"] == {"channels": 8, "levels": 2, "in_channels": 3}
    net = LineRemovalUNet(**e["config"])
    net.load_state_dict(e["state_dict"])
    x, y = lr_train.load_pairs([p for p in pairs if p[0] in held])
    before, after = lr_train.held_out_l1(net, x, y)
    assert np.isclose(before, stats["l1_lined"]) and np.isclose(after, stats["l1_output"], rtol=1e-4)
