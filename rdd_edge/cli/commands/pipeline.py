"""``rdd-edge pipeline``: the whole job in one command (``rdd_edge.cli.pipeline.run_pipeline``).

With no arguments it runs on the embedded synthetic scenes, sized to finish in about ten minutes
on a 2-core CPU; every stage's own command exposes the full set of options, and
``--dataset/--data/--iters/...`` scale this one up.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from rdd_edge.cli.app import app
from rdd_edge.cli.commands.deploy import print_check, row_printer
from rdd_edge.cli.commands.options import (DEFAULT_RUNS, MODEL_HELP, Data, Dataset, Device, MaxDrop, Name, Quiet, Runs, Seed,
                                       TrustCheckpoint, checkpoint_trust)
from rdd_edge.cli.pipeline import QUICK, PipelineSpec, run_pipeline


@app.command()
def pipeline(
    dataset: Dataset = None, data: Data = None,
    student: Annotated[str, typer.Option("--student", help=f"Student, {MODEL_HELP}.")] = "mbv2",
    teacher_model: Annotated[str, typer.Option("--teacher-model", help=f"Teacher: auto (r101 on a GPU, r18 on a CPU) or {MODEL_HELP}.")] = "auto",
    teacher: Annotated[Optional[str], typer.Option("--teacher", help="Use this teacher checkpoint instead of training one.")] = None,
    teacher_iters: Annotated[Optional[int], typer.Option("--teacher-iters", help=f"Teacher iterations (synthetic default {QUICK['teacher_iters']}; else the data set preset).")] = None,
    iters: Annotated[Optional[int], typer.Option("--iters", help=f"Student iterations (synthetic default {QUICK['iters']}; else the data set preset).")] = None,
    method: Annotated[str, typer.Option("--method", help="KD loss (rdd-edge distill --list-methods), or none.")] = "kd",
    rdd: Annotated[bool, typer.Option("--rdd/--no-rdd", help="RDD weighting of the task loss.")] = True,
    batch: Annotated[Optional[int], typer.Option("--batch", help="Global batch size (default: preset).")] = None,
    device: Device = None,
    calib: Annotated[int, typer.Option("--calib", min=32, help="INT8 calibration images from the train split.")] = QUICK["calib"],
    max_drop: MaxDrop = 1.0,
    demo_scenes: Annotated[int, typer.Option("--demo-scenes", min=1, help="Synthetic scenes in the demo video.")] = QUICK["demo_scenes"],
    name: Name = "pipeline", runs: Runs = DEFAULT_RUNS, seed: Seed = 0, quiet: Quiet = False,
    trust_checkpoint: TrustCheckpoint = False,
    pretrained: Annotated[Optional[str], typer.Option(
        "--pretrained", metavar="imagenet|PATH|none",
        help="Backbone init of the teacher and the student (as for train-teacher / distill). Default: imagenet for "
             "real data sets, none for the synthetic scenes (no download).")] = None,
) -> None:
    """Teacher -> RDD student -> ONNX/FP16/INT8 (+TensorRT) -> check -> demo video, in one go."""
    console = Console()
    spec = PipelineSpec(dataset=dataset, data=data, student=student, teacher_model=teacher_model, teacher=teacher,
                        teacher_iters=teacher_iters, iters=iters, method=method, rdd=rdd, batch=batch,
                        device=device or "auto", calib=calib, max_drop=max_drop, demo_scenes=demo_scenes,
                        name=name or "pipeline", runs_root=runs, seed=seed or 0, progress=not quiet,
                        pretrained=pretrained)
    with checkpoint_trust(trust_checkpoint):
        r = run_pipeline(spec, stage=lambda title: console.rule(f"[bold]{title}"), log=console,
                         on_check_row=row_printer(console), on_check=lambda result: print_check(console, result))

    table = Table(title="rdd-edge pipeline", show_header=False)
    if r.teacher_miou is not None:
        table.add_row("teacher", f"{r.teacher}  mIoU {100 * r.teacher_miou:.2f}")
    table.add_row("student", f"{r.run_dir}  mIoU {100 * (r.student['best_miou'] or 0):.2f}")
    table.add_row("artifacts", str(r.export_dir))
    table.add_row("check", f"{r.export_dir / 'check.md'}" + ("  passed" if r.passed else "  [red]gate FAILED[/]"))
    table.add_row("demo video", f"{r.demo.out}  ({r.demo.frames} frames, {r.demo_artifact}, {r.demo.fps:.1f} FPS end to end)")
    table.add_row("time", f"{r.total_s:.0f} s (" + ", ".join(f"{k} {v:.0f} s" for k, v in r.times.items()) + ")")
    console.print(table)
    if not r.passed:
        raise typer.Exit(code=1)
