"""`rdd-edge check` and `rdd-edge demo`: the deploy stage on the command line.

The torch checkpoint row of `check` is built here (torch imported lazily, only when installed),
so `deploy/` itself stays torch-free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from rdd_edge.app import app


def torch_candidate(manifest: dict[str, Any], export_dir: Path, threads: int | None = None):
    """The source checkpoint as a check row (None when torch/models or the checkpoint are absent).

    Same pre/post-processing as the runtime: resize + normalise with deploy's preprocess, logits
    upsampled bilinearly to the input size (as the exported graph does), argmax, nearest resize.
    """
    ckpt = manifest.get("source_checkpoint")
    if not ckpt or not Path(ckpt).is_file():
        return None
    try:
        import torch
        import torch.nn.functional as F

        from models import model_from_checkpoint
    except ImportError:
        return None
    from deploy.check import Candidate
    from deploy.info import build_info
    from deploy.postprocess import resize_labels, to_labels

    class TorchSegmenter:
        provider = f"torch {torch.__version__} CPU"

        def __init__(self) -> None:
            if threads:
                torch.set_num_threads(int(threads))
            self.model, _ = model_from_checkpoint(ckpt)
            self.model.eval()
            inp = manifest.get("input", {})
            shape = [1, 3, *(inp.get("size") or inp.get("shape", [1, 3, 0, 0])[2:])]
            self.info = build_info(export_dir / "model.onnx", "images", shape, "float32", ["logits"], {})
            self.info.embedded_preprocess = False

        def preprocess(self, image):  # noqa: ANN001, ANN202
            from deploy.preprocess import preprocess

            i = self.info
            return preprocess(image, i.input_size, i.mean, i.std)

        def run(self, batch):  # noqa: ANN001, ANN202
            with torch.inference_mode():
                x = torch.from_numpy(batch)
                out = self.model(x)["out"]
                return F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False).numpy()

        def predict_batch(self, images):  # noqa: ANN001, ANN202
            import numpy as np

            batch = np.concatenate([self.preprocess(im) for im in images])
            labels = to_labels(self.run(batch), "logits")
            return [resize_labels(lab, im.shape[:2]) for lab, im in zip(labels, images)]

    return Candidate(name="torch", load=TorchSegmenter, file=Path(ckpt), precision="fp32", gated=False)


@app.command()
def check(
    run: Annotated[Optional[Path], typer.Argument(help="Distill run (or its export folder); default: the latest distill run with an export.")] = None,
    images: Annotated[Optional[int], typer.Option("--images", help="Score on the first N val images (default: all).")] = None,
    batch: Annotated[int, typer.Option("--batch", help="Larger batch size for the second latency measurement.")] = 4,
    max_drop: Annotated[float, typer.Option("--max-drop", help="Gate: exit 1 when an artifact loses more than this many mIoU points vs FP32 ONNX.")] = 1.0,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda (ONNX Runtime providers; engines need cuda).")] = "cpu",
    threads: Annotated[Optional[int], typer.Option("--threads", help="ONNX Runtime intra-op threads (default: runtime's choice).")] = None,
    data: Annotated[Optional[str], typer.Option("--data", help="Data set name (default: the one in the export manifest).")] = None,
    data_root: Annotated[Optional[Path], typer.Option("--data-root", help="Data set folder (default: from the manifest; synthetic needs none).")] = None,
    min_time: Annotated[float, typer.Option("--min-time", help="Seconds of timed runs per latency measurement.")] = 1.0,
    no_torch: Annotated[bool, typer.Option("--no-torch", help="Leave out the torch checkpoint row.")] = False,
) -> None:
    """Check every exported artifact: status, size, mIoU and drop vs FP32, pixel agreement, latency; CI gate."""
    from rich.console import Console
    from rich import box
    from rich.table import Table

    from deploy.check import FAILED, FAILED_GATE, PASSED, SKIPPED, evaluate_rows, find_export_dir, gate_failures, load_eval_data, manifest_candidates, table_rows, write_report
    from deploy.info import read_manifest
    from rdd_edge.errors import ConfigError
    from rdd_edge.runs import resolve_run

    console = Console()
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"--device {device}: expected cpu or cuda")
    if batch < 1:
        raise ConfigError(f"--batch {batch}: must be >= 1")
    run_dir = resolve_run(run, "distill", "the run to check", must_contain="export/manifest.json")
    export_dir = find_export_dir(run_dir)
    manifest, _ = read_manifest(export_dir / "model.onnx")
    assert manifest is not None
    ds, imgs, lbls = load_eval_data(manifest, data, data_root, images)
    cands = manifest_candidates(export_dir, manifest, device=device, threads=threads)
    if not no_torch:
        tc = torch_candidate(manifest, export_dir, threads)
        if tc is not None:
            cands.insert(0, tc)
    n_cls = int(manifest.get("num_classes") or len(manifest.get("classes", [])))
    console.print(f"checking {len(cands)} artifacts of {export_dir} on {len(imgs)} {ds.info.name} val images")
    colours = {PASSED: "green", FAILED_GATE: "yellow", FAILED: "red", SKIPPED: "dim"}
    with console.status("") as status:
        def on_row(r: Any) -> None:
            console.print(f"  {r.name}: [{colours.get(r.status, 'white')}]{r.status}[/]" + (f" ({r.reason})" if r.reason else ""))

        status.update("measuring ...")
        rows = evaluate_rows(cands, imgs, lbls, n_cls, batch=batch, max_drop=max_drop,
                             ignore_index=int(manifest.get("ignore_index", 255)), latency_kw={"min_time": min_time}, on_row=on_row)
    meta = {"run": str(run_dir), "export_dir": str(export_dir), "model_name": manifest.get("model_name"), "dataset": ds.info.name,
            "split": "val", "images": len(imgs), "input_size": list((manifest.get("input") or {}).get("size") or (manifest.get("input") or {}).get("shape", [0, 0, 0, 0])[2:]),
            "max_drop": max_drop, "batch": batch, "device": device, "threads": threads}
    paths = write_report(export_dir, rows, meta)
    head, body = table_rows(rows, compact=True)
    table = Table(title=f"deploy check: {export_dir} (full table: check.md)", box=box.SIMPLE_HEAD, pad_edge=False)
    for h in head:
        table.add_column(h, no_wrap=h != "status", justify="left" if h in ("artifact", "status") else "right")
    for r, cells in zip(rows, body):
        table.add_row(*cells, style=colours.get(r.status))
    console.print(table)
    console.print(f"wrote {paths['json']}, {paths['md'].name}, {paths['png'].name}")
    bad = gate_failures(rows)
    if bad:
        console.print(f"[red]gate failed[/]: {', '.join(f'{r.name} lost {r.drop:.2f} mIoU points' for r in bad)} (--max-drop {max_drop:g})")
        raise typer.Exit(code=1)
    if any(r.name == "onnx" and r.status == FAILED for r in rows):
        console.print("[red]the FP32 ONNX model itself failed: nothing to compare against[/]")
        raise typer.Exit(code=1)


@app.command()
def demo(
    source: Annotated[str, typer.Option("--source", help="Camera index (0), video file, RTSP/HTTP URL, or a folder of images.")],
    model: Annotated[Optional[Path], typer.Option("--model", help="Artifact (.onnx / .engine); default: the latest distill run's export/model.onnx.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Output video (.mp4/.avi) or a folder for PNG frames.")] = None,
    show: Annotated[bool, typer.Option("--show", help="Show a window (only when a display exists).")] = False,
    alpha: Annotated[float, typer.Option("--alpha", help="Overlay opacity of the label colours, 0..1.")] = 0.5,
    max_frames: Annotated[Optional[int], typer.Option("--max-frames", help="Stop after N frames.")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    threads: Annotated[Optional[int], typer.Option("--threads", help="ONNX Runtime intra-op threads.")] = None,
) -> None:
    """Segment a camera, video, stream or image folder live: colour overlay, legend, FPS."""
    from rich.console import Console

    import deploy
    from deploy.demo import run_demo
    from rdd_edge.runs import resolve_run

    console = Console(stderr=True)
    if model is None:
        model = resolve_run(None, "distill", "the model to run", must_contain="export/model.onnx") / "export" / "model.onnx"
    seg = deploy.load(model, device=device, threads=threads)
    for note in seg.info.notes:
        console.print(f"note: {note}")
    console.print(f"{seg} <- {source}")
    res = run_demo(seg, source, out=out, show=show, alpha=alpha, max_frames=max_frames)
    for note in res.notes:
        console.print(f"note: {note}")
    where = f" -> {res.out}" if res.out else ""
    console.print(f"{res.frames} frames at {res.fps:.1f} FPS end to end{where}" + (" (interrupted)" if res.interrupted else ""))
