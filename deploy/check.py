"""The deploy check: every exported artifact side by side, accuracy gate included.

One row per artifact in the export manifest (plus optional reference rows, e.g. the torch
checkpoint, given by the caller): status, size, mIoU on the val images, drop and pixel
agreement vs the FP32 ONNX model, and model-only latency at batch 1 and at a larger batch.
A failing artifact fills its status cell and the loop goes on. The report is written as
``check.json``, ``check.md`` and ``check.png`` (latency vs mIoU) in the export folder.

Post-processing is the runtime's (:mod:`deploy.postprocess`), so every row is scored on exactly
what an application would get from :meth:`deploy.Segmenter.predict`.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from rdd_edge.errors import ConfigError, DeployError, RddError
from rdd_edge.metrics import ConfusionMatrix
from rdd_edge.runs import DEFAULT_ROOT, atomic_path, atomic_write_text, inside, write_json

from rdd_edge.deploy.info import MANIFEST_NAME
from rdd_edge.export.formats import ORDER as FORMAT_ORDER

# Status cells
PASSED = "passed"
FAILED_GATE = "failed gate"  # exported and runs, but lost more mIoU than allowed
FAILED = "failed"
SKIPPED = "skipped"

REFERENCE_KEY = "onnx"  # the FP32 ONNX model every other row is compared with
ORDER = ("torch", *FORMAT_ORDER)  # reference row first, then the formats table's order


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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Candidate:
    """Something to check: ``load()`` returns a Segmenter-like object (predict_batch, preprocess, run, info)."""

    name: str
    load: Callable[[], Any]
    file: Path | None = None
    precision: str = "fp32"
    gated: bool = True  # subject to --max-drop (everything but the reference rows)
    sha256: str | None = None  # what the manifest recorded; a file that differs fails its row
    note: str = ""  # said in the row (e.g. "ran on the CPU: ...")
    problem: str = ""  # why this row fails before anything is loaded (a path outside the folder, no checksum)
    needs_sha: bool = True  # manifest artifacts must carry a checksum (reference rows need none)


def find_export_dir(run: str | Path) -> Path:
    """``run`` may be a distill run (``<run>/export``) or the export folder itself."""
    run = Path(run)
    for d in (run / "export", run):
        if (d / MANIFEST_NAME).is_file():
            return d
    raise ConfigError(f"{run}: no export/{MANIFEST_NAME} found; run `rdd-edge export` on this run first")


def manifest_candidates(export_dir: Path, manifest: dict[str, Any], device: str = "cpu", threads: int | None = None) -> list[Candidate]:
    """One candidate per artifact the manifest lists, FP32 ONNX first.

    With a GPU ``device``, engines run on the GPU and ONNX files on ONNX Runtime's GPU providers
    when this onnxruntime build has them, else on the CPU with a note in their row (never a
    failure: the FP32 reference must produce figures for the gate to mean anything).
    """
    from rdd_edge.deploy.runtime import load

    arts = manifest.get("artifacts") or {}
    if not arts:
        raise ConfigError(f"{export_dir / MANIFEST_NAME}: lists no artifacts; re-run `rdd-edge export`")
    keys = sorted(arts, key=lambda k: (ORDER.index(k) if k in ORDER else len(ORDER), k))
    onnx_device, onnx_note = onnx_placement(device)
    out = []
    for k in keys:
        entry = arts[k] if isinstance(arts[k], dict) else {}
        name = entry.get("file")
        try:
            f: Path | None = inside(export_dir, name, f"artifact {k}'s file")
        except DeployError as exc:
            out.append(Candidate(name=k, load=_refused, file=None, precision=str(entry.get("precision", "")),
                                 problem=str(exc)))
            continue
        assert f is not None
        is_onnx = f.suffix.lower() == ".onnx"
        dev = onnx_device if is_onnx else device
        out.append(
            Candidate(
                name=k,
                load=(lambda f=f, dev=dev: _load_onnx(load, f, dev, threads)) if is_onnx else
                     (lambda f=f: load(f, device=device, threads=threads)),
                file=f,
                precision=str(entry.get("precision", "fp32" if k == REFERENCE_KEY else k)),
                gated=k != REFERENCE_KEY,
                sha256=entry.get("sha256") if isinstance(entry.get("sha256"), str) else None,
                note=onnx_note if is_onnx else "",
            )
        )
    listed = {c.file.name for c in out if c.file is not None}
    for f in sorted(export_dir.iterdir()):  # a model file the manifest does not list is never run unchecked
        if f.suffix.lower() in MODEL_SUFFIXES and f.name not in listed:
            out.append(Candidate(name=f.name, load=_refused, file=None, precision="?",
                                 problem=f"{f.name} is in the folder but not in the manifest (added or edited "
                                         "since export); re-export, or remove it"))
    return out


MODEL_SUFFIXES = (".onnx", ".engine", ".plan")


def _refused() -> Any:
    raise DeployError("not loaded")  # never called: rows with a problem fail before loading


def onnx_placement(device: str) -> tuple[str, str]:
    """Where ONNX files run for ``device`` and the note their rows carry: a GPU device with a
    CPU-only ONNX Runtime runs them on the CPU ("ran on the CPU: ...")."""
    if not device.startswith("cuda"):
        return device, ""
    from rdd_edge.deploy.backends.onnxruntime import gpu_providers, import_onnxruntime

    available = list(import_onnxruntime().get_available_providers())
    if gpu_providers(available):
        return device, ""
    return "cpu", ("ran on the CPU: this ONNX Runtime has no GPU provider (onnxruntime-gpu: the `gpu` extra; "
                   "on a Jetson, NVIDIA's onnxruntime-gpu wheel)")


class _Fallback:
    """A loaded ONNX segmenter that records why it runs on the CPU instead of the GPU."""

    def __init__(self, seg: Any, note: str) -> None:
        self._seg, self.fallback_note = seg, note

    def __getattr__(self, name: str) -> Any:
        return getattr(self._seg, name)


def _load_onnx(load: Callable[..., Any], f: Path, device: str, threads: int | None) -> Any:
    """An ONNX artifact on ``device``; when its GPU providers fail to load it, on the CPU instead (noted)."""
    if not device.startswith("cuda"):
        return load(f, device=device, threads=threads)
    try:
        return load(f, device=device, threads=threads)
    except DeployError as exc:
        seg = load(f, device="cpu", threads=threads)
        return _Fallback(seg, f"ran on the CPU: the GPU providers could not load it ({str(exc)[:160]})")


def verify_file(cand: Candidate) -> None:
    """The file a candidate names must exist, be readable and match the manifest's sha256 (which
    every artifact must have: a manifest edited to drop it fails the row, never skips the test)."""
    from rdd_edge.runs import sha256_file

    if cand.problem:
        raise DeployError(cand.problem)
    if cand.file is None:
        return
    if not cand.file.is_file():
        raise DeployError(f"{cand.file.name}: listed in the manifest but not found")
    if cand.needs_sha and not cand.sha256:
        raise DeployError(f"{cand.file.name}: the manifest gives no sha256 for it (edited?); re-export")
    if cand.sha256:
        try:
            digest = sha256_file(cand.file)
        except OSError as exc:
            raise DeployError(f"{cand.file.name}: unreadable ({exc.strerror})") from None
        if digest != cand.sha256:
            raise DeployError(f"{cand.file.name}: sha256 differs from the manifest's (replaced, truncated or corrupt "
                              "since export); re-export it")


def _predict_all(seg: Any, images: Sequence[np.ndarray], batch: int) -> list[np.ndarray]:
    preds: list[np.ndarray] = []
    for i in range(0, len(images), batch):
        preds.extend(seg.predict_batch(images[i : i + batch]))
    return preds


def evaluate_rows(
    candidates: Sequence[Candidate],
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    num_classes: int,
    batch: int = 4,
    max_drop: float = 1.0,
    ignore_index: int = 255,
    latency_kw: dict | None = None,
    on_row: Callable[[Row], None] | None = None,
) -> list[Row]:
    """Score every candidate; the reference (first ungated candidate named ``onnx``) sets drop/agreement."""
    from rdd_edge.deploy.latency import measure_segmenter

    latency_kw = {"min_time": 1.0, **(latency_kw or {})}
    rows: list[Row] = []
    ref_preds: list[np.ndarray] | None = None
    ref_miou: float | None = None
    for cand in candidates:
        row = Row(name=cand.name, file=cand.file.name if cand.file else None, precision=cand.precision)
        if cand.file is not None and cand.file.is_file():
            row.size_mb = cand.file.stat().st_size / 1e6
        seg, intact = None, False
        try:
            verify_file(cand)
            intact = True  # present, readable and as exported: whatever fails now is the runtime's
            if cand.file is not None and cand.file.suffix == ".engine":
                row.detail = _engine_precisions(cand.file)
            seg = cand.load()
            row.backend = getattr(seg, "provider", "")
            row.note = getattr(seg, "fallback_note", "") or cand.note
            preds = _predict_all(seg, images, max(1, batch))
            cm = ConfusionMatrix(num_classes, ignore_index)
            for lab, pred in zip(labels, preds):
                cm.update(lab, np.minimum(pred, num_classes - 1) if pred.size else pred)
            row.miou = 100.0 * cm.compute().miou
            if cand.name == REFERENCE_KEY:
                ref_preds, ref_miou = preds, row.miou
            if ref_preds is not None:
                same = sum(int((a == b).sum()) for a, b in zip(preds, ref_preds))
                row.agreement = 100.0 * same / max(1, sum(p.size for p in preds))
                row.drop = ref_miou - row.miou if ref_miou is not None else None
            row.latency["b1"] = measure_segmenter(seg, 1, **latency_kw).as_dict()
            big = min(batch, getattr(seg, "max_batch", None) or batch)  # what an engine's profile accepts
            if big > 1:
                row.latency[f"b{big}"] = measure_segmenter(seg, big, **latency_kw).as_dict()
            gate_fail = cand.gated and row.drop is not None and row.drop > max_drop
            row.status = FAILED_GATE if gate_fail else PASSED
            if gate_fail:
                row.reason = f"mIoU drop {row.drop:.2f} > --max-drop {max_drop:g}"
        except RddError as exc:
            row.status, row.reason = FAILED, str(exc)
        except Exception as exc:  # noqa: BLE001 - one broken artifact must not stop the table
            row.status, row.reason = FAILED, f"{type(exc).__name__}: {exc}"
        finally:
            if seg is not None and hasattr(seg, "close"):
                seg.close()  # device buffers, streams, sessions: one artifact at a time
        if row.status == FAILED and intact and cand.file is not None and cand.file.suffix == ".engine" and _no_tensorrt():
            row.status = SKIPPED  # an intact engine on a machine without TensorRT: not a failure of the artifact
        rows.append(row)
        if on_row:
            on_row(row)
    return rows


def _engine_precisions(engine: Path) -> str:
    """"INT8 41, FP16 12, FP32 0 layers" from an engine's sidecar ('' when it has none)."""
    from rdd_edge.deploy.engine_meta import precision_summary, sidecar_path

    try:
        import json

        return precision_summary(json.loads(sidecar_path(engine).read_text()))
    except (OSError, ValueError):
        return ""


def _no_tensorrt() -> bool:
    from rdd_edge.deploy.engine_meta import tensorrt_module

    return tensorrt_module() is None


def _fmt(v: float | None, nd: int = 2) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def _short_backend(name: str) -> str:
    if name.startswith("torch"):
        return "torch"
    return name.replace("ExecutionProvider", "").replace("Tensorrt", "TensorRT").replace(" CPU", "").strip()


def table_rows(rows: Sequence[Row], compact: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and string cells of the markdown report; ``compact`` for an 80-column screen."""
    bkeys = sorted({k for r in rows for k in r.latency if k != "b1"})
    if compact:
        head = ["artifact", "status", "MB", "mIoU", "drop", "agree%", "p50 ms", "FPS"]
        body = []
        for r in rows:
            b1 = r.latency.get("b1")
            status = r.status if not r.reason else f"{r.status}: {r.reason}"
            backend = _short_backend(r.backend)
            name = r.name if backend in ("torch", "CPU", "") else f"{r.name} ({backend})"
            body.append([name, status, _fmt(r.size_mb, 1), _fmt(r.miou), _fmt(r.drop), _fmt(r.agreement, 1),
                         _fmt(b1["p50_ms"]) if b1 else "-", _fmt(b1["fps"], 1) if b1 else "-"])
        return head, body
    head = ["artifact", "precision", "backend", "status", "MB", "mIoU", "drop", "agree %", "b1 p50/p90/p99 ms", "b1 FPS"]
    for k in bkeys:
        head += [f"{k} p50 ms", f"{k} FPS"]
    body = []
    for r in rows:
        status = r.status if not r.reason else f"{r.status}: {r.reason}"
        b1 = r.latency.get("b1")
        cells = [r.name, r.precision, r.backend, status, _fmt(r.size_mb), _fmt(r.miou), _fmt(r.drop), _fmt(r.agreement),
                 f"{b1['p50_ms']:.2f}/{b1['p90_ms']:.2f}/{b1['p99_ms']:.2f}" if b1 else "-", _fmt(b1["fps"], 1) if b1 else "-"]
        for k in bkeys:
            lb = r.latency.get(k)
            cells += [_fmt(lb["p50_ms"]) if lb else "-", _fmt(lb["fps"], 1) if lb else "-"]
        body.append(cells)
    return head, body


def cpu_meta() -> dict[str, Any]:
    """This CPU for a report's meta (``meta["cpu"] = cpu_meta()``): model, cores, INT8 instruction set
    (AVX-512 VNNI, AVX-VNNI, AVX2, ARM dot-product, NEON or unknown), its ceiling vs FP32, and ``line``."""
    from rdd_edge.cpuinfo import detect

    return detect().as_dict()


def _on_cpu(rows: Sequence[Row], meta: dict[str, Any]) -> bool:
    """Whether the latency figures are CPU figures: ``--device cpu``, or no device given and no GPU backend."""
    if meta.get("device") not in (None, "auto"):
        return str(meta["device"]) == "cpu"
    gpu = ("cuda", "tensorrt", "dml", "rocm", "migraphx", "openvino_gpu")
    return not any(any(g in r.backend.lower() for g in gpu) for r in rows)


def to_markdown(rows: Sequence[Row], meta: dict[str, Any]) -> str:
    head, body = table_rows(rows)
    cpu = meta.get("cpu")
    lines = [
        f"# Deploy check: {meta.get('model_name') or ''}".rstrip(),
        "",
        f"{meta['images']} {meta['dataset']} {meta['split']} images, model input {meta['input_size'][0]}x{meta['input_size'][1]}, "
        f"gate: drop <= {meta['max_drop']:g} mIoU points vs FP32 ONNX. Latency: model only, after warm-up, sigma-clipped.",
        "",
    ]
    if isinstance(cpu, dict) and cpu.get("line"):
        threads = meta.get("threads")
        lines += [f"CPU: {cpu['line']}" + ("" if threads is None else f" Runs used {threads} intra-op threads."), ""]
    lines += [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in cells) + " |" for cells in body]
    lines += [f"- {r.name}: {r.detail}" for r in rows if r.detail]
    lines += [f"- {r.name}: {r.note}" for r in rows if r.note]
    lines += ["", f"Result: {'FAILED' if meta['gate_failed'] else 'passed'} ({time.strftime('%Y-%m-%d %H:%M:%S')})", ""]
    return "\n".join(lines)


# check.png: marker, colour and legend text per kind of point
_STYLE: dict[str, dict[str, Any]] = {
    "reference": dict(marker="D", color="0.15", s=46, label="FP32 reference (not gated)"),
    PASSED: dict(marker="o", color="tab:blue", s=46, label="passed gate"),
    FAILED_GATE: dict(marker="X", color="tab:red", s=90, label="failed gate"),
}
_REFERENCE_ROWS = (REFERENCE_KEY, "torch")


def place_labels(anchors: Sequence[tuple[float, float]], sizes: Sequence[tuple[float, float]],
                 bounds: tuple[float, float, float, float], obstacles: Sequence[tuple[float, float, float, float]] = (),
                 steps: Sequence[float] = (8, 14, 22, 32, 46, 62, 82, 106, 136)) -> list[tuple[float, float, float, float]]:
    """Boxes (x0, y0, x1, y1) for labels of ``sizes`` (w, h) next to ``anchors``, in pixels (y up).

    Greedy: each label takes the first spot, nearest first and eight directions round its point,
    that overlaps no label placed before, no obstacle (point markers, other text) and stays in
    ``bounds``; when none is free it takes the spot with the least overlap.
    """
    dirs = [(1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1)]
    bx0, by0, bx1, by1 = bounds
    placed: list[tuple[float, float, float, float]] = []

    def overlap(a, b) -> float:
        w = min(a[2], b[2]) - max(a[0], b[0])
        h = min(a[3], b[3]) - max(a[1], b[1])
        return w * h if w > 0 and h > 0 else 0.0

    for (ax, ay), (w, h) in zip(anchors, sizes):
        best, best_cost = None, float("inf")
        for r in steps:
            for dx, dy in dirs:
                cx = ax + dx * (r + w / 2)
                cy = ay + dy * (r + h / 2)
                box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
                outside = max(0.0, bx0 - box[0]) + max(0.0, box[2] - bx1) + max(0.0, by0 - box[1]) + max(0.0, box[3] - by1)
                cost = sum(overlap(box, o) for o in (*placed, *obstacles)) + 1e3 * outside
                if cost < best_cost:
                    best, best_cost = box, cost
                if cost == 0:
                    break
            if best_cost == 0:
                break
        placed.append(best)  # type: ignore[arg-type]
    return placed


def _plot_title(rows: Sequence[Row], meta: dict[str, Any], n_points: int, width: int = 100) -> str:
    first = f"Deploy check{': ' + str(meta['model_name']) if meta.get('model_name') else ''}: latency vs mIoU"
    if not n_points:
        first += " (no artifact ran)"
    parts = []
    cpu = meta.get("cpu")
    if isinstance(cpu, dict) and cpu.get("model"):
        threads = meta.get("threads")
        parts.append(f"CPU {cpu['model']} ({cpu.get('isa', 'unknown')}"
                     + (f", {threads} threads)" if threads else ")"))
    elif meta.get("device"):
        parts.append(f"device {meta['device']}")
    backends = list(dict.fromkeys(r.backend for r in rows if r.backend and r.miou is not None))
    if backends:
        parts.append(", ".join(backends))
    if meta.get("images") is not None:
        parts.append(f"{meta['images']} {meta.get('dataset', '')} {meta.get('split', '')} images".replace("  ", " "))
    size = meta.get("input_size")
    if size and len(size) == 2:
        parts.append(f"input {size[0]}x{size[1]}")
    lines, cur = [first], ""
    for part in parts:  # " | "-separated facts, wrapped to the figure's width
        if cur and len(cur) + 3 + len(part) > width:
            lines.append(cur)
            cur = ""
        cur = f"{cur} | {part}" if cur else part
    if cur:
        lines.append(cur)
    return "\n".join(lines)


def _y_range(values: Sequence[float]) -> tuple[float, float, bool]:
    """mIoU axis: from 0, unless that squeezes every value into the top quarter (then zoomed, flagged)."""
    if not values:
        return 0.0, 100.0, False
    lo, hi = min(values), max(values)
    if hi <= 0:
        return 0.0, 1.0, False
    if hi - lo >= 0.25 * hi:
        return 0.0, min(100.0, hi * 1.08 + 0.5), False
    pad = max(0.5, 0.25 * (hi - lo))
    return max(0.0, lo - pad), min(100.0, hi + pad), True


COINCIDENT_PX = 6.0  # points closer than this on the chart would hide each other
SPREAD_PX = 10.0


def coincident_groups(anchors: Sequence[tuple[float, float]], tol: float = COINCIDENT_PX) -> list[list[int]]:
    """For each point, the other points within ``tol`` pixels of it (chained: a cluster)."""
    n = len(anchors)
    group = list(range(n))

    def root(i: int) -> int:
        while group[i] != i:
            i = group[i]
        return i

    for i in range(n):
        for j in range(i + 1, n):
            if abs(anchors[i][0] - anchors[j][0]) <= tol and abs(anchors[i][1] - anchors[j][1]) <= tol:
                group[root(j)] = root(i)
    return [[j for j in range(n) if j != i and root(j) == root(i)] for i in range(n)]


def spread_coincident(anchors: Sequence[tuple[float, float]], tol: float = COINCIDENT_PX,
                      step: float = SPREAD_PX) -> list[tuple[float, float]]:
    """The anchors with each cluster of coincident points laid side by side, ``step`` pixels apart,
    centred on the cluster's mean (single points stay where they are)."""
    out = [tuple(a) for a in anchors]
    done: set[int] = set()
    for i, others in enumerate(coincident_groups(anchors, tol)):
        if not others or i in done:
            continue
        members = sorted([i, *others])
        done.update(members)
        cx = sum(anchors[k][0] for k in members) / len(members)
        cy = sum(anchors[k][1] for k in members) / len(members)
        for pos, k in enumerate(members):
            out[k] = (cx + (pos - (len(members) - 1) / 2) * step, cy)
    return out  # type: ignore[return-value]


def plot(rows: Sequence[Row], path: Path, meta: dict[str, Any] | None = None) -> Path | None:
    """Latency (batch 1, p50) vs mIoU scatter, one labelled point per row that ran.

    With ``meta`` (the report's: ``max_drop``, ``images``, ``input_size``, ``device``, ``cpu``...)
    the gate is drawn at FP32 mIoU - max-drop with the failing band below it, and the title names
    device, backends, image count and input size. Latency starts at 0; the mIoU axis starts at 0
    unless the values are close together, then it is zoomed and says so. Labels are placed so
    they overlap neither each other nor the points. The PNG's text chunks hold the title, a
    one-line description and the layout in pixels (``rdd-edge-layout``, JSON).
    """
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    meta = dict(meta or {})
    pts = [r for r in rows if r.miou is not None and "b1" in r.latency]
    ref = next((r for r in pts if r.name == REFERENCE_KEY), None)
    gate = ref.miou - float(meta["max_drop"]) if ref is not None and meta.get("max_drop") is not None else None  # type: ignore[operator]

    dpi, fig_w, fig_h = 120, 7.5, 5.0
    title = _plot_title(rows, meta, len(pts))
    top = 1.0 - (title.count("\n") + 1) * 9.5 * 1.25 / 72 / fig_h - 0.04  # room for the title's lines
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=dpi)
    ax = fig.add_axes((0.1, 0.17, 0.86, top - 0.17))
    xs = [r.latency["b1"]["p50_ms"] for r in pts]
    ys = [float(r.miou) for r in pts]  # type: ignore[arg-type]
    ax.set_xlim(0.0, max(max(xs) * 1.3, 1e-3) if xs else 1.0)
    y0, y1, zoomed = _y_range([*ys, *([gate] if gate is not None and gate >= 0 else [])])
    ax.set_ylim(y0, y1)
    ax.grid(alpha=0.3)
    ax.set_xlabel("latency, batch 1, p50 (ms), from 0")
    ax.set_ylabel(f"mIoU (%), ZOOMED to {y0:.1f}-{y1:.1f}" if zoomed else "mIoU (%)")
    if zoomed:  # axis-break marks at the foot of the y axis (this axis does not start at 0), clear of tick labels
        ax.set_yticks([t for t in ax.get_yticks() if y0 + 0.07 * (y1 - y0) <= t <= y1])
        ax.set_ylim(y0, y1)
        for dy in (0.0, 0.022):
            ax.plot([-0.01, 0.01], [0.006 + dy, 0.03 + dy], transform=ax.transAxes, color="k", lw=1, clip_on=False)
    ax.set_title(title, fontsize=9.5, loc="left")
    if not pts:
        ax.text(0.5, 0.5, "no artifact produced both an mIoU and a latency:\nsee the status column of check.md",
                transform=ax.transAxes, ha="center", va="center", fontsize=10, color="0.3")

    # points that fall on one spot (FP32 ONNX and FP16 often do) are spread side by side, so no
    # marker hides another, and each label says which others share its spot
    anchors = spread_coincident([tuple(ax.transData.transform((x, y))) for x, y in zip(xs, ys)])
    same = coincident_groups([tuple(ax.transData.transform((x, y))) for x, y in zip(xs, ys)])
    kinds = []
    for r, (px, py) in zip(pts, anchors):
        kind = "reference" if r.name in _REFERENCE_ROWS else (FAILED_GATE if r.status == FAILED_GATE else PASSED)
        kinds.append(kind)
        st = _STYLE[kind]
        x, y = ax.transData.inverted().transform((px, py))
        ax.scatter([x], [y], marker=st["marker"], c=st["color"], s=st["s"], zorder=3 if kind == PASSED else 4,
                   edgecolors="white", linewidths=0.6)

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    axb = ax.get_window_extent(renderer)
    bounds = (axb.x0 + 2, axb.y0 + 2, axb.x1 - 2, axb.y1 - 2)
    marker_r = 7.0
    obstacles = [(px - marker_r, py - marker_r, px + marker_r, py + marker_r) for px, py in anchors]

    gate_info = None
    if gate is not None and gate < y0:  # e.g. --max-drop 100: nothing can fail, no line to draw
        gate_info = {"miou": gate, "y_px": None, "text": f"gate at {gate:.2f} mIoU: below the chart"}
    elif gate is not None:
        ax.axhspan(y0, gate, color="tab:red", alpha=0.07, lw=0, zorder=0)
        ax.axhline(gate, color="tab:red", ls="--", lw=1.3, zorder=1)
        text = f"gate: FP32 {ref.miou:.2f} - {float(meta['max_drop']):g} = {gate:.2f} mIoU; below fails"  # type: ignore[union-attr]
        gy = ax.transData.transform((0, gate))[1]
        t = ax.text(0, 0, text, fontsize=8, color="tab:red", ha="center", va="center", zorder=4,
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.85))
        bb = t.get_window_extent(renderer)
        pad = 2 * 0.15 * 8 * dpi / 72 + 2
        w, h = bb.width + pad, bb.height + pad
        spots = [(bounds[2] - 4 - w / 2, gy + 3 + h / 2), (bounds[0] + 4 + w / 2, gy + 3 + h / 2),
                 (bounds[2] - 4 - w / 2, gy - 3 - h / 2), (bounds[0] + 4 + w / 2, gy - 3 - h / 2)]
        boxes = [(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2) for cx, cy in spots]
        free = [b for b in boxes if b[1] >= bounds[1] and b[3] <= bounds[3]
                and not any(b[0] < o[2] and o[0] < b[2] and b[1] < o[3] and o[1] < b[3] for o in obstacles)]
        box = (free or boxes)[0]
        cx, cy = ax.transData.inverted().transform(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2))
        t.set_position((float(cx), float(cy)))
        obstacles.append(box)
        gate_info = {"miou": gate, "y_px": fig.bbox.height - gy, "text": text}

    labels, sizes = [], []
    for i, (r, kind) in enumerate(zip(pts, kinds)):
        labels.append(r.name if kind != FAILED_GATE or r.drop is None else f"{r.name} (-{r.drop:.2f} mIoU)")
        if same[i]:
            labels[-1] += " (= " + ", ".join(pts[j].name for j in same[i]) + ")"
        probe = ax.text(0, 0, labels[-1], fontsize=8.5)
        bb = probe.get_window_extent(renderer)
        probe.remove()
        pad = 2 * 0.15 * 8.5 * dpi / 72 + 2  # the white box round the text (pad 0.15 em each side), and a pixel
        sizes.append((bb.width + pad, bb.height + pad))
    boxes = place_labels(anchors, sizes, bounds, obstacles)
    inv = ax.transData.inverted()
    texts = []
    for r, kind, label, (px, py), box in zip(pts, kinds, labels, anchors, boxes):
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        gap = max(abs(cx - px) - (box[2] - box[0]) / 2, abs(cy - py) - (box[3] - box[1]) / 2)
        texts.append(ax.annotate(
            label, tuple(inv.transform((px, py))), xytext=tuple(inv.transform((cx, cy))), textcoords="data",
            fontsize=8.5, ha="center", va="center", zorder=5, color="tab:red" if kind == FAILED_GATE else "black",
            bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.8),
            # a leader line when the label had to move away from its point
            arrowprops=dict(arrowstyle="-", color="0.45", lw=0.7, shrinkA=0, shrinkB=5) if gap > 14 else None))

    present = [k for k in ("reference", PASSED, FAILED_GATE) if k in kinds]
    handles = [Line2D([], [], ls="", marker=_STYLE[k]["marker"], color=_STYLE[k]["color"], markersize=7 if k != FAILED_GATE else 9,
                      label=_STYLE[k]["label"]) for k in present]
    if gate is not None:
        off = " at {:.2f}, below the chart".format(gate) if gate_info and gate_info["y_px"] is None else ""
        handles.append(Line2D([], [], color="tab:red", ls="--", lw=1.3, label=f"gate (max drop {float(meta['max_drop']):g}){off}"))
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False, bbox_to_anchor=(0.5, 0.005))

    fig.canvas.draw()
    H = fig.bbox.height

    def png_box(bb) -> list[float]:
        return [round(bb.x0, 1), round(H - bb.y1, 1), round(bb.x1, 1), round(H - bb.y0, 1)]

    layout = {
        "size": [int(round(fig.bbox.width)), int(round(H))],
        "xlim": list(ax.get_xlim()), "ylim": list(ax.get_ylim()), "y_zoomed": zoomed, "ylabel": ax.get_ylabel(),
        "gate": gate_info,
        "points": [{"name": r.name, "status": r.status, "kind": k, "xy": [round(px, 1), round(H - py, 1)]}
                   for r, k, (px, py) in zip(pts, kinds, anchors)],
        "labels": [{"name": r.name, "text": t.get_text(), "box": png_box((t.get_bbox_patch() or t).get_window_extent(renderer))}
                   for r, t in zip(pts, texts)],
    }
    failed = [r.name for r, k in zip(pts, kinds) if k == FAILED_GATE]
    desc = (f"{len(pts)} artifacts; gate at {gate:.2f} mIoU" if gate is not None else f"{len(pts)} artifacts; no gate drawn") + (
        f"; failed gate: {', '.join(failed)}" if failed else "") + ("; mIoU axis zoomed" if zoomed else "")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi,
                    metadata={"Title": title.replace("\n", " / "), "Description": desc, "Software": "rdd-edge",
                              "rdd-edge-layout": json.dumps(layout)})
    plt.close(fig)
    return path


def write_report(export_dir: Path, rows: Sequence[Row], meta: dict[str, Any]) -> dict[str, Path]:
    """check.json, check.md and check.png in ``export_dir`` (atomically)."""
    meta = {**meta, "gate_failed": bool(meta["failures"] if "failures" in meta else gate(rows, meta.get("max_drop", 1.0)))}
    if "cpu" not in meta and _on_cpu(rows, meta):  # CPU latencies: say which CPU and INT8 instruction set
        meta["cpu"] = cpu_meta()
    out = {"json": export_dir / "check.json", "md": export_dir / "check.md", "png": export_dir / "check.png"}
    write_json(out["json"], {"format": "rdd-edge-check", "version": 1, **meta, "rows": [r.as_dict() for r in rows]})
    atomic_write_text(out["md"], to_markdown(rows, meta))
    plot(rows, out["png"], meta)
    return out


def eval_spec(manifest: dict[str, Any], dataset: str | None = None, root: str | Path | None = None) -> Any:
    """The data the check scores on: the manifest's (what training validated on) unless told otherwise."""
    from rdd_edge.data import DataSpec

    recorded = manifest.get("data")
    base = DataSpec.from_dict(recorded) if isinstance(recorded, dict) else DataSpec(name=str(manifest.get("dataset") or "synthetic"))
    return base.overridden(dataset, root)


def load_eval_data(manifest: dict[str, Any], dataset: str | None, root: str | Path | None, images: int | None,
                   split: str = "val", export_dir: Path | None = None) -> tuple[Any, list[np.ndarray], list[np.ndarray]]:
    """(reader, images, labels) the check scores on: the first ``images`` of the split (all by default).

    An export that carries its check images (``check-data/``, written by ``rdd-edge bundle``) is scored
    on those unless ``--dataset`` / ``--data`` say otherwise: a device has no copy of the data set."""
    from rdd_edge.data import open_split

    bundled = None
    if dataset is None and root is None and export_dir is not None:
        from rdd_edge.deploy.check_data import open_check_data

        bundled = open_check_data(export_dir, manifest)
    if bundled is not None:
        ds, where = bundled, f"{bundled.folder}"
    else:
        spec = eval_spec(manifest, dataset, root)
        ds, where = open_split(spec, split), spec.describe()
    n = len(ds) if images is None else min(int(images), len(ds))
    if n == 0:
        raise ConfigError(f"{where} has no {split} images to check on")
    pairs = [ds[i] for i in range(n)]
    return ds, [p[0] for p in pairs], [p[1] for p in pairs]


# ---------------------------------------------------------------- the check stage's entry point
@dataclass
class CheckSpec:
    """What ``rdd-edge check`` checks, on which images and how."""

    run: str | Path | None = None  # distill run or its export folder (None: the latest with an export)
    runs_root: str | Path = DEFAULT_ROOT
    images: int | None = None  # score on the first N val images (None: all)
    batch: int = 4  # the second latency batch size (an engine's maximum caps it)
    max_drop: float = 1.0  # gate: mIoU points an artifact may lose vs FP32 ONNX
    device: str = "auto"
    threads: int | None = None
    dataset: str | None = None  # data set name (default: the manifest's)
    data: str | Path | None = None  # data folder (default: the manifest's)
    min_time: float = 1.0  # seconds of timed runs per latency figure


@dataclass
class CheckResult:
    """The check's rows, where its reports went, and the gate's decision as data."""

    rows: list[Row]
    meta: dict[str, Any]
    paths: dict[str, Path]
    failures: list[str]  # one line per reason the gate fails (empty: passed)

    @property
    def passed(self) -> bool:
        return not self.failures


def gate(rows: Sequence[Row], max_drop: float) -> list[str]:
    """Why the gate fails, one line each: a listed artifact that is missing, unreadable, altered or
    does not run, or one that loses more than ``max_drop`` mIoU points (reference rows excepted)."""
    out = []
    for r in rows:
        if r.name == "torch":
            continue  # a reference, not an artifact of the export
        if r.status == FAILED:
            out.append(f"{r.name}: {r.reason or 'failed'}")
        elif r.status == FAILED_GATE:
            out.append(f"{r.name} lost {r.drop:.2f} mIoU points (--max-drop {max_drop:g})")
    return out


def run_check(spec: CheckSpec, extra: Sequence[Candidate] = (), on_row: Callable[[Row], None] | None = None) -> CheckResult:
    """Check every artifact an export's manifest lists (plus ``extra`` reference rows, e.g. the torch
    checkpoint); write check.json / check.md / check.png; return the rows and the gate decision."""
    from rdd_edge.deploy.info import read_manifest
    from rdd_edge.devices import parse_device
    from rdd_edge.runs import resolve_run

    device = parse_device(spec.device)
    if spec.batch < 1:
        raise ConfigError(f"--batch {spec.batch}: must be >= 1")
    if not (isinstance(spec.max_drop, (int, float)) and math.isfinite(spec.max_drop) and spec.max_drop >= 0):
        raise ConfigError(f"--max-drop {spec.max_drop}: mIoU points, a finite number >= 0 (e.g. 1.0)")
    if not (isinstance(spec.min_time, (int, float)) and math.isfinite(spec.min_time) and spec.min_time > 0):
        raise ConfigError(f"--min-time {spec.min_time}: seconds, a finite number > 0")
    run_dir = resolve_run(spec.run, "distill", "the run to check", root=spec.runs_root, must_contain="export/manifest.json")
    export_dir = find_export_dir(run_dir)
    manifest, _ = read_manifest(export_dir / MANIFEST_NAME)
    if manifest is None:
        raise ConfigError(f"{export_dir}: no {MANIFEST_NAME}; run `rdd-edge export` first")
    ds, imgs, lbls = load_eval_data(manifest, spec.dataset, spec.data, spec.images, export_dir=export_dir)
    cands = [*extra, *manifest_candidates(export_dir, manifest, device=device, threads=spec.threads)]
    n_cls = int(manifest.get("num_classes") or len(manifest.get("classes", [])))
    rows = evaluate_rows(cands, imgs, lbls, n_cls, batch=spec.batch, max_drop=spec.max_drop,
                         ignore_index=int(manifest.get("ignore_index", 255)), latency_kw={"min_time": spec.min_time},
                         on_row=on_row)
    inp = manifest.get("input") or {}
    meta = {"run": str(run_dir), "export_dir": str(export_dir), "model_name": manifest.get("model_name"),
            "dataset": ds.info.name, "split": getattr(ds, "split", "val"), "images": len(imgs),
            "input_size": list(inp.get("size") or inp.get("shape", [0, 0, 0, 0])[2:]),
            "max_drop": spec.max_drop, "batch": spec.batch, "device": device, "threads": spec.threads}
    failures = gate(rows, spec.max_drop)
    meta.update(failures=failures, gate_failed=bool(failures))
    if _on_cpu(rows, meta):  # CPU latencies: name the CPU and the INT8 instruction set they depend on
        meta["cpu"] = cpu_meta()
    paths = write_report(export_dir, rows, meta)
    return CheckResult(rows, meta, paths, failures)
