"""Knowledge-distillation losses between a frozen teacher and a student (torch).

- ``kd``: pixel-wise response KD, ``T^2 * KL(softmax(z_t/T) || softmax(z_s/T))`` per pixel,
  averaged over N x h x w, at logit resolution (METHOD.md; Hinton et al. 2015).
- ``cwd``: channel-wise distillation (Shu et al., ICCV 2021): each class channel of the logits is
  turned into a distribution over spatial positions (softmax at temperature tau), then
  ``tau^2 * KL(teacher || student)`` summed over positions and averaged over N x C.
- ``at``: attention transfer (Zagoruyko & Komodakis, ICLR 2017): a stage's attention map is the
  channel mean of ``|f|^p``, flattened and L2-normalised; the loss is the mean squared difference
  of the two maps (mean over N x positions), averaged over the chosen stage pairs.

Each method is registered once (``@register_kd``: name, default weight, hyperparameters, whether
it reads backbone features); the trainer, the config and the CLI read that registry. Default loss
weights follow the CIRKD code base the RDD release builds on
(github.com/winycg/CIRKD, ``train_scripts/train_kd/train_{cwd,at}.sh``): kd 1.0 (also METHOD.md),
cwd on logits 3.0 with tau 4, at 10000 on the last backbone stage.

All losses compute in float32 and treat teacher tensors as constants: they are detached (and
cloned when they are inference tensors from ``torch.inference_mode``), so they can join an
autograd graph and no gradient ever reaches the teacher.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from rdd_edge.errors import ConfigError



def _teacher(t: torch.Tensor) -> torch.Tensor:
    """Teacher tensor as a float32 constant that autograd may save."""
    t = t.detach()
    if t.is_inference():
        t = t.clone()
    return t.float()


def _match(student: torch.Tensor, teacher: torch.Tensor, what: str) -> torch.Tensor:
    """Check (N, C, h, w) logits agree; resize the student bilinearly to the teacher's h, w."""
    if student.dim() != 4 or teacher.dim() != 4:
        raise ConfigError(
            f"{what}: expected (N, C, h, w) logits, got student {tuple(student.shape)}, teacher {tuple(teacher.shape)}"
        )
    if student.shape[:2] != teacher.shape[:2]:
        raise ConfigError(
            f"{what}: student logits {tuple(student.shape)} and teacher logits {tuple(teacher.shape)} "
            "differ in batch size or class count; distill between models of the same data set"
        )
    if student.shape[-2:] != teacher.shape[-2:]:
        student = F.interpolate(student, size=teacher.shape[-2:], mode="bilinear", align_corners=False)
    return student


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float = 1.0) -> torch.Tensor:
    """Pixel-wise KD: mean over N x h x w of ``T^2 * KL(p_t || p_s)`` with p = softmax(z / T) over classes."""
    if T <= 0:
        raise ConfigError(f"kd temperature T={T} must be > 0")
    s = _match(student_logits.float(), teacher_logits, "kd_loss")
    t = _teacher(teacher_logits)
    log_ps = F.log_softmax(s / T, dim=1)
    log_pt = F.log_softmax(t / T, dim=1)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(dim=1)  # (N, h, w)
    return kl.mean() * (T * T)


def cwd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, tau: float = 4.0) -> torch.Tensor:
    """Channel-wise distillation: per (n, c) spatial softmax at ``tau``, ``tau^2 * KL(t || s)``, mean over N x C."""
    if tau <= 0:
        raise ConfigError(f"cwd temperature tau={tau} must be > 0")
    s = _match(student_logits.float(), teacher_logits, "cwd_loss")
    t = _teacher(teacher_logits)
    n, c = s.shape[:2]
    log_ps = F.log_softmax(s.reshape(n, c, -1) / tau, dim=-1)
    log_pt = F.log_softmax(t.reshape(n, c, -1) / tau, dim=-1)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(dim=-1)  # (N, C)
    return kl.mean() * (tau * tau)


def attention_map(feat: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """(N, h, w) channel mean of ``|f|^p`` (not yet normalised), in float32."""
    if feat.dim() != 4:
        raise ConfigError(f"at_loss: expected (N, C, h, w) features, got {tuple(feat.shape)}")
    return feat.float().abs().pow(p).mean(dim=1)


def _as_list(x: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [x] if isinstance(x, torch.Tensor) else list(x)


def at_loss(
    student_feats: torch.Tensor | Sequence[torch.Tensor],
    teacher_feats: torch.Tensor | Sequence[torch.Tensor],
    p: float = 2.0,
) -> torch.Tensor:
    """Attention transfer over stage pairs (one tensor each, or equal-length lists).

    Per pair: maps = L2-normalised flattened ``attention_map``; loss = mean over N x positions of
    the squared difference; pairs are averaged. A student map whose size differs from the
    teacher's is resized bilinearly to it before normalising. Channel counts may differ.
    """
    s_list, t_list = _as_list(student_feats), _as_list(teacher_feats)
    if not s_list or len(s_list) != len(t_list):
        raise ConfigError(
            f"at_loss: need the same non-zero number of student and teacher stages, got {len(s_list)} and {len(t_list)}"
        )
    total = None
    for fs, ft in zip(s_list, t_list):
        a_s = attention_map(fs, p)
        a_t = attention_map(_teacher(ft), p)
        if a_s.shape[0] != a_t.shape[0]:
            raise ConfigError(f"at_loss: batch sizes differ ({a_s.shape[0]} vs {a_t.shape[0]})")
        if a_s.shape[-2:] != a_t.shape[-2:]:
            a_s = F.interpolate(a_s.unsqueeze(1), size=a_t.shape[-2:], mode="bilinear", align_corners=False).squeeze(1)
        v_s = F.normalize(a_s.flatten(1), dim=1)
        v_t = F.normalize(a_t.flatten(1), dim=1)
        term = (v_s - v_t).pow(2).mean()
        total = term if total is None else total + term
    return total / len(s_list)


@dataclass(frozen=True)
class KDMethod:
    """One registered KD method: its name, default weight, hyperparameters and what it reads."""

    name: str
    weight: float  # default weight of the term in the student's loss
    params: dict[str, Any]  # hyperparameters and their defaults (settable: --kd-option KEY=VALUE)
    needs_features: bool  # the models must return backbone features (``features=True``)
    make: Callable[..., Callable[[dict, dict], torch.Tensor]]  # (**params) -> fn(student_out, teacher_out)
    summary: str  # one line for ``rdd-edge distill --list-methods``


_KD_REGISTRY: dict[str, KDMethod] = {}


def register_kd(name: str, weight: float, params: dict[str, Any] | None = None, needs_features: bool = False):
    """File a KD method (timm-style registry): the decorated factory takes the hyperparameters and
    returns ``fn(student_out, teacher_out) -> unweighted loss``; its docstring's first line is the summary."""

    def deco(make: Callable[..., Callable[[dict, dict], torch.Tensor]]):
        doc = (make.__doc__ or "").strip().splitlines()
        _KD_REGISTRY[name] = KDMethod(name, float(weight), dict(params or {}), needs_features, make, doc[0] if doc else "")
        return make

    return deco


def kd_methods() -> dict[str, KDMethod]:
    """The registered KD methods by name (``none`` is not one: it means no KD term)."""
    return dict(_KD_REGISTRY)


def method_names() -> tuple[str, ...]:
    """What ``--method`` accepts: ``none`` and every registered method."""
    return ("none", *_KD_REGISTRY)


def _features(out: dict, stages: Sequence[int], who: str) -> list[torch.Tensor]:
    try:
        return [out["features"][i] for i in stages]
    except (KeyError, IndexError, TypeError) as e:
        raise ConfigError(f"kd method needs the {who}'s backbone features at stages {list(stages)}: call the model with "
                          f"features=True ({type(e).__name__}: {e})") from None


@register_kd("kd", weight=1.0, params={"T": 1.0})
def _make_kd(T: float):
    """pixel-wise response KD on the logits, T^2 KL(teacher || student) (METHOD.md)"""
    if T <= 0:
        raise ConfigError(f"kd temperature T={T} must be > 0")
    return lambda s, t: kd_loss(s["out"], t["out"], T=T)


@register_kd("cwd", weight=3.0, params={"tau": 4.0})
def _make_cwd(tau: float):
    """channel-wise distillation of the logits (Shu et al. 2021), spatial softmax at tau"""
    if tau <= 0:
        raise ConfigError(f"cwd temperature tau={tau} must be > 0")
    return lambda s, t: cwd_loss(s["out"], t["out"], tau=tau)


@register_kd("at", weight=10000.0, params={"p": 2.0, "stages": (-1,)}, needs_features=True)
def _make_at(p: float, stages: Sequence[int]):
    """attention transfer on backbone stages (Zagoruyko & Komodakis 2017)"""
    stages = tuple(int(i) for i in (stages if isinstance(stages, (list, tuple)) else (stages,)))
    return lambda s, t: at_loss(_features(s, stages, "student"), _features(t, stages, "teacher"), p=p)


class KDLoss:
    """A weighted KD term: ``loss(student_out, teacher_out) -> weight * raw_loss``.

    ``student_out``/``teacher_out`` are the model dicts of ARCHITECTURE.md; methods with
    ``needs_features`` read ``"features"`` (models called with ``features=True``).
    """

    def __init__(self, method: KDMethod, weight: float, options: dict[str, Any]):
        self.method = method.name
        self.weight = float(weight)
        self.needs_features = method.needs_features
        self.options = dict(options)
        self._fn = method.make(**self.options)

    def raw(self, student_out: dict, teacher_out: dict) -> torch.Tensor:
        """The unweighted loss."""
        return self._fn(student_out, teacher_out)

    def __call__(self, student_out: dict, teacher_out: dict) -> torch.Tensor:
        return self.weight * self.raw(student_out, teacher_out)

    def __repr__(self) -> str:
        return f"KDLoss(method={self.method!r}, weight={self.weight}, options={self.options})"


def kd_options(method: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The method's hyperparameters: its defaults updated by ``options``; unknown keys are an error."""
    m = _lookup(method)
    opts = dict(options or {})
    unknown = sorted(set(opts) - set(m.params))
    if unknown:
        known = ", ".join(f"{k}={v}" for k, v in m.params.items()) or "none"
        raise ConfigError(f"kd method {method!r} has no option(s) {', '.join(unknown)}; its options: {known}")
    return {**m.params, **opts}


def _lookup(method: str) -> KDMethod:
    key = str(method).lower()
    if key not in _KD_REGISTRY:
        close = difflib.get_close_matches(key, list(method_names()), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown KD method {method!r}.{hint} Choose one of {', '.join(method_names())}")
    return _KD_REGISTRY[key]


def build_kd_loss(method: str, weight: float | None = None, options: dict[str, Any] | None = None) -> KDLoss | None:
    """The KD term for ``method``, or None for ``"none"``.

    ``weight=None`` takes the method's registered default; ``options`` override its
    hyperparameters (e.g. ``{"T": 2.0}`` for kd, ``{"tau": 1.0}`` for cwd, ``{"stages": [2, 3]}`` for at).
    """
    if str(method).lower() == "none":
        return None
    m = _lookup(method)
    w = m.weight if weight is None else float(weight)
    if not w >= 0:
        raise ConfigError(f"KD weight {w} for method {m.name!r} must be >= 0")
    return KDLoss(m, w, kd_options(m.name, options))
