"""The quantized layers of a graph, and the nodes to keep in float so that one of them runs in float.

A *layer* is a Conv with the Q/DQ of the activation it reads (and its weights' DQ): what ONNX Runtime's
``quantize_static`` quantizes as a unit. The layers are listed in graph (network) order, which is
the order of the sensitivity report.

Leaving a layer in float means more than naming its Conv in ``nodes_to_exclude``, for the CPU flavour:

- ``model.int8.onnx`` (TensorRT) quantizes Conv inputs (and the residual side of Adds, which no Conv
  reads through that pair: ``export.int8_residual``), so excluding the Conv leaves its input,
  weights and math in float: the island is the Conv alone.
- ``model.int8-cpu.onnx`` quantizes every op ONNX Runtime has an integer kernel for, so the tensor a
  Conv reads is usually quantized anyway, as the *output* of the op before it (a Conv whose Relu /
  Clip ONNX Runtime folded into the output range, an Add, a Concat) or as the input of another
  consumer (a residual Add). An excluded Conv then still reads a DequantizeLinear. Its island
  therefore also holds the op producing that tensor (through a Relu / Clip to the op before it)
  and the tensor's other consumers, so the activation stays float. Checked after quantizing:
  :func:`reads_float`. Its output stays float through the ops that only resample or read it out
  (Resize, Relu / Clip, ArgMax, Softmax): ONNX Runtime would otherwise quantize the classifier's
  logits again at the final upsampling and at the ArgMax, and a classifier "in float" would still
  hand uint8 logits to the ArgMax (ties between classes).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from onnx import numpy_helper

ACTIVATIONS = ("Relu", "Clip", "LeakyRelu")  # folded into a quantized producer's output range by ONNX Runtime
NOT_QUANTIZED = ("Shape", "Size")  # consumers that read a tensor's shape only
RESAMPLING = ("Resize", "Upsample", "ArgMax", "Softmax", *ACTIVATIONS)  # ops after a float Conv that keep its output float (int8-cpu)


@dataclass(frozen=True)
class QuantLayer:
    """One Conv of the FP32 graph, as the sensitivity report shows it."""

    index: int  # position among the graph's Conv nodes (network order), from 0
    name: str  # the Conv node's name (what --keep-float takes)
    kind: str  # e.g. "conv 3x3", "dw 3x3", "conv 1x1", "conv 3x3 d12"
    cin: int
    cout: int
    input: str  # the activation tensor it reads
    module: str | None = None  # the torch module it was exported from (e.g. "head.classifier"), if known

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _attr(node: Any, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            return list(a.ints) if a.ints else (a.i if a.type == 2 else default)
    return default


def module_of(node: Any, prefix: str = "model.") -> str | None:
    """The torch module a Conv of an exported graph came from: its weight initializer keeps the
    parameter's name (``model.head.classifier.weight``; ``model.`` is the export wrapper's attribute)."""
    w = node.input[1] if len(node.input) > 1 else ""
    if not w.startswith(prefix) or not w.endswith(".weight"):
        return None
    return w[len(prefix):-len(".weight")]


def quant_layers(model: Any) -> list[QuantLayer]:
    """Every Conv of an ONNX model (FP32, after ``quant_pre_process``) in graph order."""
    inits = {t.name: t for t in model.graph.initializer}
    out: list[QuantLayer] = []
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        w = inits.get(node.input[1])
        shape = tuple(numpy_helper.to_array(w).shape) if w is not None else (0, 0, 0, 0)
        group = _attr(node, "group", 1)
        k = "x".join(str(s) for s in shape[2:]) or "?"
        dil = max(_attr(node, "dilations", [1]) or [1])
        cout, cin = int(shape[0]), int(shape[1]) * int(group)
        kind = ("dw " if group > 1 and group == cin else "conv ") + k + (f" d{dil}" if dil > 1 else "")
        out.append(QuantLayer(len(out), node.name, kind, cin, cout, node.input[0], module_of(node)))
    return out


def float_island(model: Any, conv: str, flavour: str) -> list[str]:
    """The nodes to exclude from quantization so that Conv ``conv`` runs in float on a float input.

    ``flavour``: ``int8`` (TensorRT: the Conv alone) or ``int8-cpu`` (also the op producing its input,
    through a folded Relu / Clip, the input's other consumers, and the Resize / Relu / Clip / ArgMax /
    Softmax ops its output goes through; see the module docstring).
    """
    nodes = {n.name: n for n in model.graph.node}
    if conv not in nodes:
        raise KeyError(conv)
    if flavour == "int8":
        return [conv]
    producer = {o: n for n in model.graph.node for o in n.output}
    tensor = nodes[conv].input[0]
    island = [conv]
    p = producer.get(tensor)
    while p is not None:
        island.append(p.name)
        if p.op_type not in ACTIVATIONS:
            break
        p = producer.get(p.input[0])
    island += [n.name for n in model.graph.node if tensor in n.input and n.op_type not in NOT_QUANTIZED]
    outs = list(nodes[conv].output[:1])
    while outs:  # the output side: resampling ops stay float with it
        t = outs.pop()
        for n in model.graph.node:
            if t in n.input[:1] and n.op_type in RESAMPLING and n.name not in island:
                island.append(n.name)
                outs += list(n.output[:1])
    return list(dict.fromkeys(island))


def islands(model: Any, convs: list[str], flavour: str) -> list[str]:
    """The union of the float islands of ``convs``, in graph order of first mention."""
    out: list[str] = []
    for c in convs:
        out += float_island(model, c, flavour)
    return list(dict.fromkeys(out))


def reads_float(qmodel: Any, conv: str) -> bool:
    """Whether Conv ``conv`` of a quantized model reads a float activation and float weights
    (neither input comes out of a DequantizeLinear)."""
    producer = {o: n for n in qmodel.graph.node for o in n.output}
    node = next((n for n in qmodel.graph.node if n.name == conv), None)
    if node is None:
        return False
    return not any(producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" for i in node.input[:2])


def float_convs(qmodel: Any) -> list[str]:
    """The Convs of a quantized model that run in float (see :func:`reads_float`), in graph order."""
    return [n.name for n in qmodel.graph.node if n.op_type == "Conv" and reads_float(qmodel, n.name)]
