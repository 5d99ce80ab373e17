"""The CLI wiring around TensorRT, run through the recording double (no GPU, no real TensorRT here):
`rdd-edge engine` adds engines to an export transactionally, `check` runs them, shows the layer
precisions and times the batches the engine accepts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rdd_edge.cli import app
from trt_double import copied_export, install


@pytest.fixture
def run_dir(trt_export_src, tmp_path) -> Path:
    run = copied_export(trt_export_src, tmp_path / "runs" / "distill-x" / "export").parent
    man = json.loads((run / "export" / "manifest.json").read_text())
    man["data"] = {"name": "synthetic", "val_images": 3, "size": [16, 24]}
    (run / "export" / "manifest.json").write_text(json.dumps(man))
    return run


def test_engine_command_builds_lists_and_check_runs_them(monkeypatch, run_dir):
    d, rt = install(monkeypatch, "10.3.0.26")
    res = CliRunner().invoke(app, ["engine", str(run_dir), "--trt", "all", "--max-batch", "2", "--workspace", "0.5"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    out = run_dir / "export"
    man = json.loads((out / "manifest.json").read_text())
    assert {"engine-fp16", "engine-int8"} <= set(man["artifacts"])
    for key in ("engine-fp16", "engine-int8"):
        a = man["artifacts"][key]
        assert a["profile"]["max"][0] == 2 and a["runtime"] == "tensorrt" and a["precision_layers"]
        assert (out / a["file"]).is_file() and (out / a["sidecar"]).is_file()
        src = "model." + key.split("-")[1] + ".onnx"
        assert a["trtexec"].startswith(f"trtexec --onnx={src} ") and a["trtexec"] in res.output  # printed and stored
        assert a["trtexec_load"] == f"trtexec --loadEngine={a['file']} --shapes=images:1x3x16x24"
    assert set(man["files"]) == {p.name for p in out.iterdir()}  # still exactly the folder
    assert "INT8" in res.output and "layers" in res.output  # the precision report is shown
    res = CliRunner().invoke(app, ["check", str(run_dir), "--batch", "4", "--min-time", "0.01", "--max-drop", "100",
                                   "--no-torch", "--profile-layers"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    rows = {r["name"]: r for r in json.loads((out / "check.json").read_text())["rows"]}
    assert rows["onnx"]["latency"]["b1"]["gpu_note"].startswith("host-to-host only") and not rows["onnx"]["layer_profile"]
    for key in ("engine-fp16", "engine-int8"):  # both clocks in check.json; the fake CUDA's events answer 0.25 ms
        assert rows[key]["latency"]["b1"]["gpu_compute"]["p50_ms"] == 0.25 and rows[key]["latency"]["b1"]["p50_ms"] > 0
        assert rows[key]["layer_profile"] == [f"check-layers-{key}.csv", f"check-layers-{key}.md"]
        assert all((out / f).is_file() for f in rows[key]["layer_profile"])
    for key in ("engine-fp16", "engine-int8"):
        assert rows[key]["status"] == "passed" and "TensorRT" in rows[key]["backend"], rows[key]
        assert set(rows[key]["latency"]) == {"b1", "b2"}  # batch 4 asked, the engine takes at most 2
        assert "layers" in rows[key]["detail"]
    assert "engine-int8 layers:" in res.output
    assert rt.streams == {} and rt.device == {} and rt.pinned == {}  # every runner closed after its row


def test_engine_command_failure_leaves_the_export_as_it_was(monkeypatch, run_dir):
    d, _ = install(monkeypatch, "10.13.0.35")
    out = run_dir / "export"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    d.build_fails = True
    res = CliRunner().invoke(app, ["engine", str(run_dir), "--trt", "all"])
    assert res.exit_code != 0 and "could not build an engine" in str(res.exception)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".export.") and p.name != ".export.lock"]


def test_engine_command_without_tensorrt_says_how(run_dir):
    res = CliRunner().invoke(app, ["engine", str(run_dir)])
    assert res.exit_code != 0 and "TensorRT is not installed here" in str(res.exception)


def test_check_on_cuda_with_a_cpu_only_onnx_runtime_runs_onnx_on_the_cpu_with_a_note(monkeypatch, run_dir):
    """docs/devices.md's `rdd-edge check export/ --device cuda` on a device whose ONNX Runtime is the CPU build:
    engines on the (recording) GPU, ONNX rows on the CPU with a note, the FP32 reference has figures,
    and the gate decides on the engines' own drops."""
    import numpy as np

    d, _ = install(monkeypatch, "10.3.0.26")
    res = CliRunner().invoke(app, ["engine", str(run_dir), "--trt", "all", "--max-batch", "2"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    out = run_dir / "export"
    args = ["check", str(run_dir), "--device", "cuda", "--batch", "2", "--min-time", "0.01", "--no-torch"]
    res = CliRunner().invoke(app, [*args, "--max-drop", "100"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    rows = {r["name"]: r for r in json.loads((out / "check.json").read_text())["rows"]}
    for key in ("onnx", "fp16", "int8", "int8-cpu"):
        assert rows[key]["status"] == "passed" and "CPU" in rows[key]["backend"], rows[key]
        assert rows[key]["note"].startswith("ran on the CPU: this ONNX Runtime has no GPU provider")
    assert rows["onnx"]["miou"] is not None and rows["onnx"]["latency"]["b1"]  # the reference has figures
    for key in ("engine-fp16", "engine-int8"):
        assert "TensorRT" in rows[key]["backend"] and rows[key]["drop"] is not None and not rows[key]["note"]
    assert "onnx: ran on the CPU" in res.output and "ran on the CPU" in (out / "check.md").read_text()

    # an engine that computes garbage: the gate fails on its drop, the ONNX rows still pass
    d.corrupt_output = lambda outs: {k: np.zeros_like(v) for k, v in outs.items()}
    res = CliRunner().invoke(app, [*args, "--max-drop", "1"])
    assert res.exit_code == 1
    check = json.loads((out / "check.json").read_text())
    rows = {r["name"]: r for r in check["rows"]}
    assert rows["engine-fp16"]["status"] == "failed gate" and rows["engine-int8"]["status"] == "failed gate"
    assert all(rows[k]["status"] == "passed" for k in ("onnx", "fp16"))
    assert all("engine" in f for f in check["failures"]) and len(check["failures"]) == 2


def test_engine_command_removes_what_an_interrupted_build_left(monkeypatch, run_dir):
    install(monkeypatch, "10.3.0.26")
    stale = run_dir / ".export.staging-interrupted"
    stale.mkdir()
    (stale / "model.fp16.engine").write_bytes(b"half an engine")
    res = CliRunner().invoke(app, ["engine", str(run_dir), "--trt", "fp16"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert not stale.exists()
