"""What the bad-input tests share: a fresh copy of the session's synthetic export to attack, an edit of its
manifest, and `rdd-edge check` on it (test_untrusted_inputs.py, test_bad_inputs4.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rdd_edge.cli import app

CHECK = ["--min-time", "0.01", "--no-torch", "--device", "cpu"]


@pytest.fixture
def export(synthetic_export_src, tmp_path) -> Path:
    """A fresh copy of the session's synthetic export (conftest.py): every test here edits or attacks it."""
    return Path(shutil.copytree(synthetic_export_src, tmp_path / "run" / "export"))


def _edit(export: Path, change) -> None:
    path = export / "manifest.json"
    m = json.loads(path.read_text())
    change(m)
    path.write_text(json.dumps(m))


def _check(export: Path, *extra: str):
    return CliRunner().invoke(app, ["check", str(export), *CHECK, *extra])
