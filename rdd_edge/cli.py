"""Entry point of the ``rdd-edge`` console script.

Imports every stage's command module (each registers on :data:`rdd_edge.app.app`) and turns
:class:`~rdd_edge.errors.RddError` into one line on stderr and exit code 1.
"""

from __future__ import annotations

import importlib
import sys

from rdd_edge.app import app, state
from rdd_edge.errors import RddError

# One module per stage; a module that is not there yet is simply skipped.
COMMAND_MODULES = ("models", "data", "distill", "export", "deploy", "pipeline")


def _register() -> None:
    for name in COMMAND_MODULES:
        try:
            importlib.import_module(f"rdd_edge.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"rdd_edge.commands.{name}":
                raise


_register()


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
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
