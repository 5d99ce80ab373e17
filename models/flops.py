"""Parameter and FLOP counts for the model table and reports.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode``, which counts convolutions and
matrix products only (BN, ReLU, pooling and resizing are not counted) and reports a
multiply-add as 2 FLOPs; so ``MACs = FLOPs / 2``. The count runs on the ``meta`` device, where
no arithmetic happens, so even the ResNet-101 teacher at 1024x2048 is instant.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from rdd_edge.models.registry import create_model


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all of them, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _meta_copy(model: nn.Module) -> nn.Module:
    """The same network on the meta device: rebuilt from its registry name when possible."""
    name, kwargs = getattr(model, "model_name", ""), getattr(model, "model_kwargs", None)
    if name and kwargs is not None:
        with torch.device("meta"):
            return create_model(name, **kwargs)
    return copy.deepcopy(model).to("meta")


def _count(model: nn.Module, x: torch.Tensor) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return int(counter.get_total_flops())


def count_flops(model: nn.Module, size: tuple[int, int] = (1024, 2048), batch: int = 1) -> tuple[int, int]:
    """``(flops, macs)`` of one forward pass of ``model`` on a ``batch`` x 3 x H x W input, in eval mode.

    Counts what ``forward`` computes: include the aux head by building the model with ``aux=True``.
    Falls back to a real CPU pass when the model cannot be moved to the meta device.
    """
    h, w = int(size[0]), int(size[1])
    try:
        meta = _meta_copy(model).eval()
        flops = _count(meta, torch.empty(batch, 3, h, w, device="meta"))
    except Exception:  # a module that does not support meta tensors: count on the CPU instead
        was_training = model.training
        model.eval()
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        try:
            flops = _count(model, torch.zeros(batch, 3, h, w, device=device))
        finally:
            model.train(was_training)
    return flops, flops // 2


def count_release_macs(model: nn.Module, size: tuple[int, int] = (1024, 2048), batch: int = 1) -> int:
    """Multiply-adds as the released code's counter (``utils/flops.py`` ``cal_multi_adds``) reports them.

    It visits the leaf Conv2d and Linear layers and sizes a conv's output as
    ``(in + 2 * padding - kernel) // stride + 1``, without the dilation: a dilated 3x3 conv (padding =
    dilation) is counted over a map ``2 * (dilation - 1)`` rows and columns larger than the one it
    computes. In the paper's networks (dilated layers 3-4, ASPP rates 12 / 24 / 36) that overstates
    the work; it is the source of the paper's "FLOPs" column, which these figures reproduce.
    Our :func:`count_flops` MACs are the true figures.
    """
    total = 0

    def hook(m: nn.Module, inputs: tuple, _out: Any) -> None:
        nonlocal total
        x = inputs[0]
        if isinstance(m, nn.Conv2d):
            oh = (x.shape[2] + 2 * m.padding[0] - m.kernel_size[0]) // m.stride[0] + 1
            ow = (x.shape[3] + 2 * m.padding[1] - m.kernel_size[1]) // m.stride[1] + 1
            total += m.in_channels * m.out_channels * m.kernel_size[0] * m.kernel_size[1] * oh * ow // m.groups
        elif isinstance(m, nn.Linear):
            total += m.weight.numel()

    meta = _meta_copy(model).eval()
    handles = [m.register_forward_hook(hook) for m in meta.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear)) and not any(True for _ in m.children())]
    try:
        with torch.no_grad():
            meta(torch.empty(batch, 3, int(size[0]), int(size[1]), device="meta"))
    finally:
        for h in handles:
            h.remove()
    return int(total)
