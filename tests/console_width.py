"""The console width a test reads the CLI's output at, the same on every machine.

rich wraps its tables and lines at ``$COLUMNS``, else at the terminal's width (``pytest -s`` in a narrow
window), else at 80 columns; cells fold (``deeplabv3_mbv2`` -> ``deeplabv3_mb`` / ``v2``) and long
paths (``/tmp/pytest-of-<user>/...``: longer for a longer user name or ``$TMPDIR``) break across lines.
A test that looks for a word in a table or a path in a line therefore runs the command at a width it
sets: :data:`WIDE`, wide enough for any table and any temporary path. What a person sees in 80 columns
is tested on its own (test_widths.py, test_int8_budget.py).
"""

from __future__ import annotations

import os

from typer.testing import CliRunner

WIDE = {"COLUMNS": "240", "LINES": "50"}


def wide_runner() -> CliRunner:
    """A CliRunner whose commands see ``COLUMNS=240`` (a Console() made inside a command reads it then)."""
    return CliRunner(env=WIDE)


def wide_env() -> dict[str, str]:
    """``os.environ`` with ``COLUMNS=240``, for a CLI run in a subprocess."""
    return {**os.environ, **WIDE}
