"""TensorRT engine build: pure helpers always; the real build only where tensorrt and a GPU exist."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from rdd_edge.errors import ConfigError, ExportError, MissingDependencyError

from export.engine_plan import engine_source, profile_shapes, sidecar_meta

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None


def test_profile_shapes_static_and_dynamic():
    p = profile_shapes(["batch", 3, 48, 96], max_batch=4, opt_batch=2)
    assert p == {"min": (1, 3, 48, 96), "opt": (2, 3, 48, 96), "max": (4, 3, 48, 96)}
    p = profile_shapes([1, 3, 48, 96], max_batch=8)  # a static batch wins over max_batch
    assert p["min"] == p["opt"] == p["max"] == (1, 3, 48, 96)
    d = profile_shapes(["batch", 3, "height", "width"], 1, dynamic_hw=((48, 64), (96, 128), (192, 256)))
    assert d["min"] == (1, 3, 48, 64) and d["max"] == (1, 3, 192, 256)
    with pytest.raises(ConfigError, match="dynamic H/W"):
        profile_shapes(["batch", 3, "height", "width"])
    with pytest.raises(ConfigError, match="multiples of 8"):
        profile_shapes(["batch", 3, "height", "width"], dynamic_hw=((50, 64), (96, 128), (192, 256)))


def test_engine_source_and_sidecar(tmp_path):
    with pytest.raises(ExportError, match="--int8"):
        engine_source("engine-int8", tmp_path)
    (tmp_path / "model.fp16.onnx").write_bytes(b"x")
    assert engine_source("engine-fp16", tmp_path) == tmp_path / "model.fp16.onnx"
    ident = {"tensorrt": "10.3.0", "gpu": "Orin", "compute_capability": "8.7"}
    io = {"inputs": [{"name": "images", "shape": ["batch", 3, 48, 96], "dtype": "float32"}], "outputs": []}
    meta = sidecar_meta("engine-int8", "ab" * 32, ident, io, profile_shapes(["batch", 3, 48, 96]), 1.0, None, True)
    assert meta["precision"] == "int8" and meta["source_onnx"] == "model.int8.onnx" and meta["compute_capability"] == "8.7"
    assert meta["profile"]["opt"] == [1, 3, 48, 96] and meta["input_shape"] == [1, 3, 48, 96]
    from deploy.engine_meta import check_compatible

    check_compatible(meta, ident)  # the deploy side accepts what the export side wrote


@pytest.mark.skipif(HAVE_TRT, reason="tensorrt is installed: the missing-dependency message cannot be exercised")
def test_missing_tensorrt_says_how_to_install(tmp_path):
    from export.tensorrt import _trt

    with pytest.raises(MissingDependencyError, match=r"pip install rdd-edge\[trt\]"):
        _trt()


@pytest.mark.trt
@pytest.mark.skipif(not HAVE_TRT, reason="tensorrt is not installed (pip install rdd-edge[trt]; needs an NVIDIA GPU)")
def test_build_fp16_engine(tmp_path):
    import torch

    from deploy.engine_meta import read_sidecar
    from export.fp16 import export_fp16
    from export.onnx_export import export_onnx
    from export.tensorrt import build_engine
    from models import create_model

    model = create_model("mbv2", num_classes=11, head_channels=16).eval()
    src = export_fp16(export_onnx(model, tmp_path / "model.onnx", (48, 96)), tmp_path / "model.fp16.onnx")
    eng = build_engine(src, tmp_path / "model.fp16.engine", workspace_gb=1.0, timing_cache=tmp_path / "timing.cache")
    assert eng.stat().st_size > 0 and (tmp_path / "timing.cache").is_file()
    meta = read_sidecar(eng)
    assert meta["precision"] == "fp16" and meta["tensorrt"] and Path(meta["source_onnx"]).name == "model.fp16.onnx"
    del torch


@pytest.mark.trt
@pytest.mark.skipif(not HAVE_TRT, reason="tensorrt is not installed (pip install rdd-edge[trt]; needs an NVIDIA GPU)")
def test_engine_predicts_like_onnx(tmp_path):
    """Build an FP16 engine, run it through deploy.load, and compare with ONNX Runtime FP32."""
    import numpy as np

    import deploy
    from export.fp16 import export_fp16
    from export.onnx_export import export_onnx
    from export.tensorrt import build_engine
    from models import create_model

    model = create_model("mbv2", num_classes=11, head_channels=16).eval()
    onnx_path = export_onnx(model, tmp_path / "model.onnx", (48, 96), output="labels")
    eng = build_engine(export_fp16(onnx_path, tmp_path / "model.fp16.onnx"), tmp_path / "model.fp16.engine", workspace_gb=1.0)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (48, 96, 3), dtype=np.uint8)
    want = deploy.load(onnx_path).predict(image)
    got = deploy.load(eng).predict(image)
    assert got.shape == want.shape
    assert (got == want).mean() >= 0.99
