"""Q/DQ on the residual input of each Add in the TensorRT file, so TensorRT can fuse Conv + Add (+ ReLU) in INT8.

NVIDIA's explicit-quantization guidance (TensorRT Developer Guide, "Working with Quantized Types" >
"Explicit Quantization" > "Q/DQ Layer-Placement Recommendations": *quantize the residual input in
residual networks*; https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/work-quantized-types.html)
says TensorRT fuses an element-wise addition into the weighted layer before it, and that the fusion
runs in INT8 only when the Add's other input (the residual) arrives quantized; a Q/DQ pair between
the Conv and the Add, on the other hand, separates the two (the same guide's "suboptimal fusion"
figure). NVIDIA's quantization toolkits do the same for ResNet (the TensorFlow toolkit's
``ResNetV1QDQCase``, https://docs.nvidia.com/deeplearning/tensorrt/tensorflow-quantization-toolkit/docs/docs/add_custom_qdq_cases.html,
and pytorch-quantization's ``residual_quantizer`` on the identity branch).

So for every *residual* Add (two computed inputs, neither a constant) of ``model.int8.onnx``:

- the **residual side** (the input with fewer Convs on its longest path from the graph input: the
  identity of a MobileNetV2 / ResNet block, or a ResNet block's 1x1 downsample against its 3x3 main
  branch) reads a Q/DQ pair, calibrated like every other activation;
- the **main side** (the Conv that TensorRT fuses the Add into) keeps its output unquantized;
- the Add's output stays float (the next Conv quantizes what it reads).

An Add whose two sides have the same depth is left with both Q/DQ pairs (no side is the residual);
Adds with a constant input are not quantized at all.
"""

from __future__ import annotations

from typing import Any


def conv_depth(model: Any) -> dict[str, int]:
    """Per tensor: the most Convs on any path from a graph input (initializers and inputs: 0)."""
    depth: dict[str, int] = {}
    for node in model.graph.node:  # graph order is a topological order (ONNX requires it)
        d = max((depth.get(t, 0) for t in node.input if t), default=0) + (node.op_type == "Conv")
        for t in node.output:
            depth[t] = d
    return depth


def residual_adds(model: Any) -> dict[str, int | None]:
    """{Add node name: index of its residual input (None: both sides as deep)} for the FP32 graph's residual Adds."""
    consts = {t.name for t in model.graph.initializer}
    consts |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    depth = conv_depth(model)
    out: dict[str, int | None] = {}
    for node in model.graph.node:
        if node.op_type != "Add" or len(node.input) != 2 or any(t in consts for t in node.input):
            continue
        a, b = (depth.get(t, 0) for t in node.input)
        out[node.name] = None if a == b else (0 if a < b else 1)
    return out


def constant_adds(model: Any) -> list[str]:
    """The Adds that are not residual (a constant input): left unquantized in the TensorRT file."""
    res = residual_adds(model)
    return [n.name for n in model.graph.node if n.op_type == "Add" and n.name not in res]


def keep_main_side_float(qmodel: Any, adds: dict[str, int | None]) -> int:
    """In a quantized model, take the Q/DQ pair off the main side of each residual Add in ``adds`` (the
    side TensorRT fuses the Add into), rewiring the Add to the float tensor; returns how many pairs went."""
    producer = {o: n for n in qmodel.graph.node for o in n.output}
    users: dict[str, int] = {}
    for n in qmodel.graph.node:
        for t in n.input:
            users[t] = users.get(t, 0) + 1
    drop: list[Any] = []
    for node in qmodel.graph.node:
        res = adds.get(node.name)
        if node.op_type != "Add" or res is None:
            continue
        k = 1 - res
        dq = producer.get(node.input[k])
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is None or q.op_type != "QuantizeLinear" or users.get(dq.output[0]) != 1 or users.get(q.output[0]) != 1:
            continue  # no dedicated pair on that side (the side runs in float already)
        node.input[k] = q.input[0]
        drop += [q, dq]
    for n in drop:
        qmodel.graph.node.remove(n)
    used = {t for n in qmodel.graph.node for t in n.input}
    for init in [i for i in qmodel.graph.initializer if i.name not in used]:
        qmodel.graph.initializer.remove(init)
    return len(drop) // 2

