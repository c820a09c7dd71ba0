"""Released models: the trained checkpoints that ship with the repository.

``_configs/release.toml`` lists them (one table per model: task, framing,
inferquery, sha256, ...); the files follow the training runs' layout
``_train/eg3dc/runs/<run>/<NNNNN>/network-snapshot-<kimg>.pt`` so that
``--inferquery <run>-<NNNNN>-<kimg>`` finds them too.  ``docs/model_card.md``
describes each model (data, training time, metrics).
"""
from __future__ import annotations

import dataclasses
import hashlib
import tomllib
from pathlib import Path

from training import paths
from training.errors import UserError, fail

REGISTRY = paths.REPO / "_configs" / "release.toml"


@dataclasses.dataclass(frozen=True)
class ReleasedModel:
    name: str              # key in release.toml (the --model choice)
    description: str
    generator: str         # TriPlaneGenerator | TriPlaneGenerator_v0 | TriPlaneGenerator_v1
    framing: str           # head | body
    two_view: bool         # reads a back image
    inferquery: str        # <run>-<NNNNN>-<kimg>
    sha256: str
    default: bool = False

    def path(self, runs: Path | None = None) -> Path:
        from training.eval.generate import resolve_inferquery
        return resolve_inferquery(self.inferquery, runs)


def load_registry(path: Path | None = None) -> dict[str, ReleasedModel]:
    """name -> ReleasedModel, in the file's order."""
    path = Path(path or REGISTRY)
    if not path.is_file():
        raise fail(path, "release registry not found")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise fail(path, f"not TOML ({e})") from None
    fields = {f.name for f in dataclasses.fields(ReleasedModel)} - {"name"}
    out = {}
    for name, entry in (data.get("models") or {}).items():
        unknown = set(entry) - fields
        if unknown:
            raise fail(path, f"models.{name}: unknown keys {sorted(unknown)}")
        try:
            out[name] = ReleasedModel(name=name, **entry)
        except TypeError as e:
            raise fail(path, f"models.{name}: {e}") from None
    return out


def default_model(registry: dict[str, ReleasedModel]) -> ReleasedModel:
    for m in registry.values():
        if m.default:
            return m
    raise UserError(f"{REGISTRY}: no model is marked default = true")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def released_checkpoint(name: str | None = None, registry_path: Path | None = None,
                        runs: Path | None = None, verify: bool = True) -> tuple[ReleasedModel, Path]:
    """(model, checkpoint path) of a released model (``None``: the default one), checked against its sha256."""
    reg = load_registry(registry_path)
    if not reg:
        raise fail(registry_path or REGISTRY, "no released models listed")
    if name is None:
        m = default_model(reg)
    elif name in reg:
        m = reg[name]
    else:
        raise UserError(f"--model: {name!r} is not a released model (choose from {', '.join(reg)})")
    p = m.path(runs or paths.project_dir() / "_train" / "eg3dc" / "runs")
    if verify and file_sha256(p) != m.sha256:
        raise fail(p, f"sha256 differs from {registry_path or REGISTRY} (a changed or partial file); "
                      "restore it with `git checkout -- <file>`")
    return m, p
