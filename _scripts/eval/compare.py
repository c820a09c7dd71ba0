"""Compare two models measured on the same characters: A's lead over B per metric, paired per character.

    python -m _scripts.eval.compare docs/results/eval_256_same_budget_19/measure_nova_v1_synth_body.json \\
        docs/results/eval_256_same_budget_19/measure_panic_body_synth_body.json

Each file is the measure.json that ``_scripts.eval.measure`` writes (under <data root>/temp/eval/<name>/<set>/).
Prints, per subset (front, back, side, 360, geometry), both means, the mean lead with its standard error and
range, and the share of characters A wins; then the 360 ring's lead by azimuth.  The lead is positive where
A is better (for the chamfer distance, where A's is lower).  Only characters measured by both count.
"""
from __future__ import annotations

import argparse
import json

from training.errors import atomic_write, cli_main
from training.eval.compare import format_comparison, load_measure, paired


@cli_main
def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m _scripts.eval.compare", description=__doc__.split("\n")[0],
                                epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", help="model A's measure.json (its lead is reported)")
    p.add_argument("b", help="model B's measure.json, measured on the same characters")
    p.add_argument("--json", default=None, help="also write the comparison here as JSON")
    a = p.parse_args(argv)
    c = paired(load_measure(a.a), load_measure(a.b))
    print(format_comparison(c))
    if a.json:
        with atomic_write(a.json, "w") as f:
            json.dump(c, f, indent=1)
    return c


if __name__ == "__main__":
    main()
