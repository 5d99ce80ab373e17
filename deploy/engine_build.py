"""ONNX (FP16 graph or Q/DQ INT8) -> serialized TensorRT engine + JSON sidecar.

Written for the TensorRT 10.x and 11.x Python API. The network is *strongly typed* on every
version (10.x: ``1 << STRONGLY_TYPED``; 11.x: always, no flag), so precision comes from the file
alone -- FP16 types in ``model.fp16.onnx``, Q/DQ nodes (and FP16 float math) in
``model.int8.onnx`` -- and no INT8 calibrator is ever set (11.x removed it). The one exception is
DLA on TensorRT 10.0-10.7, built the way NVIDIA documents it for 10.x: weakly typed with the
file's precision flag (:func:`deploy.engine_plan.dla_recipe`). One optimization profile (batch 1..max_batch, opt 1 by default; min/opt/max H x W
for --dynamic graphs), a workspace limit, a timing cache named after the GPU and TensorRT release
(a cache from elsewhere is refused, not trusted), DLA when asked, and a per-layer precision report
from the engine inspector stored in the sidecar. TensorRT older than 10.0 is refused.
Torch-free and deploy's own (an engine is built on the device that runs it: ``rdd-edge engine``,
``python -m rdd_edge.deploy.trt_acceptance``); export's engine builder calls it through
:mod:`export.tensorrt`. ``tensorrt`` is imported only when an engine is built.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from rdd_edge.deploy.engine_meta import (dla_placement_after_build, layer_precisions, runtime_identity, tensorrt_module,
                                         trt_logger, write_sidecar)
from rdd_edge.deploy.engine_plan import (check_build_args, check_dla_core, dla_recipe, engine_precision, network_flags,
                                         profile_shapes, sidecar_meta, timing_cache_name)
from rdd_edge.deploy.info import read_manifest
from rdd_edge.deploy.onnx_graph import graph_io, load_export_onnx
from rdd_edge.deploy.trtexec import commands as trtexec_commands
from rdd_edge.errors import ConfigError, DeployError, ExportError, MissingDependencyError, RddError
from rdd_edge.extras import install_hint
from rdd_edge.runs import atomic_write_bytes, sha256_file

log = logging.getLogger(__name__)

INSTALL_HINT = ("TensorRT engines need the tensorrt package (and an NVIDIA GPU): " + install_hint("trt") +
                "; Jetson: JetPack's python3-libnvinfer plus the `jetson` extra (a bundle's install.sh does both)")


def _trt() -> Any:
    """The real tensorrt module or MissingDependencyError (a stub-only install counts as missing)."""
    trt = tensorrt_module()
    if trt is None:
        raise MissingDependencyError(f"{INSTALL_HINT}; the ONNX artifacts were still written")
    return trt


def available() -> bool:
    """True when a real tensorrt package can be imported here (a stubs-only install does not count)."""
    return tensorrt_module() is not None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def build_engine(onnx_path: str | Path, engine_path: str | Path, *, max_batch: int = 8, opt_batch: int = 1,
                 dynamic_hw: tuple[tuple[int, int], tuple[int, int], tuple[int, int]] | None = None,
                 workspace_gb: float = 2.0, timing_cache_dir: Path | None = None, dla_core: int | None = None,
                 allow_gpu_fallback: bool = False, device: int = 0) -> dict[str, Any]:
    """Build ``engine_path`` from ``onnx_path``; write the engine and ``<engine>.json`` atomically.

    Returns the sidecar dict: ``precision``, ``precision_layers`` (layers per precision from the
    engine inspector, read with an execution context at the profile's opt shape), ``profile``
    (min/opt/max), ``max_batch``, ``tensorrt``, ``gpu``, ``compute_capability`` (of GPU ``device``),
    ``timing_cache`` ({file, loaded, refused, saved}), ``dla_core``, ``dla_layers`` ...

    ``timing_cache_dir``: folder of the timing cache ``timing-<gpu>-sm<cc>-trt<release>.cache``; read
    when present and compatible, else started empty (with a warning), saved back after the build.
    ``dla_core``: build for that DLA core with GPU fallback, the way this TensorRT release documents
    (:func:`deploy.engine_plan.dla_recipe`): one static shape (batch ``opt_batch``); the network's
    layers DLA can take are counted before the build (``config.can_run_on_DLA``: an estimate, before
    fusion; none is an error unless ``allow_gpu_fallback``) and the placement is read from the engine
    inspector after it (``dla_layers`` in the sidecar).
    """
    check_build_args(workspace_gb, dla_core, max_batch, opt_batch)
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    precision = engine_precision(onnx_path.name, engine_path.name, _manifest_beside(onnx_path))
    model = load_export_onnx(onnx_path, "ONNX model (engine source)")
    io = graph_io(model)
    if len(io["inputs"]) != 1:
        raise ExportError(f"{onnx_path}: expected one image input, the graph has {[i['name'] for i in io['inputs']]}")
    input_name = io["inputs"][0]["name"]
    try:
        profile = profile_shapes(io["inputs"][0]["shape"], max_batch, opt_batch, dynamic_hw, static=dla_core is not None)
    except ConfigError as exc:
        raise ConfigError(f"{onnx_path}: {exc}") from None
    _trt()  # MissingDependencyError with the install line when TensorRT is absent
    import tensorrt as trt  # lazy: optional dependency (tensorrt)

    placement: dict[str, Any] | None = None
    recipe: dict[str, Any] = {"strongly_typed": True, "flags": []}
    try:
        flags = network_flags(trt.__version__, trt)  # refuses TensorRT < 10
        if dla_core is not None:
            recipe = dla_recipe(trt.__version__, precision, warn=log.warning)
            if not recipe["strongly_typed"]:
                flags = 0  # TensorRT 10.x DLA: a weakly typed network and the precision flags below
        identity = runtime_identity(device)
        logger = trt_logger(trt)
        builder = _builder(trt, logger, onnx_path)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_path)):
            errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ExportError(f"{onnx_path}: TensorRT's ONNX parser failed: {errs[:600]}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # the inspector then reports per-layer types
        builder_flags: list[str] = []
        if dla_core is not None:
            check_dla_core(dla_core, builder.num_DLA_cores, f"{onnx_path}: ")
            config.default_device_type = trt.DeviceType.DLA
            config.DLA_core = int(dla_core)
            for name in (*recipe["flags"], "GPU_FALLBACK"):  # GPU_FALLBACK: layers DLA cannot run stay on the GPU
                config.set_flag(getattr(trt.BuilderFlag, name))
                builder_flags.append(name)
            placement = dla_placement(config, network)
            _judge_placement(placement, dla_core, onnx_path, allow_gpu_fallback)
        opt = builder.create_optimization_profile()
        opt.set_shape(input_name, trt.Dims(list(profile["min"])), trt.Dims(list(profile["opt"])),
                      trt.Dims(list(profile["max"])))
        if config.add_optimization_profile(opt) < 0:
            raise ExportError(f"{onnx_path}: TensorRT rejected the optimization profile {profile}")
        cache_info = _attach_timing_cache(trt, config, timing_cache_dir, identity)

        blob = builder.build_serialized_network(network, config)
        if blob is None:
            raise ExportError(f"{onnx_path}: TensorRT could not build an engine (see the TensorRT log above); "
                              "try a larger --workspace or the FP16 file")
        data = bytes(memoryview(blob))
        atomic_write_bytes(engine_path, data)
        os.chmod(engine_path, 0o644)
        if cache_info["file"]:
            atomic_write_bytes(Path(cache_info["path"]), bytes(memoryview(config.get_timing_cache().serialize())))
            cache_info["saved"] = True
        layers, after = _precision_report(trt, logger, data, dla_core, input_name, profile["opt"])
    except RddError:
        raise
    except Exception as exc:  # noqa: BLE001 - TensorRT raises RuntimeError/TypeError from C++: one line
        raise ExportError(f"{onnx_path}: TensorRT {getattr(trt, '__version__', '?')} failed while building "
                          f"{engine_path.name} ({type(exc).__name__}: {_one_line(exc)})") from None
    cache_info.pop("path", None)
    meta = sidecar_meta(None, sha256_file(onnx_path), identity, io, profile, workspace_gb, dla_core,
                        source_onnx=onnx_path.name, precision_layers=layers, timing_cache=cache_info,
                        builder_flags=builder_flags, network_flags=flags, dla_layers=after if dla_core is not None else None,
                        dla_estimate=placement, precision=precision, strongly_typed=bool(recipe["strongly_typed"]))
    meta.update(trtexec_commands(meta, engine_path.name))  # the same build as a trtexec line (deploy.trtexec)
    log.info("%s: the same build with trtexec: %s", engine_path.name, meta["trtexec"])
    write_sidecar(engine_path, meta)
    return {"format": "rdd-edge-engine", "engine": str(engine_path), **meta}


def _manifest_beside(onnx_path: Path) -> dict[str, Any] | None:
    """The export manifest beside the ONNX file (which key lists it decides its row), None when there
    is none or it is unreadable (the file's exact name decides then)."""
    try:
        return read_manifest(onnx_path)[0]
    except DeployError:
        return None


def _builder(trt: Any, logger: Any, onnx_path: Path) -> Any:
    """``trt.Builder(logger)``; its pybind factory raises TypeError ("returned nullptr") when no
    usable GPU or driver is there: one line instead."""
    try:
        builder = trt.Builder(logger)
    except TypeError as exc:
        raise ExportError(f"{onnx_path}: TensorRT {trt.__version__} could not create a builder: no usable NVIDIA GPU "
                          f"or driver here (nvidia-smi / tegrastats should list one) ({_one_line(exc)})") from None
    if builder is None:
        raise ExportError(f"{onnx_path}: TensorRT could not create a builder (no usable NVIDIA GPU / driver?)")
    return builder


def dla_placement(config: Any, network: Any, keep: int = 8) -> dict[str, Any]:
    """An estimate, before the build, of where the network's layers will run on a DLA build with GPU
    fallback: ``{"dla": n, "gpu": m, "gpu_layers": [first names], "estimate": True}`` from
    ``IBuilderConfig.can_run_on_DLA`` per network layer (before fusion; asked with the DLA core and
    default device already set on ``config``). The engine inspector says after the build."""
    dla, gpu, names = 0, 0, list[str]()
    for i in range(int(network.num_layers)):
        layer = network.get_layer(i)
        if config.can_run_on_DLA(layer):
            dla += 1
        else:
            gpu += 1
            if len(names) < keep:
                names.append(str(getattr(layer, "name", "") or f"layer {i}"))
    return {"dla": dla, "gpu": gpu, "gpu_layers": names, "estimate": True}


def _judge_placement(placement: dict[str, Any], dla_core: int, onnx_path: Path, allow_gpu_fallback: bool) -> None:
    """No layer on DLA is an error (the "DLA engine" would silently be a GPU engine), or a loud
    warning with ``allow_gpu_fallback``; a partial fallback is a warning naming the count."""
    dla, gpu = placement["dla"], placement["gpu"]
    if dla == 0:
        msg = (f"{onnx_path}: no layer can run on DLA core {dla_core} (all {gpu} would run on the GPU; first: "
               f"{', '.join(placement['gpu_layers'][:3]) or '-'})")
        if not allow_gpu_fallback:
            raise ExportError(msg + "; build without --dla-core, or add --allow-gpu-fallback to keep this GPU engine")
        log.warning("%s; building anyway (--allow-gpu-fallback): this engine runs on the GPU", msg)
    elif gpu:
        log.warning("%s: %d of %d layers run on DLA core %d, %d fall back to the GPU (first: %s)", onnx_path.name, dla,
                    dla + gpu, dla_core, gpu, ", ".join(placement["gpu_layers"][:3]))


def _attach_timing_cache(trt: Any, config: Any, cache_dir: Path | None, identity: dict[str, Any]) -> dict[str, Any]:
    """Load ``<cache_dir>/timing-...cache`` with ``ignore_mismatch=False``; start empty when it is
    absent, unreadable or from another device/TensorRT (and say so)."""
    info: dict[str, Any] = {"file": None, "loaded": False, "refused": False, "saved": False}
    if cache_dir is None:
        return info
    path = Path(cache_dir) / timing_cache_name(identity.get("gpu"), identity.get("compute_capability"), trt.__version__)
    info.update(file=path.name, path=str(path))
    blob = b""
    if path.is_file():
        try:
            blob = path.read_bytes()
        except OSError as exc:
            log.warning("timing cache %s unreadable (%s): starting with an empty cache", path, exc.strerror)
    cache = config.create_timing_cache(blob) if blob else None
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        info["loaded"] = True
        return info
    if blob:
        info["refused"] = True
        log.warning("timing cache %s does not match this GPU / TensorRT %s: starting with an empty cache "
                    "(it will be overwritten)", path, trt.__version__)
    empty = config.create_timing_cache(b"")
    if empty is None or not config.set_timing_cache(empty, ignore_mismatch=False):
        raise ExportError(f"{path}: TensorRT could not attach an empty timing cache")
    return info


def _precision_report(trt: Any, logger: Any, data: bytes, dla_core: int | None, input_name: str,
                      opt_shape: Any) -> tuple[dict[str, int] | None, dict[str, Any] | None]:
    """Deserialize the built engine and count its layers by precision (engine inspector, JSON); on a
    DLA build also where they run (:func:`deploy.engine_meta.dla_placement_after_build`).

    The inspector reads an execution context whose input shape is set to the profile's opt shape:
    without one, TensorRT leaves the per-layer formats of a dynamic-shape engine out
    (``IEngineInspector::setExecutionContext``, NvInferRuntime.h), and every layer would count as
    unknown."""
    runtime = trt.Runtime(logger)
    if dla_core is not None:
        runtime.DLA_core = int(dla_core)
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise ExportError("TensorRT could not deserialize the engine it just built")
    inspector = engine.create_engine_inspector()
    if inspector is None:
        log.warning("TensorRT gave no engine inspector: the sidecar has no per-layer precision report")
        return None, None
    context = engine.create_execution_context()
    try:
        if context is not None and context.set_input_shape(input_name, tuple(int(d) for d in opt_shape)):
            inspector.execution_context = context
        else:
            log.warning("could not set the engine's opt shape on an execution context: the precision report may "
                        "list layer formats as unknown")
        report = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
        return layer_precisions(report), (dla_placement_after_build(report) if dla_core is not None else None)
    except RddError as exc:
        log.warning("engine inspector output not understood (%s): no per-layer precision report", exc)
        return None, None
    finally:
        del inspector, context  # before the engine: TensorRT frees a context before its engine
