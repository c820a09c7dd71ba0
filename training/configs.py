"""Configuration files: model presets and training recipes, all under ``_configs/`` (TOML).

    _configs/models/<name>.toml     generator presets: ``class`` + ``[kwargs]`` (constructor keywords)
    _configs/recipes/<name>.toml    training recipes: TrainConfig keys, ``[loss]``, ``[g_kwargs]``, ...
    _configs/release.toml           the released checkpoints (training.infer.release)

Every file starts with ``description = "..."`` (what it is for).  ``base = "file.toml"`` (or a list, applied
in order) inherits from other files, paths relative to the file; tables merge key by key, the file's own
values win.  Comments say why a value was chosen.
"""
from __future__ import annotations

import copy
import tomllib
from pathlib import Path

from training.errors import UserError, fail

CONFIG_DIR = Path(__file__).resolve().parent.parent / "_configs"
MODELS_DIR = CONFIG_DIR / "models"
RECIPES_DIR = CONFIG_DIR / "recipes"
META_KEYS = ("description", "base")


def deep_merge(base: dict, over: dict) -> dict:
    """``over`` on top of ``base``: nested dicts merge key by key, anything else is replaced."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def read_toml(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise fail(path, "config file not found")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise fail(path, f"not valid TOML ({e})") from None
    except UnicodeDecodeError:
        raise fail(path, "not a text file") from None


def load_config(path, _seen: tuple = ()) -> dict:
    """A config file with its bases merged in; ``description`` is the file's own, ``base`` is consumed."""
    path = Path(path).resolve()
    if path in _seen:
        raise fail(path, "config inherits from itself (base cycle)")
    data = read_toml(path)
    bases = data.get("base", [])
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise fail(path, "base must be a file name or a list of file names")
    merged: dict = {}
    for b in bases:
        parent = load_config(path.parent / b, _seen + (path,))
        parent.pop("description", None)
        merged = deep_merge(merged, parent)
    merged = deep_merge(merged, {k: v for k, v in data.items() if k != "base"})
    return merged


def _names(folder: Path, required_key: str) -> list[str]:
    out = []
    for p in sorted(folder.glob("*.toml")):
        try:
            if required_key in load_config(p):
                out.append(p.stem)
        except UserError:
            continue
    return out


def model_presets() -> list[str]:
    """Names of the generator presets (files of _configs/models with a class)."""
    return _names(MODELS_DIR, "class")


def model_preset(name: str) -> dict:
    """{'class', 'kwargs', 'description'} of a generator preset."""
    path = MODELS_DIR / f"{name}.toml"
    if not path.is_file() or name not in model_presets():
        raise UserError(f"unknown preset {name!r}: expected one of {', '.join(model_presets())} "
                        f"(files of {MODELS_DIR})")
    cfg = load_config(path)
    return {"class": cfg["class"], "kwargs": cfg.get("kwargs", {}), "description": cfg.get("description", "")}


def recipes() -> list[str]:
    """Recipe names relative to _configs/recipes (without .toml), for --help."""
    return sorted(str(p.relative_to(RECIPES_DIR).with_suffix("")) for p in RECIPES_DIR.rglob("*.toml"))


def resolve_recipe(name_or_path: str) -> Path:
    """A recipe given as a path, or as a name under _configs/recipes (``release/nova_v1``)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    q = RECIPES_DIR / (name_or_path if name_or_path.endswith(".toml") else f"{name_or_path}.toml")
    if q.is_file():
        return q
    raise fail(p, f"config file not found (recipes: {', '.join(recipes())})")


def field_docs(cls) -> dict[str, str]:
    """name -> documentation of each field of a dataclass, read from the comments beside its definition in
    the source (a trailing comment and the deeper-indented comment lines under it): the one place a
    setting is explained is next to its default, and ``--help`` shows that text."""
    import inspect
    import io
    import re
    import tokenize
    src = inspect.getsource(cls)
    lines = src.splitlines()
    field_re = re.compile(r"^    (\w+)\s*:")
    docs: dict[str, list[str]] = {}
    current = None
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    for i, line in enumerate(lines, 1):
        m = field_re.match(line)
        if m:
            current = m.group(1)
            docs[current] = [comments[i]] if i in comments else []
        elif current and line.strip().startswith("#") and len(line) - len(line.lstrip()) > 4:
            docs[current].append(comments.get(i, ""))
        elif line.strip() and not line.strip().startswith("#"):
            if not line.startswith("        "):      # a method or a section: the field's text ended
                current = None
    return {k: " ".join(v).strip() for k, v in docs.items()}
