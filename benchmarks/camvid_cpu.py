"""CamVid on a 2-core CPU: does RDD beat KD and the student alone on real street scenes?

The study of issue 30, planned for the CPU the developers have: CamVid at half size (180x240), one
teacher (DeepLabV3-R18 trained from scratch, or from ``--pretrained`` weights), then a
DeepLabV3-MobileNetV2 student trained **alone**, with **KD** and with **KD + RDD (XOR)** at the
same iterations, batch, crop and learning rate, over three seeds; then, with ``--extra``, RDD's OR /
AND modes and CWD / CWD + RDD. Every run is one call of the trainer (``distill.train.train``).

It is resumable run by run, across sessions and machines: each finished run writes one small
result file ``benchmarks/results/camvid-cpu/<run>.json`` (its plan entry, best and final val mIoU,
per-class IoU, wall time, CPU, git commit); a run whose file exists with the same plan entry is
skipped, so the study completes over several sessions. Only the teacher's checkpoint is needed
again (by later student runs); when it is gone (a new machine) the teacher is trained again and the
student results record which teacher (sha256) they learnt from. ::

    python -m benchmarks.camvid_cpu --plan                     # runs, measured s/step here, total estimate
    setsid nohup python -m benchmarks.camvid_cpu > runs/camvid-cpu.log 2>&1 < /dev/null &
    python -m benchmarks.camvid_cpu --report                   # table, paired differences, plot (no training)

Compare the ways with each other, not with the paper: the paper trains DeepLabV3-R18 from ImageNet
weights for 40k iterations at 360x360; this is a few hundred iterations from scratch at half size.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rdd_edge.errors import ConfigError, RddError
from rdd_edge.runs import atomic_write_text, read_json, sha256_file, write_json
from rdd_edge.sizes import parse_hw

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "camvid-cpu"

# Sized by measurement (`--plan`) on the developers' 2-core EPYC (AVX-512), batch 8 at 128x192: 3.4 s a
# teacher (DeepLabV3-R18) step, 1.6 s MobileNetV2 alone, 2.4-2.7 s with KD (the teacher's forward pass is
# ~1.1 s of it). At 112x160 (0.73x the pixels) the teacher's 700 steps and the nine 300-step main runs
# take about 1.8 hours of that CPU (benchmarks/RESULTS.md, "CamVid on a 2-core CPU").
DEFAULTS = dict(size=(180, 240), crop=(112, 160), batch=8, iters=300, teacher_iters=700, teacher="deeplabv3_r18",
                students=("deeplabv3_mbv2",), seeds=(0, 1, 2), lr=0.02, val_points=4)
MAIN_WAYS = ("alone", "kd", "kd+rdd")
EXTRA_WAYS = ("kd+rdd-or", "kd+rdd-and", "cwd", "cwd+rdd")
WAY_SETTINGS: dict[str, dict[str, Any]] = {  # trainer options of each way (distill mode unless teacher / alone)
    "alone": dict(method="none", rdd=False),
    "kd": dict(method="kd", rdd=False),
    "kd+rdd": dict(method="kd", rdd=True, rdd_mode="xor"),
    "kd+rdd-or": dict(method="kd", rdd=True, rdd_mode="or"),
    "kd+rdd-and": dict(method="kd", rdd=True, rdd_mode="and"),
    "cwd": dict(method="cwd", rdd=False),
    "cwd+rdd": dict(method="cwd", rdd=True, rdd_mode="xor"),
}


@dataclass(frozen=True)
class Run:
    """One training run of the study; ``key()`` is what a result file must match to count as done."""

    id: str
    model: str
    way: str  # "teacher" or one of WAY_SETTINGS
    seed: int
    iters: int
    size: tuple[int, int]
    crop: tuple[int, int]
    batch: int
    lr: float
    head_channels: int | None = None
    pretrained: str = "none"

    def key(self) -> dict:
        d = asdict(self)
        d["size"], d["crop"] = list(self.size), list(self.crop)
        return d


def build_plan(args: argparse.Namespace) -> list[Run]:
    """The teacher, then each seed's main runs (alone, KD, KD + RDD per student), then the extra ways."""
    common = dict(size=tuple(args.size), crop=tuple(args.crop), batch=args.batch, lr=args.lr,
                  head_channels=args.head_channels, pretrained=args.pretrained)
    short = {"deeplabv3_mbv2": "mbv2", "deeplabv3_r18": "r18", "pspnet_r18": "psp18", "deeplabv3_r101": "r101"}
    plan = [Run(f"teacher-{short.get(args.teacher, args.teacher)}", args.teacher, "teacher", 0, args.teacher_iters, **common)]
    ways = list(MAIN_WAYS) + (list(EXTRA_WAYS) if args.extra else [])
    for group in (MAIN_WAYS, [w for w in ways if w not in MAIN_WAYS]):
        for seed in args.seeds:
            for model in args.students:
                for way in group:
                    plan.append(Run(f"{short.get(model, model)}-{way.replace('+', '-')}-s{seed}", model, way, seed,
                                    args.iters, **common))
    return plan


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "camvid"), help="CamVid root with train/ and val/")
    p.add_argument("--results", default=str(RESULTS), help="one result file per finished run (committed)")
    p.add_argument("--runs", default=str(REPO / "runs" / "camvid-cpu"), help="run folders with checkpoints (not committed)")
    p.add_argument("--size", default="x".join(map(str, DEFAULTS["size"])), help="images and labels resized to HxW (half size)")
    p.add_argument("--crop", default="x".join(map(str, DEFAULTS["crop"])), help="training crop HxW")
    p.add_argument("--batch", type=int, default=DEFAULTS["batch"])
    p.add_argument("--iters", type=int, default=DEFAULTS["iters"], help="student iterations (every way the same)")
    p.add_argument("--teacher-iters", type=int, default=DEFAULTS["teacher_iters"])
    p.add_argument("--teacher", default=DEFAULTS["teacher"], help="teacher network (registry name or alias)")
    p.add_argument("--students", default=",".join(DEFAULTS["students"]), help="comma list (mbv2, r18, psp18)")
    p.add_argument("--seeds", default=",".join(map(str, DEFAULTS["seeds"])))
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"], help="base learning rate of every run (SGD, poly)")
    p.add_argument("--head-channels", type=int, default=None, help="head width of every network (tiny tests)")
    p.add_argument("--pretrained", default="none", help="backbone init of every network: none (from scratch), "
                   "imagenet, or a local backbone file")
    p.add_argument("--extra", action="store_true", help="also RDD's OR / AND and CWD / CWD + RDD after the main runs")
    p.add_argument("--only", default=None, help="comma list of run ids to run (others are skipped, not removed)")
    p.add_argument("--test", default=None, help="also score each finished student on PATH's test split (resized to --size)")
    p.add_argument("--limit", type=int, default=None, help="first N train and val images (tests)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the CPUs this process may use)")
    p.add_argument("--plan", action="store_true", help="print the runs with measured seconds per step here, run nothing")
    p.add_argument("--report", action="store_true", help="write the table, paired differences and plot; run nothing")
    p.add_argument("--report-md", default=None, help="with --report: also write the markdown table here")
    p.add_argument("--plot", default=None, help="with --report: the plot's path (default RESULTS/camvid_cpu.png)")
    args = p.parse_args(argv)
    from rdd_edge.models import resolve_name

    args.size, args.crop = parse_hw(args.size, "--size"), parse_hw(args.crop, "--crop")
    try:
        args.seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {args.seeds!r}: a comma list of integers, e.g. 0,1,2") from None
    args.students = [resolve_name(s) for s in args.students.split(",") if s.strip()]
    args.teacher = resolve_name(args.teacher)
    if not args.seeds or not args.students:
        raise ConfigError("--seeds and --students need at least one entry")
    if min(args.iters, args.teacher_iters, args.batch) < 1:
        raise ConfigError("--iters, --teacher-iters and --batch must be >= 1")
    args.results, args.runs, args.data = Path(args.results), Path(args.runs), Path(args.data)
    args.only = {s.strip() for s in args.only.split(",")} if args.only else None
    return args


# ---------------------------------------------------------------- data at half size
class Resized:
    """A reader whose images (area) and labels (nearest) are resized to ``size``; same item interface."""

    def __init__(self, reader, size: tuple[int, int]):
        self.reader, self.size = reader, size
        self.info, self.split = getattr(reader, "info", None), getattr(reader, "split", None)

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, i: int):
        import cv2

        image, label = self.reader[i]
        h, w = self.size
        return (cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA),
                cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST))

    def name(self, i: int) -> str:
        return self.reader.name(i)


def open_data(root: Path, size: tuple[int, int], limit: int | None, split_names=("train", "val")):
    """The trainer's ``TrainData`` of CamVid at ``root``, resized to ``size`` and decoded once into RAM."""
    from benchmarks.camvid_data import CachedReader
    from rdd_edge.distill.config import make_config
    from rdd_edge.distill.train import TrainData, build_data

    base = build_data(make_config("teacher", "camvid", data=str(root), pretrained="none"))  # checks both splits
    train, val = (CachedReader(Resized(r, size), limit) for r in (base.train, base.val))
    for r in (train, val):
        r.in_memory = True  # the trainer then uses no loader workers on a CPU (nothing to decode)
    return TrainData(base.info, train, val, tuple(size))


def open_test(root: Path, size: tuple[int, int]):
    """PATH's test split, resized like the study's val split (``--test``)."""
    from benchmarks.camvid_data import CachedReader
    from rdd_edge.data.camvid import find_splits
    from rdd_edge.data import open_split
    from rdd_edge.data.spec import DataSpec

    if "test" not in find_splits(root):
        raise ConfigError(f"--test {root}: no test split there (expected {root}/test/images and labels)")
    return CachedReader(Resized(open_split(DataSpec(name="camvid", root=str(root)), "test"), size))


# ---------------------------------------------------------------- one run
def run_config(run: Run, args, teacher: Path | None):
    """The trainer's config of one run (a teacher and ``alone`` train supervised; the rest distill)."""
    from rdd_edge.distill.config import make_config

    val_every = max(1, -(-run.iters // DEFAULTS["val_points"]))
    common = dict(model=run.model, iters=run.iters, batch=run.batch, crop=tuple(run.crop), seed=run.seed, lr=run.lr,
                  device="cpu", data=str(args.data), eval_size=tuple(run.size), val_every=val_every,
                  log_every=max(1, min(25, run.iters // 20)), runs_root=str(args.runs), name=run.id, tensorboard=False,
                  workers=0, pretrained=run.pretrained,
                  model_kwargs={"head_channels": run.head_channels} if run.head_channels else {})
    if run.way in ("teacher", "alone"):  # supervised; each network's own aux default (TFE reads the teacher's)
        return make_config("teacher", "camvid", **common)
    return make_config("distill", "camvid", teacher=str(teacher), **WAY_SETTINGS[run.way], **common)


def score(ckpt: Path, reader, eval_size) -> dict:
    """mIoU and per-class IoU of a checkpoint on ``reader`` (FP32, whole images)."""
    from rdd_edge.distill.data import eval_loader
    from rdd_edge.distill.evaluate import evaluate
    from rdd_edge.models import model_from_checkpoint
    from rdd_edge.normalize import recorded_normalization

    model, rec = model_from_checkpoint(ckpt)
    loader = eval_loader(reader, recorded_normalization(rec), eval_size, batch=8)
    names = list((rec.get("dataset") or {}).get("classes") or []) or None
    return evaluate(model, loader, model.num_classes).as_dict(names)


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def train_one(run: Run, args, data, teacher: Path | None, test_reader) -> dict:
    """Train one run (resuming its last.pt if a killed job left one) and return its result record."""
    import torch

    from rdd_edge.cpuinfo import detect
    from rdd_edge.distill.train import train

    run_dir = args.runs / run.id
    resume = run_dir / "last.pt" if (run_dir / "last.pt").is_file() else None
    t0 = time.perf_counter()
    summary = train(run_config(run, args, teacher), resume=resume, data=data, run_dir=run_dir, progress=sys.stdout.isatty())
    wall = time.perf_counter() - t0
    final, best = Path(summary["last"]), Path(summary["best"])
    rec = {"plan": run.key(), "best_miou": summary["best_miou"], "final_miou": summary["last_miou"],
           "final": score(final, data.val, data.eval_size), "best": score(best, data.val, data.eval_size) if best.is_file() else None,
           "wall_s": wall, "train_s": summary["time_s"], "steps": summary["steps"], "resumed": resume is not None,
           "teacher_sha256": sha256_file(teacher) if teacher else None, "checkpoint_sha256": sha256_file(final),
           "cpu": detect().as_dict(), "threads": torch.get_num_threads(), "torch": torch.__version__,
           "python": platform.python_version(), "commit": git_commit(),
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "data": {"train": len(data.train), "val": len(data.val)}}
    if test_reader is not None:
        rec["test"] = score(final, test_reader, data.eval_size)
    return rec


def result_path(args, run: Run) -> Path:
    return args.results / f"{run.id}.json"


def finished(args, run: Run) -> dict | None:
    """The run's result when its file exists and matches the plan entry; None otherwise (a changed plan runs again)."""
    path = result_path(args, run)
    if not path.is_file():
        return None
    try:
        rec = read_json(path)
    except (OSError, ValueError, RddError):
        return None
    return rec if rec.get("plan") == run.key() else None


# ---------------------------------------------------------------- --plan: measured step times
def measure_steps(plan: Sequence[Run], args, warmup: int = 1, iters: int = 2) -> dict[str, float]:
    """Seconds per training step of each (model, way) in the plan, timed here with the trainer's own step."""
    import torch

    from rdd_edge.distill import train as trainer
    from rdd_edge.distill.train import fit_threads

    fit_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    h, w = args.crop
    images = torch.randn(args.batch, 3, h, w)
    labels = torch.randint(0, 11, (args.batch, h, w))
    teacher_run = next(r for r in plan if r.way == "teacher")
    torch.manual_seed(0)
    tcfg = run_config(teacher_run, args, None)
    teacher = trainer.build_model(tcfg, 11).eval().requires_grad_(False)
    out: dict[str, float] = {}
    for run in plan:
        key = f"{run.model}/{run.way}"
        if key in out:
            continue
        cfg = run_config(run, args, Path("teacher.pt"))
        student = trainer.build_model(cfg, 11)
        trainer.set_train_mode(student, cfg.freeze_bn)
        uses_teacher = run.way not in ("teacher", "alone")
        ctx = trainer.build_step_context(cfg, student, teacher if uses_teacher else None, start=cfg.iters)  # TSE stage
        for _ in range(warmup):
            trainer.train_step(ctx, images, labels)
        times = []
        for _ in range(iters):
            t = time.perf_counter()
            trainer.train_step(ctx, images, labels)
            times.append(time.perf_counter() - t)
        out[key] = statistics.median(times)
    return out


def print_plan(plan: Sequence[Run], args, secs: dict[str, float] | None) -> float:
    from rdd_edge.cpuinfo import detect

    print(f"CPU: {detect().line()}")
    print(f"{len(plan)} runs; images {args.size[0]}x{args.size[1]}, crop {args.crop[0]}x{args.crop[1]}, batch {args.batch}, "
          f"lr {args.lr}, pretrained {args.pretrained}")
    print(f"{'run':28} {'iters':>6} {'s/step':>7} {'est. min':>8} {'cum. min':>8}  status")
    total = todo = 0.0
    for run in plan:
        s = (secs or {}).get(f"{run.model}/{run.way}")
        est = (run.iters * s * 1.08 + 30) / 60 if s else float("nan")  # + validations and scoring (~8%), model build
        done = finished(args, run) is not None
        total += 0 if est != est else est
        todo += 0 if done or est != est else est
        timing = f"{s:7.2f} {est:8.1f} {total:8.1f}" if s else f"{'-':>7} {'-':>8} {'-':>8}"
        print(f"{run.id:28} {run.iters:6d} {timing}  {'done' if done else 'to run'}")
    if secs:
        print(f"estimated total {total:.0f} min ({total / 60:.1f} h) on this CPU; left to run: {todo:.0f} min")
    return total


# ---------------------------------------------------------------- report
def load_results(results: Path) -> list[dict]:
    recs = []
    for path in sorted(results.glob("*.json")):
        try:
            rec = read_json(path)
        except (OSError, ValueError, RddError) as exc:
            print(f"warning: {path}: not read ({exc})", file=sys.stderr)
            continue
        if isinstance(rec, dict) and isinstance(rec.get("plan"), dict):
            recs.append(rec)
    return recs


def paired(recs: Sequence[dict], model: str, a: str, b: str, key: str) -> dict | None:
    """``a - b`` per seed (seeds both ways ran), in mIoU points: mean, sample std, n, and a paired t statistic."""
    by = {(r["plan"]["way"], r["plan"]["seed"]): r[key] for r in recs if r["plan"]["model"] == model and r.get(key) is not None}
    diffs = [100 * (by[(a, s)] - by[(b, s)]) for (w, s) in by if w == a and (b, s) in by]
    if not diffs:
        return None
    mean = statistics.fmean(diffs)
    sd = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
    t = mean / (sd / len(diffs) ** 0.5) if len(diffs) > 1 and sd > 0 else None
    return {"mean": mean, "std": sd, "n": len(diffs), "t": t, "diffs": diffs}


def report(args) -> str:
    """The markdown table (mean +- std over seeds), the paired differences, and the plot."""
    recs = load_results(args.results)
    if not recs:
        raise ConfigError(f"{args.results}: no result files yet; run the study first")
    lines = []
    teachers = [r for r in recs if r["plan"]["way"] == "teacher"]
    for t in teachers:
        lines.append(f"Teacher {t['plan']['model']} ({t['plan']['iters']} its): best val mIoU {100 * t['best_miou']:.2f}, "
                     f"final {100 * t['final_miou']:.2f} ({t['wall_s'] / 60:.0f} min)")
    shas = {r.get("teacher_sha256") for r in recs if r["plan"]["way"] not in ("teacher", "alone")}
    if len(shas) > 1:
        lines.append(f"note: the distilled runs learnt from {len(shas)} different teacher checkpoints (a teacher retrained on another machine)")
    lines += ["", "| student | way | seeds | best val mIoU | final val mIoU | per run (final) | min/run |",
              "|---|---|---|---|---|---|---|"]
    students = [r for r in recs if r["plan"]["way"] != "teacher"]
    for model in dict.fromkeys(r["plan"]["model"] for r in students):
        for way in list(MAIN_WAYS) + list(EXTRA_WAYS):
            rs = sorted((r for r in students if r["plan"]["model"] == model and r["plan"]["way"] == way),
                        key=lambda r: r["plan"]["seed"])
            if not rs:
                continue

            def ms(key: str) -> str:
                v = [100 * r[key] for r in rs]
                return f"{statistics.fmean(v):.2f} ± {statistics.stdev(v):.2f}" if len(v) > 1 else f"{v[0]:.2f}"

            per = ", ".join(f"{100 * r['final_miou']:.2f}" for r in rs)
            lines.append(f"| {model} | {way} | {','.join(str(r['plan']['seed']) for r in rs)} | {ms('best_miou')} | "
                         f"{ms('final_miou')} | {per} | {statistics.fmean(r['wall_s'] for r in rs) / 60:.0f} |")
        lines += ["", "Paired differences over seeds (mIoU points; t = mean / (std / sqrt(n)); with n = 3, |t| > 4.30 is "
                  "p < 0.05 two-sided):", "", "| student | comparison | on | mean | std | n | t | per seed |",
                  "|---|---|---|---|---|---|---|---|"]
        for a, b in (("kd", "alone"), ("kd+rdd", "kd"), ("kd+rdd", "alone"), ("kd+rdd-or", "kd"), ("kd+rdd-and", "kd"),
                     ("cwd", "alone"), ("cwd+rdd", "cwd")):
            for key in ("best_miou", "final_miou"):
                d = paired(students, model, a, b, key)
                if d:
                    t = "-" if d["t"] is None else f"{d['t']:.2f}"
                    lines.append(f"| {model} | {a} - {b} | {key.split('_')[0]} | {d['mean']:+.2f} | {d['std']:.2f} | {d['n']} | "
                                 f"{t} | {', '.join(f'{x:+.2f}' for x in d['diffs'])} |")
    cpus = sorted({r["cpu"]["line"].split(".")[0] for r in recs})
    lines += ["", f"CPU: {'; '.join(cpus)}. Commits: {', '.join(sorted({str(r.get('commit')) for r in recs}))}."]
    md = "\n".join(lines) + "\n"
    plot_path = Path(args.plot) if args.plot else args.results / "camvid_cpu.png"
    try:
        plot(students, plot_path)
    except Exception as exc:  # a plot must never lose the numbers
        print(f"warning: plot not drawn: {exc}", file=sys.stderr)
    return md


def plot(students: Sequence[dict], path: Path) -> None:
    """Per-way points per seed (final and best val mIoU), one panel per student."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["plan"]["model"] for r in students))
    fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        ways = [w for w in list(MAIN_WAYS) + list(EXTRA_WAYS)
                if any(r["plan"]["model"] == model and r["plan"]["way"] == w for r in students)]
        for k, way in enumerate(ways):
            rs = [r for r in students if r["plan"]["model"] == model and r["plan"]["way"] == way]
            for j, r in enumerate(sorted(rs, key=lambda r: r["plan"]["seed"])):
                ax.scatter(k - 0.08, 100 * r["final_miou"], color=f"C{j}", marker="o", label=f"seed {r['plan']['seed']} final" if k == 0 else None)
                ax.scatter(k + 0.08, 100 * r["best_miou"], color=f"C{j}", marker="^", alpha=0.6, label=f"seed {r['plan']['seed']} best" if k == 0 else None)
            ax.hlines(statistics.fmean(100 * r["final_miou"] for r in rs), k - 0.25, k + 0.25, color="k", lw=1)
        ax.set_xticks(range(len(ways)), ways)
        ax.set_ylabel("val mIoU (%)")
        ax.set_title(f"CamVid (half size), {model}: per seed; line = mean of final")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


# ---------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    plan = build_plan(args)
    if args.report:
        md = report(args)
        print(md)
        if args.report_md:
            atomic_write_text(Path(args.report_md), md)
        return 0
    if args.plan:
        print_plan(plan, args, measure_steps(plan, args))
        return 0

    import torch

    from rdd_edge.distill.train import fit_threads

    fit_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python -m benchmarks.camvid_cpu " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    print(command, flush=True)
    print_plan(plan, args, None)
    args.results.mkdir(parents=True, exist_ok=True)
    args.runs.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = open_data(args.data, args.size, args.limit)
    test_reader = open_test(Path(args.test), args.size) if args.test else None
    print(f"data: {len(data.train)} train / {len(data.val)} val images at {args.size[0]}x{args.size[1]} "
          f"decoded in {time.perf_counter() - t0:.1f}s; torch threads {torch.get_num_threads()}", flush=True)

    teacher: Path | None = None
    for k, run in enumerate(plan):
        rec = finished(args, run)
        if run.way == "teacher":
            teacher = args.runs / run.id / "best.pt"
            if rec is not None and teacher.is_file():
                print(f"[{k + 1}/{len(plan)}] {run.id}: done (result and checkpoint here)", flush=True)
                continue
            if rec is not None and all(finished(args, r) is not None or (args.only and r.id not in args.only)
                                       for r in plan if r.way != "teacher"):
                print(f"[{k + 1}/{len(plan)}] {run.id}: done; every student is done too", flush=True)
                continue
            if rec is not None:
                print(f"[{k + 1}/{len(plan)}] {run.id}: result here but no checkpoint ({teacher}): training it again "
                      "for the student runs left (their results record the teacher's sha256)", flush=True)
        elif rec is not None:
            print(f"[{k + 1}/{len(plan)}] {run.id}: done, final val mIoU {100 * rec['final_miou']:.2f}", flush=True)
            continue
        if args.only and run.id not in args.only and run.way != "teacher":
            continue
        print(f"[{k + 1}/{len(plan)}] {run.id}: {run.iters} its ({time.perf_counter() - t0:.0f}s into the study)", flush=True)
        rec = train_one(run, args, data, teacher if run.way != "teacher" else None, test_reader if run.way != "teacher" else None)
        if run.way == "teacher" and finished(args, run) is not None:  # a retrained teacher keeps the first result file
            rec = None
        if rec is not None:
            write_json(result_path(args, run), rec)
            print(f"{run.id}: best val mIoU {100 * rec['best_miou']:.2f}, final {100 * rec['final_miou']:.2f}, "
                  f"{rec['wall_s'] / 60:.1f} min -> {result_path(args, run)}", flush=True)
    print(f"study finished in {(time.perf_counter() - t0) / 60:.1f} min; `python -m benchmarks.camvid_cpu --report` "
          "writes the table", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RddError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
