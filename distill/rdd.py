"""Relative Difficulty Distillation (RDD): per-pixel weights for the student's task loss.

Follows the project's METHOD.md (Liang et al., Sci. China Inf. Sci. 2024):

- TFE-RDD (first ``tfe_fraction`` of training): ``w = exp(-KL(p_main || p_aux))`` of the teacher's
  two heads (the paper's direction; the released code uses KL(aux || main)).
- TSE-RDD (the rest): a pixel is selected when exactly one of student and teacher finds it hard
  (``conf <= t``, conf = probability of the ground-truth class by default), ``xor``; ``or``/``and``
  exist for the ablation. The released code's OHEM floor (``min_kept``) and Cityscapes class
  weights on the TSE loss are available and off by default (METHOD.md).

RDD only reweights the task CE, so it wraps any KD loss (``distill.losses``). Everything that
compares logits with labels upsamples the logits bilinearly (``align_corners=False``) first.
Teacher tensors may be inference tensors (made under ``torch.inference_mode``): they are never
saved for backward here, and no gradient ever reaches them.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn.functional as F

from rdd_edge.errors import ConfigError

MODES = ("xor", "or", "and")
CONFIDENCES = ("gt", "max")
NORMALIZE = ("valid", "selected", "all", "batch")
# the TFE loss's averaging: weighted CE over valid pixels (here), over all pixels (the released KD script), or
# batch: the plain CE (mean over valid pixels) times the mean weight over all pixels (the released AT / CWD / ...
# script train_other_kd_two_stage_diff.py, whose losses/task.py CE ignores reduction='none' and returns the mean)
TFE_AVERAGES = ("valid", "all", "batch")
TFE_KL = ("main_aux", "aux_main")  # TFE's KL direction: KL(main || aux) (the paper), or KL(aux || main) (the released code)
AUX_WEIGHT = 0.4  # weight of the auxiliary head's CE, as for the teacher (METHOD.md)

# Per-class CE weights of the released TSE loss (Cityscapes' 19 train ids, in order); github.com/sunyueue/RDD,
# OhemCrossEntropy2d(use_weight=True) in train_onlykd_two_stage_diff.py. Off by default here (METHOD.md).
CLASS_WEIGHTS: dict[str, tuple[float, ...]] = {
    "cityscapes": (0.8373, 0.918, 0.866, 1.0345, 1.0166, 0.9969, 0.9754, 1.0489, 0.8786, 1.0023,
                   0.9539, 0.9843, 1.1116, 0.9037, 1.0865, 1.0955, 1.0865, 1.1529, 1.0507),
}

Stage = Literal["tfe", "tse"]


def parse_class_weights(value) -> str | list[float] | None:
    """``--rdd-class-weights`` text -> config value: ``none`` (off), a name (``cityscapes``) or a list of numbers.

    Lists (or ``"w1,w2,..."`` text) must hold positive finite numbers; anything else is a ConfigError.
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("none", "off", ""):
            return "none"
        if text in CLASS_WEIGHTS:
            return text
        try:
            value = [float(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise ConfigError(f"--rdd-class-weights {value!r}: use none, {', '.join(CLASS_WEIGHTS)} "
                              "or comma-separated numbers, one per class") from None
    try:
        weights = [float(v) for v in value]
    except (TypeError, ValueError):
        raise ConfigError(f"--rdd-class-weights {value!r}: use none, {', '.join(CLASS_WEIGHTS)} "
                          "or a list of numbers, one per class") from None
    if not weights or not all(w > 0 and w < float("inf") for w in weights):
        raise ConfigError(f"--rdd-class-weights {value!r}: class weights must be positive finite numbers")
    return weights


def resolve_class_weights(value, num_classes: int) -> tuple[float, ...] | None:
    """The config value of ``rdd_class_weights`` -> one weight per class, or None (unweighted)."""
    value = parse_class_weights(value)
    if value is None or value == "none":
        return None
    weights = tuple(CLASS_WEIGHTS[value]) if isinstance(value, str) else tuple(value)
    if len(weights) != int(num_classes):
        what = f"the {value} weights" if isinstance(value, str) else "the list"
        raise ConfigError(f"--rdd-class-weights: {what} give {len(weights)} class weights but the data set has "
                          f"{num_classes} classes")
    return weights


def _plain(t: torch.Tensor) -> torch.Tensor:
    """Detached tensor that autograd may save (inference tensors are cloned once)."""
    t = t.detach()
    return t.clone() if t.is_inference() else t


def _resize(x: torch.Tensor, size: tuple[int, int], align_corners: bool = False) -> torch.Tensor:
    """Bilinear resize of (N, C, h, w) to ``size``; identity when equal. ``align_corners=True``: as the
    released code upsamples logits and TFE weights."""
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


def _check_logits(name: str, logits: torch.Tensor) -> None:
    if logits.dim() != 4:
        raise ConfigError(f"{name}: expected logits of shape (N, C, h, w), got {tuple(logits.shape)}")


def _check_target(logits: torch.Tensor, target: torch.Tensor) -> None:
    if target.dim() != 3 or target.shape[0] != logits.shape[0]:
        raise ConfigError(
            f"target: expected labels of shape (N, H, W) with N={logits.shape[0]}, got {tuple(target.shape)}"
        )


def _choice(option: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(f"{option}={value!r} is not one of {', '.join(allowed)}")
    return value


def tfe_weights(
    teacher_logits: torch.Tensor, teacher_aux_logits: torch.Tensor, size: tuple[int, int],
    kl: str = "main_aux", align_corners: bool = False,
) -> torch.Tensor:
    """TFE-RDD weights (N, H, W) in (0, 1]: ``exp(-KL(p_main || p_aux))`` per pixel (``kl="main_aux"``, the
    paper), or ``exp(-KL(p_aux || p_main))`` (``kl="aux_main"``: the released code's ``KLDivLoss(log p_main, p_aux)``).

    Computed in float32 at logit resolution, then resized bilinearly to ``size`` (the label
    size). Pixels where the teacher's two heads agree (easy) get a weight near 1. No gradient.
    """
    _check_logits("teacher_logits", teacher_logits)
    _check_logits("teacher_aux_logits", teacher_aux_logits)
    if teacher_logits.shape != teacher_aux_logits.shape:
        raise ConfigError(
            "tfe_weights: teacher main and aux logits differ in shape "
            f"({tuple(teacher_logits.shape)} vs {tuple(teacher_aux_logits.shape)}); "
            "both heads must predict the same classes at the same resolution"
        )
    with torch.no_grad():
        log_main = F.log_softmax(_plain(teacher_logits).float(), dim=1)
        log_aux = F.log_softmax(_plain(teacher_aux_logits).float(), dim=1)
        first, second = (log_main, log_aux) if _choice("rdd tfe_kl", kl, TFE_KL) == "main_aux" else (log_aux, log_main)
        div = (first.exp() * (first - second)).sum(dim=1).clamp_min(0.0)
        w = torch.exp(-div).unsqueeze(1)
        return _resize(w, size, align_corners).squeeze(1)


def _confidence(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, confidence: str,
                align_corners: bool = False) -> torch.Tensor:
    """(N, H, W) float32 confidence at label size; 1.0 on ignored pixels (never 'hard')."""
    prob = F.softmax(_resize(_plain(logits).float(), target.shape[-2:], align_corners), dim=1)
    if confidence == "max":
        conf = prob.amax(dim=1)
    else:
        safe = torch.where(valid, target, torch.zeros_like(target)).long()
        conf = prob.gather(1, safe.unsqueeze(1)).squeeze(1)
    return conf.masked_fill(~valid, 1.0)


def _hard(conf: torch.Tensor, valid: torch.Tensor, threshold: float, min_kept: int) -> torch.Tensor:
    """valid & conf <= t, with t raised (OHEM floor) so at least ``min_kept`` valid pixels count."""
    thr = torch.full((), float(threshold), dtype=conf.dtype, device=conf.device)  # filled on the device: no host copy
    if min_kept > 0:
        conf_valid = conf[valid]
        k = min(int(min_kept), conf_valid.numel())
        if k > 0:
            kth = torch.kthvalue(conf_valid, k).values
            thr = torch.maximum(thr, kth)
    return valid & (conf <= thr)


def tse_mask(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor,
    threshold: float = 0.7,
    mode: str = "xor",
    confidence: str = "gt",
    ignore_index: int = 255,
    min_kept: int = 0,
    align_corners: bool = False,
) -> torch.Tensor:
    """TSE-RDD selection (N, H, W) bool: pixels whose difficulty student and teacher judge differently.

    ``hard = valid & (conf <= threshold)`` for each model, with conf the probability of the
    ground-truth class (``confidence="gt"``, the released code) or the top probability
    (``"max"``, the paper's text); combined by ``mode`` (``xor`` is the method). ``min_kept > 0``
    raises each model's threshold to its ``min_kept``-th lowest valid confidence in the batch when
    that is higher (the released code's OHEM floor). Never selects an ignored pixel. No gradient.
    """
    _choice("mode", mode, MODES)
    _choice("confidence", confidence, CONFIDENCES)
    _check_logits("student_logits", student_logits)
    _check_logits("teacher_logits", teacher_logits)
    _check_target(student_logits, target)
    if student_logits.shape[:2] != teacher_logits.shape[:2]:
        raise ConfigError(
            f"tse_mask: student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ in batch size or class count"
        )
    if min_kept < 0:
        raise ConfigError(f"min_kept={min_kept} must be >= 0 (0 turns the OHEM floor off)")
    with torch.no_grad():
        target = _plain(target)
        valid = target != ignore_index
        hard_s = _hard(_confidence(student_logits, target, valid, confidence, align_corners), valid, threshold, min_kept)
        hard_t = _hard(_confidence(teacher_logits, target, valid, confidence, align_corners), valid, threshold, min_kept)
        if mode == "xor":
            mask = hard_s ^ hard_t
        elif mode == "or":
            mask = hard_s | hard_t
        else:
            mask = hard_s & hard_t
        return mask & valid


def weighted_ce(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor,
    ignore_index: int = 255,
    normalize: str = "valid",
    class_weight: torch.Tensor | None = None,
    align_corners: bool = False,
) -> torch.Tensor:
    """Per-pixel weighted cross entropy (scalar), logits upsampled to the label size.

    ``weight`` (N, H, W) float or bool is detached. ``normalize="valid"`` divides the weighted
    sum by the number of non-ignored pixels (TFE), ``"selected"`` by the number of non-ignored
    pixels with a non-zero weight (TSE: ignored pixels add nothing to the sum, so they are not
    counted either, whatever their weight), ``"all"`` by every pixel, ignored ones included (the
    released main script's TFE: ``torch.mean`` of the weighted per-pixel CE); the denominators are
    at least 1, so an empty selection gives 0 (not NaN) and still backpropagates (zero gradients).
    ``"batch"`` is no per-pixel weighting: the CE averaged over valid pixels times the mean weight over
    all pixels (the released AT / CWD script's TFE, see ``TFE_AVERAGES``).

    ``class_weight`` (C,) optionally weights each pixel's CE by its true class, as
    ``nn.CrossEntropyLoss(weight=...)`` does: each counted pixel then counts ``class_weight[y]``
    in the denominator too (the released TSE loss with Cityscapes weights).
    """
    _choice("normalize", normalize, NORMALIZE)
    _check_logits("logits", logits)
    _check_target(logits, target)
    target = _plain(target).long()
    if tuple(weight.shape) != tuple(target.shape):
        raise ConfigError(
            f"weighted_ce: weight shape {tuple(weight.shape)} must equal the label shape {tuple(target.shape)}"
        )
    weight = _plain(weight)
    up = _resize(logits.float(), target.shape[-2:], align_corners)
    ce = F.cross_entropy(up, target, ignore_index=ignore_index, reduction="none")  # 0 where ignored
    w = weight.to(ce.dtype)
    valid = target != ignore_index
    if normalize == "batch":
        if class_weight is not None:
            raise ConfigError("weighted_ce: normalize='batch' (TFE) takes no class weights")
        return ce.sum() / valid.sum().clamp_min(1).to(ce.dtype) * w.mean()
    if normalize == "all":
        counted = torch.ones_like(valid)
    else:
        counted = valid if normalize == "valid" else valid & (weight != 0)
    if class_weight is not None:
        cw = _plain(class_weight).to(device=ce.device, dtype=ce.dtype)
        if cw.dim() != 1 or cw.numel() != up.shape[1]:
            raise ConfigError(f"weighted_ce: class_weight must hold one weight per class ({up.shape[1]}), "
                              f"got shape {tuple(cw.shape)}")
        pixel_cw = cw[torch.where(valid, target, torch.zeros_like(target))]
        denom = (pixel_cw * counted).sum()  # > 0 unless nothing is counted (weights are positive)
        return (ce * w * pixel_cw).sum() / torch.where(denom > 0, denom, torch.ones_like(denom))
    return (ce * w).sum() / counted.sum().clamp_min(1).to(ce.dtype)


class RDDWeighting:
    """The trainer's task loss: RDD-weighted CE on the main and (if any) aux head of the student.

    ``stage(it, max_iter)`` picks TFE for the 0-based iterations ``it < round(tfe_fraction * max_iter)``
    and TSE after (``tfe_fraction=0``: TSE only) and remembers it; ``task_loss`` then applies that
    stage. The aux head's CE is weighted here by ``aux_weight`` (0.4): the returned loss is
    ``main + aux_weight * aux``, callers add only the KD terms. For the student's aux head, TFE
    reuses the teacher's main-vs-aux weights and TSE compares it with the teacher's aux head.
    With ``enabled=False`` (or no teacher output) the loss is plain CE averaged over valid pixels.

    ``min_kept`` is the OHEM floor of :func:`tse_mask` (per process batch, like the released code's
    per-GPU floor; 0 = off, METHOD.md). ``tfe_average`` is the TFE loss's denominator: ``valid``
    pixels (default), or ``all`` pixels, ignored ones included, as the released main script averages. ``class_weights`` (one per class, or None) weight the TSE
    stage's CE by true class, main and aux head alike, as the released ``OhemCrossEntropy2d`` does;
    TFE stays unweighted there and here.
    """

    def __init__(
        self,
        enabled: bool = True,
        tfe_fraction: float = 0.1,
        threshold: float = 0.7,
        mode: str = "xor",
        confidence: str = "gt",
        min_kept: int = 0,
        ignore_index: int = 255,
        aux_weight: float = AUX_WEIGHT,
        class_weights: Sequence[float] | None = None,
        tfe_average: str = "valid",
        tfe_kl: str = "main_aux",
        align_corners: bool = False,
    ) -> None:
        if not 0.0 <= float(tfe_fraction) <= 1.0:
            raise ConfigError(f"rdd tfe_fraction={tfe_fraction} must be in [0, 1] (0.1 in the paper)")
        if not 0.0 < float(threshold) <= 1.0:
            raise ConfigError(f"rdd threshold={threshold} must be in (0, 1] (0.7 in the paper)")
        if int(min_kept) < 0:
            raise ConfigError(f"rdd min_kept={min_kept} must be >= 0 (0 turns the OHEM floor off)")
        self.enabled = bool(enabled)
        self.tfe_fraction = float(tfe_fraction)
        self.threshold = float(threshold)
        self.mode = _choice("rdd mode", mode, MODES)
        self.confidence = _choice("rdd confidence", confidence, CONFIDENCES)
        self.min_kept = int(min_kept)
        self.ignore_index = int(ignore_index)
        self.aux_weight = float(aux_weight)
        self.tfe_average = _choice("rdd tfe_average", tfe_average, TFE_AVERAGES)
        self.tfe_kl = _choice("rdd tfe_kl", tfe_kl, TFE_KL)
        self.align_corners = bool(align_corners)
        self.class_weights = None
        if class_weights is not None:
            cw = parse_class_weights(list(class_weights))
            self.class_weights = torch.tensor(cw, dtype=torch.float32)
        self.current: Stage | None = ("tfe" if self.tfe_fraction > 0 else "tse") if self.enabled else None

    def tfe_iters(self, max_iter: int) -> int:
        """Number of TFE iterations out of ``max_iter``."""
        return int(round(self.tfe_fraction * int(max_iter)))

    def stage(self, it: int, max_iter: int) -> Stage | None:
        """Stage for 0-based iteration ``it`` ("tfe" | "tse"; None when RDD is off); remembered."""
        if not self.enabled:
            self.current = None
        else:
            self.current = "tfe" if int(it) < self.tfe_iters(max_iter) else "tse"
        return self.current

    def _head_weight(self, stage: Stage, s_logits, t_logits, t_aux, target) -> tuple[torch.Tensor, str]:
        if stage == "tfe":
            return tfe_weights(t_logits, t_aux, target.shape[-2:], self.tfe_kl, self.align_corners), self.tfe_average
        mask = tse_mask(
            s_logits, t_logits, target, self.threshold, self.mode, self.confidence, self.ignore_index, self.min_kept,
            self.align_corners,
        )
        return mask, "selected"

    def task_loss(
        self, student_out: dict, teacher_out: dict | None, target: torch.Tensor, stage: Stage | None = None
    ) -> tuple[torch.Tensor, dict]:
        """``(loss, stats)`` for one batch; ``stage`` overrides the remembered one.

        stats (0-d tensors, main head; kept on the device so the step never waits for the GPU): ``stage`` (str or None), ``selected`` = fraction of valid pixels
        with a non-zero weight, ``weight`` = mean weight over valid pixels, ``ce`` = the weighted
        main-head CE.
        """
        if "out" not in student_out:
            raise ConfigError("task_loss: the student output must be a dict with an 'out' entry (ARCHITECTURE.md)")
        stage = stage if stage is not None else self.current
        target = _plain(target)
        valid = target != self.ignore_index
        s_out, s_aux = student_out["out"], student_out.get("aux")
        use_rdd = self.enabled and stage is not None and teacher_out is not None
        if use_rdd and stage not in ("tfe", "tse"):
            raise ConfigError(f"rdd stage={stage!r} is not one of tfe, tse")
        if use_rdd and stage == "tfe" and teacher_out.get("aux") is None:
            raise ConfigError(
                "TFE-RDD needs the teacher's aux head: build the teacher with aux=True, "
                "or set the RDD tfe fraction to 0 (TSE only)"
            )
        if use_rdd and stage == "tse" and s_aux is not None and teacher_out.get("aux") is None:
            raise ConfigError("TSE-RDD on the student's aux head needs the teacher's aux head: build it with aux=True")

        if not use_rdd:
            w = valid.float()
            ac = self.align_corners
            loss = main = weighted_ce(s_out, target, w, self.ignore_index, "valid", align_corners=ac)
            if s_aux is not None:
                loss = loss + self.aux_weight * weighted_ce(s_aux, target, w, self.ignore_index, "valid", align_corners=ac)
            one = torch.ones((), device=main.device)
            return loss, {"stage": None, "selected": one, "weight": one, "ce": main.detach()}

        t_out, t_aux = teacher_out["out"], teacher_out.get("aux")
        cw = self.class_weights if stage == "tse" else None
        if cw is not None:
            if cw.numel() != s_out.shape[1]:
                raise ConfigError(f"rdd class_weights: {cw.numel()} weights for a model with {s_out.shape[1]} classes")
            if cw.device != s_out.device:  # moved once, not every step
                self.class_weights = cw = cw.to(s_out.device)
        w, norm = self._head_weight(stage, s_out, t_out, t_aux, target)
        loss = main = weighted_ce(s_out, target, w, self.ignore_index, norm, cw, self.align_corners)
        if s_aux is not None:
            if stage == "tfe":
                w_aux = w  # the teacher's main-vs-aux agreement, same for both student heads
            else:
                w_aux, _ = self._head_weight(stage, s_aux, t_aux, t_aux, target)
            loss = loss + self.aux_weight * weighted_ce(s_aux, target, w_aux, self.ignore_index, norm, cw, self.align_corners)

        with torch.no_grad():  # 0-d tensors, not floats: no host sync in the training step
            n_valid = valid.sum().clamp_min(1)
            wf = w.float() * valid
            stats = {
                "stage": stage,
                "selected": (wf != 0).sum() / n_valid,
                "weight": wf.sum() / n_valid,
                "ce": main.detach(),
            }
        return loss, stats
