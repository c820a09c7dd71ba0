"""_scripts.eval.results_figure: input / prediction / truth grid from generated trees and ground-truth renders."""
import numpy as np
import pytest
from PIL import Image

from _scripts.eval import results_figure


def _png(path, colour, size=32):
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.zeros((size, size, 4), np.uint8)
    a[8:24, 8:24] = (*colour, 255)          # an opaque square on a transparent background
    Image.fromarray(a).save(path)


def test_grid_layout_and_errors(tmp_path, capsys):
    root, ev = tmp_path / "data", tmp_path / "eval"
    keys = ["1/c1", "2/c2"]
    for k in keys:
        for d, v in (("ortho", "front"), ("ortho", "back"), ("ortho", "left"), ("rgb60", "0044")):
            _png(root / "renders/rs" / d / k / f"{v}.png", (255, 0, 0))
            _png(ev / "m1/rs" / d / k / f"{v}.png", (0, 255, 0))
    _png(ev / "m2/rs/ortho/1/c1/front.png", (0, 0, 255))       # m2 generated c1 only (front only)
    out = tmp_path / "fig.png"
    results_figure.main(["--renderset", "rs", "--inferquery", "m1", "--label", "model", "--size", "20",
                         "--eval-dir", str(ev), "--data-root", str(root), "--out", str(out)])
    g = np.asarray(Image.open(out))
    assert g.shape == (18 + 2 * 20, 10 * 20, 3)   # header + 2 rows; 2 inputs + 4 predictions + 4 truths
    row = g[18:38]
    assert row[10, 20 * 2 + 10].tolist() == [0, 255, 0]          # prediction tile: green square
    assert row[10, 20 * 5 + 10].tolist() == [0, 255, 0]          # the 3/4 prediction (rgb60 0044)
    assert row[10, 20 * 6 + 10].tolist() == [255, 0, 0]          # truth tile: red square
    assert row[1, 20 * 6 + 1].tolist() == [255, 255, 255]        # transparent -> white
    with pytest.raises(SystemExit):                                 # only c1 is common; its back view is missing
        results_figure.main(["--renderset", "rs", "--inferquery", "m1", "m2", "--eval-dir", str(ev),
                             "--data-root", str(root), "--out", str(out)])
    assert "m2/rs/ortho/1/c1/back.png: image missing" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        results_figure.main(["--renderset", "rs", "--inferquery", "m1", "m2", "--label", "x",
                             "--eval-dir", str(ev), "--data-root", str(root), "--out", str(out)])
    assert "one label per" in capsys.readouterr().err


def test_blank_baseline_psnr(tmp_path):
    """All-white prediction against a half-black ground truth: MSE 0.5 -> PSNR 3.01 dB."""
    from _scripts.eval import blank_baseline
    root = tmp_path / "data"
    (root / "subsets").mkdir(parents=True)
    (root / "subsets" / "rs_test.csv").write_text("1/c1\n")
    for v in ("front", "back"):
        a = np.full((16, 16, 4), 255, np.uint8)
        a[:, :8, :3] = 0                       # left half opaque black
        (root / "renders/rs/ortho/1/c1").mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(root / f"renders/rs/ortho/1/c1/{v}.png")
    out = blank_baseline.main(["--dataset", "rs", "--data-root", str(root), "--json", str(tmp_path / "b.json")])
    assert out["front"]["psnr"] == pytest.approx(10 * np.log10(2), abs=1e-6)
    assert (tmp_path / "b.json").is_file()
