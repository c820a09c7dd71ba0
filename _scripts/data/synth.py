"""Generate procedural anime characters as GLB files: raw/<source>/<shard>/<id>/<id>.glb.

    python -m _scripts.data.synth --n 100 --seed 0
    python -m _scripts.data.synth --n 16 --seed 3 --data-root /tmp/lustrous --source synth_test

Ids are synth_<seed>_<index:06d>; the same seed gives byte-identical files and
existing files are kept (resumable).  Documentation: docs/data_synth.md.
"""
from __future__ import annotations

import argparse
import time

from training import paths
from training.errors import UserError, cli_main


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m _scripts.data.synth", description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, required=True, help="number of characters")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (ids synth_<seed>_<index>)")
    p.add_argument("--start", type=int, default=0, help="first index (to extend a dataset)")
    p.add_argument("--source", default="synth", help="writes raw/<source>/ (default synth)")
    paths.add_data_root_arg(p)
    return p.parse_args(argv)


@cli_main
def main(argv=None):
    a = parse_args(argv)
    if a.n < 0 or a.start < 0 or a.seed < 0:
        raise UserError("--n, --start and --seed must be >= 0")
    from training.synth import write_dataset
    root = paths.data_root(a.data_root)
    t0 = time.time()
    r = write_dataset(root, a.n, a.seed, source=a.source, start=a.start)
    print(f"synth: wrote {r['written']}, kept {r['skipped']} existing, in {time.time() - t0:.1f} s -> {r['root']}")


if __name__ == "__main__":
    main()
