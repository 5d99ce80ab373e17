"""The fourth bad-input round (issue 32): each numbered finding reproduced as the attack or fault itself.

The model's own output count is the truth for the class list; a bundle is verified end to end;
demo runs only what a check bound to the artifact's bytes passed; outputs never land inside an
export; writes that fail are one line; options that size memory or threads are bounded first.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rdd_edge.cli import app
from rdd_edge.errors import DeployError
from rdd_edge.runs import sha256_file

CHECK = ["--min-time", "0.01", "--no-torch", "--device", "cpu"]


@pytest.fixture
def export(synthetic_export_src, tmp_path) -> Path:
    """A fresh copy of the session's synthetic export (conftest.py): every test here edits or attacks it."""
    return Path(shutil.copytree(synthetic_export_src, tmp_path / "run" / "export"))


def _edit(export: Path, change) -> None:
    path = export / "manifest.json"
    m = json.loads(path.read_text())
    change(m)
    path.write_text(json.dumps(m))


def _check(export: Path, *extra: str):
    return CliRunner().invoke(app, ["check", str(export), *CHECK, *extra])


def _labels_only(export: Path, strip_shapes: bool = False) -> None:
    """Turn every ONNX file of ``export`` into the default labels-only graph (no ``logits`` output), as
    `rdd-edge export` writes it; ``strip_shapes`` also drops the recorded intermediate shapes."""
    import onnx

    m = json.loads((export / "manifest.json").read_text())
    for key, art in m["artifacts"].items():
        f = export / art["file"]
        model = onnx.load(str(f))
        keep = [o for o in model.graph.output if o.name == "labels"]
        del model.graph.output[:]
        model.graph.output.extend(keep)
        if strip_shapes:
            del model.graph.value_info[:]
        onnx.save(model, str(f))
        art["sha256"] = sha256_file(f)
    m["output"], m["outputs"] = "labels", [{"name": "labels"}]
    (export / "manifest.json").write_text(json.dumps(m))


# ---------------------------------------------------------------- 1. an edited class list cannot fool the gate
@pytest.mark.parametrize("strip", [False, True])
def test_the_class_count_of_a_labels_only_graph_is_read_from_the_graph(export, strip):
    from rdd_edge.deploy.class_count import file_class_count

    _labels_only(export, strip_shapes=strip)
    for f in ("model.onnx", "model.fp16.onnx", "model.int8.onnx", "model.int8-cpu.onnx"):
        assert file_class_count(export / f) == 11, f  # the synthetic network's 11 classes, also through Q/DQ


@pytest.mark.parametrize("names", [["road"], ["a", "b", "c"]])
def test_an_edited_class_list_fails_the_gate_of_a_labels_only_export(export, names):
    from rdd_edge import deploy

    _labels_only(export)
    _edit(export, lambda m: m.update(classes=names, num_classes=len(names), palette=[[1, 2, 3]] * len(names)))
    res = _check(export)
    assert res.exit_code == 1, res.output
    assert f"the model outputs 11 classes but" in res.output + str(res.exception)
    rows = json.loads((export / "check.json").read_text())["rows"]
    assert all(r["status"] == "failed" and r["miou"] is None for r in rows)  # no made-up mIoU 100.00
    with pytest.raises(DeployError, match=f"outputs 11 classes but .* lists {len(names)}"):
        deploy.load(export / "model.onnx", device="cpu")


def test_a_prediction_beyond_the_class_list_fails_its_row_instead_of_being_clamped():
    """An engine declares no class count: the labels it predicts are the last word (never clamped into a class)."""
    import numpy as np

    from rdd_edge.deploy.check import Candidate, evaluate_rows

    class Seg:
        def predict_batch(self, images):
            return [np.full((4, 4), 7, np.uint8) for _ in images]

    imgs, labs = [np.zeros((4, 4, 3), np.uint8)], [np.zeros((4, 4), np.uint8)]
    (row,) = evaluate_rows([Candidate(name="onnx", load=Seg, needs_sha=False)], imgs, labs, num_classes=1,
                           latency_kw={"min_time": 0.001})
    assert row.status == "failed" and "predicts class 7 but the manifest lists 1 classes" in row.reason


# ---------------------------------------------------------------- 2. a checkpoint's dataset record cannot either
@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    """A small 11-class rdd-edge checkpoint in a run folder (read-only here: tests copy or re-save it)."""
    from rdd_edge.data.registry import dataset_info
    from rdd_edge.models import create_model
    from rdd_edge.models.checkpoint import save_checkpoint

    run = tmp_path_factory.mktemp("ckpt") / "runs" / "distill-tiny"
    run.mkdir(parents=True)
    model = create_model("mbv2", num_classes=11, head_channels=16)
    return save_checkpoint(run / "best.pt", model, dataset=dataset_info("synthetic"))


def _resaved(ckpt: Path, dst: Path, change) -> Path:
    import torch

    c = torch.load(ckpt, weights_only=True)
    change(c)
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(c, dst)
    return dst


def test_an_edited_dataset_record_in_a_checkpoint_is_refused_before_export(tiny_ckpt, tmp_path):
    from rdd_edge.errors import CheckpointError
    from rdd_edge.models.checkpoint import load_checkpoint

    def one_class(c):
        c["dataset"]["classes"], c["dataset"]["palette"] = ["road"], [[1, 2, 3]]

    bad = _resaved(tiny_ckpt, tmp_path / "runs" / "distill-x" / "best.pt", one_class)
    with pytest.raises(CheckpointError, match="dataset record lists 1 classes but the model outputs 11"):
        load_checkpoint(bad)
    res = CliRunner().invoke(app, ["export", str(bad), "--runs", str(tmp_path / "runs")])
    assert res.exit_code == 1 and "lists 1 classes but the model outputs 11" in str(res.exception)
    assert not (bad.parent / "export").exists()
    assert load_checkpoint(tiny_ckpt)["dataset"]["name"] == "synthetic"  # the record as saved stays accepted


# ---------------------------------------------------------------- 3. bundle verifies the export it copies
@pytest.mark.parametrize("attack, says", [
    ("replaced", "model.onnx: sha256 differs from the manifest's"),
    ("no-sha", "artifact onnx (model.onnx) has no sha256"),
    ("passwd", "is not a plain file name inside the folder"),
])
def test_bundle_refuses_an_export_that_is_not_as_exported(export, tmp_path, attack, says):
    if attack == "replaced":
        (export / "model.onnx").write_bytes((export / "model.onnx").read_bytes() + b"\0")
    elif attack == "no-sha":
        _edit(export, lambda m: m["artifacts"]["onnx"].pop("sha256"))
    else:
        _edit(export, lambda m: m["artifacts"]["onnx"].update(file="/etc/passwd"))
    res = CliRunner().invoke(app, ["bundle", str(export), "--out", str(tmp_path / "B")])
    assert res.exit_code == 1 and says in str(res.exception), res.output + repr(res.exception)
    assert not (tmp_path / "B").exists() and not list(tmp_path.glob(".B.*"))
