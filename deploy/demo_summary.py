"""The demo's summary beside its ``--out``: frames, end-to-end FPS, the device's state and the power drawn.

``demo --out clip.mp4`` writes ``clip.json`` beside the video (``--out DIR``: ``DIR/demo.json``), so the
FPS it reports can be compared with another device's: the power mode, clocks and temperatures read
before the first frame (:mod:`deploy.device_state`) and the mean power over the whole loop with FPS/W
(:mod:`deploy.power`). The FPS is end to end (read, infer, draw, write), not the model's alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, TypeVar

from rdd_edge.devices import cuda_index
from rdd_edge.runs import write_json

from rdd_edge.deploy import device_state
from rdd_edge.deploy.power import measuring, open_sampler

T = TypeVar("T")
SUMMARY_NAME = "demo.json"  # inside an --out folder


def run_measured(run: Callable[[], T], backend: str, device: str) -> tuple[T, dict[str, Any], dict[str, Any]]:
    """``run()`` (the demo loop, whose result has ``fps``) with the device state read before it and the
    power sampled during it: (result, state, {"fps", "power_w", "fps_per_w", ...})."""
    state = device_state.collect(device=device, gpu_index=cuda_index(device))
    with open_sampler(device=device, gpu_index=cuda_index(device)) as power:
        with measuring(power, backend) as finish:
            result = run()
    return result, {**state, "power_source": power.name}, finish({"fps": float(getattr(result, "fps", 0.0))})


def summary_path(out: Path) -> Path:
    """Where the summary of a run whose frames went to ``out`` is written."""
    return out / SUMMARY_NAME if out.is_dir() else out.with_suffix(".json")


def write_summary(out: Path, doc: dict[str, Any]) -> tuple[Path | None, str]:
    """(the summary file, "") or (None, why it could not be written): never fails the demo."""
    path = summary_path(out)
    try:
        write_json(path, {"format": "rdd-edge-demo", "version": 1, **doc})
    except OSError as exc:
        return None, f"could not write the summary {path} ({exc.strerror or exc})"
    return path, ""
