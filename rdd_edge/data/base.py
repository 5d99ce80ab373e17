"""What every data set reader shares: its description and its item contract.

A reader yields ``(image, label)``: ``image`` uint8 RGB HxWx3, ``label`` uint8 HxW with class
indices ``0..C-1`` and 255 for ignored pixels. Readers use NumPy and OpenCV only, never torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from rdd_edge.errors import DataError

IGNORE_INDEX = 255


@dataclass(frozen=True)
class TrainRecipe:
    """How long and how wide a data set trains by default (the paper's recipe, METHOD.md Sec. 4.2); the crop
    is the data set's ``crop_size``. ``lr`` None: the trainer's default."""

    iters: int = 40000
    batch: int = 16
    val_every: int = 4000
    log_every: int = 50
    lr: float | None = None

    def overrides(self) -> dict:
        return {k: v for k, v in vars(self).items() if v is not None}


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a data set: classes, palette and default sizes.

    No input normalisation: that belongs to a network's weights (``rdd_edge.normalize``), which a
    checkpoint records."""

    name: str
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]  # RGB per class
    eval_size: tuple[int, int]  # (H, W) the model sees at deploy time, and at eval unless eval_whole
    crop_size: tuple[int, int]  # (H, W) training crop
    ignore_index: int = IGNORE_INDEX
    splits: tuple[str, ...] = ("train", "val")
    # True: evaluation (training's validation, `rdd-edge eval`) feeds each image whole at its own
    # size, as the paper and its released code do for data sets whose images vary in size (VOC,
    # ADE20K); eval_size then only sets the default export / deploy input size
    eval_whole: bool = False
    recipe: TrainRecipe = TrainRecipe()  # default schedule; a new data set states its own (crop: crop_size)

    def default_eval_size(self) -> tuple[int, int] | None:
        """The size evaluation resizes images to when none is asked for; None: each image at its own size."""
        return None if self.eval_whole else (int(self.eval_size[0]), int(self.eval_size[1]))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def palette_array(self) -> np.ndarray:
        """(C, 3) uint8 RGB."""
        return np.asarray(self.palette, dtype=np.uint8).reshape(-1, 3)

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "classes": list(self.classes),
            "palette": [list(c) for c in self.palette],
            "eval_size": list(self.eval_size),
            "eval_whole": self.eval_whole,
            "crop_size": list(self.crop_size),
            "ignore_index": self.ignore_index,
        }


@dataclass
class SegDataset:
    """A list of (image file, label file) pairs read on demand.

    Subclasses set ``info`` and fill ``pairs`` and may override :meth:`load_label` to map raw
    label values to train ids. ``__getitem__`` validates what it reads and raises
    :class:`DataError` naming the file.
    """

    info: DatasetInfo
    split: str
    pairs: list[tuple[Path, Path]] = field(default_factory=list)
    root: Path | None = None

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        img_path, lbl_path = self.pairs[i]
        image = read_image(img_path)
        label = self.load_label(lbl_path)
        if image.shape[:2] != label.shape:
            raise DataError(f"{lbl_path}: label size {label.shape[1]}x{label.shape[0]} differs from image {img_path.name} ({image.shape[1]}x{image.shape[0]})")
        bad = (label >= self.info.num_classes) & (label != IGNORE_INDEX)
        if bad.any():
            vals = np.unique(label[bad])[:8].tolist()
            raise DataError(f"{lbl_path}: label values {vals} outside 0..{self.info.num_classes - 1} (and 255 = ignore)")
        return image, label

    def load_label(self, path: Path) -> np.ndarray:
        """Raw label file -> uint8 train ids with 255 = ignore (identity by default)."""
        return read_label(path)

    def name(self, i: int) -> str:
        return self.pairs[i][0].stem

    def verify_files(self, limit: int = 8) -> list[str]:
        """Problems a quick pass over every pair finds without decoding pixels: missing, unreadable or
        truncated files and image/label size mismatches (headers and end markers only, so a whole
        split takes seconds)."""
        problems: list[str] = []
        for img_path, lbl_path in self.pairs:
            sizes = []
            for p in (img_path, lbl_path):
                size = image_size(p)
                if isinstance(size, str):
                    problems.append(f"{p}: {size}")
                elif truncated(p):
                    problems.append(f"{p}: {truncated(p)}")
                sizes.append(size)
            if all(isinstance(z, tuple) for z in sizes) and sizes[0] != sizes[1]:
                problems.append(f"{lbl_path}: label is {sizes[1][0]}x{sizes[1][1]} but image {img_path.name} is "
                                f"{sizes[0][0]}x{sizes[0][1]}")
            if len(problems) >= limit:
                break
        return problems

    def image_path(self, i: int) -> Path:
        return self.pairs[i][0]


def folder_not_found(root: Path, expected: str = "") -> DataError:
    """'data folder not found', naming the absolute path tried when ``root`` was relative (runs are made elsewhere)."""
    tried = "" if root.is_absolute() else f" (looked for {root.resolve()})"
    return DataError(f"{root}: data folder not found{tried}{expected}")


def image_size(path: str | Path) -> tuple[int, int] | str:
    """(W, H) from an image file's header, or a sentence saying why it cannot be read."""
    from PIL import Image, UnidentifiedImageError  # lazy: Pillow stays optional at import (voc.py reads without it)

    try:
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError:
        return "file not found"
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        return f"not a readable image ({type(exc).__name__})"


# the bytes a complete file of each type ends with (a decoder fills a truncated JPEG with grey and
# only warns, naming no file): JPEG's end-of-image marker, PNG's IEND chunk
_MARKERS = {b"\xff\xd8": b"\xff\xd9", b"\x89PNG": b"IEND"}  # file starts with -> must end with


def truncated(path: str | Path) -> str | None:
    """Why a JPEG or PNG file is cut short (it starts like one but its end marker is missing), or
    None; reads only its first and last bytes (anything else is left to the decoder to judge)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
            marker = next((end for start, end in _MARKERS.items() if head.startswith(start)), None)
            if marker is None:
                return None
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 64))
            tail = f.read()
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    if marker not in tail:
        kind = "JPEG end-of-image marker" if marker == b"\xff\xd9" else "PNG IEND chunk"
        return f"truncated: no {kind} at the end ({size} bytes); copy the file again"
    return None


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 RGB HxWx3; a clear :class:`DataError` if it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    cut = truncated(path)
    if cut:
        raise DataError(f"{path}: {cut}")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"{path}: cannot decode image (corrupt or not an image)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_label(path: str | Path) -> np.ndarray:
    """Read a single-channel label PNG as uint8 HxW (values as stored)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: label file not found")
    cut = truncated(path)
    if cut:
        raise DataError(f"{path}: {cut}")
    lbl = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if lbl is None:
        raise DataError(f"{path}: cannot decode label image (corrupt or not an image)")
    if lbl.ndim == 3:
        raise DataError(f"{path}: label must be a single-channel index image, found {lbl.shape[2]} channels (a colour rendering?)")
    if lbl.dtype != np.uint8:
        if lbl.max() > 255:
            raise DataError(f"{path}: label values up to {int(lbl.max())} do not fit uint8")
        lbl = lbl.astype(np.uint8)
    return lbl


def write_image(path: str | Path, image: np.ndarray) -> None:
    """Write uint8 RGB as PNG/JPEG (by suffix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise DataError(f"{path}: could not write image")


def write_label(path: str | Path, label: np.ndarray) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.ascontiguousarray(label, dtype=np.uint8)):
        raise DataError(f"{path}: could not write label")


def palette_from(colors: Sequence[Sequence[int]]) -> tuple[tuple[int, int, int], ...]:
    return tuple((int(r), int(g), int(b)) for r, g, b in colors)
