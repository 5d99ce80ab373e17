"""TensorRT backend (10.x and 11.x Python API): deserialize an engine, bind tensors by name, run.

The engine's sidecar (``<engine>.json``) is checked against this machine first, so a foreign
engine fails with a rebuild instruction instead of "Version tag does not match". Device buffers
come from :mod:`deploy.cuda_mem` (cuda-python or pycuda). ``tensorrt`` is imported inside.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rdd_edge.errors import DeployError, MissingDependencyError

from deploy.engine_meta import check_compatible, read_sidecar


def bind_shape(name: str, declared: Sequence[int], actual: Sequence[int], profile: tuple[Sequence[int], Sequence[int], Sequence[int]] | None = None) -> tuple[int, ...]:
    """The shape to set for input ``name``: ``actual`` checked against the engine's declared dims
    (-1 = dynamic) and, for dynamic dims, the optimisation profile's min/max."""
    declared, actual = tuple(int(d) for d in declared), tuple(int(d) for d in actual)
    if len(declared) != len(actual):
        raise DeployError(f"engine input {name!r} has {len(declared)} dims {list(declared)}; got a batch of shape {list(actual)}")
    for i, (d, a) in enumerate(zip(declared, actual)):
        if d >= 0 and d != a:
            raise DeployError(f"engine input {name!r} is fixed at {list(declared)}; got {list(actual)} (dim {i}); rebuild with a dynamic batch or feed that shape")
    if profile is not None:
        lo, _, hi = profile
        for i, (l, h, a) in enumerate(zip(lo, hi, actual)):
            if not l <= a <= h:
                raise DeployError(f"engine input {name!r}: dim {i} = {a} outside the engine's profile [{l}, {h}] (min {list(lo)}, max {list(hi)}); rebuild with a larger --max-batch")
    return actual


class TrtBackend:
    """One engine + execution context; buffers are (re)allocated when the batch size changes."""

    def __init__(self, path: str | Path, cuda_mem: str | None = None):
        self.path = Path(path)
        # the sidecar first: a foreign engine (or no TensorRT here) gets the rebuild instruction
        self.meta = read_sidecar(self.path)
        check_compatible(self.meta, engine=self.path)
        try:
            import tensorrt as trt  # type: ignore[import-not-found]
        except ImportError:
            raise MissingDependencyError(
                f"{self.path}: running a TensorRT engine needs the tensorrt package (`pip install rdd-edge[trt]`, "
                "or JetPack's python3-libnvinfer); or run the .onnx file instead"
            ) from None
        from deploy.cuda_mem import get_cuda_mem

        self._trt = trt
        self.mem = get_cuda_mem(cuda_mem)
        self.provider = f"TensorRT {trt.__version__} ({self.mem.name})"
        self._logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self._logger)
        self.engine = runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise DeployError(f"{self.path}: TensorRT could not deserialize the engine; rebuild it here with `rdd-edge export --trt ...`")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_in = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        inputs = [n for n in names if is_in[n]]
        if len(inputs) != 1:
            raise DeployError(f"{self.path}: expected one image input, the engine has {inputs}")
        self.input_name = inputs[0]
        self.output_names = [n for n in names if not is_in[n]]
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self.declared = {n: tuple(self.engine.get_tensor_shape(n)) for n in names}
        self.input_shape: list[Any] = [d if d >= 0 else None for d in self.declared[self.input_name]]
        self.input_dtype = self.dtypes[self.input_name].name
        self.output_shapes = {n: [d if d >= 0 else None for d in self.declared[n]] for n in self.output_names}
        try:
            self.profile = tuple(tuple(s) for s in self.engine.get_tensor_profile_shape(self.input_name, 0))
        except Exception:  # noqa: BLE001 - static engines have no profile
            self.profile = None
        self.stream = self.mem.stream()
        self._bufs: dict[str, tuple[int, int]] = {}  # name -> (ptr, nbytes)

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self._bufs.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                self.mem.free(ptr)
            ptr = self.mem.alloc(nbytes)
            self._bufs[name] = (ptr, nbytes)
        return ptr

    def run(self, batch: np.ndarray, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        x = np.ascontiguousarray(batch, dtype=self.dtypes[self.input_name])
        shape = bind_shape(self.input_name, self.declared[self.input_name], x.shape, self.profile)  # type: ignore[arg-type]
        self.context.set_input_shape(self.input_name, shape)
        ptr = self._buffer(self.input_name, x.nbytes)
        self.context.set_tensor_address(self.input_name, ptr)
        self.mem.htod(ptr, x, self.stream)
        hosts = {}
        for n in self.output_names:
            out_shape = tuple(self.context.get_tensor_shape(n))
            host = np.empty(out_shape, dtype=self.dtypes[n])
            self.context.set_tensor_address(n, self._buffer(n, host.nbytes))
            hosts[n] = host
        if not self.context.execute_async_v3(self.stream):
            raise DeployError(f"{self.path}: TensorRT execution failed on a batch of shape {list(x.shape)}")
        for n, host in hosts.items():
            self.mem.dtoh(host, self._bufs[n][0], self.stream)
        self.mem.synchronize(self.stream)
        want = list(outputs) if outputs else self.output_names
        return {n: hosts[n] for n in want}

    def __del__(self) -> None:
        for ptr, _ in getattr(self, "_bufs", {}).values():
            try:
                self.mem.free(ptr)
            except Exception:  # noqa: BLE001 - interpreter shutdown
                pass
