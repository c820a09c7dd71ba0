"""The seed's full-body alias of generate_feature: defaults to the NOVA-Human dataset name.

    python -m _scripts.train.generate_human_feature [--dataset human_rutileEB] --weights imagenet
"""
from __future__ import annotations

from _scripts.train.generate_feature import run
from training.errors import cli_main

DEFAULT_DATASET = "human_rutileEB"


@cli_main
def main(argv=None):
    run(argv, default_dataset=DEFAULT_DATASET)


if __name__ == "__main__":
    main()
