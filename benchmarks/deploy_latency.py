"""ONNX Runtime CPU latency of FP32, FP16 and both INT8 flavours, side by side in one run.

    python benchmarks/deploy_latency.py runs/distill-mbv2 runs/distill-r18 --sizes 360x480 --threads 2
    python benchmarks/deploy_latency.py runs/distill-mbv2/export/model.onnx --sizes 360x480,512x1024

Each argument is a run (its ``export/`` folder), an export folder, or one ``.onnx`` file (its
siblings ``model.fp16.onnx``, ``model.int8.onnx``, ``model.int8-cpu.onnx`` are picked up).
Sizes other than the exported one need a graph with dynamic H/W (``rdd-edge export --dynamic``);
otherwise that cell says why it was skipped. Prints a table and the INT8/FP32 speed ratios.
Model-only latency (``deploy.latency``: warm-up, min-time run count, sigma clipping).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deploy.latency import measure  # noqa: E402

FLAVOURS = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx", "int8-cpu": "model.int8-cpu.onnx"}


def artifacts(target: Path) -> tuple[str, dict[str, Path]]:
    """Name and flavour -> file for one command-line argument."""
    if target.is_file():
        folder, name = target.parent, target.parent.parent.name if target.parent.name == "export" else target.stem
    else:
        folder = target / "export" if (target / "export").is_dir() else target
        name = target.name if folder != target else (target.parent.name if target.name == "export" else target.name)
    found = {k: folder / f for k, f in FLAVOURS.items() if (folder / f).is_file()}
    if target.is_file():
        found.setdefault("fp32", target)
    if not found:
        raise SystemExit(f"error: {target}: no model*.onnx files found")
    return name, found


def session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def feed(sess, size: tuple[int, int], batch: int) -> dict:
    inp = sess.get_inputs()[0]
    shape = [batch, 3, *size]
    for i, d in enumerate(inp.shape):
        if isinstance(d, int) and d > 0 and d != shape[i]:
            raise ValueError(f"graph input is fixed at {inp.shape}; exported size differs from {size[0]}x{size[1]}")
    rng = np.random.default_rng(0)
    if "uint8" in inp.type:
        return {inp.name: rng.integers(0, 256, shape, dtype=np.uint8)}
    return {inp.name: rng.standard_normal(shape).astype(np.float32)}


def exported_size(path: Path) -> tuple[int, int] | None:
    """From the manifest (``input.size`` or a static ``input.shape``), else the graph's static H/W."""
    man = path.parent / "manifest.json"
    if man.is_file():
        inp = json.loads(man.read_text()).get("input", {})
        s = inp.get("size") or inp.get("shape", [None, None, None, None])[2:]
        if len(s) == 2 and all(isinstance(v, int) for v in s):
            return int(s[0]), int(s[1])
    dims = session(path, 1).get_inputs()[0].shape[2:]
    return (int(dims[0]), int(dims[1])) if all(isinstance(v, int) for v in dims) else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("targets", nargs="+", type=Path, help="runs, export folders or .onnx files")
    ap.add_argument("--sizes", default="", help="HxW[,HxW...]; default: each model's exported size")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--min-time", type=float, default=2.0, help="seconds of timed runs per cell")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes.split(",") if s]

    results = []
    for target in args.targets:
        name, files = artifacts(target)
        default = exported_size(next(iter(files.values())))
        if not sizes and default is None:
            raise SystemExit(f"error: {target}: the graph has dynamic H/W; pass --sizes HxW")
        for size in sizes or [default]:
            row = {"model": name, "size": f"{size[0]}x{size[1]}"}
            for flav, path in files.items():
                try:
                    sess = session(path, args.threads)
                    x = feed(sess, size, args.batch)  # type: ignore[arg-type]
                    lat = measure(lambda: sess.run(None, x), batch=args.batch, min_time=args.min_time)
                    row[flav] = lat.as_dict()
                except Exception as exc:  # noqa: BLE001 - one cell fails, the table goes on
                    row[flav] = {"error": str(exc).splitlines()[0][:120]}
            results.append(row)

    cols = list(FLAVOURS)
    print(f"ONNX Runtime CPU, {args.threads} threads, batch {args.batch}: p50 ms (mean +- std)")
    print(f"{'model':24} {'size':>9} " + " ".join(f"{c:>20}" for c in cols) + f" {'int8/fp32':>10} {'int8-cpu/fp32':>14}")
    for row in results:
        cells = []
        for c in cols:
            v = row.get(c)
            cells.append("-" if v is None else ("error" if "error" in v else f"{v['p50_ms']:.2f} ({v['mean_ms']:.2f}+-{v['std_ms']:.2f})"))
        ratios = []
        for q in ("int8", "int8-cpu"):
            a, b = row.get("fp32", {}), row.get(q, {})
            ratios.append(f"{a['mean_ms'] / b['mean_ms']:.2f}x" if "mean_ms" in a and "mean_ms" in b else "-")
        print(f"{row['model']:24} {row['size']:>9} " + " ".join(f"{c:>20}" for c in cells) + f" {ratios[0]:>10} {ratios[1]:>14}")
        for c in cols:
            if isinstance(row.get(c), dict) and "error" in row[c]:
                print(f"  {c}: {row[c]['error']}")
    print("ratio = FP32 mean latency / INT8 mean latency (> 1: INT8 is faster)")
    if args.json:
        args.json.write_text(json.dumps({"threads": args.threads, "batch": args.batch, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
