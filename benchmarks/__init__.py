"""Benchmark scripts (run as files: ``python benchmarks/<name>.py``); a package so tests and the
CamVid modules can import one another as ``benchmarks.<name>``."""
