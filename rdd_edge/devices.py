"""One spelling of ``--device`` for every command: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""

from __future__ import annotations

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
