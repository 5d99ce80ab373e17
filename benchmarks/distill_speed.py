"""Speed of one distillation training step: student only, KD, KD+RDD (TFE and TSE stages).

Every variant runs the same step as ``distill.train`` (teacher forward under inference_mode,
student forward + backward, SGD step) on the same random batch with the same AMP setting, so
the differences are what each loss costs. Reports ms/iteration, RDD's overhead over plain KD,
and achieved TFLOP/s of the step (convolution/matmul FLOPs counted by
``torch.utils.flop_counter``, backward included) next to a measured dense matmul rate.

    python benchmarks/distill_speed.py --device cuda --size 512x1024 --batch 8 --iters 30
    python benchmarks/distill_speed.py --device cpu --size 48x64 --batch 2 --iters 2   # smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.losses import build_kd_loss  # noqa: E402
from distill.rdd import RDDWeighting  # noqa: E402
from distill.train import step_losses  # noqa: E402
from models import create_model  # noqa: E402

VARIANTS = [  # name, uses teacher, kd method, rdd stage
    ("student only", False, "none", None),
    ("KD", True, "kd", None),
    ("KD + RDD (TFE)", True, "kd", "tfe"),
    ("KD + RDD (TSE)", True, "kd", "tse"),
]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_tflops(device: torch.device, dtype: torch.dtype, n: int, reps: int = 10) -> float:
    """Measured dense matmul rate (TFLOP/s) of an n x n x n product, the device's practical peak."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12


def make_step(student, teacher, kd, rdd, stage, optimizer, autocast, scaler):
    """One training step of ``distill.train`` (forward, loss, backward, SGD)."""

    def step(images, labels):
        with autocast():
            t_out = None
            if teacher is not None:
                with torch.inference_mode():
                    t_out = teacher(images)
            s_out = student(images)
            if stage is not None:
                rdd.current = stage
            loss, _ = step_losses(s_out, t_out, labels, rdd, kd)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss

    return step


def forward_flops(model, images) -> int:
    """Convolution/matmul FLOPs of one forward pass (FlopCounterMode; multiply-add = 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(images)
    return int(counter.get_total_flops())


def step_flops(student, teacher, images) -> int:
    """FLOPs of one step: teacher forward + 3 x student forward (backward ~ 2 x forward).

    Counted from forward passes only: torch's FlopCounterMode overcounts the backward of grouped
    (depthwise) convolutions (about 33x for a 32-group 3x3 conv in torch 2.14), which would
    inflate MobileNetV2's step several-fold.
    """
    total = 3 * forward_flops(student, images)
    if teacher is not None:
        total += forward_flops(teacher, images)
    return total


def run(args) -> list[dict]:
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    h, w = (int(v) for v in args.size.lower().split("x"))
    use_amp = args.amp and device.type == "cuda"
    dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    autocast = (lambda: torch.autocast("cuda", dtype=dtype)) if use_amp else contextlib.nullcontext
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    kw = {"head_channels": args.head_channels} if args.head_channels else {}
    torch.manual_seed(0)
    teacher = create_model(args.teacher, num_classes=args.classes, aux=True, **kw).to(device).eval().requires_grad_(False)
    images = torch.randn(args.batch, 3, h, w, device=device)
    labels = torch.randint(0, args.classes, (args.batch, h, w), device=device)
    if device.type == "cuda":
        teacher = teacher.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)

    rows = []
    for name, with_teacher, method, stage in VARIANTS:
        torch.manual_seed(0)
        student = create_model(args.student, num_classes=args.classes, **kw).to(device).train()
        if device.type == "cuda":
            student = student.to(memory_format=torch.channels_last)
        fwd = torch.compile(student) if args.compile else student
        optimizer = torch.optim.SGD(student.parameters(), lr=1e-4, momentum=0.9)
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp and dtype == torch.float16)
        rdd = RDDWeighting(enabled=stage is not None, tfe_fraction=0.1)
        step = make_step(fwd, teacher if with_teacher else None, build_kd_loss(method), rdd, stage, optimizer, autocast, scaler)
        for _ in range(args.warmup):
            step(images, labels)
        sync(device)
        times = []
        for _ in range(args.iters):
            t0 = time.perf_counter()
            step(images, labels)
            sync(device)
            times.append(time.perf_counter() - t0)
        times.sort()
        ms = 1000 * times[len(times) // 2]  # median: robust to a stray slow iteration
        flops = step_flops(student, teacher if with_teacher else None, images)
        rows.append({"variant": name, "ms": ms, "gflop_per_step": flops / 1e9, "tflops": flops / (ms / 1000) / 1e12})
        del student, optimizer, fwd
    kd_ms = next(r["ms"] for r in rows if r["variant"] == "KD")
    for r in rows:
        r["vs_kd"] = r["ms"] / kd_ms - 1.0
    peak_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    peak = matmul_tflops(device, peak_dtype, args.matmul_n)
    for r in rows:
        r["of_matmul_peak"] = r["tflops"] / peak
    cpu = None
    if device.type == "cpu":  # which CPU, and its INT8 instruction set, next to CPU timings
        from rdd_edge.cpuinfo import detect

        cpu = detect().as_dict()
    return rows, {"device": str(torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"), "cpu": cpu,
                  "amp": str(dtype).replace("torch.", "") if use_amp else "off", "size": f"{h}x{w}",
                  "batch": args.batch, "student": args.student, "teacher": args.teacher,
                  "matmul_tflops": peak, "matmul_dtype": str(peak_dtype).replace("torch.", "")}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--size", default="512x1024", help="input HxW (paper: Cityscapes crop 512x1024)")
    p.add_argument("--batch", type=int, default=4, help="batch per step (per GPU)")
    p.add_argument("--iters", type=int, default=20, help="timed iterations per variant")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    p.add_argument("--student", default="r18")
    p.add_argument("--teacher", default="r101")
    p.add_argument("--classes", type=int, default=19)
    p.add_argument("--head-channels", type=int, default=None, help="override head width (tiny smoke tests)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True, help="AMP on CUDA (bf16 where supported)")
    p.add_argument("--compile", action="store_true", help="torch.compile the student")
    p.add_argument("--matmul-n", type=int, default=8192, help="matrix size of the peak-rate matmul")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    rows, meta = run(args)

    from rich.console import Console
    from rich.table import Table

    t = Table(title=(f"distillation step, {meta['student']} <- {meta['teacher']}, batch {meta['batch']} x {meta['size']}, "
                     f"{meta['device']}, AMP {meta['amp']}"))
    for col in ("variant", "ms/iter", "vs KD", "GFLOP/step", "TFLOP/s", "of matmul peak"):
        t.add_column(col, justify="left" if col == "variant" else "right")
    for r in rows:
        t.add_row(r["variant"], f"{r['ms']:.1f}", f"{100 * r['vs_kd']:+.1f}%", f"{r['gflop_per_step']:.1f}",
                  f"{r['tflops']:.3f}", f"{100 * r['of_matmul_peak']:.1f}%")
    t.caption = f"matmul peak ({meta['matmul_dtype']}, n={args.matmul_n}): {meta['matmul_tflops']:.2f} TFLOP/s"
    if meta.get("cpu"):
        t.caption += f"\nCPU: {meta['cpu']['line']}"
    Console().print(t)
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
