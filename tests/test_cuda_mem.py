"""deploy.cuda_mem against fake cuda-python and pycuda modules: pinned buffers, checked results,
one-line errors, everything released on close / at garbage collection, pycuda's context popped."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from rdd_edge.errors import DeployError, MissingDependencyError

from trt_double import CudaError, install, install_pycuda


def test_cuda_python_round_trip_through_pinned_memory(monkeypatch):
    _, rt = install(monkeypatch)
    from rdd_edge.deploy.cuda_mem import CudaPythonMem, get_cuda_mem

    with get_cuda_mem() as mem:
        assert isinstance(mem, CudaPythonMem) and rt.log[0] == "cudaSetDevice"
        s = mem.stream()
        host = mem.pinned_empty((2, 3), np.float32)
        assert host.shape == (2, 3) and host.dtype == np.float32 and mem.is_pinned(host)
        assert not mem.is_pinned(np.zeros(6, np.float32))
        host[:] = np.arange(6).reshape(2, 3)
        dev = mem.alloc(host.nbytes)
        mem.htod(dev, host, s)
        back = mem.pinned_empty(6, np.float32)
        mem.dtoh(back, dev, s)
        mem.synchronize(s)
        assert back.tolist() == list(range(6)) and all(c["pinned"] for c in rt.copies)
        mem.free_pinned(back)
        assert len(rt.pinned) == 1
    assert rt.pinned == {} and rt.device == {} and rt.streams == {}
    mem.close()  # idempotent
    with pytest.raises(DeployError, match="after close"):
        mem.alloc(4)


@pytest.mark.parametrize("bindings13", [False, True])
def test_streams_are_non_blocking_and_handles_come_from_the_bindings(monkeypatch, bindings13):
    """cuda-bindings 13's cudaStream_t has no int(): its address comes from utils.get_cuda_native_handle;
    12.x has no such helper and int() works. Either way the stream is created non-blocking."""
    _, rt = install(monkeypatch, bindings13=bindings13)
    from rdd_edge.deploy.cuda_mem import get_cuda_mem

    with get_cuda_mem() as mem:
        s = mem.stream()
        (made,) = rt.streams.values()
        assert s == made.handle and made.flags == rt.cudaStreamNonBlocking
        assert "cudaStreamCreateWithFlags" in rt.log and "cudaStreamCreate" not in rt.log
        host = mem.pinned_empty(4, np.float32)
        dev = mem.alloc(host.nbytes)
        mem.htod(dev, host, s)
        mem.synchronize(s)
    assert rt.streams == {}


def test_pycuda_streams_are_non_blocking(monkeypatch):
    drv = install_pycuda(monkeypatch)
    from rdd_edge.deploy.cuda_mem import get_cuda_mem

    with get_cuda_mem("pycuda") as mem:
        mem.stream()
    assert drv.stream_flags == [1]  # CU_STREAM_NON_BLOCKING


def test_cuda_python_errors_are_one_line(monkeypatch):
    _, rt = install(monkeypatch)
    from rdd_edge.deploy.cuda_mem import get_cuda_mem

    rt.fail["cudaSetDevice"] = CudaError.cudaErrorInsufficientDriver
    with pytest.raises(DeployError, match=r"CUDA cudaSetDevice\(0\) failed: cudaErrorInsufficientDriver \(35\)") as e:
        get_cuda_mem()
    assert "\n" not in str(e.value)
    mem = get_cuda_mem()
    rt.fail["cudaMalloc"] = CudaError.cudaErrorMemoryAllocation
    with pytest.raises(DeployError, match=r"cudaMalloc\(64 bytes\) failed: cudaErrorMemoryAllocation"):
        mem.alloc(64)
    with pytest.raises(DeployError, match="stream 7 is not open"):
        mem.synchronize(7)
    p = mem.alloc(8)
    rt.fail["cudaFree"] = CudaError.cudaErrorInvalidValue
    with pytest.raises(DeployError, match="cleanup reported errors \\(cuda-python\\): cudaFree: cudaErrorInvalidValue"):
        mem.close()
    assert rt.device == {} and p


def test_cuda_python_finalizer_releases_without_close(monkeypatch):
    _, rt = install(monkeypatch)
    from rdd_edge.deploy.cuda_mem import get_cuda_mem

    mem = get_cuda_mem()
    mem.stream(), mem.alloc(16), mem.pinned_empty(4, np.uint8)
    del mem
    gc.collect()
    assert rt.pinned == {} and rt.device == {} and rt.streams == {}


def test_pycuda_pushes_and_pops_the_primary_context(monkeypatch):
    install(monkeypatch)  # cuda-python faked too; ask for pycuda explicitly
    drv = install_pycuda(monkeypatch)
    from rdd_edge.deploy.cuda_mem import PycudaMem, get_cuda_mem

    mem = get_cuda_mem("pycuda")
    assert isinstance(mem, PycudaMem) and drv.stack == ["primary"]
    s = mem.stream()
    host = mem.pinned_empty(4, np.int32)
    host[:] = [1, 2, 3, 4]
    dev = mem.alloc(host.nbytes)
    mem.htod(dev, host, s)
    out = mem.pinned_empty(4, np.int32)
    mem.dtoh(out, dev, s)
    mem.synchronize(s)
    assert out.tolist() == [1, 2, 3, 4] and all(c["pinned"] for c in drv.copies)
    mem.close()
    assert drv.stack == [] and drv.live == {"device": 0, "pinned": 0} and "clear_context_caches" in drv.log
    mem.close()
    # not closed: the finalizer (garbage collection, or atexit at interpreter exit) pops the context
    mem2 = get_cuda_mem("pycuda")
    mem2.alloc(8)
    assert drv.stack == ["primary"]
    del mem2
    gc.collect()
    assert drv.stack == [] and drv.live["device"] == 0


def test_binding_choice(monkeypatch):
    import sys

    install(monkeypatch)
    from rdd_edge.deploy.cuda_mem import CudaPythonMem, get_cuda_mem

    with pytest.raises(DeployError, match="expected one of"):
        get_cuda_mem("cupy")
    with pytest.raises(MissingDependencyError, match="pycuda: "):
        get_cuda_mem("pycuda")  # asked for explicitly: no silent switch to cuda-python
    assert isinstance(get_cuda_mem(), CudaPythonMem)  # the default order
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingDependencyError, match=r"cuda-python: .*pycuda: .*the `jetson` extra"):
        get_cuda_mem()
