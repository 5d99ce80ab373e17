"""Reporting of the CamVid protocol: per-run records, mean ± spread over seeds, results and curves.

``record_of`` makes one run's record from the trainer's summary and logs; ``aggregate`` /
``gains`` reduce the records to the main rows (mean ± sample std over seeds) and the gains of
KD and RDD; ``write_results`` writes ``results.json``, ``results.md`` (``results_markdown``)
and ``curves_main.png`` / ``curves_ablations.png`` (``plot_curves``) into ``--out``.
"""

from __future__ import annotations

import csv
import math
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np

from benchmarks.camvid_plan import ABLATION_STUDENT, WAYS, RunSpec
from rdd_edge.runs import atomic_path, atomic_write_text, write_json

# The paper's CamVid mIoU (METHOD.md; ImageNet-initialised backbones, 40k iterations), on the 233-image
# test split: the released eval.py scores CamVid on camvid_test_list.txt.
PAPER_CAMVID = [
    # student, baseline, +CIRKD, +RDD, teacher
    ("DeepLabV3-R18", 66.92, 68.21, 68.55, 69.84),
    ("PSPNet-R18", 66.73, 68.65, 68.77, None),
]
SCRATCH_NOTE = (
    "All runs start from scratch: no ImageNet weights can be downloaded here, so absolute mIoU is far "
    "below the paper's ImageNet-initialised numbers; compare the ways with each other. (On Cityscapes the "
    "paper's DeepLabV3-R18 without ImageNet init gained +4.61 mIoU with RDD: 65.17 -> 69.78.)"
)


def mean_spread(values: Sequence[float]) -> dict:
    """Mean, sample std (ddof=1; 0 for one value), min, max and n of ``values`` (NaNs dropped)."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=np.float64)
    if v.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()), "n": int(v.size)}


def aggregate(records: Sequence[dict]) -> list[dict]:
    """Main rows: per (student, way), best / final mIoU mean ± spread over seeds, wall time and images/s."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        if r.get("group") == "main":
            groups.setdefault((r["model"], r["way"]), []).append(r)
    rows = []
    for model in [m for m in dict.fromkeys(r["model"] for r in records if r.get("group") == "main")]:
        for way in WAYS:
            rs = groups.get((model, way))
            if not rs:
                continue
            rows.append({"model": model, "way": way, "seeds": sorted(r["seed"] for r in rs),
                         "best_miou": mean_spread([r["best_miou"] for r in rs]),
                         "final_miou": mean_spread([r["final_miou"] for r in rs]),
                         "test_miou": mean_spread([(r.get("eval_data") or {}).get("test") for r in rs]),
                         "wall_s": mean_spread([r["wall_s"] for r in rs]),
                         "images_per_s": mean_spread([r["images_per_s"] for r in rs])})
    return rows


def gains(rows: Sequence[dict], key: str = "best_miou") -> list[dict]:
    """Per student: KD - alone, RDD - alone, RDD - KD (mIoU points of the seed means) and the targets."""
    by = {(r["model"], r["way"]): r[key]["mean"] for r in rows}
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        a, k, d = by.get((model, "alone")), by.get((model, "kd")), by.get((model, "kd+rdd"))
        pts = lambda x, y: None if x is None or y is None else 100.0 * (x - y)  # noqa: E731
        out.append({"model": model, "kd_vs_alone": pts(k, a), "rdd_vs_alone": pts(d, a), "rdd_vs_kd": pts(d, k),
                    "order_ok": None if None in (a, k, d) else bool(d > k > a),
                    "gain_ok": None if None in (a, d) else bool(100.0 * (d - a) >= 1.6)})
    return out


def _pm(s: dict, scale: float = 100.0, digits: int = 2) -> str:
    if s.get("mean") is None:
        return "-"
    if s["n"] > 1:
        return f"{scale * s['mean']:.{digits}f} ± {scale * s['std']:.{digits}f}"
    return f"{scale * s['mean']:.{digits}f}"


def _num(x: float | None, fmt: str = "{:.2f}", scale: float = 1.0) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(scale * x)


def results_markdown(records: Sequence[dict], meta: dict) -> str:
    """The results page: settings, main rows (mean ± std over seeds), gains, ablations, every run, the paper."""
    rows = aggregate(records)
    lines = [f"# CamVid: RDD vs KD vs the student alone ({meta.get('date', '')})", "",
             f"- device: {meta.get('device', '?')}; command: `{meta.get('command', '')}`",
             f"- schedule: student {meta.get('iters')} its, teacher {meta.get('teacher_iters')} its, batch "
             f"{meta.get('batch')}, crop {meta.get('crop')}, validation at full 360x480 on val; seeds {meta.get('seeds')}",
             f"- final weights scored on: {meta['eval_data']}" if meta.get("eval_data")
             else f"- {meta.get('note') or 'no test split: scored on val only'}",
             f"- {SCRATCH_NOTE}", ""]
    test = any(r["test_miou"]["n"] for r in rows)
    lines += ["## Main rows (val mIoU" + (", and test mIoU of the final weights" if test else "") + ", mean ± std over seeds)", "",
              "| student | way | seeds | best val mIoU | final val mIoU |" + (" final test mIoU |" if test else "")
              + " wall s | train img/s |", "|---|---|---|---|---|---|---|" + ("---|" if test else "")]
    for r in rows:
        lines.append(f"| {r['model']} | {r['way']} | {len(r['seeds'])} | {_pm(r['best_miou'])} | {_pm(r['final_miou'])} "
                     + (f"| {_pm(r['test_miou'])} " if test else "")
                     + f"| {_pm(r['wall_s'], 1.0, 0)} | {_pm(r['images_per_s'], 1.0, 0)} |")
    g = gains(rows)
    if g:
        lines += ["", "## Gains (mIoU points of the best-mIoU means; targets: RDD > KD > alone, RDD - alone >= 1.6)", "",
                  "| student | KD - alone | RDD - alone | RDD - KD | RDD > KD > alone | RDD - alone >= 1.6 |",
                  "|---|---|---|---|---|---|"]
        yn = lambda b: "-" if b is None else ("yes" if b else "no")  # noqa: E731
        for x in g:
            lines.append(f"| {x['model']} | {_num(x['kd_vs_alone'], '{:+.2f}')} | {_num(x['rdd_vs_alone'], '{:+.2f}')} "
                         f"| {_num(x['rdd_vs_kd'], '{:+.2f}')} | {yn(x['order_ok'])} | {yn(x['gain_ok'])} |")
    abl = [r for r in records if r.get("group") == "ablation" or
           (r.get("model") == ABLATION_STUDENT and r.get("way") == "kd+rdd" and r.get("group") == "main")]
    if any(r.get("group") == "ablation" for r in records):
        lines += ["", f"## Ablations ({ABLATION_STUDENT}, KD + RDD; default xor, t 0.7, TFE 0.1)", "",
                  "| variant | mode | threshold | TFE | seed | best mIoU | final mIoU |", "|---|---|---|---|---|---|---|"]
        for r in sorted(abl, key=lambda r: (r["seed"], r.get("label") or "")):
            lines.append(f"| {r.get('label') or 'default'} | {r['rdd_mode']} | {r['threshold']} | {r['tfe']} | {r['seed']} "
                         f"| {_num(r['best_miou'], '{:.2f}', 100)} | {_num(r['final_miou'], '{:.2f}', 100)} |")
    eval_keys = sorted({k for r in records for k in (r.get("eval_data") or {})})
    lines += ["", "## Every run", "",
              "| run | student | way | mode | t | TFE | seed | iters | best mIoU | final mIoU | wall s | img/s |"
              + "".join(f" {k} |" for k in eval_keys),
              "|---|---|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(eval_keys)]
    for r in records:
        extra = "".join(f" {_num((r.get('eval_data') or {}).get(k), '{:.2f}', 100)} |" for k in eval_keys)
        rdd_cols = (r["rdd_mode"], r["threshold"], r["tfe"]) if r["way"] == "kd+rdd" else ("-", "-", "-")
        lines.append(f"| {r['id']} | {r['model']} | {r['way']} | {rdd_cols[0]} | {rdd_cols[1]} | {rdd_cols[2]} | {r['seed']} "
                     f"| {r['steps']} | {_num(r['best_miou'], '{:.2f}', 100)} | {_num(r['final_miou'], '{:.2f}', 100)} "
                     f"| {_num(r['wall_s'], '{:.0f}')} | {_num(r['images_per_s'], '{:.3g}')} |{extra}")
    lines += ["", "## The paper's CamVid numbers: test mIoU (233 images; METHOD.md; ImageNet init, 40k its, 360x360, batch 16)", "",
              "| student | baseline | +CIRKD | +RDD | teacher (R101) |", "|---|---|---|---|---|"]
    for name, base, cirkd, rdd, teacher in PAPER_CAMVID:
        lines.append(f"| {name} | {base} | {cirkd} | {rdd} | {teacher if teacher is not None else '-'} |")
    lines += ["", "Training curves: `curves_main.png`, `curves_ablations.png`.", ""]
    return "\n".join(lines)


def read_log(path: Path, x: str, y: str) -> tuple[list[float], list[float]]:
    """Two columns of a train_log.csv / val_log.csv (empty when the file is missing)."""
    if not path.is_file():
        return [], []
    xs, ys = [], []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                xs.append(float(row[x]))
                ys.append(float(row[y]))
            except (KeyError, TypeError, ValueError):
                continue
    return xs, ys


def plot_curves(records: Sequence[dict], out: Path, group: str) -> Path | None:
    """Val mIoU and train loss against the iteration, one row per student (main) or one row (ablations)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if group == "main":
        recs = [r for r in records if r.get("group") in ("main", "teacher")]
    else:
        recs = [r for r in records if r.get("group") == "ablation"
                or (r.get("group") == "main" and r["model"] == ABLATION_STUDENT and r["way"] == "kd+rdd")]
    if not recs or (group != "main" and not any(r.get("group") == "ablation" for r in recs)):
        return None
    models = list(dict.fromkeys(r["model"] for r in recs if r["group"] != "teacher")) if group == "main" else [ABLATION_STUDENT]
    teacher = [r for r in recs if r["group"] == "teacher"]
    fig, axes = plt.subplots(max(1, len(models)), 2, figsize=(11, 3.2 * max(1, len(models))), squeeze=False)
    colours = {"alone": "tab:gray", "kd": "tab:blue", "kd+rdd": "tab:red"}
    styles = ["-", "--", ":", "-."]
    for row, model in enumerate(models):
        ax_m, ax_l = axes[row]
        mine = [r for r in recs if r["model"] == model]
        for k, r in enumerate(mine):
            log_dir = Path(r["log_dir"])
            if group == "main":
                colour, ls = colours.get(r["way"], "k"), styles[r["seed"] % len(styles)]
                name = f"{r['way']} s{r['seed']}"
            else:
                colour, ls = f"C{k % 10}", styles[r["seed"] % len(styles)]
                name = f"{r.get('label') or 'default'} s{r['seed']}"
            xs, ys = read_log(log_dir / "val_log.csv", "step", "miou")
            ax_m.plot(xs, [100 * y for y in ys], ls, color=colour, marker="o", ms=3, label=name)
            xs, ys = read_log(log_dir / "train_log.csv", "step", "loss")
            ax_l.plot(xs, ys, ls, color=colour, lw=1, label=name)
        if group == "main" and teacher:
            t = teacher[0]
            if t.get("best_miou") is not None:
                ax_m.axhline(100 * t["best_miou"], color="k", lw=0.8, ls="--", label="teacher (best)")
        ax_m.set_title(f"{model}: val mIoU (training's validation)")
        ax_l.set_title(f"{model}: train loss")
        ax_m.set_xlabel("iteration")
        ax_l.set_xlabel("iteration")
        ax_m.set_ylabel("mIoU (%)")
        ax_l.set_yscale("log")
        ax_m.legend(fontsize=7, ncol=2)
        ax_m.grid(alpha=0.3)
        ax_l.grid(alpha=0.3)
    fig.tight_layout()
    path = out / ("curves_main.png" if group == "main" else "curves_ablations.png")
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path


def images_per_s(train_log: Path, batch: int) -> float | None:
    """Training throughput: batch x the median it/s of the logged intervals (validation excluded)."""
    _, speeds = read_log(train_log, "step", "it_per_s")
    return float(np.median(speeds)) * batch if speeds else None


def record_of(spec: RunSpec, summary: dict, wall_s: float, log_dir: Path, batch: int) -> dict:
    """One run's row of results.json: its plan entry and what ``distill.train.train`` returned."""
    rec = asdict(spec)
    rec.update(method=spec.method, rdd=spec.rdd, steps=summary.get("steps"), best_miou=summary.get("best_miou"),
               final_miou=summary.get("last_miou"), wall_s=wall_s, train_s=summary.get("time_s"),
               images_per_s=images_per_s(log_dir / "train_log.csv", batch), run_dir=summary.get("run_dir"),
               log_dir=str(log_dir), best=summary.get("best"), last=summary.get("last"), amp=summary.get("amp"))
    return rec


def copy_logs(run_dir: Path, log_dir: Path) -> None:
    """The run's config and CSV logs into ``log_dir`` (what the results and curves read)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "train_log.csv", "val_log.csv"):
        if (run_dir / name).is_file() and run_dir.resolve() != log_dir.resolve():
            shutil.copyfile(run_dir / name, log_dir / name)


def write_results(records: list[dict], out: Path, meta: dict) -> None:
    """results.json, results.md and the curves in ``out`` (rewritten after every run)."""
    write_json(out / "results.json", {"meta": meta, "note": SCRATCH_NOTE, "paper_camvid": PAPER_CAMVID,
                                      "main": aggregate(records), "gains": gains(aggregate(records)), "runs": records})
    atomic_write_text(out / "results.md", results_markdown(records, meta))
    for group in ("main", "ablation"):
        try:
            plot_curves(records, out, group)
        except Exception as exc:  # a plot must never lose the numbers
            print(f"warning: {group} curves not drawn: {exc}", flush=True)


def print_paper(console) -> None:
    from rich.table import Table

    t = Table(title="the paper's CamVid test mIoU (ImageNet init, 40k its): compare gains, not absolute values")
    for col in ("student", "baseline", "+CIRKD", "+RDD", "teacher"):
        t.add_column(col)
    for name, base, cirkd, rdd, teacher in PAPER_CAMVID:
        t.add_row(name, str(base), str(cirkd), str(rdd), str(teacher) if teacher else "-")
    console.print(t)
    console.print(SCRATCH_NOTE)
