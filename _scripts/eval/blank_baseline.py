"""Floor for the image metrics: PSNR / SSIM of an all-white prediction (the empty scene on the white
background) against the ground-truth ortho views of a test split.  A model that has learnt only the
background scores about this; docs/results.md lists it beside the trained models.

    python -m _scripts.eval.blank_baseline --dataset synth_body [--split test] [--limit N] [--json out.json]
"""
from __future__ import annotations

import argparse

import numpy as np

from training import paths
from training.errors import cli_main, fail, load_image, save_json_atomic
from training.images import on_white
from training.eval.image import psnr, ssim

VIEWS = ("front", "back")


@cli_main
def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m _scripts.eval.blank_baseline", description=__doc__.split("\n")[0])
    p.add_argument("--dataset", required=True, help="subset name: subsets/<dataset>_<split>.csv")
    p.add_argument("--renderset", default=None, help="ground-truth renders (default: the dataset name)")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=None, help="first N characters only")
    p.add_argument("--json", default=None)
    paths.add_data_root_arg(p)
    a = p.parse_args(argv)
    root = paths.data_root(a.data_root)
    keys = [paths.key_of(i) for i in paths.read_subset(root, a.dataset, a.split)][: a.limit]
    if not keys:
        raise fail(paths.subset_csv(root, a.dataset, a.split), "no characters")
    ortho = root / "renders" / (a.renderset or a.dataset) / "ortho"
    out = {}
    for v in VIEWS:
        ps, ss = [], []
        for k in keys:
            gt = on_white(load_image(ortho / k / f"{v}.png", "RGBA"))
            ps.append(float(psnr(np.ones_like(gt), gt)))
            ss.append(ssim(np.ones_like(gt), gt))
        out[v] = {"psnr": float(np.mean(ps)), "ssim": float(np.mean(ss))}
        print(f"{v:6s} psnr {out[v]['psnr']:7.3f}  ssim {out[v]['ssim']:7.3f}  (all-white prediction, "
              f"{len(keys)} characters)")
    if a.json:
        save_json_atomic(a.json, {"dataset": a.dataset, "split": a.split, "characters": len(keys), **out})
    return out


if __name__ == "__main__":
    main()
