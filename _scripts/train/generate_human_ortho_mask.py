"""The seed's full-body alias of generate_ortho_mask: defaults to the NOVA-Human dataset name.

    python -m _scripts.train.generate_human_ortho_mask [--dataset human_rutileEB] [--renderset NAME]
"""
from __future__ import annotations

from _scripts.train.generate_ortho_mask import run
from training.jobs import data_job_main

DEFAULT_DATASET = "human_rutileEB"


@data_job_main
def main(argv=None):
    return run("ortho", argv, default_dataset=DEFAULT_DATASET)


if __name__ == "__main__":
    main()
