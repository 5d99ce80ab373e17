"""TensorRT engine build: pure helpers always; the real build (``pytest -m trt``) only where
tensorrt, a CUDA binding and an NVIDIA GPU exist (it skips elsewhere)."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from rdd_edge.errors import ConfigError, DeployError, ExportError, MissingDependencyError

from rdd_edge.deploy.engine_meta import check_compatible, runtime_identity, tensorrt_module
from rdd_edge.deploy.engine_plan import (check_build_args, check_dla_core, engine_precision, engine_source,
                                         network_flags, profile_shapes, sidecar_meta, timing_cache_name)
from rdd_edge.formats import BY_KEY

HAVE_TRT = tensorrt_module() is not None


def test_profile_shapes_batch_range_and_dynamic_hw():
    p = profile_shapes(["batch", 3, 48, 96])  # defaults: min 1, opt 1, max 8
    assert p == {"min": (1, 3, 48, 96), "opt": (1, 3, 48, 96), "max": (8, 3, 48, 96)}
    p = profile_shapes(["batch", 3, 48, 96], max_batch=4, opt_batch=2)
    assert p["opt"] == (2, 3, 48, 96) and p["max"] == (4, 3, 48, 96)
    p = profile_shapes([1, 3, 48, 96], max_batch=8)  # a static batch wins over max_batch
    assert p["min"] == p["opt"] == p["max"] == (1, 3, 48, 96)
    d = profile_shapes(["batch", 3, "height", "width"], 2, dynamic_hw=((48, 64), (96, 128), (192, 256)))
    assert d == {"min": (1, 3, 48, 64), "opt": (1, 3, 96, 128), "max": (2, 3, 192, 256)}
    with pytest.raises(ConfigError, match="dynamic H/W"):
        profile_shapes(["batch", 3, "height", "width"])
    with pytest.raises(ConfigError, match="multiples of 8"):
        profile_shapes(["batch", 3, "height", "width"], dynamic_hw=((50, 64), (96, 128), (192, 256)))
    with pytest.raises(ConfigError, match="min <= opt <= max"):
        profile_shapes(["batch", 3, "height", "width"], dynamic_hw=((96, 64), (48, 128), (192, 256)))
    with pytest.raises(ConfigError, match="static 48x96"):
        profile_shapes(["batch", 3, 48, 96], dynamic_hw=((48, 96), (48, 96), (96, 192)))
    with pytest.raises(ConfigError, match="--max-batch 0"):
        profile_shapes(["batch", 3, 48, 96], max_batch=0)
    with pytest.raises(ConfigError, match="--opt-batch 9"):
        profile_shapes(["batch", 3, 48, 96], max_batch=8, opt_batch=9)


def test_network_flags_by_version():
    trt10 = types.SimpleNamespace(NetworkDefinitionCreationFlag=types.SimpleNamespace(STRONGLY_TYPED=1))
    trt11 = types.SimpleNamespace(NetworkDefinitionCreationFlag=types.SimpleNamespace(STRONGLY_TYPED=0))
    assert network_flags("10.3.0.30", trt10) == 2 and network_flags("10.13.0.35", trt10) == 2
    assert network_flags("11.0.0.1", trt11) == 0 and network_flags("11.4.1", trt11) == 0
    for old in ("8.6.1", "9.3.0", None):
        with pytest.raises(ExportError, match="needs TensorRT 10.0 or newer"):
            network_flags(old, trt10)
    from rdd_edge.deploy.engine_meta import check_trt_version

    assert check_trt_version("10.3.0.30", ExportError) == (10, 3, 0)


def test_timing_cache_name_carries_gpu_and_exact_release_and_stays_one_safe_name():
    assert timing_cache_name("Orin", "8.7", "10.3.0.30") == "timing-orin-sm87-trt10-3-0-30.cache"
    assert timing_cache_name("NVIDIA GeForce RTX 4090", "8.9", "10.13.0.35") == "timing-nvidia-geforce-rtx-4090-sm89-trt10-13-0-35.cache"
    assert timing_cache_name(None, None, "11.0") == "timing-unknown-gpu-sm-unknown-trt11-0.cache"
    # a build number apart is another cache (NVIDIA ties caches to major.minor.patch.build)
    assert timing_cache_name("Orin", "8.7", "10.3.0.30") != timing_cache_name("Orin", "8.7", "10.3.0.31")
    # nothing from a GPU name, capability or version can reach the path: only [a-z0-9-.]
    odd = timing_cache_name("../../etc/x GPU", "../8.7", "10.3/../../x")
    assert "/" not in odd and ".." not in odd and odd.startswith("timing-etc-x-gpu-sm-unknown-trt10-3")


def test_engines_match_on_the_whole_release_and_capabilities_only_as_n_dot_n():
    from rdd_edge.deploy.engine_meta import compute_capability

    meta = {"tensorrt": "10.3.0.30", "gpu": "Orin", "compute_capability": "8.7"}
    check_compatible(meta, {"tensorrt": "10.3.0.30", "gpu": "Orin", "compute_capability": "8.7"})
    with pytest.raises(DeployError, match="rebuild it here"):
        check_compatible(meta, {"tensorrt": "10.3.0.31", "gpu": "Orin", "compute_capability": "8.7"})
    assert [compute_capability(v) for v in ("8.7", "12.0", "8", "8.7.1", "sm87", "../8.7", None)] == [
        "8.7", "12.0", None, None, None, None, None]


def test_argument_checks():
    check_build_args(1.0, None, 8, 1)
    with pytest.raises(ConfigError, match="workspace"):
        check_build_args(0, None)
    with pytest.raises(ConfigError, match="--dla-core -1"):
        check_build_args(1.0, -1)
    check_dla_core(None, 0)
    check_dla_core(1, 2)
    with pytest.raises(ConfigError, match="no DLA cores"):
        check_dla_core(0, 0)
    with pytest.raises(ConfigError, match=r"DLA cores 0\.\.1"):
        check_dla_core(2, 2)
    # the formats table decides, by exact file name (or the manifest's key), never by a substring
    assert engine_precision("model.int8.onnx") == "int8" and engine_precision("model.fp16.onnx") == "fp16"
    assert engine_precision("model.onnx") == "fp32" and engine_precision("x.onnx", BY_KEY["engine-int8"].file) == "int8"
    assert engine_precision("x.onnx", "net.int8.engine") == "fp32" and engine_precision("net.int8.onnx") == "fp32"
    manifest = {"artifacts": {"int8": {"file": "student.onnx"}, "int8-cpu": {"file": "cpu.onnx"}}}
    assert engine_precision("student.onnx", "", manifest) == "int8"
    cpu = BY_KEY["int8-cpu"]
    assert not cpu.trt_ep
    for name, m in ((cpu.file, None), ("cpu.onnx", manifest)):
        with pytest.raises(ConfigError, match=re.escape(f"{cpu.name} ({cpu.key}) is not for TensorRT")):
            engine_precision(name, "", m)


def test_engine_source_and_sidecar(tmp_path):
    with pytest.raises(ExportError, match="--int8"):
        engine_source("engine-int8", tmp_path)
    (tmp_path / "model.fp16.onnx").write_bytes(b"x")
    assert engine_source("engine-fp16", tmp_path) == tmp_path / "model.fp16.onnx"
    ident = {"tensorrt": "10.3.0", "gpu": "Orin", "compute_capability": "8.7"}
    io = {"inputs": [{"name": "images", "shape": ["batch", 3, 48, 96], "dtype": "float32"}], "outputs": []}
    meta = sidecar_meta("engine-int8", "ab" * 32, ident, io, profile_shapes(["batch", 3, 48, 96]), 1.0, None,
                        precision_layers={"int8": 3, "fp16": 2, "fp32": 0}, network_flags=2)
    assert meta["precision"] == "int8" and meta["source_onnx"] == "model.int8.onnx" and meta["compute_capability"] == "8.7"
    assert meta["profile"]["opt"] == [1, 3, 48, 96] and meta["input_shape"] == [1, 3, 48, 96]
    assert meta["max_batch"] == 8 and meta["strongly_typed"] and meta["builder_flags"] == []
    check_compatible(meta, ident)  # the deploy side accepts what the export side wrote


def test_stub_only_tensorrt_counts_as_missing(tmp_path, monkeypatch):
    """``pip install tensorrt-stubs`` leaves a tensorrt/ folder of .pyi files: importable, but no TensorRT."""
    (tmp_path / "tensorrt").mkdir()
    (tmp_path / "tensorrt" / "__init__.pyi").write_text("__version__: str\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # restored (removed) after the test
    del sys.modules["tensorrt"]
    import tensorrt  # a namespace package

    assert not hasattr(tensorrt, "Builder")
    from rdd_edge.deploy.engine_build import _trt

    assert tensorrt_module() is None and runtime_identity()["tensorrt"] is None
    with pytest.raises(MissingDependencyError, match=r"pip install -e .\.\[trt\]."):
        _trt()


@pytest.mark.skipif(HAVE_TRT, reason="tensorrt is installed: the missing-dependency message cannot be exercised")
def test_missing_tensorrt_says_how_to_install(tmp_path):
    from rdd_edge.deploy.engine_build import _trt

    with pytest.raises(MissingDependencyError, match=r"pip install -e .\.\[trt\]."):
        _trt()


def _gpu_or_skip() -> None:
    if not HAVE_TRT:
        pytest.skip("tensorrt is not installed (the trt extra; needs an NVIDIA GPU)")
    if runtime_identity()["gpu"] is None:
        pytest.skip("no NVIDIA GPU visible (cuda-python / pycuda / nvidia-smi)")


@pytest.fixture(scope="module")
def real_export(tmp_path_factory) -> Path:
    from trt_double import make_export

    return make_export(tmp_path_factory.mktemp("trt-export"), (48, 64))


@pytest.mark.trt
@pytest.mark.parametrize("src", ["model.fp16.onnx", "model.int8.onnx"])
def test_engine_builds_and_predicts_like_onnx_runtime(real_export, tmp_path, src):
    """Build the engine from a real export (FP16 file, FP16-float Q/DQ file) and compare with ONNX Runtime."""
    _gpu_or_skip()
    import shutil

    from rdd_edge import deploy
    from rdd_edge.deploy.engine_meta import precision_summary, read_sidecar
    from rdd_edge.export.tensorrt import build_engine

    shutil.copy(real_export / "manifest.json", tmp_path / "manifest.json")
    eng = tmp_path / src.replace(".onnx", ".engine")
    meta = build_engine(real_export / src, eng, max_batch=4, workspace_gb=1.0, timing_cache_dir=tmp_path)
    assert eng.stat().st_size > 0 and (tmp_path / meta["timing_cache"]["file"]).is_file()
    side = read_sidecar(eng)
    assert side["precision"] == ("int8" if "int8" in src else "fp16") and side["tensorrt"] == meta["tensorrt"]
    layers = side["precision_layers"]
    print(src, precision_summary(side))
    if "int8" in src:
        assert layers["int8"] > 0
    else:
        assert layers["fp16"] > 0 and layers["fp16"] >= layers["fp32"]
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (60, 80, 3), dtype=np.uint8) for _ in range(6)]
    want = deploy.load(real_export / src, device="cpu").predict_batch(images)
    with deploy.load(eng) as seg:
        assert seg.max_batch == 4
        got = seg.predict_batch(images)  # 6 images: 4 + 2
    agree = np.mean([(a == b).mean() for a, b in zip(got, want)])
    assert agree >= (0.95 if "int8" in src else 0.99), agree
