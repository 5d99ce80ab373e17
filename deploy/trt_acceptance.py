"""First-contact acceptance check for a machine with TensorRT (desktop GPU or Jetson).

    python -m rdd_edge.deploy.trt_acceptance EXPORT_DIR [--max-batch 8] [--workspace 1] [--images DIR]

Builds both engines (in a scratch copy: the export folder is left as it is; ``rdd-edge engine``
adds engines to it) from the export folder's ``model.fp16.onnx`` and ``model.int8.onnx`` (with
:func:`export.tensorrt.build_engine`, torch-free), prints each engine's per-layer precision report,
the label agreement of engine vs ONNX Runtime (CPU) on the same source file over a few images (a
folder given with ``--images``, else seeded random images), latency at batch 1 and at the max
batch, and one PASS/FAIL line per engine, then an overall line. Exit code 0 when everything
passed, 1 otherwise. An engine passes when it builds, loads, agrees with ONNX Runtime on at least
``--min-agreement-fp16`` / ``--min-agreement-int8`` of the pixels and really runs in the file's
precision (INT8 layers in the INT8 engine; no more FP32 than FP16 layers in the FP16 engine).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from rdd_edge.errors import RddError

ENGINES = (("fp16", "model.fp16.onnx", "model.fp16.engine"), ("int8", "model.int8.onnx", "model.int8.engine"))
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m rdd_edge.deploy.trt_acceptance", description=__doc__.split("\n\n")[0])
    p.add_argument("export_dir", type=Path, help="folder written by `rdd-edge export --fp16 --int8`")
    p.add_argument("--max-batch", type=int, default=8, help="engine profile max batch (default 8; 4 on small Jetsons)")
    p.add_argument("--workspace", type=float, default=1.0, help="builder workspace in GB (default 1)")
    p.add_argument("--images", type=Path, default=None, help="folder of images to compare on (default: random images)")
    p.add_argument("--num-images", type=int, default=8, help="images to compare on (default 8)")
    p.add_argument("--dla-core", type=int, default=None, help="build for this DLA core (Jetson AGX/NX)")
    p.add_argument("--min-agreement-fp16", type=float, default=0.99, help="pixel agreement floor, FP16 engine")
    p.add_argument("--min-agreement-int8", type=float, default=0.95, help="pixel agreement floor, INT8 engine")
    p.add_argument("--latency-time", type=float, default=1.0, help="seconds of timed runs per latency figure")
    return p.parse_args(argv)


def load_images(folder: Path | None, n: int, size: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    """Up to ``n`` RGB images from ``folder`` (sorted), else ``n`` seeded random images of ``size``."""
    if folder is None:
        rng = np.random.default_rng(seed)
        h, w = size
        return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(max(1, n))]
    from rdd_edge.data.base import read_image
    from rdd_edge.errors import DeployError

    if not folder.is_dir():
        raise DeployError(f"--images {folder}: not a folder")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[: max(1, n)]
    if not files:
        raise DeployError(f"--images {folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return [read_image(f) for f in files]


def precision_problem(precision: str, layers: dict[str, int] | None) -> str | None:
    """Why an engine's layer precisions do not match its file (None when they do)."""
    if not layers:
        return "no per-layer precision report (engine inspector gave none)"
    if precision == "int8" and not layers.get("int8"):
        return "no INT8 layers: the Q/DQ nodes were not honoured"
    if precision == "fp16" and layers.get("fp32", 0) > layers.get("fp16", 0):
        return f"mostly FP32 ({layers.get('fp32')} FP32 vs {layers.get('fp16', 0)} FP16 layers): built weakly typed?"
    return None


def check_engine(export_dir: Path, key: str, src_name: str, engine_name: str, args: argparse.Namespace,
                 images: list[np.ndarray] | None, say: Callable[[str], None]) -> tuple[bool, list[np.ndarray] | None]:
    """Build, inspect, compare and time one engine; print its lines; return (passed, images used)."""
    from rdd_edge import deploy
    from rdd_edge.deploy.engine_meta import precision_summary
    from rdd_edge.deploy.latency import measure_segmenter
    from rdd_edge.export.tensorrt import build_engine

    src, eng = export_dir / src_name, export_dir / engine_name
    label = f"{key.upper()} engine"
    if not src.is_file():
        say(f"FAIL {label}: {src} not found; export it first (rdd-edge export --{key})")
        return False, images
    t = time.perf_counter()
    meta = build_engine(src, eng, max_batch=args.max_batch, workspace_gb=args.workspace,
                        timing_cache_dir=export_dir, dla_core=args.dla_core)
    cache = meta.get("timing_cache") or {}
    cache_note = "reused" if cache.get("loaded") else ("refused (other GPU/TensorRT), rebuilt" if cache.get("refused") else "new")
    say(f"{label}: built {eng.name} in {time.perf_counter() - t:.1f} s with TensorRT {meta.get('tensorrt')} on "
        f"{meta.get('gpu')} (sm {meta.get('compute_capability')}); profile batch 1..{meta['max_batch']}; "
        f"timing cache {cache.get('file')} {cache_note}")
    say(f"  precision: {precision_summary(meta)}")
    problems = []
    bad_prec = precision_problem(key, meta.get("precision_layers"))
    if bad_prec:
        problems.append(bad_prec)
    ref = deploy.load(src, device="cpu")
    try:
        with deploy.load(eng) as seg:
            if images is None:
                images = load_images(args.images, args.num_images, seg.info.input_size)
            want = ref.predict_batch(images)
            got = seg.predict_batch(images)
            agree = float(np.mean([(a == b).mean() for a, b in zip(got, want)]))
            floor = args.min_agreement_int8 if key == "int8" else args.min_agreement_fp16
            say(f"  agreement with ONNX Runtime ({src.name}, CPU): {agree:.2%} of pixels on {len(images)} images "
                f"(floor {floor:.0%})")
            if agree < floor:
                problems.append(f"labels agree on {agree:.2%} < {floor:.0%}")
            kw = {"min_time": args.latency_time, "warmup": 3}
            for b in sorted({1, int(seg.max_batch or args.max_batch)}):
                lat = measure_segmenter(seg, b, **kw)
                say(f"  latency batch {b}: p50 {lat.p50_ms:.2f} ms, p90 {lat.p90_ms:.2f} ms, {lat.fps:.1f} images/s")
    finally:
        ref.close()
    if problems:
        say(f"FAIL {label}: {'; '.join(problems)}")
        return False, images
    say(f"PASS {label}")
    return True, images


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    say: Callable[[str], None] = print
    export_dir = args.export_dir
    if not export_dir.is_dir():
        say(f"FAIL: {export_dir} is not an export folder")
        return 1
    from rdd_edge.deploy.engine_meta import tensorrt_module
    from rdd_edge.export.tensorrt import INSTALL_HINT

    if tensorrt_module() is None:
        say(f"FAIL: no TensorRT on this machine: {INSTALL_HINT}")
        return 1
    results: list[bool] = []
    images: list[np.ndarray] | None = None
    import shutil
    import tempfile

    # a trial in a scratch copy: the export folder (and its manifest) stays exactly as it was
    scratch = Path(tempfile.mkdtemp(prefix="rdd-trt-acceptance-"))
    for f in ("manifest.json", *(src for _, src, _ in ENGINES)):
        if (export_dir / f).is_file():
            shutil.copy2(export_dir / f, scratch / f)
    for key, src_name, engine_name in ENGINES:
        try:
            ok, images = check_engine(scratch, key, src_name, engine_name, args, images, say)
        except RddError as exc:
            say(f"FAIL {key.upper()} engine: {exc}")
            ok = False
        except Exception as exc:  # noqa: BLE001 - one engine's crash must not hide the other's result
            say(f"FAIL {key.upper()} engine: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            ok = False
        results.append(ok)
    shutil.rmtree(scratch, ignore_errors=True)
    passed = sum(results)
    say(f"{'PASS' if all(results) else 'FAIL'}: {passed} of {len(results)} engines passed")
    if all(results):
        say(f"to add the engines to the export: rdd-edge engine {export_dir} --trt all --max-batch {args.max_batch}")
    return 0 if all(results) else 1


def _run() -> Any:  # pragma: no cover - the console entry
    sys.exit(main(sys.argv[1:]))


if __name__ == "__main__":  # pragma: no cover
    _run()
