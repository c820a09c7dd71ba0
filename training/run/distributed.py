"""Several processes (torchrun): the process group, rank-0 broadcasts, DDP wrappers that make a whole
training phase one DDP forward, the rank-consistent non-finite guard of an optimiser step, and the
stop signal every rank agrees on.  With one process every helper is a plain call.
"""
from __future__ import annotations

import dataclasses
import os
import signal

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from training.errors import UserError


# ---------------------------------------------------------------- distributed

@dataclasses.dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_arg: str) -> Dist:
    """From torchrun's environment: NCCL on GPUs, gloo on CPU; single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device_arg not in ("auto", "cpu", "cuda"):
        raise UserError(f"--device: {device_arg!r} is not auto, cpu or cuda")
    use_cuda = torch.cuda.is_available() if device_arg == "auto" else device_arg == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device visible")
    if use_cuda:
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
        torch.set_flush_denormal(True)   # denormal weights after Adam steps slow CPU convolutions up to 100x
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo",
                                **({"device_id": device} if use_cuda else {}))
    return Dist(rank, world, local, device)


def broadcast_object(obj, d: Dist):
    if d.world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sync_params(module: torch.nn.Module, d: Dist) -> None:
    """Every rank starts from rank 0's parameters and buffers (DDP does this itself for G and D)."""
    if d.world == 1:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=0)


class PhaseForward(torch.nn.Module):
    """A network whose forward is ``fn(net, *args)``.  A phase calls G or D several times (synthesize, render,
    real and fake logits) before one backward; wrapped in DDP, this makes the whole phase one forward, which
    is what DDP's reducer expects."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, fn, *args):
        return fn(self.net, *args)


def wrap_ddp(net: torch.nn.Module, d: Dist, find_unused: bool) -> DistributedDataParallel:
    """DDP over ``net`` (rank 0's weights broadcast on construction).  Buffers are not broadcast each forward
    (BatchNorm is frozen, the rest are constants); gradients live in the reducer's buckets (no copy)."""
    net.requires_grad_(True)  # DDP registers only parameters that require grad
    ddp = DistributedDataParallel(PhaseForward(net), device_ids=[d.device.index] if d.device.type == "cuda" else None,
                                  broadcast_buffers=False, gradient_as_bucket_view=True,
                                  find_unused_parameters=find_unused)
    net.requires_grad_(False)
    return ddp


def nonfinite_flag(params: list[torch.Tensor], d: Dist) -> torch.Tensor:
    """After DDP has averaged the gradients: a 0-d float tensor on the device, 1 if any gradient is NaN/Inf
    on any rank (every rank then skips the step), else 0; no sync with the host.  Parameters the phase did
    not use get zero gradients, as the 1-process loop always gave them, so Adam's moments move the same way
    with or without DDP."""
    grads = []
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    if not grads:
        return torch.zeros((), device=d.device)
    norms = torch._foreach_norm(grads, float("inf"))     # NaN/Inf anywhere -> a non-finite max
    bad = (~torch.isfinite(torch.stack(norms))).any().float()
    if d.world > 1:
        dist.all_reduce(bad)  # identical averaged gradients give identical flags; this makes sure of it
    return bad.clamp(max=1.0)


def guarded_step(opt: torch.optim.Optimizer, params: list[torch.Tensor], d: Dist) -> torch.Tensor:
    """opt.step() unless a gradient is NaN/Inf on some rank; returns nonfinite_flag (1: skipped).  A fused
    Adam (adam()) takes the flag as found_inf, as under GradScaler: its kernel leaves the weights, moments
    and step count alone, so the host never waits for the GPU between steps.  Other optimizers read it."""
    bad = nonfinite_flag(params, d)
    if opt.defaults.get("fused"):
        opt.found_inf = bad
        opt.step()
        opt.found_inf = None        # read by every later step() call: set for this one only
    elif not bad.item():
        opt.step()
    return bad



# ---------------------------------------------------------------- signals

class StopFlag:
    """SIGTERM/SIGINT set a flag; the loop finishes its step, writes a snapshot and exits."""

    def __init__(self):
        self.stop = False
        self._old = {}
        for s in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[s] = signal.signal(s, self._handler)
            except ValueError:  # not the main thread
                pass

    def _handler(self, signum, frame):
        self.stop = True

    def agreed(self, d: Dist) -> bool:
        if d.world == 1:
            return self.stop
        t = torch.tensor([float(self.stop)], device=d.device)
        dist.all_reduce(t)
        return bool(t.item() > 0)

    def restore(self):
        for s, h in self._old.items():
            signal.signal(s, h)



def cleanup_distributed():
    if dist.is_initialized():
        dist.destroy_process_group()
