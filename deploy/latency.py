"""Model-only latency: warm-up, a run count set by a minimum time, sigma clipping, percentiles.

Same recipe as Ultralytics' ``ProfileModels``: a few warm-up calls, time a handful of runs to
estimate one call, run enough to fill ``min_time`` (within bounds), drop runs beyond
``sigma`` standard deviations (OS hiccups), report mean/std/p50/p90/p99 ms and FPS
(images per second: batch / mean time).

Two clocks. The main figures are *host-to-host*: wall time of one ``seg.run`` call, so the copy into
page-locked memory, the host-to-device copy, the execute, the device-to-host copy and the numpy copy of
the outputs. For TensorRT engines ``gpu_compute`` adds the *GPU compute time* of the same runs: CUDA
events recorded on the stream just before and after ``execute_async_v3`` (what trtexec reports as "GPU
Compute Time": "the GPU latency to execute the kernels for a query", TensorRT's "Command-Line Programs"
page), sigma-clipped the same way; other backends have none (``gpu_note`` says why).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np


@dataclass
class Latency:
    batch: int
    runs: int  # timed runs kept after clipping
    mean_ms: float
    std_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    fps: float  # images per second
    gpu_compute: dict | None = None  # TensorRT: {runs, mean_ms, p50_ms, p90_ms, p99_ms} from CUDA events
    gpu_note: str = ""  # why there is no gpu_compute ("host-to-host only: ...", "unknown: ...")

    def as_dict(self) -> dict:
        return asdict(self)


def sigma_clip(x: np.ndarray, sigma: float = 2.0, max_iters: int = 3) -> np.ndarray:
    """Drop values more than ``sigma`` std from the mean, repeatedly, until none is dropped."""
    x = np.asarray(x, dtype=np.float64)
    for _ in range(max_iters):
        if x.size < 3:
            break
        m, s = x.mean(), x.std()
        keep = np.abs(x - m) <= sigma * s if s > 0 else np.ones_like(x, dtype=bool)
        if keep.all():
            break
        x = x[keep]
    return x


def summarize(times_s: np.ndarray, batch: int = 1, sigma: float = 2.0) -> Latency:
    """Per-call times in seconds -> :class:`Latency` (after sigma clipping)."""
    ms = sigma_clip(np.asarray(times_s, dtype=np.float64) * 1000.0, sigma)
    mean = float(ms.mean())
    return Latency(
        batch=int(batch),
        runs=int(ms.size),
        mean_ms=mean,
        std_ms=float(ms.std()),
        p50_ms=float(np.percentile(ms, 50)),
        p90_ms=float(np.percentile(ms, 90)),
        p99_ms=float(np.percentile(ms, 99)),
        fps=float(batch * 1000.0 / mean) if mean > 0 else float("inf"),
    )


def gpu_summary(times_ms: list[float], sigma: float = 2.0) -> dict:
    """GPU milliseconds per run -> ``{runs, mean_ms, p50_ms, p90_ms, p99_ms}`` (sigma-clipped like the host times)."""
    ms = sigma_clip(np.asarray(times_ms, dtype=np.float64), sigma)
    return {"runs": int(ms.size), "mean_ms": float(ms.mean()), "p50_ms": float(np.percentile(ms, 50)),
            "p90_ms": float(np.percentile(ms, 90)), "p99_ms": float(np.percentile(ms, 99))}


def measure(
    fn: Callable[[], object],
    batch: int = 1,
    warmup: int = 3,
    min_time: float = 1.0,
    min_runs: int = 10,
    max_runs: int = 1000,
    sigma: float = 2.0,
    gpu_times: list[float] | None = None,
) -> Latency:
    """Time ``fn()`` (one inference of ``batch`` images) after ``warmup`` calls.

    ``gpu_times``: a list ``fn`` appends one GPU time (ms) to per call (a TensorRT runner's CUDA events);
    emptied before the timed runs and summarised as ``gpu_compute`` when it holds one per timed run."""
    for _ in range(max(warmup, 1)):
        fn()
    t0 = time.perf_counter()
    probe = 3
    for _ in range(probe):
        fn()
    per_call = max((time.perf_counter() - t0) / probe, 1e-6)
    n = int(np.clip(min_time / per_call, min_runs, max_runs))
    times = np.empty(n)
    if gpu_times is not None:
        gpu_times.clear()
    for i in range(n):
        t = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - t
    lat = summarize(times, batch, sigma)
    if gpu_times is not None:
        if len(gpu_times) == n:
            lat.gpu_compute = gpu_summary(gpu_times, sigma)
        else:
            lat.gpu_note = f"unknown: {len(gpu_times)} GPU timings for {n} runs"
    return lat


def measure_segmenter(seg, batch: int = 1, **kw) -> Latency:
    """Latency of ``seg.run`` on a preprocessed batch of random images (model only, no pre/post): host-to-host,
    and for a TensorRT engine also the GPU compute time of the same runs (CUDA events around execute)."""
    h, w = seg.info.input_size
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(batch)]
    x = np.concatenate([seg.preprocess(im) for im in imgs])
    backend = getattr(seg, "backend", None)
    start = getattr(backend, "start_gpu_timing", None)
    if start is None:  # ONNX Runtime, torch: one clock only
        lat = measure(lambda: seg.run(x), batch=batch, **kw)
        lat.gpu_note = f"host-to-host only ({getattr(seg, 'provider', type(backend).__name__)}: no GPU timer)"
        return lat
    why = start()
    if why:
        lat = measure(lambda: seg.run(x), batch=batch, **kw)
        lat.gpu_note = f"unknown: {why}"
        return lat
    try:
        return measure(lambda: seg.run(x), batch=batch, gpu_times=backend.gpu_times, **kw)
    finally:
        backend.stop_gpu_timing()
