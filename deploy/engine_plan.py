"""Pure helpers for TensorRT engine builds, testable without TensorRT.

Which ONNX file feeds which engine and what precision it has (both from the formats table,
``rdd_edge.formats``), the optimization-profile shapes, argument and version checks, the
network-creation flags by TensorRT version, the timing-cache file name and the sidecar contents
live here, so :mod:`deploy.engine_build` holds only the calls into TensorRT. Deploy's own: the
engine is built on the device (``rdd-edge engine``, the acceptance check) as well as by export.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Collection, Mapping, Sequence

from rdd_edge import formats as table
from rdd_edge.errors import ConfigError, ExportError

from rdd_edge.deploy.engine_meta import check_trt_version
from rdd_edge.deploy.engine_meta import compute_capability as _cc  # timing_cache_name has an argument of that name
from rdd_edge.deploy.engine_meta import dla_support, trt_release

DEFAULT_MAX_BATCH = 8

Shape = tuple[int, int, int, int]
HW = tuple[int, int]


def engine_rows() -> list[table.ExportFormat]:
    """The table's TensorRT engine rows (each names the ONNX row it is built from as ``source``)."""
    return [f for f in table.FORMATS if f.runtime == "tensorrt" and f.source in table.BY_KEY]


def engine_source(engine_key: str, out_dir: str | Path, listed: Collection[str] | None = None) -> Path:
    """The ONNX file an engine is built from; ExportError naming the flag that exports it when it is
    missing (or, given the manifest's ``listed`` keys, not listed)."""
    row = table.BY_KEY.get(engine_key)
    if row is None or row not in engine_rows():
        raise ConfigError(f"unknown engine '{engine_key}': valid {', '.join(f.key for f in engine_rows())}")
    src_row = table.BY_KEY[str(row.source)]
    src = Path(out_dir) / src_row.file
    if not src.is_file() or (listed is not None and src_row.key not in listed):
        raise ExportError(f"{src}: needed to build {row.file}; export it first ({src_row.flag or 'rdd-edge export'})")
    return src


def engine_precision(onnx_name: str | Path, engine_name: str | Path = "", manifest: Mapping[str, Any] | None = None) -> str:
    """``fp16`` / ``int8`` / ``fp32``: what a strongly typed engine built from ``onnx_name`` runs.

    The formats table decides, by the row of the source file (the key ``manifest`` lists it under,
    else its exact file name), else by the row of the engine's own file name; a file neither knows
    is plain FP32. A row TensorRT may not take (``trt_ep`` False, e.g. the uint8 CPU INT8 file) is
    a ConfigError: it is never built into an engine."""
    for name in (onnx_name, engine_name):
        row = table.format_of(name, manifest) if str(name) else None
        if row is None:
            continue
        if row.runtime != "tensorrt" and not row.trt_ep:
            usable = " or ".join(table.BY_KEY[str(f.source)].file for f in engine_rows())
            raise ConfigError(f"{Path(name).name}: {row.name} ({row.key}) is not for TensorRT; build from {usable}")
        return row.precision
    return "fp32"


def check_batches(max_batch: int, opt_batch: int) -> None:
    if not isinstance(max_batch, int) or max_batch < 1:
        raise ConfigError(f"--max-batch {max_batch}: must be an integer >= 1 (keep it small on Jetson, e.g. 4-8)")
    if not isinstance(opt_batch, int) or not 1 <= opt_batch <= max_batch:
        raise ConfigError(f"--opt-batch {opt_batch}: must lie in 1..--max-batch ({max_batch})")


def profile_shapes(input_shape: Sequence[Any], max_batch: int = DEFAULT_MAX_BATCH, opt_batch: int = 1,
                   dynamic_hw: tuple[HW, HW, HW] | None = None, static: bool = False) -> dict[str, Shape]:
    """min/opt/max shapes of the image input for one optimization profile.

    ``input_shape`` is the ONNX input (N may be symbolic). Batch runs min 1, opt ``opt_batch``,
    max ``max_batch``; a static batch in the graph wins (min = opt = max = that batch). Static
    H and W give min = opt = max spatially; ``dynamic_hw`` = ((minH, minW), (optH, optW),
    (maxH, maxW)) is required for graphs exported with --dynamic and refused for static ones.
    ``static``: one shape only, batch ``opt_batch`` (DLA accepts no dynamic dimension: NVIDIA's DLA
    restrictions require min = opt = max).
    """
    if static:
        max_batch = opt_batch
        if dynamic_hw is not None:
            raise ConfigError("--dla-core: DLA takes no dynamic dimension; export at a fixed size (no --dynamic)")
    check_batches(max_batch, opt_batch)
    if len(input_shape) != 4:
        raise ConfigError(f"input shape {list(input_shape)}: expected NCHW")
    n, c, h, w = list(input_shape)
    if isinstance(n, int) and n > 0:
        lo_b = opt_b = hi_b = int(n)
    elif static:
        lo_b = opt_b = hi_b = opt_batch
    else:
        lo_b, opt_b, hi_b = 1, opt_batch, max_batch
    static_hw = all(isinstance(v, int) and v > 0 for v in (h, w))
    if dynamic_hw is None:
        if not static_hw:
            raise ConfigError(f"input has dynamic H/W {list(input_shape)}: give the profile's min/opt/max sizes "
                              "(e.g. --dynamic-hw 256x320,384x480,512x640)")
        hw: tuple[HW, HW, HW] = ((int(h), int(w)),) * 3  # type: ignore[assignment]
    else:
        if static_hw:
            raise ConfigError(f"the graph has a static {h}x{w} input: profile sizes {dynamic_hw} apply only to graphs "
                              "exported with --dynamic")
        try:
            hw = tuple((int(s[0]), int(s[1])) for s in dynamic_hw)  # type: ignore[assignment]
        except (TypeError, ValueError, IndexError):
            raise ConfigError(f"profile sizes {dynamic_hw}: expected ((minH, minW), (optH, optW), (maxH, maxW))") from None
        if len(hw) != 3 or any(v <= 0 or v % 8 for s in hw for v in s) or not (
                hw[0][0] <= hw[1][0] <= hw[2][0] and hw[0][1] <= hw[1][1] <= hw[2][1]):
            raise ConfigError(f"profile sizes {hw}: need three positive multiples of 8 with min <= opt <= max")
    if not isinstance(c, int) or c <= 0:
        c = 3
    return {"min": (lo_b, int(c), *hw[0]), "opt": (opt_b, int(c), *hw[1]), "max": (hi_b, int(c), *hw[2])}


def check_build_args(workspace_gb: float, dla_core: int | None, max_batch: int = DEFAULT_MAX_BATCH, opt_batch: int = 1) -> None:
    if not isinstance(workspace_gb, (int, float)) or not workspace_gb > 0:
        raise ConfigError(f"workspace {workspace_gb} GB: must be positive (1-2 GB on Jetson, 4+ on desktop GPUs)")
    if dla_core is not None and (not isinstance(dla_core, int) or dla_core < 0):
        raise ConfigError(f"--dla-core {dla_core}: a DLA core index (0 or 1 on Jetson AGX Orin / Orin NX)")
    check_batches(max_batch, opt_batch)


def check_dla_core(dla_core: int | None, num_dla_cores: int, where: str = "") -> None:
    """``dla_core`` must name one of this device's DLA cores (desktop GPUs have none)."""
    if dla_core is None:
        return
    if not 0 <= dla_core < int(num_dla_cores):
        have = f"has DLA cores 0..{num_dla_cores - 1}" if num_dla_cores else "has no DLA cores (desktop GPUs, Orin Nano)"
        raise ConfigError(f"{where}--dla-core {dla_core}: this device {have}; drop --dla-core to build for the GPU")


def dla_recipe(version: str | None, precision: str, warn: Any = None) -> dict[str, Any]:
    """How to build for DLA with this TensorRT (:func:`deploy.engine_meta.dla_support` cites NVIDIA's tables):
    ``{"strongly_typed": bool, "flags": [builder flag names]}``; GPU fallback is added by the caller.

    10.0-10.7: weakly typed with the precision flag of the file (FP16 file: FP16; Q/DQ INT8 file: INT8 and
    FP16, as ``trtexec --useDLACore=0 --int8 --fp16 --allowGPUFallback``; DLA runs only FP16 and INT8, so
    an FP32 file is refused). 11.4.1+: strongly typed, no flag (11.x has none). Releases without DLA:
    ConfigError in one line; releases NVIDIA does not list: a warning, built strongly typed."""
    support = dla_support(version)
    if support == "no":
        raise ConfigError(f"--dla-core: TensorRT {version} has no DLA support on Jetson (NVIDIA: 10.0-10.7 and 11.4.1 "
                          "on AGX Orin with JetPack 7.2.2+; none in 10.8+, 11.0-11.4.0, 11.5); build for the GPU "
                          "(drop --dla-core), or use JetPack 6's TensorRT 10.3")
    if support == "weak":
        flags = {"fp16": ["FP16"], "int8": ["INT8", "FP16"]}.get(precision)
        if flags is None:
            raise ConfigError(f"--dla-core: DLA runs FP16 and INT8 networks only (TensorRT {version}); build from "
                              "model.fp16.onnx or model.int8.onnx")
        return {"strongly_typed": False, "flags": flags}
    if support == "unknown" and warn is not None:
        warn(f"--dla-core: DLA support in TensorRT {version} is not in NVIDIA's tables (10.0-10.7, 11.4.1); building "
             "strongly typed: check the DLA/GPU placement this build reports")
    return {"strongly_typed": True, "flags": []}


def network_flags(trt_version: str | None, trt: Any) -> int:
    """Flags for ``Builder.create_network``: a strongly typed network on every supported version.

    10.x: strong typing is opt-in, ``1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)``
    (``create_network(0)`` would be weakly typed: FP16 types become hints and Q/DQ needs the INT8
    flag). 11.x: every network is strongly typed; the flag is deprecated and ignored (its value
    moved to bit 0), so nothing is passed. Older than 10.0: ExportError.
    """
    major = check_trt_version(trt_version, ExportError)[0]
    if major >= 11:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def slug(text: str) -> str:
    """Lower-case letters, digits and '-' only: safe as one part of a file name."""
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "unknown"


def timing_cache_name(gpu: str | None, compute_capability: str | None, trt_version: str | None) -> str:
    """``timing-<gpu>-sm87-trt10-3-0-30.cache``: one cache per GPU model, compute capability and exact
    TensorRT release (major.minor.patch.build: NVIDIA's support policy ties caches to all four).
    Every part is slugged, so no text from a GPU name or version can leave the folder."""
    cc = _cc(compute_capability)
    sm = "sm" + slug(cc.replace(".", "")) if cc else "sm-unknown"
    release = trt_release(trt_version)
    trt = "trt" + slug("-".join(str(v) for v in release)) if release else "trt-unknown"
    return f"timing-{slug(gpu or 'unknown-gpu')}-{sm}-{trt}.cache"


def sidecar_meta(engine_key: str | None, onnx_sha256: str, identity: dict[str, Any], io: dict[str, Any],
                 profile: dict[str, Shape], workspace_gb: float, dla_core: int | None, *,
                 source_onnx: str | None = None, precision_layers: dict[str, int] | None = None,
                 timing_cache: dict[str, Any] | None = None, builder_flags: Sequence[str] = (),
                 network_flags: int | None = None, dla_layers: dict[str, Any] | None = None,
                 dla_estimate: dict[str, Any] | None = None, precision: str | None = None,
                 strongly_typed: bool = True) -> dict[str, Any]:
    """What ``deploy.engine_meta.write_sidecar`` stores beside an engine (and ``build_engine`` returns).

    ``engine_key``: the engine's row in the formats table (its precision and source file are the
    defaults of ``precision`` and ``source_onnx``), or None when both are given."""
    row = table.BY_KEY.get(engine_key) if engine_key else None
    precision = precision or (row.precision if row is not None else "fp32")
    if source_onnx is None and row is not None and row.source in table.BY_KEY:
        source_onnx = table.BY_KEY[str(row.source)].file
    return {
        **identity,  # tensorrt, gpu, compute_capability
        "precision": precision,
        "source_onnx": source_onnx,
        "source_sha256": onnx_sha256,
        "inputs": io.get("inputs", []),
        "outputs": io.get("outputs", []),
        "input_shape": list(profile["opt"]),
        "profile": {k: list(v) for k, v in profile.items()},
        "max_batch": int(profile["max"][0]),
        "workspace_gb": workspace_gb,
        "dla_core": dla_core,
        "dla_layers": dla_layers,  # after the build, from the engine inspector: {"source", "dla", "gpu", "dla_layers"}
        "dla_estimate": dla_estimate,  # before the build, network layers can_run_on_DLA: an estimate (pre-fusion)
        "strongly_typed": strongly_typed,
        "network_flags": network_flags,
        "builder_flags": list(builder_flags),
        "precision_layers": precision_layers,
        "timing_cache": timing_cache,
    }
