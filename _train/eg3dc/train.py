"""Train a conditional triplane GAN (PAniC-3D / NOVA-3D).

    python -m _train.eg3dc.train --run-name nova_v1 --config _configs/nova_body/base.json --batch 16
    torchrun --nproc_per_node 4 -m _train.eg3dc.train --config _configs/nova_body/base.json ...

Every field of training.training_loop.TrainConfig and training.loss.LossConfig
is a flag (underscores become dashes).  ``--config FILE`` reads a JSON preset
first; flags given on the command line win.  See docs/training.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import typing
from pathlib import Path

from training import paths
from training.errors import cli_main, fail
from training.loss import LossConfig
from training.training_loop import TrainConfig, cleanup_distributed, train


def _add_fields(parser, cls, group_title):
    group = parser.add_argument_group(group_title)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name == "loss" or f.name == "data_root":
            continue
        typ = hints[f.name]
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        if typ is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                               help=f"(default {default})")
        else:
            group.add_argument(flag, dest=f.name, type=typ, default=None, metavar=typ.__name__.upper(),
                               help=f"(default {default!r})")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m _train.eg3dc.train", description=__doc__.split("\n")[0])
    p.add_argument("--config", default=None, help="JSON preset (keys of TrainConfig; 'loss' holds LossConfig keys)")
    paths.add_data_root_arg(p)
    _add_fields(p, TrainConfig, "run, data, networks, optimisation, schedule")
    _add_fields(p, LossConfig, "losses")
    return p


def config_from_args(argv=None) -> TrainConfig:
    args = build_parser().parse_args(argv)
    base: dict = {}
    if args.config:
        cp = Path(args.config)
        if not cp.is_file():
            raise fail(cp, "config file not found")
        try:
            base = json.loads(cp.read_text())
        except json.JSONDecodeError as e:
            raise fail(cp, f"not JSON ({e})") from None
    loss = dict(base.pop("loss", {}))
    loss_names = {f.name for f in dataclasses.fields(LossConfig)}
    for f in dataclasses.fields(TrainConfig):
        v = getattr(args, f.name, None)
        if v is not None:
            base[f.name] = v
    for name in loss_names:
        v = getattr(args, name, None)
        if v is not None:
            loss[name] = v
    if args.data_root:
        base["data_root"] = args.data_root
    try:
        base["loss"] = dataclasses.asdict(LossConfig(**loss))
    except TypeError as e:
        raise fail(args.config, f"bad loss keys ({e})") from None
    return TrainConfig.from_dict(base)


@cli_main
def main(argv=None):
    cfg = config_from_args(argv)
    try:
        run_dir = train(cfg)
    finally:
        cleanup_distributed()
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"done: {run_dir}")


if __name__ == "__main__":
    main(sys.argv[1:])
