"""What a data set format is on disk: its splits, its image/label pairs, and its label encoding.

Every reader module (camvid, cityscapes, voc, ade20k) describes itself with one
:class:`DataFormat`; the reader (:meth:`DataFormat.open`) and ``rdd-edge data check`` share it,
so both see the same pairs and the same label mapping.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import cv2
import numpy as np

from rdd_edge.data.base import IGNORE_INDEX, DatasetInfo, SegDataset, folder_not_found
from rdd_edge.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass
class SplitFiles:
    """The files of one split: matched (image, label) pairs and files that have no partner."""

    split: str
    pairs: list[tuple[Path, Path]] = field(default_factory=list)
    unpaired: list[tuple[Path, str]] = field(default_factory=list)  # (file, what is wrong)


def decode_png(path: Path) -> np.ndarray | None:
    """Decode a label file with its stored values (None when OpenCV cannot read it)."""
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


@dataclass(frozen=True)
class DataFormat:
    """One on-disk format: layout description, split discovery, pairing and label mapping.

    ``lut`` maps a raw label value to a train id (255 = ignore); ``valid`` marks the raw values
    the format may contain, anything else is reported as out of range.
    """

    info: DatasetInfo
    layout: str  # the expected folder tree, shown in layout errors
    find_splits: Callable[[Path], list[str]]  # splits present under root; DataError on a wrong layout
    scan: Callable[[Path, str], SplitFiles]
    lut: np.ndarray
    valid: np.ndarray
    decode_label: Callable[[Path], "np.ndarray | None"] = decode_png
    summary: str = ""  # the layout in one line, for `rdd-edge data list`

    def with_info(self, info: DatasetInfo, summary: str | None = None) -> "DataFormat":
        """The same layout read with other class facts (synthetic scenes in the CamVid layout)."""
        return dataclasses.replace(self, info=info, summary=self.summary if summary is None else summary)

    def raw_label(self, path: Path) -> np.ndarray:
        """The label file's raw values as uint8 HxW; DataError naming the file otherwise."""
        if not path.is_file():
            raise DataError(f"{path}: label file not found")
        raw = self.decode_label(path)
        if raw is None:
            raise DataError(f"{path}: cannot decode label image (corrupt or not an image)")
        if raw.ndim == 3:
            raise DataError(
                f"{path}: label must be a single-channel index image, found {raw.shape[2]} channels "
                "(a colour rendering of the labels?)"
            )
        if raw.dtype != np.uint8:
            if raw.min() < 0 or raw.max() > 255:
                raise DataError(f"{path}: label values up to {int(raw.max())} do not fit 0..255")
            raw = raw.astype(np.uint8)
        return raw

    def bad_values(self, raw: np.ndarray) -> list[int]:
        """Raw values this format never contains (sorted)."""
        present = np.flatnonzero(np.bincount(raw.ravel(), minlength=256))
        return [int(v) for v in present if not self.valid[v]]

    def load_label(self, path: Path) -> np.ndarray:
        """Raw label file -> uint8 train ids, 255 = ignore; out-of-range raw values are an error."""
        raw = self.raw_label(path)
        bad = self.bad_values(raw)
        if bad:
            raise DataError(f"{path}: label values {bad[:8]} are not valid {self.info.name} label values")
        return self.lut[raw]

    def open(self, root: str | Path, split: str = "train") -> "FormatDataset":
        """A reader over ``root``'s ``split``; DataError when the folder or split is not usable."""
        root = Path(root)
        if not root.is_dir():
            raise folder_not_found(root, f" (expected a {self.info.name} folder)")
        splits = self.find_splits(root)
        if split not in splits:
            raise DataError(f"{root}: no '{split}' split in this {self.info.name} folder (found: {', '.join(splits) or 'none'})")
        files = self.scan(root, split)
        if not files.pairs:
            raise DataError(f"{root}: the '{split}' split has no image/label pairs; run `rdd-edge data check {root} --dataset {self.info.name}`")
        if files.unpaired:  # never train on a silently shortened split: training and `data check` agree
            path, what = files.unpaired[0]
            more = f" (and {len(files.unpaired) - 1} more)" if len(files.unpaired) > 1 else ""
            raise DataError(f"{path}: {what}{more}; fix the '{split}' split or run `rdd-edge data check {root}` to list them all")
        return FormatDataset(info=self.info, split=split, pairs=files.pairs, root=root, fmt=self)


@dataclass
class FormatDataset(SegDataset):
    """A :class:`SegDataset` whose labels are decoded and mapped by its :class:`DataFormat`."""

    fmt: DataFormat | None = None

    def load_label(self, path: Path) -> np.ndarray:
        return self.fmt.load_label(path)


# ---- helpers the format modules share ---------------------------------------------------------


def lut_and_valid(mapping: dict[int, int], valid_raw: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
    """A 256-entry raw -> train id table (unmapped -> 255) and the mask of valid raw values."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for raw, train in mapping.items():
        lut[raw] = train
    valid = np.zeros(256, dtype=bool)
    valid[list(valid_raw)] = True
    return lut, valid


def images_in(folder: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> list[Path]:
    """Image files directly in ``folder`` (sorted; hidden files skipped)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith("."))


def pair_by_key(
    split: str,
    images: list[Path],
    labels: list[Path],
    image_key: Callable[[Path], str],
    label_key: Callable[[Path], str],
) -> SplitFiles:
    """Match images and labels by a key (usually the stem); the rest become ``unpaired``."""
    by_key = {label_key(p): p for p in labels}
    out = SplitFiles(split)
    used: set[str] = set()
    for img in images:
        k = image_key(img)
        lbl = by_key.get(k)
        if lbl is None:
            out.unpaired.append((img, "image has no label"))
        else:
            out.pairs.append((img, lbl))
            used.add(k)
    for k, lbl in by_key.items():
        if k not in used:
            out.unpaired.append((lbl, "label has no image"))
    return out


def found_summary(root: Path, limit: int = 12) -> str:
    """What a folder holds, for layout errors ("train/, labels/, a.png ...")."""
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return "nothing readable"
    if not entries:
        return "an empty folder"
    names = [p.name + ("/" if p.is_dir() else "") for p in entries if not p.name.startswith(".")]
    more = f" ... (+{len(names) - limit})" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def layout_error(root: Path, what: str, layout: str) -> DataError:
    """A DataError naming the folder, the expected tree and what is there instead."""
    return DataError(f"{root}: not a {what} folder. Expected:\n{layout.rstrip()}\nFound: {found_summary(root)}")


def colormap(n: int) -> tuple[tuple[int, int, int], ...]:
    """The bit-interleaved colour map used by PASCAL VOC: index bits spread over R, G, B from the top."""
    colors = []
    for i in range(n):
        r = g = b = 0
        c = i
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colors.append((r, g, b))
    return tuple(colors)
