"""Distributed helpers: one code path for a single process and for ``torchrun``.

``init_distributed()`` reads ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` (set by torchrun) and
starts a process group (NCCL on GPUs, gloo on CPU); without them everything is a no-op and the
helpers behave as world size 1, rank 0.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from rdd_edge.devices import parse_device
from rdd_edge.errors import ConfigError


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    """True on the process that logs and saves (rank 0)."""
    return rank() == 0


def env_world_size() -> int:
    """WORLD_SIZE from the environment (1 when not launched by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device: str = "auto") -> torch.device:
    """Join the process group torchrun set up (if any) and return this process's device.

    ``device`` is ``auto`` (CUDA if present), ``cpu``, ``cuda`` or ``cuda:N``; under torchrun on
    CUDA each process takes ``cuda:LOCAL_RANK``.
    """

    device = parse_device(device)
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    if "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if use_cuda:
            torch.cuda.set_device(local)
            dev = torch.device("cuda", local)
        else:
            dev = torch.device("cpu")
        if not is_dist():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo", device_id=dev if use_cuda else None)
        return dev
    if use_cuda:
        return torch.device(device if device not in ("auto", "cuda") else "cuda")
    return torch.device("cpu")


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over all processes, in place; returns it (identity for one process)."""
    if is_dist():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_object(obj):
    """List of ``obj`` from every process (``[obj]`` for one process)."""
    if not is_dist():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src: int = 0):
    """``obj`` as held by rank ``src``, on every process."""
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if is_dist():
        dist.barrier()


def cleanup() -> None:
    """Leave the process group (safe to call when there is none)."""
    if is_dist():
        dist.destroy_process_group()
