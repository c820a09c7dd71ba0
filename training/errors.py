"""User-facing errors and atomic file writes.

Anything a user can cause (bad file, missing weights, wrong size) raises
``UserError("<file>: <problem>")``; scripts print that one line.  Every output
is written to a temporary name beside its target and renamed when complete,
so a killed job never leaves a half-written file.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import tempfile
from pathlib import Path


class UserError(Exception):
    """A problem with the user's input or environment, reported in one line."""


def fail(path, problem: str) -> "UserError":
    return UserError(f"{path}: {problem}")


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb"):
    """Yield a file object on a temporary name; rename onto ``path`` when the block succeeds."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise fail(path.parent, f"cannot write here ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path (same suffix) for libraries that want a file name; rename when done."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise fail(path.parent, f"cannot write here ({e.strerror or e})") from None
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def save_json_atomic(path, obj) -> None:
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=1)


def save_png_atomic(path, image) -> None:
    """``image``: PIL image or uint8 numpy array (H,W[,C])."""
    from PIL import Image
    import numpy as np
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    with atomic_write(path) as f:
        image.save(f, format="PNG", compress_level=1)   # fast encode: PNG writing dominates render time


def load_image(path, mode: str | None = None):
    """Open an image with a one-line error for a missing or unreadable file."""
    from PIL import Image, UnidentifiedImageError
    path = Path(path)
    if not path.exists():
        raise fail(path, "file not found")
    try:
        im = Image.open(path)
        im.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise fail(path, f"not a readable image ({e})") from None
    return im.convert(mode) if mode else im


def cli_main(fn):
    """Decorator for script entry points: UserError -> one line on stderr, exit 2."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
    return wrapper
