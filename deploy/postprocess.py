"""Network output -> label map at the image's own size.

One rule for every backend: take the class per pixel at the model's input size (the graph's
``labels`` output, or ``argmax`` over its ``logits``), then resize that label map to the
original image size with nearest-neighbour. This is cheaper than resizing C logit planes
bilinearly (C x H x W floats per frame on an edge CPU) and matches what ``labels``-emitting
graphs and TensorRT engines give, so every artifact is post-processed identically.
"""

from __future__ import annotations

import cv2
import numpy as np

from rdd_edge.errors import DeployError


def to_labels(raw: np.ndarray, kind: str) -> np.ndarray:
    """(N, C, H, W) logits or (N, H, W) labels -> (N, H, W) uint8 (uint16 beyond 256 classes)."""
    if kind == "logits":
        if raw.ndim != 4:
            raise DeployError(f"logits output has shape {raw.shape}; expected (N, C, H, W)")
        lab = raw.argmax(axis=1)
        n_cls = raw.shape[1]
    else:
        if raw.ndim == 4 and raw.shape[1] == 1:
            raw = raw[:, 0]
        if raw.ndim != 3:
            raise DeployError(f"labels output has shape {raw.shape}; expected (N, H, W)")
        lab = raw
        n_cls = int(lab.max()) + 1 if lab.size else 1
    return lab.astype(np.uint8 if n_cls <= 256 else np.uint16, copy=False)


def resize_labels(labels: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of one (h, w) label map to (H, W)."""
    h, w = int(size_hw[0]), int(size_hw[1])
    if labels.shape == (h, w):
        return labels
    return cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST)


def unletterbox(labels: np.ndarray, box: tuple[int, int, int, int], size_hw: tuple[int, int]) -> np.ndarray:
    """The label map of a letterboxed input back on the original image: the padding cut off
    (``box`` = top, left, height, width from :func:`rdd_edge.deploy.preprocess.letterbox`), then a
    nearest-neighbour resize to (H, W)."""
    top, left, h, w = box
    return resize_labels(np.ascontiguousarray(labels[top : top + h, left : left + w]), size_hw)
