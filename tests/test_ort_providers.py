"""ONNX Runtime provider choice on NVIDIA machines, as a pure function (no GPU needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rdd_edge.errors import DeployError

from rdd_edge.deploy.backends.onnxruntime import _trt_profile, artifact_format, artifact_precision, provider_options

ALL = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
TRT, CUDA, CPU = ALL


def _manifest(folder, **arts):
    m = {"format": "rdd-edge-export", "version": 1, "input": {"name": "images", "shape": ["batch", 3, 48, 64]},
         "artifacts": arts}
    (folder / "manifest.json").write_text(json.dumps(m))


def test_fp16_file_on_tensorrt_then_cuda_then_cpu(tmp_path):
    providers, opts = provider_options(tmp_path / "model.fp16.onnx", ALL)
    assert providers == ALL
    assert opts[0] == {"device_id": 0, "trt_fp16_enable": True, "trt_int8_enable": False, "trt_engine_cache_enable": True,
                       "trt_engine_cache_path": str(tmp_path / "trt-cache"), "trt_timing_cache_enable": True,
                       "trt_timing_cache_path": str(tmp_path / "trt-cache")}
    assert opts[1] == {"device_id": 0} and opts[2] == {}


def test_int8_and_fp32_files(tmp_path):
    _, opts = provider_options(tmp_path / "model.int8.onnx", ALL, cache_dir=tmp_path / "c", device_id=1)
    assert opts[0]["trt_int8_enable"] is True and opts[0]["trt_fp16_enable"] is True  # FP16 float layers
    assert opts[0]["trt_engine_cache_path"] == str(tmp_path / "c") and opts[0]["device_id"] == 1 and opts[1] == {"device_id": 1}
    _, opts = provider_options(tmp_path / "model.onnx", ALL)
    assert opts[0]["trt_int8_enable"] is False and opts[0]["trt_fp16_enable"] is False
    # the manifest says the Q/DQ file keeps FP32 float math: no FP16 flag for it
    _manifest(tmp_path, int8={"file": "model.int8.onnx", "precision": "int8", "trt_float": "fp32"})
    _, opts = provider_options(tmp_path / "model.int8.onnx", ALL)
    assert opts[0]["trt_int8_enable"] is True and opts[0]["trt_fp16_enable"] is False


def test_cpu_int8_flavour_never_goes_to_tensorrt(tmp_path):
    providers, opts = provider_options(tmp_path / "model.int8-cpu.onnx", ALL)
    assert providers == [CUDA, CPU] and opts == [{"device_id": 0}, {}]


def test_precision_from_manifest_beats_the_name(tmp_path):
    """The manifest's key for the file decides (through the formats table); a file it does not list is
    looked up by the table's exact file name; anything else is plain FP32, never TensorRT INT8."""
    from rdd_edge.formats import BY_KEY

    _manifest(tmp_path, fp16={"file": "student.onnx", "precision": "fp16"},
              **{"int8-cpu": {"file": "cpu.onnx", "precision": "int8"}})
    assert artifact_precision(tmp_path / "student.onnx") == "fp16"
    assert artifact_format(tmp_path / "cpu.onnx") is BY_KEY["int8-cpu"] and artifact_precision(tmp_path / "cpu.onnx") == "int8"
    assert provider_options(tmp_path / "cpu.onnx", ALL)[0] == [CUDA, CPU]  # the CPU flavour under any name
    assert artifact_precision(tmp_path / BY_KEY["int8"].file) == "int8"  # not listed: the table's file name
    assert artifact_precision(tmp_path / "other.int8.onnx") == "fp32"  # a substring decides nothing
    _, opts = provider_options(tmp_path / "other.int8.onnx", ALL)
    assert opts[0]["trt_int8_enable"] is False and opts[0]["trt_fp16_enable"] is False
    assert artifact_precision(tmp_path / "plain.onnx") == "fp32"
    providers, opts = provider_options(tmp_path / "student.onnx", ALL)
    assert opts[0]["trt_fp16_enable"] is True


def test_device_choice_and_profile(tmp_path):
    assert provider_options(tmp_path / "model.fp16.onnx", ALL, device="cpu") == ([CPU], [{}])
    assert provider_options(tmp_path / "model.onnx", [CPU])[0] == [CPU]
    with pytest.raises(DeployError, match="no GPU provider"):
        provider_options(tmp_path / "model.onnx", [CPU], device="cuda")
    with pytest.raises(DeployError, match="precision"):
        provider_options(tmp_path / "model.onnx", ALL, precision="int4")
    providers, _ = provider_options(tmp_path / "model.onnx", ALL, requested=[CUDA, CPU])
    assert providers == [CUDA, CPU]
    _manifest(tmp_path)
    prof = _trt_profile(tmp_path / "model.fp16.onnx", 4)
    assert prof == {"name": "images", "min": [1, 3, 48, 64], "opt": [1, 3, 48, 64], "max": [4, 3, 48, 64]}
    _, opts = provider_options(tmp_path / "model.fp16.onnx", ALL, profile=prof, workspace_gb=1)
    assert opts[0]["trt_profile_min_shapes"] == "images:1x3x48x64" and opts[0]["trt_profile_max_shapes"] == "images:4x3x48x64"
    assert opts[0]["trt_max_workspace_size"] == 1 << 30


def test_session_on_cpu_gets_the_options(tmp_path):
    """OrtBackend passes provider_options to ONNX Runtime (CPU here) and reports max_batch."""
    from rdd_edge.deploy.backends.onnxruntime import OrtBackend
    from trt_double import tiny_fp32_onnx

    path = tiny_fp32_onnx(tmp_path / "model.onnx")
    with OrtBackend(path, device="cpu") as be:
        assert be.provider == CPU and be.max_batch is None
        out = be.run(np.zeros((2, 3, 16, 24), np.float32))
        assert out["labels"].shape == (2, 16, 24)
    assert not hasattr(be, "session")
