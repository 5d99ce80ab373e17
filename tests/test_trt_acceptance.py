"""deploy.trt_acceptance: its logic, output and exit code, around the recording TensorRT double."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rdd_edge.deploy.trt_acceptance import main, precision_problem
from trt_double import copied_export, install

FAST = ["--max-batch", "4", "--latency-time", "0.02", "--num-images", "3"]


@pytest.fixture
def export_dir(trt_export_src, tmp_path) -> Path:
    return copied_export(trt_export_src, tmp_path / "export")


@pytest.mark.parametrize("version", ["10.3.0.26", "11.0.0.1"])
def test_both_engines_pass(monkeypatch, export_dir, capsys, version):
    d, rt = install(monkeypatch, version)
    before = sorted(p.name for p in export_dir.iterdir())
    assert main([str(export_dir), *FAST]) == 0
    out = capsys.readouterr().out
    assert "PASS FP16 engine" in out and "PASS INT8 engine" in out and "PASS: 2 of 2 engines passed" in out
    assert out.strip().endswith(f"rdd-edge engine {export_dir} --trt all --max-batch 4 --workspace 1")
    assert f"with TensorRT {version} on Orin (sm 8.7); profile batch 1..4" in out
    assert "precision: INT8 0, FP16 " in out and "FP32 0 layers" in out  # the FP16 engine
    assert "agreement with ONNX Runtime (model.int8.onnx, CPU): 100.00% of pixels on 3 images" in out
    assert "latency batch 1:" in out and "latency batch 4:" in out
    assert "GPU compute p50 0.25 ms (CUDA events around execute" in out  # the fake CUDA's event times
    assert "same build with trtexec (file names relative to the export folder): trtexec --onnx=model.fp16.onnx " in out
    # the images are the embedded synthetic street scenes at the model's input size, never noise
    assert "images: 3 synthetic street scenes at 16x24 (seeds 0..2)" in out
    # the version header comes first
    lines = out.splitlines()
    assert lines[0].startswith("machine: ") and any(line == f"TensorRT: {version}; numpy: {np.__version__}" for line in lines[:6])
    assert any("cuda-python 12.2" in line and line.startswith("CUDA runtimes: libcudart ") for line in lines[:7])
    assert any(line.startswith("ONNX Runtime: ") and "CPU" in line for line in lines[:6])
    assert sorted(p.name for p in export_dir.iterdir()) == before  # a trial: the export is left as it was
    assert rt.streams == {} and rt.device == {} and rt.pinned == {}  # the parent never touched CUDA buffers


def test_a_native_crash_is_one_fail_line_and_the_summary_still_prints(monkeypatch, export_dir, capsys):
    d, _ = install(monkeypatch, "10.3.0.26")
    d.build_crash = True  # SIGSEGV inside "TensorRT" while building, in the child process
    assert main([str(export_dir), *FAST]) == 1
    out = capsys.readouterr().out
    assert "FAIL FP16 engine: the build and run process died of SIGSEGV (a crash inside TensorRT or CUDA)" in out
    assert "FAIL INT8 engine: the build and run process died of SIGSEGV" in out
    assert out.strip().endswith("FAIL: 0 of 2 engines passed")


def test_bundled_check_images_are_the_default(monkeypatch, export_dir, capsys):
    """A bundle's export carries check-data/: the acceptance check compares on those images."""
    import json

    from rdd_edge.data.synthetic import render_scene
    from rdd_edge.deploy.check_data import write_check_data

    install(monkeypatch, "10.3.0.26")
    pairs = [render_scene(100 + i, (40, 60)) for i in range(5)]
    entry = write_check_data(export_dir, [p[0] for p in pairs], [np.minimum(p[1], 3) for p in pairs],
                             [f"scene{i}" for i in range(5)], "synthetic val")
    man = json.loads((export_dir / "manifest.json").read_text())
    man["check_data"] = entry
    (export_dir / "manifest.json").write_text(json.dumps(man))
    assert main([str(export_dir), *FAST]) == 0
    assert "images: 3 of the export's 5 check images (synthetic val)" in capsys.readouterr().out


def test_rebuild_line_repeats_every_option_and_dla_reports_placement(monkeypatch, export_dir, capsys):
    d, _ = install(monkeypatch, "10.3.0.26")
    d.num_dla_cores = 2
    args = [str(export_dir), "--latency-time", "0.02", "--num-images", "2", "--max-batch", "4", "--opt-batch", "2",
            "--workspace", "0.5", "--dla-core", "1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "DLA core 1 (weakly typed, builder flags FP16, GPU_FALLBACK): engine inspector: 1 engine layers on DLA, " in out
    assert "; estimate before the build: " in out and " network layers can run on DLA" in out
    assert "DLA core 1 (weakly typed, builder flags INT8, FP16, GPU_FALLBACK)" in out and "profile batch 2..2" in out
    assert out.strip().endswith(f"rdd-edge engine {export_dir} --trt all --max-batch 4 --workspace 0.5 "
                                "--opt-batch 2 --dla-core 1")


def test_wrong_engine_output_fails_with_exit_1(monkeypatch, export_dir, capsys):
    d, _ = install(monkeypatch, "10.3.0.26")
    d.corrupt_output = lambda outs: {**outs, "labels": (outs["labels"] + 1) % 4}
    assert main([str(export_dir), *FAST]) == 1
    out = capsys.readouterr().out
    assert "FAIL FP16 engine: labels agree on 0.00% < 99%" in out and "FAIL INT8 engine: labels agree on 0.00% < 95%" in out
    assert out.strip().endswith("FAIL: 0 of 2 engines passed")  # and no advice to install failing engines


def test_missing_file_and_build_failure_are_fail_lines(monkeypatch, export_dir, capsys):
    d, _ = install(monkeypatch, "10.13.0.35")
    (export_dir / "model.int8.onnx").unlink()
    assert main([str(export_dir), *FAST]) == 1
    out = capsys.readouterr().out
    assert "PASS FP16 engine" in out and "FAIL INT8 engine:" in out and "not found; export it first (rdd-edge export --int8)" in out
    d.build_fails = True
    assert main([str(export_dir), *FAST]) == 1
    out = capsys.readouterr().out
    assert "FAIL FP16 engine:" in out and "could not build an engine" in out
    assert main([str(export_dir / "nope")]) == 1


def test_images_folder_is_used(monkeypatch, export_dir, tmp_path, capsys):
    install(monkeypatch, "10.3.0.26")
    from rdd_edge.data.base import write_image

    imgs = tmp_path / "imgs"
    for i in range(2):
        write_image(imgs / f"{i}.png", np.random.default_rng(i).integers(0, 256, (30, 40, 3), dtype=np.uint8))
    assert main([str(export_dir), *FAST, "--images", str(imgs)]) == 0
    assert "on 2 images" in capsys.readouterr().out


def test_precision_problem_and_cannot_tell():
    from rdd_edge.deploy.trt_acceptance import precision_warning

    assert precision_problem("int8", {"int8": 5, "fp16": 3, "fp32": 0}) is None
    assert "no INT8 layers" in precision_problem("int8", {"int8": 0, "fp16": 8, "fp32": 0})
    assert "mostly FP32" in precision_problem("fp16", {"int8": 0, "fp16": 1, "fp32": 9})
    assert precision_problem("fp16", {"int8": 0, "fp16": 9, "fp32": 2}) is None
    # a report that is mostly unknown (no context, Myelin-fused) cannot tell: a warning, never a FAIL
    thin = {"int8": 0, "fp16": 0, "fp32": 0, "unknown": 12}
    assert precision_problem("int8", thin) is None and "cannot tell" in precision_warning(thin)
    assert precision_problem("fp16", None) is None and "no report" in precision_warning(None)
    assert precision_warning({"int8": 3, "fp16": 2, "fp32": 0, "unknown": 1}) is None


def test_a_thin_precision_report_warns_and_passes(monkeypatch, export_dir, capsys):
    d, _ = install(monkeypatch, "10.3.0.26")
    d.inspector_types = False  # no types at all: FP16 layers cannot be told (INT8 still reads from kernel names)
    assert main([str(export_dir), *FAST]) == 0
    out = capsys.readouterr().out
    assert "warning: cannot tell the layer precisions" in out and "PASS FP16 engine" in out


def test_no_tensorrt_is_one_fail_line(monkeypatch, export_dir, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert main([str(export_dir)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("FAIL: no TensorRT on this machine: ") and "[trt]" in out[-1]
    assert [line for line in out if line.startswith("FAIL")] == [out[-1]] and out[0].startswith("machine: ")


def test_children_are_never_forked_after_opencv_threads_or_an_onnx_runtime_session(monkeypatch, export_dir, capsys):
    """OpenCV's pool and ONNX Runtime's sessions are not fork-safe (opencv/opencv#5150): at every child's
    start the parent runs no OpenCV worker threads and has no ONNX Runtime session alive (counted here,
    independently, around onnxruntime.InferenceSession), else the child is spawned."""
    import multiprocessing

    import cv2
    import onnxruntime

    from rdd_edge.deploy import trt_acceptance

    install(monkeypatch, "10.3.0.26")
    made = []
    real_session = onnxruntime.InferenceSession

    def counting(*a, **k):
        made.append(1)
        return real_session(*a, **k)

    monkeypatch.setattr(onnxruntime, "InferenceSession", counting)
    starts = []
    real_get_context = multiprocessing.get_context

    def recording(method=None):
        ctx = real_get_context(method)
        starts.append({"method": method, "cv2_threads": cv2.getNumThreads(), "sessions_so_far": len(made)})
        return ctx

    monkeypatch.setattr(trt_acceptance.multiprocessing, "get_context", recording)
    threads = cv2.getNumThreads()
    assert main([str(export_dir), *FAST]) == 0
    assert len(starts) == 2 and all(s == {"method": "fork", "cv2_threads": 1, "sessions_so_far": 0} for s in starts)
    assert len(made) == 2  # the comparisons ran, after both children
    assert cv2.getNumThreads() == threads  # restored for whoever called main()
    # with a hazard present, a child is spawned (a fresh interpreter), never forked
    cv2.setNumThreads(2)
    try:
        assert trt_acceptance.fork_hazards() == ["OpenCV runs 2 threads"] and trt_acceptance.start_method() == "spawn"
    finally:
        cv2.setNumThreads(threads)
    from rdd_edge import deploy

    with deploy.load(export_dir / "model.onnx", device="cpu"):
        assert "1 ONNX Runtime session(s) were created" in trt_acceptance.fork_hazards()
        assert trt_acceptance.start_method() == "spawn"


def _sleeps(*args):
    import time

    time.sleep(60)


def test_a_child_that_outlives_the_timeout_is_one_fail_line_naming_it(monkeypatch, export_dir, capsys):
    from rdd_edge.deploy import trt_acceptance

    install(monkeypatch, "10.3.0.26")
    assert trt_acceptance.parse_args([str(export_dir)]).timeout == 900  # a Jetson build fits; an hour was a hang
    monkeypatch.setattr(trt_acceptance, "engine_child", _sleeps)
    assert main([str(export_dir), *FAST, "--timeout", "0.5"]) == 1
    out = capsys.readouterr().out
    fails = [line for line in out.splitlines() if line.startswith("FAIL FP16 engine")]
    assert fails == ["FAIL FP16 engine: timed out: the build and run took longer than --timeout 0.5 s and were stopped"]
