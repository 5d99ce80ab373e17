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


# --- keys for sheets: swatch strips, class legends, colour bars, stacking --------------------------

import cv2  # noqa: E402

from rdd_edge.viz import class_legend, colorbar, stack, swatch_strip  # noqa: E402


def _has(img: np.ndarray, colour) -> bool:
    return bool((img.reshape(-1, 3) == np.asarray(colour, np.uint8)).all(axis=1).any())


def _block(img: np.ndarray, colour, n: int = 5) -> bool:
    """An n x n block of exactly ``colour`` somewhere (a swatch, not anti-aliased text)."""
    mask = (img == np.asarray(colour, np.uint8)).all(axis=2).astype(np.uint8)
    return bool(cv2.erode(mask, np.ones((n, n), np.uint8)).any())


def _jet(v: int) -> tuple[int, ...]:
    return tuple(int(c) for c in cv2.cvtColor(cv2.applyColorMap(np.uint8([[v]]), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)[0, 0])


def test_swatch_strip_draws_each_colour_and_wraps():
    entries = [((255, 255, 255), "selected"), ((0, 0, 0), "not selected"), ((90, 90, 90), "ignored")]
    wide = swatch_strip(entries, 600)
    narrow = swatch_strip(entries, 90)
    assert wide.shape[1] == 600 and narrow.shape[1] == 90 and narrow.shape[0] > 2 * wide.shape[0] - 10
    assert _block(wide, (0, 0, 0)) and _block(wide, (90, 90, 90))  # filled squares, not just text
    assert _has(wide, (128, 128, 128))  # the outline that makes the white swatch visible on white
    titled = swatch_strip(entries, 600, title="RD_TSE")
    assert titled.shape[0] > wide.shape[0]


def test_class_legend_lists_present_classes_only():
    out = class_legend(CLASSES, PALETTE, present=[3, 1, 255, 9], width=400)
    assert _has(out, PALETTE[1]) and _has(out, PALETTE[3])
    assert not _has(out, PALETTE[0]) and not _has(out, PALETTE[2])
    assert not _block(out, (0, 0, 0))  # black text, but no black swatch
    assert _block(class_legend(CLASSES, PALETTE, present=[1], width=400, ignored=True), (0, 0, 0))


def test_colorbar_matches_the_colour_map_end_to_end():
    bar = colorbar(300, "0 = hard", "1 = easy", cv2.COLORMAP_JET)
    assert bar.shape[1] == 300 and bar.dtype == np.uint8
    # the bar's row: from JET(0) at its left end to JET(255) at its right end, every column a JET colour
    row_ids = [y for y in range(bar.shape[0]) if tuple(bar[y, 6]) == _jet(0)]
    assert row_ids, "no JET(0) pixel at the bar's left end"
    row = bar[row_ids[len(row_ids) // 2]]
    assert tuple(row[6]) == _jet(0) and tuple(row[300 - 7]) == _jet(255)
    jet = {_jet(v) for v in range(256)}
    assert all(tuple(p) in jet for p in row[6 : 300 - 6])
    assert tuple(row[150]) == _jet(int(np.linspace(0, 255, 288).astype(np.uint8)[144]))
    # long end labels that do not fit side by side go on two lines
    short = colorbar(300, "0", "1")
    long = colorbar(120, "0 = hard (heads disagree)", "1 = easy")
    assert long.shape[0] > short.shape[0]


def test_stack_pads_to_a_common_size():
    a, b = np.zeros((10, 20, 3), np.uint8), np.zeros((5, 30), np.uint8)
    v = stack([a, b], axis=0, gap=2)
    assert v.shape == (17, 30, 3) and (v[:10, 20:] == 255).all() and (v[10:12] == 255).all()
    h = stack([a, b], axis=1, gap=3)
    assert h.shape == (10, 53, 3) and (h[5:, 23:] == 255).all()


def test_difficulty_sheet_has_legend_colorbar_and_tse_key():
    pytest.importorskip("torch")
    from rdd_edge.distill import difficulty
    from rdd_edge.distill.difficulty import TSE_IGNORED, difficulty_sheet, heatmap

    assert not hasattr(difficulty, "_colorize") and not hasattr(difficulty, "_side_by_side")
    palette = [(220, 20, 60), (0, 128, 0), (30, 30, 200), (250, 170, 30), (70, 200, 200)]
    names = ["person", "tree", "car", "sign", "water"]
    label = np.zeros((40, 60), np.uint8)
    label[:, 20:40], label[:, 40:] = 1, 2
    label[:5, :5] = 255
    student = label.copy()
    student[label == 255] = 0
    student[30:, :10] = 3  # a class only the student sees
    tse = np.zeros_like(label, bool)
    tse[10:20, 10:30] = True
    tfe = np.tile(np.linspace(0, 1, 60, dtype=np.float32), (40, 1))
    maps = {"student": student, "teacher": student.copy(), "tfe": tfe, "tse": tse}
    sheet = difficulty_sheet(np.full((40, 60, 3), 128, np.uint8), label, maps, palette, "xor", names)
    k = 4  # 40 px high -> upscaled x4 to stay readable
    tw, gap = 60 * k, 4
    assert sheet.shape[1] == 6 * tw + 5 * gap
    # the row of tiles starts (under the titles) where the TSE tile's grey ignored corner starts
    col = lambda i: slice(i * (tw + gap), i * (tw + gap) + tw)  # noqa: E731
    top = int(np.nonzero((sheet[:, 5 * (tw + gap)] == TSE_IGNORED).all(axis=1))[0][0])
    row_bottom = top + 40 * k
    tiles, keys = sheet[:row_bottom], sheet[row_bottom:]
    assert keys.shape[0] > 30, "no keys under the row"
    tse_tile = tiles[-40 * k :, col(5)]
    assert tuple(tse_tile[0, 0]) == TSE_IGNORED and tuple(tse_tile[15 * k, 20 * k]) == (255, 255, 255)
    assert tuple(tse_tile[35 * k, 50 * k]) == (0, 0, 0)
    tfe_tile = tiles[-40 * k :, col(4)]
    np.testing.assert_array_equal(tfe_tile[::k, ::k], heatmap(tfe))
    # class legend under image..teacher: the four classes present in GT or predictions, not "water"
    legend = keys[:, : 4 * tw + 3 * gap]
    for c in range(4):
        assert _block(legend, palette[c]), names[c]
    assert not _has(legend, palette[4])
    assert _block(legend, (0, 0, 0))  # the black "ignored" swatch (GT has 255)
    # RD_TFE colour bar under the RD_TFE tile: both ends of JET
    tfe_key = keys[:, col(4)]
    assert _has(tfe_key, _jet(0)) and _has(tfe_key, _jet(255))
    assert not _has(keys[:, col(5)], _jet(0))
    # RD_TSE key under its tile: white (outlined), black and grey swatches
    tse_key = keys[:, col(5)]
    assert _block(tse_key, TSE_IGNORED) and _block(tse_key, (0, 0, 0)) and _block(tse_key, (255, 255, 255))
    assert _has(tse_key, (128, 128, 128))  # the outline round the white swatch
    # no aux head: no colour bar; no class names: ids are used
    sheet2 = difficulty_sheet(np.zeros((40, 60, 3), np.uint8), label, {**maps, "tfe": None}, palette)
    assert not _has(sheet2[row_bottom:, col(4)], _jet(0)) and sheet2.shape[1] == sheet.shape[1]
