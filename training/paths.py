"""Where things live: repository, data root and the `_data/lustrous` tree layout."""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def project_dir() -> Path:
    return Path(os.environ.get("PROJECT_DN") or REPO)


def data_root(override: str | os.PathLike | None = None) -> Path:
    """--data-root, else $LUSTROUS_DATA_ROOT (from _env/machine_config.bashrc), else <project>/_data/lustrous."""
    if override:
        return Path(override)
    env = os.environ.get("LUSTROUS_DATA_ROOT")
    return Path(env) if env else project_dir() / "_data" / "lustrous"


def add_data_root_arg(parser) -> None:
    parser.add_argument("--data-root", default=None,
                        help="data tree root (default: $LUSTROUS_DATA_ROOT or _data/lustrous)")


def shard_of(char_id: str) -> str:
    """VRoid-style shard: the last character of the id."""
    return char_id[-1]


def key_of(char_id: str) -> str:
    """'shard/id', the form used in subset csv files."""
    return f"{shard_of(char_id)}/{char_id}"


def raw_dir(root: Path, source: str) -> Path:
    return Path(root) / "raw" / source


def renders_dir(root: Path, renderset: str) -> Path:
    return Path(root) / "renders" / renderset


def render_path(root: Path, renderset: str, dtype: str, char_id: str, view: str) -> Path:
    return renders_dir(root, renderset) / dtype / shard_of(char_id) / char_id / f"{view}.png"


def char_meta_path(root: Path, renderset: str, char_id: str) -> Path:
    return renders_dir(root, renderset) / "meta" / shard_of(char_id) / f"{char_id}.json"


def renderset_meta_path(root: Path, renderset: str) -> Path:
    return renders_dir(root, renderset) / f"{renderset}_meta.json"


def subset_csv(root: Path, dataset: str, split: str) -> Path:
    return Path(root) / "subsets" / f"{dataset}_{split}.csv"


def read_subset(root: Path, dataset: str, split: str) -> list[str]:
    """Character ids listed in subsets/<dataset>_<split>.csv ('shard/id' lines)."""
    from training.errors import fail
    p = subset_csv(root, dataset, split)
    if not p.exists():
        raise fail(p, f"subset not found (run `python -m _scripts.train.data_clean --dataset {dataset}` first)")
    return [line.strip().split("/")[-1] for line in p.read_text().splitlines() if line.strip()]


def eval_root(root: Path | None = None) -> Path:
    """``temp/eval`` under the data root (evaluation outputs live beside the data they measure)."""
    return data_root(root) / "temp" / "eval"


def eval_dir(inferquery: str, renderset: str, root: Path | None = None) -> Path:
    return eval_root(root) / inferquery / renderset
