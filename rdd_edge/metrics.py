"""Streaming confusion-matrix mIoU (NumPy, no torch).

One metric serves training evaluation (merge the matrices of all processes, then compute), the
deploy check and the benchmarks. Pixels whose label is the ignore index (or any value >= the
class count) drop out. A class absent from both the labels and the predictions has no IoU: it
is left out of the mean and reported as NaN.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class SegMetrics:
    """What :meth:`ConfusionMatrix.compute` returns."""

    iou: np.ndarray  # (C,) float, NaN where the class is absent from labels and predictions
    miou: float  # mean over present classes, in [0, 1]
    pixel_acc: float  # correct / counted pixels
    class_acc: np.ndarray  # (C,) recall per class, NaN where the class has no labelled pixel
    mean_class_acc: float
    present: np.ndarray = field(repr=False)  # (C,) bool

    def as_dict(self, class_names: list[str] | None = None) -> dict:
        names = class_names or [str(i) for i in range(len(self.iou))]
        return {
            "miou": float(self.miou),
            "pixel_acc": float(self.pixel_acc),
            "mean_class_acc": float(self.mean_class_acc),
            "iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, self.iou)},
        }


class ConfusionMatrix:
    """``mat[label, pred]`` counts over every pixel fed through :meth:`update`."""

    def __init__(self, num_classes: int, ignore_index: int = 255):
        if num_classes < 1:
            raise ValueError("num_classes must be >= 1")
        self.n = int(num_classes)
        self.ignore_index = ignore_index
        self.mat = np.zeros((self.n, self.n), dtype=np.int64)

    def update(self, label: np.ndarray, pred: np.ndarray) -> None:
        """Add one batch (any shape, same for both); ignored and out-of-range labels drop out."""
        label = np.asarray(label)
        pred = np.asarray(pred)
        if label.shape != pred.shape:
            raise ValueError(f"label shape {label.shape} != prediction shape {pred.shape}")
        label = label.astype(np.int64, copy=False).ravel()
        pred = pred.astype(np.int64, copy=False).ravel()
        keep = (label >= 0) & (label < self.n) & (label != self.ignore_index)
        pred_k = pred[keep]
        if pred_k.size and (pred_k.min() < 0 or pred_k.max() >= self.n):
            raise ValueError(f"predictions must lie in [0, {self.n}); got {pred_k.min()}..{pred_k.max()}")
        idx = self.n * label[keep] + pred_k
        self.mat += np.bincount(idx, minlength=self.n * self.n).reshape(self.n, self.n)

    def merge(self, other: "ConfusionMatrix | np.ndarray") -> "ConfusionMatrix":
        """Add another matrix (from another process or shard) into this one."""
        mat = other.mat if isinstance(other, ConfusionMatrix) else np.asarray(other)
        if mat.shape != self.mat.shape:
            raise ValueError(f"cannot merge a {mat.shape} matrix into {self.mat.shape}")
        self.mat += mat.astype(np.int64)
        return self

    def reset(self) -> None:
        self.mat[:] = 0

    def compute(self) -> SegMetrics:
        mat = self.mat.astype(np.float64)
        tp = np.diag(mat)
        gt = mat.sum(1)
        pr = mat.sum(0)
        union = gt + pr - tp
        present = union > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(present, tp / union, np.nan)
            class_acc = np.where(gt > 0, tp / gt, np.nan)
        total = mat.sum()
        return SegMetrics(
            iou=iou,
            miou=float(np.nanmean(iou)) if present.any() else float("nan"),
            pixel_acc=float(tp.sum() / total) if total else float("nan"),
            class_acc=class_acc,
            mean_class_acc=float(np.nanmean(class_acc)) if (gt > 0).any() else float("nan"),
            present=present,
        )
