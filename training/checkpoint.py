"""Checkpoints: a plain, versioned torch.save of state dicts (docs/DESIGN.md "Checkpoints").

    {"format": "anime3d-checkpoint", "version": 1, "step": int, "kimg": float,
     "precision": "float32" | "bfloat16",
     "modules": {name: {"class": "training.triplane.TriPlaneGenerator_v1",
                        "config": {...} | None, "state_dict": {...}[, "untrained": True]}},
     "training_config": {...}, "extra": {...}}

Only tensors and plain Python values are stored, so ``torch.load(weights_only=True)``
reads it without importing (or trusting) any pickled class; modules are
rebuilt from their class path and constructor config.
"""
from __future__ import annotations

import importlib
import json
import pickle
import zipfile
from pathlib import Path

import torch
import torch.nn as nn

from training.errors import atomic_path, cli_main, fail

FORMAT = "anime3d-checkpoint"
VERSION = 1
TRUSTED_PREFIXES = ("training.", "torch.optim.")   # classes build_module may import


def _class_path(obj) -> str:
    t = type(obj)
    return f"{t.__module__}.{t.__qualname__}"


def _cpu(x):
    """Detached CPU copies of every tensor in a nested state (optimizer states nest dicts and lists).
    A CPU tensor that is its whole storage is saved as it is (no second copy of every weight and Adam
    moment in memory while the snapshot is written); views are cloned so that only their data is saved."""
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.device.type == "cpu" and x.is_contiguous() and x.storage_offset() == 0 and \
                x.untyped_storage().nbytes() == x.numel() * x.element_size():
            return x
        return x.cpu().clone()
    if isinstance(x, dict):
        return {k: _cpu(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_cpu(v) for v in x)
    return x


class _Untrained:
    """A network stored without weights: it never took an optimiser step (see ``untrained``)."""

    def __init__(self, module: nn.Module):
        self.module = module


def untrained(module: nn.Module) -> _Untrained:
    """Store ``module`` as a marker (class, config, ``"untrained": True``, empty state dict): a training run
    rebuilds it from its seed on resume, which gives the same weights (training.run.snapshots)."""
    return _Untrained(module)


def _entry(name: str, obj) -> dict:
    if isinstance(obj, _Untrained):
        cfg = getattr(obj.module, "config", None)
        return {"class": _class_path(obj.module), "config": json.loads(json.dumps(cfg)) if cfg is not None else None,
                "state_dict": {}, "untrained": True}
    if isinstance(obj, nn.Module):
        cfg = getattr(obj, "config", None)
        if cfg is not None:
            cfg = json.loads(json.dumps(cfg))   # must round-trip through JSON (plain values only)
        return {"class": _class_path(obj), "config": cfg, "state_dict": _cpu(obj.state_dict())}
    if hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict"):    # optimizers, schedulers, scalers
        return {"class": _class_path(obj), "config": None, "state_dict": _cpu(obj.state_dict())}
    if isinstance(obj, dict):
        return {"class": None, "config": None, "state_dict": _cpu(obj)}
    raise TypeError(f"module {name!r}: cannot checkpoint a {type(obj).__name__}")


def save_checkpoint(path, modules: dict, step: int, kimg: float, training_config: dict | None = None,
                    extra: dict | None = None) -> Path:
    """Write modules (nn.Module with .config, optimizers, or plain state dicts) atomically to path."""
    ckpt = {"format": FORMAT, "version": VERSION, "step": int(step), "kimg": float(kimg), "precision": "float32",
            "modules": {k: _entry(k, v) for k, v in modules.items()},
            "training_config": json.loads(json.dumps(training_config or {})),
            "extra": _cpu(extra or {})}
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return path


def _upcast(sd):
    if isinstance(sd, torch.Tensor):
        return sd.float() if sd.dtype == torch.bfloat16 else sd
    if isinstance(sd, dict):
        return {k: _upcast(v) for k, v in sd.items()}
    return sd


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read and validate a checkpoint; bf16 exports come back as float32.  Bad files raise UserError."""
    path = Path(path)
    if not path.is_file():
        raise fail(path, "checkpoint file not found")
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:1] == b"\x80":
        raise fail(path, "a plain Python pickle, not an anime3d checkpoint (legacy .pkl snapshots must be converted)")
    if head != b"PK\x03\x04":
        raise fail(path, "not a checkpoint (unrecognised file format)" if len(head) == 4 else "empty or truncated file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights_only" in str(e) or "Weights only" in str(e):
            raise fail(path, "not a checkpoint of this toolkit (it pickles code objects; legacy .pkl "
                             "snapshots must be converted)") from None
        raise fail(path, f"corrupt checkpoint ({str(e).splitlines()[0]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise fail(path, f"corrupt or truncated checkpoint ({msg})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise fail(path, f"not an {FORMAT} file")
    if ckpt.get("version") != VERSION:
        raise fail(path, f"checkpoint format version {ckpt.get('version')!r}; this code reads version {VERSION}")
    if not isinstance(ckpt.get("modules"), dict):
        raise fail(path, "checkpoint has no modules")
    if ckpt.get("precision") == "bfloat16":
        for e in ckpt["modules"].values():
            e["state_dict"] = _upcast(e["state_dict"])
    return ckpt


def _import_class(class_path: str, where):
    if not class_path or not class_path.startswith(TRUSTED_PREFIXES):
        raise fail(where, f"refusing to build class {class_path!r} (only {', '.join(TRUSTED_PREFIXES)}*)")
    mod, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError):
        raise fail(where, f"class {class_path} does not exist in this code version") from None


def saved_config(cls, config: dict) -> dict:
    """A constructor config from a checkpoint, brought up to this code version by the class's
    ``config_from_checkpoint`` when it has one (keys added since keep the old behaviour)."""
    return cls.config_from_checkpoint(config) if hasattr(cls, "config_from_checkpoint") else config


def config_changes(saved: dict, now: dict, prefix: str = "") -> list[str]:
    """``key: saved -> now`` for every setting that differs between two constructor configs (nested dicts
    by dotted keys): what a snapshot was built with that a network is not."""
    out = []
    for k in sorted(set(saved) | set(now)):
        a, b = saved.get(k), now.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_changes(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out


class _SkipRandomInit(torch.overrides.TorchFunctionMode):
    """Builds a module without the random initialisation of its weights (torch.nn.init and the in-place
    uniform_ / normal_ draws): a generator's construction costs 0.05 s instead of 0.25 s on a CPU.  Only for
    a module whose parameters and persistent buffers are then loaded from a state dict; a non-persistent
    buffer must not come from these draws (tests/test_checkpoint.py checks the generators)."""
    DRAWS = (torch.Tensor.uniform_, torch.Tensor.normal_)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.DRAWS or getattr(func, "__module__", None) == "torch.nn.init":
            return args[0] if args else kwargs["tensor"]
        return func(*args, **(kwargs or {}))


def build_module(entry: dict, where="checkpoint") -> nn.Module:
    """Rebuild an nn.Module from its checkpoint entry (class path + config + state dict)."""
    if entry.get("untrained"):
        raise fail(where, f"{entry.get('class')} is stored untrained (no weights): it never took a training step")
    if entry.get("config") is None:
        raise fail(where, f"{entry.get('class')} was saved without a constructor config; build it yourself "
                          "and load entry['state_dict']")
    cls = _import_class(entry["class"], where)
    config = saved_config(cls, entry["config"])
    try:
        with _SkipRandomInit():     # every parameter is loaded right after: its random draw is wasted time
            module = cls(**config)
    except TypeError as e:
        raise fail(where, f"cannot rebuild {entry['class']} from its config ({e})") from None
    try:
        module.load_state_dict(entry["state_dict"], strict=True)
    except RuntimeError as e:
        raise fail(where, f"weights do not fit {entry['class']} ({str(e).splitlines()[0]})") from None
    return module


def load_generator(path, expected=None, key: str = "G_ema", device="cpu", ckpt=None) -> nn.Module:
    """Generator from a checkpoint, in eval mode without gradients.

    expected: None, a class, or a class name ('TriPlaneGenerator_v1' or the full path); a checkpoint
    of another variant raises UserError.  ckpt: the file's load_checkpoint result, when already read.
    """
    ckpt = load_checkpoint(path) if ckpt is None else ckpt
    if key not in ckpt["modules"]:
        raise fail(path, f"no {key!r} in checkpoint (it has {sorted(ckpt['modules'])})")
    entry = ckpt["modules"][key]
    if expected is not None:
        want = expected.__name__ if isinstance(expected, type) else str(expected).rpartition(".")[2]
        have = str(entry.get("class")).rpartition(".")[2]
        if want != have:
            raise fail(path, f"holds a {have}, not the expected {want}")
    G = build_module(entry, path).to(device).eval().requires_grad_(False)
    G.checkpoint_info = {"path": str(path), "step": ckpt["step"], "kimg": ckpt["kimg"]}
    return G


def export_bf16(path_in, path_out, keep=None) -> Path:
    """Module weights in bfloat16 for transport (about half the size); optimizer states are dropped.
    keep: module names to keep (e.g. ('G_ema', 'D'): a run resumes from these, G restarting as G_ema).
    load_checkpoint upcasts to float32."""
    ckpt = load_checkpoint(path_in)
    if keep is not None:
        missing = sorted(set(keep) - set(ckpt["modules"]))
        if missing:
            raise fail(path_in, f"no module(s) {missing} to export (it has {sorted(ckpt['modules'])})")

    def down(x):
        if isinstance(x, torch.Tensor):
            return x.to(torch.bfloat16) if x.dtype in (torch.float32, torch.float64, torch.float16) else x
        if isinstance(x, dict):
            return {k: down(v) for k, v in x.items()}
        return x

    mods = {}
    for name, e in ckpt["modules"].items():
        if str(e.get("class")).startswith("torch.optim.") or (keep is not None and name not in keep):
            continue
        mods[name] = {**e, "state_dict": down(e["state_dict"])}
    ckpt["modules"], ckpt["precision"] = mods, "bfloat16"
    path_out = Path(path_out)
    with atomic_path(path_out) as tmp:
        torch.save(ckpt, tmp)
    return path_out


@cli_main
def main(argv=None):
    """python -m training.checkpoint export-bf16 IN OUT [--keep G_ema,D]"""
    import argparse
    p = argparse.ArgumentParser(prog="python -m training.checkpoint", description="checkpoint utilities")
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export-bf16", help="bfloat16 copy for transport (no optimizer states)")
    e.add_argument("src")
    e.add_argument("dst")
    e.add_argument("--keep", default=None, help="comma-separated module names to keep (default: all networks)")
    a = p.parse_args(argv)
    out = export_bf16(a.src, a.dst, keep=a.keep.split(",") if a.keep else None)
    print(f"{out} ({out.stat().st_size / 2 ** 20:.1f} MiB)")


if __name__ == "__main__":
    main()
