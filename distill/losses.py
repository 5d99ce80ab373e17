"""Knowledge-distillation losses between a frozen teacher and a student (torch).

Building blocks:

- ``kd_loss``: pixel-wise response KD, ``T^2 * KL(softmax(z_t/T) || softmax(z_s/T))`` per pixel,
  averaged over N x h x w, at logit resolution (METHOD.md; Hinton et al. 2015).
- ``cwd_loss``: channel-wise distillation (Shu et al., ICCV 2021): each channel (class of the
  logits, or feature channel) becomes a distribution over spatial positions (softmax at
  temperature tau); ``tau^2 * KL(teacher || student)`` summed over channels and positions, divided
  by N x C_student (C before the optional 1x1 connector that maps student channels to the teacher's).
- ``at_loss``: attention transfer (Zagoruyko & Komodakis, ICLR 2017): a map is the channel mean of
  ``|f|^p``, flattened and L2-normalised; the loss is the mean squared difference (N x positions).

Registered methods (``--method``) and where their defaults come from. ``at`` and ``cwd`` are the
baselines the RDD paper's Table 8 ran, as in the released scripts (github.com/sunyueue/RDD, a fork
of github.com/winycg/CIRKD); their terms read the main head's feature after ASPP / pyramid
pooling (``"head_feature"``), like CIRKD's ``x_feat_after_aspp``:

- ``kd``: pixel KD, weight 1 (METHOD.md).
- ``at``: ``kd * KD(logits) + at * AT(head feature)``, kd 1, at 10000, p 2 (RDD release,
  ``train_scripts/exp_table_5/train_otherKD_twostage.sh``: ``--lambda-kd 1.0 --lambda-at 10000``).
- ``cwd``: ``kd * KD(logits) + feature * CWD(connector(student head feature), teacher head
  feature) + logit * CWD(logits)``, kd 1, feature 50, logit 3, tau 4 for both CWD terms; the
  connector is a trainable 1x1 conv without bias, student -> teacher channels, used only when they
  differ (CIRKD ``train_kd.py`` with ``scripts/train_kd/train_cwd.sh``, ``losses/cwd.py``). That
  script also trains a discriminator (``--lambda-adv 0.001 --lambda-d 0.1``); the adversarial
  term is not implemented here.
- ``cwd-logits``: the logit CWD term alone (weight 3, tau 4); ``at-backbone``: AT alone on
  backbone stages (weight 10000, the last stage by default).

Each method is registered once (``@register_kd``: name, default weight, hyperparameters, whether
it reads features); the trainer, the config and the CLI read that registry. A factory may return
an ``nn.Module`` with trainable parts (the CWD connector): :meth:`KDLoss.bind` sizes them for the
student and teacher, the trainer adds :meth:`KDLoss.parameters` to the optimiser and saves
:meth:`KDLoss.state_dict` in its checkpoints.

All losses compute in float32 and treat teacher tensors as constants: they are detached (and
cloned when they are inference tensors from ``torch.inference_mode``), so they can join an
autograd graph and no gradient ever reaches the teacher.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from rdd_edge.errors import CheckpointError, ConfigError


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
            f"{what}: student {tuple(student.shape)} and teacher {tuple(teacher.shape)} differ in batch size or "
            "class count / channels; distill between models of the same data set (features of different widths "
            "need a connector)"
        )
    if student.shape[-2:] != teacher.shape[-2:]:
        student = F.interpolate(student, size=teacher.shape[-2:], mode="bilinear", align_corners=False)
    return student


def positive_temperature(method: str, name: str, value: float) -> float:
    """A softmax temperature, checked once for every loss that takes one."""
    if not value > 0:
        raise ConfigError(f"{method} temperature {name}={value} must be > 0")
    return float(value)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float = 1.0) -> torch.Tensor:
    """Pixel-wise KD: mean over N x h x w of ``T^2 * KL(p_t || p_s)`` with p = softmax(z / T) over classes."""
    positive_temperature("kd", "T", T)
    s = _match(student_logits.float(), teacher_logits, "kd_loss")
    t = _teacher(teacher_logits)
    log_ps = F.log_softmax(s / T, dim=1)
    log_pt = F.log_softmax(t / T, dim=1)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(dim=1)  # (N, h, w)
    return kl.mean() * (T * T)


def cwd_loss(student: torch.Tensor, teacher: torch.Tensor, tau: float = 4.0,
             connector: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Channel-wise distillation of (N, C, h, w) logits or features.

    Per (n, c): softmax over the h x w positions at ``tau``; ``tau^2 * KL(t || s)`` summed over
    channels and positions and divided by ``N * C_s``, with ``C_s`` the student's channel count
    before ``connector`` (a callable mapping student channels to the teacher's, e.g. a 1x1 conv),
    as in CIRKD's ``CriterionCWD``. Without a connector the channel counts must match.
    """
    positive_temperature("cwd", "tau", tau)
    if student.dim() != 4 or teacher.dim() != 4:
        raise ConfigError(f"cwd_loss: expected (N, C, h, w) tensors, got student {tuple(student.shape)}, "
                          f"teacher {tuple(teacher.shape)}")
    n, c_s = student.shape[:2]
    if connector is not None:
        student = connector(student)
    s = _match(student.float(), teacher, "cwd_loss")
    t = _teacher(teacher)
    log_ps = F.log_softmax(s.reshape(n, s.shape[1], -1) / tau, dim=-1)
    log_pt = F.log_softmax(t.reshape(n, t.shape[1], -1) / tau, dim=-1)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum()
    return kl / (n * c_s) * (tau * tau)


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


def _head_feature(out: dict, who: str) -> torch.Tensor:
    feat = out.get("head_feature") if isinstance(out, dict) else None
    if feat is None:
        raise ConfigError(f"kd method needs the {who}'s head feature (\"head_feature\", the classifier's input): "
                          "call the model with features=True")
    return feat


def _term_weights(method: str, **weights: float) -> dict[str, float]:
    for k, v in weights.items():
        if not float(v) >= 0:
            raise ConfigError(f"kd method {method!r}: term weight {k}={v} must be >= 0")
    return {k: float(v) for k, v in weights.items()}


def _head_channels(model: nn.Module, who: str) -> int:
    """Width of a model's ``"head_feature"`` (through DDP / torch.compile wrappers)."""
    inner = model
    while True:
        wrapped = getattr(inner, "module", None)
        wrapped = wrapped if isinstance(wrapped, nn.Module) else getattr(inner, "_orig_mod", None)
        if not isinstance(wrapped, nn.Module):
            break
        inner = wrapped
    ch = getattr(inner, "head_feature_channels", None)
    if not isinstance(ch, int):
        raise ConfigError(f"kd method needs the {who}'s head feature width: {type(inner).__name__} has no "
                          "head_feature_channels (models.create_model networks have it)")
    return ch


@register_kd("kd", weight=1.0, params={"T": 1.0})
def _make_kd(T: float):
    """pixel-wise response KD on the logits, T^2 KL(teacher || student) (METHOD.md)"""
    positive_temperature("kd", "T", T)
    return lambda s, t: kd_loss(s["out"], t["out"], T=T)


class CWDTerms(nn.Module):
    """CIRKD's CWD setup: ``kd * KD + feature * CWD(head feature) + logit * CWD(logits)``, tau for both CWD terms.

    The feature term maps the student's head feature to the teacher's width with a trainable 1x1
    conv without bias (``connector``), made by :meth:`bind` when the widths differ (128 -> 256 for
    the paper's students), as CIRKD's ``CriterionCWD`` does; it is trained with the student (the
    trainer adds it to the optimiser and saves it). Without ``bind``, differing widths are an error.
    """

    def __init__(self, tau: float, kd: float, feature: float, logit: float) -> None:
        super().__init__()
        self.tau = positive_temperature("cwd", "tau", tau)
        w = _term_weights("cwd", kd=kd, feature=feature, logit=logit)
        self.kd_w, self.feature_w, self.logit_w = w["kd"], w["feature"], w["logit"]
        self.connector: nn.Conv2d | None = None

    def bind(self, student: nn.Module, teacher: nn.Module) -> None:
        """Make the connector (student -> teacher head-feature width) on the student's device, if the widths differ."""
        if self.feature_w == 0:
            return
        c_s, c_t = _head_channels(student, "student"), _head_channels(teacher, "teacher")
        if c_s != c_t:
            device = next(student.parameters()).device
            self.connector = nn.Conv2d(c_s, c_t, kernel_size=1, bias=False).to(device)

    def distribute(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        """Run the connector through ``wrap`` (DDP), so its gradients are averaged across processes."""
        if self.connector is not None:
            self.__dict__["_wrapped"] = wrap(self.connector)  # not a submodule: state_dict keeps plain keys

    def forward(self, s: dict, t: dict) -> torch.Tensor:
        total = torch.zeros((), device=s["out"].device)
        if self.kd_w:
            total = total + self.kd_w * kd_loss(s["out"], t["out"], T=1.0)
        if self.feature_w:
            fs, ft = _head_feature(s, "student"), _head_feature(t, "teacher")
            connector = None
            if fs.shape[1] != ft.shape[1]:
                connector = self.__dict__.get("_wrapped") or self.connector
                if connector is None or self.connector.in_channels != fs.shape[1]:
                    raise ConfigError(f"cwd: student head feature has {fs.shape[1]} channels, teacher {ft.shape[1]}; "
                                      "the 1x1 connector is made by KDLoss.bind(student, teacher) (the trainer does this)")
            total = total + self.feature_w * cwd_loss(fs, ft, self.tau, connector)
        if self.logit_w:
            total = total + self.logit_w * cwd_loss(s["out"], t["out"], self.tau)
        return total


@register_kd("cwd", weight=1.0, params={"feature": 50.0, "logit": 3.0, "kd": 1.0, "tau": 4.0}, needs_features=True)
def _make_cwd(feature: float, logit: float, kd: float, tau: float):
    """CIRKD's CWD setup: head-feature CWD (50, trained 1x1 connector) + logit CWD (3) + pixel KD (1), tau 4"""
    return CWDTerms(tau, kd, feature, logit)


@register_kd("at", weight=1.0, params={"at": 10000.0, "kd": 1.0, "p": 2.0}, needs_features=True)
def _make_at(at: float, kd: float, p: float):
    """the released AT setup: attention transfer on the head feature (10000) + pixel KD (1)"""
    w = _term_weights("at", at=at, kd=kd)

    def fn(s: dict, t: dict) -> torch.Tensor:
        total = torch.zeros((), device=s["out"].device)
        if w["kd"]:
            total = total + w["kd"] * kd_loss(s["out"], t["out"], T=1.0)
        if w["at"]:
            total = total + w["at"] * at_loss(_head_feature(s, "student"), _head_feature(t, "teacher"), p=p)
        return total

    return fn


@register_kd("cwd-logits", weight=3.0, params={"tau": 4.0})
def _make_cwd_logits(tau: float):
    """channel-wise distillation of the logits alone (Shu et al. 2021), spatial softmax at tau"""
    positive_temperature("cwd", "tau", tau)
    return lambda s, t: cwd_loss(s["out"], t["out"], tau=tau)


@register_kd("at-backbone", weight=10000.0, params={"p": 2.0, "stages": (-1,)}, needs_features=True)
def _make_at_backbone(p: float, stages: Sequence[int]):
    """attention transfer alone on backbone stages (Zagoruyko & Komodakis 2017)"""
    stages = tuple(int(i) for i in (stages if isinstance(stages, (list, tuple)) else (stages,)))
    return lambda s, t: at_loss(_features(s, stages, "student"), _features(t, stages, "teacher"), p=p)


class KDLoss:
    """A weighted KD term: ``loss(student_out, teacher_out) -> weight * raw_loss``.

    ``student_out``/``teacher_out`` are the model dicts of ARCHITECTURE.md; methods with
    ``needs_features`` read ``"features"`` / ``"head_feature"`` (models called with ``features=True``).
    A method with trainable parts (``cwd``'s connector) holds them in ``module``: call
    :meth:`bind` with the student and teacher before training, optimise :meth:`parameters` with
    the student, and keep :meth:`state_dict` with its checkpoint.
    """

    def __init__(self, method: KDMethod, weight: float, options: dict[str, Any]):
        self.method = method.name
        self.weight = float(weight)
        self.needs_features = method.needs_features
        self.options = dict(options)
        self._fn = method.make(**self.options)
        self.module: nn.Module | None = self._fn if isinstance(self._fn, nn.Module) else None

    def bind(self, student: nn.Module, teacher: nn.Module) -> "KDLoss":
        """Size the method's trainable parts for these models (no-op for methods without any)."""
        if self.module is not None and hasattr(self.module, "bind"):
            self.module.bind(student, teacher)
        return self

    def distribute(self, wrap: Callable[[nn.Module], nn.Module]) -> "KDLoss":
        """Wrap the trainable parts for multi-process training (``wrap`` = DDP); no-op without any."""
        if self.module is not None and hasattr(self.module, "distribute"):
            self.module.distribute(wrap)
        return self

    def parameters(self) -> list[nn.Parameter]:
        """Trainable parameters of the KD term itself (optimised with the student's)."""
        return list(self.module.parameters()) if self.module is not None else []

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.module.state_dict().items()} if self.module is not None else {}

    def load_state_dict(self, state: dict[str, torch.Tensor] | None) -> None:
        """Restore :meth:`state_dict` (after :meth:`bind`); a CheckpointError when the keys or shapes differ."""

        state = dict(state or {})
        own = self.module.state_dict() if self.module is not None else {}
        bad = sorted(set(own) ^ set(state)) + sorted(k for k in own if k in state and own[k].shape != state[k].shape)
        if bad:
            raise CheckpointError(f"the checkpoint's {self.method} KD parameters do not fit this run ({', '.join(bad)}); "
                                  "resume with the student, teacher and method it was made with")
        if self.module is not None and state:
            self.module.load_state_dict(state)

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
    return {**m.params, **{k: _option_value(m.name, k, v, m.params[k]) for k, v in opts.items()}}


def _option_value(method: str, key: str, value: Any, default: Any) -> Any:
    """``value`` as the type of the option's default: a finite number, or a list of whole numbers."""
    where = f"--kd-option {key}={value}: kd method {method!r}"
    if isinstance(default, (list, tuple)):
        items = value if isinstance(value, (list, tuple)) else [value]
        if not items or not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
            raise ConfigError(f"{where} takes whole numbers, e.g. {key}={list(default)}")
        return type(default)(items)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where} takes a finite number, e.g. {key}={default}")
    return float(value)


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
    hyperparameters (e.g. ``{"T": 2.0}`` for kd, ``{"tau": 1.0, "feature": 25}`` for cwd, ``{"at": 5000}``
    for at, ``{"stages": [2, 3]}`` for at-backbone).
    """
    if str(method).lower() == "none":
        return None
    m = _lookup(method)
    w = m.weight if weight is None else float(weight)
    if not w >= 0:
        raise ConfigError(f"KD weight {w} for method {m.name!r} must be >= 0")
    return KDLoss(m, w, kd_options(m.name, options))
