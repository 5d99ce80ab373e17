"""Cross-layer equalization (``rdd-edge qat --equalize``): per-channel ranges a per-tensor scale can carry.

A Conv -> ReLU -> Conv chain computes the same function when output channel c of the first Conv (its weights
and bias) is divided by s_c > 0 and input channel c of the second Conv is multiplied by s_c
(ReLU(x / s) = ReLU(x) / s). Nagel et al., "Data-Free Quantization Through Weight Equalization and Bias
Correction" (ICCV 2019) choose s_c = sqrt(r1_c / r2_c), r1_c the range of the first Conv's output channel c
weights and r2_c that of the second Conv's input channel c weights, so both end with the range sqrt(r1_c r2_c):
channels that one layer scaled far above the others (whose activations then set the per-tensor INT8 scale
and leave the others a few levels) come back level with them. Fine-tuning cannot do this in tens of steps:
it moves weights by about the learning rate per step, and a channel range that is 16x too wide needs the
weights to shrink 16x; and with the calibrated scales fixed the activations it would need are clipped.

Exact only through ReLU (not ReLU6 / Clip, whose bound does not scale), so only Conv -> Relu -> Conv chains
of the FP32 graph where nothing else reads the tensors between are equalized (read from the graph: the one
the INT8 files are made from); the activations between change, so the export calibrates them again.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rdd_edge.export.int8_layers import module_of


def relu_chains(graph: Any) -> list[tuple[str, str]]:
    """(first, second) torch modules of every Conv -> Relu -> Conv chain of an ONNX graph whose Conv output and
    Relu output each have that one reader, the second Conv not grouped."""
    producer = {o: n for n in graph.graph.node for o in n.output}
    readers: dict[str, int] = {}
    for n in graph.graph.node:
        for t in n.input:
            readers[t] = readers.get(t, 0) + 1
    chains = []
    for b in graph.graph.node:
        if b.op_type != "Conv" or any(a.name == "group" and a.i != 1 for a in b.attribute):
            continue
        relu = producer.get(b.input[0])
        if relu is None or relu.op_type != "Relu" or readers.get(b.input[0]) != 1:
            continue
        a = producer.get(relu.input[0])
        if a is None or a.op_type != "Conv" or readers.get(a.output[0]) != 1:
            continue
        first, second = module_of(a), module_of(b)
        if first is not None and second is not None:
            chains.append((first, second))
    return chains


def equalize(model: nn.Module, chains: list[tuple[str, str]], pairs: list[tuple[str, str]]) -> list[float]:
    """Equalize each chain of ``model`` in place (its BN folded: ``export.qad_torch.fold_batchnorm``, whose
    ``pairs`` say where the first Conv's bias lives); returns, per chain, the largest s_c applied."""
    named = dict(model.named_modules())
    bn_of = dict(pairs)
    out = []
    with torch.no_grad():
        for first, second in chains:
            a, b = named[first], named[second]
            r1 = a.weight.abs().amax(dim=(1, 2, 3))
            r2 = b.weight.abs().amax(dim=(0, 2, 3))
            s = torch.sqrt(r1 / r2.clamp_min(1e-12)).clamp(1e-4, 1e4)
            s = torch.where((r1 > 0) & (r2 > 0), s, torch.ones_like(s))
            a.weight.div_(s.view(-1, 1, 1, 1))
            if a.bias is not None:
                a.bias.div_(s)
            if first in bn_of:  # the folded bias of an identity BN
                named[bn_of[first]].bias.div_(s)
            b.weight.mul_(s.view(1, -1, 1, 1))
            out.append(float(s.max() / s.min()))
    return out
