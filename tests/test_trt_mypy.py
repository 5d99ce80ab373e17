"""mypy over the TensorRT and CUDA modules against NVIDIA's API as typed in tensorrt-stubs 10.13.

The stubs ship a few generated lines Python cannot parse (and shadow ``bool``); they are copied,
repaired (see ``test_trt_double.stub_source``) and their own errors ignored, so only our code is
judged. A deliberately wrong snippet proves the stubs are really in effect."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from trt_double import ROOT, stub_file_or_skip, stub_source

MODULES = ["export/tensorrt.py", "deploy/engine_build.py", "deploy/backends/tensorrt.py", "deploy/cuda_mem.py",
           "deploy/engine_meta.py"]


@pytest.fixture(scope="module")
def mypy_config(tmp_path_factory) -> tuple[Path, Path]:
    if importlib.util.find_spec("mypy") is None:
        msg = "mypy is not installed (pip install -e '.[dev]')"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    stub = stub_file_or_skip()
    root = tmp_path_factory.mktemp("trt-stubs")
    for pkg in ("tensorrt", "tensorrt_bindings"):
        shutil.copytree(stub.parent.parent / pkg, root / pkg)
    (root / "tensorrt_bindings" / "tensorrt.pyi").write_text(stub_source(stub))
    cfg = root / "mypy.ini"
    cfg.write_text(
        "[mypy]\npython_version = 3.10\nignore_missing_imports = True\nfollow_imports = silent\n"
        f"mypy_path = {root}\n\n[mypy-tensorrt,tensorrt.*,tensorrt_bindings,tensorrt_bindings.*]\nignore_errors = True\n"
    )
    return cfg, root


def _mypy(cfg: Path, files: list[str], cache: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(cfg), "--cache-dir", str(cache),
                           "--no-color-output", *files], cwd=ROOT, capture_output=True, text=True, timeout=240)


def _cache_dir(request, tmp_path_factory) -> Path:
    """pytest's cache folder (fast reruns), or a temporary one when the cache plugin is off."""
    cache = getattr(request.config, "cache", None)
    return Path(cache.mkdir("mypy-trt")) if cache is not None else tmp_path_factory.mktemp("mypy-cache")


def test_trt_and_cuda_modules_type_check_against_the_stubs(mypy_config, request, tmp_path_factory):
    cfg, _ = mypy_config
    res = _mypy(cfg, MODULES, _cache_dir(request, tmp_path_factory))
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_stubs_are_in_effect(mypy_config, request, tmp_path, tmp_path_factory):
    cfg, _ = mypy_config
    bad = tmp_path / "bad_trt_use.py"
    bad.write_text("import tensorrt as trt\n"
                   "b = trt.Builder(trt.Logger(trt.Logger.WARNING))\n"
                   "net = b.create_netwrk(0)\n"
                   "cfg = b.create_builder_config()\n"
                   "cfg.set_timing_cache(cfg.create_timing_cache(b''))\n")
    res = _mypy(cfg, [str(bad)], _cache_dir(request, tmp_path_factory))
    assert res.returncode == 1
    assert '"Builder" has no attribute "create_netwrk"' in res.stdout
    assert 'Missing positional argument "ignore_mismatch"' in res.stdout
