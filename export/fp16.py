"""FP32 ONNX -> ``model.fp16.onnx`` (float16 weights and math, float32 graph I/O).

Uses ONNX Runtime's converter with ``keep_io_types=True``: it keeps the graph's float32 input
and float32 ``logits`` output even when a Resize produces it (``onnxconverter_common.float16``
does not, for these graphs). TensorRT 11 builds FP16 engines from this file alone.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import onnx

from rdd_edge.errors import ExportError

from rdd_edge.export.onnx_io import load_export_onnx, save_onnx_atomic, topo_sort

log = logging.getLogger(__name__)


def export_fp16(onnx_path: str | Path, out_path: str | Path) -> Path:
    """Convert an rdd-edge FP32 ONNX file to FP16; written atomically; returns ``out_path``."""
    # lazy: optional dependency (onnxruntime, an extra)
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = load_export_onnx(onnx_path, "FP32 ONNX model (input of --fp16)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.getLogger("onnxruntime.transformers.float16").setLevel(logging.ERROR)
            half = topo_sort(convert_float_to_float16(model, keep_io_types=True))
        onnx.checker.check_model(half, full_check=True)
    except Exception as exc:
        raise ExportError(f"{onnx_path}: FP16 conversion failed ({type(exc).__name__}: {str(exc)[:300]})") from None
    return save_onnx_atomic(half, out_path)
