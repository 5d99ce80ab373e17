"""Run folders and atomic writes: nothing half-written survives a failure."""

import os
import time

import pytest

from rdd_edge.errors import ConfigError
from rdd_edge.runs import atomic_path, latest_run, new_run_dir, read_json, resolve_run, write_json


def test_new_run_dir_never_reuses_a_name(tmp_path):
    a = new_run_dir("distill", "mbv2", root=tmp_path)
    b = new_run_dir("distill", "mbv2", root=tmp_path)
    assert a.name == "distill-mbv2" and b.name == "distill-mbv2-2"


def test_latest_run_and_resolve(tmp_path):
    assert latest_run("distill", tmp_path) is None
    with pytest.raises(ConfigError, match="no distill run"):
        resolve_run(None, "distill", "checkpoint", root=tmp_path)
    a = new_run_dir("distill", "a", root=tmp_path)
    b = new_run_dir("distill", "b", root=tmp_path)
    (a / "best.pt").write_text("x")
    os.utime(b, (time.time() + 5, time.time() + 5))
    assert latest_run("distill", tmp_path) == b
    assert latest_run("distill", tmp_path, must_contain="best.pt") == a
    with pytest.raises(ConfigError, match="no such file"):
        resolve_run(tmp_path / "nope", "distill", "checkpoint")


def test_atomic_path_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_write_json_roundtrip_and_bad_json(tmp_path):
    import numpy as np

    p = write_json(tmp_path / "a.json", {"x": np.float32(1.5), "p": tmp_path, "arr": np.arange(3)})
    assert read_json(p) == {"x": 1.5, "p": str(tmp_path), "arr": [0, 1, 2]}
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json"):
        read_json(tmp_path / "bad.json")
