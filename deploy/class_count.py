"""How many classes an exported ONNX graph really outputs, read from the graph itself.

The manifest's ``classes`` is a file anyone can edit; the graph's own class count is the truth the
check gate and the runtime compare it with (issue 32). A ``logits`` output declares it in its
shape; a labels-only graph (the default export) hides it behind an ``ArgMax``, so the count is the
channel dimension of the ArgMax's input: from the shapes the graph records (the exporter stores
them) or ONNX shape inference, else the output channels of the classifier convolution it comes from
(walking back through ops that keep the channel count: Resize, Cast, Q/DQ, activations). The same
walk works for the FP16 and INT8 graphs built from the FP32 one. ``None`` when it cannot be told
(a foreign graph): callers then fall back to what the model predicts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx

# ops whose output has the same channels as their first input (what may sit between the classifier and ArgMax)
_SAME_CHANNELS = {"Resize", "Upsample", "Cast", "Identity", "QuantizeLinear", "DequantizeLinear", "Relu", "Sigmoid",
                  "Softmax", "LogSoftmax", "Add", "Sub", "Mul", "Div", "BatchNormalization", "Clip", "Transpose"}
_PASS_TO_ARGMAX = {"Cast", "Identity", "Squeeze", "Unsqueeze", "Reshape"}  # between ArgMax and the labels output


def _static_dim(dims: list[Any], axis: int) -> int | None:
    if not -len(dims) <= axis < len(dims):
        return None
    d = dims[axis]
    return int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None


def _shapes(model: Any) -> dict[str, list[Any]]:
    vis = [*model.graph.value_info, *model.graph.output, *model.graph.input]
    return {v.name: list(v.type.tensor_type.shape.dim) for v in vis if v.type.HasField("tensor_type")}


def _conv_out_channels(model: Any, name: str, producers: dict[str, Any], inits: dict[str, Any]) -> int | None:
    """Output channels of the convolution ``name`` comes from (through channel-keeping ops), else None."""
    for _ in range(64):  # a short chain in any graph rdd-edge exports
        node = producers.get(name)
        if node is None:
            return None
        if node.op_type in ("Conv", "ConvTranspose", "ConvInteger", "QLinearConv"):
            w_index = 3 if node.op_type == "QLinearConv" else 1
            dims = _weight_dims(node.input[w_index], producers, inits)
            if dims is None or len(dims) < 2:
                return None
            group = next((a.i for a in node.attribute if a.name == "group"), 1) or 1
            return int(dims[0]) if node.op_type != "ConvTranspose" else int(dims[1]) * int(group)
        if node.op_type not in _SAME_CHANNELS or not node.input:
            return None
        name = node.input[0]
    return None


def _weight_dims(name: str, producers: dict[str, Any], inits: dict[str, Any]) -> list[int] | None:
    """The dims of a weight initializer, also when it reaches the conv through DequantizeLinear / Cast."""
    for _ in range(8):
        if name in inits:
            return list(inits[name].dims)
        node = producers.get(name)
        if node is None or node.op_type not in ("DequantizeLinear", "Cast", "Identity", "QuantizeLinear"):
            return None
        name = node.input[0]
    return None


def graph_class_count(model: Any) -> int | None:
    """The class count an rdd-edge graph (an ``onnx.ModelProto``) outputs, or None when it cannot be told."""
    shapes = _shapes(model)
    outs = [o.name for o in model.graph.output]
    if "logits" in outs:
        n = _static_dim(shapes.get("logits", []), 1)
        if n is not None:
            return n
    if "labels" not in outs:
        return None
    producers = {o: n for n in model.graph.node for o in n.output}
    name, node = "labels", producers.get("labels")
    while node is not None and node.op_type in _PASS_TO_ARGMAX:
        name = node.input[0]
        node = producers.get(name)
    if node is None or node.op_type != "ArgMax":
        return None
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    x = node.input[0]
    n = _static_dim(shapes.get(x, []), axis)
    if n is None:
        try:  # shapes only, no weights needed; a graph shape inference cannot follow leaves the conv walk below
            inferred = onnx.shape_inference.infer_shapes(model)
            n = _static_dim(_shapes(inferred).get(x, []), axis)
        except Exception:  # noqa: BLE001 - onnx raises various errors on graphs it cannot infer
            n = None
    if n is None and axis in (1, -3):
        inits = {t.name: t for t in model.graph.initializer}
        n = _conv_out_channels(model, x, producers, inits)
    return n


def file_class_count(path: str | Path) -> int | None:
    """:func:`graph_class_count` of an ONNX file (None when it is not a readable ONNX file: loading reports that)."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - a corrupt file: the runtime's load names it
        return None
    return graph_class_count(model)
