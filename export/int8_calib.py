"""One pass over the calibration images, ranges for every calibration method ONNX Runtime offers.

``quantize_static`` calibrates one method per call, and each call runs the network over every
calibration image again: the expensive part. Here ONNX Runtime's own pieces are reused so the
activations are computed once: the augmented model of its histogram calibrator (every float
tensor a graph output), run chunk by chunk, and each chunk's activations handed to one ORT
``HistogramCollector`` per histogram method (entropy: signed histogram, 128 bins; percentile:
histogram of absolute values, 2048 bins, the 99.999th percentile), with the settings
``quantize_static`` would give them. Min-max needs no histogram: both collectors record each
tensor's minimum and maximum, which is exactly what ORT's ``MinMaxCalibrater`` reduces to (its
defaults: no moving average, not symmetric).

Each method's ranges are written as an ORT calibration cache (``save_tensors_data``), the file
``quantize_static(calibration_cache_path=...)`` reads, so quantizing with any of them later
needs no image at all.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from rdd_edge.export.formats import resolve_calib_method

HISTOGRAM_SETTINGS = {  # what quantize_static's create_calibrator gives each method (onnxruntime 1.2x-1.3x)
    "entropy": dict(method="entropy", symmetric=False, num_bins=128, num_quantized_bins=128),
    "percentile": dict(method="percentile", symmetric=True, num_bins=2048, num_quantized_bins=128),
}


def chunk_size(n: int, limit: int) -> int:
    """Images per chunk: the largest divisor of ``n`` up to ``limit`` (as the single-method path feeds ORT)."""
    return max(d for d in range(1, max(1, min(limit, n)) + 1) if n % d == 0)


def calibrate_methods(prep: str | Path, reader: Any, caches: Mapping[str, Path], chunk: int = 4,
                      percentile: float = 99.999, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Collect activations of ``prep`` (a ``quant_pre_process``-ed FP32 model) on every image ``reader``
    hands out, once, and write the ranges of each method in ``caches`` ({method: path}) as ORT
    calibration caches. Returns {method: TensorsData}.

    ``reader``: an ORT ``CalibrationDataReader`` with ``set_range`` and ``len`` (``ImageFolderReader``).
    """
    # lazy: optional dependency (onnxruntime, an extra)
    from onnxruntime.quantization.calibrate import (CalibrationMethod, HistogramCollector, TensorsData,
                                                    create_calibrator, save_tensors_data)

    methods = list(caches)
    n = len(reader)
    step = chunk_size(n, chunk)
    with tempfile.TemporaryDirectory(prefix="rdd-calib-") as tmp:
        # ORT's histogram calibrator: the augmented model (every float tensor an output) and its session
        calibrator = create_calibrator(Path(prep), None, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=CalibrationMethod.Percentile)
        session = calibrator.infer_session
        wanted = calibrator.tensors_to_calibrate
        names = [o.name for o in session.get_outputs()]
        collectors: dict[str, Any] = {m: HistogramCollector(percentile=percentile, scenario="same", **HISTOGRAM_SETTINGS[m])
                      for m in ("entropy", "percentile") if m in methods}
        lows: dict[str, float] = {}
        highs: dict[str, float] = {}
        done = 0
        for start in range(0, n, step):
            reader.set_range(start_index=start, end_index=start + step)
            merged: dict[str, list[np.ndarray]] = {}
            while (feed := reader.get_next()) is not None:
                for name, value in zip(names, session.run(None, feed)):
                    if name in wanted:
                        merged.setdefault(name, []).append(value)
            with contextlib.redirect_stdout(io.StringIO()):  # ORT prints a line per collect
                for c in collectors.values():
                    c.collect(merged)
            for name, arrs in merged.items():
                lo, hi = min(float(np.nanmin(a)) for a in arrs), max(float(np.nanmax(a)) for a in arrs)
                lows[name], highs[name] = min(lo, lows.get(name, lo)), max(hi, highs.get(name, hi))
            done += step
            if progress is not None:
                progress(min(done, n), n)
        del calibrator, session
    if not lows:
        raise ValueError("no calibration data was collected")
    out: dict[str, Any] = {}
    enum = {"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile,
            "minmax": CalibrationMethod.MinMax}
    for m in methods:
        if m == "minmax":
            data = {k: (np.array(lows[k], np.float32), np.array(highs[k], np.float32)) for k in lows}
        else:
            with contextlib.redirect_stdout(io.StringIO()):
                data = collectors[m].compute_collection_result()
        out[m] = TensorsData(enum[m], data)
        save_tensors_data(out[m], caches[m])
    return out


def method_names(methods: Sequence[str]) -> list[str]:
    """Calibration method names in the order they are tried (the default method first)."""
    return list(dict.fromkeys(resolve_calib_method(m) for m in methods))
