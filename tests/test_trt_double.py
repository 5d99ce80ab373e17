"""The recording TensorRT double checks itself: it has the API NVIDIA's stubs declare, refuses what they
do not, lacks what TensorRT 11 removed, and its fake CUDA runtime checks pointers."""

from __future__ import annotations

import numpy as np
import pytest

from trt_double import CudaError, FakeCudart, MemcpyKind, StubViolation, make_double, stubs



def test_stub_parse_has_the_api_the_code_uses():
    s = stubs()
    assert "create_network" in s["Builder"].methods and "num_DLA_cores" in s["Builder"].props
    assert "set_timing_cache" in s["IBuilderConfig"].methods and "profiling_verbosity" in s["IBuilderConfig"].attrs
    assert s["NetworkDefinitionCreationFlag"].members["STRONGLY_TYPED"][1] == 1
    assert "DLA_core" in s["Runtime"].attrs and "set_input_shape" in s["IExecutionContext"].methods
    assert len(s["IExecutionContext"].methods["set_input_shape"]) == 3  # overloads: tuple, list, Dims


def test_double_refuses_what_the_stubs_do_not_have():
    d = make_double("10.13.0.35")
    b = d.Builder(d.Logger(d.Logger.WARNING))
    with pytest.raises(StubViolation, match="create_netwrk"):
        b.create_netwrk(0)
    with pytest.raises(TypeError, match="no signature"):
        b.create_network("0")  # flags: int
    cfg = b.create_builder_config()
    with pytest.raises(TypeError, match="no signature"):
        cfg.set_timing_cache(cfg.create_timing_cache(b""))  # ignore_mismatch has no default
    with pytest.raises(StubViolation, match="read-only"):
        b.num_DLA_cores = 2
    with pytest.raises(TypeError, match="expected"):
        cfg.DLA_core = "0"
    with pytest.raises(TypeError):
        d.Builder()  # Builder(logger)
    assert d.BuilderFlag.FP16.value == 0 and cfg.int8_calibrator is None  # present in 10.x
    assert d.calls("Builder", "create_network") == []  # refused calls are not recorded


def test_double_for_tensorrt_11_lacks_what_11_removed():
    d = make_double("11.0.0.1")
    cfg = d.Builder(d.Logger(d.Logger.WARNING)).create_builder_config()
    for flag in ("FP16", "INT8", "BF16"):
        assert not hasattr(d.BuilderFlag, flag)
    assert hasattr(d.BuilderFlag, "GPU_FALLBACK")
    with pytest.raises(StubViolation, match="int8_calibrator"):
        cfg.int8_calibrator = None
    with pytest.raises(StubViolation):
        cfg.set_quantization_flag
    assert int(d.NetworkDefinitionCreationFlag.STRONGLY_TYPED) == 0 and not hasattr(d.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")


def test_fake_cudart_checks_pointers_and_records_pinned_copies():
    rt = FakeCudart()
    err, dev = rt.cudaMalloc(16)
    _, host = rt.cudaMallocHost(16)
    _, s = rt.cudaStreamCreate()
    assert err == 0
    assert rt.cudaMemcpyAsync(dev, host, 16, MemcpyKind.cudaMemcpyHostToDevice, s)[0] == 0
    assert rt.copies[-1]["pinned"] is True
    pageable = np.zeros(16, np.uint8)
    rt.cudaMemcpyAsync(dev, pageable.ctypes.data, 16, MemcpyKind.cudaMemcpyHostToDevice, s)
    assert rt.copies[-1]["pinned"] is False
    assert rt.cudaFree(dev + 1)[0] == CudaError.cudaErrorInvalidValue
