"""What a state dict read from a file must be before anything is computed from it.

Checkpoints, released files and ``--pretrained`` files are input: their keys must be tensor names,
their values plain dense tensors (not meta, sparse or quantized, which ``copy_`` and the finite
check cannot take) of a floating-point type (BN step counters: an integer), and each tensor's size
is checked before any operation materialises it: a 1-element storage expanded to 10^6 x 10^6
would otherwise make the finite check allocate terabytes (issue 32). One CheckpointError naming
the file and the tensor otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from rdd_edge.errors import CheckpointError

MAX_ELEMENTS = 1 << 28  # 268M per tensor (1 GB in FP32); the largest weight of these networks is ~2.4M
FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
INTEGERS = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
COUNTER = "num_batches_tracked"  # BatchNorm's step counter: the one integer entry of these networks


def check_state(state: Mapping[Any, Any], source: str | Path, finite: bool = False) -> None:
    """Raise CheckpointError naming ``source`` unless ``state`` is a state dict of plain, bounded weight
    tensors (and, with ``finite``, holds no inf/NaN)."""
    odd = next((k for k in state if not isinstance(k, str)), None)
    if odd is not None:
        raise CheckpointError(f"{source}: its state dict has a {type(odd).__name__} key {repr(odd)[:60]}; "
                              "a state dict maps tensor names (strings) to tensors")
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{source}: {k} is a {type(v).__name__}, not a tensor")
        kind = ("a meta (data-less)" if v.is_meta else "a sparse" if v.layout != torch.strided
                else "a quantized" if v.is_quantized else "")
        if kind:
            raise CheckpointError(f"{source}: {k} is {kind} tensor; weights must be plain dense tensors "
                                  "(save model.state_dict() of a float model)")
        if v.numel() > MAX_ELEMENTS:
            gb = v.numel() * v.element_size() / 1e9
            raise CheckpointError(f"{source}: {k} declares shape {tuple(v.shape)} ({v.numel():.3g} elements, {gb:.3g} GB "
                                  f"once materialised); no weight of these networks has more than {MAX_ELEMENTS:.3g}")
        ok = v.dtype in FLOATS or (k.endswith(COUNTER) and v.dtype in INTEGERS)
        if not ok:
            raise CheckpointError(f"{source}: {k} is a {str(v.dtype).replace('torch.', '')} tensor; weights are "
                                  "floating point (an integer only for BatchNorm's num_batches_tracked)")
    if finite:
        bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
        if bad:
            raise CheckpointError(f"{source}: {len(bad)} tensors hold inf/NaN ({', '.join(bad[:3])}"
                                  f"{', ...' if len(bad) > 3 else ''}): the file is damaged or its training diverged; "
                                  "use another copy of the weights")
