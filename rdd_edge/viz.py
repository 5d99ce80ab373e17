"""Colour label maps and compose pictures (NumPy/OpenCV, no torch).

Used by the video demo, the difficulty sheets, the export check report and ``data check``.
All images are uint8 RGB; labels are uint8/int class indices with 255 = ignore, drawn black.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import cv2
import numpy as np

IGNORE_INDEX = 255


def _palette_lut(palette: Sequence[Sequence[int]]) -> np.ndarray:
    """(256, 3) uint8: class colours first, black for every other value (255 = ignore included)."""
    pal = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    if len(pal) > IGNORE_INDEX:
        raise ValueError(f"palette has {len(pal)} colours; at most {IGNORE_INDEX} classes fit a uint8 label")
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(pal)] = pal
    return lut


def colorize(label: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """A label map (HxW class ids) as an RGB image; 255 and unknown ids are black."""
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"colorize expects an HxW label map, got shape {label.shape}")
    idx = np.where((label >= 0) & (label < 256), label, IGNORE_INDEX).astype(np.uint8)
    return _palette_lut(palette)[idx]


def overlay(image: np.ndarray, label: np.ndarray, palette: Sequence[Sequence[int]], alpha: float = 0.5) -> np.ndarray:
    """Blend the coloured label over the image (``alpha`` = label weight); ignored pixels stay as is.

    A label of another size is resized to the image with nearest neighbour.
    """
    image = _as_rgb(image)
    label = np.asarray(label)
    h, w = image.shape[:2]
    if label.shape != (h, w):
        label = cv2.resize(label.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    colour = colorize(label, palette).astype(np.float32)
    blend = (1.0 - alpha) * image.astype(np.float32) + alpha * colour
    out = np.where((label != IGNORE_INDEX)[..., None], np.clip(np.rint(blend), 0, 255), image)
    return out.astype(np.uint8)


def draw_legend(
    image: np.ndarray,
    classes: Sequence[str],
    palette: Sequence[Sequence[int]],
    present: Iterable[int] | None = None,
) -> np.ndarray:
    """A copy of ``image`` with a colour swatch + name per class in its top-left corner.

    ``present`` limits the legend to those class ids (e.g. ``np.unique(label)``); 255 is skipped.
    Entries that do not fit the image height are left out.
    """
    out = _as_rgb(image).copy()
    ids = range(len(classes)) if present is None else sorted({int(c) for c in present if 0 <= int(c) < len(classes)})
    ids = list(ids)
    if not ids:
        return out
    h, w = out.shape[:2]
    scale = max(0.3, min(0.6, h / 600))
    font, thick = cv2.FONT_HERSHEY_SIMPLEX, 1
    (_, th), _ = cv2.getTextSize("Ag", font, scale, thick)
    row, pad, sw = th + 6, 4, th + 2
    fit = max(1, (h - 2 * pad) // row)
    ids = ids[:fit]
    width = min(w, 2 * pad + sw + 6 + max(cv2.getTextSize(classes[i], font, scale, thick)[0][0] for i in ids))
    height = min(h, 2 * pad + row * len(ids))
    # darken the panel so the text reads on any image
    out[:height, :width] = (out[:height, :width].astype(np.float32) * 0.35).astype(np.uint8)
    for k, i in enumerate(ids):
        y = pad + k * row
        color = tuple(int(v) for v in palette[i])
        cv2.rectangle(out, (pad, y + 2), (pad + sw, y + 2 + sw - 2), color, thickness=-1)
        cv2.putText(out, classes[i], (pad + sw + 6, y + th + 2), font, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return out


def side_by_side(images: Sequence[np.ndarray], titles: Sequence[str] | None = None, gap: int = 4) -> np.ndarray:
    """Images in one row at the height of the first (grayscale allowed), each under its title."""
    if not images:
        raise ValueError("side_by_side needs at least one image")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"{len(titles)} titles for {len(images)} images")
    rgb = [_as_rgb(im) for im in images]
    h = rgb[0].shape[0]
    tiles = []
    for im in rgb:
        if im.shape[0] != h:
            w = max(1, round(im.shape[1] * h / im.shape[0]))
            im = cv2.resize(im, (w, h), interpolation=cv2.INTER_NEAREST)
        tiles.append(im)
    bar = 0
    if titles is not None:
        scale = max(0.35, min(0.7, h / 500))
        (_, th), base = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        bar = th + base + 8
    width = sum(t.shape[1] for t in tiles) + gap * (len(tiles) - 1)
    canvas = np.full((h + bar, width, 3), 255, dtype=np.uint8)
    x = 0
    for k, t in enumerate(tiles):
        canvas[bar:, x : x + t.shape[1]] = t
        if titles is not None:
            cv2.putText(canvas, str(titles[k]), (x + 4, bar - base - 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
        x += t.shape[1] + gap
    return canvas


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 from HxW (gray), HxWx1, HxWx4 or HxWx3."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 4:
        return np.ascontiguousarray(image[..., :3])
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ValueError(f"expected an HxW or HxWx3 image, got shape {image.shape}")
