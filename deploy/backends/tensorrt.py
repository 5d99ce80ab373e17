"""TensorRT backend (10.x and 11.x Python API): deserialize an engine, bind tensors by name, run.

The engine's sidecar (``<engine>.json``) is checked against this machine first, so a foreign
engine fails with a rebuild instruction instead of "Version tag does not match"; TensorRT older
than 10.0 is refused in one line. A DLA engine gets ``Runtime.DLA_core`` from the sidecar before
it is deserialized. Buffers come from :mod:`deploy.cuda_mem` (on a Jetson the board's libcudart,
elsewhere cuda-python first; pycuda as an alternative): one stream per runner, device buffers and page-locked host buffers allocated once
at the profile's maximum shape, copies through the page-locked buffers, everything released by
:meth:`TrtBackend.close` (also a context manager, and a finalizer at garbage collection / exit).
Every CUDA or TensorRT failure becomes one DeployError line. ``tensorrt`` is imported inside.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rdd_edge.errors import DeployError, MissingDependencyError, RddError
from rdd_edge.extras import install_hint

from rdd_edge.deploy.cuda_mem import get_cuda_mem
from rdd_edge.deploy.engine_meta import check_compatible, check_trt_version, read_sidecar, tensorrt_module, trt_logger


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


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]


class _TrtState:
    """TensorRT objects and CUDA buffers of one runner, released in a safe order (context, engine,
    runtime, then the CUDA buffers/stream/context)."""

    def __init__(self, mem: Any) -> None:
        self.mem = mem
        self.trt_objects: list[Any] = []  # runtime, engine, context (appended in that order)
        self.stream: int | None = None

    def release(self) -> None:
        while self.trt_objects:
            self.trt_objects.pop()  # context first: TensorRT frees it before the engine
        if self.mem is not None:
            mem, self.mem = self.mem, None
            if self.stream is not None:
                try:
                    mem.destroy_stream(self.stream)
                finally:
                    self.stream = None
                    mem.close()
            else:
                mem.close()


class TrtBackend:
    """One engine + execution context + stream, with buffers sized to the profile's maximum.

    ``max_batch``: the largest batch the engine accepts (profile max, or its static batch), so
    :class:`deploy.Segmenter` can split larger batches. ``cuda_mem``: ``"libcudart"``, ``"cuda-python"`` or
    ``"pycuda"`` (None: :func:`deploy.cuda_mem.binding_order`).
    """

    def __init__(self, path: str | Path, cuda_mem: str | None = None, device: int = 0):
        self.path = Path(path)
        # the sidecar first: a foreign engine (or no TensorRT here) gets the rebuild instruction
        self.meta = read_sidecar(self.path)
        check_compatible(self.meta, engine=self.path, device=device)  # the GPU this runner will use
        if tensorrt_module() is None:
            raise MissingDependencyError(
                f"{self.path}: running a TensorRT engine needs the tensorrt package (desktop: {install_hint('trt')}; "
                "Jetson: JetPack's python3-libnvinfer); or run the .onnx file instead"
            )
        import tensorrt as trt  # lazy: optional dependency (tensorrt)

        check_trt_version(trt.__version__, DeployError, f"{self.path}: ")
        self._trt = trt
        mem = get_cuda_mem(cuda_mem, device)
        self._state = _TrtState(mem)
        self._finalizer = weakref.finalize(self, self._state.release)
        self.mem = mem
        self.provider = f"TensorRT {trt.__version__} ({mem.name})"
        try:
            self._open(trt)
        except BaseException:
            try:
                self._finalizer()  # release what was made before the failure
            except Exception:  # noqa: BLE001 - the load error is the one to report
                pass
            raise

    def _open(self, trt: Any) -> None:
        st = self._state
        try:
            self._logger = trt_logger(trt)
            runtime = trt.Runtime(self._logger)
            st.trt_objects.append(runtime)
            dla = self.meta.get("dla_core")
            if dla is not None:
                n = int(runtime.num_DLA_cores)
                if not 0 <= int(dla) < n:
                    raise DeployError(f"{self.path}: engine built for DLA core {dla}; this device has {n} DLA cores; "
                                      "rebuild it without --dla-core or on this device")
                runtime.DLA_core = int(dla)  # before deserializing: the engine's DLA layers bind to this core
            engine = runtime.deserialize_cuda_engine(self.path.read_bytes())
            if engine is None:
                raise DeployError(f"{self.path}: TensorRT could not deserialize the engine; rebuild it here with `rdd-edge export --trt ...`")
            st.trt_objects.append(engine)
            context = engine.create_execution_context()
            if context is None:
                raise DeployError(f"{self.path}: TensorRT could not create an execution context (out of GPU memory?)")
            st.trt_objects.append(context)
            self.engine, self.context = engine, context
            names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
            is_in = {n: engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
            inputs = [n for n in names if is_in[n]]
            if len(inputs) != 1:
                raise DeployError(f"{self.path}: expected one image input, the engine has {inputs}")
            self.input_name = inputs[0]
            self.output_names = [n for n in names if not is_in[n]]
            self.dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
            self.declared = {n: tuple(int(d) for d in engine.get_tensor_shape(n)) for n in names}
            decl = self.declared[self.input_name]
            self.input_shape: list[Any] = [d if d >= 0 else None for d in decl]
            self.input_dtype = self.dtypes[self.input_name].name
            self.output_shapes = {n: [d if d >= 0 else None for d in self.declared[n]] for n in self.output_names}
            self.profile: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None = None
            if any(d < 0 for d in decl):
                mn, op, mx = (tuple(int(v) for v in s) for s in engine.get_tensor_profile_shape(self.input_name, 0))
                self.profile = (mn, op, mx)
            biggest = self.profile[2] if self.profile else decl
            self.max_batch: int | None = int(biggest[0])
            # the smallest batch it takes: a DLA engine's profile is one static batch (min = max)
            self.min_batch: int = int(self.profile[0][0]) if self.profile else int(decl[0])
            # one stream, and device + page-locked host buffers sized for the largest shape the profile allows
            st.stream = self.stream = self.mem.stream()
            self._set_shape(biggest)
            self._dev: dict[str, int] = {}
            self._host: dict[str, np.ndarray] = {}
            for n in [self.input_name, *self.output_names]:
                shape = biggest if n == self.input_name else tuple(int(d) for d in context.get_tensor_shape(n))
                if any(d < 0 for d in shape):
                    raise DeployError(f"{self.path}: output {n!r} has a data-dependent shape {list(shape)}; not supported")
                count = int(np.prod(shape, dtype=np.int64))
                self._host[n] = self.mem.pinned_empty(count, self.dtypes[n])
                self._dev[n] = self.mem.alloc(self._host[n].nbytes)
                if not context.set_tensor_address(n, self._dev[n]):
                    raise DeployError(f"{self.path}: TensorRT refused the device address of tensor {n!r}")
        except RddError:
            raise
        except Exception as exc:  # noqa: BLE001 - TensorRT raises RuntimeError/TypeError from C++: one line
            raise DeployError(f"{self.path}: TensorRT {self._trt.__version__} failed to load the engine "
                              f"({type(exc).__name__}: {_one_line(exc)})") from None

    def _set_shape(self, shape: Sequence[int]) -> None:
        if not self.context.set_input_shape(self.input_name, tuple(int(d) for d in shape)):
            lo_hi = f" (profile min {list(self.profile[0])}, max {list(self.profile[2])})" if self.profile else ""
            raise DeployError(f"{self.path}: TensorRT rejected input shape {list(shape)} for {self.input_name!r}{lo_hi}")

    def run(self, batch: np.ndarray, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Feed one NCHW batch (within the engine's profile); return the requested outputs by name."""
        if not self._finalizer.alive:
            raise DeployError(f"{self.path}: the TensorRT runner is closed")
        want = list(outputs) if outputs else self.output_names
        missing = [n for n in want if n not in self.output_names]
        if missing:
            raise DeployError(f"{self.path}: no output {missing}; the engine has {self.output_names}")
        x = np.ascontiguousarray(batch, dtype=self.dtypes[self.input_name])
        shape = bind_shape(self.input_name, self.declared[self.input_name], x.shape, self.profile)
        try:
            self._set_shape(shape)
            host_in = self._host[self.input_name][: x.size].reshape(x.shape)
            np.copyto(host_in, x)  # into page-locked memory: the async copy stays asynchronous
            self.mem.htod(self._dev[self.input_name], host_in, self.stream)
            views = {}
            for n in self.output_names:
                out_shape = tuple(int(d) for d in self.context.get_tensor_shape(n))
                if any(d < 0 for d in out_shape):
                    raise DeployError(f"{self.path}: output {n!r} shape {list(out_shape)} unresolved after setting the input shape")
                views[n] = self._host[n][: int(np.prod(out_shape, dtype=np.int64))].reshape(out_shape)
            timing = self.gpu_times is not None and self._events is not None
            if timing:
                self.mem.record(self._events[0], self.stream)  # type: ignore[index]
            if not self.context.execute_async_v3(self.stream):
                raise DeployError(f"{self.path}: TensorRT execution failed on a batch of shape {list(x.shape)}")
            if timing:
                self.mem.record(self._events[1], self.stream)  # type: ignore[index]
            for n in want:
                self.mem.dtoh(views[n], self._dev[n], self.stream)
            self.mem.synchronize(self.stream)
            if timing:
                self.gpu_times.append(self.mem.elapsed_ms(*self._events))  # type: ignore[union-attr, misc]
        except RddError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise DeployError(f"{self.path}: TensorRT inference failed on a batch of shape {list(x.shape)} "
                              f"({type(exc).__name__}: {_one_line(exc)})") from None
        return {n: views[n].copy() for n in want}  # copies: the page-locked buffers are reused by the next call

    # -- GPU compute time: CUDA events recorded on the runner's stream just before and after execute_async_v3,
    # as trtexec times its "GPU Compute Time" (the copies and the numpy work are outside the two records)
    gpu_times: list[float] | None = None  # a list: every run() appends its execute's GPU milliseconds
    _events: tuple[int, int] | None = None

    def start_gpu_timing(self) -> str:
        """From now on, time each execute with CUDA events into :attr:`gpu_times` (emptied); returns ''
        or, when this CUDA binding cannot time, why ("unknown" is then reported, never a failure)."""
        why = self.mem.events_unavailable() if hasattr(self.mem, "events_unavailable") else f"{self.mem.name}: no CUDA events"
        if why:
            return why
        if self._events is None:
            try:
                self._events = (self.mem.event(), self.mem.event())
            except RddError as exc:
                return str(exc)
        self.gpu_times = []
        return ""

    def stop_gpu_timing(self) -> list[float]:
        """Stop timing; the GPU milliseconds of each execute since :meth:`start_gpu_timing`."""
        times, self.gpu_times = self.gpu_times or [], None
        return times

    def profile_layers(self, batch: np.ndarray, runs: int = 20) -> list[dict[str, Any]]:
        """Per-layer GPU time from TensorRT's IProfiler over ``runs`` runs of ``batch`` (after one uncounted run),
        with each layer's precision from the engine inspector (:func:`deploy.engine_meta.layer_precision`).

        ``[{"layer", "precision", "mean_ms", "calls"}]`` in the engine's layer order; ``mean_ms`` = reported time
        / ``runs``. With a profiler attached (``IExecutionContext.profiler``; ``enqueue_emits_profile`` stays
        True), each enqueue reports its layers' times itself and runs synchronously (tensorrt.pyi), so these
        runs are slower than the timed ones. The profiler stays attached: call this last, before :meth:`close`."""
        from rdd_edge.deploy.engine_meta import layer_precision

        trt, times = self._trt, dict[str, list[float]]()

        class _LayerTimes(trt.IProfiler):  # type: ignore[misc, name-defined]
            def __init__(self) -> None:
                trt.IProfiler.__init__(self)  # the base explicitly, as tensorrt.IProfiler's docstring asks

            def report_layer_time(self, layer_name: str, ms: float) -> None:
                times.setdefault(str(layer_name), []).append(float(ms))

        self._profiler = _LayerTimes()  # kept alive as long as the context that calls it
        try:
            self.context.profiler = self._profiler
        except Exception as exc:  # noqa: BLE001 - TensorRT raises from C++: one line
            raise DeployError(f"{self.path}: TensorRT refused the layer profiler ({_one_line(exc)})") from None
        self.run(batch)
        times.clear()  # the first profiled run pays for setting the profiler up
        for _ in range(max(1, int(runs))):
            self.run(batch)
        precisions: dict[str, str] = {}
        order: list[str] = []
        try:
            inspector = self.engine.create_engine_inspector()
            if inspector is not None:
                inspector.execution_context = self.context
                import json

                info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
                for layer in info.get("Layers", []) if isinstance(info, dict) else []:
                    if isinstance(layer, dict) and layer.get("Name"):
                        order.append(str(layer["Name"]))
                        precisions[str(layer["Name"])] = layer_precision(layer)
        except Exception:  # noqa: BLE001 - no inspector, or a report not understood: precisions "unknown"
            pass
        names = [n for n in order if n in times] + [n for n in times if n not in precisions]
        n = max(1, int(runs))
        return [{"layer": name, "precision": precisions.get(name, "unknown"), "mean_ms": sum(times[name]) / n,
                 "calls": len(times[name])} for name in names]

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def close(self) -> None:
        """Release the execution context, engine, stream and every CUDA buffer (idempotent)."""
        if self._finalizer.alive:
            for attr in ("context", "engine"):
                self.__dict__.pop(attr, None)
            self._finalizer()

    def __enter__(self) -> "TrtBackend":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
