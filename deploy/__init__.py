"""Torch-free edge runtime: ONNX Runtime and TensorRT backends, pre/post-processing, check, demo.

    from rdd_edge import deploy
    seg = deploy.load("runs/distill-x/export/model.int8-cpu.onnx", threads=2)
    label_map = seg.predict(rgb_uint8)      # HxW uint8, at the image's own size

Imports numpy, OpenCV, onnxruntime and the rdd_edge core only (never torch nor models), so it
runs on a Jetson or a CPU box without PyTorch.
"""

from rdd_edge.deploy.info import DeployWarning, ModelInfo  # noqa: F401
from rdd_edge.deploy.preprocess import preprocess  # noqa: F401
from rdd_edge.deploy.runtime import Segmenter, load  # noqa: F401

__all__ = ["load", "Segmenter", "ModelInfo", "DeployWarning", "preprocess"]
