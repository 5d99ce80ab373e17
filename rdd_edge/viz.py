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


# --- keys for composed sheets: swatch legends and colour bars (white panels, black text) ---------

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_BORDER = (128, 128, 128)  # swatch outline: white and black swatches stay visible on a white panel


def swatch_strip(
    entries: Sequence[tuple[Sequence[int], str]],
    width: int,
    scale: float = 0.45,
    title: str | None = None,
) -> np.ndarray:
    """A white panel ``width`` wide with a colour swatch + name per entry, wrapped into rows.

    ``entries``: (RGB colour, name) pairs; ``title`` (optional) goes first, on its own line.
    Returns uint8 RGB; its height fits the rows.
    """
    width = max(1, int(width))
    (_, th), base = cv2.getTextSize("Ag", _FONT, scale, 1)
    pad, sw = 6, th + base
    row_h = sw + 6
    items = [(tuple(int(v) for v in c), str(n), cv2.getTextSize(str(n), _FONT, scale, 1)[0][0]) for c, n in entries]
    # first pass: positions
    pos, x, y = [], pad, pad + (row_h if title else 0)
    for _, _, tw in items:
        w = sw + 5 + tw
        if x > pad and x + w > width - pad:
            x, y = pad, y + row_h
        pos.append((x, y))
        x += w + 14
    height = (pos[-1][1] + sw if pos else pad + (sw if title else 0)) + pad
    canvas = np.full((height, width, 3), 255, np.uint8)
    if title:
        cv2.putText(canvas, title, (pad, pad + th), _FONT, scale, (0, 0, 0), 1, cv2.LINE_AA)
    for (colour, name, _), (x, y) in zip(items, pos):
        cv2.rectangle(canvas, (x, y), (x + sw - 1, y + sw - 1), colour, thickness=-1)
        cv2.rectangle(canvas, (x, y), (x + sw - 1, y + sw - 1), _BORDER, thickness=1)
        cv2.putText(canvas, name, (x + sw + 5, y + th + (sw - th - base) // 2), _FONT, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def class_legend(
    classes: Sequence[str],
    palette: Sequence[Sequence[int]],
    present: Iterable[int],
    width: int,
    scale: float = 0.45,
    ignored: bool = False,
    title: str | None = None,
) -> np.ndarray:
    """:func:`swatch_strip` of the classes in ``present`` (ids; 255 and unknown ids skipped), in id order;
    ``ignored`` adds a black "ignored" entry (how :func:`colorize` draws 255)."""
    ids = sorted({int(c) for c in present if 0 <= int(c) < min(len(classes), len(palette))})
    entries: list[tuple[Sequence[int], str]] = [(palette[i], classes[i]) for i in ids]
    if ignored:
        entries.append(((0, 0, 0), "ignored"))
    return swatch_strip(entries, width, scale, title)


def colorbar(
    width: int,
    low_label: str = "0",
    high_label: str = "1",
    colormap: int = cv2.COLORMAP_JET,
    scale: float = 0.45,
    title: str | None = None,
    ticks: Sequence[float] = (0.0, 0.5, 1.0),
) -> np.ndarray:
    """A white panel with a horizontal colour bar for values 0..1 in an OpenCV ``colormap``.

    The bar maps x to value exactly as ``cv2.applyColorMap(uint8(value * 255))`` does, with the
    ``ticks`` values under it and ``low_label`` / ``high_label`` under its two ends (on two lines
    when they do not fit side by side). Returns uint8 RGB.
    """
    width = max(24, int(width))
    (_, th), base = cv2.getTextSize("Ag", _FONT, scale, 1)
    pad, line = 6, th + base + 4
    bar_w, bar_h = width - 2 * pad, max(10, th + 4)
    y = pad + (line if title else 0)
    ramp = np.linspace(0, 255, bar_w).astype(np.uint8)[None, :]
    bar = cv2.cvtColor(cv2.applyColorMap(np.repeat(ramp, bar_h, axis=0), colormap), cv2.COLOR_BGR2RGB)
    lw = cv2.getTextSize(low_label, _FONT, scale, 1)[0][0]
    hw = cv2.getTextSize(high_label, _FONT, scale, 1)[0][0]
    two_lines = lw + hw + 12 > bar_w
    height = y + bar_h + 4 + line + line * (2 if two_lines else 1) + pad - 4
    canvas = np.full((height, width, 3), 255, np.uint8)
    if title:
        cv2.putText(canvas, title, (pad, pad + th), _FONT, scale, (0, 0, 0), 1, cv2.LINE_AA)
    canvas[y : y + bar_h, pad : pad + bar_w] = bar
    cv2.rectangle(canvas, (pad - 1, y - 1), (pad + bar_w, y + bar_h), _BORDER, 1)
    ty = y + bar_h + 4
    for t in ticks:
        x = pad + int(round(float(t) * (bar_w - 1)))
        cv2.line(canvas, (x, ty - 4), (x, ty), (0, 0, 0), 1)
        label = f"{t:g}"
        tw = cv2.getTextSize(label, _FONT, scale, 1)[0][0]
        cv2.putText(canvas, label, (min(max(0, x - tw // 2), width - tw), ty + th + 2), _FONT, scale, (0, 0, 0), 1, cv2.LINE_AA)
    ly = ty + line + th + 2
    cv2.putText(canvas, low_label, (pad, ly), _FONT, scale, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(canvas, high_label, (width - pad - hw, ly + (line if two_lines else 0)), _FONT, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def stack(images: Sequence[np.ndarray], axis: int = 0, gap: int = 4, bg: int = 255) -> np.ndarray:
    """Images one under the other (``axis=0``) or side by side (``axis=1``), padded with ``bg``
    at the bottom / right to a common width / height; no scaling."""
    rgb = [_as_rgb(im) for im in images]
    if not rgb:
        raise ValueError("stack needs at least one image")
    if axis == 0:
        w = max(im.shape[1] for im in rgb)
        parts = [np.pad(im, ((0, 0), (0, w - im.shape[1]), (0, 0)), constant_values=bg) for im in rgb]
        spacer = np.full((gap, w, 3), bg, np.uint8)
    else:
        h = max(im.shape[0] for im in rgb)
        parts = [np.pad(im, ((0, h - im.shape[0]), (0, 0), (0, 0)), constant_values=bg) for im in rgb]
        spacer = np.full((h, gap, 3), bg, np.uint8)
    out = [parts[0]]
    for p in parts[1:]:
        out += [spacer, p]
    return np.concatenate(out, axis=axis)
