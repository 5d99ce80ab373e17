"""ONNX Runtime CPU latency and mIoU of FP32, FP16 and both INT8 flavours, side by side in one run.

    python -m benchmarks.deploy_latency runs/distill-mbv2 runs/distill-r18 --sizes 360x480 --threads 2
    python -m benchmarks.deploy_latency runs/distill-mbv2/export/model.onnx --sizes 360x480,512x1024
    python -m benchmarks.deploy_latency exp/mbv2-360x480 exp/mbv2-512x1024 --data data/camvid --images 101

Each argument is a run (its ``export/`` folder), an export folder, or one ``.onnx`` file (its
siblings ``model.fp16.onnx``, ``model.int8.onnx``, ``model.int8-cpu.onnx`` are picked up).
Sizes other than the exported one need a graph with dynamic H/W (``rdd-edge export --dynamic``);
otherwise that cell says why it was skipped. Prints a table and the INT8/FP32 speed ratios.
Model-only latency (``deploy.latency``: warm-up, min-time run count, sigma clipping).

With ``--data`` (or a manifest naming a generated data set) every artifact is also scored on the
labelled val images through the torch-free runtime (``deploy.load``): mIoU and the drop vs the
FP32 model of the same row. Images and labels are resized to the model's input size first
(bilinear / nearest), so a 512x1024 model is scored on the val set at 512x1024. The verdict line
checks the target: ``int8-cpu`` at least ``--target-speedup`` x faster than FP32 (mean latency)
with at most ``--target-drop`` mIoU points lost.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from rdd_edge.deploy.latency import measure

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


def load_val(manifest: dict, dataset: str | None, root: Path | None, n: int | None) -> tuple[str, list, list]:
    """Labelled val images (uint8 RGB, uint8 labels) for scoring; data set name from the option, else the manifest."""
    from rdd_edge.deploy.check import load_eval_data

    ds, imgs, lbls = load_eval_data(manifest, dataset, root, None if root is not None else n)
    total = len(imgs)
    if n is not None and n < total:  # evenly spread over the split (a val split is ordered by sequence)
        idx = np.linspace(0, total - 1, n).round().astype(int)
        imgs, lbls = [imgs[i] for i in idx], [lbls[i] for i in idx]
    return f"{len(imgs)} (of {total}) {getattr(ds.info, 'name', dataset)} val images", imgs, lbls


def resized_pairs(images: list, labels: list, size: tuple[int, int]) -> tuple[list, list]:
    """Images (bilinear) and labels (nearest) at the model's input size, so the score is at that size."""
    import cv2

    if all(im.shape[:2] == tuple(size) for im in images):
        return images, labels
    h, w = size
    return ([cv2.resize(im, (w, h), interpolation=cv2.INTER_LINEAR) for im in images],
            [cv2.resize(lb, (w, h), interpolation=cv2.INTER_NEAREST) for lb in labels])


def score(path: Path, images: list, labels: list, threads: int, ignore_index: int = 255) -> float:
    """mIoU (percent) of one artifact through the deploy runtime (its own pre/post-processing)."""
    from rdd_edge.deploy.runtime import load
    from rdd_edge.metrics import ConfusionMatrix

    seg = load(path, providers=["CPUExecutionProvider"], threads=threads or None, device="cpu")
    n = seg.info.num_classes
    cm = ConfusionMatrix(n, ignore_index)
    for im, lb in zip(images, labels):
        cm.update(lb, np.minimum(seg.predict(im), n - 1))
    return 100.0 * float(cm.compute().miou)


def verdict(row: dict, speedup: float, max_drop: float, flavour: str = "int8-cpu") -> str:
    """Whether ``flavour`` meets the target against FP32 in this row, and by how much it misses."""
    a, b = row.get("fp32", {}), row.get(flavour, {})
    if "mean_ms" not in a or "mean_ms" not in b:
        return f"{flavour}: not measured"
    ratio = a["mean_ms"] / b["mean_ms"]
    parts = [f"{ratio:.2f}x faster than fp32 (target >= {speedup:g}x" + (")" if ratio >= speedup else f", missed by {speedup - ratio:.2f}x)")]
    drop = b.get("drop")
    if drop is not None:
        parts.append(f"{drop:.2f} mIoU points lost (target <= {max_drop:g}" + (")" if drop <= max_drop else f", missed by {drop - max_drop:.2f})"))
    met = ratio >= speedup and (drop is None or drop <= max_drop)
    return f"{flavour}: {'MET' if met else 'NOT MET'}: " + ", ".join(parts)


def report_lines(results: list[dict], markdown: bool = False) -> list[str]:
    """One line per model/size/flavour: mean, p50, p90 ms, speed-up vs FP32, mIoU, drop."""
    head = ["model", "size", "artifact", "mean ms", "p50 ms", "p90 ms", "x fp32", "mIoU", "drop"]
    rows = []
    for row in results:
        base = row.get("fp32", {}).get("mean_ms")
        for flav in FLAVOURS:
            v = row.get(flav)
            if v is None:
                continue
            if "error" in v and "mean_ms" not in v:
                rows.append([row["model"], row["size"], flav, "error: " + v["error"], "", "", "", "", ""])
                continue
            f = lambda k, nd=2: "-" if v.get(k) is None else f"{v[k]:.{nd}f}"  # noqa: E731
            rows.append([row["model"], row["size"], flav, f("mean_ms"), f("p50_ms"), f("p90_ms"),
                         f"{base / v['mean_ms']:.2f}" if base else "-", f("miou"), f("drop")])
    if markdown:
        return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    return ["  ".join(str(c).rjust(w) if i > 2 else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in [head, *rows]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("targets", nargs="+", type=Path, help="runs, export folders or .onnx files")
    ap.add_argument("--sizes", default="", help="HxW[,HxW...]; default: each model's exported size")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads (0: ONNX Runtime's default, one per physical core)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--min-time", type=float, default=2.0, help="seconds of timed runs per cell")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved timing rounds per row; the fastest round of each artifact is kept")
    ap.add_argument("--data", type=Path, help="data set root for the mIoU column (default: the manifest's / generated synthetic)")
    ap.add_argument("--dataset", help="data set name (default: the manifest's)")
    ap.add_argument("--images", type=int, help="val images to score (default: all)")
    ap.add_argument("--no-miou", action="store_true", help="latency only")
    ap.add_argument("--target-speedup", type=float, default=2.5, help="int8-cpu must be this many times faster than fp32")
    ap.add_argument("--target-drop", type=float, default=1.0, help="int8-cpu may lose at most this many mIoU points")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--markdown", type=Path, help="also write the table and verdicts here (markdown)")
    args = ap.parse_args(argv)
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes.split(",") if s]

    val: tuple[str, list, list] | None = None
    results = []
    for target in args.targets:
        name, files = artifacts(target)
        default = exported_size(next(iter(files.values())))
        if not sizes and default is None:
            raise SystemExit(f"error: {target}: the graph has dynamic H/W; pass --sizes HxW")
        man_path = next(iter(files.values())).parent / "manifest.json"
        manifest = json.loads(man_path.read_text()) if man_path.is_file() else {}
        if not args.no_miou and val is None and (args.data or args.dataset or manifest.get("dataset")):
            val = load_val(manifest, args.dataset, args.data, args.images)
        for size in sizes or [default]:
            row = {"model": name, "size": f"{size[0]}x{size[1]}"}
            pairs = resized_pairs(val[1], val[2], size) if val else None  # type: ignore[arg-type]
            runners = {}
            for flav, path in files.items():
                try:
                    sess = session(path, args.threads)
                    runners[flav] = (sess, feed(sess, size, args.batch))  # type: ignore[arg-type]
                except Exception as exc:  # noqa: BLE001 - one cell fails, the table goes on
                    row[flav] = {"error": str(exc).splitlines()[0][:120]}
            # interleaved rounds, best (lowest mean) round kept: load from other processes hits every flavour alike
            for _ in range(max(1, args.rounds)):
                for flav, (sess, x) in runners.items():
                    try:
                        lat = measure(lambda: sess.run(None, x), batch=args.batch, min_time=args.min_time).as_dict()
                    except Exception as exc:  # noqa: BLE001
                        row[flav] = {"error": str(exc).splitlines()[0][:120]}
                        continue
                    if "error" not in row.get(flav, {}) and lat["mean_ms"] < row.get(flav, {}).get("mean_ms", float("inf")):
                        row[flav] = {**lat, "rounds": args.rounds}
            runners.clear()
            for flav, path in files.items():
                if "error" in row.get(flav, {"error": ""}):
                    continue
                try:
                    if pairs is not None:
                        row[flav]["miou"] = score(path, *pairs, args.threads, int(manifest.get("ignore_index", 255)))
                        ref = row.get("fp32", {}).get("miou")
                        row[flav]["drop"] = None if ref is None else ref - row[flav]["miou"]
                except Exception as exc:  # noqa: BLE001 - one cell fails, the table goes on
                    row.setdefault(flav, {})["error"] = str(exc).splitlines()[0][:120]
            row["verdict"] = verdict(row, args.target_speedup, args.target_drop)
            results.append(row)

    import onnxruntime as ort

    threads = "default" if args.threads == 0 else str(args.threads)
    title = (f"ONNX Runtime {ort.__version__} CPU, intra-op threads {threads}, batch {args.batch}; "
             f"latency model only; x fp32 = fp32 mean / artifact mean (> 1: faster)"
             + (f"; mIoU on {val[0]} resized to the model input, drop vs fp32 in points" if val else ""))
    from rdd_edge.cpuinfo import detect

    cpu = detect()
    print(title)
    print(f"CPU: {cpu.line()}")
    lines = report_lines(results)
    print("\n".join(lines))
    for row in results:
        print(f"{row['model']} {row['size']}: {row['verdict']}")
        for c in FLAVOURS:
            if isinstance(row.get(c), dict) and "error" in row[c]:
                print(f"  {c}: {row[c]['error']}")
    if args.json or args.markdown:
        from rdd_edge.runs import atomic_write_text, write_json

        if args.json:
            write_json(args.json, {"title": title, "cpu": cpu.as_dict(), "threads": args.threads, "batch": args.batch,
                                   "eval": val[0] if val else None, "results": results})
        if args.markdown:
            md = [title, "", f"CPU: {cpu.line()}", "", *report_lines(results, markdown=True), ""]
            md += [f"- {row['model']} {row['size']}: {row['verdict']}" for row in results]
            atomic_write_text(args.markdown, "\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
