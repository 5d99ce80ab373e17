"""``rdd-edge qat RUN``: quantization-aware distillation of an export's two INT8 files (``export.qad.run_qad``).

Opt-in (the pipeline does not run it): after ``rdd-edge export RUN --int8`` when PTQ, with or without float
layers, loses more than the deployment can afford. This module declares the options and prints the results.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.console import Console

from rdd_edge.cli.app import app
from rdd_edge.cli.commands.options import DEFAULT_RUNS, Data, Device, Runs, TrustCheckpoint, checkpoint_trust

# lazy imports: the export stage (torch) is imported inside the command: `rdd-edge --help` stays fast and torch-free


@app.command("qat")
def qat_cmd(
    source: Annotated[Optional[str], typer.Argument(metavar="[RUN_OR_CKPT]", help="Distill run folder or checkpoint with an INT8 export in <run>/export (default: the latest distill run).")] = None,
    iters: Annotated[int, typer.Option("--iters", min=1, help="Fine-tuning steps of the fake-quantized student.")] = 200,
    lr: Annotated[float, typer.Option("--lr", help="Adam learning rate (small: QAD starts from the trained weights).")] = 1e-4,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Training images per step, at the export's input size.")] = 8,
    teacher: Annotated[Optional[str], typer.Option("--teacher", help="Teacher checkpoint or run, or self: the student's own FP32 logits, which keeps the function the FP32 file computes (default: the run's teacher; a run without one: self).")] = None,
    int8_only: Annotated[bool, typer.Option("--int8-only", help="Quantize the layers the export kept in float too (QAD instead of float islands).")] = False,
    equalize: Annotated[bool, typer.Option("--equalize", help="First level the channel ranges of Conv -> ReLU -> Conv chains (cross-layer equalization, exact in FP32) and calibrate them again: for channels one layer scaled far above the rest.")] = False,
    max_drop: Annotated[Optional[float], typer.Option("--max-drop", metavar="POINTS", help="Fail, leaving the export unchanged, when a file still loses more mIoU points vs FP32.")] = None,
    crop: Annotated[Optional[str], typer.Option("--crop", metavar="HxW", help="Train on random HxW windows of the export-size images (faster; default: whole images).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the batch order and flips.")] = 0,
    data: Data = None,
    device: Device = None,
    runs: Runs = DEFAULT_RUNS,
    trust_checkpoint: TrustCheckpoint = False,
) -> None:
    """Fine-tune the fake-quantized student against the FP32 teacher (QAD), then rewrite and re-score both INT8 files."""
    from rdd_edge.cli.commands.export import print_export
    from rdd_edge.export.int8_report import qad_lines
    from rdd_edge.export.qad import QadSpec, run_qad
    from rdd_edge.sizes import parse_hw

    console = Console()
    spec = QadSpec(source=source, iters=iters, lr=lr, batch=batch, teacher=teacher, int8_only=int8_only,
                   max_drop=max_drop, equalize=equalize, data=data, device=device or "auto", seed=seed, runs_root=runs,
                   crop=parse_hw(crop, "--crop") if crop else None)
    with checkpoint_trust(trust_checkpoint):
        manifest = run_qad(spec, console=console)
    print_export(console, manifest)  # with an INT8 report, its table ends with the QAD lines
    for line in [] if manifest.get("int8_sensitivity") else qad_lines(manifest["qad"]):
        console.print(line, markup=False, highlight=False)
