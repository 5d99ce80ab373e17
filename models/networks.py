"""The segmentation networks of RDD: the paper's released architectures, a timm backbone at output stride 8 plus a head.

File order follows timm: model class, ``_create_seg``, ``default_cfgs``, registered variants.
Each network is the released code's (github.com/sunyueue/RDD, ``models/``) layer for layer, so
a released state dict maps onto ours one tensor to one tensor (``models.released``): ResNets are
ResNet-v1s (a deep stem of three 3x3 convolutions, 64, 64 and 128 wide, before the max-pool;
layer 1 starting from 128 channels; dilations 2 and 4 in layers 3 and 4: timm's ``resnet101s``
and a deep-stem ``resnet18``), MobileNetV2 is the dilated feature extractor without the 1280-wide
last conv (timm's ``mobilenetv2_100``). Head widths as released: ASPP 256 on ResNet-101, 128 on
ResNet-18 and MobileNetV2; PSP 128 on ResNet-18; the FCN aux head (ResNets only) reads stage 4
("c3") at 1/4 of its width. Parameter counts are then exactly the paper's (``rdd-edge models``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from rdd_edge.models.heads import PSP_BINS, DeepLabHead, FCNHead, PSPHead
from rdd_edge.models.registry import register_model
from rdd_edge.errors import ModelError
from rdd_edge.models.pretrained import init_backbone, is_none

OUTPUT_STRIDE = 8
HEADS = {"aspp": DeepLabHead, "psp": PSPHead}
# What a head asks of the input size: H and W multiples of ``input_multiple``; whether ONNX export
# may leave H and W dynamic (PSPNet's adaptive pooling exports only at sizes fixed up front).
HEAD_INPUT = {
    "aspp": dict(input_multiple=OUTPUT_STRIDE, dynamic_hw=True),
    "psp": dict(input_multiple=OUTPUT_STRIDE * math.lcm(*PSP_BINS), dynamic_hw=False),
}


class SegModel(nn.Module):
    """Backbone (timm, ``features_only``, output stride 8) + main head (+ FCN aux head).

    ``forward(x, features=False)`` returns ``{"out": logits (N, C, H/8, W/8)}``, plus ``"aux"``
    when built with ``aux=True`` (in train and eval mode alike: the teacher's aux head feeds
    RDD's TFE stage), plus, when asked, ``"features"`` (the four backbone stage outputs) and
    ``"head_feature"`` (N, head_feature_channels, H/8, W/8): the main head's feature after ASPP /
    pyramid pooling and its 3x3 conv, the classifier's input (what CIRKD's code distils for AT and CWD).
    """

    def __init__(self, backbone: str, head: str, num_classes: int, aux: bool = False,
                 head_channels: int = 256, backbone_args: dict[str, Any] | None = None) -> None:
        super().__init__()
        import timm  # lazy: timm (+ torchvision) takes seconds; reading checkpoints and names needs none

        self.backbone = timm.create_model(
            backbone, features_only=True, output_stride=8, out_indices=(1, 2, 3, 4), **(backbone_args or {})
        )
        chs = self.backbone.feature_info.channels()
        self.head = HEADS[head](chs[-1], num_classes, head_channels)
        self.aux_head = FCNHead(chs[-2], num_classes) if aux else None
        self.num_classes = num_classes
        self.has_aux = aux
        self.feature_channels = list(chs)
        self.head_feature_channels = int(head_channels)
        self.model_name = ""
        self.model_kwargs: dict[str, Any] = {}
        self.init_report: Any = None  # what initialised the backbone (models.pretrained.InitReport), if anything

    def forward(self, x: torch.Tensor, features: bool = False) -> dict[str, Any]:
        feats = self.backbone(x)
        if features:
            head_feature = self.head.features(feats[-1])
            out: dict[str, Any] = {"out": self.head.classifier(head_feature)}
        else:
            out = {"out": self.head(feats[-1])}
        if self.aux_head is not None:
            out["aux"] = self.aux_head(feats[-2])
        if features:
            out["features"] = list(feats)
            out["head_feature"] = head_feature
        return out


def _create_seg(name: str, pretrained: str | Path | bool | None, **kw: Any) -> SegModel:
    """Validate options, build the model its default cfg describes, record how to rebuild it, and
    initialise its backbone if asked (``models.pretrained``: ``imagenet`` or a backbone file)."""
    cfg = default_cfgs[name]
    defaults = {k: cfg[k] for k in ("backbone", "head", "head_channels", "backbone_args")}
    if "num_classes" not in kw:
        raise ModelError(f"{name}: num_classes is required (e.g. create_model('{name}', num_classes=19))")
    num_classes, aux = kw.pop("num_classes"), bool(kw.pop("aux", False))
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ModelError(f"{name}: num_classes must be a positive integer, got {num_classes!r}")
    if aux and not cfg["aux_head"]:
        raise ModelError(
            f"{name} has no auxiliary head (the paper's {cfg['backbone']} student has none); build it with aux=False"
        )
    unknown = sorted(set(kw) - {"head_channels"})
    if unknown:
        raise ModelError(f"{name}: unknown option(s) {', '.join(unknown)}; accepted: num_classes, aux, head_channels")
    hc = kw.get("head_channels", defaults["head_channels"])
    if not isinstance(hc, int) or isinstance(hc, bool) or hc < 1:
        raise ModelError(f"{name}: head_channels must be a positive integer, got {hc!r}")

    model = SegModel(num_classes=num_classes, aux=aux, **{**defaults, **kw})
    model.model_name = name
    model.model_kwargs = {"num_classes": num_classes, "aux": aux,
                          **{k: v for k, v in kw.items() if defaults.get(k) != v}}
    if not is_none(pretrained):  # None, False, "none": random weights
        model.init_report = init_backbone(model, "imagenet" if pretrained is True else pretrained)
    return model


def _cfg(backbone: str, head: str, head_channels: int, aux_head: bool, params_m: float | None = None,
         gflops: float | None = None, backbone_args: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    """A variant's definition (timm backbone and its arguments, head and its width, aux head) and the
    facts ``rdd-edge models`` shows; the paper's figures (at 19 classes, 1024x2048) only for the paper's networks.

    ``released``: the backbone's key layout in the released code (``models.released``);
    ``imagenet_timm``: timm's hub weights of exactly this backbone, if timm has them;
    ``imagenet_file``: the released code's ImageNet backbone file (``--pretrained PATH``)."""
    return dict(backbone=backbone, backbone_args=dict(backbone_args or {}), head=head, head_channels=head_channels,
                aux_head=aux_head, output_stride=OUTPUT_STRIDE, **HEAD_INPUT[head],
                paper_params_m=params_m, paper_gflops=gflops, **kw)


DEEP_STEM = {"stem_type": "deep", "stem_width": 64}  # ResNet-v1s: 3x3 convs 64, 64, 128 before the max-pool

# Every variant, defined once: the released architectures (head widths: ASPP 256 on R101, 128 on the students).
default_cfgs = {
    "deeplabv3_r101": _cfg("resnet101s", "aspp", 256, True, 61.12, 2371.0, alias="r101", role="teacher",
                           arch="ResNet-101 v1s", released="resnet", imagenet_timm="resnet101s.gluon_in1k",
                           imagenet_file="resnet101-imagenet.pth"),
    "deeplabv3_r18": _cfg("resnet18", "aspp", 128, True, 13.61, 572.0, backbone_args=DEEP_STEM, alias="r18", role="student",
                          arch="ResNet-18 v1s", released="resnet", imagenet_timm=None, imagenet_file="resnet18-imagenet.pth"),
    "deeplabv3_mbv2": _cfg("mobilenetv2_100", "aspp", 128, False, 3.23, 128.9, alias="mbv2", role="student",
                           arch="MobileNetV2", released="mobilenetv2", imagenet_timm="mobilenetv2_100.ra_in1k",
                           imagenet_file="mobilenetv2-imagenet.pth"),
    "pspnet_r18": _cfg("resnet18", "psp", 128, True, 12.92, 507.4, backbone_args=DEEP_STEM, alias="psp18", role="student",
                       arch="ResNet-18 v1s", released="resnet", imagenet_timm=None, imagenet_file="resnet18-imagenet.pth"),
}


@register_model
def deeplabv3_r101(pretrained: str | Path | bool | None = None, **kw: Any) -> SegModel:
    """DeepLabV3, ResNet-101, ASPP 256 (the teacher)."""
    return _create_seg("deeplabv3_r101", pretrained, **kw)


@register_model
def deeplabv3_r18(pretrained: str | Path | bool | None = None, **kw: Any) -> SegModel:
    """DeepLabV3, ResNet-18, ASPP 128."""
    return _create_seg("deeplabv3_r18", pretrained, **kw)


@register_model
def deeplabv3_mbv2(pretrained: str | Path | bool | None = None, **kw: Any) -> SegModel:
    """DeepLabV3, MobileNetV2, ASPP 128, no aux head."""
    return _create_seg("deeplabv3_mbv2", pretrained, **kw)


@register_model
def pspnet_r18(pretrained: str | Path | bool | None = None, **kw: Any) -> SegModel:
    """PSPNet, ResNet-18, pyramid pooling 4 x 128."""
    return _create_seg("pspnet_r18", pretrained, **kw)
