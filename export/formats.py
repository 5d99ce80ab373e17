"""Export-only knowledge around the formats table (``rdd_edge.formats``): the export spec, which
formats a spec asks for, and which options go with which format.

The table itself (rows, ``BY_KEY``, ``ORDER``, ``TRT_CHOICES``) is a core module so that ``deploy``
reads it without importing ``export``; this module turns a spec's flags (``--fp16``, ``--int8``,
``--trt fp16``) into rows by the table's ``flag`` column and checks options by its ``options``
column (Ultralytics ``export_formats()`` / ``validate_args`` style). Torch-free.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from rdd_edge import formats as table
from rdd_edge.errors import ConfigError
from rdd_edge.formats import ExportFormat
from rdd_edge.normalize import embed_mode
from rdd_edge.runs import DEFAULT_ROOT
from rdd_edge.sizes import parse_hw, parse_profile

TRT_ALIASES = {"no": "none", "off": "none", "false": "none", "half": "fp16", "both": "all", "engine": "fp16",
               "trt": "fp16", "tensorrt": "fp16"}
FLAG_ALIASES = {"--trt": TRT_ALIASES}  # aliases of a valued flag's values
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
    embed_preprocess: bool | str = False  # '' / uint8 / float255 / float255-bgr (normalize.EMBED_MODES; True: uint8)
    dynamic: bool = False
    opset: int = 18
    # which artifacts
    fp16: bool = False
    int8: bool = False
    trt: str = "none"  # none, fp16, int8, all
    format: Sequence[str] = ()  # table keys (`--format KEY`, repeatable): any row, and the only switch of a row whose flag is "--format KEY"
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
        s = dataclasses.replace(self)
        s.outputs = resolve_output(s.outputs)
        s.embed_preprocess = embed_mode(s.embed_preprocess)
        s.trt = resolve_trt(s.trt)
        s.calib_method = resolve_calib_method(s.calib_method)
        s.int8_float = resolve_choice(s.int8_float, INT8_FLOAT_CHOICES, {"half": "fp16", "float": "fp32"}, "--int8-float")
        s.size = parse_hw(s.size, "--size")
        s.keep_float = tuple(s.keep_float or ())
        s.format = tuple(dict.fromkeys(get_format(k, "--format").key for k in (s.format or ())))
        if s.int8_max_drop is not None and s.int8_budget is not None and s.int8_budget != s.int8_max_drop:
            raise ConfigError(f"--int8-max-drop {s.int8_max_drop:g} and --int8-budget {s.int8_budget:g}: the same "
                              "setting under its old and new name; give one")
        s.profile = parse_profile(s.profile, "--profile")
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


def _field(option: str) -> str:
    """``--int8-dynamic`` -> ``int8_dynamic``: the ExportSpec field a flag's option sets."""
    return option.lstrip("-").replace("-", "_")


def asks_for(spec: ExportSpec, flag: str) -> bool:
    """Whether ``spec`` turns on the table flag ``flag``: a plain flag (``--fp16``) by its boolean field,
    a valued one (``--trt fp16``) when the field's value (aliases resolved, ``all``) includes it."""
    option, value = table.split_flag(flag)
    have = getattr(spec, _field(option), None)
    if value is None:
        return bool(have)
    if have is None:
        return False
    if isinstance(have, (tuple, list)):  # a repeatable flag (--format): the values given
        return value in have
    choices = table.flag_choices(option)
    return flag in choices[resolve_choice(str(have), tuple(choices), FLAG_ALIASES.get(option, {}), option)]


def flags_on(spec: ExportSpec) -> set[str | None]:
    """The table flags an export spec turns on (None stands for the rows always written); a row named
    by ``--format KEY`` turns on its own flag, so ``--format fp16`` is ``--fp16``."""
    named = {f.flag for f in table.FORMATS if f.key in (spec.format or ())}
    return {None} | named | {f.flag for f in table.FORMATS if f.flag and asks_for(spec, f.flag)}


def spec_for(flags: Iterable[str], **fields: Any) -> ExportSpec:
    """An ExportSpec that asks for exactly the table flags ``flags`` (plus ``fields``): the inverse of
    :func:`flags_on`, for callers that pick formats from the table (the pipeline)."""
    values: dict[str, list[str]] = {}
    for flag in dict.fromkeys(flags):
        option, value = table.split_flag(flag)
        if value is None:
            fields[_field(option)] = True
        else:
            values.setdefault(option, []).append(value)
    for option, vals in values.items():
        if isinstance(getattr(ExportSpec, _field(option), None), tuple):  # a repeatable flag (--format KEY): every value
            fields[_field(option)] = tuple(vals)
            continue
        choices = table.flag_choices(option)
        every = [str(table.split_flag(fl)[1]) for fl in choices["all"]]
        fields[_field(option)] = vals[0] if len(vals) == 1 else "all" if set(vals) == set(every) else None
        if fields[_field(option)] is None:
            raise ConfigError(f"{option}: one value or all of {', '.join(every)}, not {', '.join(vals)}")
    known = {f.name for f in dataclasses.fields(ExportSpec)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ConfigError(f"ExportSpec has no field {', '.join(unknown)}: a format's flag (--{unknown[0].replace('_', '-')}) "
                          "needs its ExportSpec field and its `rdd-edge export` option")
    return ExportSpec(**fields)


def requested(spec: ExportSpec) -> list[ExportFormat]:
    """The formats one export writes, in build order: those whose flag is on and every source they need."""
    on = flags_on(spec)
    by_key = table.BY_KEY
    keys = {f.key for f in table.FORMATS if f.flag in on}
    while True:  # an engine needs its ONNX source, the source needs the FP32 model ...
        more = {by_key[k].source for k in keys if by_key[k].source} - keys
        if not more:
            break
        keys |= more
        keys |= {f.key for f in table.FORMATS if f.flag in {by_key[k].flag for k in more}}  # a flag's files come together
    return [f for f in table.FORMATS if f.key in keys]


def check_options(spec: ExportSpec) -> None:
    """An option changed from its default that no requested format takes is an error (Ultralytics' validate_args)."""
    wanted = requested(spec)
    takes = set().union(*(f.options for f in wanted))
    owned = set().union(*(f.options for f in table.FORMATS))
    defaults = ExportSpec()
    for name in sorted(owned - takes):
        if getattr(spec, name) != getattr(defaults, name) and getattr(spec, name) not in (None, (), []):
            users = [f for f in table.FORMATS if name in f.options]
            hint = " or ".join(dict.fromkeys(f.flag if _field(table.split_flag(f.flag)[0]) == "format"
                                             else table.split_flag(f.flag)[0] for f in users if f.flag))
            raise ConfigError(f"--{name.replace('_', '-')} applies only to {', '.join(f.key for f in users)}; "
                              f"add {hint} (or drop it)")


def get_format(key: str, option: str = "format") -> ExportFormat:
    """The row for a manifest key (``onnx``, ``fp16``, ``int8``, ``int8-cpu``, ``engine-fp16`` ...)."""
    return table.BY_KEY[resolve_choice(key, tuple(table.BY_KEY), {"trt": "engine-fp16", "engine": "engine-fp16"}, option)]


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
    return resolve_choice(value, tuple(table.TRT_CHOICES), TRT_ALIASES, "--trt")


def resolve_output(value: str) -> str:
    return resolve_choice(value, OUTPUT_CHOICES, OUTPUT_ALIASES, "--outputs")


def resolve_calib_method(value: str) -> str:
    return resolve_choice(value, CALIB_METHODS, CALIB_ALIASES, "--calib-method")
