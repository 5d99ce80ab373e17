"""benchmarks/distill_speed.py times ``distill.train.train_step`` itself, for every variant and KD method."""

from __future__ import annotations

import json
import time

import pytest

import rdd_edge.distill.train
from benchmarks import distill_speed

# the README's CPU smoke mode, shrunk: small models, one timed step per variant, a tiny matmul
SMOKE = ["--device", "cpu", "--size", "32x32", "--batch", "2", "--iters", "1", "--warmup", "0", "--student", "mbv2",
         "--teacher", "r18", "--head-channels", "8", "--classes", "5", "--matmul-n", "64"]


def _spy(monkeypatch, pause: float = 0.0) -> list[dict]:
    """Replace rdd_edge.distill.train.train_step by a wrapper that records each call and runs the real step."""
    real, calls = rdd_edge.distill.train.train_step, []

    def step(ctx, images, labels):
        time.sleep(pause)
        out = real(ctx, images, labels)
        calls.append({"teacher": ctx.teacher is not None, "kd": ctx.kd.method if ctx.kd else None,
                      "stage": ctx.rdd.current, "features": ctx.want_features, "kd_term": float(out[2])})
        return out

    monkeypatch.setattr(rdd_edge.distill.train, "train_step", step)
    return calls


def test_every_variant_times_the_trainers_step(monkeypatch, tmp_path):
    calls = _spy(monkeypatch, pause=0.03)
    assert distill_speed.main(SMOKE + ["--json", str(tmp_path / "speed.json")]) == 0
    got = [(c["teacher"], c["kd"], c["stage"]) for c in calls]
    assert got == [(False, None, None), (True, "kd", None), (True, "kd", "tfe"), (True, "kd", "tse")]
    res = json.loads((tmp_path / "speed.json").read_text())
    assert [r["variant"] for r in res["rows"]] == ["student only", "KD", "KD + RDD (TFE)", "KD + RDD (TSE)"]
    assert all(r["ms"] >= 30.0 for r in res["rows"])  # the timed call is the (patched) trainer step
    assert res["rows"][1]["vs_kd"] == 0.0 and res["meta"]["method"] == "kd" and res["meta"]["matmul_n"] == 64


def test_an_at_variant_runs_through_the_step_with_features(monkeypatch, tmp_path):
    calls = _spy(monkeypatch)
    assert distill_speed.main(SMOKE + ["--method", "at", "--json", str(tmp_path / "at.json")]) == 0
    distilling = [c for c in calls if c["teacher"]]
    assert len(distilling) == 3 and all(c["kd"] == "at" and c["features"] for c in distilling)
    assert all(c["kd_term"] > 0 for c in distilling)  # the AT term was computed from both models' features
    rows = json.loads((tmp_path / "at.json").read_text())["rows"]
    assert [r["variant"] for r in rows] == ["student only", "AT", "AT + RDD (TFE)", "AT + RDD (TSE)"]


def test_every_variant_runs_the_step_context_the_trainer_builds(monkeypatch, tmp_path):
    """The benchmark assembles nothing itself: each variant's StepContext comes from the trainer's builder."""
    real, built = rdd_edge.distill.train.build_step_context, []

    def spy(cfg, student, teacher=None, **kw):
        ctx = real(cfg, student, teacher, **kw)
        built.append(ctx)
        return ctx

    calls = _spy(monkeypatch)
    monkeypatch.setattr(rdd_edge.distill.train, "build_step_context", spy)
    assert distill_speed.main(SMOKE + ["--method", "cwd"]) == 0
    assert len(built) == len(calls) == 4 and all(c["kd"] == "cwd" and c["features"] for c in calls[1:])
    assert [ctx.kd.method if ctx.kd else None for ctx in built] == [None, "cwd", "cwd", "cwd"]


def test_a_non_finite_loss_stops_the_benchmark_with_the_guards_error(monkeypatch, capsys):
    def nan_step(ctx, images, labels):
        raise rdd_edge.distill.train.NonFiniteLoss("non-finite loss (nan)")

    monkeypatch.setattr(rdd_edge.distill.train, "train_step", nan_step)
    assert distill_speed.main(SMOKE) == 1
    assert "error: non-finite loss (nan)" in capsys.readouterr().err


def test_options_are_checked():
    with pytest.raises(SystemExit):
        distill_speed.parse_args(["--method", "none"])  # the KD variants need a KD method
    assert distill_speed.parse_args(["--method", "cwd"]).method == "cwd"
