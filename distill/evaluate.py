"""Whole-image evaluation: mIoU with the project's one ConfusionMatrix.

Logits are upsampled bilinearly to each label's own size (so mIoU is measured at full label
resolution); optional horizontal flip and multi-scale inputs average the softmax. Under DDP each
process evaluates its shard and the confusion matrices are summed across processes.
"""

from __future__ import annotations

import contextlib
import time
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from distill import dist
from rdd_edge.metrics import ConfusionMatrix, SegMetrics


def predict_logits(model: torch.nn.Module, images: torch.Tensor, flip: bool = False,
                   scales: Sequence[float] = (1.0,), out_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Averaged softmax (N, C, H, W) at ``out_size`` (default: input size) over scales and flips."""
    h, w = images.shape[-2:]
    out_size = out_size or (h, w)
    total = None
    for s in scales:
        x = images if s == 1.0 else F.interpolate(images, size=(max(8, round(h * s)), max(8, round(w * s))),
                                                  mode="bilinear", align_corners=False)
        views = [x, x.flip(-1)] if flip else [x]
        for k, v in enumerate(views):
            logits = model(v)["out"].float()
            if k == 1:
                logits = logits.flip(-1)
            prob = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False).softmax(1)
            total = prob if total is None else total + prob
    return total


@torch.inference_mode()
def evaluate(model: torch.nn.Module, loader: Iterable, num_classes: int, device: torch.device | str = "cpu",
             flip: bool = False, scales: Sequence[float] = (1.0,), ignore_index: int = 255,
             autocast: contextlib.AbstractContextManager | None = None, progress=None) -> SegMetrics:
    """mIoU of ``model`` over ``loader`` (items ``(images, [labels])``, see ``distill.data.eval_loader``).

    Returns :class:`~rdd_edge.metrics.SegMetrics` with an extra attribute ``images_per_s``
    (this process's throughput, forward passes and upsampling included). The model is put in
    eval mode and back to its previous mode afterwards.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(num_classes, ignore_index)
    n_images, t_total = 0, 0.0
    ctx = autocast or contextlib.nullcontext()
    try:
        with ctx:  # one autocast region for the whole pass
            for images, labels in loader:
                images = images.to(device, non_blocking=True)
                t0 = time.perf_counter()
                if len({tuple(lb.shape) for lb in labels}) == 1:
                    prob = predict_logits(model, images, flip, scales, tuple(labels[0].shape))
                    preds = list(prob.argmax(1).cpu().numpy())
                else:  # labels of different sizes: one image at a time
                    preds = [predict_logits(model, images[i:i + 1], flip, scales, tuple(lb.shape)).argmax(1)[0].cpu().numpy()
                             for i, lb in enumerate(labels)]
                t_total += time.perf_counter() - t0
                for lb, pr in zip(labels, preds):
                    cm.update(lb.numpy(), pr)
                n_images += len(labels)
                if progress is not None:
                    progress(len(labels))
    finally:
        model.train(was_training)
    mat = torch.from_numpy(cm.mat).to(device)
    dist.all_reduce_sum(mat)
    cm.mat = mat.cpu().numpy().astype(np.int64)
    metrics = cm.compute()
    metrics.images_per_s = n_images / t_total if t_total > 0 else float("nan")  # type: ignore[attr-defined]
    return metrics
