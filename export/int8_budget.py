"""INT8 that keeps its accuracy by itself: calibration method by measurement, per-layer sensitivity,
and the fewest layers in float that bring the mIoU drop within a budget.

``plan_int8`` runs after ``quant_pre_process`` and the calibration (``export.int8``):

1. **Calibration method.** With a budget, every method ONNX Runtime offers (the requested one first)
   is tried from its own cache, all filled by one pass over the calibration images
   (``export.int8_calib``): both flavours are quantized in full and scored on the check images; the
   method with the smallest drop (the worse flavour's) wins. Without a budget, the requested method.
2. **Sensitivity** of every layer, per flavour (``export.int8_sensitivity``): the local-noise
   estimate for all layers, leave-one-out measured for the noisiest ``loo`` of them.
3. **Budget** (per flavour, :func:`fit_budget`): leave layers in float in the order of their measured
   cost (then the estimate's), one at a time, quantizing and scoring the file after each step; a
   layer that does not lower the drop is put back. Stop when the drop is within the budget. When
   single layers do not get there, **a group**: layers that only help together (each one alone in
   float gains nothing while the other still destroys the signal: two convs in a row, both inputs
   of an Add) are invisible to that greedy step and to leave-one-out. So the float set then grows in
   the estimate's order without putting anything back (cumulative), until the drop is within the
   budget, and a backward pass removes, newest first, every layer the budget is met without. Fail
   when neither reaches the budget with ``max_float`` layers in float. Every file is quantized and
   scored once (a set tried twice is read from memory: the leave-one-out files are the first steps).
4. **Final files** in the output folder, scored end to end like every artifact (the TensorRT file
   with its own float math: the steps above score its FP32-math twin, which ONNX Runtime runs
   several times faster on a CPU), and the CPU file's latency next to full INT8 and FP32, measured
   in this run on this CPU.

TensorRT Q/DQ files are not timed here: ONNX Runtime on a CPU runs them through int8 x int8
kernels and FP16 casts that say nothing about a TensorRT engine; ``rdd-edge check`` on the device
times the engine.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import onnx

from rdd_edge.cpuinfo import detect
from rdd_edge.deploy.latency import measure
from rdd_edge.deploy.preprocess import preprocess
from rdd_edge.errors import ExportError
from rdd_edge.export.int8_layers import float_convs, islands, quant_layers
from rdd_edge.export.int8_sensitivity import estimate, rank_by_noise, snr_db
from rdd_edge.export.parity import ort_session

FLAVOURS = ("int8-cpu", "int8")  # quantized in this order: the CPU file quantizes a superset of tensors
FLAVOUR_NAMES = {"int8-cpu": "int8-cpu (ONNX Runtime CPU)", "int8": "int8 (TensorRT Q/DQ)"}
MAX_FLOAT_SHARE = 0.10  # the budget may keep this share of the layers in float (at least MIN_FLOAT)
MIN_FLOAT = 2
LATENCY_MIN_TIME = 0.5  # seconds of timed runs per latency figure (and at least 10 runs)


class BudgetNotMet(ExportError):
    """``--int8-budget`` not reached with the float layers ``--int8-max-float`` allows (``budget``: the points);
    the export offers quantization-aware distillation (``rdd-edge qat``) in its place."""

    def __init__(self, message: str, budget: float) -> None:
        super().__init__(message)
        self.budget = budget


def default_max_float(n_layers: int) -> int:
    """How many layers a budget may keep in float: 10% of them, rounded up, at least 2."""
    return max(MIN_FLOAT, math.ceil(MAX_FLOAT_SHARE * n_layers))


def search_sizes(max_float: int | None, loo: int | None, n_layers: int, log: Callable[[str], None]) -> tuple[int, int]:
    """(layers a budget may keep in float, layers measured leave-one-out), each clamped to the graph's
    ``n_layers`` with a line saying so: more than every layer means every layer, never minutes of search."""
    cap = max_float if max_float is not None else default_max_float(n_layers)
    if cap > n_layers:
        log(f"  --int8-max-float {cap}: the graph has {n_layers} Conv layers; using {n_layers}")
        cap = n_layers
    if loo is not None and loo > n_layers:
        log(f"  --int8-loo {loo}: the graph has {n_layers} Conv layers; measuring all {n_layers} (as -1 does)")
    n_loo = min(cap, n_layers) if loo is None else (n_layers if loo < 0 else min(loo, n_layers))
    return cap, n_loo


def _points(score: dict, fp32: dict) -> float:
    """mIoU points lost vs FP32 (positive: worse)."""
    return 100.0 * (float(fp32["miou"] or 0.0) - float(score["miou"] or 0.0))


def _summary(score: dict, fp32: dict) -> dict:
    return {"miou": 100.0 * float(score["miou"] or 0.0), "drop": _points(score, fp32),
            "agreement": 100.0 * float(score.get("label_agreement", 1.0))}


def latency_ms(path: Path, x: np.ndarray, min_time: float = LATENCY_MIN_TIME) -> float:
    """Median batch-1 latency of an ONNX file in ONNX Runtime on this CPU (deploy's recipe: warm-up,
    a run count set by a minimum time, sigma clipping)."""
    sess = ort_session(path)
    name = sess.get_inputs()[0].name
    return measure(lambda: sess.run(None, {name: x}), batch=1, warmup=2, min_time=min_time, min_runs=10).p50_ms


class Planner:
    """Quantizes, scores and times candidate files of one export; keeps every figure for the report."""

    def __init__(self, prep: Path, onnx_path: Path, caches: dict[str, Path], scorer: Any, user_keep: Sequence[str],
                 trt_float: str, tmp: Path, log: Callable[[str], None], latency_input: np.ndarray | None,
                 min_time: float = LATENCY_MIN_TIME) -> None:
        self.prep, self.onnx_path, self.caches, self.scorer = prep, onnx_path, caches, scorer
        self.user_keep, self.trt_float, self.tmp, self.log = list(user_keep), trt_float, tmp, log
        self.model = onnx.load(str(prep))
        self.latency_input, self.min_time = latency_input, min_time
        self._n = 0
        self._tried: dict[tuple[str, str, frozenset], tuple[Path, dict]] = {}
        self.fp32 = scorer(onnx_path)
        self.base_float: dict[str, int] = {}  # per file: Convs in float in full INT8 (--keep-float)

    def quantize(self, flavour: str, method: str, floats: Sequence[str], out: Path | None = None,
                 real: bool = False) -> Path:
        """A file of ``flavour`` with the Convs ``floats`` (and their islands) in float; the TensorRT
        flavour with FP32 float math unless ``real`` (then the export's ``trt_float``)."""
        from rdd_edge.export.int8 import _method, _quantize  # lazy: import cycle int8 <-> int8_budget

        if out is None:
            self._n += 1
            out = self.tmp / f"cand-{self._n:03d}-{flavour}.onnx"
        exclude = list(dict.fromkeys([*self.user_keep, *islands(self.model, list(floats), flavour)]))
        _quantize(self.prep, out, flavour, _method(method), self.caches[method], None, exclude,
                  self.trt_float if real else "fp32")
        return out

    def score(self, path: Path) -> dict:
        return _summary(self.scorer(path), self.fp32)

    def float_convs(self, path: Path) -> list[str]:
        """The Convs of a file that run in float (what a layer's float island really left in float)."""
        return float_convs(onnx.load(str(path)))

    def trial(self, flavour: str, method: str, floats: Sequence[str]) -> tuple[Path, dict]:
        """The candidate file with ``floats`` in float and its score; each set is quantized and scored once."""
        key = (flavour, method, frozenset(floats))
        if key not in self._tried:
            path = self.quantize(flavour, method, floats)
            self._tried[key] = (path, self.score(path))
        return self._tried[key]

    def latency(self, path: Path) -> float | None:
        if self.latency_input is None:
            return None
        return round(latency_ms(path, self.latency_input, self.min_time), 3)


def choose_method(pl: Planner, methods: Sequence[str]) -> tuple[str, list[dict], dict[str, dict[str, Path]]]:
    """Full INT8 with each calibration method, both flavours scored; the smallest drop (the worse
    flavour's; ties: the higher agreement) wins. Returns (winner, rows, {method: {flavour: file}})."""
    rows, files = [], {}
    for m in methods:
        t = time.perf_counter()
        files[m] = {f: pl.quantize(f, m, []) for f in FLAVOURS}
        row: dict[str, Any] = {"method": m, "flavours": {f: pl.score(p) for f, p in files[m].items()}}
        row["flavours"]["int8-cpu"]["latency_ms"] = pl.latency(files[m]["int8-cpu"])
        row["worst_drop"] = max(v["drop"] for v in row["flavours"].values())
        row["seconds"] = round(time.perf_counter() - t, 1)
        rows.append(row)
        pl.log("  calibration " + m + ": " + ", ".join(
            f"{f} drop {v['drop']:.2f}, agree {v['agreement']:.1f}%" for f, v in row["flavours"].items()))
    best = min(rows, key=lambda r: (round(r["worst_drop"], 6), -min(v["agreement"] for v in r["flavours"].values())))
    for r in rows:
        r["chosen"] = r is best
    return best["method"], rows, files


def sensitivity(pl: Planner, method: str, full: dict[str, Path], full_scores: dict[str, dict], layers: list,
                loo: int, inputs: Callable[[], Any], model: Any = None,
                torch_inputs: Callable[[np.ndarray], np.ndarray] | None = None) -> dict[str, dict]:
    """Per flavour: the estimate for every layer, and leave-one-out measured for the ``loo`` it ranks highest."""
    t = time.perf_counter()
    est = estimate(pl.model, {f: onnx.load(str(p)) for f, p in full.items()}, layers, inputs(), model=model,
                   torch_inputs=torch_inputs)
    est_s = time.perf_counter() - t
    kind = "weighted" if model is not None else "local"
    pl.log(f"  sensitivity estimate ({kind}): {len(layers)} layers x {len(full)} files from cached activations "
           f"in {est_s:.1f} s")
    out = {}
    for f in FLAVOURS:
        t = time.perf_counter()
        score = est[f][kind]
        total = sum(v for v in score if v)
        order = rank_by_noise(score)
        measured: dict[int, dict] = {}
        for i in order[:loo]:
            if not score[i]:
                continue  # in float already (--keep-float), or nothing the estimate can see
            path, s = pl.trial(f, method, [layers[i].name])  # what quantizing the layer costs = what float gains back
            measured[i] = {"miou_gain": s["miou"] - full_scores[f]["miou"],
                           "agreement_gain": s["agreement"] - full_scores[f]["agreement"],
                           "drop": s["drop"], "agreement": s["agreement"], "float_convs": pl.float_convs(path),
                           "file": path}
        rows = []
        for i in range(len(layers)):
            m = measured.get(i)
            rows.append({"estimate": score[i], "share": (score[i] / total) if total and score[i] is not None else None,
                         "local_noise": est[f]["local"][i], "snr_db": snr_db(est[f]["local"][i]),
                         "loo": None if m is None else {k: v for k, v in m.items() if k != "file"}})
        out[f] = {"rows": rows, "order": order, "measured": measured, "estimator": kind,
                  "estimate_seconds": round(est_s, 1), "loo_seconds": round(time.perf_counter() - t, 1)}
        pl.log(f"  {f}: leave-one-out of the {len(measured)} layers the estimate ranks highest in "
               f"{out[f]['loo_seconds']:.1f} s")
    return out


def _better(s: dict, cur: dict) -> bool:
    """A lower drop, or the same drop with more pixels agreeing."""
    return s["drop"] < cur["drop"] - 1e-9 or (abs(s["drop"] - cur["drop"]) <= 1e-9 and s["agreement"] > cur["agreement"])


VERDICTS = {  # phase -> (kept in float, not kept): what the log says after each step
    "single": ("", " (no better: back to INT8)"),
    "group": (" (group: stays in float)", ""),
    "prune": (" (needed: stays in float)", " (not needed: back to INT8)"),
}


def fit_budget(pl: Planner, flavour: str, method: str, full_score: dict, sens: dict, layers: list,
               budget: float, max_float: int) -> dict:
    """The fewest layers whose float islands bring the drop within ``budget``: single layers first (greedy, by
    measured cost then estimate), then, if that falls short, a group (cumulative in the estimate's order, then
    pruned newest first); see the module docstring. Each step records its ``phase`` (single, group, prune), the
    float set it scored and whether its layer is in float afterwards (``kept``)."""
    measured = sens["measured"]
    rank = {i: r for r, i in enumerate(sens["order"])}  # ties of measured cost: the estimate's order
    by_cost = sorted(measured, key=lambda i: (-measured[i]["miou_gain"], -measured[i]["agreement_gain"], rank.get(i, i)))
    order = [*by_cost, *(i for i in sens["order"] if i not in measured and sens["rows"][i]["estimate"])]
    steps: list[dict] = []

    def step(phase: str, layer: int, trial: list[int], keep: Callable[[dict], bool]) -> tuple[dict, bool]:
        """Score ``trial`` in float, record the step; returns (score, whether ``layer`` is in float afterwards)."""
        path, s = pl.trial(flavour, method, [layers[j].name for j in trial])
        n_float = len(pl.float_convs(path)) - pl.base_float.get(flavour, 0)
        fits = n_float <= max_float  # a float island may take other Convs along (int8-cpu: a shared input)
        in_float = keep(s) if fits else phase == "prune"  # an over-sized set is not taken (pruning: the layer stays)
        steps.append({"phase": phase, "layer": layers[layer].name, "float": [layers[j].name for j in trial],
                      "float_convs": n_float, **s, "kept": in_float, **({} if fits else {"over_max_float": True}),
                      "latency_ms": pl.latency(path) if flavour == "int8-cpu" and in_float and phase == "single" else None})
        note = VERDICTS[phase][0 if in_float else 1] if fits else f" ({n_float} Convs in float > {max_float}: back to INT8)"
        pl.log(f"  {flavour}: {'-' if phase == 'prune' else '+'} {layers[layer].name} in float -> drop {s['drop']:.2f}, "
               f"agree {s['agreement']:.1f}%{note}")
        return s, in_float

    # 1. single layers: a layer stays in float only if the drop goes down
    kept: list[int] = []
    cur = dict(full_score)
    for n, i in enumerate(order):
        if cur["drop"] <= budget or len(kept) >= max_float or n >= 2 * max_float:
            break
        s, ok = step("single", i, [*kept, i], lambda s: _better(s, cur))
        if ok:
            kept, cur = [*kept, i], s
    if cur["drop"] <= budget or len(kept) >= max_float:
        return {"kept": kept, "score": cur, "steps": steps, "met": cur["drop"] <= budget, "search": "single"}

    # 2. a group: grow in the estimate's order, putting nothing back, until the budget is met
    group, gscore = list(kept), dict(cur)
    rest = [j for j in sens["order"] if sens["rows"][j]["estimate"] and j not in kept]
    pl.log(f"  {flavour}: single layers fall short of --int8-budget {budget:g}: a group, in the estimate's order")
    for n, i in enumerate(rest):
        if gscore["drop"] <= budget or len(group) >= max_float or n >= 2 * max_float:
            break
        s, ok = step("group", i, [*group, i], lambda s: True)
        if ok:
            group, gscore = [*group, i], s
    if gscore["drop"] > budget:
        return {"kept": kept, "score": cur, "steps": steps, "met": False, "search": "group"}

    # 3. prune, newest first: a layer the budget is met without goes back to INT8
    for i in reversed(list(group)):
        if len(group) == 1:
            break
        trial = [j for j in group if j != i]
        s, needed = step("prune", i, trial, lambda s: s["drop"] > budget)
        if not needed:
            group, gscore = trial, s
    return {"kept": group, "score": gscore, "steps": steps, "met": True, "search": "group"}


def plan_int8(prep: Path, onnx_path: Path, out_files: dict[str, Path], caches: dict[str, Path], method: str,
              methods: Sequence[str], scorer: Any, user_keep: Sequence[str], trt_float: str, budget: float | None,
              max_float: int | None, loo: int | None, log: Callable[[str], None], measure_latency: bool = True,
              latency_min_time: float = LATENCY_MIN_TIME, model: Any = None,
              torch_inputs: Callable[[np.ndarray], np.ndarray] | None = None) -> dict:
    """Everything above; writes the two final files ``out_files`` and returns the report (a dict)."""
    t0 = time.perf_counter()
    layers = quant_layers(onnx.load(str(prep)))
    if not layers:
        raise ExportError(f"{onnx_path}: no Conv layer to quantize")
    cap, n_loo = search_sizes(max_float, loo, len(layers), log)

    def inputs():
        return (preprocess(im, scorer.size, scorer.normalization, embedded=scorer.embedded) for im in scorer.images)

    x0 = next(iter(inputs())) if measure_latency else None
    with tempfile.TemporaryDirectory(prefix="rdd-int8-plan-") as tmp:
        pl = Planner(prep, onnx_path, caches, scorer, user_keep, trt_float, Path(tmp), log, x0, latency_min_time)
        fp32_latency = pl.latency(onnx_path)
        tried = list(dict.fromkeys([method, *methods])) if budget is not None else [method]
        winner, method_rows, files = choose_method(pl, tried)
        full_scores = {f: r for f, r in next(r for r in method_rows if r["method"] == winner)["flavours"].items()}
        if budget is not None and len(tried) > 1:
            log(f"  calibration: {winner} has the smallest drop of {', '.join(tried)}")
        pl.base_float = {f: len(pl.float_convs(p)) for f, p in files[winner].items()}
        sens = sensitivity(pl, winner, files[winner], full_scores, layers, n_loo, inputs, model, torch_inputs)
        fits: dict[str, dict] = {}
        for f in FLAVOURS:
            if budget is None:
                fits[f] = {"kept": [], "score": full_scores[f], "steps": [], "met": None, "search": None}
            else:
                fits[f] = fit_budget(pl, f, winner, full_scores[f], sens[f], layers, budget, cap)
        failed = [f for f in FLAVOURS if budget is not None and not fits[f]["met"]]
        if failed:
            f = failed[0]
            raise BudgetNotMet(
                f"--int8-budget {budget:g}: {f} still loses {fits[f]['score']['drop']:.2f} mIoU points with "
                f"{len(fits[f]['kept'])} of {len(layers)} layers in float (at most {cap}, --int8-max-float; full INT8 "
                f"lost {full_scores[f]['drop']:.2f} with {winner} calibration, the best of {', '.join(tried)}); try more "
                f"calibration images (--calib), more layers in float (--int8-max-float), or a larger --int8-budget", budget)
        # the final files, end to end: the CPU file as scored, the TensorRT file with its own float math
        final: dict[str, dict] = {}
        for f in FLAVOURS:
            floats = [layers[i].name for i in fits[f]["kept"]]
            path = pl.quantize(f, winner, floats, out=out_files[f], real=True)
            qm = onnx.load(str(path))
            lost = [c for c in floats if c not in float_convs(qm)]
            if lost:
                raise ExportError(f"{path.name}: {', '.join(lost)} should run in float but still reads a DequantizeLinear")
            s = pl.score(path)
            final[f] = {"file": path.name, "float_layers": floats, "excluded_nodes": islands(pl.model, floats, f),
                        "float_convs": [c for c in float_convs(qm) if c not in user_keep], **s,
                        "latency_ms": pl.latency(path) if f == "int8-cpu" else None}
            if budget is not None and s["drop"] > budget:
                raise ExportError(f"--int8-budget {budget:g}: {path.name} loses {s['drop']:.2f} mIoU points with its "
                                  f"{trt_float.upper()} float math (its FP32-math twin: {fits[f]['score']['drop']:.2f}); "
                                  "try --int8-float fp32 or a larger --int8-budget")
    return {
        "format": "rdd-edge-int8-sensitivity", "version": 1,
        "check_images": len(scorer.images), "fp32": {"miou": 100.0 * float(pl.fp32["miou"] or 0.0), "latency_ms": fp32_latency},
        "budget": budget, "max_float": cap, "loo_layers": n_loo, "trt_float": trt_float,
        "calibration": {"tried": tried, "chosen": winner, "methods": method_rows},
        "layers": [l.as_dict() for l in layers],
        "flavours": {f: {"full": full_scores[f], "estimator": sens[f]["estimator"], "sensitivity": sens[f]["rows"],
                         "steps": fits[f]["steps"], "search": fits[f]["search"],
                         "final": final[f], "met": fits[f]["met"],
                         "seconds": {"estimate": sens[f]["estimate_seconds"], "leave_one_out": sens[f]["loo_seconds"]}}
                     for f in FLAVOURS},
        "cpu": _cpu() if measure_latency else None,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _cpu() -> dict:
    return detect().as_dict()
