"""Colour maps, overlays, legends and side-by-side sheets."""

from __future__ import annotations

import numpy as np
import pytest

from rdd_edge.viz import colorize, draw_legend, overlay, side_by_side

PALETTE = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (200, 100, 50)]
CLASSES = ["red", "green", "blue", "brown"]


def _label():
    lbl = np.array([[0, 1, 2, 3], [255, 3, 0, 7]], dtype=np.uint8)  # 7: an id the palette lacks
    return np.repeat(np.repeat(lbl, 6, axis=0), 8, axis=1)  # 12x32


def test_colorize_matches_palette_and_blacks_out_ignore():
    lbl = _label()
    out = colorize(lbl, PALETTE)
    assert out.shape == (*lbl.shape, 3) and out.dtype == np.uint8
    for v in range(4):
        assert (out[lbl == v] == PALETTE[v]).all()
    assert (out[lbl == 255] == 0).all() and (out[lbl == 7] == 0).all()
    np.testing.assert_array_equal(colorize(lbl.astype(np.int64), PALETTE), out)  # int64 predictions too
    with pytest.raises(ValueError, match="HxW"):
        colorize(np.zeros((2, 2, 3), np.uint8), PALETTE)


def test_overlay_blends_by_alpha_and_keeps_ignored_pixels():
    lbl = _label()
    img = np.random.default_rng(0).integers(0, 256, (*lbl.shape, 3), dtype=np.uint8)
    out = overlay(img, lbl, PALETTE, alpha=0.25)
    expected = np.rint(0.75 * img + 0.25 * colorize(lbl, PALETTE)).astype(np.uint8)
    keep = lbl != 255
    np.testing.assert_array_equal(out[keep], expected[keep])
    np.testing.assert_array_equal(out[~keep], img[~keep])
    np.testing.assert_array_equal(overlay(img, lbl, PALETTE, alpha=0.0), img)
    # a smaller label (model output) is resized to the image with nearest neighbour
    small = lbl[::2, ::2]
    big = overlay(img, small, PALETTE, alpha=1.0)
    assert big.shape == img.shape and (big[0, 0] == PALETTE[0]).all() and (big[0, 8] == PALETTE[1]).all()


def test_draw_legend_draws_swatches_of_present_classes_only():
    img = np.full((120, 160, 3), 255, np.uint8)
    out = draw_legend(img, CLASSES, PALETTE, present=[1, 3, 255])
    assert out.shape == img.shape and not np.shares_memory(out, img) and (img == 255).all()
    colours = {tuple(c) for c in out.reshape(-1, 3)}
    assert tuple(PALETTE[1]) in colours and tuple(PALETTE[3]) in colours
    assert tuple(PALETTE[0]) not in colours and tuple(PALETTE[2]) not in colours
    changed = np.argwhere((out != img).any(axis=2))
    assert changed[:, 0].max() < 60 and changed[:, 1].min() == 0  # a panel at the top left, not all over
    assert (out[-10:, -10:] == 255).all()
    np.testing.assert_array_equal(draw_legend(img, CLASSES, PALETTE, present=[]), img)
    full = draw_legend(img, CLASSES, PALETTE)
    assert all(tuple(c) in {tuple(x) for x in full.reshape(-1, 3)} for c in PALETTE)


def test_side_by_side_lays_out_tiles_with_titles():
    a = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    gray = np.full((10, 12), 77, np.uint8)  # half height: scaled to 20 high, 24 wide
    sheet = side_by_side([a, gray], ["image", "label"], gap=4)
    bar = sheet.shape[0] - 20
    assert bar > 0 and sheet.shape[1] == 30 + 4 + 24
    np.testing.assert_array_equal(sheet[bar:, :30], a)
    assert (sheet[bar:, 34:] == 77).all()
    assert (sheet[:bar] < 255).any()  # title text drawn
    plain = side_by_side([a, a], gap=0)
    assert plain.shape == (20, 60, 3)
    with pytest.raises(ValueError, match="titles"):
        side_by_side([a, a], ["one"])
