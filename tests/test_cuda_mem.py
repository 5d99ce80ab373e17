"""deploy.cuda_mem against fake cuda-python and pycuda modules: pinned buffers, checked results,
one-line errors, everything released on close / at garbage collection, pycuda's context popped."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from rdd_edge.errors import DeployError, MissingDependencyError

from trt_double import CudaError, build_cudart_standin, fake_board, install, install_pycuda


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    """A libcudart.so.12 stand-in (tests/cudart_standin.c: the runtime's C signatures over host memory)."""
    return build_cudart_standin(tmp_path_factory.mktemp("cudart"))


def _lib(path):
    import ctypes

    lib = ctypes.CDLL(str(path))  # the same handle cuda_mem loaded: its counters
    lib.standin_fail.argtypes = [ctypes.c_char_p, ctypes.c_int]
    return lib


def _round_trip(mem):
    """0..5 through pinned host memory, a device buffer and back on one stream; the pinned copy that came back."""
    s = mem.stream()
    host = mem.pinned_empty((2, 3), np.float32)
    assert host.shape == (2, 3) and host.dtype == np.float32 and mem.is_pinned(host)
    host[:] = np.arange(6).reshape(2, 3)
    dev = mem.alloc(host.nbytes)
    mem.htod(dev, host, s)
    back = mem.pinned_empty(6, np.float32)
    mem.dtoh(back, dev, s)
    mem.synchronize(s)
    return back


def test_cuda_python_round_trip_through_pinned_memory(monkeypatch):
    _, rt = install(monkeypatch)
    from rdd_edge.deploy.cuda_mem import CudaPythonMem, get_cuda_mem

    with get_cuda_mem() as mem:
        assert isinstance(mem, CudaPythonMem) and rt.log[0] == "cudaSetDevice"
        assert not mem.is_pinned(np.zeros(6, np.float32))
        back = _round_trip(mem)
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
    with pytest.raises(DeployError, match=r"CUDA cudaSetDevice\(0\) failed \(cuda-python\): cudaErrorInsufficientDriver \(35\)") as e:
        get_cuda_mem()
    assert "\n" not in str(e.value)
    mem = get_cuda_mem()
    rt.fail["cudaMalloc"] = CudaError.cudaErrorMemoryAllocation
    with pytest.raises(DeployError, match=r"cudaMalloc\(64 bytes\) failed \(cuda-python\): cudaErrorMemoryAllocation"):
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
    with pytest.raises(MissingDependencyError, match=r"cuda-python: .*pycuda: .*libcudart: .*JetPack's CUDA"):
        get_cuda_mem()


def test_a_jetson_uses_the_boards_libcudart_so_a_newer_cuda_python_cannot_skew(monkeypatch, tmp_path, standin):
    """R36.4 with CUDA 12.6 in version.json and a pip cuda-python whose static runtime the Tegra driver refuses
    (cudaErrorInsufficientDriver, 35): buffers come from the board's libcudart and cuda-python is never tried."""
    _, rt = install(monkeypatch)
    fake_board(monkeypatch, tmp_path, jetson="release", cuda="12.6.68", libcudart=standin)
    rt.fail["cudaSetDevice"] = CudaError.cudaErrorInsufficientDriver
    from rdd_edge.deploy.cuda_mem import LibcudartMem, binding_order, get_cuda_mem

    assert binding_order() == ["libcudart", "cuda-python", "pycuda"]
    lib = _lib(standin)
    with get_cuda_mem() as mem:
        assert isinstance(mem, LibcudartMem) and str(standin) in mem.name
        back = _round_trip(mem)
        assert back.tolist() == list(range(6)) and mem.is_pinned(back)
        assert [lib.standin_live(i) for i in range(4)] == [1, 2, 1, 1]  # device, pinned, streams, non-blocking flag
    assert [lib.standin_live(i) for i in range(3)] == [0, 0, 0]
    assert "cudaSetDevice" not in rt.log  # cuda-python was not needed


@pytest.mark.parametrize("sign", ["devicetree", "kernel"])
def test_a_container_without_nv_tegra_release_is_a_jetson(monkeypatch, tmp_path, sign):
    from rdd_edge.deploy import board, versions

    install(monkeypatch)
    fake_board(monkeypatch, tmp_path, jetson=sign, cuda="12.6.68")
    assert board.is_jetson() and not board.TEGRA_RELEASE.exists()
    header = versions.header_lines(versions.collect())
    assert any(line.startswith("L4T: no /etc/nv_tegra_release, but a Jetson") for line in header)
    fake_board(monkeypatch, tmp_path / "desktop", jetson=None)
    assert not board.is_jetson()


def test_any_cuda_failure_falls_back_to_the_next_runtime(monkeypatch, tmp_path, standin):
    """Off a Jetson cuda-python comes first; when CUDA refuses it (not an ImportError) the system libcudart is tried."""
    _, rt = install(monkeypatch)
    fake_board(monkeypatch, tmp_path, jetson=None, libcudart=standin)
    rt.fail["cudaSetDevice"] = CudaError.cudaErrorInsufficientDriver
    from rdd_edge.deploy.cuda_mem import LibcudartMem, get_cuda_mem

    with get_cuda_mem() as mem:
        assert isinstance(mem, LibcudartMem)
    assert rt.log[0] == "cudaSetDevice"  # tried first, failed, passed over


def test_when_nothing_opens_one_line_names_the_boards_cuda_and_every_runtime_tried(monkeypatch, tmp_path, standin):
    _, rt = install(monkeypatch)
    fake_board(monkeypatch, tmp_path, jetson="release", cuda="12.6.68", libcudart=standin)
    rt.fail["cudaSetDevice"] = CudaError.cudaErrorInsufficientDriver
    _lib(standin).standin_fail(b"cudaSetDevice", 35)
    from rdd_edge.deploy.cuda_mem import get_cuda_mem

    with pytest.raises(DeployError) as e:
        get_cuda_mem()
    msg = str(e.value)
    assert "\n" not in msg and "this machine has CUDA 12.6.68 (" in msg and "version.json" in msg
    assert f"libcudart: CUDA cudaSetDevice(0) failed (libcudart {standin}): cudaErrorInsufficientDriver (35)" in msg
    assert "cuda-python: CUDA cudaSetDevice(0) failed (cuda-python): cudaErrorInsufficientDriver (35)" in msg
    assert "pycuda: " in msg


def test_the_header_names_the_boards_cuda_and_each_runtime(monkeypatch, tmp_path, standin):
    """The acceptance header: version.json's CUDA next to the runtimes'; a newer cuda-python is a warning on a Jetson."""
    from rdd_edge.deploy import versions

    _, rt = install(monkeypatch)
    fake_board(monkeypatch, tmp_path, jetson="release", cuda="12.6.68", libcudart=standin)
    monkeypatch.setattr(rt, "cudaRuntimeGetVersion", lambda: (0, 12090))  # a pip cuda-bindings 12.9
    header = versions.header_lines(versions.collect())
    text = "\n".join(header)
    assert "CUDA on this machine (/usr/local/cuda/version.json): 12.6.68" in text
    assert f"CUDA runtimes: libcudart 12.6 ({standin}); cuda-python 12.9" in text
    assert "engines' buffers try libcudart, cuda-python, pycuda" in text
    assert "warning: cuda-python's CUDA runtime 12.9 is newer than this machine's CUDA 12.6.68" in text


def test_the_gpu_identity_comes_from_libcudart_on_a_jetson(monkeypatch, tmp_path, standin):
    from rdd_edge.deploy.engine_meta import runtime_identity

    _, rt = install(monkeypatch, gpu=b"Other")
    fake_board(monkeypatch, tmp_path, jetson="kernel", libcudart=standin)
    ident = runtime_identity()
    assert ident["gpu"] == "Orin (stand-in)" and ident["compute_capability"] == "8.7"
