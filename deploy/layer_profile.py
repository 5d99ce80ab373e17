"""``--profile-layers``: an engine's per-layer GPU time (TensorRT's IProfiler) next to each layer's precision,
written as CSV and markdown beside check's report. The timing itself is :meth:`deploy.backends.tensorrt.TrtBackend.profile_layers`.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Sequence

from rdd_edge.runs import atomic_write_text

from rdd_edge.deploy.engine_plan import slug


def layer_profile_paths(folder: Path, row_name: str) -> dict[str, Path]:
    base = f"check-layers-{slug(row_name)}"
    return {"csv": folder / f"{base}.csv", "md": folder / f"{base}.md"}


def to_csv(layers: Sequence[dict[str, Any]]) -> str:
    """One line per layer, in the engine's order: layer, precision, mean_ms, share_pct, calls."""
    total = sum(float(x["mean_ms"]) for x in layers) or 1.0
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["layer", "precision", "mean_ms", "share_pct", "calls"])
    for x in layers:
        w.writerow([x["layer"], x["precision"], f"{float(x['mean_ms']):.6f}", f"{100 * float(x['mean_ms']) / total:.2f}",
                    int(x["calls"])])
    return out.getvalue()


def to_markdown(layers: Sequence[dict[str, Any]], row_name: str, runs: int, engine: str = "") -> str:
    """The layers slowest first, with the sum of their times and the time per precision."""
    total = sum(float(x["mean_ms"]) for x in layers)
    by_prec: dict[str, float] = {}
    for x in layers:
        by_prec[x["precision"]] = by_prec.get(x["precision"], 0.0) + float(x["mean_ms"])
    lines = [f"# Per-layer GPU time: {row_name}" + (f" ({engine})" if engine else ""), "",
             f"TensorRT's IProfiler, mean of {runs} runs after one uncounted run; the profiler makes each run "
             "synchronous, so the sum is above the GPU compute time of check's table. Precision: the engine inspector's.",
             "", f"Sum {total:.3f} ms; " + ", ".join(f"{p.upper()} {ms:.3f} ms" for p, ms in
                                                    sorted(by_prec.items(), key=lambda kv: -kv[1])), "",
             "| layer | precision | mean ms | share % |", "|---|---|---|---|"]
    for x in sorted(layers, key=lambda x: -float(x["mean_ms"])):
        name = str(x["layer"]).replace("|", "/")
        lines.append(f"| {name} | {x['precision']} | {float(x['mean_ms']):.4f} | "
                     f"{100 * float(x['mean_ms']) / (total or 1.0):.1f} |")
    return "\n".join(lines) + "\n"


def write_layer_profile(folder: Path, row_name: str, layers: Sequence[dict[str, Any]], runs: int,
                        engine: str = "") -> dict[str, Path]:
    """``check-layers-<row>.csv`` and ``.md`` in ``folder`` (each written atomically)."""
    paths = layer_profile_paths(Path(folder), row_name)
    atomic_write_text(paths["csv"], to_csv(layers))
    atomic_write_text(paths["md"], to_markdown(layers, row_name, runs, engine))
    return paths
