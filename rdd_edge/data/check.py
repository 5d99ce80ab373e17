"""Walk a whole data set folder and report every problem, not just the first.

``check_dataset(root, "camvid")`` opens every image and label of every split, counts pairs and
class pixels, and lists each problem with the file it is in: image without label, label without
image, size mismatch, unreadable file, colour label where an index map is expected, label values
the format does not have. It is what ``rdd-edge data check`` prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from rdd_edge.data.base import folder_not_found, truncated
from rdd_edge.data.registry import get_format
from rdd_edge.errors import DataError

# Problem kinds, in the order the CLI groups them.
KINDS = ("missing-split", "missing-label", "missing-image", "corrupt-image", "corrupt-label", "colour-label",
         "size-mismatch", "out-of-range")
REQUIRED_SPLITS = ("train", "val")  # what training needs; a folder without them fails the check as training would


@dataclass
class Problem:
    """One bad file: which, what kind of problem, and a sentence that says what is wrong."""

    file: Path
    kind: str
    message: str
    split: str = ""

    def as_dict(self) -> dict:
        return {"file": str(self.file), "kind": self.kind, "message": self.message, "split": self.split}


@dataclass
class CheckReport:
    """Counts per split, class pixel histogram per split (last entry = ignore) and all problems."""

    root: Path
    format: str
    classes: tuple[str, ...]
    counts: dict[str, int] = field(default_factory=dict)  # usable pairs per split
    histogram: dict[str, np.ndarray] = field(default_factory=dict)  # split -> (C + 1,) int64
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def total_histogram(self) -> np.ndarray:
        """Pixels per class summed over splits, plus ignore as the last entry."""
        out = np.zeros(len(self.classes) + 1, dtype=np.int64)
        for h in self.histogram.values():
            out += h
        return out

    def problems_by_kind(self) -> dict[str, list[Problem]]:
        out: dict[str, list[Problem]] = {}
        for p in self.problems:
            out.setdefault(p.kind, []).append(p)
        return out

    def as_dict(self) -> dict:
        return {
            "root": str(self.root),
            "format": self.format,
            "classes": list(self.classes),
            "counts": dict(self.counts),
            "histogram": {s: h.tolist() for s, h in self.histogram.items()},
            "problems": [p.as_dict() for p in self.problems],
            "ok": self.ok,
        }


def check_dataset(root: str | Path, format: str, progress: bool = True) -> CheckReport:
    """Check every split of ``root`` read as ``format``; layout errors raise :class:`DataError`."""
    root = Path(root)
    fmt = get_format(format)
    if not root.is_dir():
        raise folder_not_found(root, f" (expected a {fmt.info.name} folder)")
    report = CheckReport(root=root, format=fmt.info.name, classes=tuple(fmt.info.classes))
    splits = fmt.find_splits(root)
    if not splits:
        raise DataError(f"{root}: no splits found for {fmt.info.name}. Expected:\n{fmt.layout}")

    for split in REQUIRED_SPLITS:
        if split not in splits:
            report.problems.append(Problem(root, "missing-split", f"{root}: no '{split}' split; training needs train and val "
                                           f"(found: {', '.join(splits)})", split))
    scans = {s: fmt.scan(root, s) for s in splits}
    total = sum(len(f.pairs) for f in scans.values())
    n_cls = fmt.info.num_classes

    with _progress(progress, total) as advance:
        for split, files in scans.items():
            hist = np.zeros(n_cls + 1, dtype=np.int64)
            good = 0
            for path, what in files.unpaired:
                kind = "missing-image" if what.startswith("label has no image") else "missing-label"
                if "is listed but" in what:
                    kind = "missing-image"
                report.problems.append(Problem(path, kind, f"{path}: {what}", split))
            for img_path, lbl_path in files.pairs:
                counts = _check_pair(fmt, img_path, lbl_path, split, report.problems)
                if counts is not None:
                    hist[:n_cls] += counts[:n_cls]
                    hist[n_cls] += counts[255]
                    good += 1
                advance()
            report.counts[split] = good
            report.histogram[split] = hist
            if split in REQUIRED_SPLITS and not files.pairs:  # training refuses an empty split: say so here too
                report.problems.append(Problem(root, "empty-split", f"{root}: the '{split}' split has no image/label "
                                               "pairs; training needs images in train and val", split))
    return report


def _check_pair(fmt, img_path: Path, lbl_path: Path, split: str, problems: list[Problem]) -> np.ndarray | None:
    """Read one pair; append its problems; return the 256-bin train-id histogram when it is clean."""
    found = len(problems)
    for path, kind in ((img_path, "corrupt-image"), (lbl_path, "corrupt-label")):
        cut = truncated(path)
        if cut:
            problems.append(Problem(path, kind, f"{path}: {cut}", split))
    if len(problems) > found:
        return None
    image = cv2.imread(str(img_path), cv2.IMREAD_COLOR)
    if image is None:
        problems.append(Problem(img_path, "corrupt-image", f"{img_path}: cannot decode image (corrupt or not an image)", split))
    raw = fmt.decode_label(lbl_path)
    if raw is None:
        problems.append(Problem(lbl_path, "corrupt-label", f"{lbl_path}: cannot decode label image (corrupt or not an image)", split))
        return None
    if raw.ndim == 3:
        problems.append(Problem(
            lbl_path, "colour-label",
            f"{lbl_path}: {raw.shape[2]}-channel colour label; expected a single-channel index map of class values",
            split,
        ))  # fmt: skip
        return None
    if raw.dtype != np.uint8:
        if raw.min() < 0 or raw.max() > 255:
            problems.append(Problem(lbl_path, "out-of-range", f"{lbl_path}: label values up to {int(raw.max())} do not fit 0..255", split))
            return None
        raw = raw.astype(np.uint8)
    if image is not None and image.shape[:2] != raw.shape:
        problems.append(Problem(
            lbl_path, "size-mismatch",
            f"{lbl_path}: label is {raw.shape[1]}x{raw.shape[0]} but image {img_path.name} is {image.shape[1]}x{image.shape[0]}",
            split,
        ))  # fmt: skip
    bad = fmt.bad_values(raw)
    if bad:
        shown = ", ".join(map(str, bad[:8])) + (" ..." if len(bad) > 8 else "")
        problems.append(Problem(lbl_path, "out-of-range", f"{lbl_path}: label values {shown} are not valid {fmt.info.name} values", split))
    if len(problems) > found:
        return None
    return np.bincount(fmt.lut[raw].ravel(), minlength=256)


class _progress:
    """A rich progress bar on stderr (or nothing); ``with _progress(on, total) as advance``."""

    def __init__(self, enabled: bool, total: int):
        self.enabled, self.total, self._bar = enabled and total > 0, total, None

    def __enter__(self):
        if not self.enabled:
            return lambda: None
        self._bar = Progress(
            TextColumn("checking"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            console=Console(stderr=True), transient=True,
        )  # fmt: skip
        self._bar.__enter__()
        task = self._bar.add_task("check", total=self.total)
        return lambda: self._bar.advance(task)

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.__exit__(*exc)
        return False


def check_reader(reader, what: str, num_classes: int) -> list[tuple[int, int]]:
    """Fail before training on an empty split, a missing / unreadable / mismatched file anywhere in it
    (file headers of every pair), or an unusable first / last item; returns the (H, W) of the items read."""
    if len(reader) == 0:
        raise DataError(f"{what}: no images found; check the folder layout (`rdd-edge data check`)")
    problems = reader.verify_files() if hasattr(reader, "verify_files") else []
    if problems:
        more = f" (+{len(problems) - 1} more found; `rdd-edge data check` lists all)" if len(problems) > 1 else ""
        raise DataError(f"{what}: {problems[0]}{more}")
    sizes: list[tuple[int, int]] = []
    for i in sorted({0, len(reader) - 1}):
        image, label = reader[i]
        if image.ndim != 3 or image.shape[2] != 3 or image.shape[:2] != label.shape:
            raise DataError(f"{what}: item {i} has image {image.shape} and label {label.shape}; "
                            "expected HxWx3 and HxW of the same size")
        bad = (label >= num_classes) & (label != 255)
        if bad.any():
            raise DataError(f"{what}: item {i} has label values {np.unique(label[bad])[:8].tolist()} "
                            f"outside 0..{num_classes - 1} (255 = ignore)")
        sizes.append(tuple(label.shape))
    return sizes
