"""Entry point of the ``rdd-edge`` console script (and of ``python -m rdd_edge``).

Imports every stage's command module (each registers on :data:`rdd_edge.cli.app.app`) and turns
:class:`~rdd_edge.errors.RddError` into one line on stderr and exit code 1.
"""

from __future__ import annotations

import sys

from rdd_edge.cli.app import app, state
from rdd_edge.cli.commands import data, deploy, distill, export, importing, models, pipeline, qat  # noqa: F401  (register the commands)
from rdd_edge.errors import RddError
from rdd_edge.extras import install_hint
from rdd_edge.interrupts import Terminated, sigterm_received, terminate_like_ctrl_c

# what the `train` extra installs: a command that needs it on a deploy-only install says so in one line
TRAIN_STACK = {"torch", "torchvision", "timm", "onnxscript", "onnxslim", "tensorboard"}


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; library errors become one clear line and exit code 1."""
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    try:
        with terminate_like_ctrl_c():  # docker stop / SLURM / timeout: saved and cleaned up like Ctrl-C
            app()
    except RddError as exc:
        if state["debug"] or "--debug" in sys.argv:
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except ModuleNotFoundError as exc:
        if exc.name not in TRAIN_STACK or state["debug"] or "--debug" in sys.argv:
            raise
        print(f"error: this command needs the training stack ({exc.name} is not installed): "
              f"{install_hint('train')}; the deploy-only install runs check, demo and engine", file=sys.stderr)
        sys.exit(1)
    except SystemExit as exc:  # typer ends a KeyboardInterrupt (ours for SIGTERM too) as exit code 130
        if exc.code == 130 and sigterm_received():
            print("terminated (SIGTERM)", file=sys.stderr)
            sys.exit(143)  # what an unhandled SIGTERM would give: schedulers read it as "stopped", not "failed"
        raise
    # typer (0.29 here) ends a KeyboardInterrupt inside a command as exit 130 (above); these two catch one that
    # arrives outside typer's handling (while the command modules import, or an older typer)
    except Terminated:
        print("terminated (SIGTERM)", file=sys.stderr)
        sys.exit(143)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
