"""The typer application that every stage's commands register on.

Command modules live in ``rdd_edge/cli/commands/`` and do ``@app.command()`` at import; they keep
heavy imports (torch, onnx) inside the command bodies so ``rdd-edge --help`` stays fast and
works without torch.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from rdd_edge import __version__

app = typer.Typer(
    name="rdd-edge",
    help=(
        "Distill small segmentation students with Relative Difficulty Distillation (RDD), "
        "export them to ONNX / FP16 / INT8 / TensorRT, and deploy them.\n\n"
        "Typical use: rdd-edge pipeline | rdd-edge distill --student mbv2 | "
        "rdd-edge export --trt fp16 | rdd-edge demo --source video.mp4"
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"rdd-edge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    state["debug"] = debug
