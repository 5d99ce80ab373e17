"""Shared pytest setup: keep torch to few threads so the suite behaves on a 2-core CI machine."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MPLBACKEND", "Agg")
