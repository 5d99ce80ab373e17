"""Tiny data set folders in each data set's real on-disk format, written by the tests."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

H, W = 24, 32


def rgb(seed: int, size=(H, W)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def labels(seed: int, values, size=(H, W)) -> np.ndarray:
    """A label map that holds every value of ``values`` (first pixels) plus random ones."""
    lbl = np.random.default_rng(seed + 1000).choice(np.asarray(values, dtype=np.uint8), size=size)
    lbl.flat[: len(values)] = values
    return lbl


def write_rgb(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def write_gray(path: Path, label: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), label)


def camvid_segnet(root: Path, splits=("train", "val"), n: int = 2) -> dict:
    """SegNet layout: <split>/*.png + <split>annot/*.png, raw values 0..11."""
    raw = {}
    for s, split in enumerate(splits):
        for i in range(n):
            name = f"0001TP_{s}{i:05d}"
            write_rgb(root / split / f"{name}.png", rgb(10 * s + i))
            raw[(split, name)] = labels(10 * s + i, list(range(12)))
            write_gray(root / f"{split}annot" / f"{name}.png", raw[(split, name)])
    return raw


def camvid_compact(root: Path, splits=("train", "val"), n: int = 2) -> dict:
    """Compact layout: <split>/images/NAME.jpg + <split>/labels/NAME.png."""
    raw = {}
    for s, split in enumerate(splits):
        for i in range(n):
            name = f"Seq05VD_f{s}{i:04d}"
            write_rgb(root / split / "images" / f"{name}.jpg", rgb(10 * s + i))
            raw[(split, name)] = labels(10 * s + i, list(range(12)))
            write_gray(root / split / "labels" / f"{name}.png", raw[(split, name)])
    return raw


CITYSCAPES_RAW = [0, 1, 7, 8, 11, 24, 26, 33, 5, 14]  # ego vehicle, road, sidewalk, building, person, car, bicycle, ...


def cityscapes(root: Path, splits=("train", "val"), n: int = 2) -> dict:
    """leftImg8bit/<split>/<city>/*_leftImg8bit.png + gtFine/<split>/<city>/*_gtFine_labelIds.png (+ colour/instance files)."""
    raw = {}
    for s, split in enumerate(splits):
        city = ("aachen", "frankfurt")[s % 2]
        for i in range(n):
            stem = f"{city}_000000_{i:06d}"
            write_rgb(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", rgb(10 * s + i))
            raw[(split, stem)] = labels(10 * s + i, CITYSCAPES_RAW)
            gt = root / "gtFine" / split / city
            write_gray(gt / f"{stem}_gtFine_labelIds.png", raw[(split, stem)])
            # the other gtFine files a real download has; the reader must not pair them
            write_rgb(gt / f"{stem}_gtFine_color.png", rgb(99))
            write_gray(gt / f"{stem}_gtFine_instanceIds.png", raw[(split, stem)])
    return raw


def voc_palette_png(path: Path, label: np.ndarray) -> None:
    """A real VOC label file: palette-mode PNG whose pixel values are class indices."""
    from PIL import Image

    from rdd_edge.data.voc import BOUNDARY_COLOR, PALETTE

    pal = np.zeros((256, 3), dtype=np.uint8)
    pal[: len(PALETTE)] = PALETTE
    pal[255] = BOUNDARY_COLOR
    im = Image.fromarray(label, mode="P")
    im.putpalette(pal.ravel().tolist())
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


VOC_VALUES = [0, 1, 15, 20, 255]


def voc(root: Path, n: int = 2, aug: bool = False) -> dict:
    """VOCdevkit/VOC2012 with JPEGImages, SegmentationClass (palette PNGs), ImageSets lists; optional SBD aug."""
    base = root / "VOCdevkit" / "VOC2012"
    raw, names = {}, {"train": [], "val": []}
    for s, split in enumerate(("train", "val")):
        for i in range(n):
            name = f"2007_{s}{i:05d}"
            names[split].append(name)
            write_rgb(base / "JPEGImages" / f"{name}.jpg", rgb(10 * s + i))
            raw[name] = labels(10 * s + i, VOC_VALUES)
            voc_palette_png(base / "SegmentationClass" / f"{name}.png", raw[name])
    lists = base / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    for split in ("train", "val"):
        (lists / f"{split}.txt").write_text("\n".join(names[split]) + "\n")
    if aug:
        aug_names = names["train"] + ["2008_900001", "2008_900002"]
        for k, name in enumerate(aug_names):
            if not (base / "JPEGImages" / f"{name}.jpg").exists():
                write_rgb(base / "JPEGImages" / f"{name}.jpg", rgb(50 + k))
            raw["aug/" + name] = labels(50 + k, [0, 3, 7, 255])
            write_gray(base / "SegmentationClassAug" / f"{name}.png", raw["aug/" + name])
        (lists / "train_aug.txt").write_text("\n".join(aug_names) + "\n")
    return raw


def ade20k(root: Path, n: int = 2) -> dict:
    """ADEChallengeData2016/{images,annotations}/{training,validation}."""
    base = root / "ADEChallengeData2016"
    raw = {}
    for s, (split, d) in enumerate((("train", "training"), ("val", "validation"))):
        for i in range(n):
            name = f"ADE_{d[:5]}_{i + 1:08d}"
            write_rgb(base / "images" / d / f"{name}.jpg", rgb(10 * s + i))
            raw[(split, name)] = labels(10 * s + i, [0, 1, 2, 100, 150])
            write_gray(base / "annotations" / d / f"{name}.png", raw[(split, name)])
    return raw
