"""The end of make/quickstart: trained vs untrained table, where the outputs are, a turntable frame strip.

    python -m _scripts.quickstart_report --data-root _data/quickstart --renderset quickstart \\
        --trained qs_trained --untrained qs_untrained --infer DIR [--strip docs/images/quickstart_turntable.png]

Reads <data-root>/temp/eval/<name>/<renderset>/measure.json of both evaluations and the
infer output folder; writes <data-root>/quickstart_summary.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

from training import paths
from training.errors import atomic_write, cli_main, fail, save_json_atomic, save_png_atomic
from training.eval.measure import HIGHER_IS_BETTER



def load_table(name: str, renderset: str, root=None) -> dict:
    p = paths.eval_dir(name, renderset, root) / "measure.json"
    if not p.is_file():
        raise fail(p, "not measured (run `python -m _scripts.eval.measure` first)")
    rows = json.loads(p.read_text())["table"]
    return {(r["subset"], r["metric"]): r["value"] for r in rows}


def _num(v):
    if isinstance(v, str):      # measure.json writes non-finite values as strings
        return float(v)
    return v


def compare(trained: dict, untrained: dict) -> list[dict]:
    rows = []
    for key in trained:
        t, u = _num(trained.get(key)), _num(untrained.get(key))
        if t is None and u is None:
            continue
        better = None
        hib = HIGHER_IS_BETTER.get(key[1])
        if t is not None and u is not None and hib is not None and not (math.isnan(t) or math.isnan(u)):
            better = (t > u) if hib else (t < u)
        rows.append({"subset": key[0], "metric": key[1], "untrained": u, "trained": t, "trained_better": better})
    return rows


def format_rows(rows: list[dict]) -> str:
    def f(v):
        return "n/a" if v is None else (f"{v:.3f}" if math.isfinite(v) else str(v))
    lines = ["| subset | metric | untrained | trained | better |", "|---|---|---|---|---|"]
    for r in rows:
        mark = {True: "yes", False: "no", None: ""}[r["trained_better"]]
        lines.append(f"| {r['subset']} | {r['metric']} | {f(r['untrained'])} | {f(r['trained'])} | {mark} |")
    return "\n".join(lines)


def frame_strip(gif: Path, n: int = 8, height: int = 96, inputs=()) -> np.ndarray:
    """The input images (on white), then n evenly spaced turntable frames, side by side at height px."""
    im = Image.open(gif)
    idx = np.linspace(0, im.n_frames, n, endpoint=False).astype(int)
    frames = [Image.open(p).convert("RGB").resize((height, height), Image.LANCZOS) for p in inputs]
    for i in idx:
        im.seek(int(i))
        frames.append(im.convert("RGB").resize((height, height), Image.LANCZOS))
    strip = Image.new("RGB", (height * len(frames), height), "white")
    for k, fr in enumerate(frames):
        strip.paste(fr, (k * height, 0))
    return np.asarray(strip)


@cli_main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    paths.add_data_root_arg(ap)
    ap.add_argument("--renderset", default="quickstart")
    ap.add_argument("--trained", default="qs_trained", help="eval name of the trained model")
    ap.add_argument("--untrained", default="qs_untrained", help="eval name of the untrained reference")
    ap.add_argument("--infer", type=Path, required=True, help="output folder of _scripts.infer")
    ap.add_argument("--ckpt", default=None, help="trained checkpoint (recorded)")
    ap.add_argument("--init-ckpt", default=None, help="untrained checkpoint (recorded)")
    ap.add_argument("--seconds", type=float, default=None, help="wall time of the whole quickstart (recorded)")
    ap.add_argument("--strip", type=Path, default=None, help="also write a turntable frame strip PNG here")
    a = ap.parse_args(argv)
    root = paths.data_root(a.data_root)
    rows = compare(load_table(a.trained, a.renderset, root), load_table(a.untrained, a.renderset, root))
    infer_summary = a.infer / "summary.json"
    if not infer_summary.is_file():
        raise fail(infer_summary, "no reconstruction here (run `python -m _scripts.infer` first)")
    inf = json.loads(infer_summary.read_text())
    where = {
        "metrics_table": str(paths.eval_dir(a.trained, a.renderset, root) / "measure.json"),
        "metrics_table_untrained": str(paths.eval_dir(a.untrained, a.renderset, root) / "measure.json"),
        "report": str(paths.eval_dir(a.trained, a.renderset, root) / "report.html"),
        "turntable": str(a.infer / "turntable.gif"),
        "mesh": str(a.infer / "mesh.glb"),
        "reconstruction": str(a.infer),
    }
    summary = {"seconds": a.seconds, "checkpoint": a.ckpt, "untrained_checkpoint": a.init_ckpt,
               "comparison": rows, "where": where, "mesh": inf.get("mesh")}
    save_json_atomic(root / "quickstart_summary.json", summary)
    table = format_rows(rows)
    with atomic_write(root / "quickstart_summary.md", "w") as f:
        f.write(table + "\n")
    if a.strip:
        inputs = [a.infer / f"input_{k}.png" for k in ("front", "back") if (a.infer / f"input_{k}.png").is_file()]
        save_png_atomic(a.strip, frame_strip(a.infer / "turntable.gif", inputs=inputs))
    print()
    print("test split, trained model vs the same model after one step (mean over characters):")
    print(table)
    if a.seconds is not None:
        print(f"\nquickstart took {a.seconds / 60:.1f} min")
    for k, v in where.items():
        print(f"{k:>24}: {v}")
    m = inf.get("mesh") or {}
    print(f"{'':>24}  ({m.get('vertices', 0)} vertices, {m.get('faces', 0)} faces)")


if __name__ == "__main__":
    main()
