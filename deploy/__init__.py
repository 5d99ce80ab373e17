"""Torch-free edge runtime: ONNX Runtime and TensorRT backends, pre/post-processing, check, demo."""
