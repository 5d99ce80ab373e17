"""The check images that travel with an export: the val images it was scored on, inside the folder.

A device has no copy of the training data set, so ``rdd-edge bundle`` writes the images the export
scored on (PNG: lossless, so the device scores exactly the same pixels) and their labels (class
indices, 255 = ignore) into ``<export>/check-data/``, with ``index.json`` listing each file's
sha256, and records the index's sha256 in the manifest (``check_data``). ``check`` and the
TensorRT acceptance check then score on them. Every name the index gives must be a plain file
name inside the folder and every file must match its checksum before it is read.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rdd_edge.data.base import DatasetInfo, read_image, read_label, write_image, write_label
from rdd_edge.errors import DeployError
from rdd_edge.runs import sha256_file, write_json

FOLDER = "check-data"
INDEX = "index.json"
FORMAT = "rdd-edge-check-data"
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,120}")


def write_check_data(export_dir: Path, images: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                     names: Sequence[str], source: str) -> dict[str, Any]:
    """Write ``check-data/`` (images, labels, index.json) into ``export_dir``; return the manifest entry."""
    folder = Path(export_dir) / FOLDER
    rows = []
    for k, (image, label, name) in enumerate(zip(images, labels, names)):
        stem = f"{k:04d}"
        img, lbl = folder / "images" / f"{stem}.png", folder / "labels" / f"{stem}.png"
        write_image(img, image)
        write_label(lbl, label)
        rows.append({"name": str(name), "image": f"images/{img.name}", "label": f"labels/{lbl.name}",
                     "image_sha256": sha256_file(img), "label_sha256": sha256_file(lbl)})
    index = write_json(folder / INDEX, {"format": FORMAT, "version": 1, "source": source, "items": rows})
    return {"folder": FOLDER, "images": len(rows), "index_sha256": sha256_file(index), "source": source}


def _inside(folder: Path, rel: Any, what: str) -> Path:
    """``folder/rel`` for a relative ``dir/name`` made of safe parts that stays inside ``folder``."""
    parts = str(rel).split("/") if isinstance(rel, str) else []
    if len(parts) != 2 or parts[0] not in ("images", "labels") or not all(_NAME.fullmatch(p) for p in parts):
        raise DeployError(f"{folder / INDEX}: {what} {rel!r} is not a file inside check-data/ (images/NAME or labels/NAME)")
    path = folder / parts[0] / parts[1]
    if path.is_symlink() or not path.resolve().is_relative_to(folder.resolve()):
        raise DeployError(f"{path}: leaves {folder} (a link?); refusing to read it")
    return path


class CheckData:
    """A reader over ``check-data/`` with the data-set reader contract: ``len``, ``[i] -> (RGB, labels)``,
    ``info``, ``name(i)``. Every file's sha256 is verified against the index when it is read."""

    def __init__(self, export_dir: Path, entry: dict[str, Any], info: Any) -> None:
        self.folder = Path(export_dir) / FOLDER
        self.info = info
        self.split = "check"
        index = self.folder / INDEX
        if self.folder.is_symlink() or self.folder.resolve().parent != Path(export_dir).resolve():
            raise DeployError(f"{self.folder}: leads outside {export_dir} (a link to {self.folder.resolve()}); refusing it")
        if not isinstance(entry, dict) or entry.get("folder") != FOLDER:
            raise DeployError(f"{Path(export_dir) / 'manifest.json'}: check_data must name the folder {FOLDER!r}")
        if not index.is_file():
            raise DeployError(f"{index}: missing; the manifest lists check images the folder does not have")
        if sha256_file(index) != entry.get("index_sha256"):
            raise DeployError(f"{index}: sha256 differs from the manifest's (edited or replaced since the bundle was made)")
        try:
            doc = json.loads(index.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DeployError(f"{index}: unreadable ({exc})") from None
        items = doc.get("items") if isinstance(doc, dict) and doc.get("format") == FORMAT else None
        if not isinstance(items, list) or not items:
            raise DeployError(f"{index}: not an rdd-edge check-data index (no items)")
        self.items = []
        for it in items:
            if not isinstance(it, dict):
                raise DeployError(f"{index}: every item must be an object")
            self.items.append((str(it.get("name", "")), _inside(self.folder, it.get("image"), "image"),
                               _inside(self.folder, it.get("label"), "label"),
                               it.get("image_sha256"), it.get("label_sha256")))
        self.source = str(doc.get("source", ""))

    def __len__(self) -> int:
        return len(self.items)

    def name(self, i: int) -> str:
        return self.items[i][0]

    def image_path(self, i: int) -> Path:
        return self.items[i][1]

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        _, img, lbl, img_sha, lbl_sha = self.items[i]
        for path, sha in ((img, img_sha), (lbl, lbl_sha)):
            if not path.is_file():
                raise DeployError(f"{path}: listed in {INDEX} but missing")
            if sha256_file(path) != sha:
                raise DeployError(f"{path}: sha256 differs from {INDEX} (edited or corrupt)")
        image, label = read_image(img), read_label(lbl)
        if image.shape[:2] != label.shape:
            raise DeployError(f"{lbl}: label size differs from its image {img.name}")
        n = self.info.num_classes
        bad = (label >= n) & (label != self.info.ignore_index)
        if bad.any():
            raise DeployError(f"{lbl}: label values {np.unique(label[bad])[:8].tolist()} outside 0..{n - 1} (255 = ignore)")
        return image, label


def manifest_info(manifest: dict[str, Any]) -> Any:
    """A DatasetInfo from the manifest's own facts (classes, palette, size, ignore index); the input's
    normalisation is the manifest's own entry, applied by the runtime, not a data set fact."""
    classes = tuple(str(c) for c in manifest.get("classes") or [])
    size = tuple(int(v) for v in (manifest.get("input") or {}).get("size") or (0, 0))
    palette = tuple(tuple(int(c) for c in rgb) for rgb in manifest.get("palette") or [])
    return DatasetInfo(name=str(manifest.get("dataset") or "check-data"), classes=classes, palette=palette,  # type: ignore[arg-type]
                       eval_size=size, crop_size=size,  # type: ignore[arg-type]
                       ignore_index=int(manifest.get("ignore_index", 255)))


def open_check_data(export_dir: Path, manifest: dict[str, Any]) -> CheckData | None:
    """The export's bundled check images, or None when the manifest lists none."""
    entry = manifest.get("check_data")
    if entry is None:
        return None
    return CheckData(Path(export_dir), entry, manifest_info(manifest))
