"""Options that size memory, bounded before any work starts (issue 32).

``--crop 20000x20000`` or ``--head-channels 1000000`` used to run until the kernel killed the
process (exit 137, no message); each is now one line naming the option, the bound and roughly
the memory it would have needed. ``--set model_kwargs=...`` may set the head width only: the
class count comes from the data set and the aux head from its own option.
"""

from __future__ import annotations

from typing import Any

from rdd_edge.errors import ConfigError

MAX_SIDE = 4096  # a 4K frame (2160x3840) fits; Cityscapes' full frame, the largest these data sets train on, is 1024x2048
MAX_HEAD_CHANNELS = 4096  # as a checkpoint's model_kwargs (models.checkpoint); the released heads use 128..512
MODEL_KWARGS = ("head_channels",)


def _gb(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:.3g} GB"


def check_sizes(cfg: Any, num_classes: int) -> None:
    """ConfigError naming the option when a crop, eval size or head width is beyond what can run."""
    for name, flag in (("crop", "--crop"), ("eval_size", "--eval-size")):
        hw = getattr(cfg, name, None)
        if hw is None:
            continue
        h, w = (int(v) for v in hw)
        if max(h, w) > MAX_SIDE:
            batch = cfg.batch if name == "crop" else 1
            need = batch * (3 + num_classes) * h * w * 4  # FP32 input and logits alone, before any activation
            raise ConfigError(f"{flag} {h}x{w}: sides are at most {MAX_SIDE} (a 4K frame is 2160x3840); "
                              f"the input and logits alone would need {_gb(need)} at batch {batch}, the network's "
                              "activations many times more")
    kwargs = cfg.model_kwargs or {}
    if not isinstance(kwargs, dict):
        raise ConfigError(f"--set model_kwargs={kwargs!r}: a JSON object, e.g. '{{\"head_channels\": 64}}'")
    other = sorted(set(kwargs) - set(MODEL_KWARGS))
    if other:
        raise ConfigError(f"--set model_kwargs: {', '.join(map(str, other))} cannot be set here (the class count comes "
                          "from the data set, the aux head from --aux); it takes head_channels only")
    hc = kwargs.get("head_channels")
    if hc is not None:
        if not isinstance(hc, int) or isinstance(hc, bool) or not 1 <= hc <= MAX_HEAD_CHANNELS:
            big = isinstance(hc, int) and not isinstance(hc, bool) and hc > MAX_HEAD_CHANNELS
            # four 3x3 hc->hc convolutions (ASPP's three dilated branches and the head's), FP32
            need = f"; its 3x3 convolutions alone would hold {_gb(4 * 9 * float(hc) ** 2 * 4)} of weights" if big else ""
            raise ConfigError(f"--head-channels {hc}: must be a whole number in 1..{MAX_HEAD_CHANNELS}{need}")
