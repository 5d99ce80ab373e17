"""Check's two clocks for TensorRT rows and --profile-layers, through the recording TensorRT double and the
fake CUDA runtimes (no GPU here): the GPU compute column holds exactly the CUDA event times the runtime
answered for the timed runs, the host-to-host column the wall time; ONNX Runtime rows say "n/a"; a binding
without events says "unknown"; the per-layer table holds what the engine's IProfiler was told."""

from __future__ import annotations

import csv
import ctypes
import gc
import shutil

import numpy as np
import pytest

from trt_double import build_cudart_standin, install, install_pycuda

RUNS = 12  # min_runs = max_runs: exactly this many timed runs


@pytest.fixture
def engine(monkeypatch, trt_export_src, tmp_path):
    """A FP16 engine built by the double (10.13) in tmp_path, with the export's manifest beside it."""
    from rdd_edge.deploy.engine_build import build_engine

    with monkeypatch.context() as m:  # install's gc.collect (for the acceptance check's fork) costs seconds
        m.setattr(gc, "collect", lambda *a: 0)
        d, rt = install(monkeypatch, "10.13.0.35")
    shutil.copy(trt_export_src / "manifest.json", tmp_path / "manifest.json")
    eng = tmp_path / "model.fp16.engine"
    build_engine(trt_export_src / "model.fp16.onnx", eng, max_batch=2, workspace_gb=0.5)
    return d, rt, eng


def _latency(seg, batch: int = 1):
    from rdd_edge.deploy.latency import measure_segmenter

    return measure_segmenter(seg, batch, min_time=0.001, warmup=1, min_runs=RUNS, max_runs=RUNS)


def test_gpu_compute_and_host_to_host_are_separate_columns(engine):
    from rdd_edge import deploy
    from rdd_edge.deploy.check_report import GPU_MS, HOST_MS, LATENCY_NOTE, table_rows, to_markdown
    from rdd_edge.deploy.check_rows import Row

    d, rt, eng = engine
    rt.event_ms = [0.40, 0.55, 0.45, 0.60, 0.50]
    with deploy.load(eng) as seg:
        lat = _latency(seg)
        stream = seg.backend.stream
    timed = rt.elapsed[-RUNS:]  # what cudaEventElapsedTime answered for the timed runs (warm-up ones come first)
    assert len(rt.elapsed) > RUNS and lat.gpu_compute["runs"] == RUNS
    assert lat.gpu_compute["p50_ms"] == pytest.approx(float(np.median(timed)))
    assert lat.gpu_compute["mean_ms"] == pytest.approx(float(np.mean(timed)))
    assert set(rt.records) == {stream} and len(rt.records) == 2 * len(rt.elapsed)  # before and after each execute
    assert lat.p50_ms > 0 and lat.p50_ms != lat.gpu_compute["p50_ms"]  # the wall clock, not the events
    assert rt.events == {}  # both events destroyed with the runner
    engine_row = Row("engine-fp16", eng.name, "fp16", backend="TensorRT", status="passed", latency={"b1": lat.as_dict()})
    ort_row = Row("onnx", "model.onnx", "fp32", backend="CPUExecutionProvider", status="passed",
                  latency={"b1": {"p50_ms": 3.0, "p90_ms": 3.5, "p99_ms": 4.0, "fps": 333.3,
                                  "gpu_compute": None, "gpu_note": "host-to-host only (ONNX Runtime)"}})
    head, body = table_rows([ort_row, engine_row])
    host, gpu = head.index(f"b1 {HOST_MS} p50/p90/p99"), head.index(f"b1 {GPU_MS} p50")
    assert body[1][gpu] == f"{np.median(timed):.2f}" and body[1][host].startswith(f"{lat.p50_ms:.2f}/")
    assert body[0][gpu] == "n/a" and body[0][host] == "3.00/3.50/4.00"
    head, body = table_rows([ort_row, engine_row], compact=True)  # the terminal's table names its two clocks too
    assert head[head.index("h2h ms") + 1] == "GPU ms" and "p50 ms" not in head
    assert body[1][head.index("GPU ms")] == f"{np.median(timed):.2f}" and body[0][head.index("GPU ms")] == "n/a"
    assert LATENCY_NOTE in to_markdown([ort_row, engine_row], {"images": 1, "dataset": "x", "split": "val",
                                                               "input_size": [16, 24], "max_drop": 1.0,
                                                               "gate_failed": False})


def test_a_binding_without_events_gives_unknown_not_a_failure(engine, monkeypatch):
    from rdd_edge import deploy
    from rdd_edge.deploy.check_report import gpu_cell

    d, rt, eng = engine
    monkeypatch.delattr(type(rt), "cudaEventElapsedTime")
    with deploy.load(eng) as seg:
        lat = _latency(seg)
    assert lat.gpu_compute is None and lat.gpu_note.startswith("unknown") and "cudaEventElapsedTime" in lat.gpu_note
    assert gpu_cell(lat.as_dict()) == "unknown" and lat.p50_ms > 0


@pytest.mark.parametrize("binding", ["libcudart", "pycuda"])
def test_every_cuda_binding_times_with_events(engine, monkeypatch, tmp_path, binding):
    from rdd_edge import deploy
    from trt_double import fake_board

    d, rt, eng = engine
    if binding == "libcudart":
        lib = build_cudart_standin(tmp_path)
        fake_board(monkeypatch, tmp_path, libcudart=lib)
        ctypes.CDLL(str(lib)).standin_set_event_ms.argtypes = [ctypes.c_float]
        ctypes.CDLL(str(lib)).standin_set_event_ms(ctypes.c_float(0.75))
        want = 0.75
    else:
        drv = install_pycuda(monkeypatch)
        drv.event_ms = want = 1.25
    with deploy.load(eng, cuda_mem=binding) as seg:
        assert binding in seg.backend.mem.name
        lat = _latency(seg)
    assert lat.gpu_compute["p50_ms"] == pytest.approx(want) and lat.gpu_compute["runs"] == RUNS
    if binding == "libcudart":
        assert ctypes.CDLL(str(lib)).standin_live(5) == 0  # events destroyed at close


def test_profile_layers_writes_the_profilers_times_next_to_the_layer_precisions(engine, tmp_path):
    from rdd_edge import deploy
    from rdd_edge.deploy.engine_meta import layer_precisions
    from rdd_edge.deploy.layer_profile import write_layer_profile

    d, rt, eng = engine
    d.layer_ms = {"conv1": 0.30, "classifier": 0.12}
    with deploy.load(eng) as seg:
        x = seg.preprocess(np.zeros((16, 24, 3), np.uint8))
        layers = seg.backend.profile_layers(x, runs=5)
        inspector = seg.backend.engine.create_engine_inspector()
        inspector.execution_context = seg.backend.context  # a dynamic-shape engine shows formats only with one
        report = inspector.get_engine_information(d.LayerInformationFormat.JSON)
    told: dict[str, list[float]] = {}
    for name, ms in d.layer_reports[-5 * len(layers):]:  # the 5 counted runs (one uncounted run before)
        told.setdefault(name, []).append(ms)
    assert [x["layer"] for x in layers] == list(told)  # the engine's layer order
    for x in layers:
        assert x["mean_ms"] == pytest.approx(sum(told[x["layer"]]) / 5) and x["calls"] == 5
    assert {x["layer"]: x["mean_ms"] for x in layers}["conv1"] == pytest.approx(0.30)
    counts: dict[str, int] = {}
    for x in layers:
        counts[x["precision"]] = counts.get(x["precision"], 0) + 1
    assert {k: v for k, v in layer_precisions(report).items() if v} == counts  # the inspector's precisions
    paths = write_layer_profile(tmp_path, "engine-fp16", layers, 5, engine=eng.name)
    with open(paths["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert [r["layer"] for r in rows] == list(told)
    assert {r["layer"]: float(r["mean_ms"]) for r in rows}["conv1"] == pytest.approx(0.30)
    assert sum(float(r["share_pct"]) for r in rows) == pytest.approx(100, abs=0.05)
    md = paths["md"].read_text()
    assert md.splitlines()[0] == f"# Per-layer GPU time: engine-fp16 ({eng.name})" and "| conv1 | fp16 | 0.3000 |" in md
