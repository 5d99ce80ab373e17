"""Load and validate the ONNX files the later export steps take as input.

FP16, INT8 and engine builds accept only graphs this tool exported: one input ``images``
(N, 3, H, W) and outputs among ``logits`` / ``labels``. Anything else (a corrupt file, a
foreign model) is an :class:`ExportError` naming the file, before any work starts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rdd_edge.errors import ExportError
from rdd_edge.runs import sha256_file  # noqa: F401  (re-exported: export's modules hash files through it)

INPUT_NAME = "images"
OUTPUT_NAMES = ("logits", "labels")


def _dims(value_info: Any) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def load_export_onnx(path: str | Path, what: str = "ONNX model") -> Any:
    """Load ``path`` as an ``onnx.ModelProto`` exported by rdd-edge, or raise a clear ExportError."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: {what} not found; run `rdd-edge export` first or pass the right path")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError / various on garbage
        raise ExportError(f"{path}: not a readable ONNX file ({type(exc).__name__}); re-export it with `rdd-edge export`") from None
    graph_inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    names = [i.name for i in graph_inputs]
    if len(model.graph.node) == 0 or names != [INPUT_NAME]:
        raise ExportError(
            f"{path}: not an rdd-edge segmentation graph: expected one input '{INPUT_NAME}', found {names or 'none'}; "
            "export the checkpoint with `rdd-edge export` instead of passing another model"
        )
    dims = _dims(graph_inputs[0])
    if len(dims) != 4 or dims[1] != 3:
        raise ExportError(f"{path}: input '{INPUT_NAME}' must be (N, 3, H, W), found {dims}")
    outs = [o.name for o in model.graph.output]
    if not outs or any(o not in OUTPUT_NAMES for o in outs):
        raise ExportError(f"{path}: outputs must be among {list(OUTPUT_NAMES)}, found {outs}; re-export with `rdd-edge export`")
    return model


def graph_io(model: Any) -> dict:
    """Names, shapes and element types of the graph's input and outputs (for manifests and sidecars)."""
    import onnx

    init = {t.name for t in model.graph.initializer}

    def row(v: Any) -> dict:
        et = v.type.tensor_type.elem_type
        return {"name": v.name, "shape": _dims(v), "dtype": onnx.helper.tensor_dtype_to_np_dtype(et).name if et else None}

    return {
        "inputs": [row(v) for v in model.graph.input if v.name not in init],
        "outputs": [row(v) for v in model.graph.output],
    }


def save_onnx_atomic(model: Any, path: str | Path) -> Path:
    """Check ``model`` and write it with weights inside the file, atomically."""
    import onnx

    from rdd_edge.runs import atomic_path

    path = Path(path)
    with atomic_path(path, suffix=".onnx.tmp") as tmp:
        onnx.save_model(model, str(tmp), save_as_external_data=False)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; artifacts are meant to be shared
    return path


def input_size(model: Any) -> tuple[int, int]:
    """(H, W) of the ``images`` input (static spatial dims are required)."""
    dims = _dims([i for i in model.graph.input if i.name == INPUT_NAME][0])
    h, w = dims[2], dims[3]
    if not isinstance(h, int) or not isinstance(w, int) or h <= 0 or w <= 0:
        raise ExportError(f"input '{INPUT_NAME}' has dynamic spatial dims {dims}; this step needs a static H and W")
    return h, w


def topo_sort(model: Any) -> Any:
    """Reorder ``model.graph.node`` topologically (converters append Cast nodes at the end)."""
    graph = model.graph
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        rest = []
        for node in pending:
            if all(i in available for i in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):  # a cycle or a dangling input: leave the order to the checker
            ordered.extend(rest)
            break
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)
    return model
