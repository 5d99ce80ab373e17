"""The fake-quantized student of quantization-aware distillation (QAD), in torch.

TensorRT's explicit-quantization contract (TensorRT Developer Guide, "Working with Quantized Types" >
"Explicit Quantization": symmetric scales, zero point 0;
https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/work-quantized-types.html), the
one ``model.int8.onnx`` is written to, simulated with torch's own fake-quantize ops:

- **weights** per output channel, symmetric int8 in [-127, 127] (ONNX Runtime's symmetric weight range),
  scale = max |w| / 127 of the channel, recomputed every step from the current weights;
- **Conv inputs** per tensor, symmetric int8, zero point 0, with the scale the PTQ export calibrated
  (read from its TensorRT file and kept fixed: the exported files keep the calibrated scales);
- both with straight-through gradients (``torch.fake_quantize_per_*_affine`` pass the gradient inside
  the range and zero it where the value was clipped);
- Convs the export keeps in float stay float.

BatchNorm is folded into the Conv before it (:func:`fold_batchnorm`), as the ONNX export folds it, so the
weights that are fake-quantized here are the weights the INT8 files quantize; the BN that is left is an
identity plus the folded bias (its statistics frozen: the student trains in eval mode), so the state dict
keeps the architecture's keys and a checkpoint of it loads like any other.

Why torch's ops and not NVIDIA Model Optimizer (``nvidia-modelopt`` 0.47, evaluated in December 2026 on
this CPU with torch 2.14): its torch quantization works on a CPU, but it needs nine packages the project
does not have (scipy, pulp, omegaconf, ninja, nvidia-ml-py, regex, requests (undeclared) ...), its import
took 61 s on the 2-core test machine, it swaps our Conv modules for its own classes (extra quantizer
entries in every state dict), and its calibration would have to be overwritten with the export's PTQ
scales and the BN fold done anyway. The contract above is these few lines with torch alone, so the test
suite needs no extra.
"""

from __future__ import annotations

import contextlib
import types
from typing import Any, Iterator

import torch
from torch import nn

WEIGHT_QMAX = 127  # symmetric int8 weights: [-127, 127] (ONNX Runtime's symmetric range, what the files hold)
ACT_QMIN, ACT_QMAX = -128, 127  # QuantizeLinear to int8 saturates to the full type range


def conv_bn_pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    """(conv, batchnorm) module names where the BN reads the conv's output directly (one forward pass)."""
    produced: dict[int, str] = {}
    pairs: list[tuple[str, str]] = []
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(lambda mod, i, o, n=name: produced.__setitem__(id(o), n)))
        elif isinstance(m, nn.BatchNorm2d):
            def hook(mod: nn.Module, inputs: tuple, n: str = name) -> None:
                conv = produced.get(id(inputs[0]))
                if conv is not None:
                    pairs.append((conv, n))
            handles.append(m.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return list(dict.fromkeys(pairs))


def fold_batchnorm(model: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    """Fold every BN into the Conv before it, in place: the conv's weight becomes ``w * g / sqrt(v + eps)``, the
    BN an identity (mean 0, var 1 - eps, weight 1) that adds the folded bias. The function is unchanged; returns
    the pairs folded."""
    named = dict(model.named_modules())
    pairs = conv_bn_pairs(model, example)
    with torch.no_grad():
        for c, b in pairs:
            conv, bn = named[c], named[b]
            a = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            conv.weight.mul_(a.view(-1, 1, 1, 1))
            bias = bn.bias - bn.running_mean * a
            if conv.bias is not None:
                bias = bias + conv.bias * a
                conv.bias.zero_()
            bn.weight.fill_(1.0)
            bn.bias.copy_(bias)
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)
    return pairs


def folded_bias(model: nn.Module, conv: str, pairs: list[tuple[str, str]]) -> torch.Tensor | None:
    """The bias a conv has once its BN is folded (the identity BN's bias plus its own), None without either."""
    named = dict(model.named_modules())
    bn = next((named[b] for c, b in pairs if c == conv), None)
    own = named[conv].bias
    if bn is None:
        return None if own is None else own.detach()
    return bn.bias.detach() + (own.detach() if own is not None else 0.0)


def fake_weight(w: torch.Tensor) -> torch.Tensor:
    """Per-output-channel symmetric int8 fake quantization of a conv weight (straight-through gradient)."""
    scale = (w.detach().abs().amax(dim=tuple(range(1, w.dim()))) / WEIGHT_QMAX).clamp_min(1e-12).float()
    zero = torch.zeros_like(scale, dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(w, scale, zero, 0, -WEIGHT_QMAX, WEIGHT_QMAX)


def fake_input(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Per-tensor symmetric int8 fake quantization with a fixed scale, zero point 0 (straight-through gradient)."""
    return torch.fake_quantize_per_tensor_affine(x, float(scale), 0, ACT_QMIN, ACT_QMAX)


@contextlib.contextmanager
def fake_quantized(model: nn.Module, scales: dict[str, float]) -> Iterator[list[str]]:
    """Inside the block, each conv named in ``scales`` reads its input fake-quantized with its scale and uses
    fake-quantized weights; every other conv stays float. The modules and their state dict are unchanged."""
    named = dict(model.named_modules())
    patched = []
    try:
        for name, scale in scales.items():
            conv = named[name]

            def forward(self: nn.Conv2d, x: torch.Tensor, s: float = scale) -> torch.Tensor:
                return self._conv_forward(fake_input(x, s), fake_weight(self.weight), self.bias)

            conv.forward = types.MethodType(forward, conv)
            patched.append(name)
        yield patched
    finally:
        for name in patched:
            del named[name].forward


def trainable(model: nn.Module, pairs: list[tuple[str, str]]) -> list[nn.Parameter]:
    """What QAD trains: every conv's weight and bias and the folded BNs' bias (the conv's bias once exported);
    everything else stays frozen, so the exported graph changes in its Conv initializers only."""
    named = dict(model.named_modules())
    params: list[Any] = []
    for m in named.values():
        if isinstance(m, nn.Conv2d):
            params += [p for p in (m.weight, m.bias) if p is not None]
    params += [named[b].bias for _, b in pairs]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    return params
