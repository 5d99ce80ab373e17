"""Q/DQ placement in the TensorRT file for the ops other than Conv and Add (pooling, Resize, Concat, MaxPool).

Conv inputs and the residual input of each Add are placed by ``export.int8`` / ``export.int8_residual``.
This module decides the rest, op by op, for the ops our networks export (DeepLabV3's ASPP: ReduceMean
image pooling, Expand, Concat; PSPNet's pyramid: AveragePool / ReduceMean, Resize, Concat; ResNet's stem
MaxPool; the final Resize of the logits). Sources, NVIDIA's:

- [TRT] TensorRT Developer Guide, "Working with Quantized Types" > "Explicit Quantization" (sections
  "TensorRT Processing of Q/DQ Networks", "Q/DQ Layer-Placement Recommendations", "Q/DQ Limitations"):
  https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/quantized-types-explicit-quantization.html
- [TFQ] TensorRT's TensorFlow quantization toolkit, "Add New Layer Support", the table of default
  behaviour per layer: https://docs.nvidia.com/deeplearning/tensorrt/tensorflow-quantization-toolkit/docs/docs/add_new_layer_support.html
  (source: github.com/NVIDIA/TensorRT, tools/tensorflow-quantization/docs/source/docs/add_new_layer_support.md)
- [MO] NVIDIA Model Optimizer's ONNX INT8 quantizer (``modelopt.onnx.quantization``: ``ort_utils.configure_ort``,
  ``partitioning.find_quantizable_nodes`` / ``_find_quantizable_kgen_partitions``, ``graph_utils``),
  github.com/NVIDIA/TensorRT-Model-Optimizer, read at commit 5a4242f (2025-12-05);
  https://nvidia.github.io/Model-Optimizer/reference/generated/modelopt.onnx.quantization.qdq_graph.html

(Of [TRT], only excerpts and the figure captions could be read here, no GPU or TensorRT to try it on; [TFQ]
and [MO] were read in full. Where [TRT] is cited for a rule, [TFQ] or [MO] states the same rule.)

Rules, per op:

- **Average pooling** (AveragePool, GlobalAveragePool, and ReduceMean over H and W, which is how
  ``AdaptiveAvgPool2d(1)`` exports: ASPP's image pooling, PSPNet's 1x1 bin): **Q/DQ on the input**,
  the output left to the consumer (the next Conv quantizes it). [TRT] names AveragePool a *quantizable*
  layer: DQ -> AveragePool -> Q fuses into one INT8 pooling (its Figure 1); [TFQ] quantizes the input of
  AveragePooling2D and GlobalAveragePooling2D by default; [MO] quantizes pooling ops next to quantized
  ops. In our heads the pooled tensor (the backbone's output) is also read by Convs; with the
  pool's pair every reader of that tensor reads INT8, so the Q that follows its producer can fuse into
  it ([TRT] Figure 7) with no float copy left for the pool. A ReduceMean over other axes is left alone.
- **Concat** (ASPP's five branches, PSPNet's pyramid): **no Q/DQ of its own**. [TRT]: Concat is a
  *commuting* layer; TensorRT moves the Q that follows it (the projection Conv's input pair) backward
  onto each of its inputs (Q backward-propagation, Figure 2), so the branch Convs write INT8 and the
  Concat copies INT8; a Q/DQ on each input with its own scale would leave a DQ -> Q rescaling per
  input, which TensorRT removes only when the scales are equal ([TRT] "Q/DQ Limitations", Figure 10;
  [MO]'s optional ``get_concat_eliminated_tensors`` forces equal scales for that reason). [TFQ] does not quantize Concatenate by default;
  [MO] removes Concat from its quantizable ops.
- **MaxPool** (ResNet's stem): **no Q/DQ of its own**. [TRT]: max pooling commutes with Q/DQ, so the
  Q on its output (the first block's Conv and, with ``export.int8_residual``, its residual Add) moves
  before it into the stem Conv + ReLU; [TFQ]: "MaxPool layers need not be quantized in ResNet-v1";
  [MO] puts a MaxPool after Conv-ReLU in the Conv's fusible partition.
- **Resize** feeding a Concat (PSPNet's upsampled bins): **Q/DQ on the input**. [MO] quantizes the
  input of a Resize that follows a Conv partition (``_find_quantizable_kgen_partitions``: Resize
  "prefers quantized input"), so the bin's Conv + ReLU writes INT8 and the upsampling reads INT8.
- **Resize of the logits** (the final upsampling; its output is the ``logits`` output and the
  ArgMax's input): **float**. [TRT]: "by default, do not quantize the outputs of weighted
  operations" (the classifier Conv's output); quantizing it would snap the logits to 255 levels
  right before the ArgMax that picks the label.
- Expand, Shape, ArgMax: not quantized (copy / shape / output ops).

Each rule is applied by ONNX Runtime's ``quantize_static`` (op types to quantize, output quantization
off for them, dedicated pairs, the same calibration cache); this module only names the nodes.
"""

from __future__ import annotations

from typing import Any

from onnx import helper, numpy_helper

POOL_OPS = ("AveragePool", "GlobalAveragePool", "ReduceMean")  # average pooling, input quantized
RESIZE_OPS = ("Resize",)  # input quantized when the output goes into a Concat
INPUT_ONLY_OPS = (*POOL_OPS, *RESIZE_OPS)  # ops whose output the TensorRT file never quantizes


def _consts(model: Any) -> dict[str, Any]:
    out = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    out[n.output[0]] = numpy_helper.to_array(a.t)
    return out


def is_spatial_mean(node: Any, consts: dict[str, Any]) -> bool:
    """Whether a ReduceMean averages exactly H and W of an NCHW tensor, keeping the dims (a global average pool)."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type != "ReduceMean" or attrs.get("keepdims", 1) != 1:
        return False
    if "axes" in attrs:  # opset < 18
        axes = list(attrs["axes"])
    elif len(node.input) > 1 and node.input[1] in consts:
        axes = [int(a) for a in consts[node.input[1]].reshape(-1)]
    else:
        return False
    return sorted(a % 4 for a in axes) == [2, 3]


def pools(model: Any) -> list[str]:
    """The average-pooling nodes whose input the TensorRT file quantizes (see the module docstring)."""
    consts = _consts(model)
    return [n.name for n in model.graph.node
            if n.op_type in ("AveragePool", "GlobalAveragePool") or is_spatial_mean(n, consts)]


def concat_resizes(model: Any) -> list[str]:
    """The Resize nodes whose output goes into a Concat (PSPNet's bins): their input is quantized."""
    readers: dict[str, list[str]] = {}
    for n in model.graph.node:
        for t in n.input:
            readers.setdefault(t, []).append(n.op_type)
    outs = {o.name for o in model.graph.output}
    return [n.name for n in model.graph.node if n.op_type == "Resize" and n.output[0] not in outs
            and readers.get(n.output[0]) and all(r == "Concat" for r in readers[n.output[0]])]


def not_placed(model: Any) -> list[str]:
    """Nodes of the ``INPUT_ONLY_OPS`` types that the rules leave unquantized (a ReduceMean over other axes,
    the Resize of the logits): excluded from ``quantize_static``, which would otherwise quantize every one."""
    keep = set(pools(model)) | set(concat_resizes(model))
    return [n.name for n in model.graph.node if n.op_type in INPUT_ONLY_OPS and n.name not in keep]
