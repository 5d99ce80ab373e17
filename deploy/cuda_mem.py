"""Device buffers, page-locked host buffers and streams for TensorRT, behind one small interface.

Two implementations: ``cuda-python`` (``cuda.bindings.runtime``: wheels for x86 and aarch64, what
NVIDIA's current TensorRT samples use; the default) and ``pycuda`` (often a source build on
Jetson). Both expose::

    alloc(nbytes) -> int                device pointer;  free(ptr)
    pinned_empty(shape, dtype) -> array page-locked host array;  free_pinned(array)
    stream() -> int                     a CUDA stream handle;  destroy_stream(handle)
    htod(ptr, host, stream) / dtoh(host, ptr, stream) / synchronize(stream)
    close()                             release everything still held (also a context manager;
                                        a finalizer does it at garbage collection or exit)

Asynchronous copies only overlap and stay asynchronous from page-locked memory (with a pageable
numpy array the driver stages them through a pinned bounce buffer and blocks), so the TensorRT
runner copies through :meth:`pinned_empty` arrays. Every CUDA error becomes one DeployError line.
pycuda runs on the device's primary context: pushed here, popped on :meth:`close` or at exit
(pycuda aborts the interpreter when a pushed context is left on the stack at shutdown).
"""

from __future__ import annotations

import ctypes
import weakref
from typing import Any, Callable

import numpy as np

from rdd_edge.errors import DeployError, MissingDependencyError
from rdd_edge.extras import install_hint

# lazy imports in this module: cuda-python (cuda.bindings / cuda.cudart) and pycuda are optional
# dependencies (the trt / jetson / pycuda extras), imported inside the functions that use them

INSTALL_HINT = ("install cuda-python for your CUDA major: the `jetson` extra (JetPack 6, CUDA 12), `trt` (desktop "
                "CUDA 12) or `trt-cuda13`, e.g. " + install_hint("jetson") + "; pycuda also works (the `pycuda` extra, "
                "needs nvcc)")


def import_cudart() -> Any:
    """cuda-python's runtime API module (``cuda.bindings.runtime``; ``cuda.cudart`` before 12.6)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        from cuda import cudart as runtime  # cuda-python < 12.6 kept the runtime API here
    return runtime


def native_handle(obj: Any) -> int:
    """The address behind a cuda-python handle (a ``cudaStream_t``) as an int: cuda-bindings 13's
    ``utils.get_cuda_native_handle`` where present, else ``int(obj)`` as 12.x allows."""
    try:
        from cuda.bindings.utils import get_cuda_native_handle
    except ImportError:
        return int(obj)
    try:
        return int(get_cuda_native_handle(obj))
    except TypeError:  # a type the helper does not know (older bindings, plain ints)
        return int(obj)


class _Closable:
    """``close()`` (idempotent: runs the finalizer that frees streams, buffers and contexts) and ``with``."""

    name = "cuda"
    _finalizer: Any

    def close(self) -> None:
        """Destroy the streams, free every device and pinned buffer still held, release the context."""
        if not self._finalizer.alive:
            return
        errors = self._finalizer()
        if errors:
            raise DeployError(f"CUDA cleanup reported errors ({self.name}): {'; '.join(errors)[:300]}")

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _CudaPythonState:
    """What a :class:`CudaPythonMem` holds; released by :meth:`release` (close or finalizer)."""

    def __init__(self, rt: Any) -> None:
        self.rt = rt
        self.device: dict[int, int] = {}  # ptr -> nbytes
        self.pinned: dict[int, int] = {}  # ptr -> nbytes
        self.streams: dict[int, Any] = {}  # handle -> cudaStream_t

    def release(self) -> list[str]:
        errors: list[str] = []
        for what, items, fn in (("cudaStreamDestroy", self.streams, self.rt.cudaStreamDestroy),
                                ("cudaFree", self.device, self.rt.cudaFree),
                                ("cudaFreeHost", self.pinned, self.rt.cudaFreeHost)):
            for key in list(items):
                obj = items.pop(key)
                try:
                    res = fn(obj if what == "cudaStreamDestroy" else key)
                    err = res[0] if isinstance(res, tuple) else res
                    if int(err) != 0:
                        errors.append(f"{what}: {_cuda_python_error_name(self.rt, err)}")
                except Exception as exc:  # noqa: BLE001 - keep releasing the rest
                    errors.append(f"{what}: {exc}")
        return errors


def _cuda_python_error_name(rt: Any, err: Any) -> str:
    try:
        res = rt.cudaGetErrorName(err)
        name = res[1] if isinstance(res, tuple) and len(res) > 1 else res
        name = name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # noqa: BLE001
        name = str(err)
    return f"{name} ({int(err)})"


class CudaPythonMem(_Closable):
    """``cuda.bindings.runtime`` (cudaMalloc, cudaMallocHost, cudaMemcpyAsync, cudaStreamCreate ...);
    every ``(err, value)`` result is checked."""

    name = "cuda-python"

    def __init__(self, device: int = 0) -> None:
        rt = import_cudart()
        self._rt = rt
        self._state = _CudaPythonState(rt)
        self._finalizer = weakref.finalize(self, self._state.release)
        self._ok(rt.cudaSetDevice(int(device)), f"cudaSetDevice({device})")

    def _ok(self, res: Any, what: str) -> Any:
        if isinstance(res, tuple):
            err, rest = res[0], res[1:]
        else:
            err, rest = res, ()
        if int(err) != 0:
            raise DeployError(f"CUDA {what} failed: {_cuda_python_error_name(self._rt, err)}; check the NVIDIA driver "
                              "(nvidia-smi / tegrastats) and that cuda-python matches its CUDA major")
        return rest[0] if len(rest) == 1 else (rest or None)

    def _check_open(self) -> None:
        if not self._finalizer.alive:
            raise DeployError("CUDA buffers used after close()")

    def alloc(self, nbytes: int) -> int:
        self._check_open()
        n = max(int(nbytes), 1)
        ptr = int(self._ok(self._rt.cudaMalloc(n), f"cudaMalloc({n} bytes)"))
        self._state.device[ptr] = n
        return ptr

    def free(self, ptr: int) -> None:
        if self._state.device.pop(int(ptr), None) is not None:
            self._ok(self._rt.cudaFree(int(ptr)), "cudaFree")

    def pinned_empty(self, shape: tuple[int, ...] | int, dtype: Any) -> np.ndarray:
        """A C-contiguous numpy array in page-locked host memory (``cudaMallocHost``)."""
        self._check_open()
        dt = np.dtype(dtype)
        shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
        count = int(np.prod(shape, dtype=np.int64))
        n = max(count * dt.itemsize, 1)
        ptr = int(self._ok(self._rt.cudaMallocHost(n), f"cudaMallocHost({n} bytes)"))
        self._state.pinned[ptr] = n
        raw = (ctypes.c_ubyte * n).from_address(ptr)
        return np.frombuffer(raw, dtype=np.uint8, count=n)[: count * dt.itemsize].view(dt).reshape(shape)

    def free_pinned(self, host: np.ndarray) -> None:
        ptr = int(host.__array_interface__["data"][0])
        if self._state.pinned.pop(ptr, None) is not None:
            self._ok(self._rt.cudaFreeHost(ptr), "cudaFreeHost")

    def is_pinned(self, host: np.ndarray) -> bool:
        ptr = int(host.__array_interface__["data"][0])
        return any(p <= ptr and ptr + host.nbytes <= p + n for p, n in self._state.pinned.items())

    def stream(self) -> int:
        """A non-blocking stream (no implicit sync with the legacy default stream) and its handle."""
        self._check_open()
        flags = self._rt.cudaStreamNonBlocking
        s = self._ok(self._rt.cudaStreamCreateWithFlags(flags), "cudaStreamCreateWithFlags(cudaStreamNonBlocking)")
        handle = native_handle(s)
        self._state.streams[handle] = s
        return handle

    def destroy_stream(self, stream: int) -> None:
        s = self._state.streams.pop(int(stream), None)
        if s is not None:
            self._ok(self._rt.cudaStreamDestroy(s), "cudaStreamDestroy")

    def htod(self, ptr: int, host: np.ndarray, stream: int) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._ok(self._rt.cudaMemcpyAsync(int(ptr), host.ctypes.data, host.nbytes, kind, self._stream(stream)),
                 "cudaMemcpyAsync (host to device)")

    def dtoh(self, host: np.ndarray, ptr: int, stream: int) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._ok(self._rt.cudaMemcpyAsync(host.ctypes.data, int(ptr), host.nbytes, kind, self._stream(stream)),
                 "cudaMemcpyAsync (device to host)")

    def synchronize(self, stream: int) -> None:
        self._ok(self._rt.cudaStreamSynchronize(self._stream(stream)), "cudaStreamSynchronize")

    def _stream(self, handle: int) -> Any:
        s = self._state.streams.get(int(handle))
        if s is None:
            raise DeployError(f"CUDA stream {handle} is not open (closed runner?)")
        return s



NON_BLOCKING = 1  # CU_STREAM_NON_BLOCKING, pycuda's Stream(flags)


class _PycudaState:
    def __init__(self, drv: Any, ctx: Any) -> None:
        self.drv, self.ctx = drv, ctx
        self.device: dict[int, Any] = {}
        self.pinned: dict[int, Any] = {}
        self.streams: dict[int, Any] = {}

    def release(self) -> list[str]:
        errors: list[str] = []
        try:
            for items in (self.device, self.pinned):
                for key in list(items):
                    obj = items.pop(key)
                    try:
                        _allocation(obj).free()
                    except Exception as exc:  # noqa: BLE001
                        errors.append(f"free: {exc}")
            self.streams.clear()  # pycuda destroys a stream when its object goes; the context is still current
        finally:
            if self.ctx is not None:
                try:
                    self.ctx.pop()  # the pushed primary context leaves the stack: no abort at exit
                except Exception as exc:  # noqa: BLE001
                    errors.append(f"context pop: {exc}")
                self.ctx = None
                try:
                    from pycuda.tools import clear_context_caches

                    clear_context_caches()
                except Exception:  # noqa: BLE001
                    pass
        return errors


class PycudaMem(_Closable):
    """``pycuda.driver`` on the device's primary context (pushed here, popped on close / at exit)."""

    name = "pycuda"

    def __init__(self, device: int = 0) -> None:
        import pycuda.driver as drv

        self._drv = drv
        try:
            drv.init()
            ctx = drv.Device(int(device)).retain_primary_context()
            ctx.push()
        except drv.Error as exc:
            raise DeployError(f"CUDA (pycuda) could not open device {device}: {_first_line(exc)}; check the NVIDIA driver") from None
        self._state = _PycudaState(drv, ctx)
        # weakref.finalize runs at garbage collection and, for objects still alive, at interpreter exit
        # (atexit), so the context is popped before pycuda's own shutdown check
        self._finalizer = weakref.finalize(self, self._state.release)

    def _call(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        if not self._finalizer.alive:
            raise DeployError("CUDA buffers used after close()")
        try:
            return fn(*args)
        except self._drv.Error as exc:
            raise DeployError(f"CUDA {what} failed (pycuda): {_first_line(exc)}") from None

    def alloc(self, nbytes: int) -> int:
        a = self._call("mem_alloc", self._drv.mem_alloc, max(int(nbytes), 1))
        self._state.device[int(a)] = a
        return int(a)

    def free(self, ptr: int) -> None:
        a = self._state.device.pop(int(ptr), None)
        if a is not None:
            self._call("free", a.free)

    def pinned_empty(self, shape: tuple[int, ...] | int, dtype: Any) -> np.ndarray:
        arr = self._call("pagelocked_empty", self._drv.pagelocked_empty, shape, np.dtype(dtype))
        self._state.pinned[int(arr.__array_interface__["data"][0])] = arr
        return arr

    def free_pinned(self, host: np.ndarray) -> None:
        arr = self._state.pinned.pop(int(host.__array_interface__["data"][0]), None)
        if arr is not None:
            self._call("free (pinned)", _allocation(arr).free)

    def is_pinned(self, host: np.ndarray) -> bool:
        ptr = int(host.__array_interface__["data"][0])
        return any(p <= ptr and ptr + host.nbytes <= p + a.nbytes for p, a in self._state.pinned.items())

    def stream(self) -> int:
        """A non-blocking stream (``CU_STREAM_NON_BLOCKING`` = 1) and its handle."""
        s = self._call("Stream", self._drv.Stream, NON_BLOCKING)
        self._state.streams[int(s.handle)] = s
        return int(s.handle)

    def destroy_stream(self, stream: int) -> None:
        self._state.streams.pop(int(stream), None)

    def _stream(self, handle: int) -> Any:
        s = self._state.streams.get(int(handle))
        if s is None:
            raise DeployError(f"CUDA stream {handle} is not open (closed runner?)")
        return s

    def htod(self, ptr: int, host: np.ndarray, stream: int) -> None:
        self._call("memcpy_htod_async", self._drv.memcpy_htod_async, int(ptr), host, self._stream(stream))

    def dtoh(self, host: np.ndarray, ptr: int, stream: int) -> None:
        self._call("memcpy_dtoh_async", self._drv.memcpy_dtoh_async, host, int(ptr), self._stream(stream))

    def synchronize(self, stream: int) -> None:
        self._call("Stream.synchronize", self._stream(stream).synchronize)



def _allocation(obj: Any) -> Any:
    """The pycuda object owning ``obj``'s memory (a DeviceAllocation, or the HostAllocation at the
    base of a ``pagelocked_empty`` array)."""
    seen = obj
    while not hasattr(seen, "free") and getattr(seen, "base", None) is not None:
        seen = seen.base
    return seen


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]


IMPLEMENTATIONS: dict[str, type[CudaPythonMem] | type[PycudaMem]] = {"cuda-python": CudaPythonMem, "pycuda": PycudaMem}


def get_cuda_mem(prefer: str | None = None, device: int = 0) -> CudaPythonMem | PycudaMem:
    """``prefer`` (only that binding: an explicit choice never switches silently), else the first
    that imports of cuda-python, then pycuda.

    MissingDependencyError when none is installed; DeployError when one imports but CUDA itself
    fails (no driver, wrong CUDA major): that message is the useful one."""
    if prefer is not None and prefer not in IMPLEMENTATIONS:
        raise DeployError(f"CUDA memory backend {prefer!r}: expected one of {list(IMPLEMENTATIONS)}")
    order = [prefer] if prefer else list(IMPLEMENTATIONS)
    errors = []
    for name in order:
        try:
            return IMPLEMENTATIONS[name](device)
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
    raise MissingDependencyError(f"TensorRT engines need CUDA buffers; no usable binding ({'; '.join(errors)}): {INSTALL_HINT}")
