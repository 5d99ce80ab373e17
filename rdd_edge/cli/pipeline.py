"""The whole job in one call: teacher -> RDD student -> ONNX / FP16 / INT8 (+ TensorRT) -> check -> demo video.

``run_pipeline(PipelineSpec)`` calls each stage's entry point in turn (``distill.train.train``,
``export.pipeline.export_run``, ``deploy.check.run_check``, ``deploy.demo.run_demo``); the
``pipeline`` command only declares options and prints. The stages are imported inside the
function, so importing this module needs no torch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from rdd_edge import formats
from rdd_edge.errors import DeployError
from rdd_edge.runs import DEFAULT_ROOT, atomic_path, write_json

# lazy imports: the stages (torch), rdd_edge.data and OpenCV are imported inside the functions: the CLI imports
# this module, and `rdd-edge --help` stays fast and torch-free

# The CPU quickstart: small enough for ten minutes on two cores, long enough to learn something.
# The quickstart on the synthetic scenes: about five minutes on a 2-core AVX2-only CPU (benchmarks/RESULTS.md,
# issue 21). The teacher gets 120 steps: 200 bought it ~2 mIoU for 90 s more; the student keeps 200 (at 150 it
# lost ~4 mIoU).
QUICK = {"teacher_iters": 120, "iters": 200, "calib": 64, "demo_scenes": 12}


@dataclass
class PipelineSpec:
    """Options of the one-command job (each stage's own command has the full set)."""

    dataset: str | None = None  # default: the embedded synthetic scenes
    data: str | Path | None = None
    student: str = "mbv2"
    teacher_model: str = "auto"  # auto: r101 on a GPU, r18 on a CPU
    teacher: str | Path | None = None  # a teacher checkpoint instead of training one
    teacher_iters: int | None = None
    iters: int | None = None
    method: str = "kd"
    rdd: bool = True
    batch: int | None = None
    device: str = "auto"
    calib: int = QUICK["calib"]
    max_drop: float = 1.0
    demo_scenes: int = QUICK["demo_scenes"]
    name: str = "pipeline"
    runs_root: str | Path = DEFAULT_ROOT
    seed: int = 0
    progress: bool = True
    pretrained: str | None = None  # backbone init of the teacher and the student: imagenet, PATH, none; None: imagenet
    # for real data sets, none for the synthetic scenes (so the default pipeline needs no download)


@dataclass
class PipelineResult:
    teacher: str
    teacher_miou: float | None
    student: dict  # the distill run's summary
    run_dir: Path
    export_dir: Path
    check: Any  # deploy.check.CheckResult
    demo: Any  # deploy.demo.DemoResult
    demo_artifact: str
    times: dict[str, float] = field(default_factory=dict)
    total_s: float = 0.0

    @property
    def passed(self) -> bool:
        return self.check.passed


def pick_teacher(teacher_model: str, device: str) -> str:
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


def every_format_spec(tensorrt: bool, **fields: Any) -> Any:
    """The ExportSpec of every format this machine can build (``tensorrt``: whether TensorRT is here):
    the formats table's rows, less the engines without TensorRT, asked for by their flags; ``fields``
    are the spec's other settings."""
    from rdd_edge.export.formats import spec_for

    return spec_for((f.flag for f in formats.buildable(tensorrt) if f.flag), **fields)


def run_pipeline(spec: PipelineSpec, stage: Callable[[str], None] = print, log: Any = None,
                 on_check_row: Callable[[Any], None] | None = None,
                 on_check: Callable[[Any], None] | None = None) -> PipelineResult:
    """Run every stage; ``stage(title)`` announces each, ``log`` (a rich Console) gets the export lines,
    ``on_check_row(row)`` hears of each checked artifact and ``on_check(result)`` of the whole check
    (the check itself is ``run_check``, as on the CLI)."""
    from rdd_edge.deploy.check import CheckSpec, run_check
    from rdd_edge.deploy.choose import fastest_passed
    from rdd_edge.deploy.demo import run_demo
    from rdd_edge.deploy.runtime import load
    from rdd_edge.distill.config import resolve_config
    from rdd_edge.distill.train import train
    from rdd_edge.export.pipeline import export_run
    from rdd_edge.export.tensorrt import available as tensorrt_available

    t0 = time.perf_counter()
    synthetic = spec.dataset in (None, "synthetic") and spec.data is None
    t_iters = spec.teacher_iters if spec.teacher_iters is not None else (QUICK["teacher_iters"] if synthetic else None)
    s_iters = spec.iters if spec.iters is not None else (QUICK["iters"] if synthetic else None)
    common = dict(data=spec.data, batch=spec.batch, device=spec.device, runs_root=str(spec.runs_root), seed=spec.seed,
                  name=spec.name, pretrained=spec.pretrained)
    times: dict[str, float] = {}

    # both configs first: a wrong model, method or data set name fails now, not after the teacher's minutes
    teacher, teacher_miou = spec.teacher, None
    t_model = pick_teacher(spec.teacher_model, spec.device) if teacher is None else None
    t_cfg = resolve_config("teacher", dataset=spec.dataset, model=t_model, iters=t_iters, **common) if t_model else None
    s_cfg = resolve_config("distill", dataset=spec.dataset, model=spec.student, iters=s_iters, method=spec.method,
                           rdd=spec.rdd, **common)

    t = time.perf_counter()
    if t_cfg is not None:
        stage(f"1/5 teacher: {t_model}")
        t_sum = train(t_cfg, progress=spec.progress)
        teacher, teacher_miou = t_sum["best"], t_sum["best_miou"]
    else:
        stage("1/5 teacher: given")
    times["teacher"] = time.perf_counter() - t

    t = time.perf_counter()
    stage(f"2/5 distill: {spec.student} <- {Path(teacher).parent.name} ({spec.method}{' + RDD' if spec.rdd else ''})")
    s_cfg.teacher = str(teacher)
    s_sum = train(s_cfg, progress=spec.progress)
    run_dir = Path(s_sum["run_dir"])
    times["distill"] = time.perf_counter() - t

    t = time.perf_counter()
    has_trt = tensorrt_available()
    wanted = formats.buildable(has_trt)  # every format this machine can build, from the table
    stage(f"3/5 export: {', '.join(f.name for f in wanted)}")
    if log is not None and len(wanted) < len(formats.FORMATS):
        log.print("note: tensorrt is not installed, so no engines are built (the `trt` extra on an NVIDIA machine)")
    manifest = export_run(every_format_spec(has_trt, source=s_sum["best"], calib=spec.calib,
                                            data=spec.data, runs_root=spec.runs_root), console=log)
    export_dir = Path(manifest["export_dir"])
    times["export"] = time.perf_counter() - t

    t = time.perf_counter()
    stage("4/5 check")
    check_spec = CheckSpec(run=run_dir, runs_root=spec.runs_root, max_drop=spec.max_drop, data=spec.data, min_time=0.5)
    check = run_check(check_spec, on_row=on_check_row)
    if on_check is not None:
        on_check(check)
    times["check"] = time.perf_counter() - t

    t = time.perf_counter()
    stage("5/5 demo")
    best_file = fastest_passed(export_dir) or "model.onnx"
    seg = load(export_dir / best_file)
    h, w = seg.info.input_size
    video_in = write_demo_video(run_dir / "demo" / "input.mp4", (2 * h, 2 * w), spec.demo_scenes)
    res = run_demo(seg, str(video_in), out=run_dir / "demo" / "demo.mp4")
    times["demo"] = time.perf_counter() - t

    result = PipelineResult(str(teacher), teacher_miou, s_sum, run_dir, export_dir, check, res, best_file, times,
                            time.perf_counter() - t0)
    write_json(run_dir / "pipeline.json", {
        "teacher": str(teacher), "teacher_miou": teacher_miou, "student": s_sum["model"], "student_miou": s_sum["best_miou"],
        "times_s": times, "total_s": result.total_s, "demo": str(res.out), "demo_frames": res.frames,
        "demo_artifact": best_file, "gate_failed": not check.passed, "gate_failures": check.failures,
    })
    return result
