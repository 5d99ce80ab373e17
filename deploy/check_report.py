"""The check's report: the table (markdown and an 80-column compact form), check.png (latency vs
mIoU with the gate), and writing check.json / check.md / check.png. Rendering only: the rows
come from :func:`deploy.check.run_check`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

from rdd_edge.cpuinfo import detect
from rdd_edge.runs import atomic_path, atomic_write_text, write_json

from rdd_edge.deploy.check_rows import FAILED_GATE, PASSED, REFERENCE_KEY, Row
from rdd_edge.deploy.device_state import state_lines
from rdd_edge.deploy.integrity import SEAL_KEY, seal


def _num(v: Any, spec: str = ".2f") -> str:
    """A number from a manifest (a file anyone can edit) formatted, or "?" for anything else."""
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")
    return format(v, spec) if ok else "?"


def _names(v: Any) -> list[str]:
    return [str(x) for x in v] if isinstance(v, list) else []


def float_cell(r: Row) -> str:
    """"3/59": layers an INT8 file keeps in float for its --int8-budget ("-" for other rows)."""
    b = r.int8_budget
    return "-" if not b else f"{len(_names(b.get('float_layers')))}/{_num(b.get('layers'), 'd')}"


def budget_line(r: Row) -> str:
    """One line on what --int8-budget did to an INT8 file, from its manifest record ('' without one)."""
    b = r.int8_budget
    if not b:
        return ""
    floats = _names(b.get("float_layers"))
    line = (f"{r.name}: {len(floats)} of {_num(b.get('layers'), 'd')} layers in float for --int8-budget "
            f"{_num(b.get('budget'), 'g')} ({str(b.get('calibration'))[:20]} calibration); at export, on "
            f"{_num(b.get('check_images'), 'd')} check images: drop {_num(b.get('drop_full'))} -> {_num(b.get('drop'))}")
    lat = b.get("latency_ms") if isinstance(b.get("latency_ms"), dict) else {}
    if not floats:  # no layer in float: the full INT8 file itself; two timings of it are no gain
        line += "; no layer in float: the file is the full INT8 one"
    elif lat.get("full") and lat.get("budgeted"):
        line += (f"; latency p50 FP32 {_num(lat.get('fp32'), '.1f')} ms, full INT8 {_num(lat['full'], '.1f')} ms, "
                 f"budgeted {_num(lat['budgeted'], '.1f')} ms" + (f" ({str(b['cpu'])[:60]})" if b.get("cpu") else ""))
    named = _names(b.get("float_modules")) or floats  # "head.classifier (node_conv2d_11)", or the nodes alone
    together = " (found as a group: single layers fell short)" if b.get("search") == "group" else ""
    return line + (f"; in float{together}: {', '.join(named)}" if floats else "")


HOST_MS = "host-to-host ms (copies + execute + numpy)"
GPU_MS = "GPU compute ms (trtexec's)"
LATENCY_NOTE = ("Latency columns: host-to-host = wall time of one run (copy into page-locked memory, host-to-device "
                "copy, execute, device-to-host copy, numpy copy of the outputs); GPU compute = CUDA events on the "
                "stream around TensorRT's execute only, what trtexec calls GPU Compute Time (TensorRT engines only; "
                "n/a: this backend gives host-to-host only; unknown: the CUDA binding could not time).")


COMPACT_NOTE = ("h2h ms: host-to-host p50 (copies + execute + numpy); GPU ms: GPU compute p50, CUDA events "
                "around execute (trtexec's GPU Compute Time); batch 1")


def gpu_cell(lat: dict | None) -> str:
    """A latency dict's GPU compute p50: the figure, "unknown" (a TensorRT row whose CUDA binding could not
    time), "n/a" (a backend with host-to-host time only) or "-" (not measured)."""
    if not lat:
        return "-"
    gpu = lat.get("gpu_compute")
    if isinstance(gpu, dict):
        return _num(gpu.get("p50_ms"))
    return "unknown" if str(lat.get("gpu_note", "")).startswith("unknown") else "n/a"


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
        if any(r.int8_budget for r in rows):  # a column only for exports made with --int8-budget
            head.insert(6, "float")
            for r, cells in zip(rows, body):
                cells.insert(6, float_cell(r))
        if any(gpu_cell(r.latency.get("b1")) not in ("-", "n/a") for r in rows):  # engines ran: two clocks, named
            at = head.index("p50 ms")
            head[at:at + 1] = ["h2h ms", "GPU ms"]  # COMPACT_NOTE says which is which
            for r, cells in zip(rows, body):
                cells.insert(at + 1, gpu_cell(r.latency.get("b1")))
        return head, body
    head = ["artifact", "precision", "backend", "status", "MB", "mIoU", "drop", "agree %",
            f"b1 {HOST_MS} p50/p90/p99", f"b1 {GPU_MS} p50", "b1 FPS"]
    for k in bkeys:
        head += [f"{k} {HOST_MS} p50", f"{k} {GPU_MS} p50", f"{k} FPS"]
    body = []
    for r in rows:
        status = r.status if not r.reason else f"{r.status}: {r.reason}"
        b1 = r.latency.get("b1")
        cells = [r.name, r.precision, r.backend, status, _fmt(r.size_mb), _fmt(r.miou), _fmt(r.drop), _fmt(r.agreement),
                 f"{b1['p50_ms']:.2f}/{b1['p90_ms']:.2f}/{b1['p99_ms']:.2f}" if b1 else "-", gpu_cell(b1),
                 _fmt(b1["fps"], 1) if b1 else "-"]
        for k in bkeys:
            lb = r.latency.get(k)
            cells += [_fmt(lb["p50_ms"]) if lb else "-", gpu_cell(lb), _fmt(lb["fps"], 1) if lb else "-"]
        body.append(cells)
    if any(isinstance(r.latency.get("b1", {}).get("power_w"), float) for r in rows):  # power measured: W, FPS/W
        head += ["b1 W", "b1 FPS/W"]
        for r, cells in zip(rows, body):
            b1 = r.latency.get("b1") or {}
            w, per = b1.get("power_w"), b1.get("fps_per_w")
            cells += [_fmt(w) if isinstance(w, float) else "-", _fmt(per) if isinstance(per, float) else "-"]
    if any(r.int8_budget for r in rows):  # a column only for exports made with --int8-budget
        head.insert(8, "float layers")
        for r, cells in zip(rows, body):
            cells.insert(8, float_cell(r))
    return head, body


def cpu_meta() -> dict[str, Any]:
    """This CPU for a report's meta (``meta["cpu"] = cpu_meta()``): model, cores, INT8 instruction set
    (AVX-512 VNNI, AVX-VNNI, AVX2, ARM dot-product, NEON or unknown), its ceiling vs FP32, and ``line``."""
    return detect().as_dict()


def on_cpu(rows: Sequence[Row], meta: dict[str, Any]) -> bool:
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
    state = meta.get("device_state")
    if isinstance(state, dict):  # power mode, clocks, temperatures before the timed runs; the power source during them
        lines += ["Device state before the timed runs:", *[f"- {line}" for line in state_lines(state)],
                  f"- power during the timed runs: {state.get('power_source', '-')}", ""]
    lines += [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in cells) + " |" for cells in body]
    lines += [f"- {r.name}: {r.detail}" for r in rows if r.detail]
    lines += [f"- {r.name}: {r.note}" for r in rows if r.note]
    lines += [f"- {budget_line(r)}" for r in rows if r.int8_budget]
    lines += [f"- {r.name}: GPU compute time {r.latency['b1']['gpu_note']}" for r in rows
              if str((r.latency.get("b1") or {}).get("gpu_note", "")).startswith("unknown")]
    lines += [f"- {r.name}: per-layer GPU times in {', '.join(r.layer_profile)}" for r in rows if r.layer_profile]
    lines += ["", LATENCY_NOTE]
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
    # lazy: matplotlib is slow to import (about 1 s) and only the plot needs it
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
    meta = {**meta, "gate_failed": bool(meta.get("failures"))}
    if "cpu" not in meta and on_cpu(rows, meta):  # CPU latencies: say which CPU and INT8 instruction set
        meta["cpu"] = cpu_meta()
    out = {"json": export_dir / "check.json", "md": export_dir / "check.md", "png": export_dir / "check.png"}
    doc = {"format": "rdd-edge-check", "version": 1, **meta, "rows": [r.as_dict() for r in rows]}
    write_json(out["json"], {**doc, SEAL_KEY: seal(doc)})  # demo runs only what this very report passed
    atomic_write_text(out["md"], to_markdown(rows, meta))
    plot(rows, out["png"], meta)
    return out
