"""``rdd-edge pipeline``: the whole job in one command.

Teacher -> RDD distillation of a student -> ONNX / FP16 / INT8 (and TensorRT engines where
TensorRT exists) -> ``check`` -> a demo video. With no arguments it runs on the embedded
synthetic scenes, sized to finish in about ten minutes on a 2-core CPU; every stage's own
command (``train-teacher``, ``distill``, ``export``, ``check``, ``demo``) exposes the full set of
options, and ``--dataset/--data/--iters/...`` scale this one up.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from rdd_edge.app import app

# The CPU quickstart: small enough for ten minutes on two cores, long enough to learn something.
QUICK = {"teacher_iters": 200, "iters": 200, "calib": 64, "demo_scenes": 12}


def _tensorrt_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorrt") is not None


def _pick_teacher(teacher_model: str, device: str) -> str:
    """``auto``: the paper's DeepLabV3-R101 on a GPU, DeepLabV3-R18 (4x the student) on a CPU."""
    if teacher_model != "auto":
        return teacher_model
    import torch

    on_gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return "deeplabv3_r101" if on_gpu else "deeplabv3_r18"


def write_demo_video(path: Path, size: tuple[int, int], scenes: int, hold: int = 4, fps: float = 8.0, seed: int = 1234) -> Path:
    """A short video of synthetic street scenes (each held ``hold`` frames), written atomically."""
    import cv2

    from rdd_edge.data.synthetic import render_scene
    from rdd_edge.errors import DeployError
    from rdd_edge.runs import atomic_path

    h, w = size
    with atomic_path(path, suffix=path.suffix) as tmp:  # OpenCV picks the container by suffix
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        if not writer.isOpened():
            raise DeployError(f"{path}: OpenCV cannot write mp4 video here")
        try:
            for i in range(scenes):
                image, _ = render_scene(seed + i, size)
                frame = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
                for _ in range(hold):
                    writer.write(frame)
        finally:
            writer.release()
    return path


def _fastest_passed(check_json: Path) -> str | None:
    """The file of the fastest ONNX artifact that passed the check (None if none passed)."""
    from rdd_edge.runs import read_json

    rows = read_json(check_json).get("rows", [])
    ok = [r for r in rows if r.get("status") == "passed" and str(r.get("file", "")).endswith(".onnx") and r.get("latency", {}).get("b1")]
    if not ok:
        return None
    return max(ok, key=lambda r: r["latency"]["b1"]["fps"])["file"]


@app.command()
def pipeline(
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="Data set (default: the embedded synthetic scenes).")] = None,
    data: Annotated[Optional[str], typer.Option("--data", help="Data set root folder (not needed for synthetic).")] = None,
    student: Annotated[str, typer.Option("--student", help="Student: mbv2, r18, psp18.")] = "mbv2",
    teacher_model: Annotated[str, typer.Option("--teacher-model", help="Teacher: auto (r101 on a GPU, r18 on a CPU), r101, r18, ...")] = "auto",
    teacher: Annotated[Optional[str], typer.Option("--teacher", help="Use this teacher checkpoint instead of training one.")] = None,
    teacher_iters: Annotated[Optional[int], typer.Option("--teacher-iters", help=f"Teacher iterations (synthetic default {QUICK['teacher_iters']}; else the data set preset).")] = None,
    iters: Annotated[Optional[int], typer.Option("--iters", help=f"Student iterations (synthetic default {QUICK['iters']}; else the data set preset).")] = None,
    method: Annotated[str, typer.Option("--method", help="KD loss: none, kd, cwd, at.")] = "kd",
    rdd: Annotated[bool, typer.Option("--rdd/--no-rdd", help="RDD weighting of the task loss.")] = True,
    batch: Annotated[Optional[int], typer.Option("--batch", help="Global batch size (default: preset).")] = None,
    device: Annotated[str, typer.Option("--device", help="Training device: auto, cpu, cuda.")] = "auto",
    calib: Annotated[int, typer.Option("--calib", help="INT8 calibration images from the train split.")] = QUICK["calib"],
    max_drop: Annotated[float, typer.Option("--max-drop", help="Check gate: max mIoU points a quantized artifact may lose.")] = 1.0,
    demo_scenes: Annotated[int, typer.Option("--demo-scenes", help="Synthetic scenes in the demo video.")] = QUICK["demo_scenes"],
    name: Annotated[str, typer.Option("--name", help="Run name: runs/teacher-NAME, runs/distill-NAME.")] = "pipeline",
    runs: Annotated[str, typer.Option("--runs", help="Parent folder of run folders.")] = "runs",
    seed: Annotated[int, typer.Option("--seed", help="Seed for init, data order and augmentation.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Teacher -> RDD student -> ONNX/FP16/INT8 (+TensorRT) -> check -> demo video, in one go."""
    from rich.console import Console
    from rich.table import Table

    from distill.config import make_config
    from distill.train import train
    from export.pipeline import export_run
    from rdd_edge.commands.deploy import check

    console = Console()
    t0 = time.perf_counter()
    synthetic = dataset in (None, "synthetic")
    t_iters = teacher_iters if teacher_iters is not None else (QUICK["teacher_iters"] if synthetic else None)
    s_iters = iters if iters is not None else (QUICK["iters"] if synthetic else None)
    common = dict(data=data, batch=batch, device=device, runs_root=runs, seed=seed, name=name)
    times: dict[str, float] = {}

    # -- 1. teacher
    t = time.perf_counter()
    if teacher is None:
        t_model = _pick_teacher(teacher_model, device)
        console.rule(f"[bold]1/5 teacher: {t_model}")
        t_cfg = make_config("teacher", dataset, model=t_model, iters=t_iters, **common)
        t_sum = train(t_cfg, progress=not quiet)
        teacher, teacher_miou = t_sum["best"], t_sum["best_miou"]
    else:
        console.rule("[bold]1/5 teacher: given")
        teacher_miou = None
    times["teacher"] = time.perf_counter() - t

    # -- 2. student, distilled with RDD
    t = time.perf_counter()
    console.rule(f"[bold]2/5 distill: {student} <- {Path(teacher).parent.name} ({method}{' + RDD' if rdd else ''})")
    s_cfg = make_config("distill", dataset, model=student, teacher=str(teacher), iters=s_iters, method=method, rdd=rdd, **common)
    s_sum = train(s_cfg, progress=not quiet)
    run_dir = Path(s_sum["run_dir"])
    times["distill"] = time.perf_counter() - t

    # -- 3. export
    t = time.perf_counter()
    trt = "all" if _tensorrt_available() else "none"
    console.rule(f"[bold]3/5 export: ONNX, FP16, INT8{', TensorRT' if trt != 'none' else ''}")
    if trt == "none":
        console.print("note: tensorrt is not installed, so no engines are built (pip install rdd-edge\\[trt] on an NVIDIA machine)")
    export_run(s_sum["best"], fp16=True, int8=True, trt=trt, calib=calib, data_root=data, runs_root=runs, console=console)
    times["export"] = time.perf_counter() - t

    # -- 4. check (the gate's failure is reported at the end, after the demo)
    t = time.perf_counter()
    console.rule("[bold]4/5 check")
    gate_failed = False
    try:
        check(run=run_dir, max_drop=max_drop, data_root=Path(data) if data else None, min_time=0.5)
    except typer.Exit as exc:
        gate_failed = exc.exit_code != 0
    times["check"] = time.perf_counter() - t

    # -- 5. demo video on synthetic frames, with the fastest artifact that passed
    t = time.perf_counter()
    console.rule("[bold]5/5 demo")
    import deploy
    from deploy.demo import run_demo

    export_dir = run_dir / "export"
    best_file = _fastest_passed(export_dir / "check.json") or "model.onnx"
    seg = deploy.load(export_dir / best_file)
    h, w = seg.info.input_size
    video_in = write_demo_video(run_dir / "demo" / "input.mp4", (2 * h, 2 * w), demo_scenes)
    res = run_demo(seg, str(video_in), out=run_dir / "demo" / "demo.mp4")
    times["demo"] = time.perf_counter() - t
    total = time.perf_counter() - t0

    # -- results
    table = Table(title="rdd-edge pipeline", show_header=False)
    if teacher_miou is not None:
        table.add_row("teacher", f"{Path(teacher).parent}  mIoU {100 * teacher_miou:.2f}")
    table.add_row("student", f"{run_dir}  mIoU {100 * (s_sum['best_miou'] or 0):.2f}")
    table.add_row("artifacts", str(export_dir))
    table.add_row("check", f"{export_dir / 'check.md'}" + ("  [red]gate FAILED[/]" if gate_failed else "  passed"))
    table.add_row("demo video", f"{res.out}  ({res.frames} frames, {best_file}, {res.fps:.1f} FPS end to end)")
    table.add_row("time", f"{total:.0f} s (" + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()) + ")")
    console.print(table)
    _record(run_dir, s_sum, teacher, teacher_miou, times, total, res, best_file, gate_failed)
    if gate_failed:
        raise typer.Exit(code=1)


def _record(run_dir: Path, s_sum: dict, teacher: Any, teacher_miou: Any, times: dict, total: float, res: Any, best_file: str, gate_failed: bool) -> None:
    from rdd_edge.runs import write_json

    write_json(run_dir / "pipeline.json", {
        "teacher": str(teacher), "teacher_miou": teacher_miou, "student": s_sum["model"], "student_miou": s_sum["best_miou"],
        "times_s": times, "total_s": total, "demo": str(res.out), "demo_frames": res.frames, "demo_artifact": best_file,
        "gate_failed": gate_failed,
    })
