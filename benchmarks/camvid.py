"""CamVid reproduction of the paper's effect: RDD against the student alone and plain KD.

Protocol (issue 4): a DeepLabV3-R101 teacher trained on CamVid train; students DeepLabV3-R18,
DeepLabV3-MBV2 and PSPNet-R18, each trained three ways at the same budget (alone, KD, KD + RDD)
over several seeds; ablations on DeepLabV3-R18 (RDD mode xor/or/and, TFE fraction 0/0.1,
threshold 0.6/0.7/0.8). Every run is one call of ``distill.train.train`` with a ``TrainData``
whose batches come from a decoded copy of CamVid held on the GPU (augmented there). This script
reads top to bottom: options, plan (``camvid_plan``), data (``camvid_data``), the runs, and the
report (``camvid_report``: ``results.json`` / ``results.md`` / training-curve PNGs in ``--out``).

The default budget fits the main rows into about 20 minutes of one H100 (see ``--dry-run``)::

    python -m benchmarks.camvid --data data/camvid --out $OUT/camvid --dry-run
    setsid nohup python -m benchmarks.camvid --data data/camvid --out $OUT/camvid --runs /tmp/camvid-runs \\
        > $OUT/camvid.log 2>&1 < /dev/null &
    python -m benchmarks.camvid --data data/camvid --out /tmp/c --device cpu --iters 4 --teacher-iters 4 \\
        --crop 64 --batch 2 --seeds 0 --students r18 --limit 8      # CPU smoke test

All runs start from scratch by default (``--pretrained none``: no ImageNet weights exist offline here).
Training validates on val (the curves); the final weights of every run are then scored on the
test split, as the paper's CamVid numbers are (the released ``eval.py`` scores the 233-image
CamVid test list), whenever the folder has one; without one the script says so and the val
numbers stand alone.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

from benchmarks.camvid_data import open_camvid
from benchmarks.camvid_plan import DEFAULTS, PAPER, STUDENTS, RunSpec, build_plan, print_plan, run_config
from benchmarks.camvid_report import copy_logs, print_paper, record_of, write_results
from rdd_edge.errors import ConfigError, RddError
from rdd_edge.runs import read_json, write_json
from rdd_edge.sizes import parse_hw


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The options, with the defaults of --scale resolved and every value checked."""
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
    p.add_argument("--pretrained", default="none", help="backbone init of every trained network: none (default: the "
                   "protocol trains from scratch), imagenet, or a backbone file (rdd-edge distill --pretrained)")
    p.add_argument("--eval-data", default=None, help="score final weights on this folder (its test split, else val) "
                   "instead of --data's test split")
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
    args.crop = parse_hw(args.crop, "--crop") if args.crop else (PAPER["crop"] if paper else DEFAULTS["crop"])
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
    from rdd_edge.models import resolve_name

    args.students = [resolve_name(s) for s in args.students.split(",") if s.strip()]
    if not args.students:
        raise ConfigError("--students: name at least one student (r18, mbv2, psp18)")
    args.out = Path(args.out)
    args.runs = Path(args.runs) if args.runs else args.out / "runs"
    args.data = Path(args.data)
    return args


def eval_split(root: str | Path) -> str:
    """The split final weights are scored on: test when the folder has one (the paper's CamVid numbers are
    test numbers), else val."""
    from rdd_edge.data.camvid import find_splits

    return "test" if "test" in find_splits(Path(root)) else "val"


def final_eval(args) -> tuple[Path, str] | None:
    """(folder, split) the final weights of every run are scored on: ``--eval-data`` (its test split, else val),
    else ``--data``'s test split; None when ``--data`` has no test split (training's val numbers stand alone)."""
    if args.eval_data:
        return Path(args.eval_data), eval_split(args.eval_data)
    return (Path(args.data), "test") if eval_split(args.data) == "test" else None


def run_one(spec: RunSpec, args, data, teacher: str | None) -> dict:
    """Train one planned run with ``distill.train.train`` and return its record (also in logs/<id>/summary.json)."""
    from rdd_edge.distill.train import train

    run_dir, log_dir = args.runs / spec.id, args.out / "logs" / spec.id
    resume = run_dir / "last.pt" if args.resume and (run_dir / "last.pt").is_file() else None
    t = time.perf_counter()
    summary = train(run_config(spec, args, teacher, args.runs), resume=resume, data=data, run_dir=run_dir,
                    progress=sys.stdout.isatty())
    wall = time.perf_counter() - t
    copy_logs(run_dir, log_dir)
    rec = record_of(spec, summary, wall, log_dir, args.batch)
    target = final_eval(args)
    if target is not None and Path(summary["last"]).is_file():  # the eval stage's entry point on the final weights
        from rdd_edge.distill.evaluate import EvalSpec, evaluate_checkpoint

        root, split = target
        res = evaluate_checkpoint(EvalSpec(summary["last"], data=root, split=split, device=args.device, batch=args.batch))
        rec["eval_data"] = {split: float(res.metrics.miou)}
    write_json(log_dir / "summary.json", rec)
    return rec


def main(argv: Sequence[str] | None = None) -> int:
    import datetime
    import shlex

    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 140)  # a detached log gets whole rows

    # -- options and plan
    args = parse_args(argv)
    plan = build_plan(args.students, args.seeds, args.only, args.iters, args.teacher_iters, args.ablation_seeds,
                      train_teacher=args.teacher is None)
    print_plan(console, plan, tuple(args.crop), args.batch, args.val_points)
    if args.dry_run:
        print_paper(console)
        return 0

    # -- device and data (decoded once for all runs)
    import torch

    from rdd_edge.distill.dist import init_distributed

    device = init_distributed(args.device)  # the trainer's --device resolution (ConfigError without CUDA)
    args.device = str(device)
    if args.gpu_data is None:
        args.gpu_data = device.type == "cuda"
    if args.teacher is not None and not Path(args.teacher).is_file():
        raise ConfigError(f"--teacher {args.teacher}: checkpoint not found")
    args.out.mkdir(parents=True, exist_ok=True)
    args.runs.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = open_camvid(args.data, args.device, args.gpu_data, args.limit)
    where = f"on {args.device} ({data.train.nbytes / 2**20:.0f} MiB)" if args.gpu_data else "in RAM (CPU augmentation)"
    console.print(f"data: {len(data.train)} train / {len(data.val)} val images decoded in {time.perf_counter() - t0:.1f}s, "
                  f"train set {where}")
    meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "command": "python -m benchmarks.camvid " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
            "iters": args.iters, "teacher_iters": args.teacher_iters, "batch": args.batch,
            "crop": f"{args.crop[0]}x{args.crop[1]}", "seeds": args.seeds, "gpu_data": args.gpu_data,
            "torch": torch.__version__, "pretrained": args.pretrained}
    target = final_eval(args)
    meta["eval_data"] = f"{target[0]} ({target[1]})" if target else None
    if target is None:
        meta["note"] = (f"{args.data} has no test split: the runs are scored on val only; the paper's CamVid numbers "
                        "are on the 233-image test split (the released eval.py), so compare gains, not values")
        console.print(f"note: {meta['note']}")

    # -- the runs, in plan order; results rewritten after each (a killed job keeps what it finished)
    records: list[dict] = []
    teacher = args.teacher
    t_all = time.perf_counter()
    for k, spec in enumerate(plan):
        done = args.out / "logs" / spec.id / "summary.json"
        if args.resume and done.is_file():
            records.append(read_json(done))
            console.print(f"[{k + 1}/{len(plan)}] {spec.id}: done before (resume), "
                          f"best mIoU {100 * (records[-1]['best_miou'] or 0):.2f}")
        else:
            write_json(args.out / "status.json", {"running": spec.id, "index": k + 1, "total": len(plan),
                                                  "elapsed_s": time.perf_counter() - t_all, "log": str(args.runs / spec.id)})
            console.rule(f"[{k + 1}/{len(plan)}] {spec.id} ({spec.iters} its)")
            records.append(run_one(spec, args, data, teacher))
            rec = records[-1]
            console.print(f"{spec.id}: best mIoU {100 * (rec['best_miou'] or 0):.2f}, final {100 * (rec['final_miou'] or 0):.2f}, "
                          f"{rec['wall_s']:.0f}s, {rec['images_per_s'] or 0:.3g} img/s")
            write_results(records, args.out, meta)
        if spec.way == "teacher":
            teacher = records[-1].get("best")
            if not teacher or not Path(teacher).is_file():
                raise ConfigError(f"{done}: the teacher's checkpoint {teacher} is missing; pass --teacher CKPT")

    # -- report
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
