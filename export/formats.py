"""The table of export formats: one row per artifact, the single place that knows them.

Each row says what the artifact is (manifest key, file, runtime, precision), which CLI switch
asks for it, which artifact it is built from, which export options only it takes, and which
function builds it (``export.builders``). The export pipeline, the CLI's option validation and
the deploy ``check`` (its row order) all read this table (Ultralytics ``export_formats()`` style).
Adding a format = one row here + its builder + a test. Torch-free: ``deploy`` imports it too.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from rdd_edge.errors import ConfigError
from rdd_edge.runs import DEFAULT_ROOT


@dataclass(frozen=True)
class ExportFormat:
    """One artifact kind."""

    key: str  # key in manifest["artifacts"]; also the check row's name
    name: str  # human name
    file: str  # file name inside <run>/export/
    runtime: str  # what runs it: "onnxruntime" or "tensorrt" (deploy.load picks the backend by suffix)
    precision: str  # fp32 / fp16 / int8
    switch: str  # what asks for it: "always", "fp16", "int8", "trt-fp16", "trt-int8"
    build: str  # "module:function" that writes it; rows sharing a builder are written by one call
    source: str | None = None  # key of the artifact it is built from (None: the checkpoint)
    options: frozenset[str] = frozenset()  # ExportSpec fields that only this format uses
    min_agreement: float | None = None  # fail the export when its labels agree with FP32 on fewer pixels


_CALIB = frozenset({"calib", "calib_method", "calib_data", "keep_float", "int8_max_drop", "int8_float", "int8_budget",
                    "int8_report", "int8_max_float", "int8_loo"})
_ENGINE = frozenset({"workspace", "max_batch", "opt_batch", "dla_core", "allow_gpu_fallback", "profile"})

FORMATS: tuple[ExportFormat, ...] = (
    ExportFormat("onnx", "ONNX", "model.onnx", "onnxruntime", "fp32", "always", "rdd_edge.export.builders:build_onnx"),
    ExportFormat("fp16", "ONNX FP16", "model.fp16.onnx", "onnxruntime", "fp16", "fp16", "rdd_edge.export.builders:build_fp16",
                 source="onnx", min_agreement=0.995),
    ExportFormat("int8-cpu", "ONNX INT8 (CPU QDQ)", "model.int8-cpu.onnx", "onnxruntime", "int8", "int8",
                 "rdd_edge.export.builders:build_int8", source="onnx", options=_CALIB),
    ExportFormat("int8", "ONNX INT8 (TensorRT QDQ)", "model.int8.onnx", "onnxruntime", "int8", "int8",
                 "rdd_edge.export.builders:build_int8", source="onnx", options=_CALIB),
    ExportFormat("engine-fp16", "TensorRT FP16", "model.fp16.engine", "tensorrt", "fp16", "trt-fp16",
                 "rdd_edge.export.builders:build_engines", source="fp16", options=_ENGINE),
    ExportFormat("engine-int8", "TensorRT INT8", "model.int8.engine", "tensorrt", "int8", "trt-int8",
                 "rdd_edge.export.builders:build_engines", source="int8", options=_ENGINE),
)

BY_KEY: dict[str, ExportFormat] = {f.key: f for f in FORMATS}
ORDER: tuple[str, ...] = tuple(f.key for f in FORMATS)  # build order, and the order of check rows

# --trt values and the switches they turn on
TRT_CHOICES: dict[str, tuple[str, ...]] = {"none": (), "fp16": ("trt-fp16",), "int8": ("trt-int8",), "all": ("trt-fp16", "trt-int8")}
TRT_ALIASES = {"no": "none", "off": "none", "false": "none", "half": "fp16", "both": "all", "engine": "fp16",
               "trt": "fp16", "tensorrt": "fp16"}
OUTPUT_CHOICES = ("labels", "logits", "both")
OUTPUT_ALIASES = {"label": "labels", "argmax": "labels", "logit": "logits", "scores": "logits", "all": "both"}
CALIB_METHODS = ("entropy", "percentile", "minmax")
CALIB_ALIASES = {"min-max": "minmax", "min_max": "minmax", "kl": "entropy", "histogram": "percentile"}
INT8_FLOAT_CHOICES = ("fp16", "fp32")
# Export scores every ONNX artifact on the val split training validated on; past this many images it
# takes an evenly spread subset of it (each artifact runs on the CPU, the TensorRT Q/DQ file slowly).
CHECK_IMAGES = 100


@dataclass
class ExportSpec:
    """Everything one export needs; the CLI fills it from its options, the pipeline from its own."""

    source: str | Path | None = None  # checkpoint file or run folder (None: the latest distill run)
    out: str | Path | None = None  # export folder (default <run>/export)
    runs_root: str | Path = DEFAULT_ROOT
    # the graph
    size: Any = None  # (H, W) or "HxW"; default: the data set's eval size
    outputs: str = "labels"  # graph outputs: labels, logits or both
    embed_preprocess: bool = False
    dynamic: bool = False
    opset: int = 18
    # which artifacts
    fp16: bool = False
    int8: bool = False
    trt: str = "none"  # none, fp16, int8, all
    # accuracy checks
    check_images: int | None = None  # val images scored per artifact (None: the val split, up to CHECK_IMAGES)
    data: str | Path | None = None  # data folder, if not the one the checkpoint records
    # INT8 (int8, int8-cpu)
    calib: int = 300
    calib_method: str = "percentile"
    calib_data: str | Path | None = None
    keep_float: Sequence[str] = ()
    int8_budget: float | None = None  # mIoU points the INT8 files may lose on the check images; layers go float until they fit
    int8_report: bool = False  # per-layer sensitivity report (always with a budget)
    int8_max_float: int | None = None  # most layers a budget may keep in float (None: 10% of them, at least 2)
    int8_loo: int | None = None  # noisiest layers measured leave-one-out (None: int8_max_float's value; -1: all)
    int8_max_drop: float | None = None  # the old name of int8_budget (an alias)
    int8_float: str = "fp16"  # float math of the TensorRT Q/DQ file: fp16 or fp32
    min_calib: int = 32
    # TensorRT engines
    workspace: float = 2.0  # GB
    max_batch: int = 8
    opt_batch: int = 1
    dla_core: int | None = None
    allow_gpu_fallback: bool = False  # a --dla-core build with no layer on DLA: a warning instead of an error
    profile: Any = None  # dynamic graphs: ((minH, minW), (optH, optW), (maxH, maxW)) or "HxW,HxW,HxW"
    overwrite: bool = False  # --out onto another checkpoint's export replaces it only when set
    extra: dict = field(default_factory=dict)  # room for builders' own settings (tests)

    @property
    def budget(self) -> float | None:
        """The INT8 budget in mIoU points: ``--int8-budget``, or its old name ``--int8-max-drop``."""
        return self.int8_budget if self.int8_budget is not None else self.int8_max_drop

    def normalised(self) -> "ExportSpec":
        """A copy with every choice resolved (aliases, case) and checked; ConfigError naming the option."""
        from rdd_edge.sizes import parse_hw

        s = dataclasses.replace(self)
        s.outputs = resolve_output(s.outputs)
        s.trt = resolve_trt(s.trt)
        s.calib_method = resolve_calib_method(s.calib_method)
        s.int8_float = resolve_choice(s.int8_float, INT8_FLOAT_CHOICES, {"half": "fp16", "float": "fp32"}, "--int8-float")
        s.size = parse_hw(s.size, "--size")
        s.keep_float = tuple(s.keep_float or ())
        if s.int8_max_drop is not None and s.int8_budget is not None and s.int8_budget != s.int8_max_drop:
            raise ConfigError(f"--int8-max-drop {s.int8_max_drop:g} and --int8-budget {s.int8_budget:g}: the same "
                              "setting under its old and new name; give one")
        if s.profile is not None and not isinstance(s.profile, tuple):
            parts = [p for p in str(s.profile).replace(";", ",").split(",") if p.strip()] if isinstance(s.profile, str) else list(s.profile)
            if len(parts) != 3:
                raise ConfigError(f"--profile {self.profile!r}: expected three sizes min,opt,max, e.g. 256x512,512x1024,1024x2048")
            s.profile = tuple(parse_hw(p, "--profile") for p in parts)
        checks = [
            (s.budget is None or 0 <= s.budget < 100,
             f"--int8-budget {s.budget}: mIoU points between 0 and 100, e.g. 1.0 (as rdd-edge check --max-drop)"),
            (s.int8_max_float is None or s.int8_max_float >= 0, f"--int8-max-float {s.int8_max_float}: must be >= 0"),
            (s.check_images is None or s.check_images >= 1, f"--check-images {s.check_images}: must be >= 1"),
            (s.calib >= 1, f"--calib {s.calib}: must be >= 1 (300-500 recommended)"),
            (s.workspace > 0, f"--workspace {s.workspace}: GB, must be positive (1-2 on Jetson)"),
            (1 <= s.opt_batch <= s.max_batch or s.dla_core is not None,
             f"--max-batch {s.max_batch} / --opt-batch {s.opt_batch}: need 1 <= opt <= max"),
            (s.opt_batch >= 1, f"--opt-batch {s.opt_batch}: must be >= 1"),
            (not (s.allow_gpu_fallback and s.dla_core is None), "--allow-gpu-fallback applies to --dla-core builds"),
            (not (s.profile and not s.dynamic), "--profile sets the engine's H x W range of a --dynamic graph; add --dynamic"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)
        return s


def switches(spec: ExportSpec) -> set[str]:
    """The switches an export spec turns on (``always`` included)."""
    on = {"always", *TRT_CHOICES[resolve_trt(spec.trt)]}
    if spec.fp16:
        on.add("fp16")
    if spec.int8:
        on.add("int8")
    return on


def requested(spec: ExportSpec) -> list[ExportFormat]:
    """The formats one export writes, in build order: those switched on and every source they need."""
    on = switches(spec)
    keys = {f.key for f in FORMATS if f.switch in on}
    while True:  # an engine needs its ONNX source, the source needs the FP32 model ...
        more = {BY_KEY[k].source for k in keys if BY_KEY[k].source} - keys
        if not more:
            break
        keys |= more
        keys |= {f.key for f in FORMATS if f.switch in {BY_KEY[k].switch for k in more}}  # a switch's files come together
    return [f for f in FORMATS if f.key in keys]


def check_options(spec: ExportSpec) -> None:
    """An option changed from its default that no requested format takes is an error (Ultralytics' validate_args)."""
    wanted = requested(spec)
    takes = set().union(*(f.options for f in wanted))
    owned = set().union(*(f.options for f in FORMATS))
    defaults = ExportSpec()
    for name in sorted(owned - takes):
        if getattr(spec, name) != getattr(defaults, name) and getattr(spec, name) not in (None, (), []):
            users = [f.key for f in FORMATS if name in f.options]
            hint = "--int8" if any(BY_KEY[u].switch == "int8" for u in users) else "--trt"
            raise ConfigError(f"--{name.replace('_', '-')} applies only to {', '.join(users)}; add {hint} (or drop it)")


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
    return resolve_choice(value, OUTPUT_CHOICES, OUTPUT_ALIASES, "--outputs")


def resolve_calib_method(value: str) -> str:
    return resolve_choice(value, CALIB_METHODS, CALIB_ALIASES, "--calib-method")
