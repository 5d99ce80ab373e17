"""Distill-stage commands: ``train-teacher``, ``distill``, ``eval``, ``difficulty``.

Options left unset keep the data set's preset (METHOD.md); ``--resume`` continues a run from its
``last.pt`` with the config stored there (options given explicitly still override, e.g. more
``--iters``). ``--gpus N`` re-launches the same command through torchrun with N processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from rdd_edge.app import app
from rdd_edge.errors import CheckpointError, ConfigError

# -- options shared by train-teacher and distill
Dataset = Annotated[Optional[str], typer.Option("--dataset", help="Data set: synthetic (default), camvid, cityscapes, voc, ade20k.")]
Data = Annotated[Optional[str], typer.Option("--data", help="Data set root folder (not needed for generated synthetic scenes).")]
Iters = Annotated[Optional[int], typer.Option("--iters", help="Total training iterations (default: data set preset).")]
Batch = Annotated[Optional[int], typer.Option("--batch", help="Global batch size, split across processes.")]
Lr = Annotated[Optional[float], typer.Option("--lr", help="Base learning rate (SGD, poly decay). Default 0.02.")]
Crop = Annotated[Optional[str], typer.Option("--crop", help="Training crop HxW, e.g. 360x360 (default: data set preset).")]
EvalSize = Annotated[Optional[str], typer.Option("--eval-size", help="Eval image size HxW (default: the data set's).")]
ValEvery = Annotated[Optional[int], typer.Option("--val-every", help="Validate and save checkpoints every N iterations.")]
LogEvery = Annotated[Optional[int], typer.Option("--log-every", help="Log a CSV/TensorBoard row every N iterations.")]
Amp = Annotated[Optional[bool], typer.Option("--amp/--no-amp", help="Mixed precision on CUDA (bf16 if supported, else fp16).")]
Compile = Annotated[bool, typer.Option("--compile", help="torch.compile the trained model.")]
Gpus = Annotated[int, typer.Option("--gpus", help="Processes to launch through torchrun (one per GPU; with --device cpu: gloo).")]
Device = Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
Name = Annotated[Optional[str], typer.Option("--name", help="Run name: runs/<stage>-<name>.")]
Resume = Annotated[Optional[str], typer.Option("--resume", help="Continue a run exactly: its folder or a last.pt.")]
Seed = Annotated[Optional[int], typer.Option("--seed", help="Seed for init, data order and augmentation.")]
HeadChannels = Annotated[Optional[int], typer.Option("--head-channels", help="Width of the segmentation head (default: the model's).")]
Workers = Annotated[Optional[int], typer.Option("--workers", help="DataLoader worker processes per training process.")]
TrainImages = Annotated[Optional[int], typer.Option("--train-images", help="Synthetic only: number of generated train scenes.")]
ValImages = Annotated[Optional[int], typer.Option("--val-images", help="Synthetic only: number of generated val scenes.")]
Runs = Annotated[Optional[str], typer.Option("--runs", help="Parent folder of run folders (default ./runs).")]
StopAfter = Annotated[Optional[int], typer.Option("--stop-after", hidden=True, help="Stop (saving last.pt) after this many iterations.")]
Set = Annotated[Optional[list[str]], typer.Option("--set", help="Override any config value, e.g. --set weight_decay=5e-4 (repeatable).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]


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
                  sets: Optional[list[str]], **opts) -> None:
    """Resolve the config (preset, resume, options, --set), train, print the results table."""
    from distill.config import config_from_dict, make_config, parse_overrides, parse_size

    if gpus > 1 and "RANK" not in os.environ:
        _relaunch(gpus)
    head_channels = opts.pop("head_channels")
    opts["crop"] = parse_size(opts["crop"], "--crop")
    opts["eval_size"] = parse_size(opts["eval_size"], "--eval-size")
    if head_channels is not None:
        opts["model_kwargs"] = {"head_channels": head_channels}
    opts.update(parse_overrides(sets))
    if resume:
        from distill.train import resolve_checkpoint
        from models.checkpoint import load_checkpoint

        ckpt = load_checkpoint(resolve_checkpoint(resume, prefer="last.pt"))
        if not isinstance(ckpt.get("config"), dict) or ckpt["config"].get("mode") != mode:
            raise CheckpointError(f"{resume}: not a {mode} training checkpoint; resume it with the command that made it")
        cfg = config_from_dict(ckpt["config"], **opts)
    else:
        dataset = opts.pop("dataset")
        cfg = make_config(mode, dataset, **opts)

    from distill.train import train

    summary = train(cfg, resume=resume, stop_after=stop_after, progress=not quiet)
    from distill import dist

    if dist.is_main():
        _print_summary(summary)
    dist.cleanup()


def _print_summary(s: dict) -> None:
    from rich.console import Console
    from rich.table import Table

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


@app.command("train-teacher")
def train_teacher(
    dataset: Dataset = None, data: Data = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Teacher model (default deeplabv3_r101, with aux head).")] = None,
    iters: Iters = None, batch: Batch = None, lr: Lr = None, crop: Crop = None, eval_size: EvalSize = None,
    val_every: ValEvery = None, log_every: LogEvery = None, amp: Amp = None, compile: Compile = False, gpus: Gpus = 1,
    device: Device = None, name: Name = None, resume: Resume = None, seed: Seed = None, head_channels: HeadChannels = None,
    workers: Workers = None, train_images: TrainImages = None, val_images: ValImages = None, runs: Runs = None,
    stop_after: StopAfter = None, sets: Set = None, quiet: Quiet = False,
) -> None:
    """Train the teacher (DeepLabV3-R101 with an aux head by default) on a data set."""
    _run_training("teacher", resume, gpus, stop_after, quiet, sets, dataset=dataset, data=data, model=model,
                  iters=iters, batch=batch, lr=lr, crop=crop, eval_size=eval_size, val_every=val_every, log_every=log_every,
                  amp=amp, compile=compile or None, device=device, name=name, seed=seed, head_channels=head_channels,
                  workers=workers, synthetic_train=train_images, synthetic_val=val_images, runs_root=runs)


@app.command("distill")
def distill_cmd(
    student: Annotated[Optional[str], typer.Option("--student", help="Student model: mbv2 (default), r18, psp18.")] = None,
    teacher: Annotated[Optional[str], typer.Option("--teacher", help="Teacher checkpoint or run folder (default: latest teacher run's best.pt).")] = None,
    method: Annotated[Optional[str], typer.Option("--method", help="KD loss: none, kd, cwd, at.")] = None,
    rdd: Annotated[Optional[bool], typer.Option("--rdd/--no-rdd", help="Relative-difficulty weighting of the task loss (on by default).")] = None,
    rdd_mode: Annotated[Optional[str], typer.Option("--rdd-mode", help="TSE combination: xor (the method), or, and.")] = None,
    rdd_threshold: Annotated[Optional[float], typer.Option("--rdd-threshold", help="Confidence at or below which a pixel is hard (0.7).")] = None,
    tfe_fraction: Annotated[Optional[float], typer.Option("--tfe-fraction", help="Fraction of iterations in the TFE stage (0.1).")] = None,
    confidence: Annotated[Optional[str], typer.Option("--confidence", help="Pixel confidence: gt (prob. of the true class) or max.")] = None,
    dataset: Dataset = None, data: Data = None,
    iters: Iters = None, batch: Batch = None, lr: Lr = None, crop: Crop = None, eval_size: EvalSize = None,
    val_every: ValEvery = None, log_every: LogEvery = None, amp: Amp = None, compile: Compile = False, gpus: Gpus = 1,
    device: Device = None, name: Name = None, resume: Resume = None, seed: Seed = None, head_channels: HeadChannels = None,
    workers: Workers = None, train_images: TrainImages = None, val_images: ValImages = None, runs: Runs = None,
    stop_after: StopAfter = None, sets: Set = None, quiet: Quiet = False,
) -> None:
    """Distill a student from a frozen teacher with a KD loss and RDD-weighted task loss."""
    _run_training("distill", resume, gpus, stop_after, quiet, sets, dataset=dataset, data=data, model=student, teacher=teacher,
                  method=method, rdd=rdd, rdd_mode=rdd_mode, rdd_threshold=rdd_threshold, tfe_fraction=tfe_fraction,
                  confidence=confidence, iters=iters, batch=batch, lr=lr, crop=crop, eval_size=eval_size,
                  val_every=val_every, log_every=log_every, amp=amp, compile=compile or None, device=device, name=name,
                  seed=seed, head_channels=head_channels, workers=workers, synthetic_train=train_images,
                  synthetic_val=val_images, runs_root=runs)


def _data_for(ckpt: dict, dataset: Optional[str], data: Optional[str], split: str, n: Optional[int], eval_size):
    """(info, reader, eval size) for a checkpoint: its own data set unless told otherwise."""
    from rdd_edge.data import dataset_info, get_dataset

    cfg = ckpt.get("config") or {}
    name = dataset or (ckpt.get("dataset") or {}).get("name") or "synthetic"
    if dataset is None and name not in ("synthetic", "camvid", "cityscapes", "voc", "ade20k"):
        name = "synthetic"
    if data is None and dataset is None:
        data = cfg.get("data")
    info = dataset_info(name)
    size = eval_size or (tuple(cfg["eval_size"]) if cfg.get("eval_size") and dataset is None else tuple(info.eval_size))
    if name == "synthetic" and data is None:
        reader = get_dataset("synthetic", split=split, n=n or int(cfg.get("synthetic_val", 40)), size=size,
                             seed=int(cfg.get("seed", 0)))
    else:
        reader = get_dataset(name, data, split=split)
    from distill.train import check_reader

    check_reader(reader, f"{data or name} ({split} split)", info.num_classes)
    if int(ckpt["model_kwargs"]["num_classes"]) != info.num_classes:
        raise CheckpointError(f"{ckpt.get('path')}: model predicts {ckpt['model_kwargs']['num_classes']} classes but "
                              f"{name} has {info.num_classes}; pass the --dataset it was trained on")
    return info, reader, size


def _parse_scales(text: str) -> tuple[float, ...]:
    try:
        scales = tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ConfigError(f"--scales {text!r}: expected comma-separated numbers, e.g. 0.75,1,1.25") from None
    if not scales or min(scales) <= 0:
        raise ConfigError(f"--scales {text!r}: need at least one positive scale")
    return scales


@app.command("eval")
def eval_cmd(
    checkpoint: Annotated[str, typer.Argument(help="Checkpoint file or run folder (its best.pt).")],
    dataset: Dataset = None, data: Data = None,
    split: Annotated[str, typer.Option("--split", help="Split to evaluate.")] = "val",
    flip: Annotated[bool, typer.Option("--flip", help="Average with the horizontally flipped image.")] = False,
    scales: Annotated[str, typer.Option("--scales", help="Comma-separated input scales, e.g. 0.75,1,1.25.")] = "1",
    eval_size: EvalSize = None, device: Device = None,
    batch: Annotated[int, typer.Option("--batch", help="Images per forward pass.")] = 4,
    images: Annotated[Optional[int], typer.Option("--images", help="Synthetic only: number of generated scenes.")] = None,
) -> None:
    """Evaluate a checkpoint: per-class IoU, mIoU, pixel accuracy and images/s."""
    from distill import dist
    from distill.config import parse_size
    from distill.data import eval_loader
    from distill.evaluate import evaluate
    from distill.train import resolve_checkpoint
    from models import model_from_checkpoint

    path = resolve_checkpoint(checkpoint, prefer="best.pt")
    model, ckpt = model_from_checkpoint(path)
    info, reader, size = _data_for(ckpt, dataset, data, split, images, parse_size(eval_size, "--eval-size"))
    dev = dist.init_distributed(device or "auto")
    loader = eval_loader(reader, info, size, batch=batch)
    m = evaluate(model.to(dev), loader, info.num_classes, dev, flip=flip, scales=_parse_scales(scales))

    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{ckpt['model_name']} on {info.name} {split} ({len(reader)} images, {size[0]}x{size[1]})")
    t.add_column("class")
    t.add_column("IoU %", justify="right")
    t.add_column("acc %", justify="right")
    for cname, iou, acc in zip(info.classes, m.iou, m.class_acc):
        t.add_row(cname, "-" if iou != iou else f"{100 * iou:.2f}", "-" if acc != acc else f"{100 * acc:.2f}")
    t.add_section()
    t.add_row("[bold]mIoU", f"[bold]{100 * m.miou:.2f}", f"{100 * m.mean_class_acc:.2f}")
    t.add_row("pixel acc", f"{100 * m.pixel_acc:.2f}", "")
    t.add_row("images/s", f"{m.images_per_s:.1f}", "")
    Console().print(t)


@app.command("difficulty")
def difficulty_cmd(
    checkpoint: Annotated[str, typer.Argument(help="Student checkpoint or distill run folder.")],
    teacher: Annotated[Optional[str], typer.Option("--teacher", help="Teacher checkpoint (default: the one the student was distilled from).")] = None,
    images: Annotated[int, typer.Option("--images", help="Number of val images to render.")] = 4,
    dataset: Dataset = None, data: Data = None,
    split: Annotated[str, typer.Option("--split", help="Split to take the images from.")] = "val",
    out: Annotated[Optional[str], typer.Option("--out", help="Output folder (default <run>/difficulty).")] = None,
    threshold: Annotated[float, typer.Option("--rdd-threshold", help="TSE confidence threshold.")] = 0.7,
    mode: Annotated[str, typer.Option("--rdd-mode", help="TSE combination: xor, or, and.")] = "xor",
    confidence: Annotated[str, typer.Option("--confidence", help="gt or max.")] = "gt",
    device: Device = None,
) -> None:
    """Render RD_TFE / RD_TSE difficulty maps next to image, ground truth and both predictions."""
    from distill import dist
    from distill.difficulty import render_difficulty
    from distill.train import default_teacher, resolve_checkpoint
    from models import model_from_checkpoint

    path = resolve_checkpoint(checkpoint, prefer="best.pt")
    student, ckpt = model_from_checkpoint(path)
    cfg = ckpt.get("config") or {}
    if teacher is None:
        teacher = cfg.get("teacher") or str(default_teacher(cfg.get("runs_root", "runs")))
    t_model, t_ckpt = model_from_checkpoint(resolve_checkpoint(teacher))
    if t_model.num_classes != student.num_classes:
        raise CheckpointError(f"{teacher}: teacher predicts {t_model.num_classes} classes, student {student.num_classes}")
    info, reader, size = _data_for(ckpt, dataset, data, split, max(images, 1), None)
    dev = dist.init_distributed(device or "auto")
    out_dir = Path(out) if out else path.parent / "difficulty"
    rows = render_difficulty(student, t_model, reader, info, size, images, out_dir, dev, threshold, mode, confidence)

    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"difficulty maps -> {out_dir}")
    for col in ("file", "TSE selected %", "mean RD_TFE"):
        t.add_column(col)
    for r in rows:
        t.add_row(Path(r["file"]).name, f"{100 * r['tse_selected']:.1f}", "-" if r["tfe_mean"] is None else f"{r['tfe_mean']:.3f}")
    Console().print(t)
