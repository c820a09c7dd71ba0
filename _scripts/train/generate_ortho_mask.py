"""Foreground masks (alpha > 200) of the ortho renders -> renders/<rs>/ortho_mask/<shard>/<id>/<view>.png.

    python -m _scripts.train.generate_ortho_mask --renderset human

Every view that can be read gets its mask; each unreadable one is listed (and recorded in
renders/<rs>/ortho_mask/failures.jsonl) and the exit code is then 1 (docs/DESIGN.md, "Data jobs").
"""
from __future__ import annotations

import argparse

from training import paths
from training.data import catalog, masks
from training.errors import UserError
from training.jobs import JobReport, data_job_main

KIND = "ortho"


def parser(kind: str = KIND, default_dataset: str | None = None) -> argparse.ArgumentParser:
    src, dst = masks.MASK_SOURCES[kind]
    ap = argparse.ArgumentParser(description=f"Foreground masks of renders/<rs>/{src} -> renders/<rs>/{dst}.")
    ap.add_argument("--renderset", default=None, help="renders/<NAME> (default: the dataset name)")
    ap.add_argument("--dataset", default=default_dataset,
                    help="only the characters of subsets/<NAME>_<split>.csv (default: every finished character)")
    ap.add_argument("--split", default="all")
    ap.add_argument("--threshold", type=int, default=catalog.MASK_THRESHOLD, help="foreground = alpha > this")
    ap.add_argument("--overwrite", action="store_true", help="recompute masks that exist")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--quiet", action="store_true")
    paths.add_data_root_arg(ap)
    return ap


def run(kind: str, argv=None, default_dataset: str | None = None):
    a = parser(kind, default_dataset).parse_args(argv)
    renderset = a.renderset or a.dataset
    if not renderset:
        raise UserError("--renderset (or --dataset) is required")
    root = paths.data_root(a.data_root)
    ids = catalog.select_ids(root, renderset, a.dataset if a.dataset else None, a.split)
    dst = masks.MASK_SOURCES[kind][1]
    if not ids:
        raise UserError(f"{paths.renders_dir(root, renderset)}: no finished characters to make masks for")
    report = JobReport(f"generate_{kind}_mask", paths.renders_dir(root, renderset) / dst / "failures.jsonl",
                       done_word="masks written")
    r = masks.generate_masks(root, renderset, ids, kind, a.threshold, a.overwrite, a.workers, not a.quiet)
    report.done(r["written"])
    report.skipped(r["skipped"])
    for e in r["errors"]:
        report.failed(e.split(": ")[0], e)
    report.notes.append(f"{r['characters']} characters, {len(r['failed_characters'])} with a failed view")
    return report.finish()


@data_job_main
def main(argv=None):
    return run(KIND, argv)


if __name__ == "__main__":
    main()
