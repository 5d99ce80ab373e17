"""One parser for image sizes on the command line and in configs: ``HxW`` -> ``(H, W)``."""

from __future__ import annotations

import re
from typing import Any

from rdd_edge.errors import ConfigError

MIN_SIDE = 8  # every network here works at output stride 8
_SIZE = re.compile(r"\s*(\d+)\s*(?:[xX*,]\s*(\d+)\s*)?")


def parse_hw(value: Any, option: str = "--size") -> tuple[int, int] | None:
    """``"360x480"``, ``"360,480"``, ``"360"`` (square) or ``(360, 480)`` -> ``(360, 480)``; None stays None.

    Both sides must be at least 8; anything else is a ConfigError that names ``option``.
    """
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        parts = list(value)
        if len(parts) == 1:
            parts = parts * 2
    else:
        m = _SIZE.fullmatch(str(value))
        parts = [m.group(1), m.group(2) or m.group(1)] if m else []
    try:
        h, w = (int(p) for p in parts)
    except (TypeError, ValueError):
        raise ConfigError(f"{option} {value!r}: expected HxW, e.g. 360x480") from None
    if h < MIN_SIDE or w < MIN_SIDE:
        raise ConfigError(f"{option} {value!r}: height and width must be at least {MIN_SIDE}, e.g. 360x480")
    return h, w


def parse_profile(value: Any, option: str = "--profile") -> Any:
    """``"256x512,512x1024,1024x2048"`` (or three sizes) -> ``((minH, minW), (optH, optW), (maxH, maxW))``:
    a TensorRT profile's H x W range; None and an already parsed tuple stay as they are."""
    if value is None or isinstance(value, tuple):
        return value
    parts = [p for p in str(value).replace(";", ",").split(",") if p.strip()] if isinstance(value, str) else list(value)
    if len(parts) != 3:
        raise ConfigError(f"{option} {value!r}: expected three sizes min,opt,max, e.g. 256x512,512x1024,1024x2048")
    return tuple(parse_hw(p, option) for p in parts)


def format_hw(size: Any) -> str:
    """``(360, 480)`` -> ``"360x480"``."""
    return "x".join(str(int(v)) for v in size)
