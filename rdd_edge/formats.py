"""The table of export formats: one row per artifact, the single place that knows them.

Each row says what the artifact is (manifest key, file, runtime, precision), the CLI flag that
asks for it, which artifact it is built from, which export options only it takes, which function
builds it (``export.builders``) and whether TensorRT may take the file. Every stage reads it:
export (what to build, option checks), the CLI and the pipeline ("every format this machine can
build"), and deploy (check row order, an artifact's precision, whether ONNX Runtime's TensorRT
execution provider may run it, what precision an engine built from it has).

A core module: standard library only, so ``deploy`` reads the table without importing
``export`` (export -> deploy is the allowed direction, never the reverse). Export-only things
(``ExportSpec``, which formats a spec asks for, option checks) live in ``export/formats.py``.
Adding a format = one row here (flag ``"--format KEY"`` unless it earns a flag of its own) + its
builder + a test: no ExportSpec field, no CLI option.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping


@dataclass(frozen=True)
class ExportFormat:
    """One artifact kind."""

    key: str  # key in manifest["artifacts"]; also the check row's name
    name: str  # human name
    file: str  # file name inside <run>/export/
    runtime: str  # what runs it: "onnxruntime" (an .onnx file) or "tensorrt" (an engine: TensorRT's own runtime)
    precision: str  # fp32 / fp16 / int8: what deploy reports, what an engine built from it runs
    # the `rdd-edge export` flag that asks for it ("--fp16", "--trt fp16"); None: always written. A new
    # format needs no flag of its own: "--format KEY" asks for it by key (any row can be asked for so)
    flag: str | None
    build: str  # "module:function" that writes it; rows sharing a builder are written by one call
    source: str | None = None  # key of the artifact it is built from (None: the checkpoint)
    options: frozenset[str] = frozenset()  # ExportSpec fields that only this format uses
    min_agreement: float | None = None  # fail the export when its labels agree with FP32 on fewer pixels
    trt_ep: bool = False  # TensorRT may take this ONNX file (ONNX Runtime's TensorRT EP, an engine build); False: never


_CALIB = frozenset({"calib", "calib_method", "calib_data", "keep_float", "int8_max_drop", "int8_float", "int8_budget",
                    "int8_report", "int8_max_float", "int8_loo"})
_ENGINE = frozenset({"workspace", "max_batch", "opt_batch", "dla_core", "allow_gpu_fallback", "profile"})

FORMATS: tuple[ExportFormat, ...] = (
    ExportFormat("onnx", "ONNX", "model.onnx", "onnxruntime", "fp32", None, "rdd_edge.export.builders:build_onnx",
                 trt_ep=True),
    ExportFormat("fp16", "ONNX FP16", "model.fp16.onnx", "onnxruntime", "fp16", "--fp16",
                 "rdd_edge.export.builders:build_fp16", source="onnx", min_agreement=0.995, trt_ep=True),
    # uint8 activations with asymmetric zero points: for ONNX Runtime's CPU kernels, never TensorRT
    ExportFormat("int8-cpu", "ONNX INT8 (CPU QDQ)", "model.int8-cpu.onnx", "onnxruntime", "int8", "--int8",
                 "rdd_edge.export.builders:build_int8", source="onnx", options=_CALIB, trt_ep=False),
    ExportFormat("int8", "ONNX INT8 (TensorRT QDQ)", "model.int8.onnx", "onnxruntime", "int8", "--int8",
                 "rdd_edge.export.builders:build_int8", source="onnx", options=_CALIB, trt_ep=True),
    ExportFormat("engine-fp16", "TensorRT FP16", "model.fp16.engine", "tensorrt", "fp16", "--trt fp16",
                 "rdd_edge.export.builders:build_engines", source="fp16", options=_ENGINE),
    ExportFormat("engine-int8", "TensorRT INT8", "model.int8.engine", "tensorrt", "int8", "--trt int8",
                 "rdd_edge.export.builders:build_engines", source="int8", options=_ENGINE),
)

BY_KEY: dict[str, ExportFormat] = {f.key: f for f in FORMATS}
ORDER: tuple[str, ...] = tuple(f.key for f in FORMATS)  # build order, and the order of check rows


def split_flag(flag: str) -> tuple[str, str | None]:
    """``"--trt fp16"`` -> ``("--trt", "fp16")``; ``"--fp16"`` -> ``("--fp16", None)``."""
    option, _, value = flag.strip().partition(" ")
    return option, value.strip() or None


def flag_choices(option: str) -> dict[str, tuple[str, ...]]:
    """The values of a valued flag (``--trt``) and the flags each turns on: ``none``, one value per
    row that names it, ``all`` (e.g. ``{"none": (), "fp16": ("--trt fp16",), ..., "all": (...)}``)."""
    flags = tuple(dict.fromkeys(f.flag for f in FORMATS if f.flag and split_flag(f.flag)[0] == option))
    return {"none": (), **{str(split_flag(fl)[1]): (fl,) for fl in flags}, "all": flags}


# --trt values and the flags they turn on
TRT_CHOICES: dict[str, tuple[str, ...]] = flag_choices("--trt")


def artifact_key(file_name: str | Path, manifest: Mapping[str, Any] | None = None) -> str | None:
    """The manifest key whose ``file`` is ``file_name`` (its base name), else None."""
    name = Path(file_name).name
    arts = (manifest or {}).get("artifacts")
    for key, entry in (arts.items() if isinstance(arts, Mapping) else ()):
        if isinstance(entry, Mapping) and entry.get("file") == name:
            return str(key)
    return None


def format_of(file_name: str | Path, manifest: Mapping[str, Any] | None = None) -> ExportFormat | None:
    """The row of an artifact file: by the key the manifest lists it under, else by the table's exact
    ``file`` name (never a substring); None for a file neither knows (callers treat it as plain FP32
    ONNX) or one the manifest lists under a key this table does not have."""
    key = artifact_key(file_name, manifest)
    if key is not None:
        return BY_KEY.get(key)
    name = Path(file_name).name
    return next((f for f in FORMATS if f.file == name), None)


def engine_for(precision: str) -> ExportFormat | None:
    """The TensorRT engine row of ``precision`` (its flag is what rebuilds such an engine), or None."""
    return next((f for f in FORMATS if f.runtime == "tensorrt" and f.precision == precision), None)


def buildable(tensorrt: bool) -> tuple[ExportFormat, ...]:
    """Every format a machine can build: all rows, less the TensorRT engines where TensorRT is missing."""
    return tuple(f for f in FORMATS if tensorrt or f.runtime != "tensorrt")


__all__ = ["ExportFormat", "FORMATS", "BY_KEY", "ORDER", "TRT_CHOICES", "split_flag", "flag_choices", "artifact_key",
           "format_of", "engine_for", "buildable"]
