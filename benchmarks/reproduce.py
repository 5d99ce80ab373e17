"""Reproduce the paper's Cityscapes DeepLabV3-R18 rows on a GPU: import + eval the teacher, then baseline / KD / KD+RDD.

Given the paper-era Cityscapes teacher and ``resnet18-imagenet.pth`` (docs/reproduction.md, "The
paper-era files") and the Cityscapes folder::

    python -m benchmarks.reproduce --teacher deeplabv3_resnet101_citys_best_model.pth \\
        --backbone resnet18-imagenet.pth --data /data/cityscapes --dry-run     # the plan and its time
    python -m benchmarks.reproduce --teacher ... --backbone ... --data ...     # runs it; resumable

1. ``rdd-edge import`` of the teacher, then ``eval`` with the release's upsampling (expected: the
   README's 78.07 Val mIoU).
2. DeepLabV3-R18 from the ImageNet backbone: ``baseline`` (CE + aux), ``kd``, ``kd+rdd``, each with
   ``--recipe release`` and with the defaults (the paper's variant), over the seeds (default 0, 1, 2).
   Each run is one call of the trainer; its folder keeps ``config.json``, the logs, ``summary.json``
   and the checkpoints, and one result file ``<out>/results/<run>.json`` (best and final mIoU) is
   written when it ends: a run whose result file exists is skipped, so the study resumes.
3. ``<out>/RESULTS.md``: the table (mean and spread of best / final mIoU over the seeds) and the
   teacher's mIoU next to the expected one.

The time estimate of ``--dry-run`` multiplies the steps by ``--sec-per-step``, which is an assumption
unless you pass a value measured on your GPU (``benchmarks/distill_speed.py``). ``--dataset synthetic``
with ``--iters`` / ``--batch`` / ``--crop`` / ``--teacher-model`` / ``--student`` runs the same plan
tiny on a CPU (the test suite does).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any, Sequence

# lazy imports: the trainer, the importer and eval (torch) are imported inside the functions that run them,
# so --dry-run prints the plan without loading torch
from rdd_edge.errors import RddError
from rdd_edge.runs import atomic_write_text, read_json, write_json
from rdd_edge.sizes import parse_hw

EXPECTED_TEACHER = {"cityscapes": 78.07}  # CIRKD README at commit 91735ef (rdd_edge/sources.py)
WAYS: dict[str, dict[str, Any]] = {
    "baseline": dict(method="none", rdd=False),
    "kd": dict(method="kd", rdd=False),
    "kd+rdd": dict(method="kd", rdd=True),
}
VARIANTS = ("release", "defaults")
ASSUMED_SEC_PER_STEP = 0.5  # NOT measured: an assumed H100 step of R18 + R101 teacher at 16 x 512x1024


def plan(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every student run: variant, way, seed, its name and iterations."""
    iters = args.iters or 40000
    return [dict(variant=v, way=w, seed=s, name=f"repro-{v}-{w.replace('+', '-')}-s{s}", iters=iters)
            for v in args.variants for w in args.ways for s in args.seeds]


def print_plan(args: argparse.Namespace, runs: Sequence[dict[str, Any]]) -> None:
    steps = sum(r["iters"] for r in runs)
    sec = args.sec_per_step
    where = "measured (--sec-per-step)" if sec is not None else "ASSUMED, not measured: pass --sec-per-step"
    sec = ASSUMED_SEC_PER_STEP if sec is None else sec
    print(f"1. import {args.teacher} as {args.teacher_model} ({args.dataset}), eval (expected "
          f"{EXPECTED_TEACHER.get(args.dataset, '-')} mIoU)")
    for r in runs:
        print(f"2. {r['name']}: {args.student}, {r['way']}, {'--recipe release' if r['variant'] == 'release' else 'defaults'}, "
              f"seed {r['seed']}, {r['iters']} iterations")
    print(f"3. {Path(args.out) / 'RESULTS.md'}")
    print(f"{len(runs)} runs, {steps} steps; at {sec:g} s/step ({where}): {steps * sec / 3600:.1f} h")


def options(args: argparse.Namespace, run: dict[str, Any], teacher: Path) -> dict[str, Any]:
    """The trainer options of one run (resolve_config's keywords)."""
    opts: dict[str, Any] = dict(model=args.student, teacher=str(teacher), seed=run["seed"], name=run["name"],
                                runs_root=str(Path(args.out) / "runs"), data=args.data, pretrained=args.backbone,
                                iters=args.iters, batch=args.batch, crop=args.crop, val_every=args.val_every,
                                **WAYS[run["way"]])
    if run["variant"] == "release":
        opts["recipe"] = "release"
    if args.dataset == "synthetic":
        opts.update(synthetic_train=args.images, synthetic_val=max(2, args.images // 2), workers=0)
    return opts


def import_teacher(args: argparse.Namespace) -> tuple[Path, float | None]:
    """The imported teacher's checkpoint and its mIoU (evaluated as the release does: align_corners)."""
    from rdd_edge.distill.evaluate import EvalSpec, evaluate_checkpoint
    from rdd_edge.distill.importer import ImportSpec, import_released

    runs = Path(args.out) / "runs"
    folder = runs / ("teacher-paper" if args.teacher_model in ("r101", "deeplabv3_r101") else "distill-paper")
    if not (folder / "best.pt").is_file():
        import_released(ImportSpec(args.teacher, args.teacher_model, args.dataset, args.data, "paper", runs))
    images = args.images if args.dataset == "synthetic" else None
    size = parse_hw(args.crop, "--crop") if args.dataset == "synthetic" and args.crop else None
    res = evaluate_checkpoint(EvalSpec(folder / "best.pt", args.dataset, args.data, images=images, eval_size=size,
                                       align_corners=True))
    return folder / "best.pt", res.metrics.miou


def run_all(args: argparse.Namespace) -> Path:
    """Import and evaluate the teacher, train every planned run not done yet, write RESULTS.md; its path."""
    from rdd_edge.distill.config import resolve_config
    from rdd_edge.distill.train import train

    out = Path(args.out)
    results = out / "results"
    teacher, teacher_miou = import_teacher(args)
    write_json(results / "teacher.json", {"miou": teacher_miou, "expected": EXPECTED_TEACHER.get(args.dataset)})
    for run in plan(args):
        path = results / f"{run['name']}.json"
        if path.is_file() and read_json(path).get("plan") == run:
            print(f"{run['name']}: done, skipped")
            continue
        cfg = resolve_config("distill", dataset=args.dataset, **options(args, run, teacher))
        summary = train(cfg, progress=not args.quiet)
        write_json(path, {"plan": run, "best_miou": summary["best_miou"], "last_miou": summary["last_miou"],
                          "steps": summary["steps"], "time_s": summary["time_s"], "run_dir": summary["run_dir"],
                          "recipe_changes": cfg.recipe_changes})
        print(f"{run['name']}: best {_pct(summary['best_miou'])}, final {_pct(summary['last_miou'])}")
    return write_report(args)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def _stat(values: list[float]) -> str:
    if not values:
        return "-"
    mean = 100 * statistics.fmean(values)
    return f"{mean:.2f}" + (f" ± {100 * statistics.stdev(values):.2f}" if len(values) > 1 else "")


def write_report(args: argparse.Namespace) -> Path:
    """RESULTS.md from the result files: per variant and way, best and final mIoU over the seeds."""
    results = Path(args.out) / "results"
    teacher = read_json(results / "teacher.json")
    lines = ["# DeepLabV3-R18 on the paper's teacher: --recipe release vs the defaults", "",
             f"Teacher (imported, eval with align_corners): {_pct(teacher.get('miou'))} mIoU "
             f"(expected {teacher.get('expected') or '-'}).", "",
             "| variant | way | seeds | best mIoU | final mIoU |", "|---|---|---|---|---|"]
    done = [read_json(p) for p in sorted(results.glob("repro-*.json"))]
    for v in VARIANTS:
        for w in WAYS:
            rows = [r for r in done if r["plan"]["variant"] == v and r["plan"]["way"] == w]
            if not rows:
                continue
            best = [r["best_miou"] for r in rows if r["best_miou"] is not None]
            last = [r["last_miou"] for r in rows if r["last_miou"] is not None]
            lines.append(f"| {v} | {w} | {len(rows)} | {_stat(best)} | {_stat(last)} |")
    path = Path(args.out) / "RESULTS.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _names(text: str, allowed: Sequence[str]) -> tuple[str, ...]:
    got = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [x for x in got if x not in allowed]
    if bad or not got:
        raise argparse.ArgumentTypeError(f"{text!r}: use some of {', '.join(allowed)}")
    return got


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.reproduce", description=__doc__.splitlines()[0])
    p.add_argument("--teacher", required=True, help="the paper-era teacher checkpoint (released key layout)")
    p.add_argument("--backbone", default=None, help="resnet18-imagenet.pth (the students' ImageNet start)")
    p.add_argument("--data", default=None, help="the Cityscapes folder")
    p.add_argument("--dataset", default="cityscapes")
    p.add_argument("--out", default="runs/reproduce")
    p.add_argument("--seeds", default="0,1,2", type=lambda s: tuple(int(x) for x in s.split(",") if x.strip()))
    names = lambda allowed: lambda s: _names(s, allowed)  # noqa: E731
    p.add_argument("--variants", default=",".join(VARIANTS), type=names(VARIANTS), help="release,defaults")
    p.add_argument("--ways", default=",".join(WAYS), type=names(tuple(WAYS)), help="baseline,kd,kd+rdd")
    p.add_argument("--teacher-model", default="r101")
    p.add_argument("--student", default="r18")
    p.add_argument("--iters", type=int, default=None, help="default: 40000 (the recipe and the Cityscapes preset)")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--crop", default=None, help="HxW (default: the recipe's / the data set's)")
    p.add_argument("--val-every", type=int, default=None)
    p.add_argument("--images", type=int, default=8, help="synthetic only: generated train images")
    p.add_argument("--sec-per-step", type=float, default=None, help="a measured seconds per step, for --dry-run")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the time estimate, run nothing")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    if args.dry_run:
        print_plan(args, plan(args))
        return 0
    try:
        print(f"results: {run_all(args)}")
    except RddError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
