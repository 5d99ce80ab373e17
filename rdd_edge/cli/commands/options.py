"""The options every command shares, declared once: one name, one help text, one set of choices.

``--dataset NAME`` is a data set name and ``--data PATH`` its folder everywhere; ``--runs`` is
the parent of run folders; ``--out`` is where a command writes; ``--device`` takes auto, cpu,
cuda or cuda:N. Commands import these ``Annotated`` types instead of restating them.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer

from rdd_edge.devices import DEVICE_CHOICES, check_threads
from rdd_edge.runs import DEFAULT_ROOT, check_run_name

DATASET_HELP = ("Data set name, one of `rdd-edge data list` (default: the run's, else synthetic; "
                "a folder's is detected from its layout).")
MODEL_HELP = "a name or alias of `rdd-edge models`"  # the registry is the list: no names written here
Dataset = Annotated[Optional[str], typer.Option("--dataset", help=DATASET_HELP)]
DatasetOfFolder = Annotated[Optional[str], typer.Option("--dataset", "--format", "-f", help=DATASET_HELP)]
Data = Annotated[Optional[Path], typer.Option(
    "--data", help="Data set folder (default: the run's; generated synthetic scenes need none).")]
Runs = Annotated[Path, typer.Option("--runs", help="Parent folder of run folders.")]
Device = Annotated[Optional[str], typer.Option("--device", help=f"Where to run: {DEVICE_CHOICES} (default auto).")]
def _threads(value: Optional[int]) -> Optional[int]:
    return check_threads(value)  # ConfigError: 1..the usable CPUs, before any work


Threads = Annotated[Optional[int], typer.Option("--threads", min=1, callback=_threads,
                                                help="CPU threads for inference, at most the CPUs this process may use (default: the runtime's choice).")]

def _run_name(value: Optional[str]) -> Optional[str]:
    return check_run_name(value)  # ConfigError: one line, before any work


Name = Annotated[Optional[str], typer.Option("--name", callback=_run_name, help="Run name (one folder name): runs/<stage>-<name>.")]
Seed = Annotated[Optional[int], typer.Option("--seed", help="Seed for init, data order and augmentation.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
EvalSize = Annotated[Optional[str], typer.Option("--eval-size", metavar="HxW", help="Eval image size HxW (default: the data set's; VOC and ADE20K: each image whole at its own size).")]
MaxDrop = Annotated[float, typer.Option("--max-drop", help="Gate: most mIoU points an artifact may lose vs FP32 ONNX.")]
RunArg = Annotated[Optional[Path], typer.Argument(
    metavar="[RUN]", help="Distill run folder or its export folder (default: the latest distill run with an export).")]
TrustCheckpoint = Annotated[bool, typer.Option(
    "--trust-checkpoint", help="Load a checkpoint that needs Python's full unpickler (it can run code: only files you made).")]

DEFAULT_RUNS = DEFAULT_ROOT


@contextlib.contextmanager
def checkpoint_trust(enabled: bool) -> Iterator[None]:
    """``--trust-checkpoint``: inside, checkpoints that need the full unpickler may load (files the user made)."""
    if not enabled:
        yield
        return
    from rdd_edge.models.checkpoint import trusted_checkpoints  # lazy: torch; --help stays torch-free

    with trusted_checkpoints():
        yield
