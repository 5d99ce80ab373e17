"""Read the ONNX graphs rdd-edge exported: load one with its I/O checked, and list its I/O.

Engine builds (on the device, :mod:`deploy.engine_build`) and the export's own later steps (FP16,
INT8, the manifest: :mod:`export.onnx_io`) accept only graphs this tool exported: one input
``images`` (N, 3, H, W) and outputs among ``logits`` / ``labels``. Anything else (a corrupt file, a
foreign model) is an :class:`ExportError` naming the file, before any work starts. Torch-free
(``onnx`` is a base dependency; only engine builds and the export import this module).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx

from rdd_edge.errors import ExportError

INPUT_NAME = "images"
OUTPUT_NAMES = ("logits", "labels")


def tensor_dims(value_info: Any) -> list[int | str]:
    """The shape of a graph input or output: ints, or names for symbolic dimensions."""
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def load_export_onnx(path: str | Path, what: str = "ONNX model") -> Any:
    """Load ``path`` as an ``onnx.ModelProto`` exported by rdd-edge, or raise a clear ExportError."""
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
    dims = tensor_dims(graph_inputs[0])
    if len(dims) != 4 or dims[1] != 3:
        raise ExportError(f"{path}: input '{INPUT_NAME}' must be (N, 3, H, W), found {dims}")
    outs = [o.name for o in model.graph.output]
    if not outs or any(o not in OUTPUT_NAMES for o in outs):
        raise ExportError(f"{path}: outputs must be among {list(OUTPUT_NAMES)}, found {outs}; re-export with `rdd-edge export`")
    return model


def graph_io(model: Any) -> dict:
    """Names, shapes and element types of the graph's input and outputs (for manifests and sidecars)."""
    init = {t.name for t in model.graph.initializer}

    def row(v: Any) -> dict:
        et = v.type.tensor_type.elem_type
        return {"name": v.name, "shape": tensor_dims(v), "dtype": onnx.helper.tensor_dtype_to_np_dtype(et).name if et else None}

    return {
        "inputs": [row(v) for v in model.graph.input if v.name not in init],
        "outputs": [row(v) for v in model.graph.output],
    }
