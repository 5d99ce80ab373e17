"""Entry point of the ``rdd-edge`` console script (and of ``python -m rdd_edge``).

Imports every stage's command module (each registers on :data:`rdd_edge.app.app`) and turns
:class:`~rdd_edge.errors.RddError` into one line on stderr and exit code 1.
"""

from __future__ import annotations

import sys

from rdd_edge.app import app, state
from rdd_edge.commands import data, deploy, distill, export, importing, models, pipeline  # noqa: F401  (register the commands)
from rdd_edge.errors import RddError
from rdd_edge.extras import install_hint

# what the `train` extra installs: a command that needs it on a deploy-only install says so in one line
TRAIN_STACK = {"torch", "torchvision", "timm", "onnxscript", "onnxslim", "tensorboard"}


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; library errors become one clear line and exit code 1."""
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    try:
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
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
