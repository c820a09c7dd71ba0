"""Foreground masks of the perspective views -> renders/<rs>/rgb_mask/<shard>/<id>/<view>.png.

The rgb views are on white, so each mask comes from the alpha of the xyza
render of the same view (alpha > 200).

    python -m _scripts.train.generate_rgb_mask --renderset human
"""
from __future__ import annotations

from _scripts.train.generate_ortho_mask import run
from training.jobs import data_job_main


@data_job_main
def main(argv=None):
    return run("rgb", argv)


if __name__ == "__main__":
    main()
