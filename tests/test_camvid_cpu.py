"""benchmarks/camvid_cpu.py, the CPU CamVid study (issue 30), in a tiny setting of the same code:
its plan, result files that make a later invocation skip finished runs, --plan's measured step times,
--test scoring, and the report's paired differences against a hand computation."""

from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pytest

import data_utils as du
from benchmarks import camvid_cpu as study

TINY = ["--size", "24x32", "--crop", "16x24", "--batch", "2", "--iters", "2", "--teacher-iters", "2", "--seeds", "0",
        "--teacher", "r18", "--head-channels", "8", "--threads", "1"]


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """A CamVid-layout folder with train / val / test, and one invocation of the study on it:
    the teacher and the KD + RDD run of seed 0 (``--only``), with ``--test``."""
    root = tmp_path_factory.mktemp("camvid_cpu")
    data = root / "camvid"
    du.camvid_compact(data, splits=("train", "val", "test"), n=3)
    results, runs = root / "results", root / "runs"
    argv = ["--data", str(data), "--results", str(results), "--runs", str(runs), "--test", str(data),
            "--only", "mbv2-kd-rdd-s0", *TINY]
    assert study.main(argv) == 0
    return data, results, runs, argv


def test_plan_is_teacher_then_alone_kd_rdd_per_seed_with_the_same_budget():
    args = study.parse_args(["--seeds", "0,1,2", "--iters", "300", "--teacher-iters", "700"])
    plan = study.build_plan(args)
    assert [r.id for r in plan[:4]] == ["teacher-r18", "mbv2-alone-s0", "mbv2-kd-s0", "mbv2-kd-rdd-s0"]
    assert len(plan) == 10 and plan[0].way == "teacher" and plan[0].iters == 700
    students = plan[1:]
    assert {(r.way, r.seed) for r in students} == {(w, s) for w in study.MAIN_WAYS for s in (0, 1, 2)}
    assert len({(r.iters, r.batch, r.crop, r.lr, r.size) for r in students}) == 1  # the same budget for every way
    extra = study.build_plan(study.parse_args(["--seeds", "0", "--extra"]))
    assert [r.way for r in extra[4:]] == list(study.EXTRA_WAYS)
    cfg = study.run_config(extra[4], args, study.Path("t.pt"))  # RDD's OR mode reaches the trainer
    assert (cfg.method, cfg.rdd, cfg.rdd_mode) == ("kd", True, "or")
    assert study.run_config(plan[1], args, None).method == "none"  # alone: plain supervised training


def test_each_run_writes_a_result_file_and_a_second_invocation_skips_it(tiny_study, capsys):
    data, results, runs, argv = tiny_study
    files = sorted(p.name for p in results.glob("*.json"))
    assert files == ["mbv2-kd-rdd-s0.json", "teacher-r18.json"]
    rec = json.loads((results / "mbv2-kd-rdd-s0.json").read_text())
    args = study.parse_args(argv)
    plan = {r.id: r for r in study.build_plan(args)}
    assert rec["plan"] == plan["mbv2-kd-rdd-s0"].key() and rec["plan"]["way"] == "kd+rdd"
    # the result describes the final weights: the trainer's last validation and a fresh scoring of last.pt agree
    assert rec["final_miou"] == pytest.approx(rec["final"]["miou"], abs=1e-9)
    present = [v for v in rec["final"]["iou"].values() if v is not None]
    assert rec["final"]["miou"] == pytest.approx(statistics.fmean(present), abs=1e-9)
    assert set(rec["final"]["iou"]) == {"Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence",
                                        "Car", "Pedestrian", "Bicyclist"}
    assert rec["teacher_sha256"] == study.sha256_file(runs / "teacher-r18" / "best.pt")
    assert rec["cpu"]["isa"] and rec["wall_s"] > 0 and rec["steps"] == 2 and "test" in rec and 0 <= rec["test"]["miou"] <= 1
    assert rec["data"] == {"train": 3, "val": 3}

    mtimes = {p: p.stat().st_mtime_ns for p in results.glob("*.json")}
    capsys.readouterr()
    assert study.main(argv) == 0
    out = capsys.readouterr().out
    assert "mbv2-kd-rdd-s0: done, final val mIoU" in out and "teacher-r18: done" in out
    assert {p: p.stat().st_mtime_ns for p in results.glob("*.json")} == mtimes  # nothing trained again

    changed = study.parse_args([*argv[:-len(TINY)], *TINY[:-2], "--iters", "3"])  # another plan: not done
    assert study.finished(changed, study.build_plan(changed)[3]) is None
    assert study.finished(args, plan["mbv2-kd-rdd-s0"]) is not None


def test_plan_option_prints_measured_step_times_and_the_total(tiny_study, capsys):
    data, results, runs, argv = tiny_study
    capsys.readouterr()
    assert study.main([*argv, "--plan"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("teacher-", "mbv2-"))}
    assert set(rows) == {"teacher-r18", "mbv2-alone-s0", "mbv2-kd-s0", "mbv2-kd-rdd-s0"}
    assert all(float(r[2]) > 0 for r in rows.values())  # s/step measured for every run
    assert rows["mbv2-kd-rdd-s0"][-1] == "done" and rows["mbv2-kd-s0"][-2:] == ["to", "run"]
    assert "estimated total" in out and "CPU:" in out


def test_paired_differences_and_the_report(tmp_path):
    """Paired differences over seeds against a hand computation; the report's table and plot."""
    finals = {("alone", 0): 0.30, ("alone", 1): 0.32, ("alone", 2): 0.31, ("kd", 0): 0.33, ("kd", 1): 0.32,
              ("kd", 2): 0.35, ("kd+rdd", 0): 0.34, ("kd+rdd", 1): 0.36, ("kd+rdd", 2): 0.35}
    cpu = {"line": "Test CPU, 2 logical CPUs, AVX2. note", "isa": "AVX2"}
    for (way, seed), v in finals.items():
        rec = {"plan": {"id": f"m-{way}-{seed}", "model": "deeplabv3_mbv2", "way": way, "seed": seed}, "best_miou": v + 0.01,
               "final_miou": v, "wall_s": 60.0, "cpu": cpu, "commit": "abc", "teacher_sha256": "t"}
        (tmp_path / f"m-{way}-{seed}.json").write_text(json.dumps(rec))
    recs = study.load_results(tmp_path)
    d = study.paired(recs, "deeplabv3_mbv2", "kd+rdd", "kd", "final_miou")
    diffs = [1.0, 4.0, 0.0]  # (0.34-0.33, 0.36-0.32, 0.35-0.35) in points
    sd = math.sqrt(sum((x - 5 / 3) ** 2 for x in diffs) / 2)
    assert d["diffs"] == pytest.approx(diffs) and d["mean"] == pytest.approx(5 / 3) and d["std"] == pytest.approx(sd)
    assert d["t"] == pytest.approx((5 / 3) / (sd / math.sqrt(3)))
    args = study.parse_args(["--results", str(tmp_path), "--report", "--plot", str(tmp_path / "p.png")])
    md = study.report(args)
    assert "| deeplabv3_mbv2 | kd+rdd | 0,1,2 |" in md and "| deeplabv3_mbv2 | kd+rdd - kd | final | +1.67 |" in md
    assert "35.00 ± 1.00" in md  # kd+rdd final: mean 35, std 1
    import cv2

    img = cv2.imread(str(tmp_path / "p.png"))
    assert img is not None and img.shape[0] > 100 and np.ptp(img) > 0
    with pytest.raises(study.ConfigError, match="no result files"):
        study.report(study.parse_args(["--results", str(tmp_path / "empty"), "--report"]))
