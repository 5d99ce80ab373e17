"""ADE20K scene parsing (ADEChallengeData2016, 150 classes).

Layout (``root`` may be ``ADEChallengeData2016/`` or the folder holding it)::

    images/{training,validation}/ADE_*.jpg
    annotations/{training,validation}/ADE_*.png     values 0..150, 0 = "other" (ignored)

Split names ``train``/``val`` map to ``training``/``validation``; label value v becomes v - 1 and
0 becomes 255.
"""

from __future__ import annotations

from pathlib import Path

from rdd_edge.data.base import DatasetInfo, TrainRecipe
from rdd_edge.data.layout import DataFormat, SplitFiles, colormap, images_in, layout_error, lut_and_valid, pair_by_key

CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair",
    "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion",
    "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace",
    "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway",
    "river", "bridge", "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel",
    "bus", "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool",
    "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball",
    "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher",
    "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan",
    "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)  # fmt: skip
# A generated colour map (VOC-style bit interleaving, skipping black so no class looks like ignore).
PALETTE = colormap(len(CLASSES) + 1)[1:]

INFO = DatasetInfo(name="ade20k", classes=CLASSES, palette=PALETTE, eval_size=(512, 512), crop_size=(512, 512),
                   eval_whole=True,  # evaluated whole, each image at its own size (paper, released code)
                   recipe=TrainRecipe(iters=80000, batch=16, val_every=8000, log_every=50))

SPLIT_DIRS = {"train": "training", "val": "validation"}

LAYOUT = """\
  ADEChallengeData2016/
    images/{training,validation}/NAME.jpg
    annotations/{training,validation}/NAME.png     (values 0..150, 0 = ignore)"""


def base_dir(root: Path) -> Path:
    """The folder that holds ``images/`` and ``annotations/`` (accepts its parent too)."""
    nested = root / "ADEChallengeData2016"
    return nested if nested.is_dir() and not (root / "images").is_dir() else root


def find_splits(root: Path) -> list[str]:
    base = base_dir(root)
    found = [s for s, d in SPLIT_DIRS.items() if (base / "images" / d).is_dir() or (base / "annotations" / d).is_dir()]
    if not found:  # an images/ folder alone is many layouts' (images/<split> ...): ADE20K's has its split folders
        raise layout_error(root, "ADE20K (ADEChallengeData2016)", LAYOUT)
    return found


def scan(root: Path, split: str) -> SplitFiles:
    base, d = base_dir(root), SPLIT_DIRS[split]
    images = images_in(base / "images" / d)
    labels = images_in(base / "annotations" / d, (".png",))
    return pair_by_key(split, images, labels, lambda p: p.stem, lambda p: p.stem)


_LUT, _VALID = lut_and_valid({v: v - 1 for v in range(1, len(CLASSES) + 1)}, range(len(CLASSES) + 1))

FORMAT = DataFormat(info=INFO, layout=LAYOUT, find_splits=find_splits, scan=scan, lut=_LUT, valid=_VALID,
                    summary="ADEChallengeData2016/{images,annotations}/{training,validation}/")


def open_dataset(root: str | Path, split: str = "train"):
    """Read ADEChallengeData2016: ``(RGB uint8, label uint8 0..149 with 255 = other)``."""
    return FORMAT.open(root, split)
