"""check.png: the gate drawn, honest axes, labels that never overlap, failed points marked, a telling title.

Positions are read back from the PNG itself: ``plot`` writes its layout (pixel boxes of labels,
points, the gate line) into a PNG text chunk, and the tests look at the pixels there.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from rdd_edge.deploy.check_report import place_labels, plot, to_markdown, write_report
from rdd_edge.deploy.check_rows import FAILED_GATE, PASSED, Row
from rdd_edge import cpuinfo

CPU = {"model": "Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz", "cores": 12, "isa": "AVX2", "note": cpuinfo.NOTES["AVX2"],
       "line": "Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz, 12 logical CPUs (6 cores), AVX2. " + cpuinfo.NOTES["AVX2"]}
META = {"model_name": "deeplabv3_mbv2", "images": 16, "dataset": "synthetic", "split": "val", "input_size": [96, 128],
        "max_drop": 1.0, "device": "cpu", "threads": 2, "cpu": CPU}


def _row(name, ms, miou, status=PASSED, drop=None, backend="CPUExecutionProvider"):
    return Row(name=name, file=None, precision="fp32", backend=backend, status=status, miou=miou, drop=drop,
               latency={"b1": {"p50_ms": ms, "p90_ms": ms, "p99_ms": ms, "fps": 1000 / ms}})


def _read(path: Path) -> tuple[dict, dict, np.ndarray]:
    with Image.open(path) as im:
        text = dict(im.text)
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    return json.loads(text["rdd-edge-layout"]), text, rgb


def _overlap(a, b) -> bool:
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def test_crowded_labels_do_not_overlap(tmp_path):
    names = ["onnx", "fp16", "int8", "int8-cpu", "engine-fp16", "engine-int8"]
    rows = [_row(n, 10.0 + 0.01 * i, 50.0 - 0.01 * i, drop=0.01 * i) for i, n in enumerate(names)]
    rows += [_row("torch", 10.02, 50.01, backend="torch 2.14.1 CPU"), _row("far", 30.0, 45.0, FAILED_GATE, 5.0)]
    layout, _, rgb = _read(plot(rows, tmp_path / "c.png", META))
    boxes = [lab["box"] for lab in layout["labels"]]
    assert [lab["name"] for lab in layout["labels"]] == [r.name for r in rows]
    h, w = rgb.shape[:2]
    assert layout["size"] == [w, h]
    for i, a in enumerate(boxes):
        assert 0 <= a[0] < a[2] <= w and 0 <= a[1] < a[3] <= h
        for b in boxes[i + 1:]:
            assert not _overlap(a, b), (a, b)
        x0, y0, x1, y1 = (int(round(v)) for v in a)
        assert (rgb[y0:y1, x0:x1].min(axis=2) < 120).sum() > 15, "no text drawn in the label's box"
    # no label covers the centre of any point
    for p in layout["points"]:
        px, py = p["xy"]
        assert not any(b[0] <= px <= b[2] and b[1] <= py <= b[3] for b in boxes), p


def test_place_labels_separates_identical_anchors():
    boxes = place_labels([(200.0, 200.0)] * 10, [(60.0, 16.0)] * 10, (0, 0, 600, 400))
    assert len(boxes) == 10
    for i, a in enumerate(boxes):
        assert 0 <= a[0] and a[2] <= 600 and 0 <= a[1] and a[3] <= 400
        assert a[2] - a[0] == pytest.approx(60) and a[3] - a[1] == pytest.approx(16)
        assert not any(_overlap(a, b) for b in boxes[i + 1:])
    # an obstacle (e.g. another point) is kept clear
    (box,) = place_labels([(100.0, 100.0)], [(40.0, 10.0)], (0, 0, 300, 300), obstacles=[(100, 100, 200, 200)])
    assert not _overlap(box, (100, 100, 200, 200))


def test_gate_line_band_and_failed_points(tmp_path):
    rows = [_row("onnx", 20.0, 40.0, drop=0.0), _row("fp16", 35.0, 39.9, drop=0.1),
            _row("int8-cpu", 8.0, 37.0, FAILED_GATE, 3.0)]
    layout, text, rgb = _read(plot(rows, tmp_path / "c.png", META))
    gate = layout["gate"]
    assert gate["miou"] == pytest.approx(39.0) and "39.00" in gate["text"]
    assert "gate at 39.00 mIoU" in text["Description"] and "failed gate: int8-cpu" in text["Description"]
    # the dashed gate line: red pixels along that row over a good part of the width
    y = int(round(gate["y_px"]))
    band = rgb[y - 1 : y + 2].astype(int)
    red = (band[..., 0] > 180) & (band[..., 1] < 110) & (band[..., 2] < 110)
    assert red.any(axis=0).sum() > 0.3 * rgb.shape[1]
    # the failing band below the line is tinted red, the area above is not
    ax_cols = slice(int(rgb.shape[1] * 0.15), int(rgb.shape[1] * 0.9))
    below = rgb[y + 8 : y + 20, ax_cols].astype(int)
    above = rgb[y - 20 : y - 8, ax_cols].astype(int)
    assert np.median(below[..., 0] - below[..., 2]) > 6 and abs(np.median(above[..., 0] - above[..., 2])) <= 2
    pts = {p["name"]: p for p in layout["points"]}
    assert pts["int8-cpu"]["kind"] == FAILED_GATE and pts["fp16"]["kind"] == PASSED and pts["onnx"]["kind"] == "reference"

    def centre(name):
        x, yy = (int(round(v)) for v in pts[name]["xy"])
        return rgb[yy - 1 : yy + 2, x - 1 : x + 2].reshape(-1, 3).mean(axis=0)

    r, g, b = centre("int8-cpu")
    assert r > 170 and g < 90 and b < 90  # red cross
    r, g, b = centre("fp16")
    assert b > 140 and r < 90  # blue dot
    assert centre("onnx").max() < 90  # dark diamond
    label = next(lab for lab in layout["labels"] if lab["name"] == "int8-cpu")
    assert "3.00" in label["text"]


def test_axes_start_at_zero_unless_marked_zoomed(tmp_path):
    wide = [_row("onnx", 20.0, 60.0, drop=0.0), _row("int8-cpu", 7.0, 12.0, FAILED_GATE, 48.0)]
    layout, text, _ = _read(plot(wide, tmp_path / "w.png", META))
    assert layout["xlim"][0] == 0 and layout["xlim"][1] > 20 and layout["ylim"][0] == 0 and not layout["y_zoomed"]
    assert "zoomed" not in text["Description"] and "ZOOMED" not in layout["ylabel"]
    narrow = [_row("onnx", 20.0, 60.0, drop=0.0), _row("fp16", 7.0, 59.8, drop=0.2)]
    layout, text, _ = _read(plot(narrow, tmp_path / "n.png", META))
    assert layout["xlim"][0] == 0 and layout["y_zoomed"] and layout["ylim"][0] > 50
    lo, hi = layout["ylim"]
    assert f"ZOOMED to {lo:.1f}-{hi:.1f}" in layout["ylabel"] and "mIoU axis zoomed" in text["Description"]
    assert lo < 59.0 < 60.0 < hi  # the gate (60 - 1) and every point are on the chart


def test_title_names_device_backends_images_and_size(tmp_path):
    rows = [_row("torch", 30.0, 40.0, backend="torch 2.14.1 CPU"), _row("onnx", 20.0, 40.0, drop=0.0)]
    _, text, _ = _read(plot(rows, tmp_path / "t.png", META))
    title = text["Title"]
    for part in ("deeplabv3_mbv2", "CPU Intel(R) Core(TM) i7-8700", "AVX2", "2 threads", "torch 2.14.1 CPU",
                 "CPUExecutionProvider", "16 synthetic val images", "input 96x128"):
        assert part in title, (part, title)


def test_plot_without_meta_and_without_points(tmp_path):
    rows = [_row("onnx", 20.0, 60.0), _row("fp16", 25.0, 59.0)]
    layout, text, _ = _read(plot(rows, tmp_path / "p.png"))
    assert layout["gate"] is None and "no gate drawn" in text["Description"]
    failed = Row(name="int8", file="model.int8.onnx", precision="int8", status="failed", reason="not found")
    layout, text, rgb = _read(plot([failed], tmp_path / "e.png", META))
    assert layout["points"] == [] and "no artifact ran" in text["Title"] and rgb.shape[0] > 100


def test_report_names_the_cpu(tmp_path):
    rows = [_row("onnx", 20.0, 40.0, drop=0.0), _row("int8-cpu", 8.0, 39.5, drop=0.5)]
    meta = {k: v for k, v in META.items() if k != "cpu"}
    paths = write_report(tmp_path, rows, meta)
    rep = json.loads(paths["json"].read_text())
    here = cpuinfo.detect()
    assert rep["cpu"]["isa"] == here.isa and rep["cpu"]["line"] == here.line()
    md = paths["md"].read_text()
    assert f"CPU: {here.line()} Runs used 2 intra-op threads." in md
    with Image.open(paths["png"]) as im:
        assert here.isa in im.text["Title"] and "input 96x128" in im.text["Title"]
    # GPU latencies: no CPU line unless the caller adds one
    paths = write_report(tmp_path, rows, {**meta, "device": "cuda"})
    assert "cpu" not in json.loads(paths["json"].read_text()) and "CPU:" not in paths["md"].read_text()
    assert f"CPU: {CPU['line']}" in to_markdown(rows, {**META, "gate_failed": False})


def test_gate_below_zero_is_said_not_drawn(tmp_path):
    rows = [_row("onnx", 20.0, 2.0, drop=0.0), _row("fp16", 25.0, 1.9, drop=0.1)]
    layout, text, _ = _read(plot(rows, tmp_path / "g.png", {**META, "max_drop": 100.0}))
    assert 0 <= layout["ylim"][0] < 1.9 and layout["ylim"][1] < 5  # the -98 gate does not stretch the axis
    assert layout["gate"]["y_px"] is None and "below the chart" in layout["gate"]["text"]
