"""Engines by default (issue 26): `demo EXPORT` and `deploy.load(folder)` run the fastest artifact that
passed check, engines included when they were built for this GPU and TensorRT (sha256 as exported);
a faster artifact passed over is named in one note. `check` skips an engine built elsewhere (with the
rebuild command) and still fails a changed one. All around the recording TensorRT double."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rdd_edge.cli import app
from rdd_edge.deploy.integrity import seal
from trt_double import copied_export, install

BUILT_WITH = "10.3.0.26"


@pytest.fixture(scope="module")
def engines_src(trt_export_src, tmp_path_factory):
    """An export with both engines (built by `rdd-edge engine` on the double, TensorRT 10.3) and a passing check."""
    run = copied_export(trt_export_src, tmp_path_factory.mktemp("choose") / "runs" / "distill-x" / "export").parent
    man = json.loads((run / "export" / "manifest.json").read_text())
    man["data"] = {"name": "synthetic", "val_images": 3, "size": [16, 24]}
    (run / "export" / "manifest.json").write_text(json.dumps(man))
    with pytest.MonkeyPatch.context() as mp:
        install(mp, BUILT_WITH)
        res = CliRunner().invoke(app, ["engine", str(run), "--trt", "all", "--max-batch", "2"])
        assert res.exit_code == 0, res.output + repr(res.exception)
        res = CliRunner().invoke(app, ["check", str(run), "--device", "cuda", "--batch", "2", "--min-time", "0.01",
                                       "--max-drop", "100", "--no-torch"])
        assert res.exit_code == 0, res.output + repr(res.exception)
    return run / "export"


def _export(src: Path, tmp_path: Path, fps: dict[str, float]) -> Path:
    """A copy whose check.json says these batch-1 speeds (so which is fastest is known)."""
    out = tmp_path / "runs" / "distill-x" / "export"
    shutil.copytree(src, out)
    doc = json.loads((out / "check.json").read_text())
    for r in doc["rows"]:
        r["latency"]["b1"]["fps"] = fps.get(r["name"], 1.0)
    doc["seal"] = seal(doc)  # as `rdd-edge check` would have sealed these speeds (check.json is bound to its rows)
    (out / "check.json").write_text(json.dumps(doc))
    return out


SPEEDS = {"engine-int8": 900.0, "engine-fp16": 500.0, "int8": 60.0, "fp16": 40.0, "onnx": 30.0}


def test_demo_runs_the_compatible_engine_and_names_a_faster_one_it_skipped(monkeypatch, engines_src, tmp_path):
    from rdd_edge.data.synthetic import render_scene
    from rdd_edge.deploy.demo import DemoSpec, demo

    d, _ = install(monkeypatch, BUILT_WITH)
    out = _export(engines_src, tmp_path, SPEEDS)
    with open(out / "model.int8.engine", "r+b") as f:  # changed since the check: its sha256 no longer matches
        f.seek(0, 2)
        f.write(b"\0")
    frames = tmp_path / "frames"
    frames.mkdir()
    import cv2

    cv2.imwrite(str(frames / "a.png"), render_scene(0, (16, 24))[0][:, :, ::-1])
    seen = []
    res = demo(DemoSpec(source=str(frames), artifact=out.parent, max_frames=1), on_load=seen.append)
    assert seen[0].path.name == "model.fp16.engine" and seen[0].provider.startswith(f"TensorRT {BUILT_WITH}")
    assert res.frames == 1
    assert any(call[2] == "execute_async_v3" for call in d.journal)  # the engine ran, not ONNX Runtime
    note = res.notes[0]
    assert note.startswith("running model.fp16.engine; skipped faster model.int8.engine (900 images/s")
    assert "model.int8.engine: changed or missing since the check" in note and "\n" not in note


def test_load_folder_passes_over_engines_built_for_another_tensorrt(monkeypatch, engines_src, tmp_path):
    from rdd_edge import deploy

    install(monkeypatch, "10.13.0.35")  # this machine: another TensorRT release
    out = _export(engines_src, tmp_path, SPEEDS)
    with deploy.load(out) as seg:
        assert seg.path.name == "model.int8.onnx"  # the fastest ONNX file that passed
        note = seg.info.notes[0]
    assert "skipped faster model.int8.engine (900 images/s at batch 1 in the check), model.fp16.engine" in note
    assert f"engine built for Orin (sm_87) with TensorRT {BUILT_WITH}; this machine has Orin (sm_87) with TensorRT " \
           "10.13.0.35" in note
    with deploy.load(out, device="cpu") as seg:  # engines never on --device cpu
        assert seg.path.suffix == ".onnx" and "an engine, and --device cpu" in seg.info.notes[0]


def test_check_skips_a_foreign_engine_with_the_rebuild_command_and_fails_a_changed_one(monkeypatch, engines_src, tmp_path):
    from rdd_edge.deploy.check import CheckSpec, run_check

    install(monkeypatch, "10.13.0.35")
    out = _export(engines_src, tmp_path, {})
    data = (out / "model.fp16.engine").read_bytes()
    (out / "model.fp16.engine").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # changed: still a failure
    res = run_check(CheckSpec(run=out, device="cuda", min_time=0.01, max_drop=100, reference=False))
    rows = {r.name: r for r in res.rows}
    assert rows["engine-int8"].status == "skipped"
    assert rows["engine-int8"].reason == (f"built for Orin (sm_87) with TensorRT {BUILT_WITH}; rebuild with "
                                          f"`rdd-edge engine {out} --trt int8`")
    assert rows["engine-fp16"].status == "failed" and "sha256 differs" in rows["engine-fp16"].reason
    assert res.failures == [f"engine-fp16: {rows['engine-fp16'].reason}"]
    assert np.isfinite(rows["onnx"].miou)


def test_a_bundle_of_an_export_with_engines_holds_no_engine_sidecar_or_timing_cache(monkeypatch, engines_src, tmp_path):
    """Engines only run on the GPU and TensorRT release that built them: a bundle leaves them out, its
    manifest says so, and the bundled export still checks (ONNX rows) on the device."""
    from rdd_edge.deploy import bundle as bundle_mod
    from rdd_edge.deploy.bundle import BundleSpec, make_bundle
    from rdd_edge.deploy.check import CheckSpec, run_check

    out = _export(engines_src, tmp_path, {})
    (out / "timing-orin-sm87-trt10-3-0-26.cache").write_bytes(b"cache")  # as a build leaves it
    man = json.loads((out / "manifest.json").read_text())
    man["files"] = sorted([*man["files"], "timing-orin-sm87-trt10-3-0-26.cache"])
    (out / "manifest.json").write_text(json.dumps(man))
    assert any(f.endswith(".engine") for f in man["files"]) and any(f.endswith(".engine.json") for f in man["files"])

    def fake_wheel(folder):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "rdd_edge-0.1.0-py3-none-any.whl").write_bytes(b"wheel")
        return folder / "rdd_edge-0.1.0-py3-none-any.whl"

    monkeypatch.setattr(bundle_mod, "build_wheel", fake_wheel)  # the wheel is test_bundle's business
    monkeypatch.setattr(bundle_mod, "wheel_top_level", lambda wheel: ["rdd_edge"])
    said = []
    b = make_bundle(BundleSpec(source=out, out=tmp_path / "bundle", images=False), say=said.append)
    names = sorted(p.name for p in (b / "export").iterdir())
    assert not [n for n in names if n.endswith((".engine", ".engine.json", ".cache"))], names
    bman = json.loads((b / "export" / "manifest.json").read_text())
    assert not [k for k in bman["artifacts"] if k.startswith("engine")] and sorted(bman["files"]) == names
    assert "model.fp16.engine" in bman["bundle_note"] and "rdd-edge engine" in bman["bundle_note"]
    assert any("left out model.fp16.engine" in line for line in said)
    res = run_check(CheckSpec(run=b / "export", min_time=0.01, max_drop=100, reference=False))
    assert res.passed and {r.name for r in res.rows} == {"onnx", "fp16", "int8", "int8-cpu"}
