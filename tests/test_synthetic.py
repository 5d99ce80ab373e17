"""The synthetic street-scene generator: determinism, splits, label contract, class mix, files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from rdd_edge.data import synthetic as syn
from rdd_edge.data.synthetic import SYNTHETIC_INFO, SyntheticScenes, item_seed, render_scene, write_synthetic
from rdd_edge.errors import ConfigError, DataError

SIZE = (96, 144)
CAMVID_CLASSES = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid" / "classes.json"


@pytest.fixture(scope="module")
def scenes40() -> list[tuple[np.ndarray, np.ndarray]]:
    return [render_scene(s, SIZE) for s in range(40)]


def test_info_matches_camvid_classes_and_palette():
    assert SYNTHETIC_INFO.name == "synthetic"
    assert SYNTHETIC_INFO.classes[:3] == ("Sky", "Building", "Pole")
    assert SYNTHETIC_INFO.classes[-2:] == ("Pedestrian", "Bicyclist")
    assert SYNTHETIC_INFO.num_classes == 11
    assert SYNTHETIC_INFO.palette[3] == (128, 64, 128)  # Road
    assert SYNTHETIC_INFO.palette[10] == (0, 128, 192)  # Bicyclist
    assert len(set(SYNTHETIC_INFO.palette)) == 11
    assert SYNTHETIC_INFO.eval_size == SIZE and SYNTHETIC_INFO.crop_size == SIZE
    assert all(v % 48 == 0 for v in SYNTHETIC_INFO.eval_size)
    assert SYNTHETIC_INFO.ignore_index == 255


def test_same_seed_same_scene_other_seed_other_scene():
    a_img, a_lbl = render_scene(7, SIZE)
    b_img, b_lbl = render_scene(7, SIZE)
    c_img, c_lbl = render_scene(8, SIZE)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_lbl, b_lbl)
    assert not np.array_equal(a_img, c_img)
    assert (a_lbl != c_lbl).mean() > 0.05  # a different layout, not just different noise


def test_shapes_dtypes_and_label_values(scenes40):
    for img, lbl in scenes40[:10]:
        assert img.shape == (96, 144, 3) and img.dtype == np.uint8
        assert lbl.shape == (96, 144) and lbl.dtype == np.uint8
        assert img.flags.c_contiguous
    labels = np.stack([lbl for _, lbl in scenes40])
    values = set(np.unique(labels).tolist())
    assert values <= set(range(11)) | {255}
    ignored = (labels == 255).mean()
    assert 0 < ignored < 0.01  # a little boundary noise, not a lot
    img, lbl = render_scene(3, (48, 64))
    assert img.shape == (48, 64, 3) and lbl.shape == (48, 64)


def test_every_class_appears_and_frequencies_are_street_like(scenes40):
    labels = np.stack([lbl for _, lbl in scenes40])
    counts = np.bincount(labels.ravel(), minlength=256)[:11]
    freq = counts / counts.sum()
    per_scene = np.stack([np.bincount(lbl.ravel(), minlength=256)[:11] > 0 for lbl in labels])
    assert per_scene.any(0).all(), f"classes never drawn: {[SYNTHETIC_INFO.classes[i] for i in np.flatnonzero(~per_scene.any(0))]}"
    sky, building, pole, road, pavement, tree, sign, fence, car, ped, bike = freq
    # large stuff classes dominate; thin and small things are rare, like in CamVid
    assert road > 0.2 and building > 0.12 and sky > 0.04
    assert road + building + sky > 0.55
    for small in (pole, sign, ped, bike, fence):
        assert 0 < small < 0.03
    assert pole < pavement and sign < car and bike < car
    # most classes in most scenes; the rarest (bicyclist) still in a fair share of them
    rate = per_scene.mean(0)
    assert (rate >= 0.6).sum() >= 8, dict(zip(SYNTHETIC_INFO.classes, rate.round(2)))
    assert rate[10] >= 0.2 and rate[9] >= 0.4


def test_poles_are_thin():
    """Poles are 1-3 px wide at 96x144: their label runs are narrow."""
    widths = []
    for s in range(12):
        _, lbl = render_scene(s, SIZE)
        rows = (lbl == syn.POLE)
        for row in rows:
            runs = np.diff(np.flatnonzero(np.diff(np.r_[0, row.astype(np.int8), 0])))[::2]
            widths.extend(runs.tolist())
    assert widths and np.median(widths) <= 3


def test_classes_share_colours():
    """No class is separable by colour alone: road, building, pole and car greys overlap."""
    means = {c: [] for c in (syn.ROAD, syn.BUILDING, syn.POLE, syn.CAR)}
    for s in range(30):
        img, lbl = render_scene(s, SIZE)
        for c in means:
            m = lbl == c
            if m.sum() >= 3:
                means[c].append(img[m].mean(0))
    lo_hi = {c: (np.min(np.array(v)[:, 1]), np.max(np.array(v)[:, 1])) for c, v in means.items()}
    road_lo, road_hi = lo_hi[syn.ROAD]
    for c in (syn.BUILDING, syn.POLE, syn.CAR):
        lo, hi = lo_hi[c]
        assert lo < road_hi and hi > road_lo, (c, lo_hi)  # green-channel ranges overlap road's


def test_dataset_splits_are_disjoint_and_deterministic():
    train = SyntheticScenes("train", n=5, size=(48, 64), seed=3)
    val = SyntheticScenes("val", n=5, size=(48, 64), seed=3)
    assert len(SyntheticScenes("train")) == 500 and len(SyntheticScenes("val")) == 100
    assert train.info is SYNTHETIC_INFO and train.split == "train" and val.split == "val"
    assert train.image_path(0) is None
    assert train.name(2) != val.name(2) and train.name(2) != train.name(3)
    t_seeds = {item_seed(3, "train", i) for i in range(200)}
    v_seeds = {item_seed(3, "val", i) for i in range(200)}
    assert len(t_seeds) == 200 and not t_seeds & v_seeds
    assert item_seed(3, "train", 0) != item_seed(4, "train", 0)
    for i in range(5):
        assert not np.array_equal(train[i][0], val[i][0])
    again = SyntheticScenes("train", n=5, size=(48, 64), seed=3)
    assert np.array_equal(train[4][1], again[4][1]) and np.array_equal(train[-1][0], train[4][0])
    img, lbl = train[0]
    expected = render_scene(item_seed(3, "train", 0), (48, 64))
    assert np.array_equal(img, expected[0]) and np.array_equal(lbl, expected[1])
    with pytest.raises(IndexError):
        train[5]


def test_bad_options_are_clear_errors():
    with pytest.raises(ConfigError, match="split 'test'"):
        SyntheticScenes("test")
    with pytest.raises(ConfigError, match="size"):
        SyntheticScenes("train", size=(8, 8))
    with pytest.raises(ConfigError, match="size"):
        render_scene(0, (96,))
    with pytest.raises(ConfigError, match="n=-1"):
        SyntheticScenes("train", n=-1)


def test_write_synthetic_layout_and_lossless_roundtrip(tmp_path):
    from rdd_edge.data.base import read_image, read_label

    out = write_synthetic(tmp_path / "synth", n=5, size=(48, 96), seed=11, val_fraction=0.4)
    assert out == tmp_path / "synth"
    assert sorted(p.name for p in (out / "train" / "images").iterdir()) == [f"synth_train_0000{i}.png" for i in range(3)]
    assert sorted(p.name for p in (out / "val" / "labels").iterdir()) == ["synth_val_00000.png", "synth_val_00001.png"]
    meta = json.loads((out / "classes.json").read_text())
    assert meta["names"] == list(SYNTHETIC_INFO.classes)
    assert [tuple(c) for c in meta["palette"]] == list(SYNTHETIC_INFO.palette)
    for split, n in (("train", 3), ("val", 2)):
        ds = SyntheticScenes(split, n=n, size=(48, 96), seed=11)
        for i in range(n):
            img = read_image(out / split / "images" / f"{ds.name(i)}.png")
            lbl = read_label(out / split / "labels" / f"{ds.name(i)}.png")
            ref_img, ref_lbl = render_scene(item_seed(11, split, i), (48, 96))
            assert np.array_equal(img, ref_img) and np.array_equal(lbl, ref_lbl)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # temp folder renamed away

    with pytest.raises(DataError, match="already exists"):
        write_synthetic(out, n=2, size=(48, 96))
    write_synthetic(out, n=2, size=(48, 96), val_fraction=0.5, overwrite=True)
    assert len(list((out / "train" / "images").iterdir())) == 1


def test_generator_never_imports_torch():
    import subprocess

    code = "import sys; sys.modules['torch'] = None; from rdd_edge.data.synthetic import render_scene; render_scene(1)"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.skipif(not CAMVID_CLASSES.is_file(), reason="shared CamVid classes.json not present")
def test_palette_matches_shared_camvid_classes_json():
    ref = json.loads(CAMVID_CLASSES.read_text())
    assert [c["name"] for c in ref["classes"]] == list(SYNTHETIC_INFO.classes)
    assert [tuple(c["rgb"]) for c in ref["classes"]] == list(SYNTHETIC_INFO.palette)
