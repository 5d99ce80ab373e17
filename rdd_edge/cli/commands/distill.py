"""Distill-stage commands: ``train-teacher``, ``distill``, ``eval``, ``difficulty``.

Options left unset keep the data set's preset (METHOD.md); ``--resume`` continues a run from its
``last.pt`` with the config stored there (options given explicitly still override, e.g. more
``--iters``). ``--gpus N`` re-launches the same command through torchrun with N processes.
The work happens in the distill stage (``distill.config.resolve_config``, ``distill.train.train``,
``distill.evaluate.evaluate_checkpoint``, ``distill.difficulty.run_difficulty``); this module
declares the options and prints the results.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from rdd_edge.cli.app import app
from rdd_edge.cli.commands.options import (DEFAULT_RUNS, MODEL_HELP, Data, Dataset, Device, EvalSize, Name, Quiet, Runs, Seed,
                                       TrustCheckpoint, checkpoint_trust)
from rdd_edge.errors import ConfigError
from rdd_edge.sizes import parse_hw

# lazy imports: the distill stage (torch) is imported inside the commands: `rdd-edge --help` stays fast and
# torch-free

# -- options shared by train-teacher and distill
Iters = Annotated[Optional[int], typer.Option("--iters", help="Total training iterations (default: data set preset).")]
Batch = Annotated[Optional[int], typer.Option("--batch", help="Global batch size, split across processes.")]
Lr = Annotated[Optional[float], typer.Option("--lr", help="Base learning rate (SGD, poly decay). Default 0.02.")]
Crop = Annotated[Optional[str], typer.Option("--crop", metavar="HxW", help="Training crop HxW, e.g. 360x360 (default: data set preset).")]
ValEvery = Annotated[Optional[int], typer.Option("--val-every", help="Validate and save checkpoints every N iterations.")]
LogEvery = Annotated[Optional[int], typer.Option("--log-every", help="Log a CSV/TensorBoard row every N iterations.")]
Amp = Annotated[Optional[bool], typer.Option("--amp/--no-amp", help="Mixed precision on CUDA (bf16 if supported, else fp16).")]
Compile = Annotated[bool, typer.Option("--compile", help="torch.compile the trained model.")]
def _gpus(value: int) -> int:
    if value < 1:  # 0 or fewer processes is no training at all, not one process
        raise ConfigError(f"--gpus {value}: processes to launch, at least 1 (1: this process alone, no torchrun)")
    return value


Gpus = Annotated[int, typer.Option("--gpus", callback=_gpus, help="Processes to launch through torchrun (one per GPU; with --device cpu: gloo).")]
Resume = Annotated[Optional[str], typer.Option("--resume", help="Continue a run exactly: its folder or a last.pt.")]
HeadChannels = Annotated[Optional[int], typer.Option("--head-channels", help="Width of the segmentation head (default: the model's).")]
Workers = Annotated[Optional[str], typer.Option("--workers", metavar="N|auto", help="DataLoader worker processes per training process; auto (default): on CUDA the CPUs per process less one (at most 12), on a CPU 2.")]
TrainImages = Annotated[Optional[int], typer.Option("--train-images", help="Synthetic only: number of generated train scenes.")]
ValImages = Annotated[Optional[int], typer.Option("--val-images", help="Synthetic only: number of generated val scenes.")]
StopAfter = Annotated[Optional[int], typer.Option("--stop-after", hidden=True, help="Stop (saving last.pt) after this many iterations.")]
Recipe = Annotated[Optional[str], typer.Option(
    "--recipe", metavar="release",
    help="Set at once every option the released scripts use (release: github.com/sunyueue/RDD, CIRKD at 91735ef); "
         "explicit options still win; prints the settings it changed. Default: none (the paper's variant).")]
Set = Annotated[Optional[list[str]], typer.Option("--set", help="Override any config value, e.g. --set weight_decay=5e-4 (repeatable).")]
Pretrained = Annotated[Optional[str], typer.Option(
    "--pretrained", metavar="imagenet|PATH|none",
    help="Backbone init: imagenet (timm's ImageNet weights; for the ResNet-18s it names the released file to download), "
         "PATH (a backbone state dict in the released code's or timm's key layout) or none (random). Default: imagenet "
         "for real data sets, none for synthetic. The weights decide the input normalisation (--set normalization=...).")]
PretrainedPartial = Annotated[bool, typer.Option(
    "--pretrained-partial", help="Train from --pretrained PATH even when it fills under half of the backbone (the rest random).")]
Checkpoint = Annotated[str, typer.Argument(metavar="CKPT_OR_RUN", help="Checkpoint file or run folder (its best.pt).")]


def _relaunch(gpus: int) -> None:
    """Run this same command line again under torchrun with ``gpus`` processes, then exit with its code."""
    args, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if a == "--gpus":
            skip = True
            continue
        if a.startswith("--gpus="):
            continue
        args.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={gpus}", "-m", "rdd_edge", *args]
    typer.echo(f"launching {gpus} processes: {' '.join(cmd[1:])}")
    raise typer.Exit(subprocess.call(cmd))


def _run_training(mode: str, resume: Optional[str], gpus: int, stop_after: Optional[int], quiet: bool,
                  sets: Optional[list[str]], dataset: Optional[str], trust: bool = False, **opts) -> None:
    """Resolve the config (preset, resume, options, --set), train, print the results table."""
    if gpus > 1 and "RANK" not in os.environ:
        _relaunch(gpus)
    from rdd_edge.distill import dist
    from rdd_edge.distill.config import resolve_config
    from rdd_edge.distill.train import train

    with checkpoint_trust(trust):
        cfg = resolve_config(mode, resume=resume, dataset=dataset, sets=sets, **opts)
        if cfg.recipe and not resume and dist.is_main():
            typer.echo(f"recipe {cfg.recipe}: {len(cfg.recipe_changes)} settings changed")
            for line in cfg.recipe_changes:
                typer.echo(f"  {line}")
        summary = train(cfg, resume=resume, stop_after=stop_after, progress=not quiet)
    if dist.is_main():
        _print_summary(summary)
    dist.cleanup()


def _print_summary(s: dict) -> None:
    t = Table(title=f"{s['mode']} run finished", show_header=False)
    t.add_row("model", s["model"])
    if s.get("teacher"):
        t.add_row("teacher", s["teacher"])
    t.add_row("iterations", str(s["steps"]))
    t.add_row("best mIoU", "-" if s["best_miou"] is None else f"{100 * s['best_miou']:.2f}")
    t.add_row("last mIoU", "-" if s["last_miou"] is None else f"{100 * s['last_miou']:.2f}")
    t.add_row("time", f"{s['time_s']:.1f} s ({s['world_size']} process(es), AMP {s['amp']})")
    t.add_row("checkpoints", f"{s['best']}\n{s['last']}")
    Console().print(t)


def _list_methods(value: bool) -> None:
    """``--list-methods``: the KD methods the registry holds, with their weights and options."""
    if not value:
        return
    from rdd_edge.distill.losses import kd_methods

    t = Table(title="KD methods (--method; none = no KD term)")
    for col in ("method", "weight", "options (--kd-option K=V)", "what"):
        t.add_column(col)
    for m in kd_methods().values():
        t.add_row(m.name, f"{m.weight:g}", ", ".join(f"{k}={v}" for k, v in m.params.items()) or "-", m.summary)
    Console().print(t)
    raise typer.Exit()


def _kd_options(items: Optional[list[str]]) -> dict | None:
    """``["T=2", "stages=[2,3]"]`` -> ``{"T": 2, "stages": [2, 3]}`` (values read as JSON where possible)."""
    if not items:
        return None
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--kd-option {item!r}: expected KEY=VALUE, e.g. --kd-option T=2")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def _class_weights(text: Optional[str]):
    """``--rdd-class-weights`` text -> the config value (None when not given)."""
    from rdd_edge.distill.rdd import parse_class_weights

    return parse_class_weights(text)


@app.command("train-teacher")
def train_teacher(
    dataset: Dataset = None, data: Data = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Teacher model name (default deeplabv3_r101, with aux head).")] = None,
    iters: Iters = None, batch: Batch = None, lr: Lr = None, crop: Crop = None, eval_size: EvalSize = None,
    val_every: ValEvery = None, log_every: LogEvery = None, amp: Amp = None, compile: Compile = False, gpus: Gpus = 1,
    device: Device = None, name: Name = None, resume: Resume = None, seed: Seed = None, head_channels: HeadChannels = None,
    workers: Workers = None, train_images: TrainImages = None, val_images: ValImages = None, runs: Runs = DEFAULT_RUNS,
    stop_after: StopAfter = None, sets: Set = None, quiet: Quiet = False, trust_checkpoint: TrustCheckpoint = False,
    pretrained: Pretrained = None, recipe: Recipe = None,
    pretrained_partial: PretrainedPartial = False,
) -> None:
    """Train the teacher (DeepLabV3-R101 with an aux head by default) on a data set."""
    _run_training("teacher", resume, gpus, stop_after, quiet, sets, dataset, trust_checkpoint, data=data, model=model,
                  pretrained=pretrained, pretrained_partial=pretrained_partial or None,
                  iters=iters, batch=batch, lr=lr, crop=crop, eval_size=eval_size, val_every=val_every, log_every=log_every,
                  amp=amp, compile=compile or None, device=device, name=name, seed=seed, head_channels=head_channels,
                  workers=workers, synthetic_train=train_images, synthetic_val=val_images, runs_root=str(runs),
                  recipe=recipe)


@app.command("distill")
def distill_cmd(
    student: Annotated[Optional[str], typer.Option("--student", help=f"Student model, {MODEL_HELP} (default: mbv2).")] = None,
    teacher: Annotated[Optional[str], typer.Option("--teacher", help="Teacher checkpoint or run folder (default: latest teacher run's best.pt).")] = None,
    method: Annotated[Optional[str], typer.Option("--method", help="KD loss added to the task loss (default kd; none for none); --list-methods shows them all.")] = None,
    kd_weight: Annotated[Optional[float], typer.Option("--kd-weight", help="Weight of the KD term (default: the method's).")] = None,
    kd_option: Annotated[Optional[list[str]], typer.Option("--kd-option", help="A KD hyperparameter KEY=VALUE, e.g. T=2 (repeatable).")] = None,
    list_methods: Annotated[Optional[bool], typer.Option("--list-methods", callback=_list_methods, is_eager=True, help="List the KD methods and exit.")] = None,
    rdd: Annotated[Optional[bool], typer.Option("--rdd/--no-rdd", help="Relative-difficulty weighting of the task loss (on by default).")] = None,
    rdd_mode: Annotated[Optional[str], typer.Option("--rdd-mode", help="TSE combination: xor (the method), or, and.")] = None,
    rdd_threshold: Annotated[Optional[float], typer.Option("--rdd-threshold", help="Confidence at or below which a pixel is hard (0.7).")] = None,
    tfe_fraction: Annotated[Optional[float], typer.Option("--tfe-fraction", help="Fraction of iterations in the TFE stage (0.1).")] = None,
    confidence: Annotated[Optional[str], typer.Option("--confidence", help="Pixel confidence: gt (prob. of the true class) or max.")] = None,
    rdd_min_kept: Annotated[Optional[int], typer.Option("--rdd-min-kept", help="TSE OHEM floor: at least N hard pixels per process batch (0 = off, default). The released runs: 100000 per process batch of 4 crops of 512x1024; scale it with the crops per process, e.g. 400000 for 16 crops on one process.")] = None,
    rdd_class_weights: Annotated[Optional[str], typer.Option("--rdd-class-weights", metavar="none|cityscapes|W1,W2,...", help="Class weights of the TSE loss: none (default), cityscapes (the released code's) or one number per class.")] = None,
    dataset: Dataset = None, data: Data = None,
    iters: Iters = None, batch: Batch = None, lr: Lr = None, crop: Crop = None, eval_size: EvalSize = None,
    val_every: ValEvery = None, log_every: LogEvery = None, amp: Amp = None, compile: Compile = False, gpus: Gpus = 1,
    device: Device = None, name: Name = None, resume: Resume = None, seed: Seed = None, head_channels: HeadChannels = None,
    workers: Workers = None, train_images: TrainImages = None, val_images: ValImages = None, runs: Runs = DEFAULT_RUNS,
    stop_after: StopAfter = None, sets: Set = None, quiet: Quiet = False, trust_checkpoint: TrustCheckpoint = False,
    pretrained: Annotated[Optional[str], typer.Option(
        "--pretrained", metavar="imagenet|PATH|none",
        help="The student's backbone init (the teacher is a trained checkpoint): imagenet, PATH (a backbone state dict, "
             "released or timm key layout) or none. Default: imagenet for real data sets, none for synthetic.")] = None,
    recipe: Recipe = None,
    pretrained_partial: PretrainedPartial = False,
) -> None:
    """Distill a student from a frozen teacher with a KD loss and RDD-weighted task loss."""
    _run_training("distill", resume, gpus, stop_after, quiet, sets, dataset, trust_checkpoint, data=data, model=student, teacher=teacher,
                  pretrained=pretrained, pretrained_partial=pretrained_partial or None,
                  method=method, kd_weight=kd_weight, kd_options=_kd_options(kd_option), rdd=rdd, rdd_mode=rdd_mode,
                  rdd_threshold=rdd_threshold, tfe_fraction=tfe_fraction, confidence=confidence,
                  rdd_min_kept=rdd_min_kept, rdd_class_weights=_class_weights(rdd_class_weights), iters=iters, batch=batch,
                  lr=lr, crop=crop, eval_size=eval_size, val_every=val_every, log_every=log_every, amp=amp,
                  compile=compile or None, device=device, name=name, seed=seed, head_channels=head_channels,
                  workers=workers, synthetic_train=train_images, synthetic_val=val_images, runs_root=str(runs),
                  recipe=recipe)


def _parse_scales(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ConfigError(f"--scales {text!r}: expected comma-separated numbers, e.g. 0.75,1,1.25") from None


@app.command("eval")
def eval_cmd(
    checkpoint: Checkpoint,
    dataset: Dataset = None, data: Data = None,
    split: Annotated[str, typer.Option("--split", help="Split to evaluate.")] = "val",
    flip: Annotated[bool, typer.Option("--flip", help="Average with the horizontally flipped image.")] = False,
    scales: Annotated[str, typer.Option("--scales", help="Comma-separated input scales, e.g. 0.75,1,1.25.")] = "1",
    eval_size: EvalSize = None, device: Device = None,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Images per forward pass.")] = 4,
    images: Annotated[Optional[int], typer.Option("--images", min=1, help="Synthetic only: number of generated scenes.")] = None,
    trust_checkpoint: TrustCheckpoint = False,
    align_corners: Annotated[Optional[bool], typer.Option(
        "--align-corners/--no-align-corners",
        help="Upsample logits with align_corners=True, as the released eval.py does (default: as the checkpoint "
             "was trained: on for --recipe release runs, else off).")] = None,
) -> None:
    """Evaluate a checkpoint: per-class IoU, mIoU, pixel accuracy and images/s."""
    from rdd_edge.distill.evaluate import EvalSpec, evaluate_checkpoint

    with checkpoint_trust(trust_checkpoint):
        r = evaluate_checkpoint(EvalSpec(checkpoint, dataset, data, split, flip, _parse_scales(scales),
                                         parse_hw(eval_size, "--eval-size"), device or "auto", batch, images,
                                         align_corners))
    m = r.metrics
    size = f"{r.size[0]}x{r.size[1]}" if r.size else "each at its own size"
    t = Table(title=f"{r.model_name} on {r.info.name} {r.split} ({r.images} images, {size})")
    t.add_column("class")
    t.add_column("IoU %", justify="right")
    t.add_column("acc %", justify="right")
    for cname, iou, acc in zip(r.info.classes, m.iou, m.class_acc):
        t.add_row(cname, "-" if iou != iou else f"{100 * iou:.2f}", "-" if acc != acc else f"{100 * acc:.2f}")
    t.add_section()
    t.add_row("[bold]mIoU", f"[bold]{100 * m.miou:.2f}", f"{100 * m.mean_class_acc:.2f}")
    t.add_row("pixel acc", f"{100 * m.pixel_acc:.2f}", "")
    t.add_row("images/s", f"{m.images_per_s:.1f}", "")
    Console().print(t)


@app.command("difficulty")
def difficulty_cmd(
    checkpoint: Checkpoint,
    teacher: Annotated[Optional[str], typer.Option("--teacher", help="Teacher checkpoint (default: the one the student was distilled from).")] = None,
    images: Annotated[int, typer.Option("--images", min=1, help="Number of val images to render.")] = 4,
    dataset: Dataset = None, data: Data = None,
    split: Annotated[str, typer.Option("--split", help="Split to take the images from.")] = "val",
    out: Annotated[Optional[Path], typer.Option("--out", help="Output folder (default <run>/difficulty).")] = None,
    threshold: Annotated[Optional[float], typer.Option("--rdd-threshold", help="TSE confidence threshold (default: the student's run).")] = None,
    mode: Annotated[Optional[str], typer.Option("--rdd-mode", help="TSE combination: xor, or, and (default: the student's run).")] = None,
    confidence: Annotated[Optional[str], typer.Option("--confidence", help="gt or max (default: the student's run).")] = None,
    device: Device = None, runs: Runs = DEFAULT_RUNS, trust_checkpoint: TrustCheckpoint = False,
) -> None:
    """Render RD_TFE / RD_TSE difficulty maps next to image, ground truth and both predictions."""
    from rdd_edge.distill.difficulty import DifficultySpec, run_difficulty

    with checkpoint_trust(trust_checkpoint):
        out_dir, rows = run_difficulty(DifficultySpec(checkpoint, teacher, images, dataset, data, split, out, threshold,
                                                      mode, confidence, device or "auto", runs))
    t = Table(title=f"difficulty maps -> {out_dir}")
    for col in ("file", "TSE selected %", "mean RD_TFE"):
        t.add_column(col)
    for r in rows:
        t.add_row(Path(r["file"]).name, f"{100 * r['tse_selected']:.1f}", "-" if r["tfe_mean"] is None else f"{r['tfe_mean']:.3f}")
    Console().print(t)
