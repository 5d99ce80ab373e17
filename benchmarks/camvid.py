"""CamVid reproduction of the paper's effect: RDD against the student alone and plain KD.

Protocol (issue 4): a DeepLabV3-R101 teacher trained on CamVid train; students DeepLabV3-R18,
DeepLabV3-MBV2 and PSPNet-R18, each trained three ways at the same budget (alone, KD, KD + RDD)
over several seeds; ablations on DeepLabV3-R18 (RDD mode xor/or/and, TFE fraction 0/0.1,
threshold 0.6/0.7/0.8). Every run goes through ``distill.train.train``; this script only plans
the runs, feeds the trainer from a decoded copy of CamVid held on the GPU (augmented there), and
collects ``results.json`` / ``results.md`` / training-curve PNGs in ``--out``.

The default budget fits the main rows into about 20 minutes of one H100 (see ``--dry-run``)::

    python benchmarks/camvid.py --data data/camvid --out $OUT/camvid --dry-run
    setsid nohup python benchmarks/camvid.py --data data/camvid --out $OUT/camvid --runs /tmp/camvid-runs \\
        > $OUT/camvid.log 2>&1 < /dev/null &
    python benchmarks/camvid.py --data data/camvid --out /tmp/c --device cpu --iters 4 --teacher-iters 4 \\
        --crop 64 --batch 2 --seeds 0 --students r18 --limit 8      # CPU smoke test

All runs start from scratch: no ImageNet weights exist offline here.
"""

from __future__ import annotations

import argparse
import csv
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rdd_edge.errors import ConfigError, RddError  # noqa: E402
from rdd_edge.runs import atomic_path, atomic_write_text, read_json, write_json  # noqa: E402

# ---------------------------------------------------------------- budget model
# Step times measured on the lent H100 (issue 4), eager bf16 channels_last, 360x360 crops, batch 16.
REF_PIXELS = 360 * 360 * 16
STEP_MS = {
    "teacher": 69.0,  # DeepLabV3-R101 training step (measured)
    "deeplabv3_r18": 36.0,  # student step incl. the teacher's forward pass and KD (measured)
    "deeplabv3_mbv2": 68.0,  # (measured)
    "pspnet_r18": 36.0,  # ASSUMED: same backbone and a head of similar cost as DeepLabV3-R18
}
TEACHER_FORWARD_MS = 23.0  # ASSUMED: a forward pass is about a third of the R101 training step
RDD_OVERHEAD = 1.06  # the paper: RDD costs about 6% over plain KD
RUN_OVERHEAD_S = 15.0  # ASSUMED: model build, cuDNN autotune, checkpoints, logs
VAL_S = {"teacher": 4.0, "student": 2.0}  # ASSUMED: one pass over the 101 val images at 360x480

# Defaults sized so the main rows (teacher + 3 students x 3 ways x 2 seeds) fit ~20 min of H100.
DEFAULTS = dict(iters=1200, teacher_iters=4000, crop=(288, 288), batch=16, seeds=(0, 1), val_points=5)
PAPER = dict(iters=40000, crop=(360, 360), batch=16)  # the paper's CamVid schedule (METHOD.md)

STUDENTS = ("deeplabv3_r18", "deeplabv3_mbv2", "pspnet_r18")
SHORT = {"deeplabv3_r101": "R101", "deeplabv3_r18": "DLv3-R18", "deeplabv3_mbv2": "DLv3-MBV2", "pspnet_r18": "PSP-R18"}
WAYS = ("alone", "kd", "kd+rdd")
ABLATION_STUDENT = "deeplabv3_r18"
RDD_DEFAULT = dict(rdd_mode="xor", threshold=0.7, tfe=0.1)
ABLATIONS = (  # (label, overrides of RDD_DEFAULT); the defaults row is the main KD+RDD run itself
    ("mode or", dict(rdd_mode="or")),
    ("mode and", dict(rdd_mode="and")),
    ("tfe 0 (TSE only)", dict(tfe=0.0)),
    ("threshold 0.6", dict(threshold=0.6)),
    ("threshold 0.8", dict(threshold=0.8)),
)

# The paper's CamVid val mIoU (METHOD.md; ImageNet-initialised backbones, 40k iterations).
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


@dataclass(frozen=True)
class RunSpec:
    """One training run of the protocol."""

    id: str  # folder name, unique in the plan
    group: str  # "teacher" | "main" | "ablation"
    model: str
    way: str  # "teacher" | "alone" | "kd" | "kd+rdd"
    seed: int
    iters: int
    rdd_mode: str = "xor"
    threshold: float = 0.7
    tfe: float = 0.1
    label: str = ""  # ablation label ("mode or", ...); "" for main rows

    @property
    def method(self) -> str:
        return "kd" if self.way in ("kd", "kd+rdd") else "none"

    @property
    def rdd(self) -> bool:
        return self.way == "kd+rdd"


def _student_id(model: str, way: str, seed: int, **rdd: Any) -> str:
    base = f"{model}-{way.replace('+', '-')}"
    if way == "kd+rdd" and rdd and any(rdd[k] != RDD_DEFAULT[k] for k in rdd):
        base += "-" + "-".join(f"{k}{rdd[k]}" for k in ("rdd_mode", "tfe", "threshold") if rdd[k] != RDD_DEFAULT[k])
    return f"{base}-s{seed}"


def build_plan(students: Sequence[str], seeds: Sequence[int], only: str, iters: int, teacher_iters: int,
               ablation_seeds: Sequence[int] | None = None, train_teacher: bool = True) -> list[RunSpec]:
    """The ordered, de-duplicated runs: teacher, main rows seed by seed, then the ablations."""
    if only not in ("main", "ablations", "all"):
        raise ConfigError(f"--only {only!r}: use main, ablations or all")
    if not seeds:
        raise ConfigError("--seeds: give at least one seed, e.g. 0,1")
    plan: list[RunSpec] = []
    if train_teacher:
        plan.append(RunSpec("teacher-deeplabv3_r101", "teacher", "deeplabv3_r101", "teacher", seeds[0], teacher_iters,
                            rdd_mode="", threshold=0.0, tfe=0.0))
    if only in ("main", "all"):
        for seed in seeds:
            for model in students:
                for way in WAYS:
                    plan.append(RunSpec(_student_id(model, way, seed), "main", model, way, seed, iters))
    if only in ("ablations", "all"):
        for seed in (ablation_seeds if ablation_seeds else seeds[:1]):
            plan.append(RunSpec(_student_id(ABLATION_STUDENT, "kd+rdd", seed), "main", ABLATION_STUDENT, "kd+rdd", seed, iters))
            for label, over in ABLATIONS:
                rdd = {**RDD_DEFAULT, **over}
                plan.append(RunSpec(_student_id(ABLATION_STUDENT, "kd+rdd", seed, **rdd), "ablation", ABLATION_STUDENT,
                                    "kd+rdd", seed, iters, label=label, **rdd))
    seen, out = set(), []
    for spec in plan:
        if spec.id not in seen:
            seen.add(spec.id)
            out.append(spec)
    return out


def step_ms(spec: RunSpec, crop: tuple[int, int], batch: int) -> float:
    """Estimated H100 ms per training step, scaled from the measured 360x360 x 16 step times by pixels."""
    scale = crop[0] * crop[1] * batch / REF_PIXELS
    if spec.way == "teacher":
        return STEP_MS["teacher"] * scale
    ms = STEP_MS.get(spec.model, STEP_MS["deeplabv3_r18"])
    if spec.way == "alone":  # no teacher forward, no KD
        ms = max(ms - TEACHER_FORWARD_MS, 0.25 * ms)
    elif spec.way == "kd+rdd":
        ms *= RDD_OVERHEAD
    return ms * scale


def estimate_s(spec: RunSpec, crop: tuple[int, int], batch: int, val_points: int) -> float:
    """Estimated wall seconds of one run: steps, validations and the fixed per-run overhead."""
    vals = val_points * VAL_S["teacher" if spec.way == "teacher" else "student"]
    return spec.iters * step_ms(spec, crop, batch) / 1000.0 + vals + RUN_OVERHEAD_S


def val_every(iters: int, val_points: int) -> int:
    """Validation interval giving about ``val_points`` points on the curve (the last step always validates)."""
    return max(1, math.ceil(iters / max(1, val_points)))


def plan_table(plan: Sequence[RunSpec], crop: tuple[int, int], batch: int, val_points: int) -> list[dict]:
    """Rows (id, model, way, iters, ms/step, est. min, cumulative min, images/s the loader must give)."""
    rows, total = [], 0.0
    for spec in plan:
        sec = estimate_s(spec, crop, batch, val_points)
        total += sec
        ms = step_ms(spec, crop, batch)
        rows.append({"id": spec.id, "group": spec.group, "model": spec.model, "way": spec.way, "seed": spec.seed,
                     "iters": spec.iters, "ms_per_step": ms, "est_min": sec / 60.0, "cum_min": total / 60.0,
                     "loader_img_s": batch / ms * 1000.0})
    return rows


# ---------------------------------------------------------------- results
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
             f"{meta.get('batch')}, crop {meta.get('crop')}, eval at full 360x480 on val; seeds {meta.get('seeds')}",
             f"- {SCRATCH_NOTE}", "", "## Main rows (val mIoU, mean ± std over seeds)", "",
             "| student | way | seeds | best mIoU | final mIoU | wall s | train img/s |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['way']} | {len(r['seeds'])} | {_pm(r['best_miou'])} | {_pm(r['final_miou'])} "
                     f"| {_pm(r['wall_s'], 1.0, 0)} | {_pm(r['images_per_s'], 1.0, 0)} |")
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
    lines += ["", "## The paper's CamVid numbers (METHOD.md; ImageNet init, 40k its, 360x360, batch 16)", "",
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
        ax_m.set_title(f"{model}: val mIoU")
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


# ---------------------------------------------------------------- data: decoded once, augmented on the device
class CachedReader:
    """A reader decoded once into memory (CamVid train+val is ~250 MB decoded); same item interface."""

    def __init__(self, reader, limit: int | None = None, threads: int = 8):
        from concurrent.futures import ThreadPoolExecutor

        n = len(reader) if limit is None else min(limit, len(reader))
        with ThreadPoolExecutor(max(1, threads)) as pool:  # OpenCV decodes outside the GIL
            self.items = list(pool.map(reader.__getitem__, range(n)))
        self.info, self.split = getattr(reader, "info", None), getattr(reader, "split", None)
        self._names = [reader.name(i) if hasattr(reader, "name") else str(i) for i in range(n)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]

    def name(self, i: int) -> str:
        return self._names[i]

    def image_path(self, i: int):
        return None


def gpu_augment(images, labels, sizes, idx, scales, offsets, flips, crop: tuple[int, int], mean, std):
    """Random-scale / pad / crop / flip / normalise a batch on the tensors' device, in one gather.

    ``images`` (N, 3, Hm, Wm) uint8 and ``labels`` (N, Hm, Wm) uint8 hold the whole set (padded to
    the largest image; ``sizes`` (N, 2) the true h, w). Per sample b of the batch: ``idx[b]`` picks
    the image, ``scales[b]`` resizes it to ``round(h*s), round(w*s)``, which is padded bottom/right
    to the crop, cropped at ``offsets[b] = (y0, x0)`` and mirrored when ``flips[b]``. Images are
    bilinear (pixel centres, like cv2.INTER_LINEAR) and normalised; labels are nearest; padding is
    0 after normalisation (the mean colour) for images and 255 for labels. Returns
    ``(float32 (B, 3, ch, cw), int64 (B, ch, cw))``.
    """
    import torch
    import torch.nn.functional as F

    dev = images.device
    ch, cw = crop
    idx = torch.as_tensor(idx, device=dev, dtype=torch.long)
    s = torch.as_tensor(scales, device=dev, dtype=torch.float32)
    off = torch.as_tensor(offsets, device=dev, dtype=torch.float32).reshape(-1, 2)
    flip = torch.as_tensor(flips, device=dev, dtype=torch.bool)
    hw = torch.as_tensor(sizes, device=dev)[idx].float()  # (B, 2) true sizes
    h, w = hw[:, 0], hw[:, 1]
    hs, ws = torch.clamp(torch.round(h * s), min=1), torch.clamp(torch.round(w * s), min=1)  # scaled sizes
    sy, sx = (hs / h)[:, None], (ws / w)[:, None]
    i = torch.arange(ch, device=dev, dtype=torch.float32)[None]
    j = torch.arange(cw, device=dev, dtype=torch.float32)[None]
    dy = off[:, :1] + i  # (B, ch) row in the scaled (padded) image
    dx = off[:, 1:] + torch.where(flip[:, None], (cw - 1) - j, j)  # (B, cw)
    inside = (dy < hs[:, None])[:, :, None] & (dx < ws[:, None])[:, None, :]  # (B, ch, cw)
    hm, wm = images.shape[-2:]
    # image: bilinear at the source pixel centre, clamped into the true image
    src_y = torch.minimum(torch.clamp((dy + 0.5) / sy - 0.5, min=0.0), (h - 1)[:, None])
    src_x = torch.minimum(torch.clamp((dx + 0.5) / sx - 0.5, min=0.0), (w - 1)[:, None])
    gy = (2 * src_y + 1) / hm - 1
    gx = (2 * src_x + 1) / wm - 1
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)  # (B, ch, cw, 2) as (x, y)
    src = images[idx].float()
    x = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)
    m = torch.as_tensor(mean, device=dev, dtype=torch.float32).view(1, 3, 1, 1)
    sd = torch.as_tensor(std, device=dev, dtype=torch.float32).view(1, 3, 1, 1)
    x = ((x / 255.0 - m) / sd) * inside[:, None]
    # label: nearest source pixel, 255 outside the scaled image
    iy = torch.minimum(torch.floor((dy + 0.5) / sy), (h - 1)[:, None]).long()  # (B, ch)
    ix = torch.minimum(torch.floor((dx + 0.5) / sx), (w - 1)[:, None]).long()  # (B, cw)
    flat = (iy[:, :, None] * wm + ix[:, None, :]).reshape(len(idx), -1)
    y = labels[idx].reshape(len(idx), -1).gather(1, flat).reshape(len(idx), ch, cw).long()
    y = torch.where(inside, y, torch.full_like(y, 255))
    return x.contiguous(), y


def draw_params(aug_seed: int, size: tuple[int, int], crop: tuple[int, int], scale: tuple[float, float],
                hflip: bool) -> tuple[float, tuple[int, int], bool]:
    """(scale, (y0, x0), flip) of one sample from its own seed (the CPU pipeline's order of draws)."""
    rng = np.random.default_rng(aug_seed)
    s = float(rng.uniform(*scale)) if scale[1] > scale[0] else float(scale[0])
    hs, ws = max(1, round(size[0] * s)), max(1, round(size[1] * s))
    y0 = int(rng.integers(0, max(hs, crop[0]) - crop[0] + 1))
    x0 = int(rng.integers(0, max(ws, crop[1]) - crop[1] + 1))
    flip = bool(hflip and rng.random() < 0.5)
    return s, (y0, x0), flip


class DeviceTrainSet(CachedReader):
    """The decoded train split on the training device; the trainer takes batches from ``train_batches``.

    The sample order and per-sample augmentation seeds are ``distill.data.StepSampler``'s, so a run
    is deterministic given its seed and resumes exactly at any step.
    """

    def __init__(self, reader, device: str, limit: int | None = None):
        import torch

        super().__init__(reader, limit)
        hm = max(im.shape[0] for im, _ in self.items)
        wm = max(im.shape[1] for im, _ in self.items)
        n = len(self.items)
        imgs = torch.zeros((n, 3, hm, wm), dtype=torch.uint8)
        lbls = torch.full((n, hm, wm), 255, dtype=torch.uint8)
        for k, (im, lb) in enumerate(self.items):
            imgs[k, :, : im.shape[0], : im.shape[1]] = torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1)))
            lbls[k, : lb.shape[0], : lb.shape[1]] = torch.from_numpy(lb)
        self.sizes_np = np.array([lb.shape for _, lb in self.items], dtype=np.int64)
        self.device = torch.device(device)
        self.images, self.labels = imgs.to(self.device), lbls.to(self.device)
        self.sizes = torch.from_numpy(self.sizes_np).to(self.device)

    @property
    def nbytes(self) -> int:
        return int(self.images.numel() + self.labels.numel())

    def train_batches(self, cfg, start_step: int, rank: int, world: int) -> Iterator:
        """Batches for steps ``start_step .. cfg.iters-1`` of this process (the ``distill.train`` hook)."""
        from distill.data import StepSampler

        info = self.info
        sampler = StepSampler(len(self), cfg.batch, cfg.iters, start_step, rank, world, cfg.seed)
        crop, scale = tuple(cfg.crop), (cfg.scale_min, cfg.scale_max)
        batch: list[tuple[int, int]] = []
        for item in sampler:
            batch.append(item)
            if len(batch) == sampler.per_rank:
                idx = [i for i, _ in batch]
                params = [draw_params(seed, tuple(self.sizes_np[i]), crop, scale, cfg.hflip) for i, seed in batch]
                yield gpu_augment(self.images, self.labels, self.sizes, idx, [p[0] for p in params],
                                  [p[1] for p in params], [p[2] for p in params], crop, info.mean, info.std)
                batch = []


# ---------------------------------------------------------------- running the protocol
def images_per_s(train_log: Path, batch: int) -> float | None:
    """Training throughput: batch x the median it/s of the logged intervals (validation excluded)."""
    _, speeds = read_log(train_log, "step", "it_per_s")
    return float(np.median(speeds)) * batch if speeds else None


def evaluate_checkpoint(ckpt: Path, reader, info, device: str, batch: int) -> float:
    """mIoU of a checkpoint over a reader, whole images at the data set's eval size."""
    import torch

    from distill.data import eval_loader
    from distill.evaluate import evaluate
    from distill.train import amp_setup
    from distill.config import make_config
    from models import model_from_checkpoint

    dev = torch.device(device)
    model, _ = model_from_checkpoint(ckpt)
    model = model.to(dev)
    autocast, _, _ = amp_setup(make_config("teacher", "camvid"), dev)
    loader = eval_loader(reader, info, tuple(info.eval_size), batch=batch)
    return float(evaluate(model, loader, info.num_classes, dev, autocast=autocast()).miou)


def run_config(spec: RunSpec, args, teacher: str | None, run_root: Path):
    """The trainer's config for one run (``alone`` trains the student as a plain supervised model)."""
    from distill.config import make_config

    common = dict(model=spec.model, iters=spec.iters, batch=args.batch, crop=tuple(args.crop), seed=spec.seed,
                  device=args.device, data=str(args.data), val_every=val_every(spec.iters, args.val_points),
                  log_every=max(1, min(50, spec.iters // 20)), runs_root=str(run_root), name=spec.id,
                  tensorboard=False, workers=0 if args.gpu_data else args.workers, compile=args.compile)
    if spec.way in ("teacher", "alone"):  # no teacher forward at all: the same loss as distill with method none
        return make_config("teacher", "camvid", **common)
    return make_config("distill", "camvid", teacher=teacher, method=spec.method, rdd=spec.rdd, rdd_mode=spec.rdd_mode,
                       rdd_threshold=spec.threshold, tfe_fraction=spec.tfe, **common)


def record_of(spec: RunSpec, summary: dict, wall_s: float, log_dir: Path, batch: int) -> dict:
    rec = asdict(spec)
    rec.update(method=spec.method, rdd=spec.rdd, steps=summary.get("steps"), best_miou=summary.get("best_miou"),
               final_miou=summary.get("last_miou"), wall_s=wall_s, train_s=summary.get("time_s"),
               images_per_s=images_per_s(log_dir / "train_log.csv", batch), run_dir=summary.get("run_dir"),
               log_dir=str(log_dir), best=summary.get("best"), last=summary.get("last"), amp=summary.get("amp"))
    return rec


def _copy_logs(run_dir: Path, log_dir: Path) -> None:
    log_dir.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "train_log.csv", "val_log.csv"):
        if (run_dir / name).is_file() and run_dir.resolve() != log_dir.resolve():
            shutil.copyfile(run_dir / name, log_dir / name)


def write_results(records: list[dict], out: Path, meta: dict) -> None:
    write_json(out / "results.json", {"meta": meta, "note": SCRATCH_NOTE, "paper_camvid": PAPER_CAMVID,
                                      "main": aggregate(records), "gains": gains(aggregate(records)), "runs": records})
    atomic_write_text(out / "results.md", results_markdown(records, meta))
    for group in ("main", "ablation"):
        try:
            plot_curves(records, out, group)
        except Exception as exc:  # a plot must never lose the numbers
            print(f"warning: {group} curves not drawn: {exc}", flush=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from rdd_edge.sizes import parse_hw as parse_size

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/camvid", help="CamVid root (compact or SegNet layout) with train/ and val/")
    p.add_argument("--out", default="runs/camvid-bench", help="results.json/.md, curves, per-run logs")
    p.add_argument("--runs", default=None, help="run folders with checkpoints (default OUT/runs); keep it out of $OUT on the GPU machine")
    p.add_argument("--only", default="main", choices=("main", "ablations", "all"), help="which rows to run (default main)")
    p.add_argument("--students", default=",".join(STUDENTS), help="comma list of students (names or aliases r18, mbv2, psp18)")
    p.add_argument("--seeds", default=",".join(map(str, DEFAULTS["seeds"])), help="seeds of the main rows (>= 2 for a spread)")
    p.add_argument("--ablation-seeds", default=None, help="seeds of the ablations (default: the first of --seeds)")
    p.add_argument("--iters", type=int, default=None, help=f"student iterations (default {DEFAULTS['iters']} x --scale)")
    p.add_argument("--teacher-iters", type=int, default=None, help=f"teacher iterations (default {DEFAULTS['teacher_iters']} x --scale)")
    p.add_argument("--scale", default="1", help="multiply the default iterations (capped at the paper's 40k); 'paper' = 40k its, batch 16, crop 360x360")
    p.add_argument("--crop", default=None, help=f"training crop HxW (default {DEFAULTS['crop'][0]}x{DEFAULTS['crop'][1]})")
    p.add_argument("--batch", type=int, default=None, help=f"batch (default {DEFAULTS['batch']})")
    p.add_argument("--val-points", type=int, default=DEFAULTS["val_points"], help="validations per run (points on the curves)")
    p.add_argument("--teacher", default=None, help="teacher checkpoint: skip teacher training")
    p.add_argument("--eval-data", default=None, help="also evaluate final checkpoints on this folder (its test split, else val)")
    p.add_argument("--resume", action="store_true", help="skip runs whose summary.json exists; continue a run from its last.pt")
    p.add_argument("--device", default="auto", help="auto, cuda, cuda:N, cpu")
    p.add_argument("--gpu-data", dest="gpu_data", action="store_true", default=None, help="hold the decoded train set on the GPU and augment there (default on CUDA)")
    p.add_argument("--no-gpu-data", dest="gpu_data", action="store_false", help="CPU DataLoader with --workers processes instead")
    p.add_argument("--workers", type=int, default=6, help="DataLoader workers (CPU data path only)")
    p.add_argument("--compile", action="store_true", help="torch.compile each model (costs compile time per run)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N train and val images (smoke tests)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and its budget, run nothing")
    args = p.parse_args(argv)
    paper = str(args.scale).lower() == "paper"
    try:
        scale = 1.0 if paper else float(args.scale)
    except ValueError:
        raise ConfigError(f"--scale {args.scale!r}: a number (e.g. 2) or 'paper'") from None
    if scale <= 0:
        raise ConfigError(f"--scale {args.scale}: must be > 0")
    base_it, base_t = (PAPER["iters"], PAPER["iters"]) if paper else (DEFAULTS["iters"], DEFAULTS["teacher_iters"])
    args.iters = args.iters or min(PAPER["iters"], max(1, round(base_it * scale)))
    args.teacher_iters = args.teacher_iters or min(PAPER["iters"], max(1, round(base_t * scale)))
    args.crop = parse_size(args.crop, "--crop") if args.crop else (PAPER["crop"] if paper else DEFAULTS["crop"])
    args.batch = args.batch or (PAPER["batch"] if paper else DEFAULTS["batch"])
    if args.iters < 1 or args.teacher_iters < 1 or args.batch < 1 or args.val_points < 1:
        raise ConfigError("--iters, --teacher-iters, --batch and --val-points must be >= 1")

    def ints(text: str | None, opt: str) -> list[int]:
        try:
            return [int(x) for x in str(text).split(",") if x.strip()] if text else []
        except ValueError:
            raise ConfigError(f"{opt} {text!r}: a comma list of integers, e.g. 0,1") from None

    args.seeds = ints(args.seeds, "--seeds")
    args.ablation_seeds = ints(args.ablation_seeds, "--ablation-seeds") or None
    from models import resolve_name

    args.students = [resolve_name(s) for s in args.students.split(",") if s.strip()]
    if not args.students:
        raise ConfigError("--students: name at least one student (r18, mbv2, psp18)")
    args.out = Path(args.out)
    args.runs = Path(args.runs) if args.runs else args.out / "runs"
    args.data = Path(args.data)
    return args


def print_plan(console, plan: Sequence[RunSpec], args) -> float:
    from rich.table import Table

    rows = plan_table(plan, tuple(args.crop), args.batch, args.val_points)
    t = Table(title=f"plan: {len(plan)} runs, crop {args.crop[0]}x{args.crop[1]}, batch {args.batch} "
                    f"(estimated H100 minutes from the issue's measured step times)")
    for col in ("run", "group", "iters", "ms/step", "est. min", "cum. min", "loader img/s"):
        t.add_column(col, justify="left" if col in ("run", "group") else "right")
    for r in rows:
        t.add_row(r["id"], r["group"], str(r["iters"]), f"{r['ms_per_step']:.1f}", f"{r['est_min']:.1f}",
                  f"{r['cum_min']:.1f}", f"{r['loader_img_s']:.0f}")
    console.print(t)
    total = rows[-1]["cum_min"] if rows else 0.0
    main_min = sum(r["est_min"] for r in rows if r["group"] in ("teacher", "main"))
    console.print(f"estimated total {total:.1f} min (teacher + main rows {main_min:.1f} min; a session has ~30 min "
                  f"of H100, 10 min per command: run it detached)")
    return total


def print_paper(console) -> None:
    from rich.table import Table

    t = Table(title="the paper's CamVid val mIoU (ImageNet init, 40k its): compare gains, not absolute values")
    for col in ("student", "baseline", "+CIRKD", "+RDD", "teacher"):
        t.add_column(col)
    for name, base, cirkd, rdd, teacher in PAPER_CAMVID:
        t.add_row(name, str(base), str(cirkd), str(rdd), str(teacher) if teacher else "-")
    console.print(t)
    console.print(SCRATCH_NOTE)


def main(argv: Sequence[str] | None = None) -> int:
    import datetime
    import shlex

    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 140)  # a detached log gets whole rows
    args = parse_args(argv)
    plan = build_plan(args.students, args.seeds, args.only, args.iters, args.teacher_iters, args.ablation_seeds,
                      train_teacher=args.teacher is None)
    print_plan(console, plan, args)
    if args.dry_run:
        print_paper(console)
        return 0

    import torch

    from distill.train import check_reader
    from rdd_edge.data import dataset_info, get_dataset
    from rdd_edge.data.camvid import find_splits

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    on_cuda = args.device.startswith("cuda")
    if on_cuda and not torch.cuda.is_available():
        raise ConfigError(f"--device {args.device}: CUDA is not available here; use --device cpu")
    if args.gpu_data is None:
        args.gpu_data = on_cuda
    if args.teacher is not None and not Path(args.teacher).is_file():
        raise ConfigError(f"--teacher {args.teacher}: checkpoint not found")
    args.out.mkdir(parents=True, exist_ok=True)
    args.runs.mkdir(parents=True, exist_ok=True)

    info = dataset_info("camvid")
    t0 = time.perf_counter()
    train_raw = get_dataset("camvid", args.data, split="train")
    val = CachedReader(get_dataset("camvid", args.data, split="val"), args.limit)
    train_set = DeviceTrainSet(train_raw, args.device, args.limit) if args.gpu_data else CachedReader(train_raw, args.limit)
    for split, reader in (("train", train_set), ("val", val)):
        check_reader(reader, f"{args.data} ({split} split)", info.num_classes)
    where = f"on {args.device} ({train_set.nbytes / 2**20:.0f} MiB)" if args.gpu_data else "in RAM (CPU augmentation)"
    console.print(f"data: {len(train_set)} train / {len(val)} val images decoded in {time.perf_counter() - t0:.1f}s, train set {where}")
    readers = (info, train_set, val, tuple(info.eval_size))
    eval_reader, eval_split = None, None
    if args.eval_data:
        splits = find_splits(Path(args.eval_data))
        eval_split = "test" if "test" in splits else "val"
        eval_reader = CachedReader(get_dataset("camvid", args.eval_data, split=eval_split), args.limit)
    device_name = torch.cuda.get_device_name(torch.device(args.device)) if on_cuda else "cpu"
    meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "device": device_name,
            "command": "python benchmarks/camvid.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
            "iters": args.iters, "teacher_iters": args.teacher_iters, "batch": args.batch,
            "crop": f"{args.crop[0]}x{args.crop[1]}", "seeds": args.seeds, "gpu_data": args.gpu_data,
            "torch": torch.__version__, "eval_data": f"{args.eval_data} ({eval_split})" if args.eval_data else None}

    records: list[dict] = []
    teacher = args.teacher
    t_all = time.perf_counter()
    for k, spec in enumerate(plan):
        log_dir = args.out / "logs" / spec.id
        done = log_dir / "summary.json"
        if args.resume and done.is_file():
            rec = read_json(done)
            records.append(rec)
            if spec.way == "teacher":
                teacher = rec.get("best")
                if not teacher or not Path(teacher).is_file():
                    raise ConfigError(f"{done}: the teacher's checkpoint {teacher} is gone; pass --teacher CKPT")
            console.print(f"[{k + 1}/{len(plan)}] {spec.id}: done before (resume), best mIoU {100 * (rec['best_miou'] or 0):.2f}")
            continue
        write_json(args.out / "status.json", {"running": spec.id, "index": k + 1, "total": len(plan),
                                              "elapsed_s": time.perf_counter() - t_all, "log": str(args.runs / spec.id)})
        console.rule(f"[{k + 1}/{len(plan)}] {spec.id} ({spec.iters} its)")
        cfg = run_config(spec, args, teacher, args.runs)
        run_dir = args.runs / spec.id
        resume = run_dir / "last.pt" if args.resume and (run_dir / "last.pt").is_file() else None
        t = time.perf_counter()
        from distill.train import train

        summary = train(cfg, resume=resume, readers=readers, run_dir=run_dir, progress=sys.stdout.isatty())
        wall = time.perf_counter() - t
        _copy_logs(run_dir, log_dir)
        rec = record_of(spec, summary, wall, log_dir, args.batch)
        if eval_reader is not None and Path(summary["last"]).is_file():
            rec["eval_data"] = {eval_split: evaluate_checkpoint(Path(summary["last"]), eval_reader, info, args.device, args.batch)}
        write_json(done, rec)
        records.append(rec)
        if spec.way == "teacher":
            teacher = summary["best"]
        console.print(f"{spec.id}: best mIoU {100 * (rec['best_miou'] or 0):.2f}, final {100 * (rec['final_miou'] or 0):.2f}, "
                      f"{wall:.0f}s, {rec['images_per_s'] or 0:.3g} img/s")
        write_results(records, args.out, meta)  # after every run: a killed job keeps what it finished
    write_results(records, args.out, meta)
    write_json(args.out / "status.json", {"running": None, "finished": True, "total": len(plan),
                                          "elapsed_s": time.perf_counter() - t_all})
    console.print((args.out / "results.md").read_text())
    print_paper(console)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RddError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
