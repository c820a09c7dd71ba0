"""Train a conditional triplane GAN (PAniC-3D / NOVA-3D).

    python -m _train.eg3dc.train --config release/nova_v1 --data-root /data/lustrous
    torchrun --nproc_per_node 4 -m _train.eg3dc.train --config _configs/recipes/nova_body.toml ...

Every field of training.training_loop.TrainConfig and training.loss.LossConfig
is a flag (underscores become dashes), documented where its default is set.
``--config`` reads a recipe first (a TOML file, or a name under
_configs/recipes); flags given on the command line win, and ``--g-kwargs`` /
``--d-kwargs`` merge key by key into the recipe's tables.  See docs/training.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import typing

from training import configs, paths
from training.errors import UserError, cli_main, fail
from training.loss import LossConfig
from training.run.compiler import COMPILE_MODES
from training.training_loop import TrainConfig, train
from training.run.distributed import cleanup_distributed


def choices() -> dict[str, list[str]]:
    """Flags with a fixed set of values."""
    from training.dual_discriminator import DualDiscriminator, MaskDualDiscriminator
    from training.triplane import GENERATORS
    return {"device": ["auto", "cpu", "cuda"], "bf16": ["auto", "on", "off"], "compile_mode": list(COMPILE_MODES),
            "generator": [""] + sorted(GENERATORS), "preset": [""] + configs.model_presets(),
            "discriminator": [DualDiscriminator.__name__, MaskDualDiscriminator.__name__],
            "lpips_net": ["vgg", "alex"], "split": ["train", "val", "test", "all"]}


def _json_object(text: str) -> dict:
    try:
        v = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON ({e})") from None
    if not isinstance(v, dict):
        raise argparse.ArgumentTypeError("expected a JSON object, e.g. '{\"framing\": \"body\"}'")
    return v


def _add_fields(parser, cls, group_title, fixed: dict, skip=()):
    """A flag for each field of ``cls`` except those in ``skip`` (a caller that defines them its own way)."""
    group = parser.add_argument_group(group_title)
    hints = typing.get_type_hints(cls)
    docs = configs.field_docs(cls)
    for f in dataclasses.fields(cls):
        if f.name in ("loss", "data_root") or f.name in skip:
            continue
        typ = hints[f.name]
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        text = docs.get(f.name, "")
        if typ is bool or set(typing.get_args(typ)) == {bool, type(None)}:
            # bool | None: unset means "decided at run time", which the field's comment explains
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                               help=text if default is None else f"{text} (default {default})")
        elif typ is dict:
            group.add_argument(flag, dest=f.name, type=_json_object, default=None, metavar="JSON",
                               help=f"{text} (default {json.dumps(default)})")
        else:
            group.add_argument(flag, dest=f.name, type=typ, default=None, choices=fixed.get(f.name),
                               metavar=None if f.name in fixed else typ.__name__.upper(),
                               help=f"{text} (default {default!r})")


def build_parser(parser: argparse.ArgumentParser | None = None, skip=()) -> argparse.ArgumentParser:
    """The trainer's flags (on ``parser`` when given, e.g. the model benchmark's), but those in ``skip``."""
    p = parser or argparse.ArgumentParser(prog="python -m _train.eg3dc.train", description=__doc__.split("\n")[0],
                                          epilog=f"recipes (--config NAME): {', '.join(configs.recipes())}; "
                                                 f"presets: {', '.join(configs.model_presets())}")
    p.add_argument("--config", default=None,
                   help="recipe: a TOML file, or a name under _configs/recipes (e.g. release/nova_v1); "
                        "a JSON file of TrainConfig keys is read too")
    paths.add_data_root_arg(p)
    fixed = choices()
    _add_fields(p, TrainConfig, "run, data, networks, optimisation, schedule", fixed, skip)
    _add_fields(p, LossConfig, "losses", fixed, skip)
    return p


def read_recipe(name: str) -> dict:
    """A recipe's TrainConfig keys (``description`` dropped); JSON files (the older format) too."""
    path = configs.resolve_recipe(name)
    if path.suffix == ".json":
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise fail(path, f"not JSON ({e})") from None
    data = configs.load_config(path)
    data.pop("description", None)
    return data


def config_from_args(argv=None) -> TrainConfig:
    return config_from_namespace(build_parser().parse_args(argv))


def config_from_namespace(args: argparse.Namespace) -> TrainConfig:
    """The recipe of --config with the flags given on top (flags not given stay the recipe's)."""
    base: dict = read_recipe(args.config) if args.config else {}
    loss = dict(base.pop("loss", {}))
    for f in dataclasses.fields(TrainConfig):
        v = getattr(args, f.name, None)
        if v is None:
            continue
        base[f.name] = configs.deep_merge(base.get(f.name) or {}, v) if isinstance(v, dict) else v
    for f in dataclasses.fields(LossConfig):
        v = getattr(args, f.name, None)
        if v is not None:
            loss[f.name] = v
    if args.data_root:
        base["data_root"] = args.data_root
    try:
        base["loss"] = dataclasses.asdict(LossConfig(**loss))
    except TypeError as e:
        raise fail(args.config, f"bad loss keys ({e})") from None
    try:
        return TrainConfig.from_dict(base)
    except (TypeError, UserError) as e:
        where = configs.resolve_recipe(args.config) if args.config else "command line"
        raise UserError(f"{where}: {str(e).removeprefix('config: ')}") from None


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
