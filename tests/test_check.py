"""rdd-edge check: report files, numbers against an independent computation, and the CI gate."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from typer.testing import CliRunner

from deploy_utils import CLASSES, export_onnx, rand_image, tiny_net, torch_labels, write_manifest

import rdd_edge.cli  # noqa: F401 - registers the commands
from rdd_edge.cli.app import app
from rdd_edge.metrics import ConfusionMatrix


def _perturb(src: Path, dst: Path, scale: float, seed: int = 0) -> None:
    """A deliberately worse copy: noise added to every weight tensor."""
    m = onnx.load(str(src))
    rng = np.random.default_rng(seed)
    for init in m.graph.initializer:
        w = numpy_helper.to_array(init)
        if w.dtype == np.float32 and w.size > 4:
            init.CopyFrom(numpy_helper.from_array((w + scale * rng.standard_normal(w.shape) * (np.abs(w).mean() + 1e-3)).astype(np.float32), init.name))
    onnx.save(m, str(dst))


def _camvid_folder(root: Path, net, n: int = 4) -> list[tuple[np.ndarray, np.ndarray]]:
    """A compact-layout folder whose labels are the FP32 model's own predictions with a few errors."""
    items = []
    for split in ("train", "val"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir(parents=True)
        for i in range(n):
            img = rand_image(48, 64, seed=100 + i)
            lbl = torch_labels(net, img).copy()
            lbl[:6, :6] = (lbl[:6, :6] + 1) % len(CLASSES)  # not a perfect score
            cv2.imwrite(str(root / split / "images" / f"f{i}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            cv2.imwrite(str(root / split / "labels" / f"f{i}.png"), lbl)
            if split == "val":
                items.append((img, lbl))
    return items


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("check")
    run = base / "runs" / "distill-tiny"
    d = run / "export"
    net = tiny_net(seed=1)
    export_onnx(net, d / "model.onnx")
    (d / "model.fp16.onnx").write_bytes((d / "model.onnx").read_bytes())  # same model: drop 0
    _perturb(d / "model.onnx", d / "model.int8-cpu.onnx", scale=3.0)  # clearly worse
    arts = {
        "onnx": {"file": "model.onnx", "precision": "fp32"},
        "fp16": {"file": "model.fp16.onnx", "precision": "fp16"},
        "int8-cpu": {"file": "model.int8-cpu.onnx", "precision": "int8"},
        "int8": {"file": "model.int8.onnx", "precision": "int8"},  # listed but missing: a failed row
    }
    write_manifest(d, artifacts=arts, dataset="camvid")
    items = _camvid_folder(base / "camvid", net)
    return run, base / "camvid", items


def _invoke(args):
    return CliRunner().invoke(app, args, catch_exceptions=False)


def test_check_writes_report_and_gate_fails(run_dir):
    run, data_root, items = run_dir
    res = _invoke(["check", str(run), "--data", str(data_root), "--batch", "2", "--min-time", "0.02", "--threads", "1"])
    assert res.exit_code == 1, res.output  # the perturbed artifact fails the gate
    assert "gate failed" in res.output and "int8-cpu" in res.output
    d = run / "export"
    rep = json.loads((d / "check.json").read_text())
    rows = {r["name"]: r for r in rep["rows"]}
    assert set(rows) == {"onnx", "fp16", "int8-cpu", "int8"}
    assert rep["gate_failed"] is True and rep["images"] == 4
    state = rep["device_state"]  # issue 27: the device's state before the timed runs, whatever this machine is
    assert state["kind"] in ("cpu", "nvidia-gpu", "jetson") and state["power_source"]
    # mIoU of the FP32 row against an independent computation
    cm = ConfusionMatrix(len(CLASSES))
    for img, lbl in items:
        cm.update(lbl, torch_labels(tiny_net(seed=1), img))
    assert rows["onnx"]["miou"] == pytest.approx(100 * cm.compute().miou, abs=0.5)
    assert rows["onnx"]["status"] == "passed" and rows["onnx"]["agreement"] == pytest.approx(100.0)
    assert rows["fp16"]["status"] == "passed" and rows["fp16"]["drop"] == pytest.approx(0.0)
    assert rows["int8-cpu"]["status"] == "failed gate" and rows["int8-cpu"]["drop"] > 1.0
    assert rows["int8-cpu"]["agreement"] < 99.0
    assert rows["int8"]["status"] == "failed" and "not found" in rows["int8"]["reason"]
    lat = rows["onnx"]["latency"]
    assert set(lat) == {"b1", "b2"} and lat["b2"]["batch"] == 2
    assert 0 < lat["b1"]["p50_ms"] <= lat["b1"]["p99_ms"] and lat["b1"]["fps"] > 0
    assert rows["onnx"]["size_mb"] == pytest.approx((d / "model.onnx").stat().st_size / 1e6)
    md = (d / "check.md").read_text()
    assert "| int8-cpu |" in md and "failed gate" in md and "FAILED" in md
    assert "Device state before the timed runs:" in md and "- power during the timed runs: " in md
    png = (d / "check.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and cv2.imread(str(d / "check.png")) is not None


def _copy_without(run: Path, dst: Path, drop: str) -> Path:
    """A copy of the export folder whose manifest no longer lists ``drop``."""
    import shutil

    shutil.copytree(run / "export", dst / "export")
    man = json.loads((dst / "export" / "manifest.json").read_text())
    del man["artifacts"][drop]
    (dst / "export" / "manifest.json").write_text(json.dumps(man))
    return dst


def test_check_passes_with_loose_gate(run_dir, tmp_path):
    run, data_root, _ = run_dir
    run = _copy_without(run, tmp_path / "run", "int8")  # every listed file present
    res = _invoke(["check", str(run / "export"), "--data", str(data_root), "--images", "2", "--batch", "1",
                   "--min-time", "0.02", "--max-drop", "100"])
    assert res.exit_code == 0, res.output
    rep = json.loads((run / "export" / "check.json").read_text())
    assert rep["images"] == 2 and not rep["gate_failed"]


def test_check_without_export_is_one_clear_error(tmp_path):
    from rdd_edge.errors import ConfigError

    with pytest.raises(ConfigError, match="no export/manifest.json"):
        _invoke(["check", str(tmp_path)])


@pytest.mark.slow
def test_end_to_end_on_a_real_export(tmp_path):
    """models.create_model -> save_checkpoint -> export.export_run -> deploy.load / rdd-edge check."""
    torch = pytest.importorskip("torch")
    from rdd_edge.export.pipeline import export_run
    from rdd_edge.models import create_model, save_checkpoint
    from rdd_edge.data import dataset_info

    root = tmp_path / "camvid"
    rng = np.random.default_rng(0)
    pal = np.asarray(dataset_info("camvid").palette, np.int16)
    for split, n in (("train", 1), ("val", 3)):
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir(parents=True)
        for i in range(n):
            lbl = np.kron(rng.integers(0, 11, (5, 8)), np.ones((12, 12), int)).astype(np.uint8)
            img = np.clip(pal[lbl] + rng.integers(-20, 20, (*lbl.shape, 3)), 0, 255).astype(np.uint8)
            cv2.imwrite(str(root / split / "images" / f"f{i}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            cv2.imwrite(str(root / split / "labels" / f"f{i}.png"), lbl)
    run = tmp_path / "runs" / "distill-mbv2"
    run.mkdir(parents=True)
    torch.manual_seed(0)
    model = create_model("mbv2", num_classes=11, head_channels=32).eval()
    save_checkpoint(run / "best.pt", model, dataset=dataset_info("camvid"), config={"dataset": "camvid"})
    export_run(source=run, size=(48, 96), outputs="labels", fp16=True, data=root, check_images=2)  # INT8: see test_export

    from rdd_edge import deploy

    seg = deploy.load(run / "export" / "model.onnx")
    assert seg.info.num_classes == 11 and seg.info.input_size == (48, 96) and seg.info.output == "labels"
    img = cv2.cvtColor(cv2.imread(str(root / "val" / "images" / "f0.png")), cv2.COLOR_BGR2RGB)
    assert seg.predict(img).shape == img.shape[:2]

    res = _invoke(["check", str(run), "--data", str(root), "--batch", "2", "--min-time", "0.02", "--max-drop", "100"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads((run / "export" / "check.json").read_text())["rows"]}
    assert set(rows) == {"torch", "onnx", "fp16"}
    assert all(r["status"] == "passed" for r in rows.values()), rows
    assert rows["torch"]["miou"] == pytest.approx(rows["onnx"]["miou"], abs=1.0)
    assert rows["fp16"]["agreement"] > 95.0


@pytest.mark.parametrize("damage", ["missing", "truncated", "replaced"])
def test_gate_fails_closed_on_a_broken_artifact(run_dir, tmp_path, damage):
    """`check --max-drop 100` still exits 1, naming the file, when a listed artifact is missing, truncated or swapped."""
    import hashlib

    run, data_root, _ = run_dir
    run = _copy_without(run, tmp_path / "run", "int8")
    d = run / "export"
    man = json.loads((d / "manifest.json").read_text())
    for entry in man["artifacts"].values():  # record what export would have recorded
        entry["sha256"] = hashlib.sha256((d / entry["file"]).read_bytes()).hexdigest()
    (d / "manifest.json").write_text(json.dumps(man))
    target = d / "model.fp16.onnx"
    if damage == "missing":
        target.unlink()
    elif damage == "truncated":
        target.write_bytes(target.read_bytes()[:200])
    else:  # another working model under the same name
        export_onnx(tiny_net(seed=7), target)
    res = _invoke(["check", str(run), "--data", str(data_root), "--images", "2", "--batch", "1",
                   "--min-time", "0.02", "--max-drop", "100", "--no-torch"])
    assert res.exit_code == 1, res.output
    rep = json.loads((d / "check.json").read_text())
    rows = {r["name"]: r for r in rep["rows"]}
    assert rows["fp16"]["status"] == "failed" and rows["onnx"]["status"] == "passed"
    want = "not found" if damage == "missing" else "sha256 differs"
    assert want in rows["fp16"]["reason"] and "model.fp16.onnx" in rows["fp16"]["reason"]
    assert rep["gate_failed"] is True and any("fp16" in f for f in rep["failures"])
    assert "gate failed" in res.output
