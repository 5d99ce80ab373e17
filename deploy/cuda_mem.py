"""Device buffers, page-locked host buffers and streams for TensorRT, behind one small interface.

Three implementations: ``libcudart`` (the system CUDA runtime through ctypes, as Polygraphy's
``polygraphy.cuda`` does: on a Jetson the board's own ``/usr/local/cuda`` runtime, the one TensorRT and
the driver were built with, so no version skew is possible; tried first there), ``cuda-python``
(``cuda.bindings.runtime``: what NVIDIA's desktop TensorRT samples use; first elsewhere) and
``pycuda``. A pip cuda-python 12.x links its own static CUDA runtime (cuda-python 12.x release notes:
"Statically link CUDA Runtime instead of reimplementing it"); one newer than the board's CUDA fails
on a Tegra driver with cudaErrorInsufficientDriver (35) unless cuda-compat is installed
(NVlabs/FoundationStereo#207, anduril/jetpack-nixos#328). Any initialisation failure moves on to the
next implementation. All expose::

    alloc(nbytes) -> int                device pointer;  free(ptr)
    pinned_empty(shape, dtype) -> array page-locked host array;  free_pinned(array)
    stream() -> int                     a CUDA stream handle;  destroy_stream(handle)
    htod(ptr, host, stream) / dtoh(host, ptr, stream) / synchronize(stream)
    events_unavailable() -> str         '' when CUDA events can time GPU work here, else why not
    event() -> int; record(event, stream); elapsed_ms(start, end) -> float  (cudaEventElapsedTime after
                                        cudaEventSynchronize on ``end``: GPU time between the two records)
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
import glob
import os
import platform
import weakref
from typing import Any, Callable

import numpy as np

from rdd_edge.deploy import board
from rdd_edge.errors import DeployError, MissingDependencyError
from rdd_edge.extras import install_hint

# lazy imports in this module: cuda-python (cuda.bindings / cuda.cudart) and pycuda are optional
# dependencies (the trt / jetson / pycuda extras), imported inside the functions that use them

INSTALL_HINT = ("on a Jetson, JetPack's CUDA (/usr/local/cuda/lib64/libcudart.so, from the nvidia-jetpack / cuda-runtime "
                "packages) is all it needs; on a desktop install cuda-python for the driver's CUDA major: the `trt` extra "
                "(CUDA 12) or `trt-cuda13`, e.g. " + install_hint("trt") + "; pycuda also works (the `pycuda` extra, "
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
    ``utils.get_cuda_native_handle`` where present, else ``int(obj)`` as 12.x allows (a plain int: itself)."""
    if isinstance(obj, int):
        return obj
    try:
        from cuda.bindings.utils import get_cuda_native_handle
    except ImportError:
        return int(obj)
    try:
        return int(get_cuda_native_handle(obj))
    except TypeError:  # a type the helper does not know (older bindings, plain ints)
        return int(obj)


# ---------------------------------------------------------------- the system CUDA runtime, through ctypes

CUDART_ENV = "RDD_CUDART"  # a libcudart.so to use instead of searching


def cudart_dirs() -> list[str]:
    """Where to look for ``libcudart.so*``, in order: the board's toolkit first (JetPack installs it under
    /usr/local/cuda), then LD_LIBRARY_PATH, then the distribution's library folders."""
    arch = platform.machine()
    dirs = [str(board.CUDA_HOME / "lib64"), str(board.CUDA_HOME / "targets" / f"{arch}-linux" / "lib")]
    dirs += [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if d]
    dirs += [f"/usr/lib/{arch}-linux-gnu", "/usr/lib64", "/usr/lib"]
    return dirs


def find_libcudart() -> list[str]:
    """Candidate files for the CUDA runtime library ($RDD_CUDART alone when set)."""
    explicit = os.environ.get(CUDART_ENV)
    if explicit:
        return [explicit]
    found: list[str] = []
    for d in cudart_dirs():
        for f in sorted(glob.glob(os.path.join(d, "libcudart.so*"))):
            if f not in found:
                found.append(f)
    return found


_LIBS: dict[str, ctypes.CDLL] = {}


def load_libcudart() -> tuple[ctypes.CDLL, str]:
    """The CUDA runtime library and its path; OSError naming every place tried when none loads."""
    tried = []
    for path in find_libcudart():
        if path in _LIBS:
            return _LIBS[path], path
        try:
            lib = ctypes.CDLL(path)
        except OSError as exc:
            tried.append(f"{path} ({str(exc)[:80]})")
            continue
        _declare(lib)
        _LIBS[path] = lib
        return lib, path
    where = "; ".join(tried) or f"no libcudart.so* in {', '.join(cudart_dirs()[:2])} or LD_LIBRARY_PATH"
    raise OSError(f"no CUDA runtime library loaded ({where})")


_c = ctypes
_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {  # cuda_runtime_api.h; cudaError_t and enums are C ints
    "cudaSetDevice": (_c.c_int, [_c.c_int]),
    "cudaMalloc": (_c.c_int, [_c.POINTER(_c.c_void_p), _c.c_size_t]),
    "cudaFree": (_c.c_int, [_c.c_void_p]),
    "cudaMallocHost": (_c.c_int, [_c.POINTER(_c.c_void_p), _c.c_size_t]),
    "cudaFreeHost": (_c.c_int, [_c.c_void_p]),
    "cudaStreamCreateWithFlags": (_c.c_int, [_c.POINTER(_c.c_void_p), _c.c_uint]),
    "cudaStreamDestroy": (_c.c_int, [_c.c_void_p]),
    "cudaStreamSynchronize": (_c.c_int, [_c.c_void_p]),
    "cudaMemcpyAsync": (_c.c_int, [_c.c_void_p, _c.c_void_p, _c.c_size_t, _c.c_int, _c.c_void_p]),
    "cudaGetErrorName": (_c.c_char_p, [_c.c_int]),
    "cudaRuntimeGetVersion": (_c.c_int, [_c.POINTER(_c.c_int)]),
    "cudaDeviceGetAttribute": (_c.c_int, [_c.POINTER(_c.c_int), _c.c_int, _c.c_int]),
    "cudaGetDeviceProperties": (_c.c_int, [_c.c_void_p, _c.c_int]),
}
# CUDA events (cuda_runtime_api.h): GPU time of the work between two records on a stream. Optional: a
# library without them still gives buffers; the GPU compute column then says "unknown" and why.
EVENT_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "cudaEventCreate": (_c.c_int, [_c.POINTER(_c.c_void_p)]),
    "cudaEventRecord": (_c.c_int, [_c.c_void_p, _c.c_void_p]),
    "cudaEventSynchronize": (_c.c_int, [_c.c_void_p]),
    "cudaEventElapsedTime": (_c.c_int, [_c.POINTER(_c.c_float), _c.c_void_p, _c.c_void_p]),
    "cudaEventDestroy": (_c.c_int, [_c.c_void_p]),
}


def _declare(lib: ctypes.CDLL) -> None:
    for name, (restype, argtypes) in _SIGNATURES.items():
        fn = getattr(lib, name)  # AttributeError: not a CUDA runtime
        fn.restype, fn.argtypes = restype, argtypes
    for name, (restype, argtypes) in EVENT_SIGNATURES.items():
        fn = getattr(lib, name, None)
        if fn is not None:
            fn.restype, fn.argtypes = restype, argtypes


class _Kinds:
    cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost = 1, 2  # cudaMemcpyKind


class CtypesRuntime:
    """The few runtime calls rdd-edge makes, on a loaded libcudart, shaped like cuda-python's
    (``(err, value)`` tuples), so one buffer manager serves both."""

    cudaStreamNonBlocking = 1
    cudaMemcpyKind = _Kinds
    DEV_ATTR_CC_MAJOR, DEV_ATTR_CC_MINOR = 75, 76  # cudaDevAttrComputeCapabilityMajor / Minor

    def __init__(self, lib: ctypes.CDLL, path: str) -> None:
        self.lib, self.path = lib, path

    def _out(self, fn: Any, *args: Any) -> tuple[int, int]:
        p = ctypes.c_void_p()
        err = fn(ctypes.byref(p), *args)
        return int(err), int(p.value or 0)

    def cudaSetDevice(self, device: int) -> tuple[int]:
        return (int(self.lib.cudaSetDevice(int(device))),)

    def cudaMalloc(self, n: int) -> tuple[int, int]:
        return self._out(self.lib.cudaMalloc, ctypes.c_size_t(n))

    def cudaMallocHost(self, n: int) -> tuple[int, int]:
        return self._out(self.lib.cudaMallocHost, ctypes.c_size_t(n))

    def cudaFree(self, ptr: int) -> tuple[int]:
        return (int(self.lib.cudaFree(ctypes.c_void_p(int(ptr)))),)

    def cudaFreeHost(self, ptr: int) -> tuple[int]:
        return (int(self.lib.cudaFreeHost(ctypes.c_void_p(int(ptr)))),)

    def cudaStreamCreateWithFlags(self, flags: int) -> tuple[int, int]:
        return self._out(self.lib.cudaStreamCreateWithFlags, ctypes.c_uint(int(flags)))

    def cudaStreamDestroy(self, stream: int) -> tuple[int]:
        return (int(self.lib.cudaStreamDestroy(ctypes.c_void_p(int(stream)))),)

    def cudaStreamSynchronize(self, stream: int) -> tuple[int]:
        return (int(self.lib.cudaStreamSynchronize(ctypes.c_void_p(int(stream)))),)

    def cudaMemcpyAsync(self, dst: int, src: int, n: int, kind: int, stream: int) -> tuple[int]:
        return (int(self.lib.cudaMemcpyAsync(ctypes.c_void_p(int(dst)), ctypes.c_void_p(int(src)), ctypes.c_size_t(n),
                                             int(kind), ctypes.c_void_p(int(stream)))),)

    def cudaGetErrorName(self, err: int) -> tuple[int, bytes]:
        return 0, self.lib.cudaGetErrorName(int(err)) or b"cudaError"

    def missing_events(self) -> list[str]:
        """The CUDA event calls this library lacks (none in any real libcudart)."""
        return [n for n in EVENT_SIGNATURES if getattr(self.lib, n, None) is None]

    def cudaEventCreate(self) -> tuple[int, int]:
        return self._out(self.lib.cudaEventCreate)

    def cudaEventRecord(self, event: int, stream: int) -> tuple[int]:
        return (int(self.lib.cudaEventRecord(ctypes.c_void_p(int(event)), ctypes.c_void_p(int(stream)))),)

    def cudaEventSynchronize(self, event: int) -> tuple[int]:
        return (int(self.lib.cudaEventSynchronize(ctypes.c_void_p(int(event)))),)

    def cudaEventElapsedTime(self, start: int, end: int) -> tuple[int, float]:
        ms = ctypes.c_float()
        err = self.lib.cudaEventElapsedTime(ctypes.byref(ms), ctypes.c_void_p(int(start)), ctypes.c_void_p(int(end)))
        return int(err), float(ms.value)

    def cudaEventDestroy(self, event: int) -> tuple[int]:
        return (int(self.lib.cudaEventDestroy(ctypes.c_void_p(int(event)))),)

    def cudaRuntimeGetVersion(self) -> tuple[int, int]:
        v = ctypes.c_int()
        return int(self.lib.cudaRuntimeGetVersion(ctypes.byref(v))), int(v.value)

    def device_identity(self, device: int = 0) -> tuple[str, tuple[int, int]] | None:
        """GPU name and compute capability. cudaDeviceProp starts with ``char name[256]`` in every CUDA
        release; the struct grows between releases, so a generous buffer takes any of them."""
        props = ctypes.create_string_buffer(16384)
        if self.lib.cudaGetDeviceProperties(props, int(device)) != 0:
            return None
        cc = []
        for attr in (self.DEV_ATTR_CC_MAJOR, self.DEV_ATTR_CC_MINOR):
            v = ctypes.c_int()
            if self.lib.cudaDeviceGetAttribute(ctypes.byref(v), attr, int(device)) != 0:
                return None
            cc.append(int(v.value))
        return props.raw[:256].split(b"\0", 1)[0].decode(errors="replace"), (cc[0], cc[1])


def cuda_version_text(number: int) -> str:
    """12060 -> "12.6" (CUDA encodes 1000 * major + 10 * minor)."""
    return f"{number // 1000}.{(number % 1000) // 10}"


def libcudart_version() -> tuple[str, str] | None:
    """(version, path) of the system CUDA runtime (``cudaRuntimeGetVersion`` creates no context); None without one."""
    try:
        rt = CtypesRuntime(*load_libcudart())
        err, number = rt.cudaRuntimeGetVersion()
    except (OSError, AttributeError):
        return None
    return (cuda_version_text(number), rt.path) if err == 0 else None


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
        self.events: dict[int, Any] = {}  # handle -> cudaEvent_t

    def release(self) -> list[str]:
        errors: list[str] = []
        no_events: Callable[[Any], tuple[int]] = lambda _e: (0,)  # noqa: E731 - never called: no event was made
        for what, items, fn in (("cudaEventDestroy", self.events, getattr(self.rt, "cudaEventDestroy", no_events)),
                                ("cudaStreamDestroy", self.streams, self.rt.cudaStreamDestroy),
                                ("cudaFree", self.device, self.rt.cudaFree),
                                ("cudaFreeHost", self.pinned, self.rt.cudaFreeHost)):
            for key in list(items):
                obj = items.pop(key)
                try:
                    res = fn(obj if what in ("cudaStreamDestroy", "cudaEventDestroy") else key)
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
    hint = "and that cuda-python's CUDA runtime is not newer than the driver's CUDA (on a Jetson: the board's)"

    def __init__(self, device: int = 0) -> None:
        self._open(import_cudart(), device)

    def _open(self, rt: Any, device: int) -> None:
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
            hint = f" {self.hint}" if what.startswith("cudaSetDevice") else ""
            raise DeployError(f"CUDA {what} failed ({self.name}): {_cuda_python_error_name(self._rt, err)}; check the "
                              f"NVIDIA driver (nvidia-smi / tegrastats){hint}")
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

    # -- CUDA events: GPU time between two records on a stream (what trtexec's "GPU Compute Time" measures)
    def events_unavailable(self) -> str:
        missing = [n for n in EVENT_SIGNATURES if not hasattr(self._rt, n)]
        return f"{self.name} has no {', '.join(missing)}" if missing else ""

    def event(self) -> int:
        self._check_open()
        ev = self._ok(self._rt.cudaEventCreate(), "cudaEventCreate")
        handle = native_handle(ev)
        self._state.events[handle] = ev
        return handle

    def record(self, event: int, stream: int) -> None:
        self._ok(self._rt.cudaEventRecord(self._event(event), self._stream(stream)), "cudaEventRecord")

    def elapsed_ms(self, start: int, end: int) -> float:
        """Milliseconds of GPU time from ``start`` to ``end`` (waits for ``end`` to complete)."""
        self._ok(self._rt.cudaEventSynchronize(self._event(end)), "cudaEventSynchronize")
        return float(self._ok(self._rt.cudaEventElapsedTime(self._event(start), self._event(end)), "cudaEventElapsedTime"))

    def _event(self, handle: int) -> Any:
        ev = self._state.events.get(int(handle))
        if ev is None:
            raise DeployError(f"CUDA event {handle} is not open (closed runner?)")
        return ev


class LibcudartMem(CudaPythonMem):
    """The system CUDA runtime through ctypes (:class:`CtypesRuntime`), the same checked calls."""

    name = "libcudart"
    hint = "and the CUDA runtime library it loaded"

    def __init__(self, device: int = 0) -> None:
        rt = CtypesRuntime(*load_libcudart())
        self.name = f"libcudart {rt.path}"
        self._open(rt, device)

    def events_unavailable(self) -> str:
        missing = self._rt.missing_events()
        return f"{self.name} has no {', '.join(missing)}" if missing else ""


NON_BLOCKING = 1  # CU_STREAM_NON_BLOCKING, pycuda's Stream(flags)


class _PycudaState:
    def __init__(self, drv: Any, ctx: Any) -> None:
        self.drv, self.ctx = drv, ctx
        self.device: dict[int, Any] = {}
        self.pinned: dict[int, Any] = {}
        self.streams: dict[int, Any] = {}
        self.events: dict[int, Any] = {}

    def release(self) -> list[str]:
        errors: list[str] = []
        try:
            self.events.clear()  # pycuda destroys an Event when its object goes, in this context
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

    def events_unavailable(self) -> str:
        return "" if hasattr(self._drv, "Event") else "this pycuda has no Event"

    def event(self) -> int:
        ev = self._call("Event", self._drv.Event)
        handle = id(ev)
        self._state.events[handle] = ev
        return handle

    def record(self, event: int, stream: int) -> None:
        self._call("Event.record", self._event(event).record, self._stream(stream))

    def elapsed_ms(self, start: int, end: int) -> float:
        """Milliseconds of GPU time from ``start`` to ``end`` (``Event.time_since``, after ``end`` completes)."""
        last = self._event(end)
        self._call("Event.synchronize", last.synchronize)
        return float(self._call("Event.time_since", last.time_since, self._event(start)))

    def _event(self, handle: int) -> Any:
        ev = self._state.events.get(int(handle))
        if ev is None:
            raise DeployError(f"CUDA event {handle} is not open (closed runner?)")
        return ev



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


IMPLEMENTATIONS: dict[str, Any] = {"libcudart": LibcudartMem, "cuda-python": CudaPythonMem, "pycuda": PycudaMem}


def binding_order(prefer: str | None = None) -> list[str]:
    """Which implementations to try: ``prefer`` alone; on a Jetson the board's libcudart first (no skew
    possible), elsewhere cuda-python first (the `trt` extra) and the system libcudart last."""
    if prefer is not None:
        if prefer not in IMPLEMENTATIONS:
            raise DeployError(f"CUDA memory backend {prefer!r}: expected one of {list(IMPLEMENTATIONS)}")
        return [prefer]
    if board.is_jetson():
        return ["libcudart", "cuda-python", "pycuda"]
    return ["cuda-python", "pycuda", "libcudart"]


def get_cuda_mem(prefer: str | None = None, device: int = 0) -> Any:
    """The first implementation of :func:`binding_order` that opens ``device``.

    Any failure moves on to the next (an absent binding, a library that does not load, a CUDA call
    that fails: a cuda-python newer than the board's CUDA stops at cudaSetDevice). When none works:
    MissingDependencyError if none was even present, else one DeployError line naming the board's
    CUDA (/usr/local/cuda/version.json) and what each runtime said."""
    missing: list[str] = []
    failed: list[str] = []
    for name in binding_order(prefer):
        try:
            return IMPLEMENTATIONS[name](device)
        except (ImportError, OSError, AttributeError) as exc:
            missing.append(f"{name}: {_first_line(exc)}")
        except Exception as exc:  # noqa: BLE001 - a CUDA failure in one runtime: try the next
            failed.append(f"{name}: {_first_line(exc)}")
    if not failed:
        raise MissingDependencyError(f"TensorRT engines need CUDA buffers; no usable binding ({'; '.join(missing)}): "
                                     f"{INSTALL_HINT}")
    board_cuda = board.board_cuda_version()
    cuda = f"CUDA {board_cuda} ({board.CUDA_HOME}/version.json)" if board_cuda else f"no {board.CUDA_HOME}/version.json"
    raise DeployError(f"CUDA could not open device {device}; this machine has {cuda}; tried "
                      f"{'; '.join(failed + missing)}")
