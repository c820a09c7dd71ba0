"""torch.compile for the training step: the --compile-mode options, the layout and guard switches the
trainer's graphs need, whether a run compiles, and inductor's kernel cache beside the runs (so that a
resumed or repeated run loads its kernels instead of compiling them again).
"""
from __future__ import annotations

import os
from pathlib import Path


from training.errors import UserError

from training.run.snapshots import runs_root
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from training.training_loop import TrainConfig


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_kwargs(mode: str) -> dict:
    """torch.compile keyword arguments of a --compile-mode."""
    if mode not in COMPILE_MODES:
        raise UserError(f"--compile-mode {mode!r}: not one of {', '.join(COMPILE_MODES)}")
    return {} if mode == "default" else {"mode": mode}


def force_layout_optimization(on: bool = True):
    """Inductor's channels-last layout in every compiled graph with convolutions (on), or its heuristic
    (off).  The heuristic keeps a graph NCHW when a conv has under half as many output as input channels,
    and reads a transposed conv's [in, out] weight as [out, in]: G's super-resolution (an upsampling conv of
    32 -> 256 channels) stayed NCHW and cuDNN transposed around each of its convs (EG3D step on the H100:
    197 -> 186 ms, docs/results.md).  Returns a function that restores the previous setting."""
    from torch._inductor import config as inductor_config
    old = inductor_config.force_layout_optimization
    inductor_config.force_layout_optimization = bool(on)

    def restore():
        inductor_config.force_layout_optimization = old
    return restore


def guard_requires_grad(on: bool = True):
    """Make compiled graphs guard on their parameters' requires_grad (on), or leave dynamo's default (off).
    By default (torch 2.11) dynamo skips the tensor guards of a module whose attribute dicts have not
    changed, and requires_grad_() changes no dict: a module compiled while frozen then replays its
    no-weight-gradient graph once it trains (its parameters silently get no gradient: pytorch#139476), and
    one compiled while training keeps computing weight gradients when frozen (D's in G main: 3.1 ms of
    cuDNN weight-gradient kernels in the EG3D step on the H100).  With the guards, each state gets its
    own graph.  Returns a function that restores the previous setting."""
    from torch._dynamo import config as dynamo_config
    old = dynamo_config.skip_tensor_guards_with_matching_dict_tags
    dynamo_config.skip_tensor_guards_with_matching_dict_tags = not on

    def restore():
        dynamo_config.skip_tensor_guards_with_matching_dict_tags = old
    return restore


def uses_cudagraphs(mode: str) -> bool:
    """Whether a --compile-mode records CUDA graphs (inductor's own table of the modes' options)."""
    from torch._inductor import list_mode_options
    return bool(list_mode_options(mode).get("triton.cudagraphs"))



def resolve_compile(cfg: TrainConfig, device) -> bool:
    """--compile / --no-compile as given; unset: compiled on CUDA, eager on a CPU (where compiling costs
    minutes and gains little)."""
    return device.type == "cuda" if cfg.compile is None else bool(cfg.compile)


INDUCTOR_CACHE = "inductor_cache"   # in <runs-dir>/<run-name>/: every run of the name reuses its kernels


def inductor_cache_dir(cfg: TrainConfig) -> Path:
    """Where compiled kernels are cached: $TORCHINDUCTOR_CACHE_DIR when set, else <runs-dir>/<run-name>/
    inductor_cache, so a resumed or repeated run loads the kernels instead of generating them again (the
    default, a folder of /tmp, is lost with the machine)."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    env = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    # importing torch._dynamo writes the default into the environment: that one is not the user's choice
    return Path(env) if env and env != default_cache_dir() else runs_root(cfg) / cfg.run_name / INDUCTOR_CACHE


def use_inductor_cache(path: Path):
    """Point inductor (and Triton, whose cache follows it) at ``path``; returns a function that restores the
    environment."""
    old = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    path.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)

    def restore():
        if old is None:
            os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
        else:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = old
    return restore


def compile_seconds() -> float | None:
    """Seconds this process has spent compiling so far (dynamo's frame and backward compiles, code generation
    and autotuning included), None where this torch does not count them."""
    try:
        from torch._dynamo.utils import calculate_time_spent
        return float(calculate_time_spent().get("total_wall_time", 0.0))
    except (ImportError, AttributeError):
        return None
