"""``rdd-edge export``: checkpoint -> ONNX / FP16 / INT8 (QDQ) / TensorRT artifacts + manifest.

The work happens in ``export.pipeline.export_run(ExportSpec)``; which options go with which
artifact is the formats table's business (``export.formats``). This module declares the options
and prints the results table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, List, Optional

import typer
from rich.console import Console
from rich.table import Table

from rdd_edge import formats as table
from rdd_edge.cli.app import app
from rdd_edge.cli.commands.options import DEFAULT_RUNS, Data, Runs, TrustCheckpoint, checkpoint_trust

# lazy imports: the export stage (and deploy's engine code) is imported inside the commands: `rdd-edge --help`
# stays fast and torch-free


def print_export(console: Any, manifest: dict) -> None:
    """One row per artifact: file, precision, runtime, size and what its check measured."""
    from rdd_edge.export.manifest import MANIFEST

    table = Table(title=f"{manifest['model_name']} -> {manifest['export_dir']}")
    for col in ("file", "precision", "runtime", "MB", "check"):
        table.add_column(col, justify="right" if col == "MB" else "left")
    from rdd_edge.deploy.engine_meta import precision_summary

    for a in manifest["artifacts"].values():
        chk = a.get("parity") or a.get("agreement") or {}
        cell = f"{chk['label_agreement']:.3%} labels agree" if "label_agreement" in chk else "-"
        if a.get("miou") is not None:
            cell += f", mIoU {100 * a['miou']:.2f}"
        if a.get("runtime") == "tensorrt":
            cell = precision_summary(a)
        size = f"{a['bytes'] / 1e6:.2f}" if a.get("bytes") is not None else "-"
        table.add_row(a["file"], a.get("precision", "?"), a.get("runtime", "?"), size, cell)
    console.print(table)
    plan = manifest.get("int8_sensitivity")
    if plan:  # what each layer costs in INT8, and what the budget kept in float
        from rdd_edge.export.int8_report import format_table

        console.print(format_table(plan), markup=False, highlight=False, soft_wrap=True)
        console.print(f"sensitivity: {manifest['export_dir']}/{plan['files']['json']}, {plan['files']['png']}")
    console.print(f"manifest: {manifest['export_dir']}/{MANIFEST}")


Workspace = Annotated[float, typer.Option("--workspace", help="TensorRT builder workspace in GB (1-2 on Jetson).")]
MaxBatch = Annotated[int, typer.Option("--max-batch", min=1, help="Largest batch a TensorRT engine accepts (its profile: 1..N).")]
DlaCore = Annotated[Optional[int], typer.Option("--dla-core", min=0, help="Build the engines for this DLA core (Jetson AGX Orin / Orin NX): one static batch (--opt-batch), GPU fallback for layers DLA cannot run; no layer on DLA is an error.")]
OptBatch = Annotated[int, typer.Option("--opt-batch", min=1, help="The batch TensorRT tunes for (with --dla-core: the engine's only batch).")]
AllowGpuFallback = Annotated[bool, typer.Option("--allow-gpu-fallback", help="With --dla-core: keep an engine whose layers all fell back to the GPU (a warning instead of an error).")]
FormatKeys = Annotated[Optional[List[str]], typer.Option(
    "--format", metavar="KEY",
    help=f"Also write the format with this key (repeatable; what it is built from comes along): {', '.join(table.ORDER)}. "
         "A format without a flag of its own is asked for this way; for the others it is the same as their flag.")]
Profile = Annotated[Optional[str], typer.Option("--profile", metavar="MIN,OPT,MAX", help="With --dynamic: the engine's H x W range, e.g. 256x512,512x1024,1024x2048.")]


@app.command("export")
def export_cmd(
    source: Annotated[Optional[str], typer.Argument(metavar="[RUN_OR_CKPT]", help="Distill run folder or checkpoint (default: latest runs/distill-*, best.pt preferred).")] = None,
    fp16: Annotated[bool, typer.Option("--fp16", help="Also write model.fp16.onnx (FP16 weights, FP32 I/O).")] = False,
    int8: Annotated[bool, typer.Option("--int8", help="Also write model.int8.onnx (TensorRT QDQ) and model.int8-cpu.onnx (ONNX Runtime CPU), from one calibration.")] = False,
    trt: Annotated[str, typer.Option("--trt", help="TensorRT engines to build: none, fp16, int8, all (needs TensorRT: the `trt` extra, JetPack on Jetson).")] = "none",
    format_keys: FormatKeys = None,
    size: Annotated[Optional[str], typer.Option("--size", metavar="HxW", help="Input size (multiples of 8; PSPNet: of 48). Default: the data set's eval size.")] = None,
    dynamic: Annotated[bool, typer.Option("--dynamic", help="Dynamic H and W as well as batch (not PSPNet).")] = False,
    outputs: Annotated[str, typer.Option("--outputs", help="Graph outputs: labels (N,H,W int64), logits (N,C,H,W) or both.")] = "labels",
    embed_preprocess: Annotated[Optional[str], typer.Option("--embed-preprocess", metavar="MODE", help="The graph applies the normalisation the checkpoint records (channel order, scale, mean/std) itself and takes raw pixels: uint8 (uint8 RGB), float255 (float 0-255 RGB: DeepStream's net-scale-factor=1, model-color-format=0) or float255-bgr (model-color-format=1).")] = None,
    calib: Annotated[int, typer.Option("--calib", min=32, help="Calibration images from the train split (at least 32; 300-500 recommended).")] = 300,
    calib_method: Annotated[str, typer.Option("--calib-method", help="Calibration: percentile (99.999), entropy or minmax.")] = "percentile",
    calib_data: Annotated[Optional[Path], typer.Option("--calib-data", help="Folder of training images to calibrate on instead of the train split.")] = None,
    keep_float: Annotated[Optional[List[str]], typer.Option("--keep-float", help="Node to keep in float in the INT8 files (repeatable).")] = None,
    int8_budget: Annotated[Optional[float], typer.Option("--int8-budget", metavar="POINTS", help="mIoU points the INT8 files may lose vs FP32 on the check images (e.g. 1.0, as check --max-drop): tries every calibration method, then keeps the fewest layers in float, most costly first, until both files fit; fails if 10% of the layers are not enough. Implies --int8-report.")] = None,
    int8_report: Annotated[bool, typer.Option("--int8-report", help="Per-layer sensitivity of both INT8 files: a table here and in the manifest, int8-sensitivity.json and .png.")] = False,
    int8_max_float: Annotated[Optional[int], typer.Option("--int8-max-float", min=0, help="Most layers --int8-budget may keep in float (default: 10% of the Conv layers, at least 2).")] = None,
    int8_loo: Annotated[Optional[int], typer.Option("--int8-loo", min=-1, help="Layers measured leave-one-out, noisiest first by the estimate (default: as many as --int8-max-float allows; -1: every layer, slow).")] = None,
    int8_max_drop: Annotated[Optional[float], typer.Option("--int8-max-drop", hidden=True, help="Old name of --int8-budget.")] = None,
    int8_float: Annotated[str, typer.Option("--int8-float", help="Float math of the TensorRT Q/DQ file's unquantized layers: fp16 or fp32.")] = "fp16",
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset (18: native for torch.onnx, inside TensorRT 10/11's range).")] = 18,
    check_images: Annotated[Optional[int], typer.Option("--check-images", min=1, help="Val images each artifact is scored on (default: the val split training validated on, evenly spread past 100).")] = None,
    data: Data = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Export folder (default <run>/export).")] = None,
    runs: Runs = DEFAULT_RUNS,
    workspace: Workspace = 2.0, max_batch: MaxBatch = 8, opt_batch: OptBatch = 1, dla_core: DlaCore = None,
    allow_gpu_fallback: AllowGpuFallback = False, profile: Profile = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Let --out replace the export of another checkpoint.")] = False,
    trust_checkpoint: TrustCheckpoint = False,
) -> None:
    """Export a distilled student to ONNX (+ FP16, INT8, TensorRT) with accuracy checks and a manifest."""
    from rdd_edge.export.formats import ExportSpec
    from rdd_edge.export.pipeline import export_run

    console = Console()
    spec = ExportSpec(source=source, out=out, runs_root=runs, size=size, outputs=outputs, embed_preprocess=embed_preprocess,
                      dynamic=dynamic, opset=opset, fp16=fp16, int8=int8, trt=trt, format=tuple(format_keys or ()), check_images=check_images, data=data,
                      calib=calib, calib_method=calib_method, calib_data=calib_data, keep_float=tuple(keep_float or ()),
                      int8_budget=int8_budget, int8_report=int8_report, int8_max_float=int8_max_float, int8_loo=int8_loo,
                      int8_max_drop=int8_max_drop, int8_float=int8_float, workspace=workspace, max_batch=max_batch,
                      opt_batch=opt_batch, dla_core=dla_core, allow_gpu_fallback=allow_gpu_fallback, profile=profile,
                      overwrite=overwrite)
    with checkpoint_trust(trust_checkpoint):
        manifest = export_run(spec, console=console)
    print_export(console, manifest)


@app.command("engine")
def engine_cmd(
    run: Annotated[Optional[Path], typer.Argument(metavar="[RUN]", help="Distill run or its export folder (default: the latest with an export).")] = None,
    trt: Annotated[str, typer.Option("--trt", help="Engines to build: fp16, int8 or all (from model.fp16.onnx / model.int8.onnx).")] = "all",
    workspace: Workspace = 2.0, max_batch: MaxBatch = 8, opt_batch: OptBatch = 1, dla_core: DlaCore = None,
    allow_gpu_fallback: AllowGpuFallback = False, profile: Profile = None,
    runs: Runs = DEFAULT_RUNS,
) -> None:
    """Build TensorRT engines from an export folder's ONNX files, on the device that will run them (no torch needed)."""
    from rdd_edge.export.formats import ExportSpec
    from rdd_edge.export.pipeline import engine_run

    console = Console()
    spec = ExportSpec(source=run, runs_root=runs, trt=trt, workspace=workspace, max_batch=max_batch, opt_batch=opt_batch,
                      dla_core=dla_core, allow_gpu_fallback=allow_gpu_fallback, profile=profile, dynamic=profile is not None)
    print_export(console, engine_run(spec, console=console))
