"""PyTorch inference latency of the students (and the teacher): FP16 on a GPU, eager and compiled.

    python -m benchmarks.torch_latency --device cuda --size 1024x2048 --json $OUT/torch-latency.json
    python -m benchmarks.torch_latency --device cpu --size 64x128 --models mbv2 --runs 3 --no-compile   # smoke

For every model: the network built as export builds it (no aux head, eval mode, 19 classes like
Cityscapes), channels_last on CUDA, autocast FP16 (``--dtype``), batch 1; timed with CUDA
events around each forward after warm-up (``deploy.latency``'s sigma clipping and percentiles),
once eager and once through ``torch.compile`` (its compile time reported separately). On CPU the
figures name the CPU and its vector instruction set.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import numpy as np

MODELS = ("mbv2", "r18", "psp18", "r101")


def timed_runs(fn, device, runs: int, warmup: int) -> np.ndarray:
    """Seconds per call of ``fn()``, measured with CUDA events on a GPU (no host timer skew)."""
    import torch

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end) / 1000.0)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return np.asarray(times)


def measure_model(name: str, args, device) -> list[dict]:
    import torch

    from rdd_edge.deploy.latency import summarize
    from rdd_edge.models import create_model
    from rdd_edge.sizes import parse_hw

    h, w = parse_hw(args.size, "--size")
    torch.manual_seed(0)
    model = create_model(name, num_classes=args.classes).eval().to(device)
    x = torch.randn(1, 3, h, w, device=device)
    if device.type == "cuda":
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}[args.dtype]
    amp = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype is not None else contextlib.nullcontext
    rows = []
    for mode in ("eager", *(() if args.no_compile else ("compiled",))):
        net = model if mode == "eager" else torch.compile(model, mode=args.compile_mode)

        @torch.inference_mode()
        def forward() -> None:
            with amp():
                net(x)

        t0 = time.perf_counter()
        forward()  # the first call compiles (compiled) or warms cuDNN's algorithm choice (eager)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        first_s = time.perf_counter() - t0
        lat = summarize(timed_runs(forward, device, args.runs, args.warmup), batch=1)
        rows.append({"model": name, "mode": mode, "dtype": args.dtype, "size": f"{h}x{w}", "first_call_s": first_s,
                     **lat.as_dict()})
    return rows


def main(argv=None) -> int:
    import torch

    from rdd_edge.devices import parse_device

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--size", default="1024x2048", help="input HxW (Cityscapes: 1024x2048)")
    p.add_argument("--models", default="mbv2,r18,psp18", help=f"comma-separated, of {', '.join(MODELS)}")
    p.add_argument("--classes", type=int, default=19)
    p.add_argument("--dtype", default="fp16", choices=("fp16", "bf16", "fp32"))
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--no-compile", action="store_true", help="eager only")
    p.add_argument("--compile-mode", default="max-autotune-no-cudagraphs", help="torch.compile mode")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    dev = parse_device(args.device)
    device = torch.device("cuda" if dev == "auto" and torch.cuda.is_available() else ("cpu" if dev == "auto" else dev))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    rows = [r for name in args.models.split(",") if name.strip() for r in measure_model(name.strip(), args, device)]
    meta = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d")}
    if device.type == "cpu":
        from rdd_edge.cpuinfo import detect

        meta["cpu"] = detect().line()
    print(f"{meta['device']}, torch {meta['torch']}" + (f", CPU: {meta['cpu']}" if "cpu" in meta else ""))
    print(f"{'model':8} {'mode':9} {'dtype':5} {'size':10} {'p50 ms':>8} {'p90 ms':>8} {'FPS':>7} {'1st call s':>10}")
    for r in rows:
        print(f"{r['model']:8} {r['mode']:9} {r['dtype']:5} {r['size']:10} {r['p50_ms']:8.2f} {r['p90_ms']:8.2f} "
              f"{r['fps']:7.1f} {r['first_call_s']:10.1f}")
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
