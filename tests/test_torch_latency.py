"""benchmarks/torch_latency.py: the students' PyTorch latency table (CPU smoke run; the figures need a GPU)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("torch_latency_bench", ROOT / "benchmarks" / "torch_latency.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def test_cpu_smoke_run_times_each_model_and_names_the_cpu(tmp_path, capsys):
    bench = _bench()
    calls = {"n": 0}
    real = bench.timed_runs

    def counting(fn, device, runs, warmup):
        def wrapped():
            calls["n"] += 1
            fn()
        return real(wrapped, device, runs, warmup)

    bench.timed_runs = counting
    out = tmp_path / "t.json"
    assert bench.main(["--device", "cpu", "--size", "32x64", "--models", "mbv2", "--runs", "3", "--warmup", "1",
                       "--no-compile", "--dtype", "fp32", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    (row,) = data["rows"]
    assert row["model"] == "mbv2" and row["mode"] == "eager" and row["size"] == "32x64" and row["runs"] >= 1
    assert 0 < row["p50_ms"] <= row["p90_ms"] and row["fps"] > 0
    assert calls["n"] == 4  # one warm-up + three timed forwards
    assert "AVX" in data["meta"]["cpu"] or "ARM" in data["meta"]["cpu"] or "unknown" in data["meta"]["cpu"]
    assert "CPU:" in capsys.readouterr().out
