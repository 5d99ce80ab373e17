"""ONNX (FP16 graph or Q/DQ INT8) -> serialized TensorRT engine + JSON sidecar.

Written for the TensorRT 10 and 11 Python API: explicit-batch network from ``create_network(0)``
(strongly typed on 11), ``OnnxParser.parse_from_file``, a workspace limit, one optimization
profile, a reusable timing cache and ``build_serialized_network``. Precision comes from the file:
no implicit INT8 calibrator, and the FP16 builder flag only where TensorRT 10 still has it.
Imported only when an engine is asked for.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rdd_edge.errors import ExportError, MissingDependencyError


def _trt() -> Any:
    try:
        import tensorrt as trt  # type: ignore[import-not-found]
    except ImportError:
        raise MissingDependencyError(
            "TensorRT engines need the tensorrt package (and an NVIDIA GPU): pip install rdd-edge[trt]; "
            "the ONNX artifacts were still written"
        ) from None
    return trt


def available() -> bool:
    """True when the tensorrt package can be imported here."""
    import importlib.util

    return importlib.util.find_spec("tensorrt") is not None


def require_tensorrt(what: str = "TensorRT engines") -> None:
    """Fail before any work when engines are asked for on a machine without TensorRT."""
    if not available():
        raise MissingDependencyError(
            f"{what}: TensorRT is not installed here: pip install rdd-edge[trt] (on Jetson it comes with JetPack); "
            "or export without --trt and build the engines on the device with `rdd-edge engine`")


def build_engine(onnx_path: str | Path, engine_path: str | Path, workspace_gb: float = 2.0,
                 timing_cache: str | Path | None = None, dynamic: dict | None = None,
                 dla_core: int | None = None, fp16_flag: bool = False) -> Path:
    """Build ``engine_path`` from ``onnx_path``; write the engine atomically and its sidecar.

    ``dynamic``: profile shapes ``{"min", "opt", "max"}`` (see ``engine_plan.profile_shapes``);
    None means batch 1 at the file's H and W. ``timing_cache`` is read if present and saved back.
    """
    from deploy.engine_meta import runtime_identity, write_sidecar

    from rdd_edge.runs import atomic_write_bytes

    from export.engine_plan import check_build_args, profile_shapes, sidecar_meta
    from export.onnx_io import graph_io, load_export_onnx, sha256_file

    check_build_args(workspace_gb, dla_core)
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    model = load_export_onnx(onnx_path, "ONNX model (engine source)")
    io = graph_io(model)
    profile = dynamic or profile_shapes(io["inputs"][0]["shape"], max_batch=1)
    trt = _trt()

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"{onnx_path}: TensorRT's ONNX parser failed: {errs[:600]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    use_fp16 = fp16_flag and hasattr(trt.BuilderFlag, "FP16")  # gone in TensorRT 11 (strong typing)
    if use_fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla_core)
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    opt = builder.create_optimization_profile()
    opt.set_shape("images", profile["min"], profile["opt"], profile["max"])
    config.add_optimization_profile(opt)
    cache_file = Path(timing_cache) if timing_cache else None
    cache = config.create_timing_cache(cache_file.read_bytes() if cache_file and cache_file.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=True)

    blob = builder.build_serialized_network(network, config)
    if blob is None:
        raise ExportError(f"{onnx_path}: TensorRT could not build an engine (see the TensorRT log above); "
                          "try a larger --workspace or the FP16 file")
    atomic_write_bytes(engine_path, bytes(blob))
    if cache_file:
        atomic_write_bytes(cache_file, bytes(config.get_timing_cache().serialize()))
    key = "engine-int8" if ".int8." in engine_path.name else "engine-fp16"
    meta = sidecar_meta(key, sha256_file(onnx_path), runtime_identity(), io, profile, workspace_gb, dla_core, use_fp16)
    write_sidecar(engine_path, meta)
    os.chmod(engine_path, 0o644)
    return engine_path
