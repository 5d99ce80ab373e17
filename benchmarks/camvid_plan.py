"""The CamVid protocol's run plan: which runs, their trainer configs, and what they cost.

``build_plan`` lists the runs (teacher, then each student alone / KD / KD + RDD per seed, then the
DeepLabV3-R18 ablations); ``run_config`` turns one into the trainer's ``TrainConfig``;
``step_ms`` / ``estimate_s`` / ``plan_table`` estimate H100 minutes from step times measured on
the lent H100, and ``print_plan`` shows them (``benchmarks/camvid.py --dry-run``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from rdd_edge.errors import ConfigError

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


def val_every(iters: int, val_points: int) -> int:
    """Validation interval giving about ``val_points`` points on the curve (the last step always validates)."""
    return max(1, math.ceil(iters / max(1, val_points)))


def run_config(spec: RunSpec, args, teacher: str | None, run_root: Path):
    """The trainer's config for one run (``alone`` trains the student as a plain supervised model)."""
    from rdd_edge.distill.config import make_config

    common = dict(model=spec.model, iters=spec.iters, batch=args.batch, crop=tuple(args.crop), seed=spec.seed,
                  device=args.device, data=str(args.data), val_every=val_every(spec.iters, args.val_points),
                  log_every=max(1, min(50, spec.iters // 20)), runs_root=str(run_root), name=spec.id,
                  tensorboard=False, workers=0 if args.gpu_data else args.workers, compile=args.compile,
                  pretrained=args.pretrained)
    if spec.way in ("teacher", "alone"):  # no teacher forward at all: the same loss as distill with method none
        return make_config("teacher", "camvid", **common)
    return make_config("distill", "camvid", teacher=teacher, method=spec.method, rdd=spec.rdd, rdd_mode=spec.rdd_mode,
                       rdd_threshold=spec.threshold, tfe_fraction=spec.tfe, **common)


# ---------------------------------------------------------------- budget
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


def print_plan(console, plan: Sequence[RunSpec], crop: tuple[int, int], batch: int, val_points: int) -> float:
    """The plan table with estimated minutes per run; returns the estimated total minutes."""
    from rich.table import Table

    rows = plan_table(plan, crop, batch, val_points)
    t = Table(title=f"plan: {len(plan)} runs, crop {crop[0]}x{crop[1]}, batch {batch} "
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
