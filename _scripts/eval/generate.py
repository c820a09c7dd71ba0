"""Render the evaluation views and meshes of a checkpoint for a test set.

    python -m _scripts.eval.generate --generator_module training.triplane.TriPlaneGenerator_v1 \
        --dataset human --inferquery <run>-<NNNNN>-<kimg>          # or --ckpt PATH
        [--renderset NAME] [--split test] [--batch 8] [--mesh-resolution 256] [--device auto]

Writes <data root>/temp/eval/<inferquery>/<renderset>/... (layout: training/eval/generate.py);
resumable: finished characters are skipped.  A character that cannot be generated is listed (and in
failures.jsonl) and the exit code is then 1 (docs/DESIGN.md, "Data jobs").
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from training import paths
from training.errors import UserError, fail
from training.jobs import JobReport, data_job_main
from training.eval import generate as gen
from training.eval.image import resolve_device


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generator_module", "--generator-module", default=None,
                   help="expected generator class, e.g. training.triplane.TriPlaneGenerator_v1 (checked)")
    p.add_argument("--dataset", required=True, help="subset name: subsets/<dataset>_<split>.csv")
    p.add_argument("--renderset", default=None, help="ground-truth renders (default: the dataset name)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--inferquery", help="<run>-<NNNNN>-<kimg>: <runs-dir>/<run>/<NNNNN>/network-snapshot-<kimg>.pt")
    src.add_argument("--ckpt", type=Path, help="checkpoint file (the output name is derived from it)")
    p.add_argument("--runs-dir", type=Path, default=None,
                   help="where --inferquery looks for runs (default _train/eg3dc/runs; the trainer's --runs-dir)")
    p.add_argument("--name", default=None, help="output name under <data root>/temp/eval/ (default: the inferquery)")
    p.add_argument("--split", default="test")
    p.add_argument("--batch", type=int, default=8, help="characters per batch")
    p.add_argument("--mesh-resolution", type=int, default=256, help="density grid side for marching cubes")
    p.add_argument("--mesh-level", type=float, default=0.5, help="marching-cubes level on 1 - exp(-density)")
    p.add_argument("--mesh-step", type=float, default=None,
                   help="the level applies to 1 - exp(-density * step), a slab STEP metres thick (default: the "
                        "framing's, training.infer.meshing.MESH_STEP, or 1 where that finds no surface, as "
                        "_scripts.infer; 1: the published 1 - exp(-density))")
    p.add_argument("--no-mesh", action="store_true", help="images only")
    p.add_argument("--samples", type=int, nargs=2, default=[96, 96], metavar=("STRATIFIED", "IMPORTANCE"),
                   help="samples per ray at evaluation (REFERENCE: 96 + 96)")
    p.add_argument("--neural-rendering-resolution", type=int, default=None,
                   help="override the checkpoint's neural rendering resolution")
    p.add_argument("--front-paste", action="store_true",
                   help="PAniC-3D inference extra: paste the input where the surface is seen from the front")
    p.add_argument("--limit", type=int, default=None, help="first N characters only (smoke tests)")
    p.add_argument("--overwrite", action="store_true", help="regenerate finished characters / other settings")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")
    paths.add_data_root_arg(p)
    return p.parse_args(argv)


def run(argv=None) -> JobReport:
    a = parse_args(argv)
    if a.batch < 1:
        raise UserError(f"--batch: expected at least 1, got {a.batch}")
    if a.mesh_resolution < 8:
        raise UserError(f"--mesh-resolution: expected at least 8, got {a.mesh_resolution}")
    if a.mesh_step is not None and a.mesh_step <= 0:
        raise UserError(f"--mesh-step: expected metres > 0, got {a.mesh_step}")
    ckpt = gen.resolve_inferquery(a.inferquery, a.runs_dir) if a.inferquery else a.ckpt
    if not Path(ckpt).is_file():
        raise fail(ckpt, "checkpoint not found")
    name = a.name or a.inferquery or gen.inferquery_of(ckpt)
    renderset = a.renderset or a.dataset
    root = paths.data_root(a.data_root)
    device = resolve_device(a.device)
    G = gen.load_eval_generator(Path(ckpt), a.generator_module, device)
    out_dir = paths.eval_dir(name, renderset, root)
    counts = gen.generate(root, renderset, a.dataset, a.split, G, Path(ckpt), out_dir, batch=a.batch,
                          mesh_resolution=a.mesh_resolution, mesh_level=a.mesh_level, mesh_step=a.mesh_step,
                          mesh=not a.no_mesh,
                          render_kw={"depth_resolution": a.samples[0], "depth_resolution_importance": a.samples[1]},
                          neural_rendering_resolution=a.neural_rendering_resolution, device=device,
                          limit=a.limit, overwrite=a.overwrite, progress=not a.no_progress,
                          front_paste=a.front_paste)
    failures = counts.pop("failures")
    print(json.dumps({"out": str(out_dir), **counts}))
    report = JobReport("generate", out_dir / "failures.jsonl", done_word="generated")
    report.done(counts["done"])
    report.skipped(counts["skipped"])
    for cid, why in failures:
        report.failed(cid, why, record=False)      # generate() appended them to failures.jsonl
    report.result = {"out": out_dir, **counts}
    return report.finish()


@data_job_main
def main(argv=None):
    return run(argv)


if __name__ == "__main__":
    main()
