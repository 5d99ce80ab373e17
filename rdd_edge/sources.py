"""Where the paper's files are, pinned, and what other checkpoint layouts look like.

The paper-era files (the teachers and ImageNet backbones the RDD release trains from) are listed
only in the README of github.com/winycg/CIRKD at commit 91735ef. Since CIRKD's 2025 rewrite
(CIRKDv2, commit dab64db) its README lists other teachers, trained with a DeepLabV3 head 512 wide
for every backbone; they do not fit the paper's networks. ``PAPER_FILES`` pins the paper-era
links as published, ``describe_layout`` names a checkpoint of another layout in one line (CIRKDv2,
torchvision, timm, mmsegmentation, rdd-edge's own), so a wrong download is named, not blamed on
``--model`` / ``--dataset``.

Expected tensor counts: a released segmentation checkpoint is ``model.state_dict()`` with the
BatchNorm step counters (``num_batches_tracked``) and, for the ResNets, the FCN aux head (the
release's training script turns it on for every ResNet); a backbone file's count is its
backbone tensors without step counters (2018-era files may lack them) and without its ImageNet
classifier, the count ``--pretrained PATH`` reports as loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

PINNED_COMMIT = "91735ef"
PINNED_README = f"https://github.com/winycg/CIRKD/blob/{PINNED_COMMIT}/README.md"
CIRKDV2_COMMIT = "dab64db"
CIRKDV2_WIDTH = 512  # CIRKDv2's DeepLabV3 ASPP / head width for every backbone (models/deeplabv3.py at dab64db)


@dataclass(frozen=True)
class PinnedFile:
    """One paper-era file as CIRKD's README at commit 91735ef publishes it."""

    name: str  # what we call it (the README's file name for backbones)
    what: str
    model: str  # our network it fits
    dataset: str | None  # the data set of a segmentation checkpoint (None: an ImageNet backbone file)
    link: str  # as published
    tensors: int  # expected tensor count (see the module docstring)
    miou: float | None = None  # the README's figure

    @property
    def kind(self) -> str:
        return "checkpoint" if self.dataset else "backbone"


_DRIVE = "https://drive.google.com/file/d/{}/view?usp={}"
PAPER_FILES: tuple[PinnedFile, ...] = (
    PinnedFile("teacher cityscapes", "DeepLabV3-ResNet101 teacher, Cityscapes (Val mIoU 78.07)", "deeplabv3_r101",
               "cityscapes", _DRIVE.format("1zUdhYPYCDCclWU3Wo7GbbTlM8ibQ_UC1", "sharing"), 688, 78.07),
    PinnedFile("teacher voc", "DeepLabV3-ResNet101 teacher, Pascal VOC Aug (Val mIoU 77.67)", "deeplabv3_r101",
               "voc", _DRIVE.format("1rYTaVq_ooiAI4oFOcDP8K3SpSbjURGnX", "sharing"), 688, 77.67),
    PinnedFile("teacher camvid", "DeepLabV3-ResNet101 teacher, CamVid (mIoU 69.84, README column 'Val mIoU')",
               "deeplabv3_r101", "camvid", _DRIVE.format("1BK8Flukoz-Mtd0e1iwFG5rLxi_ES76d2", "sharing"), 688, 69.84),
    PinnedFile("teacher ade20k", "DeepLabV3-ResNet101 teacher, ADE20K (Val mIoU 42.70)", "deeplabv3_r101",
               "ade20k", _DRIVE.format("1jlywjvZqKTUWCEwdFpPKHzrpNgeckMcO", "share_link"), 688, 42.70),
    PinnedFile("resnet101-imagenet.pth", "ImageNet ResNet-101 v1s backbone (the teacher's start)", "deeplabv3_r101",
               None, _DRIVE.format("1V8-E4wm2VMsfnNiczSIDoSM7JJBMARkP", "sharing"), 530),
    PinnedFile("resnet18-imagenet.pth", "ImageNet ResNet-18 v1s backbone (the R18 students' start)", "deeplabv3_r18",
               None, _DRIVE.format("1_i0n3ZePtQuh66uQIftiSwN7QAUlFb8_", "sharing"), 115),
    PinnedFile("mobilenetv2-imagenet.pth", "ImageNet MobileNetV2 backbone (the MBV2 student's start)", "deeplabv3_mbv2",
               None, _DRIVE.format("12EDZjDSCuIpxPv-dkk1vrxA7ka0b0Yjv", "sharing"), 255),
)
BY_NAME = {f.name: f for f in PAPER_FILES}


def pinned_file(name: str) -> PinnedFile:
    """The pinned entry of a backbone file name (``resnet18-imagenet.pth``) or ``teacher <dataset>``."""
    return BY_NAME[name]


def where(name: str) -> str:
    """``NAME (N tensors; LINK, listed in CIRKD's README at commit 91735ef)``: one phrase for an error line."""
    f = BY_NAME[name]
    count = f"{f.tensors} tensors" if f.dataset else f"{f.tensors} backbone tensors"
    return f"{f.name} ({count}; {f.link}, listed in CIRKD's README at commit {PINNED_COMMIT}: {PINNED_README})"


def table_text() -> str:
    """The pinned files as plain lines (``rdd-edge import --help``, docs): what, tensors, link."""
    lines = [f"The paper-era files (CIRKD's README at commit {PINNED_COMMIT}; today's README lists CIRKDv2 files, "
             "which do not fit):"]
    for f in PAPER_FILES:
        count = f"{f.tensors} tensors" if f.dataset else f"{f.tensors} backbone tensors"
        lines.append(f"- {'' if f.dataset else f.name + ', '}{f.what}: {count}, {f.link}")
    return "\n".join(lines)


def _out(state: Mapping[str, Any], key: str) -> int | None:
    v = state.get(key)
    shape = getattr(v, "shape", None)
    return int(shape[0]) if shape is not None and len(shape) >= 1 else None


def describe_layout(state: Mapping[str, Any]) -> str | None:
    """One phrase naming a recognisable checkpoint layout that is *not* the paper's release, with what to do;
    None when it looks like the release's (or is unknown).

    ``state``: the file's state dict, ``module.`` already dropped.
    """
    keys = set(state)
    width = _out(state, "head.aspp.b0.0.weight")
    if any(k.startswith("pretrained.") for k in keys) and width == CIRKDV2_WIDTH:
        return (f"a CIRKDv2 checkpoint (github.com/winycg/CIRKD since its rewrite, commit {CIRKDV2_COMMIT}: DeepLabV3 "
                f"head {CIRKDV2_WIDTH} wide, not the paper's network); import it with --head-channels {CIRKDV2_WIDTH}, "
                f"or use the paper-era teacher listed in CIRKD's README at commit {PINNED_COMMIT} (rdd-edge import --help)")
    if "classifier.0.convs.0.0.weight" in keys and any(k.startswith("backbone.layer") for k in keys):
        return ("a torchvision DeepLabV3 checkpoint (backbone./classifier. keys, torchvision's own ResNet and head), "
                "not the paper's released network; rdd-edge imports only the release's checkpoints "
                f"(listed in CIRKD's README at commit {PINNED_COMMIT}, see rdd-edge import --help)")
    if any(k.startswith("decode_head.") for k in keys):
        return ("an mmsegmentation checkpoint (decode_head. keys), not the paper's released network; rdd-edge imports "
                f"only the release's checkpoints (listed in CIRKD's README at commit {PINNED_COMMIT})")
    if any(k.startswith(("head.aspp.branches.", "head.ppm.stages.")) for k in keys):
        return "rdd-edge's own key layout (an rdd-edge checkpoint): use it directly (distill --teacher, eval, export)"
    timm_like = ("conv_stem.weight" in keys or "conv1.0.weight" in keys
                 or ("conv1.weight" in keys and "fc.weight" in keys and "conv2.weight" not in keys))
    if timm_like and not any(k.startswith(("head.", "pretrained.", "auxlayer.")) for k in keys):
        return ("an ImageNet backbone in timm's / torchvision's key layout (no segmentation head), not a segmentation "
                "checkpoint; pass it to training as --pretrained PATH instead")
    if any(k.startswith(("conv1.", "features.0.")) for k in keys) and not any(k.startswith(("head.", "auxlayer."))
                                                                              for k in keys):
        return ("an ImageNet backbone file in the release's key layout (no segmentation head), not a segmentation "
                "checkpoint; pass it to training as --pretrained PATH instead")
    return None
