"""First-contact acceptance check for a machine with TensorRT (desktop GPU or Jetson).

    python -m rdd_edge.deploy.trt_acceptance EXPORT_DIR [--max-batch 8] [--workspace 1] [--images DIR]

Starts with the versions that matter on a device (L4T/JetPack, driver, CUDA runtime, cuda-python,
TensorRT, numpy, ONNX Runtime and its providers) and the device's state (power mode, clocks,
temperatures, throttling: :mod:`deploy.device_state`). Then, for the source ONNX file of every engine
row of the formats table (``model.fp16.onnx``, ``model.int8.onnx``) in a scratch copy of the export
(the folder itself is left as it is; ``rdd-edge engine`` adds engines to it), a child process builds
the engine (:func:`rdd_edge.deploy.engine_build.build_engine`, torch-free), prints its per-layer precision report
(and, with ``--dla-core``, how many layers run on DLA), runs it on the check images and times it
at batch 1 and at the max batch, with the power drawn meanwhile and FPS/W (:mod:`deploy.power`); a
native crash in TensorRT or CUDA kills only that child and becomes one FAIL line naming the signal, a child that outlives ``--timeout`` (default 15 minutes, a
Jetson build) one FAIL line naming the timeout. Only after every child has ended does the parent
compare each engine's labels with ONNX Runtime (CPU) on the same source file; it prints one
PASS/FAIL line per engine, a summary, and the `rdd-edge engine` line that repeats every option used.
Exit code 0 when every engine passed.

Children and fork: OpenCV's thread pool and ONNX Runtime's sessions are not fork-safe (a child
forked after either ran can hang on a lock a vanished thread held: opencv/opencv#5150,
opencv-python#249). So the parent turns OpenCV's threading off before it decodes an image
(``cv2.setNumThreads(0)``), creates no ONNX Runtime session until the children are done, and starts
a child with ``spawn`` instead of ``fork`` whenever :func:`fork_hazards` finds either anyway.

Images: ``--images DIR``, else the check images a bundle carries (``check-data/``), else the
embedded synthetic street scenes at the model's input size; never random noise (argmax margins
on noise are tiny: a correct engine could miss the agreement floor). An engine passes when it
builds, runs, agrees with ONNX Runtime on at least ``--min-agreement-fp16`` / ``-int8`` of the
pixels and its layer precisions match its file; a report that cannot tell (mostly unknown
layers) is a warning, not a failure.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from rdd_edge import deploy
from rdd_edge import formats as table
from rdd_edge.data.base import read_image
from rdd_edge.data.synthetic import render_scene
from rdd_edge.deploy import device_state, versions
from rdd_edge.deploy.backends.onnxruntime import sessions_opened
from rdd_edge.deploy.check_data import open_check_data
from rdd_edge.deploy.engine_build import INSTALL_HINT, build_engine
from rdd_edge.deploy.engine_meta import precision_summary, report_is_readable, tensorrt_module
from rdd_edge.deploy.engine_plan import engine_rows
from rdd_edge.deploy.info import MANIFEST_NAME, read_manifest
from rdd_edge.deploy.latency import measure_segmenter
from rdd_edge.deploy.power import open_sampler, power_text, timed
from rdd_edge.errors import DeployError, RddError
from rdd_edge.formats import ExportFormat
from rdd_edge.sizes import parse_profile

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# fork: the child inherits the parent's modules (cheap; the parent has created no CUDA context, no
# ONNX Runtime session and no OpenCV worker thread when it forks: see fork_hazards); elsewhere, or
# when a hazard is found, a fresh interpreter (spawn).
START_METHOD = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
DEFAULT_TIMEOUT = 900.0  # s: one engine's build and run; an INT8 build on an Orin Nano takes minutes


def fork_hazards() -> list[str]:
    """What would make a forked child hang now: OpenCV with worker threads, an ONNX Runtime session."""
    out = []
    cv2 = sys.modules.get("cv2")
    if cv2 is not None and cv2.getNumThreads() > 1:
        out.append(f"OpenCV runs {cv2.getNumThreads()} threads")
    if sessions_opened():
        out.append(f"{sessions_opened()} ONNX Runtime session(s) were created")
    return out


def start_method() -> str:
    """``fork`` when it is safe here and now, else ``spawn``."""
    return START_METHOD if START_METHOD != "fork" or not fork_hazards() else "spawn"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m rdd_edge.deploy.trt_acceptance", description=__doc__.split("\n\n")[0])
    p.add_argument("export_dir", type=Path, help="folder written by `rdd-edge export --fp16 --int8` (or a bundle's export/)")
    p.add_argument("--max-batch", type=int, default=8, help="engine profile max batch (default 8; 4 on small Jetsons)")
    p.add_argument("--opt-batch", type=int, default=1, help="the batch TensorRT tunes for (with --dla-core: the only batch)")
    p.add_argument("--workspace", type=float, default=1.0, help="builder workspace in GB (default 1)")
    p.add_argument("--profile", default=None, metavar="MIN,OPT,MAX",
                   help="H x W range of a --dynamic export, e.g. 256x512,512x1024,1024x2048")
    p.add_argument("--images", type=Path, default=None,
                   help="folder of images to compare on (default: the bundle's check images, else synthetic scenes)")
    p.add_argument("--num-images", type=int, default=8, help="images to compare on (default 8)")
    p.add_argument("--dla-core", type=int, default=None, help="build for this DLA core (Jetson AGX Orin / Orin NX)")
    p.add_argument("--allow-gpu-fallback", action="store_true",
                   help="with --dla-core: accept an engine whose layers all fall back to the GPU")
    p.add_argument("--min-agreement-fp16", type=float, default=0.99, help="pixel agreement floor, FP16 engine")
    p.add_argument("--min-agreement-int8", type=float, default=0.95, help="pixel agreement floor, INT8 engine")
    p.add_argument("--latency-time", type=float, default=1.0, help="seconds of timed runs per latency figure")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help=f"seconds one engine's build and run may take (default {DEFAULT_TIMEOUT:g})")
    return p.parse_args(argv)


# ---------------------------------------------------------------- the images
def load_images(folder: Path | None, n: int, size: tuple[int, int], export_dir: Path | None = None,
                manifest: dict[str, Any] | None = None) -> tuple[list[np.ndarray], str]:
    """Up to ``n`` RGB images and a line saying which: ``folder`` (sorted), else the export's
    bundled check images, else synthetic street scenes of ``size`` (seeds 0..n-1)."""
    n = max(1, int(n))
    if folder is not None:
        if not folder.is_dir():
            raise DeployError(f"--images {folder}: not a folder")
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:n]
        if not files:
            raise DeployError(f"--images {folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
        return [read_image(f) for f in files], f"{len(files)} images from {folder}"
    if export_dir is not None and manifest is not None:
        bundled = open_check_data(export_dir, manifest)
        if bundled is not None:
            idx = sorted(set(np.linspace(0, len(bundled) - 1, min(n, len(bundled))).round().astype(int).tolist()))
            return [bundled[i][0] for i in idx], (f"{len(idx)} of the export's {len(bundled)} check images "
                                                  f"({bundled.source or 'check-data/'})")
    h, w = size
    return [render_scene(seed, (h, w))[0] for seed in range(n)], f"{n} synthetic street scenes at {h}x{w} (seeds 0..{n - 1})"


# ---------------------------------------------------------------- verdicts
def precision_problem(precision: str, layers: dict[str, int] | None) -> str | None:
    """Why an engine's layer precisions do not match its file (None when they do or when the report
    cannot tell: see :func:`precision_warning`)."""
    if not report_is_readable(layers):
        return None
    assert layers is not None
    if precision == "int8" and not layers.get("int8"):
        return "no INT8 layers: the Q/DQ nodes were not honoured"
    if precision == "fp16" and layers.get("fp32", 0) > layers.get("fp16", 0):
        return f"mostly FP32 ({layers.get('fp32')} FP32 vs {layers.get('fp16', 0)} FP16 layers): built weakly typed?"
    return None


def precision_warning(layers: dict[str, int] | None) -> str | None:
    """A warning when the inspector's report is too thin to judge (None when it can tell)."""
    if report_is_readable(layers):
        return None
    if not layers:
        return "cannot tell the layer precisions: the engine inspector gave no report"
    return (f"cannot tell the layer precisions: {layers.get('unknown', 0)} of {sum(layers.values())} layers report "
            "no type (Myelin may fuse a graph into a few coarse layers); judged by agreement alone")


def rebuild_line(export_dir: Path, args: argparse.Namespace) -> str:
    """The `rdd-edge engine` command that builds these engines into the export, every option repeated."""
    parts = ["rdd-edge engine", str(export_dir), "--trt all", f"--max-batch {args.max_batch}",
             f"--workspace {args.workspace:g}"]
    if args.opt_batch != 1:
        parts.append(f"--opt-batch {args.opt_batch}")
    if args.dla_core is not None:
        parts.append(f"--dla-core {args.dla_core}")
    if args.allow_gpu_fallback:
        parts.append("--allow-gpu-fallback")
    if args.profile:
        parts.append(f"--profile {args.profile}")
    return " ".join(parts)


# ---------------------------------------------------------------- one engine, in a child process
def engine_child(scratch: str, key: str, src_name: str, engine_name: str, opts: dict[str, Any], images_file: str,
                 log_file: str, result_file: str) -> None:
    """Build, inspect, run and time one engine; lines go to ``log_file`` as they come (a crash keeps
    them), the outcome to ``result_file`` (JSON) and the engine's labels to ``<result>.npz``."""
    log = open(log_file, "a", buffering=1)
    say: Callable[[str], None] = lambda line: print(line, file=log, flush=True)  # noqa: E731
    result: dict[str, Any] = {"ok": False}
    try:
        src, eng = Path(scratch) / src_name, Path(scratch) / engine_name
        t = time.perf_counter()
        meta = build_engine(src, eng, max_batch=opts["max_batch"], opt_batch=opts["opt_batch"],
                            dynamic_hw=opts["profile"], workspace_gb=opts["workspace"], timing_cache_dir=Path(scratch),
                            dla_core=opts["dla_core"], allow_gpu_fallback=opts["allow_gpu_fallback"])
        cache = meta.get("timing_cache") or {}
        cache_note = "reused" if cache.get("loaded") else ("refused (other GPU/TensorRT), rebuilt" if cache.get("refused") else "new")
        prof = meta["profile"]
        say(f"  built {eng.name} in {time.perf_counter() - t:.1f} s with TensorRT {meta.get('tensorrt')} on "
            f"{meta.get('gpu')} (sm {meta.get('compute_capability')}); profile batch {prof['min'][0]}..{prof['max'][0]}; "
            f"timing cache {cache.get('file')} {cache_note}")
        say(f"  precision: {precision_summary(meta)}")
        say(f"  same build with trtexec (file names relative to the export folder): {meta.get('trtexec')}")
        estimate, placement = meta.get("dla_estimate"), meta.get("dla_layers")
        if meta.get("dla_core") is not None:
            typing = "strongly typed" if meta.get("strongly_typed") else "weakly typed"
            say(f"  DLA core {meta.get('dla_core')} ({typing}, builder flags {', '.join(meta.get('builder_flags') or [])}): "
                + (f"engine inspector: {placement['dla']} engine layers on DLA, {placement['gpu']} on the GPU"
                   if placement else "engine inspector: placement not reported")
                + (f"; estimate before the build: {estimate['dla']} of {estimate['dla'] + estimate['gpu']} network "
                   "layers can run on DLA" if estimate else ""))
        result.update(precision_layers=meta.get("precision_layers"), dla_layers=placement)
        with np.load(images_file) as z:
            images = [z[f"arr_{i}"] for i in range(len(z.files))]
        with deploy.load(eng) as seg:
            labels = seg.predict_batch(images)
            np.savez(result_file + ".npz", *labels)
            with open_sampler(device="cuda") as power:  # the power drawn while each batch size is timed
                for b in sorted({1, int(seg.max_batch or opts["max_batch"])}):
                    lat = timed(power, "TensorRT", lambda b=b: measure_segmenter(seg, b, min_time=opts["latency_time"],
                                                                                 warmup=3))
                    gpu = (f"; GPU compute p50 {lat['gpu_compute']['p50_ms']:.2f} ms (CUDA events around execute, "
                           "trtexec's GPU Compute Time)" if lat.get("gpu_compute") else f"; GPU compute {lat.get('gpu_note')}")
                    say(f"  latency batch {b}: host-to-host p50 {lat['p50_ms']:.2f} ms, p90 {lat['p90_ms']:.2f} ms, "
                        f"{lat['fps']:.1f} images/s{gpu}; {power_text(lat)}")
                    result.setdefault("latency", {})[f"b{b}"] = lat
        result["ok"] = True
    except RddError as exc:
        result["error"] = str(exc)
    except Exception as exc:  # noqa: BLE001 - reported as one line by the parent
        text = str(exc).strip().splitlines()
        result["error"] = f"{type(exc).__name__}: {text[0] if text else ''}"
    finally:
        log.close()
        Path(result_file).write_text(json.dumps(result))


def run_isolated(target: Callable[..., None], args: tuple, timeout: float) -> int | None:
    """Run ``target(*args)`` in a child process; its exit code (negative: killed by that signal),
    None when it outlived ``timeout`` (then it is killed)."""
    proc = multiprocessing.get_context(start_method()).Process(target=target, args=args, daemon=True)
    proc.start()
    proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        proc.join()
        return None
    return proc.exitcode


def death(code: int | None, timeout: float) -> str:
    """Why a child ended without a result, in words."""
    if code is None:
        return f"timed out: the build and run took longer than --timeout {timeout:g} s and were stopped"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"the build and run process died of {name} (a crash inside TensorRT or CUDA); nothing else was affected"
    return f"the build and run process exited with code {code} without a result"


# ---------------------------------------------------------------- the whole check
def main(argv: Sequence[str] | None = None) -> int:
    import cv2  # lazy: only to turn its threads off before the first image is decoded

    threads = cv2.getNumThreads()
    cv2.setNumThreads(0)  # no OpenCV worker threads in the parent: its children are forked
    try:
        return _main(parse_args(argv))
    finally:
        cv2.setNumThreads(threads)


def _main(args: argparse.Namespace) -> int:
    say: Callable[[str], None] = lambda line: print(line, flush=True)  # noqa: E731
    for line in versions.header_lines(versions.collect()):
        say(line)
    for line in device_state.state_lines(device_state.collect(device="cuda")):  # before any timed run
        say(f"device: {line}")
    export_dir = args.export_dir
    if not export_dir.is_dir():
        say(f"FAIL: {export_dir} is not an export folder")
        return 1
    if tensorrt_module() is None:
        say(f"FAIL: no TensorRT on this machine: {INSTALL_HINT}")
        return 1
    try:
        manifest, _ = read_manifest(export_dir / MANIFEST_NAME)
        inp = (manifest or {}).get("input") or {}
        size = tuple(inp.get("size") or [d if isinstance(d, int) else 512 for d in (inp.get("shape") or [1, 3, 512, 1024])[2:]])
        profile = parse_profile(args.profile or None, "--profile")
        if profile is not None:
            size = profile[1]  # the opt H x W of a dynamic export
        images, which = load_images(args.images, args.num_images, (int(size[0]), int(size[1])), export_dir, manifest)
    except RddError as exc:
        say(f"FAIL: {exc}")
        return 1
    say(f"images: {which}")
    opts = {"max_batch": args.max_batch, "opt_batch": args.opt_batch, "profile": profile, "workspace": args.workspace,
            "dla_core": args.dla_core, "allow_gpu_fallback": args.allow_gpu_fallback, "latency_time": args.latency_time}

    # a trial in a scratch copy: the export folder (and its manifest) stays exactly as it was
    scratch = Path(tempfile.mkdtemp(prefix="rdd-trt-acceptance-"))
    try:
        engines = engine_rows()  # the table's engines, each with the ONNX row it is built from
        for f in (MANIFEST_NAME, *(table.BY_KEY[str(e.source)].file for e in engines)):
            if (export_dir / f).is_file():
                shutil.copy2(export_dir / f, scratch / f)
        np.savez(scratch / "images.npz", *images)  # arr_0, arr_1 ...: images of any sizes, no pickle
        runs = [run_engine(scratch, e, args, opts) for e in engines]  # every child before any ONNX Runtime session
        results = [judge_engine(scratch, e, run, args, images, say) for e, run in zip(engines, runs)]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    passed = sum(results)
    say(f"{'PASS' if all(results) else 'FAIL'}: {passed} of {len(results)} engines passed")
    if all(results):
        say(f"to add the engines to the export: {rebuild_line(export_dir, args)}")
    return 0 if all(results) else 1


def _names(engine: ExportFormat) -> tuple[str, Any, str]:
    key = engine.precision  # the engine's precision: fp16, int8
    return key, table.BY_KEY[str(engine.source)], f"{key.upper()} engine"


def run_engine(scratch: Path, engine: ExportFormat, args: argparse.Namespace, opts: dict[str, Any]) -> dict[str, Any]:
    """Build and run one engine row of the formats table in a child: its exit code and log lines (no
    child when the source file is missing)."""
    key, source, _ = _names(engine)
    if not (scratch / source.file).is_file():
        return {"missing": True}
    log_file, result_file = scratch / f"{key}.log", scratch / f"{key}.json"
    code = run_isolated(engine_child, (str(scratch), key, source.file, engine.file, opts, str(scratch / "images.npz"),
                                       str(log_file), str(result_file)), args.timeout)
    return {"code": code, "log": log_file.read_text().splitlines() if log_file.is_file() else []}


def judge_engine(scratch: Path, engine: ExportFormat, run: dict[str, Any], args: argparse.Namespace,
                 images: list[np.ndarray], say: Callable[[str], None]) -> bool:
    """One engine's lines: what its child said, then the comparison with ONNX Runtime here on its
    source file, then PASS or one FAIL line."""
    key, source, label = _names(engine)
    src_name = source.file
    src, result_file = scratch / src_name, scratch / f"{key}.json"
    if run.get("missing"):
        say(f"FAIL {label}: {args.export_dir / src_name} not found; export it first (rdd-edge export {source.flag})")
        return False
    say(f"{label}:")
    for line in run["log"]:
        say(line)
    code = run["code"]
    if not result_file.is_file():
        say(f"FAIL {label}: {death(code, args.timeout)}")
        return False
    result = json.loads(result_file.read_text())
    if not result.get("ok"):
        say(f"FAIL {label}: {result.get('error') or death(code, args.timeout)}")
        return False
    problems = []
    layers = result.get("precision_layers")
    bad = precision_problem(key, layers)
    if bad:
        problems.append(bad)
    warn = precision_warning(layers)
    if warn:
        say(f"  warning: {warn}")
    with np.load(str(result_file) + ".npz") as z:
        got = [z[f"arr_{i}"] for i in range(len(z.files))]
    try:
        with deploy.load(src, device="cpu") as ref:
            want = ref.predict_batch(images)
    except RddError as exc:
        say(f"FAIL {label}: ONNX Runtime could not run {src_name} for the comparison: {exc}")
        return False
    agree = float(np.mean([(a == b).mean() for a, b in zip(got, want)]))
    floor = args.min_agreement_int8 if key == "int8" else args.min_agreement_fp16
    say(f"  agreement with ONNX Runtime ({src_name}, CPU): {agree:.2%} of pixels on {len(images)} images (floor {floor:.0%})")
    if agree < floor:
        problems.append(f"labels agree on {agree:.2%} < {floor:.0%}")
    if problems:
        say(f"FAIL {label}: {'; '.join(problems)}")
        return False
    say(f"PASS {label}")
    return True


def _run() -> Any:  # pragma: no cover - the console entry
    sys.exit(main(sys.argv[1:]))


if __name__ == "__main__":  # pragma: no cover
    _run()
