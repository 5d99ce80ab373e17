"""Pure helpers for TensorRT engine builds, testable without TensorRT.

Which ONNX file feeds which engine, the optimization-profile shapes, argument checks and the
sidecar contents live here, so :mod:`export.tensorrt` holds only the calls into TensorRT.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from rdd_edge.errors import ConfigError, ExportError

from export.formats import BY_KEY

# engine -> the ONNX artifact it is built from (precision comes from the file: FP16 graph or Q/DQ)
ENGINE_SOURCE = {"engine-fp16": "fp16", "engine-int8": "int8"}

Shape = tuple[int, int, int, int]


def engine_source(engine_key: str, out_dir: str | Path) -> Path:
    """The ONNX file an engine is built from; ExportError if it has not been exported."""
    if engine_key not in ENGINE_SOURCE:
        raise ConfigError(f"unknown engine '{engine_key}': valid {', '.join(ENGINE_SOURCE)}")
    src = Path(out_dir) / BY_KEY[ENGINE_SOURCE[engine_key]].file
    if not src.is_file():
        flag = "--fp16" if ENGINE_SOURCE[engine_key] == "fp16" else "--int8"
        raise ExportError(f"{src}: needed to build {BY_KEY[engine_key].file}; export it first ({flag})")
    return src


def profile_shapes(input_shape: Sequence[Any], max_batch: int = 1, opt_batch: int | None = None,
                   dynamic_hw: tuple[tuple[int, int], tuple[int, int], tuple[int, int]] | None = None) -> dict[str, Shape]:
    """min/opt/max shapes of ``images`` for one optimization profile.

    ``input_shape`` is the ONNX input (N may be symbolic). Static H and W give min=opt=max
    spatially; ``dynamic_hw`` = ((minH, minW), (optH, optW), (maxH, maxW)) for graphs exported with
    --dynamic (keep the max small on Jetson). Batch runs 1..max_batch.
    """
    if max_batch < 1:
        raise ConfigError(f"max batch must be >= 1, got {max_batch}")
    opt_b = opt_batch or max_batch
    if not 1 <= opt_b <= max_batch:
        raise ConfigError(f"opt batch {opt_b} must lie in 1..{max_batch}")
    _, c, h, w = list(input_shape)
    if isinstance(input_shape[0], int) and input_shape[0] > 0:
        lo_b = hi_b = opt_b = int(input_shape[0])
    else:
        lo_b, hi_b = 1, max_batch
    if dynamic_hw is None:
        if not isinstance(h, int) or not isinstance(w, int) or h <= 0 or w <= 0:
            raise ConfigError(f"input has dynamic H/W {input_shape}: give the profile's min/opt/max sizes")
        hw = ((h, w),) * 3
    else:
        hw = tuple(tuple(int(v) for v in s) for s in dynamic_hw)
        if any(s[0] % 8 or s[1] % 8 for s in hw) or not (hw[0][0] <= hw[1][0] <= hw[2][0] and hw[0][1] <= hw[1][1] <= hw[2][1]):
            raise ConfigError(f"profile sizes {hw}: need multiples of 8 with min <= opt <= max")
    return {"min": (lo_b, int(c), *hw[0]), "opt": (opt_b, int(c), *hw[1]), "max": (hi_b, int(c), *hw[2])}


def check_build_args(workspace_gb: float, dla_core: int | None) -> None:
    if not workspace_gb > 0:
        raise ConfigError(f"workspace {workspace_gb} GB: must be positive (1-2 GB on Jetson, 4+ on desktop GPUs)")
    if dla_core is not None and dla_core not in (0, 1):
        raise ConfigError(f"--dla-core {dla_core}: Jetson AGX/NX have DLA cores 0 and 1")


def sidecar_meta(engine_key: str, onnx_sha256: str, identity: dict[str, Any], io: dict[str, Any],
                 profile: dict[str, Shape], workspace_gb: float, dla_core: int | None, fp16_flag: bool) -> dict[str, Any]:
    """What ``deploy.engine_meta.write_sidecar`` stores beside an engine."""
    return {
        **identity,  # tensorrt, gpu, compute_capability
        "precision": BY_KEY[engine_key].precision,
        "source_onnx": BY_KEY[ENGINE_SOURCE[engine_key]].file,
        "source_sha256": onnx_sha256,
        "inputs": io.get("inputs", []),
        "outputs": io.get("outputs", []),
        "input_shape": list(profile["opt"]),
        "profile": {k: list(v) for k, v in profile.items()},
        "workspace_gb": workspace_gb,
        "dla_core": dla_core,
        "fp16_flag": fp16_flag,
    }
