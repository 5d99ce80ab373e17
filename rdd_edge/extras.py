"""How to add one of rdd-edge's optional parts, worded once for every message that needs it.

rdd-edge is installed from its repository (``pip install -e ".[extra]"`` in a clone) or, on a
device, from the wheel a bundle carries (its ``install.sh`` chooses the extras itself); it is not
on PyPI, so no message may tell a user to ``pip install rdd-edge``.
"""

from __future__ import annotations


def install_hint(extra: str) -> str:
    """``pip install -e '.[trt]'`` in the clone, or the bundle's wheel with that extra."""
    return (f"pip install -e '.[{extra}]' in your rdd-edge clone (on a device: "
            f"pip install 'wheels/rdd_edge-<version>-py3-none-any.whl[{extra}]' from a bundle)")
