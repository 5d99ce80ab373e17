"""Shared pytest setup: few torch threads (the suite runs on a 2-core CI machine) and the export folders
several test files read.

A shared folder is built once per session and is read-only for the tests: a test that changes files
copies it first (``shutil.copytree`` into its own ``tmp_path``; ``trt_double.copied_export``), so the
tests stay independent of each other and of their order; shared_folders.read_only checks that at teardown.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

from pathlib import Path  # noqa: E402
from typing import Iterator  # noqa: E402

import pytest  # noqa: E402

from shared_folders import read_only  # noqa: E402


@pytest.fixture(scope="session")
def trt_export_src(tmp_path_factory) -> Iterator[Path]:
    """A tiny export folder (``trt_double.EXPORT_SIZE``: FP32, FP16, both INT8 files, manifest) for the tests
    around the TensorRT double (test_trt_acceptance, test_trt_wiring, test_trt_contract)."""
    from trt_double import make_export, stubs

    stubs()  # skip (locally) / fail (CI) early without the stubs
    yield from read_only(make_export(tmp_path_factory.mktemp("trt-export")))


@pytest.fixture(scope="session")
def synthetic_export_src(tmp_path_factory) -> Iterator[Path]:
    """``runs/distill-x/export``: a torch-free export of a tiny 11-class network with the manifest the export
    stage writes (deploy_utils.synthetic_export), for the bundle and untrusted-input tests."""
    from deploy_utils import synthetic_export

    yield from read_only(synthetic_export(tmp_path_factory.mktemp("synthetic-export") / "runs" / "distill-x" / "export"))


@pytest.fixture
def add_format_rows(monkeypatch):
    """Append made-up rows to the export formats table, and to BY_KEY and ORDER derived from it, for one test."""
    from rdd_edge import formats

    def add(*rows):
        monkeypatch.setattr(formats, "FORMATS", (*formats.FORMATS, *rows))
        monkeypatch.setattr(formats, "BY_KEY", {**formats.BY_KEY, **{r.key: r for r in rows}})
        monkeypatch.setattr(formats, "ORDER", (*formats.ORDER, *(r.key for r in rows)))

    return add
