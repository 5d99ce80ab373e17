"""Contract of the TensorRT build and run code against NVIDIA's Python API (tensorrt-stubs 10.13),
for TensorRT 10.3 (JetPack 6), 10.13 and 11.0, with a recording double and a fake CUDA runtime.

What is asserted: strongly typed networks (10.x flag bit, nothing on 11.x), no precision builder
flag and no INT8 calibrator, the optimization profile (batch 1/opt/max, H x W), the timing cache
attached with ``ignore_mismatch=False`` (a mismatching cache refused and replaced by an empty
one), detailed profiling + the inspector's per-layer precisions in the sidecar, DLA core checks on
both sides, ``set_input_shape`` checked, one stream per runner, page-locked host buffers for every
copy, and everything released by ``close()``. TensorRT < 10 is refused.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from rdd_edge.errors import ConfigError, DeployError, ExportError

from trt_double import EXPORT_SIZE, CudaError, install


VERSIONS = ["10.3.0.26", "10.13.0.35", "11.0.0.1"]
SIZE = EXPORT_SIZE  # the size of the shared export (conftest.trt_export_src)


@pytest.fixture(scope="module")
def export_dir(trt_export_src) -> Path:
    """The session's export (conftest.py), read only: engines, caches and manifest copies go to tmp_path."""
    return trt_export_src


def _build(export_dir: Path, tmp_path: Path, src: str = "model.fp16.onnx", **kw):
    from rdd_edge.deploy.engine_build import build_engine

    import shutil

    eng = tmp_path / src.replace(".onnx", ".engine")
    tmp_path.mkdir(parents=True, exist_ok=True)
    shutil.copy(export_dir / "manifest.json", tmp_path / "manifest.json")  # deploy.load reads classes/size from it
    kw.setdefault("timing_cache_dir", tmp_path)
    return build_engine(export_dir / src, eng, **kw), eng


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("src", ["model.fp16.onnx", "model.int8.onnx"])
def test_build_is_strongly_typed_without_precision_flags(monkeypatch, export_dir, tmp_path, version, src):
    d, _ = install(monkeypatch, version)
    meta, eng = _build(export_dir, tmp_path, src, max_batch=8, workspace_gb=1.0)
    # strongly typed: 10.x sets the STRONGLY_TYPED bit (1 << 1), 11.x passes nothing (always strong)
    (net,) = d.calls("Builder", "create_network")
    assert net["flags"] == (0 if version.startswith("11") else 1 << 1)
    # no precision flag, no calibrator (11.x has neither)
    assert [c["flag"].name for c in d.calls("IBuilderConfig", "set_flag")] == []
    assert d.sets("IBuilderConfig", "flags") == [] and d.sets("IBuilderConfig", "int8_calibrator") == []
    # one profile: batch min 1, opt 1, max 8 at the file's H x W
    (shape,) = d.calls("IOptimizationProfile", "set_shape")
    assert shape["input"] == "images"
    assert [tuple(shape[k]) for k in ("min", "opt", "max")] == [(1, 3, *SIZE), (1, 3, *SIZE), (8, 3, *SIZE)]
    assert len(d.calls("IBuilderConfig", "add_optimization_profile")) == 1
    (pool,) = d.calls("IBuilderConfig", "set_memory_pool_limit")
    assert pool["pool"] == d.MemoryPoolType.WORKSPACE and pool["pool_size"] == 1 << 30
    # timing cache: never trusted blindly
    assert d.calls("IBuilderConfig", "set_timing_cache") and all(
        c["ignore_mismatch"] is False for c in d.calls("IBuilderConfig", "set_timing_cache"))
    release = version.replace(".", "-")  # engines and caches are tied to major.minor.patch.build
    assert meta["timing_cache"]["file"] == f"timing-orin-sm87-trt{release}.cache"
    assert (tmp_path / meta["timing_cache"]["file"]).is_file() and meta["timing_cache"]["saved"]
    # precision report from the inspector of a DETAILED build, read through an execution context whose
    # input shape is the profile's opt (without one a dynamic-batch engine shows no layer formats)
    assert d.sets("IBuilderConfig", "profiling_verbosity") == [d.ProfilingVerbosity.DETAILED]
    assert [c["format"] for c in d.calls("EngineInspector", "get_engine_information")] == [d.LayerInformationFormat.JSON]
    (ctx,) = d.sets("EngineInspector", "execution_context")
    assert [tuple(c["shape"]) for c in d.calls("IExecutionContext", "set_input_shape")] == [(1, 3, *SIZE)]
    assert len(d.loggers) == 1  # one TensorRT logger per process: builder, parser and runtime share it
    layers = meta["precision_layers"]
    if "int8" in src:
        assert layers["int8"] > 0 and layers["fp16"] > 0 and layers["fp32"] == 0  # FP16 float parts
    else:
        assert layers["fp16"] > 0 and layers["int8"] == 0 and layers["fp32"] == 0
    side = json.loads(eng.with_name(eng.name + ".json").read_text())
    assert side["precision_layers"] == layers and side["profile"]["max"] == [8, 3, *SIZE]
    assert side["tensorrt"] == version and side["gpu"] == "Orin" and side["compute_capability"] == "8.7"
    assert side["precision"] == ("int8" if "int8" in src else "fp16") and side["strongly_typed"] is True
    assert eng.read_bytes().startswith(b"RDDENGINE:")


@pytest.mark.parametrize("version", ["10.3.0.26", "11.0.0.1"])
def test_mismatching_timing_cache_is_refused_and_replaced(monkeypatch, export_dir, tmp_path, version, caplog):
    d, _ = install(monkeypatch, version)
    from rdd_edge.deploy.engine_plan import timing_cache_name

    cache = tmp_path / timing_cache_name("Orin", "8.7", version)
    cache.write_bytes(b"a cache written elsewhere")
    d.cache_mismatch = True
    with caplog.at_level(logging.WARNING):
        meta, _ = _build(export_dir, tmp_path)
    calls = d.calls("IBuilderConfig", "set_timing_cache")
    assert len(calls) == 2 and all(c["ignore_mismatch"] is False for c in calls)
    assert [bytes(c["serialized_timing_cache"]) for c in d.calls("IBuilderConfig", "create_timing_cache")] == [
        b"a cache written elsewhere", b""]
    assert meta["timing_cache"]["refused"] and not meta["timing_cache"]["loaded"]
    assert "does not match" in caplog.text and "empty cache" in caplog.text
    assert cache.read_bytes().startswith(b"TIMING-CACHE:")  # overwritten with this machine's cache
    d.cache_mismatch = False
    d.journal.clear()
    meta, _ = _build(export_dir, tmp_path)
    assert meta["timing_cache"]["loaded"] and len(d.calls("IBuilderConfig", "set_timing_cache")) == 1


@pytest.mark.parametrize("version", ["10.3.0.26", "10.7.0.23"])
def test_dla_core_checked_and_set_on_both_sides(monkeypatch, export_dir, tmp_path, version):
    d, _ = install(monkeypatch, version)
    with pytest.raises(ConfigError, match="no DLA cores"):
        _build(export_dir, tmp_path, dla_core=0)  # a desktop GPU
    d.num_dla_cores = 2
    with pytest.raises(ConfigError, match=r"DLA cores 0\.\.1"):
        _build(export_dir, tmp_path, dla_core=2)
    meta, eng = _build(export_dir, tmp_path, dla_core=1, max_batch=8, opt_batch=2)
    assert d.sets("IBuilderConfig", "DLA_core") == [1]
    assert d.sets("IBuilderConfig", "default_device_type") == [d.DeviceType.DLA]
    # TensorRT 10.x's DLA recipe (trtexec --useDLACore=0 --fp16 --allowGPUFallback): weakly typed, the FP16 flag
    assert [c["flag"].name for c in d.calls("IBuilderConfig", "set_flag")] == ["FP16", "GPU_FALLBACK"]
    assert d.calls("Builder", "create_network")[-1]["flags"] == 0 and meta["strongly_typed"] is False
    assert meta["dla_core"] == 1 and meta["builder_flags"] == ["FP16", "GPU_FALLBACK"]
    assert meta["precision_layers"]["fp16"] > 0 and meta["precision_layers"]["fp32"] == 0
    # DLA takes no dynamic dimension (NVIDIA's DLA restrictions): min = opt = max at the opt batch
    (shape,) = d.calls("IOptimizationProfile", "set_shape")
    assert [tuple(shape[k]) for k in ("min", "opt", "max")] == [(2, 3, *SIZE)] * 3 and meta["max_batch"] == 2
    # where the layers go, counted with IBuilderConfig.can_run_on_DLA before the build: the tiny
    # export's convolutions and ReLUs run on DLA, its Resize / ArgMax fall back to the GPU
    asked = d.calls("IBuilderConfig", "can_run_on_DLA")
    estimate = meta["dla_estimate"]
    assert estimate["dla"] + estimate["gpu"] == len(asked) > 0 and estimate["dla"] > 0 and estimate["gpu"] > 0
    assert estimate["estimate"] is True
    # after the build, from the engine inspector: the DLA-capable layers fused into one DLA layer
    after = meta["dla_layers"]
    assert after["source"] == "engine inspector" and after["dla"] == 1 and after["gpu"] == estimate["gpu"]
    assert after["dla_layers"][0].startswith("{ForeignNode[")
    d.journal.clear()
    from rdd_edge.deploy.backends.tensorrt import TrtBackend

    with TrtBackend(eng) as be:
        order = [(k, c, n) for k, c, n, _ in d.journal if (c, n) in {("Runtime", "DLA_core"), ("Runtime", "deserialize_cuda_engine")}]
        assert order == [("set", "Runtime", "DLA_core"), ("call", "Runtime", "deserialize_cuda_engine")]
        assert be.max_batch == 2
    d.num_dla_cores = 0  # the engine moved to a machine without DLA
    with pytest.raises(DeployError, match="DLA core 1; this device has 0 DLA cores"):
        TrtBackend(eng)


def test_dla_build_with_no_layer_on_dla_is_an_error_unless_allowed(monkeypatch, export_dir, tmp_path, caplog):
    d, _ = install(monkeypatch, "10.3.0.26")
    d.num_dla_cores, d.dla_ops = 1, set()  # DLA can run nothing of this graph: everything would fall back
    with pytest.raises(ExportError, match=r"no layer can run on DLA core 0 \(all \d+ would run on the GPU"):
        _build(export_dir, tmp_path, dla_core=0)
    with caplog.at_level(logging.WARNING):
        meta, _ = _build(export_dir, tmp_path, dla_core=0, allow_gpu_fallback=True)
    assert meta["dla_estimate"]["dla"] == 0 and meta["dla_layers"]["dla"] == 0
    assert "this engine runs on the GPU" in caplog.text


@pytest.mark.parametrize("version, refused", [("10.8.0.43", True), ("11.0.0.1", True), ("11.4.0.9", True),
                                              ("11.5.0.1", True), ("11.6.0.1", False)])
def test_dla_on_a_tensorrt_without_dla_is_refused_in_one_line(monkeypatch, export_dir, tmp_path, version, refused, caplog):
    """NVIDIA's tables: DLA through 10.7, then only 11.4.1 (AGX Orin, JetPack 7.2.2+); 11.5.0 supports no JetPack."""
    d, _ = install(monkeypatch, version)
    d.num_dla_cores = 2
    if refused:
        with pytest.raises(ConfigError, match=f"TensorRT {version} has no DLA support") as exc:
            _build(export_dir, tmp_path, dla_core=0)
        assert "\n" not in str(exc.value) and d.calls("Builder", "build_serialized_network") == []
    else:
        with caplog.at_level(logging.WARNING):
            _build(export_dir, tmp_path, dla_core=0)
        assert "not in NVIDIA's tables" in caplog.text  # built, with the placement as the evidence


@pytest.mark.parametrize("version, src, flags, strongly", [
    ("10.3.0.26", "model.int8.onnx", ["INT8", "FP16", "GPU_FALLBACK"], False),
    ("11.4.1.3", "model.fp16.onnx", ["GPU_FALLBACK"], True),
    ("11.4.1.3", "model.int8.onnx", ["GPU_FALLBACK"], True),
])
def test_dla_recipe_per_tensorrt_release(monkeypatch, export_dir, tmp_path, version, src, flags, strongly):
    """10.x: weakly typed + the file's precision flag (Q/DQ file: INT8, FP16 for what is not quantized);
    11.4.1: strongly typed, no precision flag (11.x has none: "Strongly Typed Networks for DLA")."""
    d, _ = install(monkeypatch, version)
    d.num_dla_cores = 1
    meta, _ = _build(export_dir, tmp_path, src=src, dla_core=0)
    assert [c["flag"].name for c in d.calls("IBuilderConfig", "set_flag")] == flags == meta["builder_flags"]
    assert meta["strongly_typed"] is strongly
    if src == "model.int8.onnx":
        assert meta["precision_layers"]["int8"] > 0


def test_a_missing_gpu_is_one_line_not_a_pybind_type_error(monkeypatch, export_dir, tmp_path):
    d, _ = install(monkeypatch, "10.3.0.26")
    d.builder_type_error = True  # pybind: "factory function returned nullptr" when no GPU / driver is usable
    with pytest.raises(ExportError, match="could not create a builder: no usable NVIDIA GPU or driver") as exc:
        _build(export_dir, tmp_path)
    assert "\n" not in str(exc.value)


def test_precision_report_needs_the_context_and_reads_int8_from_kernel_names(monkeypatch, export_dir, tmp_path):
    """Without the context the double (like TensorRT 10.3) hides the formats of a dynamic-batch engine;
    with types hidden altogether, INT8 is still read from the kernels' names."""
    from rdd_edge.deploy.engine_meta import layer_precisions, report_is_readable
    from trt_double import _SPECS, inspector_json

    d, _ = install(monkeypatch, "10.3.0.26")
    meta, _ = _build(export_dir, tmp_path, "model.int8.onnx")
    spec = list(_SPECS.values())[-1]
    without = layer_precisions(inspector_json(spec, True, 10, formats=False))
    assert without["int8"] == meta["precision_layers"]["int8"] > 0  # convolutions: from their i8f16 kernels
    assert without["unknown"] > 0 and without["fp16"] == 0  # the rest: unknown without formats
    d.inspector_types = False
    meta2, _ = _build(export_dir, tmp_path / "b", "model.int8.onnx")
    assert meta2["precision_layers"]["int8"] > 0
    assert report_is_readable(meta["precision_layers"]) and not report_is_readable({"unknown": 9, "int8": 1})


def test_tensorrt_older_than_10_is_refused(monkeypatch, export_dir, tmp_path):
    d, _ = install(monkeypatch, "10.13.0.35")
    _, eng = _build(export_dir, tmp_path)
    d.__version__ = "8.6.1"
    with pytest.raises(ExportError, match=r"TensorRT 8\.6\.1 found; rdd-edge needs TensorRT 10\.0 or newer"):
        _build(export_dir, tmp_path / "x")
    side = eng.with_name(eng.name + ".json")
    side.write_text(side.read_text().replace('"10.13.0.35"', '"8.6.1"'))
    from rdd_edge.deploy.backends.tensorrt import TrtBackend

    with pytest.raises(DeployError, match=r"TensorRT 8\.6\.1 found"):
        TrtBackend(eng)


@pytest.mark.parametrize("version", VERSIONS)
def test_runner_pins_checks_splits_and_releases(monkeypatch, export_dir, tmp_path, version):
    d, rt = install(monkeypatch, version)
    _, eng = _build(export_dir, tmp_path, max_batch=4)
    from rdd_edge import deploy

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (20, 30, 3), dtype=np.uint8) for _ in range(9)]
    ref = deploy.load(export_dir / "model.fp16.onnx", device="cpu").predict_batch(images)
    with deploy.load(eng) as seg:
        assert seg.max_batch == 4 and seg.provider.startswith(f"TensorRT {version} (cuda-python)")
        got = seg.predict_batch(images)  # 9 images through a max-batch-4 engine: 4 + 4 + 1
        runs = [a for k, c, n, a in d.journal if k == "run"]
        # three chunks: every execute got an int stream handle, the same one
        assert len(runs) == 3 and len({r["stream"] for r in runs}) == 1 and all(isinstance(r["stream"], int) for r in runs)
        shapes = [tuple(c["shape"]) for c in d.calls("IExecutionContext", "set_input_shape")]
        assert shapes[-3:] == [(4, 3, *SIZE), (4, 3, *SIZE), (1, 3, *SIZE)]
        assert all((a == b).all() for a, b in zip(got, ref))
        # every host<->device copy went through page-locked memory, on the runner's stream
        assert rt.copies and all(c["pinned"] for c in rt.copies)
        assert len(rt.streams) == 1 and {c["stream"] for c in rt.copies} == set(rt.streams)
        # a shape TensorRT refuses is an error, not garbage
        d.set_input_shape_result = False
        with pytest.raises(DeployError, match="rejected input shape"):
            seg.run(np.zeros((2, 3, *SIZE), np.float32))
        d.set_input_shape_result = None
    # close(): stream destroyed, device and pinned buffers freed; using it afterwards is an error
    assert rt.streams == {} and rt.device == {} and rt.pinned == {}
    assert "cudaStreamDestroy" in rt.log and "cudaFreeHost" in rt.log
    with pytest.raises(DeployError, match="closed"):
        seg.run(np.zeros((1, 3, *SIZE), np.float32))


def test_cuda_failures_are_one_deploy_line_and_leak_nothing(monkeypatch, export_dir, tmp_path):
    d, rt = install(monkeypatch, "10.3.0.26")
    _, eng = _build(export_dir, tmp_path)
    from rdd_edge.deploy.backends.tensorrt import TrtBackend

    rt.fail["cudaMallocHost"] = CudaError.cudaErrorMemoryAllocation
    with pytest.raises(DeployError, match=r"CUDA cudaMallocHost\(\d+ bytes\) failed \(cuda-python\): cudaErrorMemoryAllocation") as exc:
        TrtBackend(eng)
    assert "\n" not in str(exc.value)
    assert rt.streams == {} and rt.device == {} and rt.pinned == {}
    rt.fail["cudaSetDevice"] = CudaError.cudaErrorInsufficientDriver
    with pytest.raises(DeployError, match="cudaErrorInsufficientDriver"):
        TrtBackend(eng)
    with TrtBackend(eng) as be:
        rt.fail["cudaMemcpyAsync"] = CudaError.cudaErrorInvalidValue
        with pytest.raises(DeployError, match="cudaMemcpyAsync"):
            be.run(np.zeros((1, 3, *SIZE), np.float32))


def test_garbage_collected_runner_releases_its_buffers(monkeypatch, export_dir, tmp_path):
    import gc

    d, rt = install(monkeypatch, "10.13.0.35")
    _, eng = _build(export_dir, tmp_path)
    from rdd_edge.deploy.backends.tensorrt import TrtBackend

    be = TrtBackend(eng)
    be.run(np.zeros((2, 3, *SIZE), np.float32))
    assert rt.pinned and rt.device and rt.streams
    del be
    gc.collect()
    assert rt.streams == {} and rt.device == {} and rt.pinned == {}


def test_the_pre_strong_typing_keywords_are_gone(monkeypatch, export_dir, tmp_path):
    """build_engine(timing_cache=FILE, fp16_flag=...) was kept for a caller that no longer exists (issue 26):
    a TypeError now; the timing cache's folder is timing_cache_dir."""
    d, _ = install(monkeypatch, "10.3.0.26")
    from rdd_edge.export.tensorrt import build_engine

    for legacy in ({"timing_cache": tmp_path / "timing.cache"}, {"fp16_flag": True}):
        with pytest.raises(TypeError, match="unexpected keyword"):
            build_engine(export_dir / "model.int8.onnx", tmp_path / "x.engine", **legacy)
    meta = build_engine(export_dir / "model.int8.onnx", tmp_path / "model.int8.engine", workspace_gb=1.0,
                        timing_cache_dir=tmp_path)
    assert d.calls("IBuilderConfig", "set_flag") == [] and d.calls("Builder", "create_network")[0]["flags"] == 2
    assert (tmp_path / meta["timing_cache"]["file"]).is_file() and meta["max_batch"] == 8
