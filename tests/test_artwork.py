import numpy as np
import pytest
import torch
from PIL import Image

from training.infer import artwork
from training.errors import UserError
from _train.img2img.model import LineRemovalUNet

AUTHOR = "../shared/data/real_models/rai_girl/author_render_{}.png"


def _disk_image(path, bg=(40, 40, 60), alpha=False, size=96, centre=(40, 50), r=20):
    yy, xx = np.mgrid[:size, :size]
    inside = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < r ** 2
    img = np.zeros((size, size, 4), np.uint8)
    img[..., :3] = bg
    img[..., 3] = 255
    img[inside, :3] = (230, 120, 40)
    if alpha:
        img[~inside, 3] = 0
    Image.fromarray(img).save(path)
    return inside


@pytest.mark.parametrize("alpha", [False, True])
def test_matte_and_body_placement(tmp_path, alpha):
    p = tmp_path / "disk.png"
    _disk_image(p, alpha=alpha)
    v = artwork.prepare(p, "body", 128, fill=0.5)
    assert v.matte_source == ("alpha" if alpha else "background")
    a = v.rgba[..., 3] > 127
    ys, xs = np.nonzero(a)
    # silhouette centred, its height half the image
    assert abs((ys.min() + ys.max() + 1) / 2 - 64) <= 1.5 and abs((xs.min() + xs.max() + 1) / 2 - 64) <= 1.5
    assert abs((ys.max() + 1 - ys.min()) - 64) <= 2
    # colour kept inside, transparent outside
    assert np.abs(v.rgba[64, 64, :3].astype(int) - (230, 120, 40)).max() < 8
    assert v.rgba[2, 2, 3] == 0


def test_real_artwork_front_back_consistent():
    f = artwork.prepare(AUTHOR.format("front"), "body", 256)
    b = artwork.prepare(AUTHOR.format("back"), "body", 256)
    assert f.matte_source == "background"
    # the author's front and back renders are roughly mirror silhouettes; a shifted back is not
    assert artwork.silhouette_mismatch(f.rgba, b.rgba) < 0.35
    shifted = np.roll(b.rgba, 60, axis=1)
    assert artwork.silhouette_mismatch(f.rgba, shifted) > 0.35


def test_bad_inputs(tmp_path):
    bad = tmp_path / "not_an_image.png"
    bad.write_text("hello")
    with pytest.raises(UserError, match="not_an_image.png"):
        artwork.prepare(bad, "body")
    empty = tmp_path / "empty.png"
    Image.fromarray(np.zeros((32, 32, 4), np.uint8)).save(empty)
    with pytest.raises(UserError, match="empty"):
        artwork.prepare(empty, "body")
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(noise)
    with pytest.raises(UserError, match="background"):
        artwork.prepare(noise, "body")


def test_16_bit_greyscale_is_read_at_its_real_brightness(tmp_path):
    """A 16-bit greyscale PNG: dark figure (0.2) on a mid-grey background (0.6).  Clipping the 16-bit values
    at 255 would make both white (and the matte would find no character)."""
    img = np.full((96, 96), int(0.6 * 65535), np.uint16)
    inside = _disk_image(tmp_path / "ref.png")
    img[inside] = int(0.2 * 65535)
    p = tmp_path / "grey16.png"
    Image.fromarray(img).save(p)
    assert Image.open(p).mode.startswith("I")                 # Pillow reads it as 16-bit
    rgba = artwork.load_artwork(p)
    assert abs(int(rgba[50, 40, 0]) - 51) <= 1 and abs(int(rgba[2, 2, 0]) - 153) <= 1
    v = artwork.prepare(p, "body", 128, fill=0.5)
    a = v.rgba[..., 3] > 127
    assert v.matte_source == "background" and abs(a.sum() - np.pi * 32 ** 2) < 0.1 * np.pi * 32 ** 2
    assert abs(int(v.rgba[64, 64, 0]) - 51) <= 2


@pytest.mark.parametrize("size", [(1, 1), (8, 40)])
def test_tiny_image_says_it_is_too_small(tmp_path, size):
    p = tmp_path / "tiny.png"
    Image.fromarray(np.full(size + (4,), 200, np.uint8)).save(p)        # opaque
    with pytest.raises(UserError, match=rf"tiny.png: the image is {size[1]}x{size[0]} pixels: too small") as e:
        artwork.prepare(p, "body")
    assert "alpha" not in str(e.value)


def test_plain_opaque_image_says_there_is_no_character(tmp_path):
    p = tmp_path / "plain.png"
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(p)
    with pytest.raises(UserError, match="no character found: the image is one plain colour"):
        artwork.prepare(p, "body")


def test_line_removal_net_starts_as_identity():
    net = LineRemovalUNet(channels=8, levels=2)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.allclose(net(x), x)
    net.out.weight.data.normal_()
    assert not torch.allclose(net(x), x)
