"""Numerical checks between artifacts: torch vs ONNX Runtime, FP16/INT8 vs FP32.

Each check runs real images (a handful from the data set's val split) and returns a small dict
(max abs logit difference, pixel label agreement) that goes into the manifest and the CLI table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rdd_edge.deploy.backends.onnxruntime import EXACT_DISABLED_OPTIMIZERS
from rdd_edge.deploy.preprocess import preprocess
from rdd_edge.errors import ExportError
from rdd_edge.metrics import ConfusionMatrix
from rdd_edge.normalize import Normalization, embed_mode, network_input

MIN_PARITY_AGREEMENT = 0.999  # torch vs ONNX FP32
MIN_FP16_AGREEMENT = 0.995  # FP16 vs FP32


def ort_session(path: str | Path) -> Any:
    """A CPU ONNX Runtime session; an ExportError naming the file if ORT cannot load it."""
    import onnxruntime as ort  # lazy: optional dependency (onnxruntime, an extra)

    so = ort.SessionOptions()
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"],
                                    disabled_optimizers=list(EXACT_DISABLED_OPTIMIZERS))
    except Exception as exc:
        raise ExportError(f"{path}: ONNX Runtime cannot load it ({str(exc).splitlines()[0][:300]})") from None


def run_onnx(path_or_session: Any, batch: np.ndarray) -> dict[str, np.ndarray]:
    """Run an ``images`` batch through an ONNX file (or session); outputs by name."""
    sess = path_or_session if hasattr(path_or_session, "run") else ort_session(path_or_session)
    names = [o.name for o in sess.get_outputs()]
    res = []
    for i in range(len(batch)):  # one image at a time: small peak memory, works for any batch axis
        res.append(sess.run(names, {"images": batch[i : i + 1]}))
    return {n: np.concatenate([r[k] for r in res], 0) for k, n in enumerate(names)}


def labels_of(outputs: dict[str, np.ndarray]) -> np.ndarray:
    """(N, H, W) labels from graph outputs: ``labels`` if present, else the argmax of ``logits``."""
    if "labels" in outputs:
        return outputs["labels"].astype(np.int64)
    return outputs["logits"].argmax(1).astype(np.int64)


def miou_of(outputs: dict[str, np.ndarray], labels: np.ndarray, num_classes: int, ignore_index: int = 255) -> float | None:
    """mIoU (0..1) of graph outputs against (N, H, W) labels; None when it cannot be computed."""
    cm = ConfusionMatrix(num_classes, ignore_index)
    try:
        cm.update(labels, labels_of(outputs))
    except ValueError:
        return None
    m = cm.compute().miou
    return None if np.isnan(m) else float(m)


def make_batch(images: Sequence[np.ndarray], size: Sequence[int], normalization: Normalization, embedded: bool) -> np.ndarray:
    """uint8 RGB images -> the (N, 3, H, W) graph input, through deploy's ``preprocess``."""
    if len(images) == 0:
        raise ExportError("no check images: the data set's val split is empty; pass a data set with validation images")
    return np.concatenate([preprocess(im, size, normalization, embedded=embedded) for im in images], 0)


def compare(ref: dict[str, np.ndarray], test: dict[str, np.ndarray]) -> dict:
    """Label agreement and, when both have logits, max/mean abs logit difference."""
    a, b = labels_of(ref), labels_of(test)
    res: dict[str, Any] = {"images": int(a.shape[0]), "pixels": int(a.size), "label_agreement": float((a == b).mean())}
    if "logits" in ref and "logits" in test:
        d = np.abs(ref["logits"].astype(np.float64) - test["logits"].astype(np.float64))
        res["max_abs_logit_diff"] = float(d.max())
        res["mean_abs_logit_diff"] = float(d.mean())
    return res


def torch_outputs(model: Any, batch: np.ndarray, normalization: Normalization, embedded: bool) -> dict[str, np.ndarray]:
    """Reference outputs from the torch model (normalising here when the graph would have)."""
    # lazy: torch; this module is also imported torch-free (scoring, so `rdd-edge engine`; check's reference row)
    import torch
    import torch.nn.functional as F

    x = network_input(batch, normalization, embedded) if embed_mode(embedded) else batch.astype(np.float32)
    outs = []
    model.eval()
    with torch.no_grad():
        for i in range(len(x)):
            xi = torch.from_numpy(x[i : i + 1])
            o = model(xi)["out"]
            outs.append(F.interpolate(o, size=xi.shape[-2:], mode="bilinear", align_corners=False).numpy())
    logits = np.concatenate(outs, 0)
    return {"logits": logits, "labels": logits.argmax(1)}


def check_parity(model: Any, onnx_path: str | Path, batch: np.ndarray, normalization: Normalization,
                 embedded: bool = False, min_agreement: float = MIN_PARITY_AGREEMENT) -> dict:
    """ONNX Runtime vs torch on ``batch``; ExportError if labels agree on fewer than ``min_agreement`` pixels."""
    ref = torch_outputs(model, batch, normalization, embedded)
    got = run_onnx(onnx_path, batch)
    res = compare(ref, got)
    if res["label_agreement"] < min_agreement:
        raise ExportError(
            f"{onnx_path}: ONNX Runtime and torch agree on {res['label_agreement']:.4%} of pixels "
            f"(< {min_agreement:.1%}; max abs logit diff {res.get('max_abs_logit_diff', float('nan')):.3g}); the export is wrong"
        )
    return res
