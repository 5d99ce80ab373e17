"""One spelling of ``--device`` for every command: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""

from __future__ import annotations

import os
import re

from rdd_edge.errors import ConfigError

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N"
_DEVICE = re.compile(r"auto|cpu|cuda(?::(\d+))?")


def parse_device(text: str | None, option: str = "--device") -> str:
    """Normalise a device string (None -> ``auto``); ConfigError naming the choices otherwise."""
    value = "auto" if text is None else str(text).strip().lower()
    if not _DEVICE.fullmatch(value):
        raise ConfigError(f"{option} {text!r}: expected one of {DEVICE_CHOICES}")
    return value


def cuda_index(device: str) -> int:
    """The GPU index of ``cuda:N`` (0 for ``cuda`` and ``auto``)."""
    m = _DEVICE.fullmatch(parse_device(device))
    return int(m.group(1)) if m and m.group(1) else 0


def wants_gpu(device: str) -> bool:
    """True for ``cuda`` / ``cuda:N``: a GPU is required, not just preferred."""
    return parse_device(device).startswith("cuda")


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, e.g. a container's or taskset's share)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def check_threads(threads: int | None, flag: str = "--threads") -> int | None:
    """``--threads`` within 1..the usable CPUs (thousands of threads on two cores only thrash: issue 32)."""
    if threads is None:
        return None
    cpus = usable_cpus()
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= cpus:
        raise ConfigError(f"{flag} {threads}: this process may use {cpus} CPUs; give 1..{cpus} (or leave it out for "
                          "the runtime's choice)")
    return threads
