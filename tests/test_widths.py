"""What a person sees: the models, data check and check tables fit an 80-column terminal."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np


def _cli80(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "80", "LINES": "50"}
    return subprocess.run([sys.executable, "-m", "rdd_edge", *args], capture_output=True, text=True, env=env, timeout=600)


def _fits(text: str) -> None:
    lines = text.splitlines()
    assert lines and max(len(line) for line in lines) <= 80, max(lines, key=len)
    assert "…" not in text  # nothing cut short


def test_models_table_fits_80_columns():
    r = _cli80("models", "--size", "64x128")
    assert r.returncode == 0, r.stderr
    _fits(r.stdout)
    assert "deeplabv3_mbv2" in r.stdout and "3.23/128.9" in r.stdout


def test_a_network_with_a_long_backbone_name_still_fits_80_columns():
    """A new network's backbone name (timm's names run long) folds in its cell instead of cutting the figures."""
    code = ("import rdd_edge.models.registry as R\n"
            "real = R.model_cfg\n"
            "def cfg(name):\n"
            "    c = real(name)\n"
            "    c['backbone'] = 'mobilenetv3_large_100_and_then_some' if 'mbv2' in R.resolve_name(name) else c['backbone']\n"
            "    return c\n"
            "R.model_cfg = cfg\n"
            "from rdd_edge.cli import main\n"
            "main(['models', '--size', '64x128', '--filter', '*mbv2'])\n")
    env = {**os.environ, "COLUMNS": "80", "LINES": "50"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    _fits(r.stdout)
    assert "3.23/128.9" in r.stdout and "and_then_some" in r.stdout.replace("\n", "").replace(" ", "")


def test_data_check_fits_80_columns_with_three_splits(tmp_path):
    from rdd_edge.data.base import write_image, write_label

    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        for i in range(2):
            write_image(tmp_path / split / "images" / f"f{i}.png", rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
            write_label(tmp_path / split / "labels" / f"f{i}.png", rng.integers(0, 12, (24, 32), dtype=np.uint8))
    r = _cli80("data", "check", str(tmp_path))
    assert r.returncode == 0, r.stderr
    _fits(r.stdout)
    assert "Bicyclist" in r.stdout and "test" in r.stdout


def test_check_table_fits_80_columns(tmp_path):
    from deploy_utils import export_onnx, tiny_net, write_manifest

    d = tmp_path / "runs" / "distill-x" / "export"
    export_onnx(tiny_net(), d / "model.onnx")
    (d / "model.fp16.onnx").write_bytes((d / "model.onnx").read_bytes())
    man = json.loads(write_manifest(d, artifacts={"onnx": {"file": "model.onnx", "precision": "fp32"},
                                                   "fp16": {"file": "model.fp16.onnx", "precision": "fp16"}}).read_text())
    man["data"] = {"name": "synthetic", "val_images": 2, "size": [48, 64]}
    (d / "manifest.json").write_text(json.dumps(man))
    r = _cli80("check", str(d.parent), "--min-time", "0.01", "--batch", "2", "--no-torch")
    assert r.returncode == 0, r.stderr
    table = r.stdout[r.stdout.index("deploy check"):]
    _fits(table)
    assert "fp16" in table and "passed" in table
