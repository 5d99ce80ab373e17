"""Relative-difficulty maps of a student / teacher pair on validation images (paper Figs. 1, 3, 4).

One PNG sheet per image: a row of image, ground truth, student prediction, teacher prediction,
RD_TFE (``exp(-KL(teacher main || teacher aux))`` in OpenCV's JET colour map: dark blue = hard,
the teacher's two heads disagree; red = easy) and RD_TSE (white = pixels where exactly one of
student and teacher finds the pixel hard, the pixels TSE-RDD trains on; black = not selected;
grey = ignored in the ground truth). Under the row: the names and colours of the classes in the
ground truth and both predictions, a colour bar for RD_TFE and a key for RD_TSE. Maps come from
``distill.rdd`` so they show exactly what the trainer weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from rdd_edge.distill import dist
from rdd_edge.distill.data import EvalPreset
from rdd_edge.distill.evaluate import checkpoint_split
from rdd_edge.distill.rdd import tfe_weights, tse_mask
from rdd_edge.distill.train import default_teacher
from rdd_edge.errors import CheckpointError, ConfigError
from rdd_edge.models import model_from_checkpoint
from rdd_edge.models.checkpoint import resolve_checkpoint
from rdd_edge.normalize import DEFAULT, Normalization, recorded_normalization
from rdd_edge.runs import DEFAULT_ROOT, atomic_path
from rdd_edge.viz import class_legend, colorbar, colorize, side_by_side, stack, swatch_strip

TFE_COLORMAP = cv2.COLORMAP_JET
TSE_SELECTED, TSE_NOT, TSE_IGNORED = (255, 255, 255), (0, 0, 0), (90, 90, 90)


def heatmap(weights: np.ndarray) -> np.ndarray:
    """(H, W) values in [0, 1] -> uint8 RGB with OpenCV's JET colour map (1 = red)."""
    u8 = np.clip(np.nan_to_num(weights) * 255.0, 0, 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(u8, TFE_COLORMAP), cv2.COLOR_BGR2RGB)


@torch.inference_mode()
def difficulty_maps(student: torch.nn.Module, teacher: torch.nn.Module, image: torch.Tensor, label: torch.Tensor,
                    threshold: float = 0.7, mode: str = "xor", confidence: str = "gt",
                    ignore_index: int = 255, teacher_image: torch.Tensor | None = None) -> dict[str, np.ndarray]:
    """For one normalised image (3, h, w) and its label (H, W): predictions and RD maps at label size.

    ``teacher_image``: the same image normalised the teacher's way, when that differs from the
    student's (default: ``image``). Returns ``student``/``teacher`` (H, W) predicted classes,
    ``tse`` (H, W) bool and ``tfe`` (H, W) float in (0, 1], or ``None`` when the teacher has no aux head.
    """

    x = image.unsqueeze(0)
    xt = x if teacher_image is None else teacher_image.unsqueeze(0).to(x.device)
    target = label.unsqueeze(0).long().to(x.device)
    size = tuple(label.shape[-2:])
    s_out, t_out = student.eval()(x), teacher.eval()(xt)

    def pred(logits):
        return F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False).argmax(1)[0].cpu().numpy()

    tfe = None
    if t_out.get("aux") is not None:
        tfe = tfe_weights(t_out["out"], t_out["aux"], size)[0].cpu().numpy()
    tse = tse_mask(s_out["out"], t_out["out"], target, threshold, mode, confidence, ignore_index)[0].cpu().numpy()
    return {"student": pred(s_out["out"]), "teacher": pred(t_out["out"]), "tfe": tfe, "tse": tse}


def difficulty_sheet(image: np.ndarray, label: np.ndarray, maps: dict, palette: Sequence[Sequence[int]],
                     mode: str = "xor", classes: Sequence[str] | None = None) -> np.ndarray:
    """One sheet (uint8 RGB): a row of tiles (image, GT, student, teacher, RD_TFE, RD_TSE) and under
    it a legend of the classes present (``classes`` names them; ids otherwise), the RD_TFE colour bar
    and the RD_TSE key."""
    h, w = label.shape
    if image.shape[:2] != (h, w):
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    ignored = label == 255
    tse_rgb = np.where(maps["tse"][..., None], np.uint8(TSE_SELECTED), np.uint8(TSE_NOT)).astype(np.uint8)
    tse_rgb[ignored] = TSE_IGNORED
    tfe = heatmap(maps["tfe"]) if maps["tfe"] is not None else np.full((h, w, 3), 200, np.uint8)
    student, teacher = maps["student"].astype(np.uint8), maps["teacher"].astype(np.uint8)
    tiles = [image, colorize(label, palette), colorize(student, palette), colorize(teacher, palette), tfe, tse_rgb]
    titles = ["image", "ground truth", "student", "teacher",
              "RD_TFE" if maps["tfe"] is not None else "RD_TFE (no aux)", f"RD_TSE ({mode})"]
    # upscale tiny images so the titles stay readable
    k = max(1, int(np.ceil(160 / h)))
    if k > 1:
        tiles = [cv2.resize(t, (w * k, h * k), interpolation=cv2.INTER_NEAREST) for t in tiles]
    gap = 4
    row = side_by_side(tiles, titles, gap=gap)

    tw = w * k  # every tile has the label's width, scaled
    scale = max(0.4, min(0.6, h * k / 500))
    names = list(classes) if classes is not None else [str(i) for i in range(len(palette))]
    present = np.union1d(np.union1d(np.unique(label), np.unique(student)), np.unique(teacher))
    legend = class_legend(names, palette, present, 4 * tw + 3 * gap, scale, ignored=bool(ignored.any()),
                          title="classes (ground truth, student, teacher):")
    if maps["tfe"] is not None:
        tfe_key = colorbar(tw, "0 = hard (heads disagree)", "1 = easy", TFE_COLORMAP, scale, title="RD_TFE weight")
    else:
        tfe_key = swatch_strip([], tw, scale, title="no teacher aux head")
    tse_key = swatch_strip([(TSE_SELECTED, "selected (trained on)"), (TSE_NOT, "not selected"), (TSE_IGNORED, "ignored")],
                           tw, scale, title="RD_TSE")
    keys = stack([legend, tfe_key, tse_key], axis=1, gap=gap)
    return stack([row, keys], axis=0, gap=gap)


def write_png(path: Path, rgb: np.ndarray) -> Path:
    """Write an RGB PNG atomically."""
    with atomic_path(path, suffix=".png") as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
            raise OSError(f"{path}: could not write PNG")
    return path


def render_difficulty(student: torch.nn.Module, teacher: torch.nn.Module, reader, info, eval_size, n: int,
                      out_dir: str | Path, device: torch.device | str = "cpu", threshold: float = 0.7,
                      mode: str = "xor", confidence: str = "gt", classes: Sequence[str] | None = None,
                      normalization: Normalization = DEFAULT, teacher_normalization: Normalization | None = None) -> list[dict]:
    """Sheets for the first ``n`` images of ``reader`` in ``out_dir``; one dict per image
    (file, selected TSE fraction, mean TFE weight). Class names: ``classes``, else ``info.classes``.
    Each network gets its own input normalisation (``teacher_normalization`` None: the student's)."""

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    size = tuple(eval_size) if eval_size else None
    tf = EvalPreset(size, normalization)
    tf_t = EvalPreset(size, teacher_normalization) if teacher_normalization not in (None, normalization) else None
    student, teacher = student.to(device).eval(), teacher.to(device).eval()
    rows = []
    for i in range(min(n, len(reader))):
        image, label = reader[i]
        x, y = tf(image, label, None)
        xt = tf_t(image, label, None)[0] if tf_t is not None else None
        maps = difficulty_maps(student, teacher, x.to(device), y, threshold, mode, confidence, info.ignore_index, xt)
        name = reader.name(i) if hasattr(reader, "name") else f"{i:04d}"
        sheet = difficulty_sheet(image, label, maps, info.palette, mode, classes if classes is not None else getattr(info, "classes", None))
        path = write_png(out_dir / f"{i:03d}_{name}.png", sheet)
        valid = label != info.ignore_index
        rows.append({"file": str(path), "tse_selected": float(maps["tse"][valid].mean()) if valid.any() else 0.0,
                     "tfe_mean": float(maps["tfe"][valid].mean()) if maps["tfe"] is not None and valid.any() else None})
    return rows


# ---------------------------------------------------------------- the difficulty command's entry point
@dataclass
class DifficultySpec:
    """Which student/teacher pair to render, on which images; RDD settings default to the student's run."""

    checkpoint: str | Path
    teacher: str | Path | None = None  # default: the teacher the student was distilled from
    images: int = 4
    dataset: str | None = None
    data: str | Path | None = None
    split: str = "val"
    out: str | Path | None = None  # default <run>/difficulty
    threshold: float | None = None  # None: the student's training config (rdd_threshold)
    mode: str | None = None  # rdd_mode
    confidence: str | None = None
    device: str = "auto"
    runs_root: str | Path = DEFAULT_ROOT


def run_difficulty(spec: DifficultySpec) -> tuple[Path, list[dict]]:
    """Render difficulty sheets for a distilled student; returns (output folder, one dict per image)."""

    if spec.images < 1:
        raise ConfigError(f"--images {spec.images}: must be >= 1")
    if spec.out is not None and Path(spec.out).exists() and not Path(spec.out).is_dir():
        raise ConfigError(f"--out {spec.out}: is a file; difficulty sheets go into a folder (give a new or existing folder)")
    path = resolve_checkpoint(spec.checkpoint, prefer="best.pt")
    student, ckpt = model_from_checkpoint(path)
    cfg = ckpt.get("config") or {}
    teacher = spec.teacher or cfg.get("teacher") or default_teacher(cfg.get("runs_root", spec.runs_root))
    t_model, t_ckpt = model_from_checkpoint(resolve_checkpoint(teacher))
    if t_model.num_classes != student.num_classes:
        raise CheckpointError(f"{teacher}: teacher predicts {t_model.num_classes} classes, student {student.num_classes}")
    threshold = spec.threshold if spec.threshold is not None else float(cfg.get("rdd_threshold", 0.7))
    mode = spec.mode or cfg.get("rdd_mode", "xor")
    confidence = spec.confidence or cfg.get("confidence", "gt")
    info, reader, size = checkpoint_split(ckpt, spec.dataset, spec.data, spec.split, max(spec.images, 1))
    out_dir = Path(spec.out) if spec.out else path.parent / "difficulty"
    dev = dist.init_distributed(spec.device)
    rows = render_difficulty(student, t_model, reader, info, size, spec.images, out_dir, dev, threshold, mode, confidence,
                             normalization=recorded_normalization(ckpt), teacher_normalization=recorded_normalization(t_ckpt))
    return out_dir, rows
