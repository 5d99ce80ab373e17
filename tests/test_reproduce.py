"""benchmarks/reproduce.py: the plan (--dry-run) and the whole chain tiny on a CPU (import, eval, train, table)."""

from __future__ import annotations

import pytest
import torch

from benchmarks import reproduce as R
from rdd_edge.models import create_model
from rdd_edge.models.released import released_names
from rdd_edge.runs import read_json


def test_dry_run_prints_the_plan_and_an_estimate_labelled_as_assumed(capsys):
    assert R.main(["--teacher", "t.pth", "--backbone", "resnet18-imagenet.pth", "--data", "/data/cs", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    runs = [line for line in out if line.startswith("2. ")]
    assert len(runs) == 2 * 3 * 3  # release / defaults x baseline / kd / kd+rdd x 3 seeds
    assert any("--recipe release" in line and "kd+rdd" in line for line in runs)
    assert "expected 78.07" in out[0]
    assert out[-1] == f"18 runs, {18 * 40000} steps; at 0.5 s/step (ASSUMED, not measured: pass --sec-per-step): 100.0 h"
    R.main(["--teacher", "t.pth", "--dry-run", "--sec-per-step", "0.25", "--seeds", "0"])
    assert capsys.readouterr().out.splitlines()[-1] == "6 runs, 240000 steps; at 0.25 s/step (measured (--sec-per-step)): 16.7 h"


def test_a_tiny_cpu_run_imports_evaluates_trains_and_writes_the_table(tmp_path, capsys):
    torch.manual_seed(0)
    teacher = create_model("r18", num_classes=11, aux=True)  # a released-layout teacher file, small
    path = tmp_path / "teacher.pth"
    torch.save({k: teacher.state_dict()[ours] for k, ours in released_names(teacher).items()}, path)
    argv = ["--teacher", str(path), "--teacher-model", "r18", "--student", "mbv2", "--dataset", "synthetic",
            "--out", str(tmp_path / "out"), "--seeds", "0", "--ways", "kd+rdd", "--iters", "2", "--batch", "2",
            "--crop", "32x48", "--val-every", "2", "--images", "4", "--quiet"]
    assert R.main(argv) == 0
    report = (tmp_path / "out" / "RESULTS.md").read_text()
    assert "| release | kd+rdd | 1 |" in report and "| defaults | kd+rdd | 1 |" in report
    rel = read_json(tmp_path / "out" / "results" / "repro-release-kd-rdd-s0.json")
    assert rel["steps"] == 2 and rel["best_miou"] is not None
    assert any(line.startswith("tfe_kl:") for line in rel["recipe_changes"])
    config = read_json(tmp_path / "out" / "runs" / "distill-repro-release-kd-rdd-s0" / "config.json")
    assert (config["recipe"], config["tfe_kl"], config["align_corners"], config["iters"]) == ("release", "aux_main", True, 2)
    assert read_json(tmp_path / "out" / "results" / "teacher.json")["miou"] is not None
    capsys.readouterr()
    assert R.main(argv) == 0  # a second invocation trains nothing
    assert capsys.readouterr().out.count("done, skipped") == 2
