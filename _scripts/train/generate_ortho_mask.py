"""Foreground masks (alpha > 200) of the ortho renders -> renders/<rs>/ortho_mask/<shard>/<id>/<view>.png.

    python -m _scripts.train.generate_ortho_mask --renderset human
"""
from __future__ import annotations

import argparse
import sys

from training import paths, preprocess
from training.errors import UserError, cli_main

KIND = "ortho"


def parser(kind: str = KIND, default_dataset: str | None = None) -> argparse.ArgumentParser:
    src, dst = preprocess.MASK_SOURCES[kind]
    ap = argparse.ArgumentParser(description=f"Foreground masks of renders/<rs>/{src} -> renders/<rs>/{dst}.")
    ap.add_argument("--renderset", default=None, help="renders/<NAME> (default: the dataset name)")
    ap.add_argument("--dataset", default=default_dataset,
                    help="only the characters of subsets/<NAME>_<split>.csv (default: every finished character)")
    ap.add_argument("--split", default="all")
    ap.add_argument("--threshold", type=int, default=preprocess.MASK_THRESHOLD, help="foreground = alpha > this")
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
    ids = preprocess.select_ids(root, renderset, a.dataset if a.dataset else None, a.split)
    r = preprocess.generate_masks(root, renderset, ids, kind, a.threshold, a.overwrite, a.workers, not a.quiet)
    print(f"{preprocess.MASK_SOURCES[kind][1]}: {r['characters']} characters, {r['written']} masks written, "
          f"{r['skipped']} already there, {len(r['errors'])} errors")
    for e in r["errors"][:10]:
        print(f"  error: {e}")
    if r["errors"]:
        sys.exit(1)     # the other characters are done; re-run after fixing to fill the gaps
    return r


@cli_main
def main(argv=None):
    run(KIND, argv)


if __name__ == "__main__":
    main()
