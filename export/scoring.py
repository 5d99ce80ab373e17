"""How export scores an ONNX artifact: mIoU and label agreement with FP32 on the check images.

One scorer per export: the first file it scores is the FP32 reference (its labels are kept), every
later file is compared with it pixel by pixel. The export pipeline scores each artifact with it, and
the INT8 budget scores every candidate file with the same object, so a drop the budget reports is
the drop the manifest records. Results are remembered by file content (sha256): scoring the final
INT8 file again costs nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rdd_edge.deploy.preprocess import preprocess
from rdd_edge.export.onnx_io import sha256_file
from rdd_edge.export.parity import labels_of, ort_session, run_onnx
from rdd_edge.metrics import ConfusionMatrix
from rdd_edge.normalize import embed_mode


def _round(m: float) -> float | None:
    return None if m != m else round(float(m), 5)


class CheckScorer:
    """Scores ONNX files on ``images`` (uint8 RGB) against ``labels`` (at the model's input size; None:
    no labels at hand, only label agreement is measured and ``miou`` is None)."""

    def __init__(self, images: Sequence[np.ndarray], labels: Sequence[np.ndarray] | None, size: Sequence[int],
                 normalization: Any, num_classes: int, embedded: bool = False) -> None:
        self.images = list(images)
        self.labels = None if labels is None else list(labels)
        self.size, self.normalization = tuple(size), normalization
        self.num_classes, self.embedded = int(num_classes), embed_mode(embedded)
        self.ref: list[np.ndarray] | None = None  # FP32 labels per image, once the FP32 model is scored
        self._memo: dict[str, dict] = {}

    @property
    def has_reference(self) -> bool:
        return self.ref is not None

    def __call__(self, path: str | Path) -> dict[str, Any]:
        """``{"miou", "images"}`` and, after the reference, ``"label_agreement"`` (fraction of pixels)."""
        key = sha256_file(path)
        if key in self._memo and self.ref is not None:
            return dict(self._memo[key])
        sess = ort_session(path)
        cm = ConfusionMatrix(self.num_classes, 255)
        preds, same, total = [], 0, 0
        for k, image in enumerate(self.images):
            x = preprocess(image, self.size, self.normalization, embedded=self.embedded)
            pred = labels_of(run_onnx(sess, x))[0]
            if self.labels is not None:
                cm.update(self.labels[k], np.minimum(pred, self.num_classes - 1))
            if self.ref is not None:
                same += int((pred == self.ref[k]).sum())
                total += pred.size
            preds.append(pred.astype(np.uint16))
        miou = _round(cm.compute().miou) if self.labels is not None else None
        res: dict[str, Any] = {"miou": miou, "images": len(self.images)}
        if self.ref is None:
            self.ref = preds
        else:
            res["label_agreement"] = same / max(total, 1)
            self._memo[key] = dict(res)
        return res
