"""One registry of segmentation models, filled by ``@register_model`` (timm style).

A model is one factory function; its name is the function's name. ``create_model`` resolves
short aliases (``r18``, ``mbv2`` ...), drops ``None`` keyword arguments so unset CLI options
never override model defaults, and fails at once, naming the known models, on an unknown name.
"""

from __future__ import annotations

import difflib
import fnmatch
import sys
from typing import Any, Callable

from rdd_edge.errors import ModelError

_model_entrypoints: dict[str, Callable[..., Any]] = {}
_model_cfgs: dict[str, dict[str, Any]] = {}

ALIASES: dict[str, str] = {}  # short name -> canonical name, from each cfg's "alias"


def register_model(fn: Callable[..., Any]) -> Callable[..., Any]:
    """File ``fn`` under its own name; its module's ``default_cfgs[name]`` becomes the model's cfg
    (and its ``alias``, if any, a short name for it)."""
    name = fn.__name__
    _model_entrypoints[name] = fn
    cfgs = getattr(sys.modules.get(fn.__module__), "default_cfgs", {})
    _model_cfgs[name] = dict(cfgs.get(name, {}))
    if _model_cfgs[name].get("alias"):
        ALIASES[_model_cfgs[name]["alias"]] = name
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """Sorted canonical model names matching the wildcard ``pattern`` (an alias matches too)."""
    pattern = pattern.lower()
    return sorted(
        n for n in _model_entrypoints
        if fnmatch.fnmatch(n, pattern) or any(fnmatch.fnmatch(a, pattern) for a, t in ALIASES.items() if t == n)
    )


def aliases_of(name: str) -> list[str]:
    """The short aliases of a canonical model name."""
    return [a for a, t in ALIASES.items() if t == name]


def resolve_name(name: str) -> str:
    """The canonical name of a model name or alias; ``ModelError`` with a suggestion otherwise."""
    key = str(name).strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key in _model_entrypoints:
        return key
    known = sorted(_model_entrypoints) + sorted(ALIASES)
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise ModelError(
        f"unknown model '{name}'.{hint} Known models: {', '.join(sorted(_model_entrypoints))} "
        f"(aliases: {', '.join(f'{a}={t}' for a, t in ALIASES.items())}); see `rdd-edge models`"
    )


def model_cfg(name: str) -> dict[str, Any]:
    """The default cfg of a model (backbone, head, default widths, the paper's figures)."""
    return dict(_model_cfgs[resolve_name(name)])


def create_model(name: str, num_classes: int | None = None, aux: bool | None = False,
                 pretrained: str | bool | None = None, **kwargs: Any) -> Any:
    """Build a registered segmentation model by name or alias.

    ``pretrained``: ``None`` (random init), ``"timm"`` (ImageNet backbone from timm, needs
    internet), or a path to an rdd-edge checkpoint / plain state_dict of the whole model.
    Keyword arguments that are ``None`` are dropped, so the model's defaults apply.

    Examples::

        model = create_model("r18", num_classes=19, aux=True)
        small = create_model("deeplabv3_mbv2", num_classes=11, head_channels=32)
        again = create_model(model.model_name, **model.model_kwargs)
    """
    fn = _model_entrypoints[resolve_name(name)]
    kwargs = {k: v for k, v in dict(kwargs, num_classes=num_classes, aux=aux).items() if v is not None}
    return fn(pretrained=pretrained, **kwargs)
