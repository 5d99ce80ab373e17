"""The trtexec line every engine build prints and stores (deploy/trtexec.py), for every build option
combination the builder has, checked two ways: each line parses with shlex and uses only flags that
trtexec's help text documents for that TensorRT release, and each value matches what the builder
really did to TensorRT (the recording double's journal: network flags, profile shapes, workspace,
builder flags, DLA core, timing cache, profiling verbosity).
"""

from __future__ import annotations

import gc
import itertools
import shlex
import shutil
from pathlib import Path

import onnx
import pytest

from rdd_edge.errors import ConfigError

from trt_double import install

# trtexec's help text (samples/common/sampleOptions.cpp, "  --flag" lines) at NVIDIA/TensorRT tags v10.3.0
# (JetPack 6) and release/10.13; v11.1 drops --fp16 / --int8 and keeps --stronglyTyped as a deprecated no-op.
DOCUMENTED_10 = {"--onnx", "--saveEngine", "--loadEngine", "--minShapes", "--optShapes", "--maxShapes", "--shapes",
                 "--memPoolSize", "--fp16", "--int8", "--stronglyTyped", "--useDLACore", "--allowGPUFallback",
                 "--timingCacheFile", "--profilingVerbosity", "--builderOptimizationLevel", "--device"}
DOCUMENTED_11 = DOCUMENTED_10 - {"--fp16", "--int8"}
# Everything the builder may do to a builder config / network; each has its trtexec flag (or is TensorRT's
# own bookkeeping with no flag). A new setting in engine_build fails this test until the line covers it.
CONFIG_CALLS = {"set_memory_pool_limit", "set_flag", "add_optimization_profile", "create_timing_cache",
                "set_timing_cache", "get_timing_cache", "can_run_on_DLA", "__init__"}
CONFIG_SETS = {"profiling_verbosity", "default_device_type", "DLA_core"}

VERSIONS = ["10.3.0.26", "10.13.0.35", "11.0.0.1", "11.4.1.3"]  # DLA: weak, none, none, strong
SOURCES = ["model.fp16.onnx", "model.int8.onnx"]
INPUTS = ["dynamic-batch", "dynamic-hw", "static"]


def _variant(src: Path, kind: str, folder: Path) -> Path:
    """The export's file with its input made dynamic in H and W, or fully static (batch 1)."""
    out = folder / kind / src.name
    out.parent.mkdir(parents=True, exist_ok=True)
    if kind == "dynamic-batch":
        shutil.copy(src, out)
        return out
    m = onnx.load(str(src))
    for v in (*m.graph.input, *m.graph.output):
        dims = v.type.tensor_type.shape.dim
        for i, d in enumerate(dims):
            if i == 0:
                d.Clear()
                if kind == "static":
                    d.dim_value = 1
                else:
                    d.dim_param = "batch"
            elif kind == "dynamic-hw" and i >= len(dims) - 2:
                d.Clear()
                d.dim_param = "hw"[i - (len(dims) - 2)]
    onnx.save(m, str(out))
    return out


def _flags(line: str) -> dict[str, str]:
    args = shlex.split(line)
    assert args[0] == "trtexec"
    out = {}
    for a in args[1:]:
        key, _, value = a.partition("=")
        assert key not in out, f"{key} given twice in {line}"
        out[key] = value
    return out


def _bytes(size: str) -> int:
    units = {"B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(size[:-1]) * units[size[-1]]


def _shape(spec: str) -> tuple[str, tuple[int, ...]]:
    name, _, dims = spec.rpartition(":")
    return name.strip("'"), tuple(int(v) for v in dims.split("x"))


def _check_line(d, meta: dict, src: Path, eng: Path, cache_dir: Path | None, version: str) -> None:
    major = int(version.split(".")[0])
    f = _flags(meta["trtexec"])
    assert set(f) <= (DOCUMENTED_11 if major >= 11 else DOCUMENTED_10), meta["trtexec"]
    assert f["--onnx"] == src.name and f["--saveEngine"] == "model." + eng.name.split(".")[1] + ".trtexec.engine"
    # the profile TensorRT was given: shapes on the line exactly when the graph has a dynamic dimension
    (shape,) = d.calls("IOptimizationProfile", "set_shape")
    graph = onnx.load(str(src)).graph.input[0].type.tensor_type.shape.dim
    if any(x.dim_param for x in graph):
        for k, want in zip(("--minShapes", "--optShapes", "--maxShapes"), (shape["min"], shape["opt"], shape["max"])):
            assert _shape(f[k]) == (shape["input"], tuple(want)), (k, meta["trtexec"])
    else:
        assert not {"--minShapes", "--optShapes", "--maxShapes"} & set(f)  # trtexec refuses shapes for a static model
        assert tuple(shape["min"]) == tuple(shape["max"]) == tuple(x.dim_value for x in graph)
    (pool,) = d.calls("IBuilderConfig", "set_memory_pool_limit")
    assert f["--memPoolSize"].startswith("workspace:") and _bytes(f["--memPoolSize"].split(":")[1]) == pool["pool_size"]
    (net,) = d.calls("Builder", "create_network")
    strongly = bool(net["flags"] & (1 << int(d.NetworkDefinitionCreationFlag.STRONGLY_TYPED))) if major < 11 else True
    assert ("--stronglyTyped" in f) == (strongly and major < 11)
    set_flags = {c["flag"].name for c in d.calls("IBuilderConfig", "set_flag")}
    assert ("--fp16" in f) == ("FP16" in set_flags) and ("--int8" in f) == ("INT8" in set_flags)
    assert ("--allowGPUFallback" in f) == ("GPU_FALLBACK" in set_flags)
    if major >= 11 or strongly:
        assert not set_flags - {"GPU_FALLBACK"}  # strongly typed: precision comes from the file alone
    dla = d.sets("IBuilderConfig", "DLA_core")
    assert f.get("--useDLACore") == (str(dla[0]) if dla else None)
    if cache_dir is None:
        assert "--timingCacheFile" not in f
    else:
        assert f["--timingCacheFile"] == meta["timing_cache"]["file"] and (cache_dir / f["--timingCacheFile"]).is_file()
    assert d.sets("IBuilderConfig", "profiling_verbosity") == [d.ProfilingVerbosity.DETAILED]
    assert f["--profilingVerbosity"] == "detailed"
    # nothing else was set on the builder config that the line does not carry
    touched = {n for k, c, n, _ in d.journal if c == "IBuilderConfig" and k == "call"}
    assert touched <= CONFIG_CALLS, touched - CONFIG_CALLS
    assert {n for k, c, n, _ in d.journal if c == "IBuilderConfig" and k == "set"} <= CONFIG_SETS
    # the load line times this very engine, on its DLA core, at the opt shape when the input is dynamic
    load = _flags(meta["trtexec_load"])
    assert set(load) <= (DOCUMENTED_11 if major >= 11 else DOCUMENTED_10)
    assert load["--loadEngine"] == eng.name and load.get("--useDLACore") == f.get("--useDLACore")
    assert ("--shapes" in load) == ("--optShapes" in f) and load.get("--shapes") == f.get("--optShapes")


@pytest.mark.parametrize("version", VERSIONS)
def test_every_build_option_combination_has_a_trtexec_line_matching_the_build(monkeypatch, trt_export_src, tmp_path,
                                                                               version):
    from rdd_edge.deploy.engine_build import build_engine
    from rdd_edge.deploy.engine_meta import read_sidecar

    files = {(s, k): _variant(trt_export_src / s, k, tmp_path / "src") for s in SOURCES for k in INPUTS}
    built = refused = 0
    with monkeypatch.context() as m:  # install's gc.collect (for the acceptance check's fork) costs seconds here
        m.setattr(gc, "collect", lambda *a: 0)
        d, _ = install(monkeypatch, version)  # once: installing costs far more than a build
    d.num_dla_cores = 1
    # every source x input kind x DLA choice; the timing cache (on / off) and the workspace (whole MiB or not)
    # alternate across them, so both values of each meet both typing modes
    for n, (src_name, kind, dla) in enumerate(itertools.product(SOURCES, INPUTS, (None, 0))):
        cached = n % 2 == 0
        d.journal.clear()  # this build's calls only
        src = files[(src_name, kind)]
        out = tmp_path / f"b{n}"
        out.mkdir()
        eng = out / src_name.replace(".onnx", ".engine")
        kw = dict(max_batch=4, opt_batch=2, workspace_gb=(1.0 if n % 4 < 2 else 0.3), dla_core=dla,
                  timing_cache_dir=out if cached else None,
                  dynamic_hw=((8, 16), (16, 24), (24, 32)) if kind == "dynamic-hw" else None)
        dla_ok = version.startswith(("10.3", "11.4")) and kind != "dynamic-hw"
        if dla is not None and not dla_ok:
            with pytest.raises(ConfigError):  # no DLA in this release, or DLA with a dynamic H x W: no engine, no line
                build_engine(src, eng, **kw)
            refused += 1
            continue
        meta = build_engine(src, eng, **kw)
        _check_line(d, meta, src, eng, out if cached else None, version)
        stored = read_sidecar(eng)
        assert stored["trtexec"] == meta["trtexec"] and stored["trtexec_load"] == meta["trtexec_load"]
        built += 1
    assert built + refused == len(SOURCES) * len(INPUTS) * 2 and built >= 6


def test_workspace_and_names_are_written_the_way_trtexec_reads_them():
    from rdd_edge.deploy.trtexec import build_args, shape_spec, workspace_size

    assert workspace_size(2.0) == "2048M" and workspace_size(0.5) == "512M"
    assert workspace_size(0.3) == f"{int(0.3 * (1 << 30))}B"  # not whole MiB: exact bytes, as the builder set
    assert shape_spec("images", (1, 3, 8, 16)) == "images:1x3x8x16"
    assert shape_spec("input:0", (1, 3, 8, 16)) == "'input:0':1x3x8x16"  # trtexec's quoting for such names
    meta = {"source_onnx": "my model.onnx", "inputs": [{"name": "input:0", "shape": ["N", 3, 8, 16]}],
            "profile": {"min": [1, 3, 8, 16], "opt": [1, 3, 8, 16], "max": [2, 3, 8, 16]}, "workspace_gb": 1,
            "tensorrt": "10.3.0.26", "strongly_typed": True, "builder_flags": [], "dla_core": None}
    args = build_args(meta, "x.engine")
    from rdd_edge.deploy.trtexec import build_command

    assert shlex.split(build_command(meta, "x.engine")) == args  # spaces and quotes survive the shell
    assert "--onnx=my model.onnx" in args and "--minShapes='input:0':1x3x8x16" in args
