"""Train a teacher, or distill a student from a frozen teacher with RDD: one code path.

Single process::

    rdd-edge train-teacher --dataset synthetic --model r101
    rdd-edge distill --student mbv2 --method kd --rdd

DDP (one process per GPU; ``--gpus N`` does this re-launch for you)::

    torchrun --standalone --nproc-per-node 4 -m rdd_edge distill --student r18 --batch 16

``train(cfg)`` reads top to bottom like torchvision's references/segmentation/train.py and calls
one function per part: processes and device, the checkpoint to resume, data, models (teacher,
trained model), the step context (:func:`build_step_context`: channels_last, SyncBN + DDP,
compile, RDD, KD term, optimiser, AMP; benchmarks/distill_speed.py and the tests build theirs
with it too), run folder and restored state, loaders, then the loop over steps (:func:`train_steps`:
lr, step, log rows, validation with :class:`Checkpoints`) and the summary (:func:`summarize`).
Nothing in an iteration waits for the GPU: batches are copied asynchronously (on CUDA the
loader only decodes; scale, crop, flip and normalise run on the GPU, ``distill.data.device_batch``),
the NaN guard keeps its finding on the device (:class:`NonFiniteGuard`) and the host reads it,
with the logged losses, at every log point and before every checkpoint.
The global batch is split across processes; the loss of each process is averaged over its
pixels and DDP averages gradients, which equals single-process training whenever each process
holds as many counted pixels as the others (same crop size, no ignored pixels).
"""

from __future__ import annotations

import contextlib
import csv
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn as nn
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text

from rdd_edge.data import dataset_info, open_split
from rdd_edge.data.check import check_reader
from rdd_edge.distill import dist
from rdd_edge.distill.config import TrainConfig
from rdd_edge.distill.data import (
    available_cpus,
    close_loader,
    device_batch,
    eval_loader,
    renormalizer,
    resolve_workers,
    train_loader,
)
from rdd_edge.distill.evaluate import evaluate
from rdd_edge.distill.losses import build_kd_loss
from rdd_edge.distill.rdd import RDDWeighting, resolve_class_weights
from rdd_edge.errors import CheckpointError, ConfigError, RddError, TrainingError
from rdd_edge.interrupts import StepBoundary, Terminated, deferred, terminate_like_ctrl_c
from rdd_edge.models import create_model, load_checkpoint, load_weights, model_cfg, model_from_checkpoint
from rdd_edge.models.checkpoint import nonfinite_tensors, resolve_checkpoint, save_checkpoint
from rdd_edge.models.init import release_init
from rdd_edge.models.pretrained import check_coverage, is_none, normalization_for
from rdd_edge.normalize import recorded_normalization
from rdd_edge.runs import folder_lock, latest_run, new_run_dir, remove_temp_files, write_json

# data_share: fraction of the wall time since the previous row spent waiting for batches
TRAIN_LOG_FIELDS = ["step", "lr", "loss", "task", "kd", "selected", "stage", "it_per_s", "time_s", "data_share"]
VAL_LOG_FIELDS = ["step", "miou", "pixel_acc", "mean_class_acc", "images_per_s"]


# ---------------------------------------------------------------- small pure helpers
def poly_lr(base_lr: float, it: int, max_iter: int, power: float = 0.9) -> float:
    """Poly decay: ``base * (1 - it / max_iter) ** power`` for the 0-based iteration ``it``."""
    return base_lr * (1.0 - min(it, max_iter) / max_iter) ** power


def default_teacher(runs_root: str | Path) -> Path:
    """``best.pt`` of the latest teacher run; a ConfigError saying what to run otherwise."""
    run = latest_run("teacher", runs_root, must_contain="best.pt")
    if run is None:
        raise ConfigError(f"no teacher given and no teacher run with best.pt under {Path(runs_root).resolve()}; "
                          "train one with `rdd-edge train-teacher` or pass --teacher CKPT")
    return run / "best.pt"


def student_aux(cfg: TrainConfig) -> bool:
    """Whether the trained model gets an aux head (config value, else the model's default)."""
    if cfg.aux is not None:
        return bool(cfg.aux)

    return bool(model_cfg(cfg.model).get("aux_head", False))


def set_train_mode(model: nn.Module, freeze_bn: bool = False) -> None:
    """``model.train()``, with BatchNorm layers left in eval mode when ``freeze_bn``."""
    model.train()
    if freeze_bn:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def rng_state() -> dict:
    """Every RNG's state in types torch's safe unpickler reads back (tensors, numbers, strings, lists)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": [str(kind), torch.from_numpy(np.asarray(keys, np.int64)), int(pos), int(has_gauss), float(gauss)],
            "python": [int(version), list(internal), gauss_next],
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, np.int64).astype(np.uint32), int(pos), int(has_gauss), float(gauss)))
    version, internal, gauss_next = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal), gauss_next))
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def amp_setup(cfg: TrainConfig, device: torch.device):
    """(autocast context factory, GradScaler): no-op objects unless AMP runs on CUDA."""
    use = cfg.amp and device.type == "cuda"
    choice = cfg.amp_dtype
    if choice == "auto":
        dtype = torch.bfloat16 if use and torch.cuda.is_bf16_supported() else torch.float16
    else:  # fp16 on any GPU (the released scripts' torch.cuda.amp.autocast()), or bf16 as asked
        dtype = torch.float16 if choice == "fp16" else torch.bfloat16
    scaler = torch.amp.GradScaler("cuda", enabled=use and dtype == torch.float16)
    if not use:
        return contextlib.nullcontext, scaler, None
    return (lambda: torch.autocast("cuda", dtype=dtype)), scaler, dtype


# CPUs whose torch kernels are at least 256 bits wide: oneDNN's NHWC convolutions pay there (a 2-core AVX2
# distillation step 912 -> 714 ms); on narrower ones they cost (kernels capped to AVX: 1250 -> 1726 ms)
NHWC_CPU_CAPABILITIES = ("AVX2", "AVX512")


def use_channels_last(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether this run trains in NHWC: ``cfg.channels_last`` where NHWC is the fast layout (CUDA, and a CPU
    whose torch kernels are AVX2 or wider: ``benchmarks/cpu_train.py``), NCHW elsewhere."""
    if not cfg.channels_last:
        return False
    return device.type == "cuda" or torch.backends.cpu.get_cpu_capability() in NHWC_CPU_CAPABILITIES


# ---------------------------------------------------------------- data
@dataclass
class TrainData:
    """What a run trains and validates on: data set facts, the two readers, the eval size.

    ``batches`` optionally replaces the standard loader with another batch source, called as
    ``batches(cfg, start_step, rank, world)`` and yielding ``(images, labels)`` for every step
    from ``start_step`` (e.g. benchmarks/camvid.py keeps the decoded set on the GPU).
    """

    info: Any
    train: Any
    val: Any
    eval_size: tuple[int, int] | None
    batches: Callable[..., Iterable] | None = None
    notes: list[str] = field(default_factory=list)  # warnings about the data the trainer prints before it starts


def build_data(cfg: TrainConfig) -> TrainData:
    """The readers of the data set ``cfg`` names (through ``open_split``), each split checked."""

    info = dataset_info(cfg.dataset)
    spec = cfg.data_spec()
    eval_size = tuple(cfg.eval_size) if cfg.eval_size else info.default_eval_size()  # None: each image whole
    tr, va = open_split(spec, "train"), open_split(spec, "val")
    sizes = check_reader(tr, f"{cfg.data or cfg.dataset} (train split)", info.num_classes)
    check_reader(va, f"{cfg.data or cfg.dataset} (val split)", info.num_classes)
    warning = crop_warning(cfg, sizes)
    return TrainData(info, tr, va, eval_size, notes=[warning] if warning else [])


def crop_warning(cfg: TrainConfig, sizes: list[tuple[int, int]]) -> str | None:
    """A warning with the figures when even the largest scale of the largest image seen cannot fill the crop:
    every sample would be mostly padding, and a step at that size can take minutes on a CPU."""
    h, w = max(s[0] for s in sizes), max(s[1] for s in sizes)
    big_h, big_w = int(h * cfg.scale_max), int(w * cfg.scale_max)
    ch, cw = cfg.crop
    if ch > big_h or cw > big_w:
        return (f"--crop {ch}x{cw} is larger than the training images ({h}x{w}, {big_h}x{big_w} at the largest "
                f"scale {cfg.scale_max:g}): every crop is mostly padding and each step slower for it. "
                f"Use at most {big_h}x{big_w}, e.g. --crop {min(ch, h)}x{min(cw, w)}")
    return None


# ---------------------------------------------------------------- models
def build_model(cfg: TrainConfig, num_classes: int, init: bool = False) -> nn.Module:
    """The trained model; with ``init`` its backbone starts from ``cfg.pretrained`` (``model.init_report`` says how),
    or, without pretrained weights and with ``cfg.init == "release"``, from the release's random init (models.init)."""

    model = create_model(cfg.model, num_classes=num_classes, aux=student_aux(cfg),
                         pretrained=cfg.pretrained if init else None, **cfg.model_kwargs)
    if init and getattr(model, "init_report", None) is not None and not cfg.pretrained_partial:
        check_coverage(model.init_report)  # nothing starts from (mostly) random weights unless asked to
    if init and cfg.init == "release" and is_none(cfg.pretrained):  # only a random start is re-drawn
        release_init(model)
    return model


def load_teacher(path: str | Path, num_classes: int, need_aux: bool, device: torch.device) -> tuple[nn.Module, dict]:
    """The frozen teacher (eval, no grad); CheckpointError for a wrong class count or no aux head."""

    model, ckpt = model_from_checkpoint(path)
    if model.num_classes != num_classes:
        raise CheckpointError(f"{path}: teacher predicts {model.num_classes} classes but the data set has {num_classes}; "
                              "use a teacher trained on this data set (`rdd-edge train-teacher --dataset ...`)")
    if need_aux and not model.has_aux:
        raise CheckpointError(f"{path}: teacher {ckpt['model_name']} has no aux head, which TFE-RDD needs; "
                              "use a teacher trained with an aux head or pass --tfe-fraction 0")
    model.eval().requires_grad_(False)
    return model.to(device), ckpt


def run_normalization(cfg: TrainConfig, report: Any) -> Any:
    """The input normalisation of the trained model: ``cfg.normalization`` if set (a resumed run has it),
    else the one its initial weights expect (``--pretrained``), else the default."""

    return normalization_for(report, cfg.normalization)


# ---------------------------------------------------------------- one step
def step_losses(s_out: dict, t_out: dict | None, labels: torch.Tensor, rdd, kd) -> tuple[torch.Tensor, dict]:
    """Total loss = (RDD-weighted or plain) task loss (+ aux) + KD; parts as detached tensors."""
    task, stats = rdd.task_loss(s_out, t_out, labels)
    kd_term = kd(s_out, t_out) if (kd is not None and t_out is not None) else torch.zeros((), device=task.device)
    total = task + kd_term
    selected = stats.get("selected", torch.ones((), device=task.device))
    return total, {"task": task.detach(), "kd": kd_term.detach(), "selected": torch.as_tensor(selected, device=task.device).float()}


class NonFiniteLoss(TrainingError):
    """The loss of a step was NaN or infinite: ``iteration`` (1-based) and the loss ``value`` when known."""

    def __init__(self, message: str, iteration: int | None = None, value: float | None = None):
        super().__init__(message)
        self.iteration, self.value = iteration, value


class NonFiniteGuard:
    """The NaN/inf guard of :func:`train_step`, kept on the device so that no step waits for it.

    ``record`` notes, with a few tiny device operations and no read-back, whether a step's
    (all-reduced, hence on every process the same) losses are finite, and keeps the first bad
    iteration and its loss in device tensors. ``check`` reads them (it waits for the device) and
    raises :class:`NonFiniteLoss` naming that iteration; the trainer calls it at every log point
    and before every checkpoint, so weights from after a non-finite step are never saved and every
    process stops at the same point. ``start``: the 0-based iteration of the first recorded step.
    """

    def __init__(self, start: int = 0):
        self.next = int(start)  # 0-based iteration of the next recorded step
        self.first: torch.Tensor | None = None  # int64, -1 while every loss was finite
        self.value: torch.Tensor | None = None  # the loss at ``first``

    def record(self, losses: torch.Tensor) -> None:
        """Note one step's ``[loss, task, kd, ...]`` (device tensor; nothing is read back)."""
        if self.first is None:
            self.first = torch.full((), -1, dtype=torch.int64, device=losses.device)
            self.value = torch.zeros((), dtype=losses.dtype, device=losses.device)
        fresh = ~torch.isfinite(losses[:3]).all() & (self.first < 0)
        self.value = torch.where(fresh, losses[0], self.value)
        self.first.masked_fill_(fresh, self.next)  # a Python number: passed to the kernel, no copy
        self.next += 1

    def check(self) -> None:
        """Raise :class:`NonFiniteLoss` if a recorded step was not finite (reads the device: a sync)."""
        if self.first is None:
            return
        first = int(self.first.item())
        if first >= 0:
            value = float(self.value.item())
            raise NonFiniteLoss(f"non-finite loss ({value}) at iteration {first + 1}", first + 1, value)


@dataclass
class StepContext:
    """Everything one optimiser step needs (see :func:`train_step`)."""

    model: nn.Module  # what runs forward: the student/teacher being trained, maybe DDP- or compile-wrapped
    params: list  # its parameters (for gradient clipping)
    teacher: nn.Module | None
    rdd: Any  # distill.rdd.RDDWeighting
    kd: Any  # distill.losses.KDLoss or None
    optimizer: torch.optim.Optimizer
    scaler: Any  # torch.amp.GradScaler (a no-op when disabled)
    autocast: Callable[[], Any]
    grad_clip: float = 0.0
    channels_last: bool = False
    guard: NonFiniteGuard = field(default_factory=NonFiniteGuard)  # read it with guard.check()
    teacher_input: Callable[[torch.Tensor], torch.Tensor] | None = None  # student input -> the teacher's normalisation
    amp_dtype: torch.dtype | None = None  # what ``autocast`` computes in (None: AMP off); for reports

    @property
    def want_features(self) -> bool:
        return bool(self.kd is not None and self.kd.needs_features)


def train_step(ctx: StepContext, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """One training step: teacher forward (no autograd), student forward, loss, NaN guard, backward, step.

    Returns ``[loss, task, kd, selected]`` averaged over processes (detached). Nothing here waits
    for the device: a non-finite loss on any process is recorded in ``ctx.guard`` (the same on
    every process), and ``ctx.guard.check()`` raises :class:`NonFiniteLoss` naming its iteration;
    the weights after such a step are not finite, so the caller checks before it saves any.
    The trainer and benchmarks/distill_speed.py both run this.
    """
    if ctx.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    feats = ctx.want_features
    with ctx.autocast():
        t_out = None
        if ctx.teacher is not None:
            with torch.inference_mode():
                t_images = images
                if ctx.teacher_input is not None:  # the teacher was trained on another normalisation: give it its own
                    t_images = ctx.teacher_input(images)
                    if ctx.channels_last:
                        t_images = t_images.contiguous(memory_format=torch.channels_last)
                t_out = ctx.teacher(t_images, features=feats)
        s_out = ctx.model(images, features=feats) if feats else ctx.model(images)
        loss, parts = step_losses(s_out, t_out, labels, ctx.rdd, ctx.kd)
    # NaN guard: one small all-reduce (so every process records the same), kept on the device
    now = torch.stack([loss.detach().float(), parts["task"].float(), parts["kd"].float(), parts["selected"]])
    dist.all_reduce_sum(now)
    now /= dist.world_size()
    ctx.guard.record(now)
    ctx.optimizer.zero_grad(set_to_none=True)
    ctx.scaler.scale(loss).backward()
    if ctx.grad_clip > 0:
        ctx.scaler.unscale_(ctx.optimizer)
        nn.utils.clip_grad_norm_(ctx.params, ctx.grad_clip)
    ctx.scaler.step(ctx.optimizer)
    ctx.scaler.update()
    return now


def build_step_context(cfg: TrainConfig, student: nn.Module, teacher: nn.Module | None = None, *, ignore_index: int = 255,
                       teacher_input: Callable[[torch.Tensor], torch.Tensor] | None = None, start: int = 0) -> StepContext:
    """The optimiser step ``cfg`` trains ``student`` with (on its device), distilling from the frozen ``teacher``.

    The one place the step is put together, for the trainer, benchmarks/distill_speed.py and the
    tests alike: both models in channels_last where it pays (:func:`use_channels_last`); across processes the student
    with SyncBN (CUDA only) inside DDP; ``torch.compile`` (``cfg.compile``); RDD weighting; the KD
    term bound to both models (its trainable parts DDP-wrapped like the student); SGD over the
    student's and the KD term's parameters; AMP. ``student`` is changed in place and stays the
    unwrapped model (what is validated and saved); ``ctx.model`` is what runs forward.
    ``teacher_input``: turns the student's input into the teacher's normalisation (None: the same).
    ``start``: the 0-based iteration of the first step, which the NaN guard counts from.
    """

    device, world = next(student.parameters()).device, dist.world_size()
    nhwc = use_channels_last(cfg, device)
    if nhwc:
        student.to(memory_format=torch.channels_last)
        if teacher is not None:
            teacher.to(memory_format=torch.channels_last)
    model: nn.Module = student

    def ddp(m: nn.Module) -> nn.Module:
        return nn.parallel.DistributedDataParallel(m, device_ids=[device.index] if device.type == "cuda" else None)

    if world > 1:
        if device.type == "cuda":  # SyncBN: BN statistics over the global batch (torch: CUDA only); in place
            nn.SyncBatchNorm.convert_sync_batchnorm(student)
        elif dist.is_main() and not cfg.freeze_bn:
            print("note: SyncBatchNorm needs CUDA; CPU processes normalise with per-process batch statistics")
        model = ddp(student)
    if cfg.compile:
        model = torch.compile(model)

    rdd = RDDWeighting(enabled=cfg.mode == "distill" and cfg.rdd, tfe_fraction=cfg.tfe_fraction,
                       threshold=cfg.rdd_threshold, mode=cfg.rdd_mode, confidence=cfg.confidence,
                       min_kept=cfg.rdd_min_kept, class_weights=resolve_class_weights(cfg.rdd_class_weights, student.num_classes),
                       ignore_index=ignore_index, aux_weight=cfg.aux_weight, tfe_average=cfg.tfe_average,
                       tfe_kl=cfg.tfe_kl, align_corners=cfg.align_corners)
    kd = build_kd_loss(cfg.method, cfg.kd_weight, cfg.kd_options) if cfg.mode == "distill" else None
    if kd is not None and teacher is not None:
        kd.bind(student, teacher)  # the KD term's own trainable parts (cwd: 1x1 connector), sized for these models
        if world > 1:  # their gradients are averaged across processes like the student's
            kd.distribute(ddp)
    # the KD term's parameters, if any, train with the student's
    params = list(student.parameters()) + (kd.parameters() if kd is not None else [])
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    autocast, scaler, amp_dtype = amp_setup(cfg, device)
    return StepContext(model, params, teacher, rdd, kd, optimizer, scaler, autocast, cfg.grad_clip,
                       channels_last=nhwc, guard=NonFiniteGuard(start), teacher_input=teacher_input,
                       amp_dtype=amp_dtype)


# ---------------------------------------------------------------- logging
class RunLogger:
    """CSV files (train / val) and TensorBoard, on the main process only; resumed runs append."""

    def __init__(self, run_dir: Path, start_step: int, tensorboard: bool, enabled: bool):
        self.enabled = enabled
        self.tb = None
        if not enabled:
            return
        self.train_csv = run_dir / "train_log.csv"
        self.val_csv = run_dir / "val_log.csv"
        for path, fields in ((self.train_csv, TRAIN_LOG_FIELDS), (self.val_csv, VAL_LOG_FIELDS)):
            _truncate_csv(path, fields, start_step)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # lazy: optional at run time (CSV logs alone without it)

                self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=start_step + 1 if start_step else None)
            except ImportError:  # tensorboard not installed: CSV only
                self.tb = None

    def _row(self, path: Path, fields: list[str], row: dict) -> None:
        with open(path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=fields).writerow({k: row.get(k, "") for k in fields})

    def train(self, row: dict) -> None:
        if not self.enabled:
            return
        self._row(self.train_csv, TRAIN_LOG_FIELDS, row)
        if self.tb:
            for k in ("lr", "loss", "task", "kd", "selected", "it_per_s", "data_share"):
                self.tb.add_scalar(f"train/{k}", row[k], row["step"])

    def val(self, row: dict) -> None:
        if not self.enabled:
            return
        self._row(self.val_csv, VAL_LOG_FIELDS, row)
        if self.tb:
            for k in ("miou", "pixel_acc", "mean_class_acc"):
                self.tb.add_scalar(f"val/{k}", row[k], row["step"])

    def close(self) -> None:
        if self.tb:
            self.tb.close()


def _truncate_csv(path: Path, fields: list[str], start_step: int) -> None:
    """Keep the header and rows up to ``start_step`` (a resumed run rewrites what came after)."""
    rows = []
    if start_step and path.is_file():
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("step", "").isdigit() and int(r["step"]) <= start_step]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def _progress(enabled: bool, total: int, start: int, console: Any = None):
    """Two progress lines that fit 80 columns: state (``train`` / ``val`` while validating), bar, i/N,
    smoothed it/s and ETA; below it the loss parts, the RDD stage's selected share and the last mIoU.
    ``None, None`` when disabled."""
    if not enabled:
        return None, None

    class TrainProgress(Progress):
        def get_renderables(self):  # noqa: ANN202
            yield self.make_tasks_table(self.tasks)
            for t in self.tasks:
                yield Text("      " + t.fields.get("info", ""), overflow="ellipsis", no_wrap=True)

    prog = TrainProgress(TextColumn("[bold]{task.description:<5}"), BarColumn(bar_width=24), MofNCompleteColumn(),
                         TextColumn("{task.fields[speed]}"), TextColumn("ETA"), TimeRemainingColumn(), console=console)
    task = prog.add_task("train", total=total, completed=start, speed="", info="")
    return prog, task


def progress_info(avg: list[float], stage: str | None, last_miou: float | None, data_share: float | None = None) -> str:
    """The loss parts for the progress line: ``loss 1.234 task 1.1 kd 0.13 tse 12% mIoU 31.2 data 62%``.

    ``data_share``: the share of the time spent waiting for batches; past one half the line says
    ``data-bound`` (more ``--workers`` or faster storage would speed training up)."""
    txt = f"loss {avg[0]:.3f}"
    if avg[2]:
        txt += f" task {avg[1]:.2f} kd {avg[2]:.2f}"
    if stage:
        txt += f" {stage} {avg[3]:.0%}"
    if last_miou is not None:
        txt += f" mIoU {100 * last_miou:.1f}"
    if data_share is not None:
        txt += f" {'data-bound' if data_share > 0.5 else 'data'} {data_share:.0%}"
    return txt


class BatchFeed:
    """The batches of ``source`` on the training device (``to_device``), timing the wait for each.

    ``waited`` adds up the wall time the loop spends getting its next batch: the loader (waiting
    for its workers, or loading in this process with none), the copy to the device and queuing
    the device-side augmentation. None of it waits for the GPU, so the wall time between two log
    points minus ``waited`` is the time the step kept the loop busy (on CUDA: the GPU, once the
    launch queue is full), with no synchronisation per iteration.
    """

    def __init__(self, source: Iterable, to_device: Callable[[Any], tuple[torch.Tensor, torch.Tensor]]):
        self.source, self.to_device, self.waited = source, to_device, 0.0
        self._batches: Any = None

    def __iter__(self):
        self._batches = self._feed()
        return self._batches

    def _feed(self):
        batches = iter(self.source)
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                return
            batch = self.to_device(batch)
            self.waited += time.perf_counter() - t0
            yield batch

    def close(self) -> None:
        """Stop the source now (a loader's worker processes too), also in the middle of a run."""
        if self._batches is not None:
            self._batches.close()
        close_loader(self.source)

    def take(self) -> float:
        """Seconds waited since the last ``take`` (and start again from zero)."""
        waited, self.waited = self.waited, 0.0
        return waited


# ---------------------------------------------------------------- CPU threads
def fit_threads(world: int = 1) -> int:
    """Compute threads for a CPU run: the CPUs this process really has (affinity and container quota) shared by
    the processes of this node, unless OMP_NUM_THREADS says otherwise. torch's default counts the host's
    cores, so a 2-CPU container on a 16-core host ran 16 threads on 2 CPUs."""


    if not os.environ.get("OMP_NUM_THREADS"):
        local = int(os.environ.get("LOCAL_WORLD_SIZE") or world or 1)
        want = max(1, available_cpus() // max(1, local))
        if torch.get_num_threads() > want:  # never above torch's default (physical cores: SMT siblings slow it)
            torch.set_num_threads(want)
    return torch.get_num_threads()


# ---------------------------------------------------------------- resuming
_NOT_RECIPE = {"name", "runs_root", "device", "tensorboard", "workers", "pretrained_report", "teacher", "data"}


def resume_changes(saved: dict, cfg: TrainConfig, step: int, rdd: Any) -> list[str]:
    """What a resume with other options changes from the run's own recipe, in the user's terms.

    The LR and RDD schedules are functions of ``--iters``: a new value moves both from here on."""
    notes = []
    old_iters = int(saved.get("iters", cfg.iters))
    if old_iters != cfg.iters:
        was, now = poly_lr(cfg.lr, step, old_iters, cfg.poly_power), poly_lr(cfg.lr, step, cfg.iters, cfg.poly_power)
        notes.append(f"--iters {old_iters} -> {cfg.iters}: the poly LR at iteration {step} is {now:.3g} "
                     f"instead of {was:.3g} and reaches 0 at iteration {cfg.iters}")
        if rdd.enabled:
            b_old, b_new = rdd.tfe_iters(old_iters), rdd.tfe_iters(cfg.iters)
            if b_old != b_new:
                back = " (this run goes back to TFE)" if b_old <= step < b_new else ""
                notes.append(f"RDD's TFE stage ends at iteration {b_new} instead of {b_old}{back}")
    for key, new in cfg.as_dict().items():
        if key in _NOT_RECIPE or key == "iters" or key not in saved:
            continue
        old = saved[key]
        if isinstance(new, tuple):
            new = list(new)
        if old != new:
            notes.append(f"{key} {old} -> {new}")
    return notes


# ---------------------------------------------------------------- the trainer
def train(cfg: TrainConfig, resume: str | Path | None = None, stop_after: int | None = None,
          data: TrainData | None = None, run_dir: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Run one training (teacher or distillation) to ``cfg.iters`` steps; returns a summary dict.

    The training stage's entry point (the CLI, the pipeline and the benchmarks call it).
    ``resume``: a ``last.pt`` (or run folder) to continue exactly from. ``stop_after``: stop
    (saving last.pt) after this many steps in total, e.g. to split a long job. ``data``: a
    :class:`TrainData` instead of the data set ``cfg`` names (tests, benchmarks). ``run_dir``:
    write there instead of a new ``runs/<mode>-<name>`` folder.
    """
    device, rank, world, main = setup_processes(cfg)
    resumed = read_resume(cfg, resume)  # read and checked before anything else is built
    start = int(resumed["step"]) if resumed is not None else 0
    held = contextlib.ExitStack()  # the run folder's lock, held to the end
    if resumed is not None:
        run_dir = Path(resumed["path"]).parent
        if main:  # a second resume of this run is refused at once, not after minutes of setup
            held.enter_context(folder_lock(run_dir, "training"))
    try:
        data = data if data is not None else build_data(cfg)  # a bad data folder fails before any model is built
        if main:
            for note in data.notes:
                print(f"warning: {note}", flush=True)
        models = build_models(cfg, data.info.num_classes, device, init=resumed is None)
        ctx = build_step_context(cfg, models.trained, models.teacher, ignore_index=data.info.ignore_index,
                                 teacher_input=models.teacher_input(), start=start)
        if resumed is not None and main:
            for note in resume_changes(resumed.get("config") or {}, cfg, start, ctx.rdd):
                print(f"resume: {note}", flush=True)
        run_dir = open_run_dir(cfg, run_dir, main)
        saver = Checkpoints(cfg, run_dir, models, ctx, data.info, world=world, main=main)
        if resumed is not None:
            saver.restore(resumed)
        torch.manual_seed(cfg.seed + 1000 * rank)  # per-process stream (dropout) from here on
        feed, val_loader, workers = open_loaders(cfg, data, models.norm, device, start, rank, world)
        logger = RunLogger(run_dir, start, cfg.tensorboard, main)
        if resumed is not None and resumed.get("rng"):
            states = resumed["rng"]
            set_rng_state(states[rank] if rank < len(states) else states[0])
    except BaseException:
        held.close()
        raise
    t_start = time.perf_counter()
    try:
        if main:  # one training per run folder; what a killed save left behind goes
            if resumed is None:
                held.enter_context(folder_lock(run_dir, "training"))
            remove_temp_files(run_dir)
        steps, last_miou = train_steps(cfg, ctx, models.trained, feed, val_loader, logger, saver, start=start,
                                       stop_after=stop_after, progress=progress and main)
    finally:
        logger.close()
        feed.close()
        close_loader(val_loader)
        held.close()
    return summarize(cfg, models, ctx, saver, steps=steps, last_miou=last_miou, elapsed=time.perf_counter() - t_start,
                     workers=workers)


# ---------------------------------------------------------------- setting up
def setup_processes(cfg: TrainConfig) -> tuple[torch.device, int, int, bool]:
    """Join the process group torchrun set up (if any) and prepare this process's device: (device, rank, world, main).

    The global batch must split evenly across processes. A CPU run gets the threads its CPUs allow;
    CUDA gets cuDNN's autotuner and TF32."""
    world = dist.env_world_size()
    if cfg.batch % world:
        raise ConfigError(f"--batch {cfg.batch} does not divide across {world} processes; "
                          f"use a multiple of {world} (the global batch is split evenly)")
    device = dist.init_distributed(cfg.device)
    rank, world, main = dist.rank(), dist.world_size(), dist.is_main()
    if device.type == "cpu":
        fit_threads(world)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device, rank, world, main


def read_resume(cfg: TrainConfig, resume: str | Path | None) -> dict | None:
    """The checkpoint ``resume`` names (a ``last.pt`` or its run folder), read and validated; None without one.

    Refused with the file named: a checkpoint without training state, and ``cfg.iters`` not past
    the iterations it has trained."""
    if resume is None:
        return None

    path = resolve_checkpoint(resume, prefer="last.pt")
    ckpt = load_checkpoint(path)
    if "optimizer" not in ckpt or "step" not in ckpt:
        raise CheckpointError(f"{path}: holds no training state (optimizer / step) to resume from; "
                              "resume from a last.pt written by rdd-edge training")
    if cfg.iters <= int(ckpt["step"]):
        raise ConfigError(f"--iters {cfg.iters}: {path} has already trained {int(ckpt['step'])} iterations; "
                          f"resume with more than that to continue (its own schedule: --iters "
                          f"{(ckpt.get('config') or {}).get('iters', '?')})")
    return ckpt


@dataclass
class Models:
    """The networks of one run, each with the input normalisation its weights expect."""

    trained: nn.Module  # the trained model, unwrapped: what is validated and saved
    norm: Any  # rdd_edge.normalize.Normalization of ``trained``
    teacher: nn.Module | None = None  # frozen (distillation only)
    teacher_path: Path | None = None
    teacher_norm: Any = None

    def teacher_input(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """Turns the trained model's input into the teacher's normalisation (None without a teacher)."""
        return renormalizer(self.norm, self.teacher_norm) if self.teacher_norm is not None else None


def build_models(cfg: TrainConfig, num_classes: int, device: torch.device, init: bool = True) -> Models:
    """The frozen teacher (when distilling with KD or RDD) and the trained model, on ``device``.

    With ``init`` (not when resuming: last.pt holds the weights) the trained model's backbone starts
    from ``cfg.pretrained``, which also decides its input normalisation. ``cfg`` records the
    teacher's path, ``pretrained_report`` and ``normalization``. The same seed on every process
    gives every process the same initial weights (DDP also broadcasts rank 0's)."""
    teacher, teacher_path, teacher_norm = None, None, None
    if cfg.mode == "distill" and (cfg.method != "none" or cfg.rdd):  # the student alone needs no teacher

        needs_aux = cfg.rdd and (cfg.tfe_fraction > 0 or student_aux(cfg))
        teacher_path = resolve_checkpoint(cfg.teacher) if cfg.teacher else default_teacher(cfg.runs_root)
        teacher, teacher_ckpt = load_teacher(teacher_path, num_classes, needs_aux, device)
        teacher_norm = recorded_normalization(teacher_ckpt)
        cfg.teacher = str(teacher_path)
    torch.manual_seed(cfg.seed)
    trained = build_model(cfg, num_classes, init=init).to(device)
    if init:
        cfg.pretrained_report = trained.init_report.as_dict() if trained.init_report is not None else None
    norm = run_normalization(cfg, trained.init_report)
    cfg.normalization = norm.name
    if dist.is_main():
        if trained.init_report is not None:
            print(trained.init_report.line(), flush=True)
        if teacher_norm is not None and teacher_norm != norm:
            print(f"input: the student gets {norm.describe()}; the teacher its own, {teacher_norm.describe()}", flush=True)
    return Models(trained, norm, teacher, teacher_path, teacher_norm)


def open_run_dir(cfg: TrainConfig, run_dir: str | Path | None, main: bool) -> Path:
    """The run folder (``run_dir``, else a new ``runs/<stage>-<name>``) with ``config.json``, made by the main
    process; every process gets its path."""
    if main:
        if run_dir is None:
            run_dir = new_run_dir(cfg.stage, cfg.name, root=cfg.runs_root)
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "config.json", cfg.as_dict())
    return Path(dist.broadcast_object(str(run_dir) if run_dir is not None else None))


def open_loaders(cfg: TrainConfig, data: TrainData, norm: Any, device: torch.device, start: int, rank: int,
                 world: int) -> tuple[BatchFeed, Any, int]:
    """This process's training batches on ``device`` from iteration ``start``, its val loader, and the worker count.

    On CUDA the loader only decodes (pinned, persistent workers) and the GPU scales, crops, flips and
    normalises; ``--workers auto`` counts the CPUs per process (none on a CPU when the data set is in
    memory, as the synthetic one is)."""
    on_gpu = device.type == "cuda"
    workers = resolve_workers(cfg.workers, device.type, in_memory=bool(getattr(data.train, "in_memory", False)))
    augment_on_device = on_gpu and data.batches is None
    if data.batches is not None:
        source = data.batches(cfg, start, rank, world)
    else:
        source = train_loader(data.train, cfg, norm, start, rank, world, workers, device_augment=augment_on_device,
                              pin_memory=on_gpu)

    def to_device(batch) -> tuple[torch.Tensor, torch.Tensor]:
        if augment_on_device:
            return device_batch(batch, device, cfg.crop, norm)
        return batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)

    feed = BatchFeed(source, to_device)
    val_loader = eval_loader(data.val, norm, data.eval_size, rank, world, batch=max(1, cfg.batch // world),
                             workers=workers, persistent=True)
    return feed, val_loader, workers


# ---------------------------------------------------------------- checkpoints
class Checkpoints:
    """``last.pt`` and ``best.pt`` of one run, written by the main process, and what they hold.

    ``best.pt`` holds weights and metadata only; ``last.pt`` the full training state (optimiser,
    scaler, the RNG states of all processes, RDD stage, KD term) to resume from. Nothing is saved
    after a non-finite step (the NaN guard is read first) or with inf/NaN weights, a failed save
    keeps the previous file, and every such error says what ``last.pt`` still holds (:meth:`kept_note`).
    """

    def __init__(self, cfg: TrainConfig, run_dir: Path, models: Models, ctx: StepContext, info: Any, *,
                 world: int, main: bool):
        self.cfg, self.run_dir, self.models, self.ctx, self.info = cfg, run_dir, models, ctx, info
        self.world, self.main = world, main
        self.best_miou: float | None = None
        self.last_saved: int | None = None  # the iteration last.pt holds; None: this run has not saved one yet

    def restore(self, ckpt: dict) -> None:
        """Continue from ``ckpt`` (a last.pt, see :func:`read_resume`): weights, KD term, optimiser, scaler, best mIoU."""

        load_weights(self.models.trained, ckpt["state_dict"], name=ckpt["path"])
        if self.ctx.kd is not None:
            self.ctx.kd.load_state_dict(ckpt.get("kd_state"))
        self.ctx.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            self.ctx.scaler.load_state_dict(ckpt["scaler"])
        self.best_miou, self.last_saved = ckpt.get("best_miou"), int(ckpt["step"])

    def kept_note(self) -> str:
        """What a stop now leaves to resume from, for the error that stops it."""
        if self.last_saved is None:
            return "no checkpoint of this run exists yet"
        return f"{self.run_dir / 'last.pt'} keeps iteration {self.last_saved}"

    def check_finite(self, step: int) -> None:
        """TrainingError naming the first iteration whose loss was not finite, if one was (waits for the device)."""
        try:
            self.ctx.guard.check()
        except NonFiniteLoss as exc:
            raise TrainingError(
                f"non-finite loss ({exc.value}) at iteration {exc.iteration} of {self.cfg.iters} (found at iteration "
                f"{step}); stopped without saving, so {self.kept_note()}. Try a lower --lr, --no-amp, or check the data"
            ) from None

    def save(self, name: str, step: int, gather: bool = True) -> Path:
        """Save ``name`` (``last.pt``: the full state, with every process's RNG when ``gather``, a collective).
        Never after a non-finite step: the guard is read first."""
        self.check_finite(step)
        full = name == "last.pt"
        rngs = (dist.all_gather_object(rng_state()) if gather else [rng_state()]) if full else None
        path = self.run_dir / name
        if self.main:
            cfg, ctx, trained = self.cfg, self.ctx, self.models.trained
            bad = nonfinite_tensors(trained.state_dict())
            if bad:  # the loss can still be finite on the step that broke the weights (--lr too high)
                raise TrainingError(f"the weights hold inf/NaN after iteration {step} of {cfg.iters} ({len(bad)} tensors, "
                                    f"e.g. {bad[0]}); not saved, so {self.kept_note()}. Try a lower --lr or --grad-clip")
            state = dict(optimizer=ctx.optimizer.state_dict(), scaler=ctx.scaler.state_dict(), rng=rngs,
                         rdd_stage=ctx.rdd.current, world_size=self.world,
                         kd_state=ctx.kd.state_dict() if ctx.kd is not None else {}) if full else {}
            try:
                with deferred():  # a Ctrl-C now waits until the file is complete
                    save_checkpoint(path, trained, dataset=self.info, data=cfg.data_spec().as_dict(), config=cfg.as_dict(),
                                    step=step, best_miou=self.best_miou, normalization=self.models.norm.as_dict(), **state)
            except CheckpointError as exc:  # full disk, read-only folder: the previous files stay as they were
                raise TrainingError(f"{exc}; trained {step} of {cfg.iters} iterations, {self.kept_note()}. "
                                    f"Free space or make {self.run_dir} writable, then --resume {self.run_dir}") from None
        if full:
            self.last_saved = step
        return path

    def save_validated(self, step: int, miou: float) -> None:
        """After a validation: ``best.pt`` when ``miou`` is the best yet, then ``last.pt``; a stop request waits for
        both, so best.pt exists whenever last.pt records a best mIoU."""
        with deferred():
            if self.best_miou is None or miou > self.best_miou:
                self.best_miou = float(miou)
                self.save("best.pt", step)
            self.save("last.pt", step)

    def save_interrupted(self, step: int, start: int, exc: KeyboardInterrupt) -> None:
        """After Ctrl-C or SIGTERM: ``last.pt`` of the completed steps and one line saying so. No collectives (other
        processes may be gone); a second signal waits until the file is complete."""
        if self.main and step > start:
            with deferred():
                self.save("last.pt", step, gather=False)
                why = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
                print(f"{why} at iteration {step}; saved {self.run_dir / 'last.pt'} (resume with --resume {self.run_dir})",
                      flush=True)


# ---------------------------------------------------------------- the loop over steps
def train_steps(cfg: TrainConfig, ctx: StepContext, model: nn.Module, feed: BatchFeed, val_loader: Any, logger: RunLogger,
                saver: Checkpoints, *, start: int, stop_after: int | None, progress: bool) -> tuple[int, float | None]:
    """The loop over steps (torchvision's ``train_one_epoch``); returns (iterations trained, the last mIoU).

    Per batch: the LR (a pure function of the iteration) and the RDD stage, then :func:`train_step`;
    a stop request during the step lands after it, so the saved step count matches the weights.
    Every ``log_every`` steps a log row (the only reads from the device between checkpoints, the NaN
    guard's finding first), every ``val_every`` a validation with checkpoints, ``stop_after`` last.pt
    and the end. Ctrl-C or SIGTERM saves last.pt of the completed steps and is raised again."""
    meter, display = StepMeter(start, next(model.parameters()).device), TrainDisplay(progress, cfg.iters, start)
    step, last_miou = start, None
    set_train_mode(model, cfg.freeze_bn)
    try:
        with terminate_like_ctrl_c(), display, StepBoundary() as boundary:
            for images, labels in feed:  # the batch on the device; the wait for it is timed (feed.waited)
                it = step  # 0-based index of this iteration
                lr = poly_lr(cfg.lr, it, cfg.iters, cfg.poly_power)
                for group in ctx.optimizer.param_groups:
                    group["lr"] = lr
                stage = ctx.rdd.stage(it, cfg.iters) if cfg.mode == "distill" else None
                boundary.holding = True  # forward, loss, NaN guard (recorded on the device), backward, step
                meter.add(train_step(ctx, images, labels))
                step = it + 1
                boundary.release()  # a stop request that came during the step: KeyboardInterrupt / Terminated now
                if step % cfg.log_every == 0 or step == cfg.iters:
                    saver.check_finite(step)
                    row, avg = meter.row(step, lr, stage, feed.take())
                    logger.train(row)
                    display.logged(meter.smooth, progress_info(avg, stage, last_miou, row["data_share"]))
                display.at(step)
                if step % cfg.val_every == 0 or step == cfg.iters:
                    last_miou, seconds = validate_and_save(cfg, ctx, model, val_loader, logger, saver, display, step)
                    meter.pause(seconds)  # the next log row's speed and data share are training's
                elif stop_after is not None and step >= stop_after:
                    saver.save("last.pt", step)
                if stop_after is not None and step >= stop_after:
                    break
            saver.check_finite(step)  # a batch source that ended early
    except KeyboardInterrupt as exc:
        saver.save_interrupted(step, start, exc)
        raise
    return step, last_miou


def validate_and_save(cfg: TrainConfig, ctx: StepContext, model: nn.Module, val_loader: Any, logger: RunLogger,
                      saver: Checkpoints, display: "TrainDisplay", step: int) -> tuple[float, float]:
    """Validate at ``step``, then save best.pt (when better) and last.pt; (the mIoU, the seconds both took).

    The NaN guard is read first (never weights from after a non-finite step; the wait for the
    device's queued steps is training's time, not counted here). A validation that fails (e.g. a
    val image that cannot be read) saves last.pt before it raises: the trained steps stay."""
    saver.check_finite(step)
    t_val = time.perf_counter()
    display.state("val")
    try:
        metrics = validate(model, val_loader, ctx.autocast, logger, step, cfg.align_corners)
    except (RddError, OSError):
        saver.save("last.pt", step, gather=False)
        raise
    display.state("train")
    set_train_mode(model, cfg.freeze_bn)
    saver.save_validated(step, metrics.miou)
    return metrics.miou, time.perf_counter() - t_val


def validate(model: nn.Module, val_loader: Any, autocast: Callable[[], Any], logger: RunLogger, step: int,
             align_corners: bool = False) -> Any:
    """Score ``model`` on the val split (each process its shard, the counts summed) and log the row; the metrics."""
    metrics = evaluate(model, val_loader, model.num_classes, next(model.parameters()).device, autocast=autocast(),
                       align_corners=align_corners)
    logger.val({"step": step, "miou": metrics.miou, "pixel_acc": metrics.pixel_acc,
                "mean_class_acc": metrics.mean_class_acc, "images_per_s": metrics.images_per_s})
    return metrics


class StepMeter:
    """The loss parts of the steps since the last log row, summed on the device, and the clock behind a row's
    it/s, data share and time; only :meth:`row` reads the device."""

    def __init__(self, start: int, device: torch.device):
        self.parts = torch.zeros(4, device=device)  # loss, task, kd, selected
        self.t_start = self.t_last = time.perf_counter()
        self.last_logged = start
        self.smooth: float | None = None  # it/s smoothed over the rows (the progress line's)

    def add(self, parts: torch.Tensor) -> None:
        self.parts += parts

    def pause(self, seconds: float) -> None:
        """Leave ``seconds`` (a validation) out of the next row's speed and data share."""
        self.t_last += seconds

    def row(self, step: int, lr: float, stage: str | None, waited: float) -> tuple[dict, list[float]]:
        """The ``train_log.csv`` row of the steps since the last one (``waited``: seconds spent getting their
        batches) and their average loss parts; then starts over."""
        n = step - self.last_logged
        avg = (self.parts / max(n, 1)).tolist()
        elapsed = max(time.perf_counter() - self.t_last, 1e-9)  # after the read: the device's work is done
        speed = n / elapsed
        row = {"step": step, "lr": lr, "loss": avg[0], "task": avg[1], "kd": avg[2], "selected": avg[3],
               "stage": stage or "", "it_per_s": speed, "time_s": time.perf_counter() - self.t_start,
               "data_share": min(1.0, waited / elapsed)}
        self.smooth = speed if self.smooth is None else 0.7 * self.smooth + 0.3 * speed
        self.parts.zero_()
        self.t_last, self.last_logged = time.perf_counter(), step
        return row, avg


class TrainDisplay:
    """The progress lines of :func:`_progress` (main process, ``progress=True``); every method a no-op when off."""

    def __init__(self, enabled: bool, total: int, start: int):
        self.prog, self.task = _progress(enabled, total, start)

    def __enter__(self) -> "TrainDisplay":
        if self.prog is not None:
            self.prog.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.prog is not None:
            self.prog.__exit__(*exc)

    def logged(self, speed: float | None, info: str) -> None:
        """A log row's smoothed it/s and loss parts."""
        if self.prog is not None:
            self.prog.update(self.task, speed=f"{speed:.2f} it/s", info=info)

    def at(self, step: int) -> None:
        if self.prog is not None:
            self.prog.update(self.task, completed=step)

    def state(self, name: str) -> None:
        """``train`` or ``val``."""
        if self.prog is not None:
            self.prog.update(self.task, description=name)


# ---------------------------------------------------------------- finishing
def summarize(cfg: TrainConfig, models: Models, ctx: StepContext, saver: Checkpoints, *, steps: int,
              last_miou: float | None, elapsed: float, workers: int) -> dict[str, Any]:
    """The run's summary: returned, and written to ``summary.json`` by the main process."""
    run_dir = saver.run_dir
    summary = {"run_dir": str(run_dir), "mode": cfg.mode, "model": models.trained.model_name, "steps": steps,
               "best_miou": saver.best_miou, "last_miou": last_miou, "time_s": elapsed,
               "last": str(run_dir / "last.pt"), "best": str(run_dir / "best.pt"),
               "teacher": str(models.teacher_path) if models.teacher_path else None, "world_size": saver.world,
               "workers": workers, "normalization": models.norm.name,
               "teacher_normalization": models.teacher_norm.name if models.teacher_norm is not None else None,
               "amp": str(ctx.amp_dtype).replace("torch.", "") if ctx.amp_dtype else "off"}
    if saver.main:
        write_json(run_dir / "summary.json", summary)
    return summary
