"""Export stage: torch -> ONNX -> FP16 / INT8 (QDQ) ONNX -> TensorRT engines.

One function per artifact (``export_onnx``, ``export_fp16``, ``export_int8``, ``build_engine``),
path in and path out; :func:`export.pipeline.export_run` chains them for a run folder and writes
``manifest.json``. Submodules import torch / onnx / tensorrt lazily, so importing this package
is cheap.
"""
