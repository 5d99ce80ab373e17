"""Device buffers and streams for TensorRT, behind one small interface.

Two implementations, chosen by what is installed: ``cuda-python`` (``cuda.bindings.runtime``,
wheels for x86 and aarch64, what NVIDIA's current TensorRT samples use) first, then ``pycuda``
(often a source build on Jetson). Both expose: ``alloc(nbytes) -> int`` device pointer,
``free(ptr)``, ``stream() -> int`` handle, ``htod(ptr, host, stream)``, ``dtoh(host, ptr, stream)``,
``synchronize(stream)``. Host arrays must be C-contiguous numpy arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rdd_edge.errors import DeployError, MissingDependencyError

INSTALL_HINT = "install cuda-python (`pip install \"cuda-python<13\"` for CUDA 12 / JetPack 6) or `pip install rdd-edge[trt]` (pycuda)"


class CudaPythonMem:
    """``cuda.bindings.runtime`` (cudaMalloc, cudaMemcpyAsync, cudaStreamCreate ...)."""

    name = "cuda-python"

    def __init__(self) -> None:
        from cuda.bindings import runtime as cudart  # type: ignore[import-not-found]

        self._rt = cudart
        self._streams: dict[int, Any] = {}

    def _ok(self, res: Any, what: str) -> Any:
        err, *rest = res if isinstance(res, tuple) else (res,)
        if int(err) != 0:
            raise DeployError(f"CUDA {what} failed: {self._rt.cudaGetErrorName(err)[1]!r}")
        return rest[0] if len(rest) == 1 else rest

    def alloc(self, nbytes: int) -> int:
        return int(self._ok(self._rt.cudaMalloc(max(int(nbytes), 1)), "cudaMalloc"))

    def free(self, ptr: int) -> None:
        self._ok(self._rt.cudaFree(ptr), "cudaFree")

    def stream(self) -> int:
        s = self._ok(self._rt.cudaStreamCreate(), "cudaStreamCreate")
        handle = int(s)
        self._streams[handle] = s
        return handle

    def htod(self, ptr: int, host: np.ndarray, stream: int) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._ok(self._rt.cudaMemcpyAsync(ptr, host.ctypes.data, host.nbytes, kind, self._streams.get(stream, stream)), "cudaMemcpyAsync (host to device)")

    def dtoh(self, host: np.ndarray, ptr: int, stream: int) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._ok(self._rt.cudaMemcpyAsync(host.ctypes.data, ptr, host.nbytes, kind, self._streams.get(stream, stream)), "cudaMemcpyAsync (device to host)")

    def synchronize(self, stream: int) -> None:
        self._ok(self._rt.cudaStreamSynchronize(self._streams.get(stream, stream)), "cudaStreamSynchronize")


class PycudaMem:
    """``pycuda.driver`` on the device's primary context."""

    name = "pycuda"

    def __init__(self) -> None:
        import pycuda.driver as drv  # type: ignore[import-not-found]

        drv.init()
        self._drv = drv
        self._ctx = drv.Device(0).retain_primary_context()
        self._ctx.push()
        self._allocs: dict[int, Any] = {}
        self._streams: dict[int, Any] = {}

    def alloc(self, nbytes: int) -> int:
        a = self._drv.mem_alloc(max(int(nbytes), 1))
        self._allocs[int(a)] = a
        return int(a)

    def free(self, ptr: int) -> None:
        a = self._allocs.pop(ptr, None)
        if a is not None:
            a.free()

    def stream(self) -> int:
        s = self._drv.Stream()
        self._streams[s.handle] = s
        return int(s.handle)

    def htod(self, ptr: int, host: np.ndarray, stream: int) -> None:
        self._drv.memcpy_htod_async(ptr, host, self._streams[stream])

    def dtoh(self, host: np.ndarray, ptr: int, stream: int) -> None:
        self._drv.memcpy_dtoh_async(host, ptr, self._streams[stream])

    def synchronize(self, stream: int) -> None:
        self._streams[stream].synchronize()


IMPLEMENTATIONS = {"cuda-python": CudaPythonMem, "pycuda": PycudaMem}


def get_cuda_mem(prefer: str | None = None) -> CudaPythonMem | PycudaMem:
    """The first implementation that imports (``prefer`` first); MissingDependencyError if none."""
    order = [prefer] if prefer else []
    order += [n for n in IMPLEMENTATIONS if n not in order]
    errors = []
    for name in order:
        if name not in IMPLEMENTATIONS:
            raise DeployError(f"CUDA memory backend {name!r}: expected one of {list(IMPLEMENTATIONS)}")
        try:
            return IMPLEMENTATIONS[name]()
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
    raise MissingDependencyError(f"TensorRT engines need CUDA device buffers; neither binding is usable ({'; '.join(errors)}): {INSTALL_HINT}")
