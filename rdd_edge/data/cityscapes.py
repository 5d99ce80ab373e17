"""Cityscapes fine annotations: official labelIds mapped to the 19 training classes.

Layout::

    leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

labelIds 0..33 are valid raw values; the 19 evaluated ones become train ids 0..18, the rest 255.
"""

from __future__ import annotations

from pathlib import Path

from rdd_edge.data.base import DatasetInfo, palette_from
from rdd_edge.data.layout import DataFormat, SplitFiles, layout_error, lut_and_valid, pair_by_key

CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip
PALETTE = palette_from([
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
])  # fmt: skip
# labelId -> trainId for the 19 evaluated classes (cityscapesScripts' labels.py); all others ignore.
LABEL_TO_TRAIN = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
    24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip

INFO = DatasetInfo(
    name="cityscapes",
    classes=CLASSES,
    palette=PALETTE,
    eval_size=(1024, 2048),
    crop_size=(512, 1024),
    splits=("train", "val", "test"),
)

LAYOUT = """\
  leftImg8bit/<split>/<city>/*_leftImg8bit.png
  gtFine/<split>/<city>/*_gtFine_labelIds.png      (split: train, val, test)"""

IMG_SUFFIX = "_leftImg8bit.png"
LBL_SUFFIX = "_gtFine_labelIds.png"


def find_splits(root: Path) -> list[str]:
    if not (root / "leftImg8bit").is_dir() and not (root / "gtFine").is_dir():
        raise layout_error(root, "Cityscapes", LAYOUT)
    found = {p.name for d in ("leftImg8bit", "gtFine") if (root / d).is_dir() for p in (root / d).iterdir() if p.is_dir()}
    return [s for s in ("train", "val", "test") if s in found]


def scan(root: Path, split: str) -> SplitFiles:
    images = sorted((root / "leftImg8bit" / split).glob(f"*/*{IMG_SUFFIX}"))
    labels = sorted((root / "gtFine" / split).glob(f"*/*{LBL_SUFFIX}"))
    return pair_by_key(
        split,
        images,
        labels,
        lambda p: f"{p.parent.name}/{p.name[: -len(IMG_SUFFIX)]}",
        lambda p: f"{p.parent.name}/{p.name[: -len(LBL_SUFFIX)]}",
    )


_LUT, _VALID = lut_and_valid(LABEL_TO_TRAIN, range(34))

FORMAT = DataFormat(info=INFO, layout=LAYOUT, find_splits=find_splits, scan=scan, lut=_LUT, valid=_VALID,
                    summary="leftImg8bit/<split>/<city>/ + gtFine/<split>/<city>/*_gtFine_labelIds.png")


def open_dataset(root: str | Path, split: str = "train"):
    """Read a Cityscapes folder: items ``(RGB uint8, trainId uint8 with 255 = ignore)``."""
    return FORMAT.open(root, split)
