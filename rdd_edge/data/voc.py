"""PASCAL VOC 2012 segmentation, optionally with the SBD "aug" training set.

Layout (``root`` may be ``VOC2012/``, ``VOCdevkit/`` or the folder holding ``VOCdevkit/``)::

    JPEGImages/NAME.jpg
    SegmentationClass/NAME.png              palette-mode PNG: pixel values are class indices
    ImageSets/Segmentation/{train,val}.txt  one NAME per line
    SegmentationClassAug/NAME.png           optional, grayscale index PNGs (SBD + VOC)
    ImageSets/Segmentation/train_aug.txt    optional; with SegmentationClassAug/ it defines train

Values 0..20 are the classes, 255 marks object boundaries and "difficult" regions (ignore).
OpenCV expands palette PNGs into colours, so labels are decoded with Pillow when it is
installed, otherwise the colours are mapped back to indices through the VOC colour map.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from rdd_edge.data.base import DatasetInfo
from rdd_edge.data.layout import DataFormat, SplitFiles, colormap, layout_error, lut_and_valid

CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip
PALETTE = colormap(len(CLASSES))
BOUNDARY_COLOR = (224, 224, 192)  # how VOC draws value 255 in its palette PNGs

INFO = DatasetInfo(name="voc", classes=CLASSES, palette=PALETTE, eval_size=(512, 512), crop_size=(512, 512),
                   eval_whole=True)  # evaluated whole, each image at its own size (paper, released code)

LAYOUT = """\
  JPEGImages/NAME.jpg
  SegmentationClass/NAME.png                 (palette PNG, values 0..20, 255 = ignore)
  ImageSets/Segmentation/{train,val}.txt
  [SegmentationClassAug/NAME.png + ImageSets/Segmentation/train_aug.txt]   (optional SBD aug)"""


def base_dir(root: Path) -> Path:
    """The folder that holds ``JPEGImages/`` (accepts VOCdevkit/ or its parent too)."""
    for cand in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (cand / "JPEGImages").is_dir():
            return cand
    return root


def _list_file(base: Path, split: str) -> Path | None:
    p = base / "ImageSets" / "Segmentation" / f"{split}.txt"
    return p if p.is_file() else None


def _aug_list(base: Path) -> Path | None:
    if not (base / "SegmentationClassAug").is_dir():
        return None
    for p in (base / "ImageSets" / "Segmentation" / "train_aug.txt", base / "train_aug.txt"):
        if p.is_file():
            return p
    return None


def find_splits(root: Path) -> list[str]:
    base = base_dir(root)
    if not (base / "JPEGImages").is_dir() or not (base / "ImageSets" / "Segmentation").is_dir():
        raise layout_error(root, "PASCAL VOC 2012", LAYOUT)
    found = [s for s in ("train", "val") if _list_file(base, s) is not None]
    if "train" not in found and _aug_list(base) is not None:
        found.insert(0, "train")
    return found


def scan(root: Path, split: str) -> SplitFiles:
    base = base_dir(root)
    aug = _aug_list(base) if split == "train" else None
    list_file = aug or _list_file(base, split)
    label_dir = base / ("SegmentationClassAug" if aug else "SegmentationClass")
    out = SplitFiles(split)
    if list_file is None:
        return out
    for line in list_file.read_text().splitlines():
        name = line.strip().split()[0] if line.strip() else ""
        if not name:
            continue
        name = Path(name).stem  # some aug lists hold "/JPEGImages/NAME.jpg /SegmentationClassAug/NAME.png"
        img, lbl = base / "JPEGImages" / f"{name}.jpg", label_dir / f"{name}.png"
        has_img, has_lbl = img.is_file(), lbl.is_file()
        if has_img and has_lbl:
            out.pairs.append((img, lbl))
        elif has_img:
            out.unpaired.append((img, f"image has no label (expected {lbl})"))
        elif has_lbl:
            out.unpaired.append((lbl, f"label has no image (expected {img})"))
        else:
            out.unpaired.append((list_file, f"'{name}' is listed but neither {img.name} nor {lbl.name} exists"))
    return out


def colours_to_index(rgb: np.ndarray, palette=PALETTE, unknown: int = 254) -> np.ndarray:
    """Map an RGB rendering of VOC labels back to indices (boundary colour -> 255, others -> ``unknown``)."""
    code = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    out = np.full(rgb.shape[:2], unknown, dtype=np.uint8)
    for idx, (r, g, b) in enumerate(palette):
        out[code == ((r << 16) | (g << 8) | b)] = idx
    r, g, b = BOUNDARY_COLOR
    out[code == ((r << 16) | (g << 8) | b)] = 255
    return out


def decode_label(path: Path) -> np.ndarray | None:
    """Index values of a VOC label PNG: palette or grayscale; a true RGB image stays 3-channel."""
    try:
        from PIL import Image  # lazy: optional dependency (Pillow)
    except ImportError:  # no Pillow: OpenCV gives colours, map them back through the palette
        bgr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if bgr is None or bgr.ndim == 2:
            return bgr
        return colours_to_index(cv2.cvtColor(bgr[..., :3], cv2.COLOR_BGR2RGB))
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("P", "L"):
                return np.array(im)
            if im.mode in ("RGB", "RGBA"):
                return np.array(im.convert("RGB"))
            return np.array(im)
    except (OSError, ValueError, SyntaxError):
        return None


_LUT, _VALID = lut_and_valid({i: i for i in range(len(CLASSES))}, [*range(len(CLASSES)), 255])

FORMAT = DataFormat(
    info=INFO, layout=LAYOUT, find_splits=find_splits, scan=scan, lut=_LUT, valid=_VALID, decode_label=decode_label,
    summary="JPEGImages/ SegmentationClass/[Aug/] ImageSets/Segmentation/{train,val,train_aug}.txt",
)


def open_dataset(root: str | Path, split: str = "train"):
    """Read PASCAL VOC 2012 (train uses the SBD aug list when present): ``(RGB uint8, label uint8)``."""
    return FORMAT.open(root, split)
