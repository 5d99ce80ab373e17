"""ImageNet initialisation of a network's backbone: timm's hub weights or a local backbone file.

``init_backbone(model, source)`` with ``source``:

- ``"imagenet"``: timm's ImageNet weights of exactly this backbone (``resnet101s.gluon_in1k``,
  ``mobilenetv2_100.ra_in1k``), from the local Hugging Face cache or downloaded. timm has none for
  the deep-stem ResNet-18: then, and when the hub cannot be reached, one line says which file to
  download (the released code's ``resnet18-imagenet.pth`` ...) and to pass ``--pretrained PATH``,
  or ``--pretrained none`` to start from random weights. Never a silent random start.
- a path: a backbone state dict in the released code's key layout (its ImageNet files) or in
  timm's (also any of our checkpoints, whose ``backbone.`` entries are timm's). Read with the
  safe ``weights_only`` unpickler (or safetensors). The layout is the one more of the file's
  tensors fit (name and shape).

Returns an :class:`InitReport`: what was loaded, skipped (the file's classifier, or heads) and
missing, and the input normalisation those weights expect (timm's: RGB ImageNet mean/std; the
released code's: BGR minus the caffe mean, as its training scripts feed them).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlparse

import torch
import torch.nn as nn

from rdd_edge.errors import CheckpointError, ModelError
from rdd_edge.models.checkpoint import FORMAT, read_torch_file, validate_checkpoint
from rdd_edge.models.registry import model_cfg
from rdd_edge.models.released import BACKBONE_PREFIX, backbone_names, strip_module
from rdd_edge.models.tensor_check import check_state
from rdd_edge.normalize import CAFFE, DEFAULT, IMAGENET, Normalization, normalization_of, recorded_normalization
from rdd_edge.sources import describe_layout, where

NONE_VALUES = ("none", "")
HUB_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm's hub repositories hold, preferred first


@dataclass
class InitReport:
    """What initialised a backbone: source, key layout, counts and names, the normalisation its weights expect."""

    source: str
    layout: str  # "released" or "timm"
    loaded: int
    skipped: list[str] = field(default_factory=list)  # in the file, not part of the backbone
    missing: list[str] = field(default_factory=list)  # backbone entries the file lacks (left at random init)
    normalization: Normalization = IMAGENET

    def line(self) -> str:
        """One line for the console: ``pretrained: loaded 138 backbone tensors from X (released layout); ...``."""
        def few(keys: list[str]) -> str:
            return f" ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})" if keys else ""

        return (f"pretrained: loaded {self.loaded} backbone tensors from {self.source} ({self.layout} layout); "
                f"skipped {len(self.skipped)}{few(self.skipped)}; missing {len(self.missing)}{few(self.missing)}; "
                f"input: {self.normalization.describe()}")

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "layout": self.layout, "loaded": self.loaded, "skipped": list(self.skipped),
                "missing": list(self.missing), "normalization": self.normalization.as_dict()}


def is_none(source: Any) -> bool:
    return source is None or source is False or (isinstance(source, str) and source.strip().lower() in NONE_VALUES)


def init_backbone(model: nn.Module, source: str | Path) -> InitReport:
    """Load ImageNet (or any backbone) weights into ``model.backbone``; see the module docstring."""
    cfg = model_cfg(model.model_name)
    if isinstance(source, str) and source.strip().lower() == "imagenet":
        tag = cfg.get("imagenet_timm")
        if not tag and cfg.get("imagenet_file"):
            raise ModelError(
                f"--pretrained imagenet: timm has no ImageNet weights for {model.model_name}'s backbone ({cfg.get('arch')}, "
                f"the released code's); download the released {where(cfg['imagenet_file'])} "
                f"and pass it as --pretrained PATH, or --pretrained none to start from random weights")
        if not tag:
            raise ModelError(
                f"--pretrained imagenet: no ImageNet weights are known for {model.model_name}'s backbone ({cfg.get('arch')}); "
                "pass backbone weights as --pretrained PATH (timm's key layout), or --pretrained none")
        path = hub_file(tag, cfg.get("imagenet_file"))
        return load_backbone(model, read_weights(path), f"timm {tag}", layout="timm")
    path = Path(source)
    state, record = read_weights_and_record(path)
    report = load_backbone(model, state, str(path))
    if record is not None:  # one of our checkpoints: its weights expect what it records (an imported one: caffe)
        report.normalization = recorded_normalization(record)
    return report


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict of tensors from a torch file (safe unpickler) or a safetensors file; ``module.`` dropped."""
    return read_weights_and_record(path)[0]


def read_weights_and_record(path: str | Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    """:func:`read_weights`, and the rdd-edge checkpoint it came from (None for a plain state dict)."""
    path = Path(path)
    record = None
    if path.suffix == ".safetensors" and path.is_file():
        from safetensors.torch import load_file  # lazy: optional dependency (safetensors, comes with timm)

        try:
            obj: Any = load_file(str(path))
        except Exception as exc:
            raise CheckpointError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from None
    else:
        obj = read_torch_file(path)
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        record = validate_checkpoint(dict(obj), path)
        obj = obj.get("state_dict")
    elif isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: holds no state dict of tensors (expected backbone weights saved with torch.save)")
    check_state(obj, path, finite=True)  # names, plain dense float tensors of sane size, no inf/NaN: before any use
    return strip_module(obj), record


def _candidates(model: nn.Module) -> dict[str, dict[str, str]]:
    """Per layout, ``{file key: our key}`` of the backbone's entries."""
    ours = [k for k in model.state_dict() if k.startswith("backbone.")]
    timm = {k[len("backbone."):]: k for k in ours}
    timm.update({k: k for k in ours})  # our own checkpoints
    cands = {"timm": timm}
    if model_cfg(model.model_name).get("released"):  # one of the paper's networks: its released code's names too
        released = backbone_names(model)
        prefix = BACKBONE_PREFIX[model_cfg(model.model_name)["released"]]
        released.update({prefix + k: v for k, v in list(released.items())})  # a released segmentation checkpoint
        cands["released"] = released
    return cands


def load_backbone(model: nn.Module, state: Mapping[str, torch.Tensor], source: str, layout: str | None = None) -> InitReport:
    """Copy the backbone tensors of ``state`` into ``model``; ``layout`` None: the one more tensors fit."""
    own = model.state_dict()
    cands = _candidates(model)

    def fits(names: dict[str, str]) -> int:  # BN step counters are scalars everywhere: they prove nothing
        return sum(1 for k, v in state.items() if k in names and tuple(v.shape) == tuple(own[names[k]].shape)
                   and not k.endswith("num_batches_tracked"))

    if layout is None:
        layout = max(cands, key=lambda name: (fits(cands[name]), name == "released"))
    names = cands[layout]
    if fits(names) == 0:
        other = describe_layout(state)
        raise CheckpointError(
            (f"{source}: {other}; " if other and "backbone" not in other else f"{source}: ")
            + f"no tensor fits the backbone of {model.model_name} in "
            + " or ".join(f"the {name} layout (e.g. {next(iter(c))})" for name, c in sorted(cands.items()))
            + f"; pass backbone weights of this network ({model_cfg_text(model)})")
    mismatched = [f"{k} {tuple(state[k].shape)} in the file vs {tuple(own[names[k]].shape)} here" for k in state
                  if k in names and tuple(state[k].shape) != tuple(own[names[k]].shape)]
    if mismatched:
        raise CheckpointError(f"{source}: {len(mismatched)} backbone tensors do not fit {model.model_name} "
                              f"({layout} layout; first: {mismatched[0]}); pass backbone weights of "
                              f"this network ({model_cfg_text(model)})")
    taken = {names[k]: v for k, v in state.items() if k in names}
    with torch.no_grad():
        for k, v in taken.items():
            own[k].copy_(v.to(own[k].dtype))
    skipped = [k for k in state if k not in names]
    missing = [k for k in own if k.startswith("backbone.") and k not in taken and not k.endswith("num_batches_tracked")]
    norm = CAFFE if layout == "released" else IMAGENET
    return InitReport(source, layout, len(taken), skipped, missing, norm)


def model_cfg_text(model: nn.Module) -> str:
    """``arch; the released code's FILE (LINK) or timm's TAG``: where backbone weights of this network come from."""
    cfg = model_cfg(model.model_name)
    sources = [f"the released code's {where(cfg['imagenet_file'])}" if cfg.get("imagenet_file") else "",
               f"timm's {cfg['imagenet_timm']}" if cfg.get("imagenet_timm") else ""]
    return f"{cfg.get('arch')}" + ("; " + " or ".join(w for w in sources if w) if any(sources) else "")


# ---------------------------------------------------------------- timm's hub
def hub_file(tag: str, released_file: str | None) -> Path:
    """The local path of timm's weights ``tag`` (``arch.pretrained_tag``): cached, else downloaded.

    Offline (the hub cannot be reached and nothing is cached) one ModelError line says so and
    names ``--pretrained PATH`` and ``--pretrained none``, after a connection probe of a few
    seconds instead of the hub client's minute of retries.
    """
    import timm  # lazy: timm takes seconds to import; only --pretrained imagenet needs it

    cfg = timm.get_pretrained_cfg(tag)
    repo = getattr(cfg, "hf_hub_id", None)
    if not repo:
        raise ModelError(f"--pretrained imagenet: timm knows no hub weights {tag}; pass --pretrained PATH or --pretrained none")
    cached = _cached(repo)
    if cached is not None:
        return cached
    offline = ("--pretrained imagenet: cannot download timm's ImageNet weights {tag} ({why}); download them where there "
               "is internet (they are then cached), or pass --pretrained PATH (a backbone state dict"
               + (f", e.g. the released {where(released_file)}" if released_file else "")
               + ") or --pretrained none to start from random weights")
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise ModelError(offline.format(tag=tag, why="HF_HUB_OFFLINE is set and they are not in the local cache"))
    endpoint = _endpoint()
    if not _reachable(endpoint):
        raise ModelError(offline.format(tag=tag, why=f"offline: {endpoint} cannot be reached and they are not in the local cache"))
    from huggingface_hub import hf_hub_download  # lazy: optional dependency (huggingface_hub, comes with timm)

    errors = []
    for name in HUB_FILES:
        try:
            return Path(hf_hub_download(repo, name))
        except Exception as exc:  # the hub client raises many types; report the first line
            errors.append(f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
    raise ModelError(offline.format(tag=tag, why="; ".join(errors)))


def _cached(repo: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache  # lazy: optional dependency (huggingface_hub, comes with timm)
    except ImportError:
        return None
    for name in HUB_FILES:
        found = try_to_load_from_cache(repo, name)
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    return None


def _endpoint() -> str:
    env = os.environ.get("HF_ENDPOINT")
    if env:
        return env.rstrip("/")
    try:
        from huggingface_hub import constants  # lazy: optional dependency (huggingface_hub, comes with timm)

        return str(constants.ENDPOINT).rstrip("/")
    except ImportError:
        return "https://huggingface.co"


def _reachable(url: str, timeout: float = 5.0) -> bool:
    """Whether a TCP connection to ``url``'s host opens (True when a proxy is configured: let the client try)."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    u = urlparse(url)
    host, port = u.hostname, u.port or (443 if u.scheme == "https" else 80)
    if not host:
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


MIN_COVERAGE = 0.5  # --pretrained must fill at least this share of the backbone's tensors (--pretrained-partial: any)


def check_coverage(report: InitReport, floor: float = MIN_COVERAGE) -> None:
    """ModelError when ``report`` loaded under ``floor`` of the backbone's tensors: the rest would train from
    random weights without anyone having asked for that."""
    total = report.loaded + len(report.missing)
    if total and report.loaded < floor * total:
        raise ModelError(f"--pretrained {report.source}: loaded {report.loaded} of the backbone's {total} tensors "
                         f"({100 * report.loaded / total:.0f}%); the other {len(report.missing)} would start from random "
                         "weights. Pass this network's backbone weights, or add --pretrained-partial to train from "
                         "them anyway")


def normalization_for(report: InitReport | None, override: Any = None) -> Normalization:
    """The input normalisation a run trains with: ``override`` (a preset name) if given, else the one its
    initial weights expect, else the default (random init)."""
    if override is not None:
        return normalization_of(override)
    return report.normalization if report is not None else DEFAULT
