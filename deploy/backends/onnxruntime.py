"""ONNX Runtime backend: the portable path (CPU everywhere; CUDA/TensorRT providers when installed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rdd_edge.errors import DeployError

# Fastest first; only those the installed onnxruntime build offers are used.
PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
}


def choose_providers(
    available: Sequence[str], requested: Sequence[str] | None = None, device: str = "auto"
) -> list[str]:
    """Pick execution providers: ``requested`` if given (each must be available), else by ``device``.

    ``device``: ``auto`` (TensorRT > CUDA > CPU as available), ``cpu``, or ``cuda`` (GPU providers,
    an error when none is installed). CPU is always last as the fallback.
    """
    available = list(available)
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise DeployError(f"ONNX Runtime providers {missing} are not available here; available: {available}")
        return list(requested)
    if device == "cpu":
        return ["CPUExecutionProvider"]
    chosen = [p for p in PREFERRED_PROVIDERS if p in available]
    if device == "cuda":
        gpu = [p for p in chosen if p != "CPUExecutionProvider"]
        if not gpu:
            raise DeployError(
                f"--device cuda: this onnxruntime build has no GPU provider (available: {available}); "
                "install onnxruntime-gpu or use --device cpu"
            )
    elif device != "auto":
        raise DeployError(f"device {device!r}: expected auto, cpu or cuda")
    return chosen or ["CPUExecutionProvider"]


class OrtBackend:
    """One ``onnxruntime.InferenceSession`` with a thread count and provider choice."""

    def __init__(
        self,
        path: str | Path,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        device: str = "auto",
    ):
        import onnxruntime as ort

        self.path = Path(path)
        opts = ort.SessionOptions()
        if threads:
            if threads < 1:
                raise DeployError(f"--threads {threads}: must be >= 1")
            opts.intra_op_num_threads = int(threads)
        opts.log_severity_level = 3
        chosen = choose_providers(ort.get_available_providers(), providers, device)
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=chosen)
        except Exception as exc:  # noqa: BLE001 - ORT raises several types for a bad file
            msg = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise DeployError(f"{self.path}: not a loadable ONNX model ({msg}); re-export it with `rdd-edge export`") from None
        self.provider = self.session.get_providers()[0]
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise DeployError(f"{self.path}: expected one image input, the graph has {len(inputs)}: {[i.name for i in inputs]}")
        self.input_name = inputs[0].name
        self.input_shape: list[Any] = list(inputs[0].shape)
        self.input_dtype = _ORT_TYPES.get(inputs[0].type, inputs[0].type)
        outs = self.session.get_outputs()
        self.output_names = [o.name for o in outs]
        self.output_shapes = {o.name: list(o.shape) for o in outs}

    def run(self, batch: np.ndarray, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Feed one NCHW batch; return the requested (default all) outputs by name."""
        names = list(outputs) if outputs else self.output_names
        try:
            res = self.session.run(names, {self.input_name: batch})
        except Exception as exc:  # noqa: BLE001
            msg = str(exc).strip().splitlines()[0][:300]
            raise DeployError(f"{self.path}: inference failed on a {batch.dtype} batch of shape {batch.shape} ({msg})") from None
        return dict(zip(names, res))
