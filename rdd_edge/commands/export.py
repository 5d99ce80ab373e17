"""``rdd-edge export``: checkpoint -> ONNX / FP16 / INT8 (QDQ) / TensorRT artifacts + manifest."""

from __future__ import annotations

from typing import Annotated, List, Optional

import typer

from rdd_edge.app import app


@app.command("export")
def export_cmd(
    source: Annotated[Optional[str], typer.Argument(metavar="[RUN_OR_CKPT]", help="Distill run folder or checkpoint (default: latest runs/distill-*, best.pt preferred).")] = None,
    fp16: Annotated[bool, typer.Option("--fp16", help="Also write model.fp16.onnx (FP16 weights, FP32 I/O).")] = False,
    int8: Annotated[bool, typer.Option("--int8", help="Also write model.int8.onnx (TensorRT QDQ) and model.int8-cpu.onnx (ONNX Runtime CPU), from one calibration.")] = False,
    trt: Annotated[str, typer.Option("--trt", help="TensorRT engines to build: none, fp16, int8, all (needs pip install rdd-edge\\[trt]).")] = "none",
    size: Annotated[Optional[str], typer.Option("--size", metavar="HxW", help="Input size (multiples of 8; PSPNet: of 48). Default: the data set's eval size.")] = None,
    dynamic: Annotated[bool, typer.Option("--dynamic", help="Dynamic H and W as well as batch (not PSPNet).")] = False,
    output: Annotated[str, typer.Option("--output", help="Graph outputs: labels (N,H,W int64), logits (N,C,H,W) or both.")] = "labels",
    embed_preprocess: Annotated[bool, typer.Option("--embed-preprocess", help="Graph takes uint8 RGB and does /255 and mean/std itself.")] = False,
    calib: Annotated[int, typer.Option("--calib", min=1, help="Calibration images from the train split (300-500 recommended).")] = 300,
    calib_method: Annotated[str, typer.Option("--calib-method", help="Calibration: percentile (99.999), entropy or minmax.")] = "percentile",
    calib_data: Annotated[Optional[str], typer.Option("--calib-data", help="Folder of training images to calibrate on instead of the train split.")] = None,
    keep_float: Annotated[Optional[List[str]], typer.Option("--keep-float", help="Conv node to keep in float in the INT8 files (repeatable).")] = None,
    int8_max_drop: Annotated[Optional[float], typer.Option("--int8-max-drop", help="Keep Conv layers in float (from the classifier back) until the INT8 mIoU drop vs FP32 is at most this many points (e.g. 1.0).")] = None,
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset (18: native for torch.onnx, inside TensorRT 10/11's range).")] = 18,
    check_images: Annotated[int, typer.Option("--check-images", min=1, help="Val images for parity and accuracy checks.")] = 8,
    data_root: Annotated[Optional[str], typer.Option("--data-root", help="Data set folder, if not the one recorded in the checkpoint.")] = None,
    workspace: Annotated[float, typer.Option("--workspace", help="TensorRT builder workspace in GB (1-2 on Jetson).")] = 2.0,
) -> None:
    """Export a distilled student to ONNX (+ FP16, INT8, TensorRT) with parity checks and a manifest."""
    from rich.console import Console
    from rich.table import Table

    from rdd_edge.errors import MissingDependencyError

    from export.formats import resolve_trt
    from export.manifest import MANIFEST
    from export.pipeline import export_run

    console = Console()
    trt = resolve_trt(trt)
    kwargs = dict(source=source, size=size, output=output, embed_preprocess=embed_preprocess, dynamic=dynamic,
                  fp16=fp16, int8=int8, calib=calib, calib_method=calib_method, calib_data=calib_data,
                  keep_float=tuple(keep_float or ()), int8_max_drop=int8_max_drop, opset=opset,
                  check_images=check_images, data_root=data_root, workspace_gb=workspace, console=console)
    trt_error = None
    if trt != "none":
        try:
            import tensorrt  # type: ignore[import-not-found]  # noqa: F401
        except ImportError:
            trt_error = MissingDependencyError(
                f"--trt {trt}: TensorRT is not installed: pip install rdd-edge[trt] (on Jetson it comes with JetPack); "
                "the ONNX artifacts were written")
            kwargs["fp16"] = fp16 or trt in ("fp16", "all")
            kwargs["int8"] = int8 or trt in ("int8", "all")
            trt = "none"
    manifest = export_run(trt=trt, **kwargs)
    table = Table(title=f"{manifest['model_name']} -> {manifest['export_dir']}")
    for col in ("file", "precision", "runtime", "MB", "check"):
        table.add_column(col, justify="right" if col == "MB" else "left")
    for key, a in manifest["artifacts"].items():
        chk = a.get("parity") or a.get("agreement") or {}
        cell = f"{chk['label_agreement']:.3%} labels agree" if "label_agreement" in chk else "-"
        if a.get("miou") is not None:
            cell += f", mIoU {100 * a['miou']:.2f}"
        table.add_row(a["file"], a["precision"], a["runtime"], f"{a['bytes'] / 1e6:.2f}", cell)
    console.print(table)
    console.print(f"manifest: {manifest['export_dir']}/{MANIFEST}")
    if trt_error is not None:
        raise trt_error
