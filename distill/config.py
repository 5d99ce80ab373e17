"""The training configuration: plain defaults, per-dataset presets, CLI overrides.

``make_config(mode, dataset, **overrides)`` starts from the defaults below, applies the preset of
the data set (the paper's recipe, METHOD.md; a small CPU-friendly one for ``synthetic``) and
then every override that is not ``None``. The resolved config is written as ``config.json`` in
the run folder and stored inside each checkpoint, so a checkpoint says how it was made.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rdd_edge.data.registry import dataset_info, detect_dataset
from rdd_edge.data.spec import DataSpec
from rdd_edge.distill.bounds import check_sizes
from rdd_edge.distill.losses import build_kd_loss
from rdd_edge.distill.recipes import apply_recipe
from rdd_edge.distill.rdd import AUX_WEIGHT, CONFIDENCES, TFE_AVERAGES, TFE_KL, parse_class_weights
from rdd_edge.distill.rdd import MODES as RDD_MODES
from rdd_edge.errors import CheckpointError, ConfigError
from rdd_edge.models.checkpoint import load_checkpoint, resolve_checkpoint
from rdd_edge.models.registry import resolve_name
from rdd_edge.normalize import preset
from rdd_edge.runs import DEFAULT_ROOT
from rdd_edge.sizes import parse_hw

MODES = ("teacher", "distill")
AMP_DTYPES = ("auto", "fp16", "bf16")
INITS = ("timm", "release")


@dataclass
class TrainConfig:
    """Everything one training run needs; JSON-serialisable."""

    # -- what is trained
    mode: str = "distill"  # "teacher": plain supervised training; "distill": student + frozen teacher
    model: str = "deeplabv3_mbv2"  # model trained (teacher or student), a models registry name or alias
    aux: bool | None = None  # aux head on the trained model; None: on for teachers and ResNet students
    model_kwargs: dict = field(default_factory=dict)  # extra create_model kwargs (e.g. head_channels)
    pretrained: str | None = None  # backbone init: imagenet, a backbone file (released or timm layout) or none; None: imagenet for real data sets, none for synthetic
    init: str = "timm"  # random init without pretrained weights: timm's (default) or release (models/init.py: He fan-out, no zero-init)
    normalization: str | None = None  # input normalisation, imagenet or caffe; None: what the initial weights expect (the trainer fills it in)
    pretrained_report: dict | None = None  # filled by the trainer: what --pretrained loaded, skipped and missed
    pretrained_partial: bool = False  # accept --pretrained weights that cover under half of the backbone
    teacher: str | None = None  # teacher checkpoint (distill only); None: latest teacher run's best.pt
    # -- data
    dataset: str = "synthetic"  # reader name: synthetic, camvid, cityscapes, voc, ade20k
    data: str | None = None  # data set root folder; None for the generated synthetic scenes
    synthetic_train: int = 200  # synthetic only: images in the generated train split
    synthetic_val: int = 40  # synthetic only: images in the generated val split
    crop: tuple[int, int] = (96, 144)  # (H, W) training crop
    eval_size: tuple[int, int] | None = None  # (H, W) images are resized to for eval; None: data set default (VOC/ADE20K: whole images)
    scale_min: float = 0.5  # random scale range of the train augmentation
    scale_max: float = 2.0
    scale_step: float = 0.0  # 0: scales drawn uniformly from [min, max]; > 0: from min, min + step, ... max (released: 0.1)
    align_corners: bool = False  # bilinear upsampling of logits in the task loss and RDD (released code: True)
    hflip: bool = True  # random horizontal flip
    workers: int | str = "auto"  # DataLoader worker processes per training process; auto: distill.data.resolve_workers
    # -- method (distill only)
    method: str = "kd"  # KD loss added to the task loss: none or a method registered in distill.losses
    kd_weight: float | None = None  # weight of the KD term; None: the method's registered default
    kd_options: dict = field(default_factory=dict)  # the KD method's hyperparameters, e.g. {"T": 2.0}
    rdd: bool = True  # weight the task loss by relative difficulty (TFE then TSE)
    rdd_mode: str = "xor"  # how TSE combines student/teacher hard masks: xor (the method), or, and
    rdd_threshold: float = 0.7  # confidence at or below which a pixel counts as hard
    tfe_fraction: float = 0.1  # fraction of iterations in the TFE stage before switching to TSE
    confidence: str = "gt"  # pixel confidence: probability of the gt class ("gt") or the max ("max")
    tfe_kl: str = "main_aux"  # TFE's KL direction: main_aux = KL(main || aux) (the paper), aux_main = KL(aux || main) (the released code)
    tfe_average: str = "valid"  # TFE loss denominator: "valid" pixels, or "all" pixels, ignored ones included (the released main script)
    rdd_min_kept: int = 0  # TSE OHEM floor: at least this many hard pixels per process batch (released code: 100000; 0 = off)
    rdd_class_weights: Any = None  # TSE CE class weights: None/"none" (off), "cityscapes" (released code) or one number per class
    aux_weight: float = AUX_WEIGHT  # weight of the aux-head task loss
    # -- optimisation
    iters: int = 300  # total optimiser steps
    batch: int = 8  # global batch (split evenly across processes)
    lr: float = 0.02  # base learning rate (SGD)
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 1e-4  # L2 weight decay (released code; the paper says 5e-4)
    poly_power: float = 0.9  # lr = base * (1 - it / iters) ** poly_power
    grad_clip: float = 0.0  # max gradient norm; 0 = off
    freeze_bn: bool = False  # keep BatchNorm on its running statistics while training (tiny per-process batches)
    amp: bool = True  # mixed precision on CUDA (bf16 where supported, else fp16 + GradScaler); off on CPU
    amp_dtype: str = "auto"  # AMP's compute type: auto (bf16 where supported, else fp16), fp16 (+ GradScaler, as released), bf16
    recipe: str | None = None  # a named recipe applied under the options (--recipe release: the released scripts' settings)
    recipe_changes: list = field(default_factory=list)  # filled by make_config: what the recipe changed, one line each
    compile: bool = False  # torch.compile the trained model
    channels_last: bool = True  # NHWC memory format where it is the fast one: CUDA, and CPUs with AVX2 or wider
    # -- bookkeeping
    val_every: int = 100  # validate (and save last.pt / best.pt) every this many iterations
    log_every: int = 10  # write a CSV / TensorBoard row every this many iterations
    seed: int = 0  # seeds the model init, data order and augmentation
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    name: str | None = None  # run folder name: runs/<mode>-<name>
    runs_root: str = str(DEFAULT_ROOT)  # parent of run folders
    tensorboard: bool = True  # also log to TensorBoard (<run>/tb)

    def __post_init__(self) -> None:
        self.workers = parse_workers(self.workers)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def stage(self) -> str:
        """Run-folder stage name: ``teacher`` or ``distill``."""
        return self.mode

    def data_spec(self) -> DataSpec:
        """The images this run trains and validates on (stored in its checkpoints)."""
        return DataSpec(name=self.dataset, root=self.data, train_images=self.synthetic_train,
                        val_images=self.synthetic_val, size=self.eval_size, seed=self.seed)


MODE_DEFAULTS: dict[str, dict[str, Any]] = {
    "teacher": dict(model="deeplabv3_r101", method="none", rdd=False),
    "distill": dict(model="deeplabv3_mbv2"),
}

_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def make_config(mode: str = "distill", dataset: str | None = None, **overrides: Any) -> TrainConfig:
    """Defaults, then the mode's and the data set's preset, then every override that is not None."""
    if mode not in MODES:
        raise ConfigError(f"mode {mode!r} unknown; use one of {', '.join(MODES)}")
    dataset = dataset or "synthetic"
    unknown = set(overrides) - _FIELDS
    if unknown:
        raise ConfigError(f"unknown config option(s): {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {"mode": mode, "dataset": dataset}
    values.update(MODE_DEFAULTS[mode])
    info = dataset_info(dataset)  # the data set's own recipe: its crop and schedule (rdd_edge.data)
    values.update(crop=tuple(info.crop_size), **info.recipe.overrides())
    if overrides.get("recipe"):  # under the explicit options; what it changed is kept, for the console and config.json
        defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
        values["recipe_changes"] = apply_recipe(values, overrides["recipe"], mode, dataset, overrides,
                                                int(os.environ.get("WORLD_SIZE", "1")), defaults)
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["pretrained"] = resolve_pretrained(values.get("pretrained"), dataset)
    cfg = TrainConfig(**values)
    validate(cfg)
    return cfg


def resolve_pretrained(value: Any, dataset: str) -> str:
    """``--pretrained`` as the config holds it: ``imagenet``, ``none`` or a backbone file that exists.

    Unset: ``imagenet`` for real data sets (the paper's setting), ``none`` for the embedded synthetic
    scenes (so ``rdd-edge pipeline`` needs no download)."""

    if value is None:
        return "none" if dataset == "synthetic" else "imagenet"
    text = str(value).strip()
    if text.lower() in ("imagenet", "none"):
        return text.lower()
    if not Path(text).is_file():
        raise ConfigError(f"--pretrained {text}: no such file; use imagenet (timm's ImageNet weights), none (random "
                          "weights) or the path of a backbone state dict (the released code's or timm's key layout)")
    return text


def config_from_dict(d: dict[str, Any], **overrides: Any) -> TrainConfig:
    """Rebuild a config saved by :meth:`TrainConfig.as_dict` (JSON turns tuples into lists)."""
    values = {k: v for k, v in d.items() if k in _FIELDS}
    values.update({k: v for k, v in overrides.items() if v is not None})
    for key in ("crop", "eval_size"):
        if values.get(key) is not None:
            values[key] = tuple(int(x) for x in values[key])
    cfg = TrainConfig(**values)
    validate(cfg)
    return cfg


NUMBER_FLAGS = {"lr", "kd_weight", "rdd_threshold", "tfe_fraction"}  # number fields with a command-line option of their own


def _flag(name: str, value: Any) -> str:
    """How a user gave the value: its own option (``--lr inf``), else ``--set weight_decay=nan``."""
    return f"--{name.replace('_', '-')} {value}" if name in NUMBER_FLAGS else f"--set {name}={value}"


def validate(cfg: TrainConfig) -> None:
    """Reject values that cannot work, naming the option."""
    for f in dataclasses.fields(cfg):  # inf / nan in any number (--lr inf trains to non-finite weights)
        value = getattr(cfg, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{_flag(f.name, value)}: must be a finite number")
    checks = [
        (cfg.iters >= 1, f"--iters {cfg.iters}: must be >= 1"),
        (cfg.batch >= 1, f"--batch {cfg.batch}: must be >= 1"),
        (cfg.lr > 0, f"--lr {cfg.lr}: must be > 0"),
        (cfg.momentum >= 0 and cfg.weight_decay >= 0 and cfg.grad_clip >= 0 and cfg.aux_weight >= 0 and cfg.poly_power > 0,
         f"--set momentum / weight_decay / grad_clip / aux_weight must be >= 0 and poly_power > 0 "
         f"(got {cfg.momentum}, {cfg.weight_decay}, {cfg.grad_clip}, {cfg.aux_weight}, {cfg.poly_power})"),
        (cfg.val_every >= 1, f"--val-every {cfg.val_every}: must be >= 1"),
        (cfg.log_every >= 1, f"--log-every {cfg.log_every}: must be >= 1"),
        (0 < cfg.scale_min <= cfg.scale_max, f"scale range {cfg.scale_min}..{cfg.scale_max}: need 0 < min <= max"),
        (cfg.rdd_mode in RDD_MODES, f"--rdd-mode {cfg.rdd_mode!r}: use one of {', '.join(RDD_MODES)}"),
        (cfg.confidence in CONFIDENCES, f"--confidence {cfg.confidence!r}: use one of {', '.join(CONFIDENCES)}"),
        (cfg.tfe_average in TFE_AVERAGES, f"--set tfe_average={cfg.tfe_average!r}: use one of {', '.join(TFE_AVERAGES)}"),
        (cfg.tfe_kl in TFE_KL, f"--set tfe_kl={cfg.tfe_kl!r}: use one of {', '.join(TFE_KL)}"),
        (cfg.init in INITS, f"--set init={cfg.init!r}: use one of {', '.join(INITS)}"),
        (cfg.amp_dtype in AMP_DTYPES, f"--set amp_dtype={cfg.amp_dtype!r}: use one of {', '.join(AMP_DTYPES)}"),
        (cfg.scale_step >= 0, f"--set scale_step={cfg.scale_step}: must be >= 0 (0: a continuous scale range)"),
        (0.0 <= cfg.tfe_fraction <= 1.0, f"--tfe-fraction {cfg.tfe_fraction}: must lie in [0, 1]"),
        (0.0 < cfg.rdd_threshold < 1.0, f"--rdd-threshold {cfg.rdd_threshold}: must lie in (0, 1)"),
        (cfg.workers == "auto" or cfg.workers >= 0, f"--workers {cfg.workers}: must be >= 0 or auto"),
        (isinstance(cfg.rdd_min_kept, int) and not isinstance(cfg.rdd_min_kept, bool) and cfg.rdd_min_kept >= 0,
         f"--rdd-min-kept {cfg.rdd_min_kept}: must be a whole number >= 0 (0 turns the OHEM floor off)"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ConfigError(msg)
    check_sizes(cfg, dataset_info(cfg.dataset).num_classes)  # crop / eval size / head width: before any allocation

    resolve_name(cfg.model)  # --student mbv9: one line now, not after the data is opened and the teacher loaded

    parse_class_weights(cfg.rdd_class_weights)  # a known name or positive numbers (the count is checked against the data)
    if cfg.normalization is not None:
        preset(cfg.normalization)  # imagenet or caffe

    build_kd_loss(cfg.method, cfg.kd_weight, cfg.kd_options)  # unknown method / option / bad value: one clear error
    if cfg.mode == "teacher" and (cfg.method != "none" or cfg.rdd):
        raise ConfigError("teacher training takes no --method / --rdd (those distill a student from a teacher)")
    if cfg.method == "none" and (cfg.kd_weight is not None or cfg.kd_options):
        raise ConfigError("--kd-weight / --kd-option need a KD method (--method kd, cwd, at ...), not none")


def parse_workers(value: Any) -> int | str:
    """``--workers`` as the config holds it: ``"auto"`` or a whole number (text such as ``"4"`` is read)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return "auto"
        try:
            return int(text)
        except ValueError:
            pass
    elif isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ConfigError(f"--workers {value!r}: use a number of loader processes (0 = load in the training process) or auto")


TRAINER_FILLED = {"pretrained_report": "what --pretrained loaded, skipped and missed"}
DICT_EXAMPLES = {"kd_options": 'a JSON object of the KD method\'s hyperparameters, e.g. {"T": 2} (or --kd-option T=2)',
                 "model_kwargs": 'a JSON object, e.g. {"head_channels": 64}'}


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["weight_decay=5e-4", "crop=64x96", "hflip=false"]`` -> values of each config field's type.

    Any config field can be set this way (``--set KEY=VALUE`` on the CLI). The value is read as
    the field's type (numbers, true/false, HxW sizes, JSON objects, none for optional fields);
    anything else is one ConfigError naming the option and what the field takes.
    """

    hints = typing.get_type_hints(TrainConfig)
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        settable = _FIELDS - {"mode", "recipe_changes"}  # recipe_changes is filled by make_config
        if not sep or key not in settable:
            close = difflib.get_close_matches(key, sorted(settable), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE with KEY a config field.{hint} "
                              f"Fields: {', '.join(sorted(settable))}")
        if key in TRAINER_FILLED:
            raise ConfigError(f"--set {key}: filled in by the trainer ({TRAINER_FILLED[key]}); it cannot be set")
        # --set pretrained=none means random weights (the text), not "unset" (None: the data set's default)
        out[key] = raw.strip() if key == "pretrained" else _coerce(item, key, raw.strip(), hints[key])
    return out


def _coerce(item: str, key: str, raw: str, hint: Any) -> Any:
    """``raw`` as a value of the type ``hint`` (a TrainConfig annotation)."""

    args = typing.get_args(hint)
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if optional else hint
    if raw.lower() in ("none", "null"):
        if optional:
            return None
        raise ConfigError(f"--set {item!r}: {key} cannot be none")
    origin = typing.get_origin(base) or base
    try:
        if base is bool:
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                raise ValueError
            return raw.lower() in ("true", "1", "yes", "on")
        if base is int:
            return int(raw)
        if base is float:
            return float(raw)
        if origin is tuple:
            return parse_hw(raw, f"--set {key}")
        if origin is dict:
            value = json.loads(raw)
            if not isinstance(value, dict):
                raise ValueError
            return value
    except (ValueError, json.JSONDecodeError):
        example = {bool: "true or false", int: "a whole number", float: "a number, e.g. 5e-4", tuple: "HxW, e.g. 360x480",
                   dict: DICT_EXAMPLES.get(key, "a JSON object")}.get(origin, str(base))
        raise ConfigError(f"--set {item!r}: {key} takes {example}") from None
    return raw


def resolve_config(mode: str, resume: str | None = None, dataset: str | None = None,
                   sets: list[str] | None = None, **options: Any) -> TrainConfig:
    """The config of a training run from command-line values (the CLI and the pipeline call this).

    A new run: defaults, the data set's preset, then every option that is not None, then
    ``--set KEY=VALUE``. ``--data PATH`` without ``--dataset`` reads the layout of the folder.
    A resumed run: the config stored in its ``last.pt``, with explicit options applied on top
    (e.g. more ``--iters``). ``crop``/``eval_size`` may be given as ``"HxW"`` text and
    ``head_channels`` sets the model's head width.
    """
    opts = dict(options)
    for key, flag in (("crop", "--crop"), ("eval_size", "--eval-size")):
        if isinstance(opts.get(key), str):
            opts[key] = parse_hw(opts[key], flag)
    if opts.get("data") is not None:  # stored absolute: export / check run from another folder find it
        opts["data"] = str(Path(opts["data"]).expanduser().resolve())
    head_channels = opts.pop("head_channels", None)
    if head_channels is not None:
        opts["model_kwargs"] = {**(opts.get("model_kwargs") or {}), "head_channels": int(head_channels)}
    opts.update(parse_overrides(sets))
    if resume:
        ckpt = load_checkpoint(resolve_checkpoint(resume, prefer="last.pt"))
        if not isinstance(ckpt.get("config"), dict) or ckpt["config"].get("mode") != mode:
            raise CheckpointError(f"{resume}: not a {mode} training checkpoint; resume it with the command that made it")
        return config_from_dict(ckpt["config"], **opts)
    if dataset is None and opts.get("data") is not None:
        dataset = detect_dataset(opts["data"])
    return make_config(mode, dataset, **opts)
