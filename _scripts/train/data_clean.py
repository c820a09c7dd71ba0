"""Drop broken renders and split a renderset into subsets/<dataset>_{all,train,val,test}.csv.

    python -m _scripts.train.data_clean --dataset human --phase all

Dropped characters are the result (subsets/<dataset>_drops.jsonl), not failures; a character that
cannot be checked at all is a failure: listed, left out, exit code 1 (docs/DESIGN.md, "Data jobs").
"""
from __future__ import annotations

import argparse

from training import paths
from training.data import catalog, clean
from training.jobs import JobReport, data_job_main


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True, help="name of the subsets to write")
    ap.add_argument("--renderset", default=None, help="renders/<NAME> to read (default: the dataset name)")
    ap.add_argument("--phase", choices=["all", "filter", "split"], default="all",
                    help="filter: check renders -> _all.csv; split: _all.csv -> train/val/test; all: both")
    ap.add_argument("--ratios", default="0.8,0.1,0.1", help="train,val,test fractions (default 0.8,0.1,0.1)")
    ap.add_argument("--min-coverage", type=float, default=clean.CleanConfig.min_coverage,
                    help="drop when the front or back ortho alpha covers less than this image fraction")
    ap.add_argument("--border-tol", type=float, default=clean.CleanConfig.border_tol,
                    help="drop when more than this fraction of an image edge is foreground (cut off)")
    ap.add_argument("--threshold", type=int, default=catalog.MASK_THRESHOLD,
                    help="alpha above which a pixel is foreground (default 200)")
    ap.add_argument("--require", default=",".join(catalog.REQUIRED_DTYPES),
                    help="render dtypes every character must have complete")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    paths.add_data_root_arg(ap)
    return ap


@data_job_main
def main(argv=None):
    a = parser().parse_args(argv)
    cfg = clean.CleanConfig(min_coverage=a.min_coverage, border_tol=a.border_tol, threshold=a.threshold,
                                 required=tuple(x for x in a.require.split(",") if x))
    report = JobReport("data_clean", done_word="checked")
    clean.run_clean(a.data_root, a.dataset, a.renderset, a.phase, cfg, a.ratios, a.workers,
                         progress=not a.quiet, report=report)
    return report.finish() if a.phase != "split" else report


if __name__ == "__main__":
    main()
