"""Learning curves of training runs: held-out PSNR (metrics.jsonl ``val/*``) against training minutes.

    python -m _scripts.eval.learning_curves --metrics runs/nova_v1/00000/metrics.jsonl \
        runs/panic_body/00000/metrics.jsonl --label nova_v1 panic_body --out curves.png

One panel per held-out view set (front, back, sides, the perspective view), one line per run.  Runs are
read from their metrics.jsonl (ticks with ``val/psnr_*`` and ``train_s``, which the trainer writes when
``--val-count`` > 0).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from training.errors import UserError, atomic_path, cli_main, fail

PANELS = (("val/psnr_front", "front (input view)"), ("val/psnr_back", "back"),
          ("val/psnr_side", "left + right"), ("val/psnr_rgb", "perspective view"))


def read_curve(path: Path) -> list[dict]:
    if not path.is_file():
        raise fail(path, "metrics file not found")
    rows = []
    for line in path.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue                    # a torn last line of a killed run
        if "val/psnr_front" in r and "train_s" in r:
            rows.append(r)
    if not rows:
        raise fail(path, "no held-out PSNR ticks (train with --val-count > 0)")
    return rows


@cli_main
def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m _scripts.eval.learning_curves", description=__doc__.split("\n")[0])
    p.add_argument("--metrics", nargs="+", required=True, help="metrics.jsonl files, one per run")
    p.add_argument("--label", nargs="+", default=None, help="one label per run (default: the file names)")
    p.add_argument("--title", default="held-out PSNR (dB) against training minutes")
    p.add_argument("--out", required=True, help="PNG to write")
    a = p.parse_args(argv)
    labels = a.label or [Path(m).stem for m in a.metrics]
    if len(labels) != len(a.metrics):
        raise UserError("--label: give one label per --metrics file")
    curves = [read_curve(Path(m)) for m in a.metrics]
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 3.2), sharey=True)
    for ax, (key, title) in zip(axes, PANELS):
        for rows, lab in zip(curves, labels):
            pts = [(r["train_s"] / 60, r[key]) for r in rows if key in r]
            if pts:
                ax.plot(*zip(*pts), marker=".", label=lab)
        ax.set_title(title)
        ax.set_xlabel("training minutes")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("PSNR (dB)")
    axes[0].legend()
    fig.suptitle(a.title)
    fig.tight_layout()
    with atomic_path(Path(a.out)) as tmp:
        fig.savefig(tmp, dpi=90)
    print(f"{a.out}: {len(curves)} runs")


if __name__ == "__main__":
    main()
