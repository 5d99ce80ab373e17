"""Folders that several tests read (conftest.py's session fixtures, a test module's module fixtures):
built once, read-only for the tests, checked at teardown.

A test that changes files copies the shared folder first (``shutil.copytree`` into its own ``tmp_path``),
so the tests stay independent of each other and of the order they run in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest


def folder_digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative path -> sha256): what a shared folder must still hold at the end."""
    from rdd_edge.runs import sha256_file

    return {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def read_only(folder: Path) -> Iterator[Path]:
    """Yield a shared folder (``yield from`` it in a fixture); at teardown fail, naming the files, if a test
    changed the folder instead of copying it."""
    before = folder_digest(folder)
    yield folder
    after = folder_digest(folder)
    if after != before:
        changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        pytest.fail(f"{folder}: a test changed this shared folder ({', '.join(changed)}); copy it to tmp_path first")
