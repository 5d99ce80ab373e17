"""Shared pytest setup: keep torch to few threads so the suite behaves on a 2-core CI machine."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402


@pytest.fixture(scope="module")
def trt_export_src(tmp_path_factory):
    """A tiny export folder (FP32, FP16, both INT8 files, manifest) for the tests around the TensorRT double."""
    from trt_double import make_export, stubs

    stubs()
    return make_export(tmp_path_factory.mktemp("trt-export"), (16, 24))
