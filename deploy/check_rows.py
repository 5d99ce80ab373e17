"""The check's row model: one row per artifact, its status, and the order rows come in.

Shared by :mod:`deploy.check` (which fills rows) and :mod:`deploy.check_report` (which renders them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from rdd_edge import formats as table

# Status cells
PASSED = "passed"
FAILED_GATE = "failed gate"  # exported and runs, but lost more mIoU than allowed
FAILED = "failed"
SKIPPED = "skipped"

REFERENCE_KEY = "onnx"  # the FP32 ONNX model every other row is compared with


def row_order() -> tuple[str, ...]:
    """The order of check rows: the reference row first, then the formats table's order (read when
    asked, so a row added to the table is ordered like the others)."""
    return ("torch", *table.ORDER)


@dataclass
class Row:
    """One line of the check table."""

    name: str
    file: str | None
    precision: str
    backend: str = ""
    status: str = FAILED
    reason: str = ""
    size_mb: float | None = None
    miou: float | None = None  # in percent
    drop: float | None = None  # mIoU points lost vs the FP32 reference (positive = worse)
    agreement: float | None = None  # fraction of pixels with the reference's label, in percent
    latency: dict[str, dict] = field(default_factory=dict)  # "b1", "bN" -> Latency.as_dict()
    detail: str = ""  # engines: the layer precisions TensorRT chose (from the sidecar)
    note: str = ""  # where it ran when that is not where it was asked to (e.g. ONNX on the CPU)
    int8_budget: dict | None = None  # INT8 files exported with --int8-budget: the manifest's record (layers in float ...)
    sha256: str | None = None  # the bytes this row scored (verified against the manifest): what demo may run
    layer_profile: list[str] | None = None  # --profile-layers: the per-layer time files written for this engine

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
