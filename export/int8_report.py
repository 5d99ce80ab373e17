"""The INT8 sensitivity report people read: a table for an 80-column terminal, a JSON file, a picture.

Input is the plan ``export.int8_budget.plan_int8`` returns. Per layer, in network order: its share of
the estimated INT8 damage (``export.int8_sensitivity``) and, for the layers measured leave-one-out,
what quantizing it costs (mIoU points / points of pixel agreement with FP32 gained back when it
alone stays in float), for both files; the layers the budget kept in float are marked ``F``.
Then, per file, what the budget did: the drop before and after, the layers in float, and the CPU
file's latency next to full INT8 and FP32 (measured in the same run, on the CPU named).
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, Sequence

from rdd_edge.runs import atomic_path, write_json

FILES = {"json": "int8-sensitivity.json", "png": "int8-sensitivity.png"}
SHORT = {"int8-cpu": "int8-cpu", "int8": "int8 (TensorRT)"}
WIDTH = 80


def _fit_name(name: str, width: int) -> str:
    """A node name cut to ``width`` from the middle (``~`` marks the cut)."""
    if len(name) <= width:
        return name
    head = (width - 1) // 2
    return name[:head] + "~" + name[len(name) - (width - 1 - head):]


def _share(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.0f}" if v >= 0.005 else ("<1" if v > 0 else "0")


def _cost(loo: dict | None) -> str:
    return "-" if not loo else f"{loo['miou_gain']:+6.2f}/{loo['agreement_gain']:+5.1f}"


def label(layer: dict) -> str:
    """How a layer is named to people: its torch module (``head.classifier``), else its ONNX node."""
    return layer.get("module") or layer["name"]


def _label_of(plan: dict, node: str) -> str:
    """The :func:`label` of the layer whose Conv node is ``node``."""
    return next((label(l) for l in plan["layers"] if l["name"] == node), node)


def _labels(plan: dict, nodes: Sequence[str]) -> list[str]:
    """``head.classifier (node_conv2d_11)`` per node: the module to recognise, the node --keep-float takes."""
    return [n if _label_of(plan, n) == n else f"{_label_of(plan, n)} ({n})" for n in nodes]


def _kept(plan: dict, flavour: str) -> set[str]:
    return set(plan["flavours"][flavour]["final"]["float_layers"])


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


STEP_NOTES = {  # phase -> (the layer in float after the step, back in INT8)
    "single": ("", " (no gain, dropped)"),
    "group": (" (group)", " (group, over max-float)"),
    "prune": (" (needed)", " (not needed)"),
}


def _step(plan: dict, s: dict) -> str:
    """One budget step: ``+head.classifier 0.41`` (single layer), ``(group)`` when a group grows, ``-`` when pruned."""
    phase = s.get("phase", "single")
    return (f"{'-' if phase == 'prune' else '+'}{_label_of(plan, s['layer'])} {s['drop']:.2f}"
            + (f" {s['latency_ms']:.1f} ms" if s.get("latency_ms") else "") + STEP_NOTES[phase][0 if s["kept"] else 1])


def summary_lines(plan: dict, width: int = WIDTH) -> list[str]:
    """What the budget did, per file, wrapped to ``width``."""
    out: list[str] = []
    budget = plan.get("budget")
    n = len(plan["layers"])
    fp32_ms = plan["fp32"].get("latency_ms")
    for f, v in plan["flavours"].items():
        full, fin = v["full"], v["final"]
        floats = fin["float_layers"]
        head = (f"{SHORT[f]}: full INT8 drop {full['drop']:.2f} (agree {full['agreement']:.1f}%)"
                + (f" -> {fin['drop']:.2f} (agree {fin['agreement']:.1f}%) with {len(floats)} of {n} layers in float"
                   + (f": {', '.join(_labels(plan, floats))}" if floats else "") if budget is not None
                   else f"; final file drop {fin['drop']:.2f}"))
        out += textwrap.wrap(head, width, subsequent_indent="  ")
        if f == "int8-cpu":
            same = budget is not None and not floats  # no layer in float: the full INT8 file itself, timed twice
            lat = (f"latency, ms (ORT, batch 1, p50): FP32 {_ms(fp32_ms)}, full INT8 {_ms(full.get('latency_ms'))}"
                   + (", budgeted = full INT8 (no layer in float: the same file)" if same else
                      f", budgeted {_ms(fin.get('latency_ms'))}" if budget is not None else ""))
            if full.get("latency_ms") and fin.get("latency_ms") and budget is not None and not same:
                lat += f" ({100 * (fin['latency_ms'] / full['latency_ms'] - 1):+.0f}% vs full INT8)"
            out += textwrap.wrap(lat, width, initial_indent="  ", subsequent_indent="  ")
        else:
            out += textwrap.wrap("latency: not timed here (a TensorRT file: `rdd-edge check` times its engine "
                                 "on the device)", width, initial_indent="  ", subsequent_indent="  ")
        if v["steps"]:
            out += textwrap.wrap(f"steps (drop after each): {', '.join(_step(plan, s) for s in v['steps'])}", width,
                                 initial_indent="  ", subsequent_indent="  ")
    return out


def qad_lines(qad: dict, width: int = WIDTH) -> list[str]:
    """What quantization-aware distillation (``rdd-edge qat``, the manifest's ``qad``) did, per file: drop and
    agreement with FP32 before (PTQ, same float layers) and after."""
    head = (f"QAD: {qad['iterations']} steps (lr {qad['lr']:g}, teacher {Path(str(qad['teacher'])).name if qad['teacher'] != 'self' else 'its own FP32 student'}), "
            f"loss {qad['loss']['first']:.3f} -> {qad['loss']['last']:.3f}")
    out = textwrap.wrap(head, width)
    eq = qad.get("equalized")
    if eq:
        out += textwrap.wrap(f"equalized first ({len(eq['chains'])} Conv -> ReLU -> Conv chains, calibrated again): "
                             + ", ".join(f"{SHORT.get(f, f)} drop {v['drop']:.2f} (agree {v['agreement']:.1f}%)"
                                         for f, v in eq["files"].items()), width, initial_indent="  ", subsequent_indent="    ")
    for f, v in qad["files"].items():
        b, a = v["before"], v["after"]
        out += textwrap.wrap(f"{SHORT.get(f, f)}: PTQ drop {b['drop']:.2f} (agree {b['agreement']:.1f}%) -> QAD "
                             f"{a['drop']:.2f} (agree {a['agreement']:.1f}%)", width, initial_indent="  ",
                             subsequent_indent="    ")
    return out


def format_table(plan: dict, width: int = WIDTH) -> str:
    """The report as text, every line at most ``width`` columns."""
    layers = plan["layers"]
    flavours = list(plan["flavours"])
    kinds = max([len(l["kind"]) for l in layers] + [4])
    per = 1 + 4 + 1 + 12 + 1 + 1  # " est%  cost mIoU/agree F" per file
    name_w = max(5, min(max(len(label(l)) for l in layers), width - (3 + 1 + 1 + kinds + per * len(flavours))))
    cal = plan["calibration"]
    tried = ", ".join(f"{r['method']} {max(x['drop'] for x in r['flavours'].values()):.2f}" for r in cal["methods"])
    lines = textwrap.wrap(f"INT8 sensitivity: {plan.get('model_name') or 'model'}"
                          + (f" {plan['input_size'][0]}x{plan['input_size'][1]}" if plan.get("input_size") else "")
                          + f", {plan['check_images']} check images, FP32 mIoU {plan['fp32']['miou']:.2f}", width)
    lines += textwrap.wrap(f"calibration: {cal['chosen']}" + (f" (worst drop of the files: {tried})" if len(cal["methods"]) > 1 else ""),
                           width)
    est = next(iter(plan["flavours"].values())).get("estimator", "local")
    lines += textwrap.wrap("est%: the layer's share of the estimated INT8 damage, every layer ("
                           + ("its quantization noise weighted by the loss gradient" if est == "weighted" else
                              "its quantization noise relative to its signal")
                           + ", from cached activations). cost: mIoU points / points of pixel agreement with FP32 won "
                           f"back when the layer alone stays in float, measured for the {plan['loo_layers']} layers the "
                           "estimate ranks highest. F: kept in float"
                           + (f" by --int8-budget {plan['budget']:g}." if plan.get("budget") is not None else "."), width)
    pad = " " * (3 + 1 + name_w + 1 + kinds)
    lines.append((pad + "".join(f" {SHORT[f]:<{per - 1}}" for f in flavours)).rstrip())
    lines.append((f"{'#':>3} {'layer':<{name_w}} {'kind':<{kinds}}"
                  + "".join(f" {'est%':>4} {'cost':>12}  " for _ in flavours)).rstrip())
    for i, l in enumerate(layers):
        cells = f"{i:>3} {_fit_name(label(l), name_w):<{name_w}} {l['kind']:<{kinds}}"
        for f in flavours:
            row = plan["flavours"][f]["sensitivity"][i]
            cells += f" {_share(row['share']):>4} {_cost(row['loo']):>12} {'F' if l['name'] in _kept(plan, f) else ' '}"
        lines.append(cells.rstrip())
    lines += summary_lines(plan, width)
    if plan.get("qad"):
        lines += qad_lines(plan["qad"], width)
    cpu = plan.get("cpu") or {}
    if cpu.get("line"):
        lines += textwrap.wrap(f"CPU: {cpu['line']}", width)
    return "\n".join(lines)


def budget_record(plan: dict, flavour: str, paths: dict[str, Path]) -> dict[str, Any]:
    """What the manifest says about one INT8 file: budget, layers in float, drop before and after, latency."""
    v = plan["flavours"][flavour]
    full, fin = v["full"], v["final"]
    rec = {"budget": plan.get("budget"), "calibration": plan["calibration"]["chosen"],
           "calibration_tried": plan["calibration"]["tried"], "layers": len(plan["layers"]),
           "float_layers": fin["float_layers"], "float_modules": _labels(plan, fin["float_layers"]),
           "search": v.get("search"),  # single: one layer at a time was enough; group: the layers only help together
           "excluded_nodes": fin["excluded_nodes"],
           "drop_full": round(full["drop"], 4), "drop": round(fin["drop"], 4),
           "agreement_full": round(full["agreement"], 4), "agreement": round(fin["agreement"], 4),
           "check_images": plan["check_images"], "report": {k: p.name for k, p in paths.items()}}
    if flavour == "int8-cpu":
        rec["latency_ms"] = {"fp32": plan["fp32"].get("latency_ms"), "full": full.get("latency_ms"),
                             "budgeted": fin.get("latency_ms")}
        cpu = plan.get("cpu") or {}
        if cpu.get("model"):  # where the latencies were measured: "AMD EPYC, 2 cores, AVX2"
            rec["cpu"] = f"{cpu['model']}, {cpu.get('cores', '?')} cores, {cpu.get('isa', 'unknown ISA')}"
    return rec


def write_report(plan: dict, out_dir: Path, model_name: str | None = None, size: Sequence[int] | None = None) -> dict[str, Path]:
    """``int8-sensitivity.json`` and ``int8-sensitivity.png`` in ``out_dir`` (atomically)."""
    if model_name is not None:
        plan["model_name"] = model_name
    if size is not None:
        plan["input_size"] = list(size)
    paths = {k: Path(out_dir) / v for k, v in FILES.items()}
    write_json(paths["json"], plan)
    plot(plan, paths["png"])
    return paths


def plot(plan: dict, path: Path) -> Path:
    """One panel per file: layers in network order on x; bars: measured cost (mIoU points won back in
    float; orange: kept in float); grey dots (right axis): the estimate's share per layer; dashed
    red: the budget line (the points to win back); the worst layers named."""
    # lazy: matplotlib is slow to import (about 1 s); the CLI imports this module for format_table
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    layers = plan["layers"]
    n = len(layers)
    flavours = list(plan["flavours"])
    fig, axes = plt.subplots(len(flavours), 1, figsize=(min(16.0, max(9.0, 0.16 * n + 3)), 3.4 * len(flavours) + 1.1),
                             dpi=110, squeeze=False)
    budget = plan.get("budget")
    for ax, f in zip(axes[:, 0], flavours):
        v = plan["flavours"][f]
        rows = v["sensitivity"]
        kept = _kept(plan, f)
        xs = list(range(n))
        gains = [(r["loo"] or {}).get("miou_gain") for r in rows]
        colours = ["tab:orange" if layers[i]["name"] in kept else "tab:blue" for i in xs]
        ax.bar([i for i in xs if gains[i] is not None], [g for g in gains if g is not None],
               color=[c for c, g in zip(colours, gains) if g is not None], width=0.8, zorder=3)
        ax.axhline(0, color="0.3", lw=0.8)
        need = v["full"]["drop"] - budget if budget is not None else None
        if need is not None and need > 0:
            ax.axhline(need, color="tab:red", ls="--", lw=1.2, zorder=4)
            ax.text(n - 0.5, need, f" budget {budget:g}: {need:.2f} points to win back ", color="tab:red", fontsize=8,
                    ha="right", va="bottom", zorder=5, bbox=dict(fc="white", ec="none", alpha=0.8, pad=1))
        top = max([g for g in gains if g is not None] + [need or 0.0, 0.1])
        low = min([g for g in gains if g is not None] + [0.0])
        ax.set_ylim(low - 0.08 * (top - low), top * 1.35 + 0.02)
        ax.set_xlim(-0.8, n - 0.2)
        ax.set_ylabel("cost: mIoU points\nwon back in float", fontsize=8.5)
        ax.grid(axis="y", alpha=0.3, zorder=0)
        ax2 = ax.twinx()
        share = [100 * r["share"] if r.get("share") is not None else None for r in rows]
        ax2.scatter([i for i in xs if share[i] is not None], [s for s in share if s is not None], s=14, color="0.4",
                    zorder=2, marker="o")
        ax2.set_ylim(0, max([s for s in share if s is not None] + [1.0]) * 1.35)
        ax2.set_ylabel("estimate: share of\nINT8 damage (%)", fontsize=8.5, color="0.35")
        ax2.tick_params(axis="y", labelsize=8, colors="0.35")
        # name the layers that matter: those in float and the three costliest (that cost anything)
        measured = {i: float(g) for i, g in enumerate(gains) if g is not None}
        costly = sorted((i for i in measured if measured[i] > 0), key=lambda i: -measured[i])[:3]  # gains, not noise
        named = sorted(set(costly) | {i for i in xs if layers[i]["name"] in kept})
        step = max(1, n // 20)
        numbered = [i for i in range(0, n, step) if all(abs(i - j) > step // 2 for j in named)]  # room for names
        ticks = sorted(set(numbered) | set(named))
        ax.set_xticks(ticks)
        # the layers that matter are named on the axis, clear of the bars: "11 head.classifier (F)"
        texts = ax.set_xticklabels([f"{i} {label(layers[i])}" + (" (F)" if layers[i]["name"] in kept else "")
                                    if i in named else str(i) for i in ticks], fontsize=7.5)
        for i, t in zip(ticks, texts):
            if i in named:
                t.set_rotation(30)
                t.set_horizontalalignment("right")
                t.set_rotation_mode("anchor")
                t.set_color("tab:orange" if layers[i]["name"] in kept else "black")
        full, fin = v["full"], v["final"]
        title = f"{SHORT[f]}: full INT8 loses {full['drop']:.2f} mIoU ({full['agreement']:.1f}% pixels agree)"
        if budget is not None:
            title += f" -> {fin['drop']:.2f} ({fin['agreement']:.1f}%) with {len(kept)} of {n} layers in float"
        qad = (plan.get("qad") or {}).get("files", {}).get(f)
        if qad:
            title += (f"\nQAD ({plan['qad']['iterations']} steps): PTQ {qad['before']['drop']:.2f} "
                      f"({qad['before']['agreement']:.1f}%) -> {qad['after']['drop']:.2f} ({qad['after']['agreement']:.1f}%)")
        if f == "int8-cpu" and full.get("latency_ms"):
            title += (f"\nCPU latency p50: FP32 {_ms(plan['fp32'].get('latency_ms'))} ms, full INT8 {_ms(full['latency_ms'])} ms"
                      + (f", budgeted {_ms(fin.get('latency_ms'))} ms" if budget is not None else ""))
        ax.set_title(title, fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("layer (Conv), in network order", fontsize=9)
    cpu = (plan.get("cpu") or {})
    head = (f"INT8 sensitivity: {plan.get('model_name') or ''} "
            + (f"{plan['input_size'][0]}x{plan['input_size'][1]}, " if plan.get("input_size") else "")
            + f"{plan['check_images']} check images, calibration {plan['calibration']['chosen']}"
            + (f" | CPU {cpu.get('model')} ({cpu.get('isa')})" if cpu.get("model") else ""))
    fig.suptitle(head, fontsize=10, x=0.01, ha="left")
    handles = [Patch(color="tab:blue", label="cost, measured leave-one-out"), Patch(color="tab:orange", label="kept in float"),
               Line2D([], [], ls="", marker="o", color="0.4", markersize=4, label="estimate, every layer (right axis)")]
    if budget is not None:
        handles.append(Line2D([], [], color="tab:red", ls="--", label="budget: points to win back"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 0.96))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Title": head, "Software": "rdd-edge"})
    plt.close(fig)
    return path
