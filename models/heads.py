"""Segmentation heads: DeepLabV3 ASPP, PSPNet pyramid pooling, FCN auxiliary head.

Each head maps one backbone feature map (N, C_in, h, w) to logits (N, num_classes, h, w); the
input width is read from the backbone's ``feature_info`` by the model, never hard-coded here.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv_bn_relu(cin: int, cout: int, kernel: int = 1, dilation: int = 1) -> nn.Sequential:
    """Conv (no bias) + BatchNorm + ReLU, 'same' padding."""
    pad = dilation * (kernel - 1) // 2
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ImagePooling(nn.Module):
    """Global average pool -> 1x1 conv-BN-ReLU -> spread back over the map (ASPP's fifth branch)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = conv_bn_relu(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # a 1x1 map upsampled bilinearly is a broadcast; expand exports to ONNX more simply
        return self.conv(self.pool(x)).expand(-1, -1, x.shape[-2], x.shape[-1])


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1 + three dilated 3x3 + image pooling, then a 1x1 projection."""

    def __init__(self, cin: int, cout: int, rates: Sequence[int] = (12, 24, 36), dropout: float = 0.5) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [conv_bn_relu(cin, cout, 1)] + [conv_bn_relu(cin, cout, 3, r) for r in rates] + [ImagePooling(cin, cout)]
        )
        self.project = nn.Sequential(conv_bn_relu(cout * len(self.branches), cout, 1), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([b(x) for b in self.branches], dim=1))


class _ClassifierHead(nn.Module):
    """What every head ends with: a context module (the subclass's ``context``), a 3x3 conv-BN-ReLU,
    dropout and a 1x1 classifier. ``features(x)`` is the classifier's input (KD's head feature)."""

    def _classifier(self, cin: int, channels: int, num_classes: int) -> None:
        self.conv = conv_bn_relu(cin, channels, 3)
        self.dropout = nn.Dropout(0.1)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def context(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The classifier's input: the context feature after the 3x3 conv (dropout applied in train mode)."""
        return self.dropout(self.conv(self.context(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class DeepLabHead(_ClassifierHead):
    """DeepLabV3 head: ASPP, a 3x3 conv-BN-ReLU, dropout, 1x1 classifier."""

    def __init__(self, cin: int, num_classes: int, channels: int = 256, rates: Sequence[int] = (12, 24, 36)) -> None:
        super().__init__()
        self.aspp = ASPP(cin, channels, rates)
        self._classifier(channels, channels, num_classes)

    def context(self, x: torch.Tensor) -> torch.Tensor:
        return self.aspp(x)


PSP_BINS = (1, 2, 3, 6)  # PSPNet's pooled grid sizes; the 1/8 feature map must divide by each to export


class PyramidPooling(nn.Module):
    """PSPNet pyramid pooling: pool to each bin size, 1x1 conv-BN-ReLU, upsample, concat with the input.

    The pooled maps are upsampled bilinearly with ``align_corners=True``, as in the released code
    (its logits, and so its checkpoints, depend on it; ONNX: Resize with ``align_corners``)."""

    def __init__(self, cin: int, channels: int, bins: Sequence[int] = PSP_BINS) -> None:
        super().__init__()
        self.stages = nn.ModuleList(nn.Sequential(nn.AdaptiveAvgPool2d(b), conv_bn_relu(cin, channels, 1)) for b in bins)
        self.out_channels = cin + channels * len(bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [F.interpolate(s(x), size=size, mode="bilinear", align_corners=True) for s in self.stages]
        return torch.cat([x, *pooled], dim=1)


class PSPHead(_ClassifierHead):
    """PSPNet head: pyramid pooling, a 3x3 conv-BN-ReLU, dropout, 1x1 classifier."""

    def __init__(self, cin: int, num_classes: int, channels: int = 128, bins: Sequence[int] = PSP_BINS) -> None:
        super().__init__()
        self.ppm = PyramidPooling(cin, channels, bins)
        self._classifier(self.ppm.out_channels, channels, num_classes)

    def context(self, x: torch.Tensor) -> torch.Tensor:
        return self.ppm(x)


class FCNHead(_ClassifierHead):
    """FCN auxiliary head on backbone stage 4 ("c3"): 3x3 conv to cin/4, BN-ReLU, dropout, 1x1 classifier."""

    def __init__(self, cin: int, num_classes: int, channels: int | None = None) -> None:
        super().__init__()
        self._classifier(cin, channels or cin // 4, num_classes)
