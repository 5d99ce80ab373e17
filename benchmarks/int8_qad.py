"""INT8: quantization-aware distillation (``rdd-edge qat``) vs PTQ, both measured in one run (issue 28).

    python -m benchmarks.int8_qad RUN_OR_CKPT --out /tmp/qadb [--iters 200] [--lr 1e-4] [--batch 8]
        [--data DIR] [--size 360x480] [--calib 100] [--check-images 100] [--teacher CKPT] [--int8-only]
        [--crop 144x192] [--json F]
    python -m benchmarks.int8_qad --pipeline --out /tmp/qadb [...]   # the pipeline's student, synthetic data

The run's checkpoint is copied into ``OUT/<name>/best.pt`` (the source run folder is only read), exported
there with ``--int8`` (PTQ, ``export.pipeline.export_run``, what the CLI runs), then fine-tuned with
``export.qad.run_qad`` (what ``rdd-edge qat`` runs), which quantizes and scores the PTQ files and the QAD
files on the same check images. ``--pipeline`` first runs ``rdd-edge pipeline`` (synthetic scenes) into
``OUT/runs`` and takes its student and export. Prints drop and label agreement with FP32, before and after,
per file, the timings and the CPU (``rdd_edge.cpuinfo``); ``--json`` writes them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import time
from pathlib import Path
from typing import Sequence


def _table(q: dict) -> str:
    rows = ["| file | PTQ drop | PTQ agree % | QAD drop | QAD agree % |", "|---|---|---|---|---|"]
    for f, v in q["files"].items():
        b, a = v["before"], v["after"]
        rows.append(f"| {f} | {b['drop']:.2f} | {b['agreement']:.1f} | {a['drop']:.2f} | {a['agreement']:.1f} |")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    from rich.console import Console

    from rdd_edge.cpuinfo import detect
    from rdd_edge.export.formats import ExportSpec
    from rdd_edge.export.pipeline import export_run, find_checkpoint
    from rdd_edge.export.qad import QadSpec, run_qad

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", nargs="?", help="distill run folder or checkpoint (read only)")
    ap.add_argument("--pipeline", action="store_true", help="run `rdd-edge pipeline` into OUT/runs and use its student")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--name", default=None, help="folder of the copied run (default: the source run's name)")
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--teacher", default=None)
    ap.add_argument("--int8-only", action="store_true")
    ap.add_argument("--data", default=None)
    ap.add_argument("--size", default=None)
    ap.add_argument("--calib", type=int, default=100)
    ap.add_argument("--check-images", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--crop", default=None, help="HxW training windows (qat --crop)")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    if bool(a.pipeline) == bool(a.source):
        ap.error("give a RUN_OR_CKPT or --pipeline")
    console = Console()
    t0 = time.perf_counter()
    times: dict[str, float] = {}
    if a.pipeline:
        from rdd_edge.cli.pipeline import PipelineSpec, run_pipeline

        res = run_pipeline(PipelineSpec(runs_root=a.out / "runs", progress=False))
        times["pipeline"] = round(time.perf_counter() - t0, 1)
        run = Path(res.run_dir)
        source = str(find_checkpoint(run))
    else:
        ckpt = find_checkpoint(a.source)
        run = a.out / (a.name or ckpt.parent.name)
        if run.exists():
            shutil.rmtree(run)
        run.mkdir(parents=True)
        shutil.copy2(ckpt, run / "best.pt")
        source = str(ckpt)
        t = time.perf_counter()
        export_run(ExportSpec(source=run / "best.pt", int8=True, size=a.size, data=a.data, calib=a.calib,
                              check_images=a.check_images), console=console)
        times["export_ptq"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    man = run_qad(QadSpec(run, iters=a.iters, lr=a.lr, batch=a.batch, teacher=a.teacher, int8_only=a.int8_only,
                          data=a.data, device=a.device,
                          crop=tuple(int(v) for v in a.crop.split("x")) if a.crop else None), console=console)
    times["qad"] = round(time.perf_counter() - t, 1)
    q = man["qad"]
    cpu = detect().as_dict()
    result = {"source": source, "model": man["model_name"], "input_size": man["input"]["size"],
              "check_images": man["artifacts"]["onnx"].get("checked_images"), "fp32_miou": 100 * man["artifacts"]["onnx"]["miou"]
              if man["artifacts"]["onnx"].get("miou") is not None else None, "qad": q, "seconds": times,
              "cpu": cpu, "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    console.print(_table(q), markup=False, highlight=False)
    console.print(f"{result['model']} {result['input_size'][0]}x{result['input_size'][1]}, {result['check_images']} check "
                  f"images, FP32 mIoU {result['fp32_miou']}; QAD {q['iterations']} steps, lr {q['lr']:g}, batch "
                  f"{q['batch']}, teacher {q['teacher']}; loss {q['loss']['first']:.3f} -> {q['loss']['last']:.3f}; "
                  f"times {times}; CPU {cpu.get('line') or cpu}; {result['date']}", markup=False, highlight=False)
    if a.json is not None:
        a.json.write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
