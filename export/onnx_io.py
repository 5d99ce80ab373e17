"""ONNX file helpers of the export steps: save atomically, input size, topological order.

Loading a graph with its I/O checked (``load_export_onnx``) and listing its I/O (``graph_io``) are
shared with the engine build on the device and live in :mod:`deploy.onnx_graph` (re-exported here).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import onnx

from rdd_edge.errors import ExportError
from rdd_edge.deploy.onnx_graph import INPUT_NAME, OUTPUT_NAMES, tensor_dims, graph_io, load_export_onnx  # noqa: F401  (re-exported)
from rdd_edge.runs import atomic_path
from rdd_edge.runs import sha256_file  # noqa: F401  (re-exported: export's modules hash files through it)


def save_onnx_atomic(model: Any, path: str | Path) -> Path:
    """Check ``model`` and write it with weights inside the file, atomically."""
    path = Path(path)
    with atomic_path(path, suffix=".onnx.tmp") as tmp:
        onnx.save_model(model, str(tmp), save_as_external_data=False)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; artifacts are meant to be shared
    return path


def input_size(model: Any) -> tuple[int, int]:
    """(H, W) of the ``images`` input (static spatial dims are required)."""
    dims = tensor_dims([i for i in model.graph.input if i.name == INPUT_NAME][0])
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
