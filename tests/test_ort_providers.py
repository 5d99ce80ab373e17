"""ONNX Runtime provider choice on NVIDIA machines, as a pure function (no GPU needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rdd_edge.errors import DeployError

from rdd_edge.deploy.backends.onnxruntime import _trt_profile, artifact_format, artifact_precision, provider_options

ALL = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
OLD = "1.21.1"  # an ONNX Runtime whose TensorRT EP builds weakly typed whatever the flags: the flags set precision
TRT, CUDA, CPU = ALL


def _manifest(folder, **arts):
    m = {"format": "rdd-edge-export", "version": 1, "input": {"name": "images", "shape": ["batch", 3, 48, 64]},
         "artifacts": arts}
    (folder / "manifest.json").write_text(json.dumps(m))


def test_fp16_file_on_tensorrt_then_cuda_then_cpu(tmp_path):
    providers, opts = provider_options(tmp_path / "model.fp16.onnx", ALL, ort_version=OLD)
    assert providers == ALL
    assert opts[0] == {"device_id": 0, "trt_fp16_enable": True, "trt_int8_enable": False, "trt_engine_cache_enable": True,
                       "trt_engine_cache_path": str(tmp_path / "trt-cache"), "trt_timing_cache_enable": True,
                       "trt_timing_cache_path": str(tmp_path / "trt-cache")}
    assert opts[1] == {"device_id": 0} and opts[2] == {}


def test_int8_and_fp32_files(tmp_path):
    _, opts = provider_options(tmp_path / "model.int8.onnx", ALL, cache_dir=tmp_path / "c", device_id=1, ort_version=OLD)
    assert opts[0]["trt_int8_enable"] is True and opts[0]["trt_fp16_enable"] is True  # FP16 float layers
    assert opts[0]["trt_engine_cache_path"] == str(tmp_path / "c") and opts[0]["device_id"] == 1 and opts[1] == {"device_id": 1}
    _, opts = provider_options(tmp_path / "model.onnx", ALL)
    assert opts[0]["trt_int8_enable"] is False and opts[0]["trt_fp16_enable"] is False
    # the manifest says the Q/DQ file keeps FP32 float math: no FP16 flag for it
    _manifest(tmp_path, int8={"file": "model.int8.onnx", "precision": "int8", "trt_float": "fp32"})
    _, opts = provider_options(tmp_path / "model.int8.onnx", ALL, ort_version=OLD)
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
    providers, opts = provider_options(tmp_path / "student.onnx", ALL, ort_version=OLD)
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


@pytest.mark.parametrize("version, weak", [("1.21.1", True), ("1.22.0", False), ("1.32.0", False), (None, None)])
def test_precision_flags_off_where_the_tensorrt_ep_builds_strongly_typed(tmp_path, version, weak):
    """onnxruntime PR #24298 (1.22): both flags off -> a strongly typed network, so the FP16 and Q/DQ files keep
    the precision written in them; either flag on -> weakly typed (FP16 islands of the INT8 file become hints)."""
    from rdd_edge.deploy.backends.onnxruntime import installed_ort_version, ort_builds_strongly_typed

    if version is None:  # the installed onnxruntime decides
        version = installed_ort_version()
        weak = not ort_builds_strongly_typed(version)
    for name, flags in (("model.fp16.onnx", (True, False)), ("model.int8.onnx", (True, True))):
        _, opts = provider_options(tmp_path / name, ALL, ort_version=version)
        got = (opts[0]["trt_fp16_enable"], opts[0]["trt_int8_enable"])
        assert got == (flags if weak else (False, False)), (name, version)
    _, opts = provider_options(tmp_path / "model.onnx", ALL, ort_version=version)  # FP32: never a flag
    assert (opts[0]["trt_fp16_enable"], opts[0]["trt_int8_enable"]) == (False, False)


def test_the_tensorrt_ep_profile_is_small_by_default(tmp_path):
    import inspect

    from rdd_edge.deploy.backends.onnxruntime import TRT_EP_MAX_BATCH, OrtBackend

    assert inspect.signature(OrtBackend).parameters["max_batch"].default == TRT_EP_MAX_BATCH == 4
    _manifest(tmp_path)
    assert _trt_profile(tmp_path / "model.fp16.onnx", TRT_EP_MAX_BATCH)["max"][0] == 4


class _FakeOrt:
    """An onnxruntime whose TensorRT provider fails to load: it logs ORT's line to fd 2 and falls back."""

    class SessionOptions:
        log_severity_level = 3

    def InferenceSession(self, path, sess_options=None, providers=(), provider_options=()):  # noqa: N802
        import os

        if "TensorrtExecutionProvider" in providers:
            os.write(2, b"2026-12-06 08:00:00.0 [E:onnxruntime:Default, provider_bridge_ort.cc:2167 TryGetProviderInfo_TensorRT] "
                        b"/onnxruntime/core/session/provider_bridge_ort.cc:1778 onnxruntime::Provider& onnxruntime::"
                        b"ProviderLibrary::Get() [ONNXRuntimeError] : 1 : FAIL : Failed to load library "
                        b"libonnxruntime_providers_tensorrt.so with error: libnvinfer.so.10: cannot open shared object file\n")
        return object()


def test_a_provider_that_falls_back_says_why_once(tmp_path, caplog):
    import logging

    from rdd_edge.deploy.backends import onnxruntime as ortmod

    asked, opts = provider_options(tmp_path / "model.fp16.onnx", ALL, ort_version="1.22.0")
    with caplog.at_level(logging.WARNING):
        note = ortmod.fallback_note(_FakeOrt(), tmp_path / "model.fp16.onnx", asked, opts, [CUDA, CPU])
        again = ortmod.fallback_note(_FakeOrt(), tmp_path / "model.fp16.onnx", asked, opts, [CUDA, CPU])
    assert note == again and note.startswith("Tensorrt provider not used (")
    assert "Failed to load library libonnxruntime_providers_tensorrt.so with error: libnvinfer.so.10" in note
    assert "libnvinfer.so.10 does not load: needs TensorRT 10's libnvinfer (pip TensorRT keeps it in " \
           "site-packages/tensorrt_libs" in note and note.endswith("; ran on CUDAExecutionProvider")
    assert [r.getMessage() for r in caplog.records].count(f"model.fp16.onnx: {note.rsplit('; ran on', 1)[0]}; "
                                                          "running on CUDAExecutionProvider") == 1  # once
    assert ortmod.fallback_note(_FakeOrt(), tmp_path / "model.fp16.onnx", asked, opts, asked) == ""  # none fell back
