"""The seed's full-body alias of generate_rgb_mask: defaults to the NOVA-Human dataset name.

    python -m _scripts.train.generate_human_rgb_mask [--dataset human_rutileEB] [--renderset NAME]
"""
from __future__ import annotations

from _scripts.train.generate_ortho_mask import run
from training.jobs import data_job_main

DEFAULT_DATASET = "human_rutileEB"


@data_job_main
def main(argv=None):
    return run("rgb", argv, default_dataset=DEFAULT_DATASET)


if __name__ == "__main__":
    main()
