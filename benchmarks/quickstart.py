"""The quickstart as a newcomer runs it: ``rdd-edge pipeline`` in a fresh folder, timed per stage.

Runs the pipeline in a child process (a fresh interpreter, as from the shell) and reads the stage
times and mIoUs it records in ``pipeline.json``. ``--before`` runs the same code with the CPU
training settings of before issue 21 (every scene rendered on each use, two loader workers,
contiguous NCHW tensors), so both figures come from one machine in one session.

    python -m benchmarks.quickstart                       # the pipeline as shipped
    python -m benchmarks.quickstart --before              # the same, with the old CPU training settings
    python -m benchmarks.quickstart -- --teacher-iters 150  # pipeline options after --
    python -m benchmarks.quickstart --isa avx             # torch's kernels capped to an older x86 class

``--isa`` caps the instruction sets torch's CPU kernels may use (ATen's vectorised ops, oneDNN's
convolutions) through their own environment variables, so one machine also times an older x86 class
than its own: torch on an AVX-only CPU runs exactly these kernels. (The pipeline's training makes no
MKL call, checked with MKL_VERBOSE=1, so MKL needs no cap.) The cap is set in the child only and the child checks it took;
ONNX Runtime (INT8 calibration, check) has no such switch and keeps the machine's full instruction set.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rdd_edge.cpuinfo import detect

# The old settings, applied inside the child before the CLI runs: no render cache, 2 workers, NCHW.
_BEFORE = """
import rdd_edge.data.synthetic as S
import rdd_edge.distill.train as T
S._CACHE.limit = 0
_train = T.train
def train(cfg, *a, **k):
    cfg.channels_last, cfg.workers = False, 2
    return _train(cfg, *a, **k)
T.train = train
"""


# An x86 class older than the machine's, per library: ATen has only default / AVX2 / AVX-512 builds
# of its vectorised kernels, so "default" (SSE) is what it runs below AVX2.
ISA_CAPS = {
    "avx": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "AVX"},
    "sse4": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"},
}

# Fails the child at once if ATen ignored the cap (a misspelt value falls back to the best silently).
_CHECK_CAP = """
import torch
if torch.backends.cpu.get_cpu_capability() != "DEFAULT":
    raise SystemExit("ATEN_CPU_CAPABILITY did not take: " + torch.backends.cpu.get_cpu_capability())
"""


def run(before: bool, extra: list[str], folder: Path, isa: str | None = None) -> dict:
    """Run the pipeline once in ``folder``; its pipeline.json plus the wall time seen from outside."""
    code = (_CHECK_CAP if isa else "") + (_BEFORE if before else "") + "from rdd_edge.cli import main\nmain(sys.argv[1:])\n"
    cmd = [sys.executable, "-c", "import sys\n" + code, "pipeline", "--runs", str(folder / "runs"), "--quiet", *extra]
    env = {**os.environ, **ISA_CAPS.get(isa or "", {})}
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    found = sorted((folder / "runs").glob("*/pipeline.json"))
    if proc.returncode != 0 and not found:  # a failed accuracy gate still writes pipeline.json: its times count
        raise SystemExit(f"pipeline failed (exit {proc.returncode}):\n{(proc.stderr or proc.stdout)[-3000:]}")
    result = json.loads(found[-1].read_text())
    result["wall_s"] = wall
    return result


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--before", action="store_true", help="the CPU training settings of before issue 21")
    p.add_argument("--isa", choices=sorted(ISA_CAPS), default=None,
                   help="cap torch's CPU kernels to an older x86 instruction set (ONNX Runtime keeps the full one)")
    p.add_argument("--json", default=None, help="write the figures here")
    args = p.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    with tempfile.TemporaryDirectory(prefix="quickstart-") as tmp:
        res = run(args.before, extra, Path(tmp), args.isa)
    cpu = detect().line() + (f" Torch's kernels capped to {args.isa.upper()}: {ISA_CAPS[args.isa]}." if args.isa else "")
    report = {"cpu": cpu, "isa_cap": args.isa, "variant": "before" if args.before else "after", "options": extra,
              "date": time.strftime("%Y-%m-%d"), "times_s": res["times_s"], "total_s": res["total_s"],
              "wall_s": res["wall_s"], "teacher_miou": res["teacher_miou"], "student_miou": res["student_miou"],
              "gate_failed": res["gate_failed"]}
    t = res["times_s"]
    print(f"CPU: {report['cpu']}")
    print(f"{report['variant']} {' '.join(extra)}: total {res['wall_s']:.0f} s (" +
          ", ".join(f"{k} {v:.0f} s" for k, v in t.items()) +
          f"); teacher {100 * res['teacher_miou']:.2f} / student {100 * res['student_miou']:.2f} mIoU; gate "
          + ("FAILED" if res["gate_failed"] else "passed"))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
