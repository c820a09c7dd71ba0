"""The seed's full-body alias of generate_feature: defaults to the NOVA-Human dataset name.

    python -m _scripts.train.generate_human_feature [--dataset human_rutileEB] --weights imagenet
"""
from __future__ import annotations

from _scripts.train.generate_feature import run
from training.jobs import data_job_main

DEFAULT_DATASET = "human_rutileEB"


@data_job_main
def main(argv=None):
    return run(argv, default_dataset=DEFAULT_DATASET)


if __name__ == "__main__":
    main()
