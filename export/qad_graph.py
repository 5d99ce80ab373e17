"""The graph side of quantization-aware distillation (``export.qad``): what the fake-quantized student reads
from the export's Q/DQ file (each Conv's activation scale) and writes into its FP32 graph (each Conv's
BN-folded weights and bias), by torch module name (the weight initializers keep the parameter names)."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from onnx import numpy_helper

from rdd_edge.errors import ExportError
from rdd_edge.export.int8_layers import module_of

FOLD_TOLERANCE = 1e-3  # relative: the folded torch weights must be the FP32 graph's (else the graph is another model's)


def conv_input_scales(qmodel: Any) -> dict[str, float]:
    """{torch module: activation scale} of every Conv of a Q/DQ graph that reads a quantized input."""
    producer = {o: n for n in qmodel.graph.node for o in n.output}
    inits = {t.name: t for t in qmodel.graph.initializer}
    out: dict[str, float] = {}
    for node in qmodel.graph.node:
        if node.op_type != "Conv":
            continue
        dq, wdq = producer.get(node.input[0]), producer.get(node.input[1])
        if dq is None or dq.op_type != "DequantizeLinear" or wdq is None or wdq.op_type != "DequantizeLinear":
            continue  # in float
        wname = wdq.input[0].removesuffix("_quantized")  # ONNX Runtime's name for the int8 copy of the weight
        module = wname.removeprefix("model.").removesuffix(".weight") if wname.startswith("model.") and \
            wname.endswith(".weight") else None  # as export.int8_layers.module_of reads the FP32 graph
        if module is not None and dq.input[1] in inits:
            out[module] = float(numpy_helper.to_array(inits[dq.input[1]]).astype(np.float64).reshape(-1)[0])
    return out


def _conv_initializers(model: Any) -> dict[str, tuple[str, str | None]]:
    """{torch module: (Conv node, weight initializer, bias initializer or None)} of every Conv of the FP32 graph."""
    out = {}
    for node in model.graph.node:
        if node.op_type == "Conv":
            m = module_of(node)
            if m is None:
                raise ExportError(f"Conv {node.name} of the FP32 graph has no torch module name ({node.input[1]}); "
                                  "re-export with this rdd-edge")
            out[m] = (node, node.input[1], node.input[2] if len(node.input) > 2 and node.input[2] else None)
    return out


def write_weights(fp32: Any, student: Any, pairs: list, check: bool = False) -> Any:
    """A copy of the FP32 graph whose Conv initializers hold ``student``'s (BN-folded) weights and biases.
    ``check``: instead, verify the graph holds them already (the graph is this model's) and return it."""
    from rdd_edge.export.qad_torch import folded_bias  # lazy: torch

    model = fp32 if check else copy.deepcopy(fp32)
    inits = {t.name: t for t in model.graph.initializer}
    named = dict(student.named_modules())
    for module, (node, w_name, b_name) in _conv_initializers(model).items():
        if module not in named or w_name not in inits:
            raise ExportError(f"the FP32 graph's Conv {module} is not a conv of {student.model_name}; re-export the run")
        w = named[module].weight.detach().cpu().float().numpy()
        b = folded_bias(student, module, pairs)
        b = None if b is None else b.cpu().float().numpy()
        if b is not None and b_name is None:  # the exporter dropped an all-zero folded bias
            if check and np.abs(b).max() > FOLD_TOLERANCE * max(float(np.abs(w).max()), 1e-12):
                raise ExportError(f"{module}: the FP32 graph's Conv has no bias, the checkpoint's folded BatchNorm has "
                                  "one; re-export the run, then run qat")
            if not check:  # QAD may have trained one: the Conv gets a bias input of its own
                b_name = f"{w_name}_qad_bias"
                model.graph.initializer.append(numpy_helper.from_array(b.astype(np.float32), b_name))
                inits[b_name] = model.graph.initializer[-1]
                while len(node.input) < 3:
                    node.input.append("")
                node.input[2] = b_name
        for name, value in ((w_name, w), (b_name, b)):
            if name is None or value is None:
                continue
            old = numpy_helper.to_array(inits[name])
            if old.shape != value.shape:
                raise ExportError(f"{module}: the graph's {name} is {old.shape}, the checkpoint's {value.shape}; re-export the run")
            if check:
                err = float(np.abs(old - value).max() / max(float(np.abs(old).max()), 1e-12))
                if err > FOLD_TOLERANCE:
                    raise ExportError(f"{module}: the FP32 graph's weights are not the checkpoint's (relative difference "
                                      f"{err:.1e}); re-export the run, then run qat")
            else:
                inits[name].CopyFrom(numpy_helper.from_array(value.astype(old.dtype), name))
    return model
