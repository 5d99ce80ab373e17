"""The table of export formats: one row per artifact kind.

The CLI validates names and options against it, the pipeline reads file names from it and the
deploy ``check`` iterates it (Ultralytics ``export_formats()`` style).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from rdd_edge.errors import ConfigError


@dataclass(frozen=True)
class ExportFormat:
    """One artifact kind: its manifest key, CLI spelling, file name, runtime and precision."""

    key: str  # key in manifest["artifacts"]
    name: str  # human name
    flag: str  # CLI flag / value that asks for it
    file: str  # file name inside <run>/export/
    runtime: str  # "onnxruntime" or "tensorrt"
    precision: str  # fp32 / fp16 / int8
    options: frozenset[str]  # export options this format accepts


FORMATS: tuple[ExportFormat, ...] = (
    ExportFormat("onnx", "ONNX", "onnx", "model.onnx", "onnxruntime", "fp32",
                 frozenset({"size", "output", "embed_preprocess", "dynamic", "opset"})),
    ExportFormat("fp16", "ONNX FP16", "--fp16", "model.fp16.onnx", "onnxruntime", "fp16", frozenset()),
    ExportFormat("int8", "ONNX INT8 (TensorRT QDQ)", "--int8", "model.int8.onnx", "onnxruntime", "int8",
                 frozenset({"calib", "calib_method", "calib_data", "keep_float", "int8_max_drop"})),
    ExportFormat("int8-cpu", "ONNX INT8 (CPU QDQ)", "--int8", "model.int8-cpu.onnx", "onnxruntime", "int8",
                 frozenset({"calib", "calib_method", "calib_data", "keep_float", "int8_max_drop"})),
    ExportFormat("engine-fp16", "TensorRT FP16", "--trt fp16", "model.fp16.engine", "tensorrt", "fp16",
                 frozenset({"workspace", "dla_core"})),
    ExportFormat("engine-int8", "TensorRT INT8", "--trt int8", "model.int8.engine", "tensorrt", "int8",
                 frozenset({"workspace", "dla_core"})),
)

BY_KEY: dict[str, ExportFormat] = {f.key: f for f in FORMATS}

# --trt values and what they build
TRT_CHOICES: dict[str, tuple[str, ...]] = {
    "none": (),
    "fp16": ("engine-fp16",),
    "int8": ("engine-int8",),
    "all": ("engine-fp16", "engine-int8"),
}
TRT_ALIASES = {"no": "none", "off": "none", "false": "none", "half": "fp16", "both": "all", "engine": "fp16",
               "trt": "fp16", "tensorrt": "fp16"}

OUTPUT_CHOICES = ("labels", "logits", "both")
OUTPUT_ALIASES = {"label": "labels", "argmax": "labels", "logit": "logits", "scores": "logits", "all": "both"}

CALIB_METHODS = ("entropy", "percentile", "minmax")
CALIB_ALIASES = {"min-max": "minmax", "min_max": "minmax", "kl": "entropy", "histogram": "percentile"}


def get_format(key: str) -> ExportFormat:
    """The row for a manifest key (``onnx``, ``fp16``, ``int8``, ``int8-cpu``, ``engine-fp16`` ...)."""
    return BY_KEY[resolve_choice(key, tuple(BY_KEY), {"trt": "engine-fp16", "engine": "engine-fp16"}, "format")]


def resolve_choice(value: str, choices: tuple[str, ...], aliases: dict[str, str], option: str) -> str:
    """Map ``value`` (any case, aliases allowed) to one of ``choices``; suggest the closest otherwise."""
    v = str(value).strip().lower()
    v = aliases.get(v, v)
    if v in choices:
        return v
    close = difflib.get_close_matches(v, list(choices) + list(aliases), n=1, cutoff=0.5)
    hint = f" Did you mean '{aliases.get(close[0], close[0])}'?" if close else ""
    raise ConfigError(f"{option}: unknown value '{value}'.{hint} Valid: {', '.join(choices)}")


def resolve_trt(value: str) -> str:
    return resolve_choice(value, tuple(TRT_CHOICES), TRT_ALIASES, "--trt")


def resolve_output(value: str) -> str:
    return resolve_choice(value, OUTPUT_CHOICES, OUTPUT_ALIASES, "--output")


def resolve_calib_method(value: str) -> str:
    return resolve_choice(value, CALIB_METHODS, CALIB_ALIASES, "--calib-method")


def parse_size(value: str | tuple[int, int] | list[int] | None) -> tuple[int, int] | None:
    """``"360x480"`` / ``"360,480"`` / ``(360, 480)`` -> (H, W); ``None`` stays None."""
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        parts = list(value)
    else:
        parts = str(value).lower().replace(",", "x").replace("*", "x").split("x")
    try:
        h, w = (int(p) for p in parts)
    except (TypeError, ValueError):
        raise ConfigError(f"--size: expected HxW (e.g. 360x480), got '{value}'") from None
    if h <= 0 or w <= 0:
        raise ConfigError(f"--size: height and width must be positive, got {h}x{w}")
    return h, w


def requested_formats(fp16: bool, int8: bool, trt: str) -> list[ExportFormat]:
    """The artifacts one export call produces, in build order (ONNX first, engines last)."""
    keys = ["onnx"]
    trt_keys = TRT_CHOICES[resolve_trt(trt)]
    if fp16 or "engine-fp16" in trt_keys:
        keys.append("fp16")
    if int8 or "engine-int8" in trt_keys:
        keys += ["int8", "int8-cpu"]
    keys += list(trt_keys)
    return [BY_KEY[k] for k in keys]
