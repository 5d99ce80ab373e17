"""Speed of one distillation training step: student only, KD, KD+RDD (TFE and TSE stages).

Every variant times ``distill.train.train_step`` itself, the step the trainer runs (teacher
forward under inference_mode, student forward, loss, NaN guard recorded on the device and read
after the timed steps, backward, clipping when
``--grad-clip`` is set, SGD step), on the ``StepContext`` that ``distill.train.build_step_context``
(the trainer's own) puts together from that variant's config (the student built as training builds
it, aux head included; channels_last, the KD term bound to both models), on the same random
batch with the same AMP setting; so the differences are what each loss costs. ``--method``
picks the KD term (``kd``, ``cwd``, ``at``: AT runs both models with ``features=True``, as
training does). Reports ms/iteration, RDD's overhead over the KD method alone, and achieved
TFLOP/s of the step (convolution/matmul FLOPs counted by ``torch.utils.flop_counter``,
backward included) next to a measured dense matmul rate.

    python -m benchmarks.distill_speed --device cuda --size 512x1024 --batch 8 --iters 30
    python -m benchmarks.distill_speed --device cuda --size 512x1024 --batch 8 --method at
    python -m benchmarks.distill_speed --device cpu --size 48x64 --batch 2 --iters 2   # smoke test
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

import rdd_edge.distill.train as trainer  # trainer.train_step is looked up per call: the step training runs
from rdd_edge.distill.config import TrainConfig, make_config
from rdd_edge.distill.dist import init_distributed
from rdd_edge.distill.losses import method_names
from rdd_edge.models import create_model
from rdd_edge.errors import RddError
from rdd_edge.sizes import parse_hw

VARIANTS = [  # name, uses the teacher, KD method ("kd": the one --method names), rdd stage
    ("student only", False, "none", None),
    ("KD", True, "kd", None),
    ("KD + RDD (TFE)", True, "kd", "tfe"),
    ("KD + RDD (TSE)", True, "kd", "tse"),
]
MATMUL_N = {"cuda": 8192, "cpu": 1024}  # default size of the peak-rate matmul per device type


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


def variant_config(args, method: str, stage: str | None) -> TrainConfig:
    """The trainer's config of one variant; an RDD variant spends the whole run in its stage.

    lr: any value costs the same; a small one keeps many steps on random data finite."""
    return make_config("distill", model=args.student, method=args.method if method == "kd" else method, rdd=stage is not None,
                       tfe_fraction=1.0 if stage == "tfe" else 0.0, device=args.device, amp=args.amp,
                       compile=args.compile, grad_clip=args.grad_clip, model_kwargs=model_kwargs(args), lr=1e-4)


def model_kwargs(args) -> dict:
    return {"head_channels": args.head_channels} if args.head_channels else {}


def step_context(cfg: TrainConfig, teacher, num_classes: int, device: torch.device):
    """(the trainer's StepContext of ``cfg``, the unwrapped student): the student built and seeded as training
    builds it, the step put together by ``distill.train.build_step_context`` itself.

    ``teacher`` None: the student alone (the trainer loads no teacher for ``--method none --no-rdd``)."""
    torch.manual_seed(0)
    student = trainer.build_model(cfg, num_classes).to(device)
    trainer.set_train_mode(student, cfg.freeze_bn)
    return trainer.build_step_context(cfg, student, teacher), student


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


def time_steps(ctx, images, labels, warmup: int, iters: int, device: torch.device) -> float:
    """Median ms of ``iters`` calls of ``distill.train.train_step`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        trainer.train_step(ctx, images, labels)
    sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        trainer.train_step(ctx, images, labels)
        sync(device)
        times.append(time.perf_counter() - t0)
    ctx.guard.check()  # the step's NaN guard (kept on the device), read once the timing is done
    return 1000 * statistics.median(times)  # robust to a stray slow iteration


def run(args) -> tuple[list[dict], dict]:
    device = init_distributed(args.device)  # the trainer's --device resolution (one process here)
    h, w = parse_hw(args.size, "--size")
    if device.type == "cuda":  # as distill.train.train sets them
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(0)
    teacher = create_model(args.teacher, num_classes=args.classes, aux=True, **model_kwargs(args))
    teacher = teacher.to(device).eval().requires_grad_(False)  # build_step_context gives it the trainer's memory format
    images = torch.randn(args.batch, 3, h, w, device=device)  # NCHW like a loader's batch; train_step converts
    labels = torch.randint(0, args.classes, (args.batch, h, w), device=device)

    rows, baseline = [], None
    for name, uses_teacher, method, stage in VARIANTS:
        cfg = variant_config(args, method, stage)
        ctx, student = step_context(cfg, teacher if uses_teacher else None, args.classes, device)
        ms = time_steps(ctx, images, labels, args.warmup, args.iters, device)
        flops = step_flops(student, ctx.teacher, images)
        rows.append({"variant": name.replace("KD", args.method.upper()) if method == "kd" else name, "ms": ms,
                     "gflop_per_step": flops / 1e9, "tflops": flops / (ms / 1000) / 1e12})
        if baseline is None and method != "none" and stage is None:
            baseline = ms  # the KD method alone
        del ctx, student
    amp = str(trainer.amp_setup(cfg, device)[2] or "off").replace("torch.", "")  # the same for every variant
    for r in rows:
        r["vs_kd"] = r["ms"] / baseline - 1.0 if baseline else None
    peak_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    matmul_n = args.matmul_n or MATMUL_N.get(device.type, MATMUL_N["cpu"])
    peak = matmul_tflops(device, peak_dtype, matmul_n)
    for r in rows:
        r["of_matmul_peak"] = r["tflops"] / peak
    cpu = None
    if device.type == "cpu":  # which CPU, and its INT8 instruction set, next to CPU timings
        from rdd_edge.cpuinfo import detect

        cpu = detect().as_dict()
    return rows, {"device": str(torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"), "cpu": cpu,
                  "amp": amp, "size": f"{h}x{w}", "batch": args.batch, "student": args.student,
                  "teacher": args.teacher, "method": args.method, "grad_clip": args.grad_clip,
                  "matmul_tflops": peak, "matmul_n": matmul_n, "matmul_dtype": str(peak_dtype).replace("torch.", "")}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--size", default="512x1024", help="input HxW (paper: Cityscapes crop 512x1024)")
    p.add_argument("--batch", type=int, default=4, help="batch per step (per GPU)")
    p.add_argument("--iters", type=int, default=20, help="timed iterations per variant")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    p.add_argument("--student", default="r18")
    p.add_argument("--teacher", default="r101")
    p.add_argument("--method", default="kd", choices=[m for m in method_names() if m != "none"],
                   help="KD term of the distilling variants (registered default weight and options)")
    p.add_argument("--classes", type=int, default=19)
    p.add_argument("--head-channels", type=int, default=None, help="override head width (tiny smoke tests)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True, help="AMP on CUDA (bf16 where supported)")
    p.add_argument("--compile", action="store_true", help="torch.compile the student")
    p.add_argument("--grad-clip", type=float, default=0.0, help="max gradient norm, as the trainer's --grad-clip (0 = off)")
    p.add_argument("--matmul-n", type=int, default=None,
                   help=f"matrix size of the peak-rate matmul (default {MATMUL_N['cuda']} on CUDA, {MATMUL_N['cpu']} on CPU)")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    if args.iters < 1 or args.warmup < 0 or args.batch < 1:
        p.error("--iters and --batch must be >= 1, --warmup >= 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        rows, meta = run(args)
    except RddError as exc:  # e.g. the NaN guard of train_step, an unknown model
        print(f"error: {exc}", file=sys.stderr)
        return 1

    from rich.console import Console
    from rich.table import Table

    t = Table(title=(f"distillation step, {meta['student']} <- {meta['teacher']}, batch {meta['batch']} x {meta['size']}, "
                     f"{meta['device']}, AMP {meta['amp']}"))
    for col in ("variant", "ms/iter", f"vs {args.method.upper()}", "GFLOP/step", "TFLOP/s", "of matmul peak"):
        t.add_column(col, justify="left" if col == "variant" else "right")
    for r in rows:
        t.add_row(r["variant"], f"{r['ms']:.1f}", "-" if r["vs_kd"] is None else f"{100 * r['vs_kd']:+.1f}%", f"{r['gflop_per_step']:.1f}",
                  f"{r['tflops']:.3f}", f"{100 * r['of_matmul_peak']:.1f}%")
    t.caption = f"matmul peak ({meta['matmul_dtype']}, n={meta['matmul_n']}): {meta['matmul_tflops']:.2f} TFLOP/s"
    Console().print(t)
    if meta.get("cpu"):  # a plain line, never wrapped by the console: whole on any terminal, as the other benchmarks print it
        print(f"CPU: {meta['cpu']['line']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
