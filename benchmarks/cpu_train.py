"""Where a CPU training step of the quickstart goes, and what each CPU setting buys.

The pipeline's two training stages (``rdd-edge pipeline``: a DeepLabV3-R18 teacher, then a
MobileNetV2 student distilled with KD + RDD, crop 96x144, batch 8, synthetic scenes) take nearly
all of the quickstart. This times one step of each, phase by phase, with the trainer's own
pieces (``distill.train.build_model``, ``step_losses``, the data loader): data (the loader's
batches), teacher forward (inference mode), student forward, loss (task + RDD + KD), backward,
optimizer step. Then the whole step under each variant: the thread count, channels_last
(oneDNN's NHWC kernels), bf16 autocast where the CPU has native bf16, and optionally
torch.compile (with its compile time). Every figure names the CPU and its instruction set.

    python -m benchmarks.cpu_train --json cpu_train.json               # the quickstart's settings
    python -m benchmarks.cpu_train --iters 3 --warmup 1 --size 48x64   # smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from typing import Any, Callable

import torch

import rdd_edge.distill.train as trainer
from rdd_edge.cpuinfo import detect
from rdd_edge.distill.config import make_config
from rdd_edge.distill.data import available_cpus
from rdd_edge.distill.losses import build_kd_loss
from rdd_edge.distill.rdd import RDDWeighting
from rdd_edge.sizes import parse_hw

PHASES = ("teacher forward", "student forward", "loss", "backward", "optimizer")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="96x144", help="crop HxW (the quickstart's: 96x144)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--iters", type=int, default=8, help="timed steps per figure")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--teacher", default="r18")
    p.add_argument("--student", default="mbv2")
    p.add_argument("--compile", action="store_true", help="also time torch.compile (and its compile time)")
    p.add_argument("--data-batches", type=int, default=8, help="loader batches to time (0: skip the data figure)")
    p.add_argument("--json", default=None, help="write the figures here")
    return p.parse_args(argv)


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AMX or AVX-512 BF16); elsewhere bf16 is emulated and slower."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return any(f in flags for f in (" amx_bf16", " avx512_bf16"))


class Models:
    """Teacher, student, losses and optimizer as the trainer builds them for one distillation step."""

    def __init__(self, args: argparse.Namespace, channels_last: bool) -> None:
        t_cfg = make_config("teacher", model=args.teacher, device="cpu")
        s_cfg = make_config("distill", model=args.student, method="kd", rdd=True, device="cpu", tfe_fraction=0.0)
        torch.manual_seed(0)
        self.teacher = trainer.build_model(t_cfg, 11).eval().requires_grad_(False)
        self.student = trainer.build_model(s_cfg, 11).train()
        self.fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.teacher = self.teacher.to(memory_format=self.fmt)
        self.student = self.student.to(memory_format=self.fmt)
        # TSE (90% of a run): tfe_fraction 0 starts and stays there
        self.rdd = RDDWeighting(enabled=True, tfe_fraction=0.0, threshold=s_cfg.rdd_threshold, mode=s_cfg.rdd_mode,
                                confidence=s_cfg.confidence, aux_weight=s_cfg.aux_weight)
        self.kd = build_kd_loss("kd", s_cfg.kd_weight, s_cfg.kd_options)
        self.opt = torch.optim.SGD(self.student.parameters(), lr=1e-4, momentum=0.9, weight_decay=1e-4)
        self.t_cfg = t_cfg


def _time(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def phases(m: Models, images: torch.Tensor, labels: torch.Tensor, autocast: Any, iters: int, warmup: int) -> dict[str, float]:
    """Median ms of each phase of the distillation step."""
    times: dict[str, list[float]] = {k: [] for k in PHASES}
    images = images.contiguous(memory_format=m.fmt)
    for i in range(warmup + iters):
        rec: dict[str, float] = {}
        with autocast():
            with torch.inference_mode():
                t0 = time.perf_counter()
                t_out = m.teacher(images)
                rec["teacher forward"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            s_out = m.student(images)
            rec["student forward"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            loss, _ = trainer.step_losses(s_out, t_out, labels, m.rdd, m.kd)
            rec["loss"] = time.perf_counter() - t0
        m.opt.zero_grad(set_to_none=True)
        rec["backward"] = _time(loss.backward)
        rec["optimizer"] = _time(m.opt.step)
        if i >= warmup:
            for k, v in rec.items():
                times[k].append(v * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


def teacher_step(args: argparse.Namespace, images: torch.Tensor, labels: torch.Tensor, channels_last: bool) -> float:
    """Median ms of one step of the teacher's own training (forward with aux, CE, backward, SGD)."""
    cfg = make_config("teacher", model=args.teacher, device="cpu")
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = trainer.build_model(cfg, 11).train().to(memory_format=fmt)
    rdd = RDDWeighting(enabled=False, aux_weight=cfg.aux_weight)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    x = images.contiguous(memory_format=fmt)
    out = []
    for i in range(args.warmup + args.iters):
        t = time.perf_counter()
        loss, _ = trainer.step_losses(model(x), None, labels, rdd, None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= args.warmup:
            out.append((time.perf_counter() - t) * 1000)
    return statistics.median(out)


def data_ms(args: argparse.Namespace, workers: int, cached: bool) -> float:
    """Median ms per batch of the trainer's own loader over the synthetic scenes: each scene rendered on first
    use (``cached=False``: a fresh cache), or already in the in-memory cache (the rest of a run)."""
    from rdd_edge.data import DataSpec, open_split
    from rdd_edge.data import synthetic
    from rdd_edge.distill.data import close_loader, train_loader
    from rdd_edge.normalize import DEFAULT

    n = (args.data_batches + 2) * args.batch
    cfg = make_config("distill", model=args.student, device="cpu", crop=parse_hw(args.size), batch=args.batch,
                      iters=args.data_batches + 2)
    reader = open_split(DataSpec(name="synthetic", train_images=n), "train")
    synthetic._CACHE = synthetic._RenderCache()
    if cached:
        for i in range(n):
            reader[i]
    loader = train_loader(reader, cfg, DEFAULT, 0, 0, 1, workers=workers)
    it, times = iter(loader), []
    try:
        next(it)  # start-up (worker processes) not counted
        for _ in range(args.data_batches):
            t = time.perf_counter()
            next(it)
            times.append((time.perf_counter() - t) * 1000)
    finally:
        close_loader(loader)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    h, w = parse_hw(args.size)
    cpu = detect()
    cores = available_cpus()
    torch.manual_seed(0)
    images = torch.randn(args.batch, 3, h, w)
    labels = torch.randint(0, 11, (args.batch, h, w))
    bf16 = native_bf16()
    none = contextlib.nullcontext
    report: dict[str, Any] = {"cpu": cpu.line(), "cpus_available": cores, "torch_threads_default": torch.get_num_threads(),
                              "size": [h, w], "batch": args.batch, "teacher": args.teacher, "student": args.student,
                              "native_bf16": bf16, "date": time.strftime("%Y-%m-%d"), "variants": {}}
    print(f"CPU: {cpu.line()}\n{cores} CPUs available to this process; torch uses {torch.get_num_threads()} threads")
    if args.data_batches:
        for workers in (0, min(2, cores)):
            for cached in (False, True):
                ms = data_ms(args, workers, cached)
                report[f"data_ms_workers{workers}{'_cached' if cached else ''}"] = ms
                print(f"data: {ms:.1f} ms per batch of {args.batch} with {workers} loader workers, "
                      + ("scenes cached in memory" if cached else "each scene rendered on first use"))
    variants: list[tuple[str, int, bool, Any]] = [
        ("default (NCHW)", torch.get_num_threads(), False, none),
        ("channels_last", torch.get_num_threads(), True, none),
        ("1 thread", 1, False, none),
    ]
    if bf16:
        variants.append(("channels_last + bf16 autocast", torch.get_num_threads(), True,
                         lambda: torch.autocast("cpu", dtype=torch.bfloat16)))
    default_threads = torch.get_num_threads()
    for name, threads, cl, ac in variants:
        torch.set_num_threads(threads)
        m = Models(args, cl)
        ph = phases(m, images, labels, ac, args.iters, args.warmup)
        t_ms = teacher_step(args, images, labels, cl)
        total = sum(ph.values())
        report["variants"][name] = {"threads": threads, "channels_last": cl, "distill_phases_ms": ph,
                                    "distill_step_ms": total, "teacher_step_ms": t_ms}
        print(f"{name}: distill step {total:.0f} ms (" + ", ".join(f"{k} {v:.0f}" for k, v in ph.items())
              + f"); teacher step {t_ms:.0f} ms")
    torch.set_num_threads(default_threads)
    if args.compile:
        m = Models(args, True)
        t = time.perf_counter()
        m.student = torch.compile(m.student)
        ph = phases(m, images, labels, none, 1, 0)  # the first call compiles
        compile_s = time.perf_counter() - t
        ph = phases(m, images, labels, none, args.iters, args.warmup)
        report["variants"]["channels_last + compile"] = {"compile_s": compile_s, "distill_phases_ms": ph,
                                                          "distill_step_ms": sum(ph.values())}
        print(f"compile: {compile_s:.0f} s to compile, then distill step {sum(ph.values()):.0f} ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
