"""Measure a generated evaluation tree against the ground truth; print the seed's table.

    python -m _scripts.eval.measure --inferquery <run>-<NNNNN>-<kimg> --dataset human
        [--renderset NAME] [--weights DIR] [--roi BOXES.json] [--no-geometry] [--thumbs 96]

Writes measure.json, measure.csv (per character) and report.html next to the
generated images (<data root>/temp/eval/<inferquery>/<renderset>/).  A character whose
images cannot be read is listed (measure.json "failures"), left out of the means, and the
exit code is then 1 (docs/DESIGN.md, "Data jobs").
"""
from __future__ import annotations

import argparse

from pathlib import Path

from training import paths
from training.eval import report as eval_report
from training.data import catalog
from training.errors import UserError, fail
from training.jobs import JobReport, data_job_main
from training.eval import measure as ms
from training.eval.generate import eval_views


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--inferquery", required=True, help="name of the generated tree under <data root>/temp/eval/")
    p.add_argument("--dataset", required=True, help="subset name: subsets/<dataset>_<split>.csv")
    p.add_argument("--renderset", default=None, help="ground-truth renders (default: the dataset name)")
    p.add_argument("--split", default="test")
    p.add_argument("--weights", default=None, help="folder with pretrained weight files (else the standard caches)")
    p.add_argument("--roi", default=None, metavar="BOXES.json",
                   help='extra geometry rows per region of interest: {"name": [xmin,ymin,zmin,xmax,ymax,zmax]} '
                        "in framed metres (PAniC-3D-style crop boxes; off by default)")
    p.add_argument("--no-geometry", action="store_true", help="image metrics only")
    p.add_argument("--samples", type=int, default=10_000, help="surface samples per mesh for CD / F1")
    p.add_argument("--fid-min", type=int, default=None, help="fewest images per side for FID (default 100)")
    p.add_argument("--thumbs", type=int, default=None, metavar="PX",
                   help="embed PX-sized thumbnails in the HTML (self-contained page) instead of linking images")
    p.add_argument("--report-max", type=int, default=200, help="characters shown in the HTML report")
    p.add_argument("--random-init", action="store_true",
                   help="random-init LPIPS/CLIP/Inception networks (pipeline tests only: numbers are meaningless)")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")
    paths.add_data_root_arg(p)
    return p.parse_args(argv)


def run(argv=None) -> JobReport:
    a = parse_args(argv)
    renderset = a.renderset or a.dataset
    root = paths.data_root(a.data_root)
    if a.weights is not None and not Path(a.weights).is_dir():
        # else every metric that needs weights would be "unavailable" and overwrite a complete earlier table
        raise fail(a.weights, "--weights: no such folder")
    out_dir = paths.eval_dir(a.inferquery, renderset, root)
    if not out_dir.is_dir():
        raise fail(out_dir, "no generated tree (run `python -m _scripts.eval.generate` first)")
    done = set(ms.generated_ids(out_dir))
    wanted = catalog.select_ids(root, renderset, a.dataset, a.split)
    ids = [c for c in wanted if c in done]
    if not ids:
        raise fail(out_dir, f"none of the {len(wanted)} {a.dataset}_{a.split} characters is generated here")
    if len(ids) < len(wanted):
        print(f"note: measuring {len(ids)} of {len(wanted)} characters (the others are not generated)")
    rois = ms.load_rois(a.roi) if a.roi else None
    if a.samples < 100:
        raise UserError(f"--samples: expected at least 100, got {a.samples}")
    m = ms.Measurer(root, renderset, out_dir, device=a.device, weights_dir=a.weights, random_init=a.random_init,
                    geometry=not a.no_geometry, rois=rois, fid_min_images=a.fid_min, n_samples=a.samples)
    report = JobReport("measure", done_word="measured")
    result = m.run(ids, progress=not a.no_progress, report=report)
    if not result["per_character"]:     # nothing to report: keep an earlier measure.json as it is
        report.notes.append(f"nothing written to {out_dir}: no character could be measured")
        return report.finish()
    result.update(inferquery=a.inferquery, dataset=a.dataset, split=a.split, random_init=a.random_init)
    print(ms.format_table(result["table"], result["unavailable"]))
    files = ms.write_outputs(out_dir, result)
    first = next(iter(result["per_character"]))
    framing = catalog.framing_of(catalog.load_char_meta(root, renderset, first),
                                    catalog.load_renderset_meta(root, renderset)) or "body"
    views = [(d, v.name) for d, v in eval_views(framing)]
    files["html"] = eval_report.write_report(out_dir / "report.html", result, root=root, renderset=renderset,
                                             eval_dir=out_dir, views=views, title=f"{a.inferquery} on {renderset}",
                                             thumbs=a.thumbs, max_chars=a.report_max)
    for k, p in files.items():
        print(f"{k}: {p}")
    report.result = {"result": result, "files": files}
    return report.finish()


@data_job_main
def main(argv=None):
    return run(argv)


if __name__ == "__main__":
    main()
