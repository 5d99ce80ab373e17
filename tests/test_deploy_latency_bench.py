"""benchmarks/deploy_latency.py: mIoU per artifact against a direct count, drop and speed ratio, verdict, bad cells.

The "models" are hand-built ONNX graphs (a 1x1 Conv whose bias picks one class everywhere, then
ArgMax), so every prediction is known in advance and the expected mIoU is a count over the labels.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
H, W, C, N_IMAGES = 48, 64, 11, 3


def _data_spec():
    from rdd_edge.data import DataSpec

    return DataSpec(name="synthetic", val_images=N_IMAGES, size=(H, W), seed=1)


DATA = _data_spec()


def _bench():
    spec = importlib.util.spec_from_file_location("deploy_latency_bench", ROOT / "benchmarks" / "deploy_latency.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def _constant_class_model(path: Path, cls: int) -> None:
    """images (N,3,H,W) -> labels (N,H,W) int64, always ``cls`` (zero weights, bias one-hot)."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [C, 3, 1, 1], np.zeros(C * 3, np.float32))
    b = helper.make_tensor("b", TensorProto.FLOAT, [C], np.eye(C, dtype=np.float32)[cls])
    graph = helper.make_graph(
        [helper.make_node("Conv", ["images", "w", "b"], ["logits"]),
         helper.make_node("ArgMax", ["logits"], ["labels"], axis=1, keepdims=0)],
        "const", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, H, W])],
        [helper.make_tensor_value_info("labels", TensorProto.INT64, ["batch", H, W])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))


def _export_folder(tmp_path: Path, classes: dict[str, int | None]) -> Path:
    """An export folder with a manifest (synthetic data set) and one graph per flavour file; None: corrupt file."""
    from rdd_edge.data import dataset_info

    info = dataset_info("synthetic")
    d = tmp_path / "student" / "export"
    d.mkdir(parents=True)
    for fname, cls in classes.items():
        if cls is None:
            (d / fname).write_bytes(b"not an onnx file")
        else:
            _constant_class_model(d / fname, cls)
    (d / "manifest.json").write_text(json.dumps({
        "format": "rdd-edge-export", "version": 1, "model_name": "const", "num_classes": C,
        "classes": list(info.classes), "palette": [list(p) for p in info.palette], "dataset": "synthetic",
        "ignore_index": 255, "normalization": {"name": "imagenet", "order": "rgb", "scale": 1 / 255,
                                                "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        "input": {"name": "images", "shape": ["batch", 3, H, W], "size": [H, W], "dtype": "float32",
                  "layout": "NCHW", "embedded_preprocess": False},
        "outputs": [{"name": "labels", "shape": ["batch", H, W], "dtype": "int64"}], "output": "labels",
        "data": DATA.as_dict()}))
    return d


def _expected_miou(cls: int) -> float:
    """A constant prediction ``cls``: IoU(cls) = share of valid pixels labelled cls; other present classes 0."""
    from rdd_edge.data import open_split

    ds = open_split(DATA, "val")  # the images the manifest records: what the check loads
    lbl = np.concatenate([ds[i][1].ravel() for i in range(len(ds))])
    lbl = lbl[lbl != 255]
    present = set(np.unique(lbl).tolist()) | {cls}
    return 100.0 * float((lbl == cls).mean()) / len(present)


def test_miou_drop_ratio_and_verdict(tmp_path):
    _export_folder(tmp_path, {"model.onnx": 0, "model.int8.onnx": 3, "model.int8-cpu.onnx": 0})
    out = tmp_path / "r.json"
    md = tmp_path / "r.md"
    rc = _bench().main([str(tmp_path / "student"), "--threads", "1", "--min-time", "0.02", "--rounds", "2",
                        "--images", str(N_IMAGES), "--json", str(out), "--markdown", str(md)])
    assert rc == 0
    row = json.loads(out.read_text())["results"][0]
    assert row["model"] == "student" and row["size"] == f"{H}x{W}"
    fp32, int8, cpu = row["fp32"], row["int8"], row["int8-cpu"]
    assert fp32["miou"] == pytest.approx(_expected_miou(0), abs=1e-6)
    assert int8["miou"] == pytest.approx(_expected_miou(3), abs=1e-6)
    assert int8["drop"] == pytest.approx(_expected_miou(0) - _expected_miou(3), abs=1e-6)
    assert cpu["drop"] == pytest.approx(0.0, abs=1e-9) and fp32["rounds"] == 2
    for lat in (fp32, int8, cpu):
        assert 0 < lat["p50_ms"] <= lat["p90_ms"] and lat["mean_ms"] > 0
    # the same graph as FP32 cannot be 2.5x faster: the verdict says NOT MET and by how much
    ratio = fp32["mean_ms"] / cpu["mean_ms"]
    assert ratio < 2.5 and "NOT MET" in row["verdict"] and f"missed by {2.5 - ratio:.2f}x" in row["verdict"]
    text = md.read_text()
    assert "| student | 48x64 | int8 |" in text and f"{int8['drop']:.2f}" in text and "NOT MET" in text


def test_verdict_met_when_fast_and_accurate():
    v = _bench().verdict({"fp32": {"mean_ms": 30.0}, "int8-cpu": {"mean_ms": 10.0, "drop": 0.4}}, 2.5, 1.0)
    assert v.startswith("int8-cpu: MET") and "3.00x" in v
    v = _bench().verdict({"fp32": {"mean_ms": 30.0}, "int8-cpu": {"mean_ms": 10.0, "drop": 1.7}}, 2.5, 1.0)
    assert "NOT MET" in v and "missed by 0.70" in v


def test_broken_artifact_is_one_cell_not_a_crash(tmp_path, capsys):
    _export_folder(tmp_path, {"model.onnx": 0, "model.fp16.onnx": None})
    out = tmp_path / "r.json"
    assert _bench().main([str(tmp_path / "student" / "export"), "--threads", "1", "--min-time", "0.02",
                          "--images", "2", "--json", str(out)]) == 0
    row = json.loads(out.read_text())["results"][0]
    assert "error" in row["fp16"] and "miou" in row["fp32"]
    assert "fp16: " in capsys.readouterr().out
