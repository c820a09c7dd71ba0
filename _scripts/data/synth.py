"""Generate procedural anime characters as GLB files: raw/<source>/<shard>/<id>/<id>.glb.

    python -m _scripts.data.synth --n 100 --seed 0
    python -m _scripts.data.synth --n 16 --seed 3 --data-root /tmp/lustrous --source synth_test

Ids are synth_<seed>_<index:06d> (synthdark_... for characters with dark parts, --dark-parts);
the same seed gives byte-identical files and existing files are kept (resumable).  A character
that cannot be written is listed and the exit code is 1 (docs/DESIGN.md, "Data jobs").
Documentation: docs/data_synth.md.
"""
from __future__ import annotations

import argparse
import time

from training import paths
from training.errors import UserError
from training.jobs import JobReport, data_job_main


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m _scripts.data.synth", description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, required=True, help="number of characters")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (ids synth_<seed>_<index>)")
    p.add_argument("--start", type=int, default=0, help="first index (to extend a dataset)")
    p.add_argument("--source", default="synth", help="writes raw/<source>/ (default synth)")
    p.add_argument("--dark-parts", type=float, default=0.0, metavar="FRACTION",
                   help="fraction of the characters drawn with dark parts (black bow, often a black top, hair, "
                        "legwear; ids synthdark_...): data for a line remover that must keep them (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    paths.add_data_root_arg(p)
    return p.parse_args(argv)


@data_job_main
def main(argv=None):
    a = parse_args(argv)
    if a.n < 0 or a.start < 0 or a.seed < 0:
        raise UserError("--n, --start and --seed must be >= 0")
    if not 0.0 <= a.dark_parts <= 1.0:
        raise UserError(f"--dark-parts: expected a fraction in [0, 1], got {a.dark_parts}")
    from training.data.synth import write_dataset
    root = paths.data_root(a.data_root)
    t0 = time.time()
    report = JobReport("synth", paths.raw_dir(root, a.source) / "failures.jsonl", done_word="written")
    r = write_dataset(root, a.n, a.seed, source=a.source, start=a.start, progress=not a.quiet,
                      dark_parts=a.dark_parts, report=report)
    print(f"synth: wrote {r['written']}, kept {r['skipped']} existing, in {time.time() - t0:.1f} s -> {r['root']}")
    return report.finish() if report.failures else report


if __name__ == "__main__":
    main()
