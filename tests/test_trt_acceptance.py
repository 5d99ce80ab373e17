"""deploy.trt_acceptance: its logic, output and exit code, around the recording TensorRT double."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rdd_edge.deploy.trt_acceptance import main, precision_problem
from test_trt_double import copied_export, install

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
    assert out.strip().endswith(f"rdd-edge engine {export_dir} --trt all --max-batch 4")
    assert f"with TensorRT {version} on Orin (sm 8.7); profile batch 1..4" in out
    assert "precision: INT8 0, FP16 " in out and "FP32 0 layers" in out  # the FP16 engine
    assert "agreement with ONNX Runtime (model.int8.onnx, CPU): 100.00% of pixels on 3 images" in out
    assert "latency batch 1:" in out and "latency batch 4:" in out
    assert sorted(p.name for p in export_dir.iterdir()) == before  # a trial: the export is left as it was
    assert rt.streams == {} and rt.device == {} and rt.pinned == {}  # every runner closed


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


def test_precision_problem():
    assert precision_problem("int8", {"int8": 5, "fp16": 3, "fp32": 0}) is None
    assert "no INT8 layers" in precision_problem("int8", {"int8": 0, "fp16": 8, "fp32": 0})
    assert "mostly FP32" in precision_problem("fp16", {"int8": 0, "fp16": 1, "fp32": 9})
    assert precision_problem("fp16", {"int8": 0, "fp16": 9, "fp32": 2}) is None
    assert "no per-layer" in precision_problem("fp16", None)


def test_no_tensorrt_is_one_fail_line(monkeypatch, export_dir, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert main([str(export_dir)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [out[0]] and out[0].startswith("FAIL: no TensorRT on this machine: ") and "rdd-edge[trt]" in out[0]
