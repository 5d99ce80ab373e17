"""Is this a Jetson, and which CUDA did JetPack put on it: read from files, never from CUDA itself.

A Jetson is recognised by any of three signs, because containers often lack the first:
``/etc/nv_tegra_release`` (Jetson Linux), ``/proc/device-tree/compatible`` naming ``nvidia,tegra...``
(the SoC, visible in every container) and a kernel release ending in ``-tegra`` (``uname -r``).
The board's CUDA is the toolkit JetPack installs under ``/usr/local/cuda`` (its ``version.json``):
the version the driver and TensorRT were built with, so the one runtime that cannot skew.
Every path is a module attribute so tests point them at faked machines.
"""

from __future__ import annotations

import json
import platform
import re
from pathlib import Path

TEGRA_RELEASE = Path("/etc/nv_tegra_release")
DEVICE_TREE_COMPATIBLE = Path("/proc/device-tree/compatible")
CUDA_HOME = Path("/usr/local/cuda")


def _kernel_release() -> str:
    return platform.release()


def jetson_signs() -> list[str]:
    """Which signs of a Jetson this machine shows (empty: not a Jetson)."""
    signs = []
    if TEGRA_RELEASE.is_file():
        signs.append(str(TEGRA_RELEASE))
    try:
        # NUL-separated strings, e.g. "nvidia,p3737-0000+p3701-0000\0nvidia,tegra234\0nvidia,tegra"
        compatible = DEVICE_TREE_COMPATIBLE.read_bytes().split(b"\0")
    except OSError:
        compatible = []
    if any(c.startswith(b"nvidia,tegra") for c in compatible):
        signs.append(f"{DEVICE_TREE_COMPATIBLE} (nvidia,tegra)")
    if _kernel_release().endswith("-tegra"):
        signs.append(f"kernel {_kernel_release()}")
    return signs


def is_jetson() -> bool:
    """Whether this is a Jetson (any sign of :func:`jetson_signs`)."""
    return bool(jetson_signs())


def board_cuda_version() -> str | None:
    """The CUDA toolkit under /usr/local/cuda (``version.json``'s ``cuda.version``, e.g. ``"12.6.68"``); None without one."""
    try:
        doc = json.loads((CUDA_HOME / "version.json").read_text())
    except (OSError, ValueError):
        return None
    version = (doc.get("cuda") or {}).get("version") if isinstance(doc, dict) and isinstance(doc.get("cuda"), dict) else None
    return str(version) if isinstance(version, str) and re.match(r"^\d+\.\d+", version) else None


def major_minor(version: str | None) -> tuple[int, int] | None:
    """``"12.6.68"`` -> (12, 6); None when it does not start with two numbers."""
    m = re.match(r"^(\d+)\.(\d+)", str(version or ""))
    return (int(m.group(1)), int(m.group(2))) if m else None
