"""The key layout of the paper's released code (github.com/sunyueue/RDD, built on CIRKD) and ours, one tensor to one tensor.

Our paper networks are the released architectures layer for layer, with timm as the backbone
implementation, so every tensor of a released state dict has exactly one place in ours; only the
names differ. :func:`released_key` spells each of our keys the released way; the mapping of a
whole model (:func:`released_names`) is built from our own state dict, so it covers every key
by construction, and ``tests/test_released.py`` checks it against the key lists and logits of
the released code.

Released names, by part:

- ResNet v1s backbone (``pretrained.``): a deep stem ``conv1``/``bn1``, ``conv2``/``bn2``,
  ``conv3``/``bn3`` (timm: ``conv1.0``/``conv1.1``, ``conv1.3``/``conv1.4``, ``conv1.6``/``bn1``);
  ``layer1..4`` named as in timm.
- MobileNetV2 backbone (``pretrained.net.``): ``features.0`` the stem conv/BN (timm ``conv_stem``,
  ``bn1``), ``features.1..17`` the inverted residuals, each a ``conv`` Sequential (timm
  ``blocks.<stage>.<block>`` with ``conv_pw``/``bn1``/``conv_dw``/``bn2``/``conv_pwl``/``bn3``;
  the first block has no expansion: ``conv_dw``/``bn1``/``conv_pw``/``bn2``).
- DeepLabV3 head: ``head.aspp.b0`` (1x1), ``b1..b3.block`` (dilated 3x3), ``b4.gap`` (image
  pooling), ``head.aspp.project``, ``head.block.0/1`` (3x3 conv, BN) and ``head.block.4`` (classifier).
- PSPNet head: ``head.psp.conv1..4`` (bins 1, 2, 3, 6), ``head.block.0/1``, ``head.classifier``.
- FCN aux head: ``auxlayer.block.0/1`` and ``auxlayer.block.4``.

A released *backbone* file (the ImageNet weights its training scripts start from) holds the
backbone's keys without the ``pretrained.`` (ResNet) or ``pretrained.net.`` (MobileNetV2) prefix.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import torch
import torch.nn as nn

from rdd_edge.errors import CheckpointError, ModelError
from rdd_edge.models.registry import model_cfg

# timm MobileNetV2 (mobilenetv2_100): blocks per stage; the released ``features`` list runs through them in order
MBV2_STAGE_BLOCKS = (1, 2, 3, 4, 3, 3, 1)
_MBV2_PARTS = {  # timm part -> index inside the released block's ``conv`` Sequential
    "ds": {"conv_dw": 0, "bn1": 1, "conv_pw": 3, "bn2": 4},
    "ir": {"conv_pw": 0, "bn1": 1, "conv_dw": 3, "bn2": 4, "conv_pwl": 6, "bn3": 7},
}
_RESNET_STEM = {"conv1.0": "conv1", "conv1.1": "bn1", "conv1.3": "conv2", "conv1.4": "bn2", "conv1.6": "conv3", "bn1": "bn3"}
BACKBONE_PREFIX = {"resnet": "pretrained.", "mobilenetv2": "pretrained.net."}


def _backbone_key(rest: str, layout: str) -> str:
    """A key of the timm backbone (without ``backbone.``) in the released backbone's own naming."""
    if layout == "resnet":
        for ours, theirs in _RESNET_STEM.items():
            if rest.startswith(ours + "."):
                return theirs + rest[len(ours):]
        if rest.startswith("layer"):
            return rest
    elif layout == "mobilenetv2":
        if rest.startswith("conv_stem."):
            return "features.0.0." + rest[len("conv_stem."):]
        if rest.startswith("bn1."):
            return "features.0.1." + rest[len("bn1."):]
        m = re.fullmatch(r"blocks\.(\d+)\.(\d+)\.(\w+)\.(.+)", rest)
        if m:
            stage, block, part, leaf = int(m[1]), int(m[2]), m[3], m[4]
            index = 1 + sum(MBV2_STAGE_BLOCKS[:stage]) + block
            k = _MBV2_PARTS["ds" if stage == 0 else "ir"].get(part)
            if k is not None:
                return f"features.{index}.conv.{k}.{leaf}"
    raise ModelError(f"backbone key {rest!r} has no counterpart in the released {layout} layout")


def _head_key(key: str, head: str) -> str:
    """A key of our heads in the released naming."""
    rules: list[tuple[str, str]] = [
        (r"aux_head\.conv\.([01])\.(.+)", r"auxlayer.block.\1.\2"),
        (r"aux_head\.classifier\.(.+)", r"auxlayer.block.4.\1"),
        (r"head\.conv\.([01])\.(.+)", r"head.block.\1.\2"),
    ]
    if head == "aspp":
        rules += [
            (r"head\.aspp\.branches\.0\.([01])\.(.+)", r"head.aspp.b0.\1.\2"),
            (r"head\.aspp\.branches\.([123])\.([01])\.(.+)", r"head.aspp.b\1.block.\2.\3"),
            (r"head\.aspp\.branches\.4\.conv\.0\.(.+)", r"head.aspp.b4.gap.1.\1"),
            (r"head\.aspp\.branches\.4\.conv\.1\.(.+)", r"head.aspp.b4.gap.2.\1"),
            (r"head\.aspp\.project\.0\.([01])\.(.+)", r"head.aspp.project.\1.\2"),
            (r"head\.classifier\.(.+)", r"head.block.4.\1"),
        ]
    elif head == "psp":
        rules += [
            (r"head\.ppm\.stages\.([0-3])\.1\.([01])\.(.+)", lambda m: f"head.psp.conv{int(m[1]) + 1}.{m[2]}.{m[3]}"),  # type: ignore[list-item]
            (r"head\.classifier\.(.+)", r"head.classifier.\1"),
        ]
    for pattern, repl in rules:
        m = re.fullmatch(pattern, key)
        if m:
            return repl(m) if callable(repl) else m.expand(repl)
    raise ModelError(f"{key!r} has no counterpart in the released {head.upper()} model")


def released_key(key: str, layout: str, head: str) -> str:
    """Our state-dict key ``key`` as the released code names it (``layout``: resnet or mobilenetv2)."""
    if key.startswith("backbone."):
        return BACKBONE_PREFIX[layout] + _backbone_key(key[len("backbone."):], layout)
    return _head_key(key, head)


def _layout_of(model: nn.Module) -> tuple[str, str]:
    name = getattr(model, "model_name", "")
    if not name:
        raise ModelError(f"a {type(model).__name__} not built by create_model has no released counterpart")
    cfg = model_cfg(name)
    if not cfg.get("released"):
        raise ModelError(f"{name} is not one of the paper's released networks")
    return cfg["released"], cfg["head"]


def released_names(model: nn.Module) -> dict[str, str]:
    """``{released key: our key}`` for every entry of ``model``'s state dict."""
    layout, head = _layout_of(model)
    return {released_key(k, layout, head): k for k in model.state_dict()}


def backbone_names(model: nn.Module) -> dict[str, str]:
    """``{key in a released backbone file: our key}`` for the backbone's entries (prefix dropped)."""
    layout, head = _layout_of(model)
    prefix = BACKBONE_PREFIX[layout]
    return {released_key(k, layout, head)[len(prefix):]: k for k in model.state_dict() if k.startswith("backbone.")}


def strip_module(state: Mapping[str, Any]) -> dict[str, Any]:
    """A state dict saved from a DDP wrapper loses its ``module.`` prefix."""
    state = dict(state)
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def load_released(model: nn.Module, state: Mapping[str, Any], source: str) -> int:
    """Copy a released state dict (``module.`` already dropped) into ``model``, one tensor to one tensor.

    Anything that does not fit is one ``CheckpointError`` naming the missing and unexpected keys
    (a few of each and their counts, in the released naming) and the first shape mismatch. Returns
    the number of tensors copied. ``num_batches_tracked`` may be absent (it changes no output).
    """
    names = released_names(model)
    own = model.state_dict()
    missing = [k for k in names if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in names]
    mismatched = [f"{k} {tuple(state[k].shape)} in the file vs {tuple(own[names[k]].shape)} here" for k in names
                  if k in state and tuple(state[k].shape) != tuple(own[names[k]].shape)]
    if missing or unexpected or mismatched:
        what = f"{model.model_name} with {getattr(model, 'num_classes', '?')} classes" + (
            ", aux head" if getattr(model, "has_aux", False) else "")
        parts = [f"{len(missing)} missing keys{_few(missing)}", f"{len(unexpected)} unexpected keys{_few(unexpected)}"]
        if mismatched:
            parts.append(f"first shape mismatch: {mismatched[0]} ({len(mismatched)} in all)")
        raise CheckpointError(f"{source}: does not fit {what} in the released key layout: {'; '.join(parts)}. "
                              "Check --model (the released network) and --dataset (its class count)")
    with torch.no_grad():
        for k, ours in names.items():
            if k in state:
                own[ours].copy_(state[k].to(own[ours].dtype))
    return sum(1 for k in names if k in state)


def _few(keys: list[str], n: int = 3) -> str:
    return f" ({', '.join(keys[:n])}{', ...' if len(keys) > n else ''})" if keys else ""
