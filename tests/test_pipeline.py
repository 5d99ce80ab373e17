"""The one-command main job, at a tiny budget: every stage leaves its files."""

import json

import cv2
import pytest
from typer.testing import CliRunner

from rdd_edge.cli import app


@pytest.mark.slow
def test_pipeline_runs_every_stage(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["pipeline", "--teacher-iters", "2", "--iters", "2", "--batch", "2", "--calib", "32",
            "--demo-scenes", "2", "--max-drop", "100", "--device", "cpu", "-q"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output + repr(res.exception)
    teacher = tmp_path / "runs" / "teacher-pipeline"
    run = tmp_path / "runs" / "distill-pipeline"
    assert (teacher / "best.pt").is_file()
    assert json.loads((run / "config.json").read_text())["teacher"] == str(teacher.relative_to(tmp_path) / "best.pt")
    exported = {p.name for p in (run / "export").iterdir()}
    assert {"model.onnx", "model.fp16.onnx", "model.int8.onnx", "model.int8-cpu.onnx", "manifest.json",
            "check.json", "check.md", "check.png"} <= exported
    rows = {r["name"]: r["status"] for r in json.loads((run / "export" / "check.json").read_text())["rows"]}
    assert rows["onnx"] == "passed" and rows["int8-cpu"] == "passed"
    summary = json.loads((run / "pipeline.json").read_text())
    assert summary["demo_frames"] == 2 * 4  # 2 scenes, each held 4 frames
    cap = cv2.VideoCapture(str(run / "demo" / "demo.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 8
    assert "rdd-edge pipeline" in res.output


@pytest.mark.parametrize("bad, message", [({"student": "mbv9"}, "unknown model 'mbv9'"),
                                          ({"method": "kdd"}, "unknown KD method 'kdd'"),
                                          ({"teacher_model": "r19"}, "unknown model 'r19'")])
def test_a_wrong_name_fails_before_the_teacher_trains(tmp_path, monkeypatch, bad, message):
    """The student's and teacher's configs are checked first: no minutes of teacher training before the error."""
    import rdd_edge.distill.train as trainer
    from rdd_edge.cli.pipeline import PipelineSpec, run_pipeline
    from rdd_edge.errors import RddError

    def must_not_train(*a, **k):
        raise AssertionError("training started before the names were checked")

    monkeypatch.setattr(trainer, "train", must_not_train)
    with pytest.raises(RddError, match=message):  # ModelError / ConfigError: one line on the CLI
        run_pipeline(PipelineSpec(runs_root=tmp_path / "runs", device="cpu", **bad), stage=lambda title: None)
    assert not (tmp_path / "runs").exists()
