"""Whole-image evaluation: mIoU with the project's one ConfusionMatrix.

Logits are upsampled bilinearly to each label's own size (so mIoU is measured at full label
resolution); optional horizontal flip and multi-scale inputs average the softmax. Images are
resized to an eval size, or, for data sets evaluated whole (VOC, ADE20K), fed at their own size,
padded to the network's stride with the logits cropped back. Under DDP each process evaluates its
shard and the confusion matrices are summed across processes.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from rdd_edge.data import dataset_info, open_split, spec_of_checkpoint
from rdd_edge.data.check import check_reader
from rdd_edge.distill import dist
from rdd_edge.distill.data import eval_loader
from rdd_edge.errors import CheckpointError, ConfigError
from rdd_edge.metrics import ConfusionMatrix, SegMetrics
from rdd_edge.models import model_from_checkpoint
from rdd_edge.models.checkpoint import resolve_checkpoint
from rdd_edge.normalize import recorded_normalization

STRIDE = 8  # output stride of every network here: inputs padded to a multiple of it map exactly onto the logits


def _pad_to(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Zero-pad (N, 3, h, w) at the bottom and right to multiples of ``stride`` (zero = the mean colour)."""
    ph, pw = (-x.shape[-2]) % stride, (-x.shape[-1]) % stride
    return F.pad(x, (0, pw, 0, ph)) if ph or pw else x


def predict_logits(model: torch.nn.Module, images: torch.Tensor, flip: bool = False,
                   scales: Sequence[float] = (1.0,), out_size: tuple[int, int] | None = None,
                   stride: int = STRIDE, align_corners: bool = False) -> torch.Tensor:
    """Averaged softmax (N, C, H, W) at ``out_size`` (default: input size) over scales and flips.

    Each (scaled, maybe flipped) view whose sides are not multiples of ``stride`` is padded at the
    bottom/right, its logits are upsampled to the padded size and cropped back to the view, so the
    logit grid stays aligned with the pixels (whole-image evaluation of odd-sized VOC/ADE20K images).
    ``align_corners``: how logits are upsampled (True: as the released eval.py does).
    """
    h, w = images.shape[-2:]
    out_size = tuple(out_size or (h, w))
    total = None
    for s in scales:
        x = images if s == 1.0 else F.interpolate(images, size=(max(8, round(h * s)), max(8, round(w * s))),
                                                  mode="bilinear", align_corners=False)
        vh, vw = x.shape[-2:]
        views = [x, x.flip(-1)] if flip else [x]
        for k, v in enumerate(views):
            padded = _pad_to(v, max(1, int(stride)))
            logits = model(padded)["out"].float()
            if padded is not v:  # upsample to the padded input, keep the part that covers the view
                logits = F.interpolate(logits, size=padded.shape[-2:], mode="bilinear", align_corners=align_corners)
                logits = logits[..., :vh, :vw]
            if k == 1:
                logits = logits.flip(-1)
            if tuple(logits.shape[-2:]) != out_size:
                logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=align_corners)
            prob = logits.softmax(1)
            total = prob if total is None else total + prob
    return total


@torch.inference_mode()
def evaluate(model: torch.nn.Module, loader: Iterable, num_classes: int, device: torch.device | str = "cpu",
             flip: bool = False, scales: Sequence[float] = (1.0,), ignore_index: int = 255,
             autocast: contextlib.AbstractContextManager | None = None, progress=None,
             align_corners: bool = False) -> SegMetrics:
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
                    prob = predict_logits(model, images, flip, scales, tuple(labels[0].shape), align_corners=align_corners)
                    preds = list(prob.argmax(1).cpu().numpy())
                else:  # labels of different sizes: one image at a time
                    preds = [predict_logits(model, images[i:i + 1], flip, scales, tuple(lb.shape),
                                            align_corners=align_corners).argmax(1)[0].cpu().numpy()
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


# ---------------------------------------------------------------- the eval stage's entry point
def checkpoint_split(ckpt: dict, dataset: str | None = None, data: str | Path | None = None, split: str = "val",
                     images: int | None = None, eval_size: tuple[int, int] | None = None):
    """(data set info, reader, eval size) for a checkpoint: the images it was validated on unless told otherwise.

    ``dataset``/``data`` switch to another data set or folder; ``images`` sets how many synthetic
    scenes are generated. The class count must match the checkpoint's model. The eval size is
    ``eval_size``, else the one the run validated at, else the data set's default
    (``DatasetInfo.default_eval_size``); None means each image whole at its own size (VOC, ADE20K).
    """

    base = spec_of_checkpoint(ckpt)
    spec = base.overridden(dataset, data, images)
    size = eval_size or (base.size if spec.name == base.name else None) or dataset_info(spec.name).default_eval_size()
    info = dataset_info(spec.name)
    reader = open_split(spec, split)
    check_reader(reader, f"{spec.describe()} ({split} split)", info.num_classes)
    if int(ckpt["model_kwargs"]["num_classes"]) != info.num_classes:
        raise CheckpointError(f"{ckpt.get('path')}: model predicts {ckpt['model_kwargs']['num_classes']} classes but "
                              f"{spec.name} has {info.num_classes}; pass the --dataset it was trained on")
    return info, reader, tuple(size) if size else None


@dataclass
class EvalSpec:
    """What ``rdd-edge eval`` evaluates, and how."""

    checkpoint: str | Path
    dataset: str | None = None
    data: str | Path | None = None
    split: str = "val"
    flip: bool = False
    scales: tuple[float, ...] = (1.0,)
    eval_size: tuple[int, int] | None = None
    device: str = "auto"
    batch: int = 4
    images: int | None = None  # synthetic only: scenes generated
    align_corners: bool | None = None  # logit upsampling; None: as the checkpoint's training config says (default False)


@dataclass
class EvalResult:
    model_name: str
    info: object  # DatasetInfo
    split: str
    images: int
    size: tuple[int, int] | None  # None: each image at its own size
    metrics: SegMetrics


def evaluate_checkpoint(spec: EvalSpec) -> EvalResult:
    """Evaluate a checkpoint (file or run folder, ``best.pt`` preferred) on its data set's split."""

    scales = tuple(float(s) for s in spec.scales)
    if not scales or min(scales) <= 0:
        raise ConfigError(f"--scales {','.join(map(str, spec.scales))}: need at least one positive scale")
    if spec.batch < 1:
        raise ConfigError(f"--batch {spec.batch}: must be >= 1")
    path = resolve_checkpoint(spec.checkpoint, prefer="best.pt")
    model, ckpt = model_from_checkpoint(path)
    info, reader, size = checkpoint_split(ckpt, spec.dataset, spec.data, spec.split, spec.images, spec.eval_size)
    dev = dist.init_distributed(spec.device)

    loader = eval_loader(reader, recorded_normalization(ckpt), size, batch=spec.batch)  # the input its weights were trained on
    align = spec.align_corners
    if align is None:
        align = bool((ckpt.get("config") or {}).get("align_corners", False))
    m = evaluate(model.to(dev), loader, info.num_classes, dev, flip=spec.flip, scales=scales, align_corners=align)
    return EvalResult(ckpt["model_name"], info, spec.split, len(reader), size, m)
