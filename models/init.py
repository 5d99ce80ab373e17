"""The released code's random initialisation of a backbone (``--set init=release``, for runs without ImageNet weights).

timm initialises its backbones its own way: it zero-initialises the last BatchNorm of every residual
block (so each block starts as the identity) and draws MobileNetV2's depthwise convolutions with
fan-out k*k (about sqrt(channels) ~ 10x wider than the release). The release (github.com/sunyueue/RDD
``models/base_models/resnetv1b.py`` ``ResNetV1b.__init__`` with ``zero_init_residual=False``;
``mobilenetv2.py`` ``_initialize_weights``) draws every conv from N(0, 2 / (k*k*out_channels)) (He,
fan-out, counting all output channels, depthwise ones too) and sets every BatchNorm to weight 1,
bias 0. The heads are PyTorch's default initialisation in both, so only the backbone changes.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def release_init(model: nn.Module) -> int:
    """Re-draw ``model.backbone`` as the release initialises it; returns the number of layers re-drawn."""
    n = 0
    with torch.no_grad():
        for m in model.backbone.modules():
            if isinstance(m, nn.Conv2d):
                # torch's fan_out is size(0) * k * k, groups ignored: the release's k*k*out_channels
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    m.bias.zero_()
                n += 1
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                if m.weight is not None:
                    m.weight.fill_(1.0)
                    m.bias.zero_()
                n += 1
    return n
