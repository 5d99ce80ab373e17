"""`rdd-edge check` and `rdd-edge demo`: the deploy stage on the command line.

The work happens in ``deploy.check.run_check`` and ``deploy.demo.demo``; this module declares
the options and prints. The torch checkpoint row comes from ``export.reference`` when torch is
installed, so ``deploy/`` itself stays torch-free.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from rdd_edge.cli.app import app
from rdd_edge.cli.commands.options import (DEFAULT_RUNS, Data, Dataset, Device, MaxDrop, RunArg, Runs, Threads,
                                       TrustCheckpoint, checkpoint_trust)

# lazy imports: the deploy stage (numpy, OpenCV, ONNX Runtime) is imported inside the commands: `rdd-edge --help`
# stays fast


def print_check(console: Any, result: Any) -> None:
    """The compact table, where the reports went, and the gate's decision."""
    from rdd_edge.deploy.check_report import table_rows

    head, body = table_rows(result.rows, compact=True)
    table = Table(title=f"deploy check: {result.meta['export_dir']} (full table: check.md)", box=box.SIMPLE_HEAD, pad_edge=False)
    for h in head:
        table.add_column(h, no_wrap=h != "status", justify="left" if h in ("artifact", "status") else "right")
    for r, cells in zip(result.rows, body):
        table.add_row(*cells, style=STATUS_COLOURS.get(r.status))
    console.print(table)
    if "GPU ms" in head:
        from rdd_edge.deploy.check_report import COMPACT_NOTE

        console.print(COMPACT_NOTE, markup=False, highlight=False)
    for r in result.rows:
        if r.detail:
            console.print(f"{r.name} layers: {r.detail}")
        if r.note:
            console.print(f"{r.name}: {r.note}")
        if r.int8_budget:
            from rdd_edge.deploy.check_report import budget_line

            console.print(budget_line(r), markup=False, highlight=False)
    if result.meta.get("cpu"):
        console.print(f"CPU: {result.meta['cpu']['line']}")  # folds at the terminal's width (tests/test_widths: 80 columns); check.md has it whole
    if isinstance(result.meta.get("device_state"), dict):  # power mode, clocks, temperatures; power during the timed runs
        print_device_state(console, result.meta["device_state"], result.rows)
    if result.paths:
        console.print(f"wrote {result.paths['json']}, {result.paths['md'].name}, {result.paths['png'].name}")
    else:  # the reports could not be written: the verdict is printed either way, and the exit code follows it
        console.print(f"warning: {result.meta.get('report_error')}", markup=False, highlight=False)
        if not result.failures:
            console.print("[green]gate passed[/]")
    if result.failures:
        console.print("[red]gate failed[/]: " + "; ".join(result.failures))


def print_device_state(console: Any, state: dict, rows: Any = ()) -> None:
    """The device state's lines, then the power and FPS/W of each row measured (or why none was)."""
    from rdd_edge.deploy.device_state import state_lines
    from rdd_edge.deploy.power import power_text

    for line in state_lines(state):
        console.print(f"device: {line}", markup=False, highlight=False)
    measured = [(r.name, r.latency["b1"]) for r in rows if isinstance((r.latency.get("b1") or {}).get("power_w"), float)]
    for name, b1 in measured:
        console.print(f"{name} batch 1: {b1['fps']:.1f} FPS, {power_text(b1)}", markup=False, highlight=False)
    if not measured and rows:
        console.print(f"power: {state.get('power_source', '-')}", markup=False, highlight=False)


STATUS_COLOURS = {"passed": "green", "failed gate": "yellow", "failed": "red", "skipped": "dim"}


def run_check_command(spec: Any, console: Any) -> Any:
    """Run the check with live row lines (the CLI and the pipeline print it the same way)."""
    from rdd_edge.deploy.check import run_check

    with console.status("measuring ..."):
        result = run_check(spec, on_row=row_printer(console))
    print_check(console, result)
    return result


def row_printer(console: Any) -> Any:
    """One line per checked artifact as it finishes."""
    def on_row(r: Any) -> None:
        console.print(f"  {r.name}: [{STATUS_COLOURS.get(r.status, 'white')}]{r.status}[/]" + (f" ({r.reason})" if r.reason else ""))

    return on_row


@app.command()
def check(
    run: RunArg = None,
    images: Annotated[Optional[int], typer.Option("--images", min=1, help="Score on the first N val images (default: all).")] = None,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Larger batch size for the second latency measurement.")] = 4,
    max_drop: MaxDrop = 1.0,
    device: Device = None, threads: Threads = None, dataset: Dataset = None, data: Data = None, runs: Runs = DEFAULT_RUNS,
    min_time: Annotated[float, typer.Option("--min-time", help="Seconds of timed runs per latency measurement.")] = 1.0,
    no_torch: Annotated[bool, typer.Option("--no-torch", help="Leave out the torch checkpoint row.")] = False,
    profile_layers: Annotated[bool, typer.Option("--profile-layers", help="TensorRT engines: per-layer GPU time (TensorRT's IProfiler, 20 runs) next to each layer's precision, in check-layers-<row>.csv / .md.")] = False,
    trust_checkpoint: TrustCheckpoint = False,
) -> None:
    """Check every exported artifact: integrity, size, mIoU and drop vs FP32, pixel agreement, latency; CI gate (exit 1)."""
    from rdd_edge.deploy.check import CheckSpec

    spec = CheckSpec(run=run, runs_root=runs, images=images, batch=batch, max_drop=max_drop, device=device or "auto",
                     threads=threads, dataset=dataset, data=data, min_time=min_time, reference=not no_torch,
                     profile_layers=profile_layers)
    with checkpoint_trust(trust_checkpoint and not no_torch):
        result = run_check_command(spec, Console())
    if not result.passed:
        raise typer.Exit(code=1)


@app.command()
def demo(
    source: Annotated[str, typer.Option("--source", help="Camera (0, /dev/video0), CSI camera (csi:0), video file, "
                                        "RTSP/HTTP URL, folder of images, or a GStreamer pipeline (gst:... or text with ' ! ').")],
    artifact: Annotated[Optional[Path], typer.Argument(
        metavar="[ARTIFACT_OR_RUN]", help="Model file (.onnx / .engine) or run folder (default: the latest distill run's "
                                          "fastest artifact that passed check, else its model.onnx).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Output video (.mp4/.avi/.mkv/.mov) or a folder for PNG frames.")] = None,
    show: Annotated[bool, typer.Option("--show", help="Show a window (needs a display and OpenCV with GUI support, pip install opencv-python; otherwise a note says how).")] = False,
    alpha: Annotated[float, typer.Option("--alpha", min=0.0, max=1.0, help="Overlay opacity of the label colours, 0..1.")] = 0.5,
    max_frames: Annotated[Optional[int], typer.Option("--max-frames", min=1, help="Stop after N frames.")] = None,
    camera_size: Annotated[Optional[str], typer.Option("--camera-size", help="Camera mode WIDTHxHEIGHT, e.g. 1280x720 (UVC and csi:N).")] = None,
    fps: Annotated[Optional[float], typer.Option("--fps", help="Camera frame rate (UVC and csi:N).")] = None,
    fourcc: Annotated[Optional[str], typer.Option("--fourcc", help="UVC camera pixel format, e.g. MJPG (high sizes at full rate over USB) or YUYV.")] = None,
    resize: Annotated[str, typer.Option("--resize", help="How frames fit the model's input: letterbox (keeps proportions, pads) or stretch.")] = "letterbox",
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds a camera, stream or pipeline may take to open, or stay silent.")] = 10.0,
    device: Device = None, threads: Threads = None, runs: Runs = DEFAULT_RUNS,
) -> None:
    """Segment a camera, video, stream or image folder live: colour overlay, legend, FPS."""
    from rdd_edge.deploy.demo import DemoSpec
    from rdd_edge.deploy.demo import demo as run
    from rdd_edge.deploy.power import power_text

    console = Console(stderr=True)
    spec = DemoSpec(source=source, artifact=artifact, runs_root=runs, out=out, show=show, alpha=alpha,
                    max_frames=max_frames, device=device or "auto", threads=threads, camera_size=camera_size, fps=fps,
                    fourcc=fourcc, resize=resize, timeout=timeout)
    res = run(spec, on_load=lambda seg: console.print(f"{seg} <- {source}"))
    for note in res.notes:
        console.print(f"note: {note}")
    where = f" -> {res.out}" if res.out else ""
    console.print(f"{res.frames} frames at {res.fps:.1f} FPS end to end{where}" + (" (interrupted)" if res.interrupted else ""))
    if res.device_state:  # the state before the first frame, the power over the loop (and the summary beside --out)
        print_device_state(console, res.device_state)
        console.print(f"end to end: {power_text(res.power)}", markup=False, highlight=False)
    if res.summary:
        console.print(f"wrote {res.summary}", markup=False, highlight=False)


@app.command()
def bundle(
    run: RunArg = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="The bundle folder to write (default <run>/bundle).")] = None,
    data: Data = None,
    check_images: Annotated[Optional[int], typer.Option("--check-images", min=1, help="Val images to carry for the device's check (default: as many as export scored on, up to 100).")] = None,
    no_check_images: Annotated[bool, typer.Option("--no-check-images", help="Carry no check images (the device then scores on a data folder of its own).")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing bundle at --out.")] = False,
    deepstream: Annotated[bool, typer.Option("--deepstream", help="Also write deepstream/: an nvinfer config (segmentation), its ONNX file (Softmax of the logits) and a gst-launch pipeline; needs an export with logits and --embed-preprocess float255 (or one std for all channels).")] = False,
    triton: Annotated[bool, typer.Option("--triton", help="Also write triton/ (the ONNX file on Triton's onnxruntime backend, TensorRT FP16 accelerator, dynamic batching) and triton-plan/ (the tensorrt backend, for a plan built on the server).")] = False,
    runs: Runs = DEFAULT_RUNS,
) -> None:
    """One folder to copy to the device: the export, its check images, a wheel of rdd-edge and install.sh."""
    from rdd_edge.deploy.bundle import BundleSpec, make_bundle

    console = Console()
    spec = BundleSpec(source=run, out=out, runs_root=runs, data=data, check_images=check_images,
                      images=not no_check_images, overwrite=overwrite, deepstream=deepstream, triton=triton)
    path = make_bundle(spec, say=lambda line: console.print(line))
    console.print(f"copy {path} to the device, then run: bash {shlex.quote(path.name + '/install.sh')}",
                  markup=False, highlight=False)
    console.print(f"wrote {path}")
