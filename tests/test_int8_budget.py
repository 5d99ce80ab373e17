"""INT8 that keeps its accuracy by itself: sensitivity report, --int8-budget, calibration method by measurement.

The acceptance case: a tiny DeepLabV3 student (tests/int8_tiny.py, 48x96, trained for seconds) made hostile to per-tensor INT8 the way
issue 18 describes (half the channels of two BN -> ReLU -> conv pairs of the head scaled up 64x and
128x, the next conv's inputs scaled down: FP32 outputs unchanged). Its val labels are the FP32
model's own predictions, so FP32 scores 100 mIoU and every point an INT8 file loses is INT8's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from rdd_edge.data import dataset_info
from rdd_edge.errors import ConfigError

SIZE = (48, 96)
INFO = dataset_info("camvid")
REPO = Path(__file__).resolve().parents[1]


def _tiny(*args: str) -> subprocess.CompletedProcess:
    """``int8_tiny.main(args)`` in a fresh process (the tiny model is registered there only), 80 columns."""
    code = f"import sys; sys.path[:0] = ['tests', '.']; import int8_tiny; int8_tiny.main({list(args)!r})"
    env = {**os.environ, "COLUMNS": "80", "LINES": "50"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=900, cwd=REPO)


def _cli(*args: str) -> subprocess.CompletedProcess:
    """The real command line, torch-free path (check with --no-torch needs no model registry)."""
    env = {**os.environ, "COLUMNS": "80", "LINES": "50"}
    return subprocess.run([sys.executable, "-m", "rdd_edge", *args], capture_output=True, text=True, env=env, timeout=900)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """(run folder, data folder, facts) of the tiny DeepLabV3 student made hostile (tests/int8_tiny.py)."""
    folder = tmp_path_factory.mktemp("hostile")
    r = _tiny("make", str(folder))
    assert r.returncode == 0, r.stderr[-2000:]
    facts = json.loads((folder / "facts.json").read_text())
    return Path(facts["run"]), Path(facts["data"]), facts


def _fits80(text: str) -> None:
    assert max(len(line) for line in text.splitlines()) <= 80, max(text.splitlines(), key=len)


def test_hostile_student_fails_plain_int8_and_the_budget_fixes_it(hostile, tmp_path):
    run, root, facts = hostile
    assert facts["relative_logit_change"] < 1e-5 and facts["labels_changed"] == 0.0  # FP32 function unchanged
    common = ["--int8", "--calib", "32", "--data", str(root), "--size", "48x96"]

    # plain INT8: both files lose far more than 1 point, and check --max-drop 1 fails
    r = _tiny("export", str(run), *common)
    assert r.returncode == 0, r.stderr[-2000:]
    man = json.loads((run / "export" / "manifest.json").read_text())
    plain = {k: man["artifacts"][k] for k in ("int8", "int8-cpu")}
    for k, a in plain.items():
        assert a["agreement"]["label_agreement"] < 0.97, (k, a["agreement"])
        assert 100 * (man["artifacts"]["onnx"]["miou"] - a["miou"]) > 1.0, k
    r = _cli("check", str(run), "--max-drop", "1.0", "--min-time", "0.01", "--batch", "1", "--no-torch")
    assert r.returncode == 1 and "gate failed" in r.stdout

    # --int8-budget 1: the report names the hostile layers first, they go float, check passes
    r = _tiny("export", str(run), *common, "--int8-budget", "1.0")
    assert r.returncode == 0, r.stderr[-2000:]
    out = run / "export"
    man = json.loads((out / "manifest.json").read_text())
    plan = man["int8_sensitivity"]
    convs = [n.name for n in onnx.load(str(out / "model.onnx")).graph.node if n.op_type == "Conv"]
    hostile_nodes = set(convs[-2:])  # the head's 3x3 conv and the classifier read the changed activations
    names = [l["name"] for l in plan["layers"]]
    assert names == convs  # network order
    for f in ("int8-cpu", "int8"):
        rows = plan["flavours"][f]["sensitivity"]
        by_noise = sorted(range(len(rows)), key=lambda i: -(rows[i]["estimate"] or 0))
        assert {names[i] for i in by_noise[:2]} == hostile_nodes, f  # the estimate names them first
        measured = [i for i, r in enumerate(rows) if r["loo"]]
        by_cost = sorted(measured, key=lambda i: -rows[i]["loo"]["agreement_gain"])
        assert {names[i] for i in by_cost[:2]} == hostile_nodes, f  # and so does leave-one-out
        rec = man["artifacts"][f]["int8_budget"]
        assert set(rec["float_layers"]) <= hostile_nodes and rec["float_layers"], (f, rec["float_layers"])
        assert rec["drop"] <= 1.0 < rec["drop_full"]
        assert rec["agreement"] > 100 * plain[f]["agreement"]["label_agreement"] + 2
        assert abs(100 * (man["artifacts"]["onnx"]["miou"] - man["artifacts"][f]["miou"]) - rec["drop"]) < 1e-6
        q = onnx.load(str(out / man["artifacts"][f]["file"]))
        from rdd_edge.export.int8_layers import float_convs

        assert float_convs(q) == sorted(rec["float_layers"], key=convs.index)  # exactly those Convs read float
    assert man["artifacts"]["int8-cpu"]["int8_budget"]["latency_ms"]["budgeted"] > 0
    assert plan["calibration"]["tried"] == ["percentile", "entropy", "minmax"]
    assert plan["calibration"]["chosen"] in plan["calibration"]["tried"]
    # the report: the table in the export's output fits 80 columns, the files open
    table = r.stdout[r.stdout.index("INT8 sensitivity"):]
    _fits80(table)
    assert "F" in table and "budget" in table
    assert json.loads((out / "int8-sensitivity.json").read_text())["flavours"].keys() == {"int8-cpu", "int8"}
    import cv2

    png = cv2.imread(str(out / "int8-sensitivity.png"))
    assert png is not None and png.shape[0] > 300 and png.shape[1] > 800
    assert {"int8-sensitivity.json", "int8-sensitivity.png"} <= set(man["files"])

    r = _cli("check", str(run), "--max-drop", "1.0", "--min-time", "0.01", "--batch", "1", "--no-torch")
    assert r.returncode == 0, r.stdout[-2000:]
    _fits80(r.stdout[r.stdout.index("deploy check"):r.stdout.index("wrote")])
    assert "float" in r.stdout and "layers in float for --int8-budget 1" in r.stdout
    rows = {x["name"]: x for x in json.loads((out / "check.json").read_text())["rows"]}
    assert rows["int8-cpu"]["int8_budget"]["float_layers"] and rows["int8"]["drop"] <= 1.0


def test_final_file_agreement_is_what_the_manifest_says(hostile, tmp_path):
    """The budgeted CPU file, run here by ONNX Runtime, agrees with FP32 as the manifest records."""
    import onnxruntime as ort

    from rdd_edge.data.base import read_image

    run, root, _ = hostile
    r = _tiny("export", str(run), "--out", str(tmp_path / "e"), "--int8", "--calib", "32", "--data", str(root),
              "--size", "48x96", "--int8-budget", "1.0", "--int8-loo", "2")
    assert r.returncode == 0, r.stderr[-2000:]
    man = json.loads((tmp_path / "e" / "manifest.json").read_text())
    files = sorted((root / "val" / "images").glob("*.png"))
    x = np.stack([read_image(f) for f in files]).astype(np.float32) / 255.0
    x = ((x - np.asarray(INFO.mean, np.float32)) / np.asarray(INFO.std, np.float32)).transpose(0, 3, 1, 2).copy()
    ref = ort.InferenceSession(str(tmp_path / "e" / "model.onnx")).run(["labels"], {"images": x})[0]
    got = ort.InferenceSession(str(tmp_path / "e" / "model.int8-cpu.onnx")).run(["labels"], {"images": x})[0]
    assert (got == ref).mean() == pytest.approx(man["artifacts"]["int8-cpu"]["agreement"]["label_agreement"], abs=1e-9)
    assert man["int8_sensitivity"]["loo_layers"] == 2


def test_unreachable_budget_fails_with_one_line_and_leaves_no_export(hostile, tmp_path):
    run, root, _ = hostile
    r = _tiny("export", str(run), "--out", str(tmp_path / "e"), "--int8", "--calib", "32", "--data", str(root),
              "--size", "48x96", "--int8-budget", "1.0", "--int8-max-float", "0", "--int8-loo", "1")
    assert r.returncode == 1
    msg = r.stderr.strip()
    assert len(msg.splitlines()) == 1 and msg.startswith("error: --int8-budget 1")
    assert "still loses" in msg and "0 of" in msg
    assert "--calib" in msg and "--calib-method" in msg and "larger --int8-budget" in msg
    assert not (tmp_path / "e").exists()


def test_max_drop_is_the_old_name_of_the_budget():
    from rdd_edge.export.formats import ExportSpec

    assert ExportSpec(int8=True, int8_max_drop=1.5).normalised().budget == 1.5
    assert ExportSpec(int8=True, int8_budget=0.5).normalised().budget == 0.5
    with pytest.raises(ConfigError, match="old and new name"):
        ExportSpec(int8=True, int8_budget=0.5, int8_max_drop=1.0).normalised()
    with pytest.raises(ConfigError, match="--int8-budget"):
        ExportSpec(int8=True, int8_budget=-1).normalised()
