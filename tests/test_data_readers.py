"""Data set readers on tiny folders written in each data set's real on-disk format."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

import data_utils as du
from rdd_edge.data import DATASETS, dataset_info, get_dataset
from rdd_edge.errors import ConfigError, DataError



def _items(ds) -> dict:
    return {ds.name(i): ds[i] for i in range(len(ds))}


def _camvid_expected(raw: np.ndarray) -> np.ndarray:
    return np.where(raw == 11, 255, raw).astype(np.uint8)


@pytest.mark.parametrize("layout", ["segnet", "compact"])
def test_camvid_both_layouts_map_void_to_255(tmp_path, layout):
    raw = (du.camvid_segnet if layout == "segnet" else du.camvid_compact)(tmp_path)
    for split in ("train", "val"):
        ds = get_dataset("camvid", tmp_path, split=split)
        assert ds.split == split and len(ds) == 2 and ds.info.num_classes == 11
        for name, (img, lbl) in _items(ds).items():
            assert img.dtype == np.uint8 and img.shape == (du.H, du.W, 3)
            assert lbl.dtype == np.uint8 and lbl.shape == (du.H, du.W)
            np.testing.assert_array_equal(lbl, _camvid_expected(raw[(split, name)]))
            assert 11 not in lbl and 255 in lbl
    img, _ = get_dataset("camvid", tmp_path, "train")[0]
    if layout == "segnet":  # lossless PNG images: RGB order must survive exactly
        np.testing.assert_array_equal(img, du.rgb(0))
    assert get_dataset("camvid", tmp_path, "train").image_path(0).is_file()


def test_camvid_shared_copy_if_present():
    """The real compact copy in /work/shared reads and maps void (skipped where it is absent)."""
    from pathlib import Path

    root = Path("/work/shared/data/camvid")
    if not (root / "val" / "labels").is_dir():
        pytest.skip("shared CamVid copy not on this machine")
    ds = get_dataset("camvid", root, "val")
    assert len(ds) == 101
    img, lbl = ds[0]
    assert img.shape == (360, 480, 3) and lbl.shape == (360, 480) and lbl.max() <= 255 and 11 not in lbl


def test_cityscapes_label_ids_to_train_ids(tmp_path):
    raw = du.cityscapes(tmp_path)
    official = {7: 0, 8: 1, 11: 2, 24: 11, 26: 13, 33: 18}  # road, sidewalk, building, person, car, bicycle
    ds = get_dataset("cityscapes", tmp_path, "val")
    assert len(ds) == 2  # colour and instance files are not paired as labels
    for name, (img, lbl) in _items(ds).items():
        key = name[: -len("_leftImg8bit")]
        r = raw[("val", key)]
        expected = np.full(r.shape, 255, np.uint8)
        for lid, tid in official.items():
            expected[r == lid] = tid
        np.testing.assert_array_equal(lbl, expected)
        assert lbl[r == 0].tolist() == [255] * int((r == 0).sum())  # unlabeled -> ignore
        assert set(np.unique(lbl[r == 26])) == {13}
        assert set(np.unique(lbl[r == 5])) == {255}  # 'ground' is not evaluated
    info = dataset_info("cityscapes")
    assert info.num_classes == 19 and info.classes[13] == "car" and info.eval_size == (1024, 2048) and info.crop_size == (512, 1024)


def test_voc_palette_png_decodes_to_indices(tmp_path):
    raw = du.voc(tmp_path)
    lbl_file = next((tmp_path / "VOCdevkit/VOC2012/SegmentationClass").glob("*.png"))
    assert cv2.imread(str(lbl_file), cv2.IMREAD_UNCHANGED).ndim == 3  # OpenCV alone would see colours
    for split in ("train", "val"):
        ds = get_dataset("voc", tmp_path, split)  # root = folder holding VOCdevkit/
        assert len(ds) == 2
        for name, (img, lbl) in _items(ds).items():
            np.testing.assert_array_equal(lbl, raw[name])
            assert {0, 15, 20, 255} <= set(np.unique(lbl).tolist())
    assert len(get_dataset("voc", tmp_path / "VOCdevkit" / "VOC2012", "val")) == 2  # VOC2012/ as root too


def test_voc_colour_fallback_maps_palette_back(tmp_path, monkeypatch):
    """Without Pillow the reader maps OpenCV's colours back through the VOC palette."""
    from rdd_edge.data.voc import colours_to_index, decode_label

    raw = du.voc(tmp_path)
    lbl_file = next((tmp_path / "VOCdevkit/VOC2012/SegmentationClass").glob("*.png"))
    bgr = cv2.imread(str(lbl_file), cv2.IMREAD_UNCHANGED)
    idx = colours_to_index(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    np.testing.assert_array_equal(idx, raw[lbl_file.stem])
    odd = np.zeros((2, 2, 3), np.uint8)
    odd[0, 0] = (1, 2, 3)
    assert colours_to_index(odd)[0, 0] == 254  # a colour not in the palette is flagged, not guessed
    monkeypatch.setitem(sys.modules, "PIL", None)  # as on a box without Pillow
    np.testing.assert_array_equal(decode_label(lbl_file), raw[lbl_file.stem])


def test_voc_train_uses_sbd_aug_when_present(tmp_path):
    raw = du.voc(tmp_path, aug=True)
    train = get_dataset("voc", tmp_path, "train")
    assert len(train) == 4
    for name, (img, lbl) in _items(train).items():
        assert "SegmentationClassAug" in str(train.pairs[[train.name(i) for i in range(4)].index(name)][1])
        np.testing.assert_array_equal(lbl, raw["aug/" + name])
    assert len(get_dataset("voc", tmp_path, "val")) == 2  # val stays on SegmentationClass


def test_ade20k_shifts_labels_and_ignores_zero(tmp_path):
    raw = du.ade20k(tmp_path)
    ds = get_dataset("ade20k", tmp_path, "val")  # val -> validation
    assert len(ds) == 2
    for name, (img, lbl) in _items(ds).items():
        r = raw[("val", name)]
        expected = np.where(r == 0, 255, r.astype(np.int64) - 1).astype(np.uint8)
        np.testing.assert_array_equal(lbl, expected)
        assert set(np.unique(lbl[r == 1])) == {0} and set(np.unique(lbl[r == 150])) == {149}
    info = dataset_info("ade20k")
    assert info.num_classes == 150 and len(set(info.palette)) == 150 and (0, 0, 0) not in info.palette
    assert len(get_dataset("ade20k", tmp_path / "ADEChallengeData2016", "train")) == 2


def test_dataset_info_sizes_and_palettes():
    for name, eval_size, crop, n in [("camvid", (360, 480), (360, 360), 11), ("voc", (512, 512), (512, 512), 21),
                                     ("ade20k", (512, 512), (512, 512), 150), ("cityscapes", (1024, 2048), (512, 1024), 19)]:  # fmt: skip
        info = dataset_info(name)
        assert (info.eval_size, info.crop_size, info.num_classes, len(info.palette)) == (eval_size, crop, n, n)
    assert dataset_info("CamVid").palette[3] == (128, 64, 128)  # Road, from classes.json
    assert dataset_info("voc").palette[:3] == ((0, 0, 0), (128, 0, 0), (0, 128, 0))


def test_unknown_name_lists_known_names():
    with pytest.raises(ConfigError) as e:
        get_dataset("camvd", "/nowhere")
    msg = str(e.value)
    assert "camvd" in msg and all(n in msg for n in DATASETS)
    with pytest.raises(ConfigError, match="kitti"):
        dataset_info("kitti")


def test_wrong_layout_names_folder_expected_tree_and_found(tmp_path):
    (tmp_path / "pictures").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    for name, expect in [("camvid", "trainannot"), ("cityscapes", "gtFine"), ("voc", "JPEGImages"), ("ade20k", "annotations")]:
        with pytest.raises(DataError) as e:
            get_dataset(name, tmp_path, "train")
        msg = str(e.value)
        assert str(tmp_path) in msg and "Expected" in msg and expect in msg
        assert "pictures/" in msg and "notes.txt" in msg  # what was found instead


def test_missing_split_root_and_options_are_clear(tmp_path):
    du.camvid_compact(tmp_path, splits=("train",))
    with pytest.raises(DataError, match=r"no 'val' split.*found: train"):
        get_dataset("camvid", tmp_path, "val")
    with pytest.raises(ConfigError, match="needs its folder"):
        get_dataset("camvid")
    with pytest.raises(ConfigError, match="no options"):
        get_dataset("camvid", tmp_path, "train", n=3)
    with pytest.raises(DataError, match="not found"):
        get_dataset("camvid", tmp_path / "absent", "train")


def test_corrupt_and_bad_files_raise_dataerror_naming_them(tmp_path):
    du.camvid_compact(tmp_path, splits=("train",), n=3)
    labels = sorted((tmp_path / "train" / "labels").glob("*.png"))
    images = sorted((tmp_path / "train" / "images").glob("*.jpg"))
    images[0].write_bytes(b"not a jpeg")
    du.write_gray(labels[1], np.full((du.H, du.W), 40, np.uint8))  # value 40 is not CamVid
    du.write_rgb(labels[2], du.rgb(7))  # a colour rendering
    ds = get_dataset("camvid", tmp_path, "train")
    with pytest.raises(DataError, match=rf"{images[0].name}.*cannot decode"):
        ds[0]
    with pytest.raises(DataError, match=rf"{labels[1].name}.*\[40\]"):
        ds[1]
    with pytest.raises(DataError, match=rf"{labels[2].name}.*single-channel"):
        ds[2]


def test_synthetic_by_name_and_from_a_written_folder(tmp_path):
    from rdd_edge.data import synthetic

    ds = get_dataset("synthetic", split="val", n=2, size=(48, 64), seed=3)
    img, lbl = ds[0]
    assert img.shape == (48, 64, 3) and img.dtype == np.uint8 and lbl.shape == (48, 64) and lbl.dtype == np.uint8
    assert dataset_info("synthetic").classes == dataset_info("camvid").classes
    root = synthetic.write_synthetic(tmp_path / "synth", 5, size=(48, 64), seed=1, val_fraction=0.4)
    on_disk = get_dataset("synthetic", root, "train")
    assert on_disk.info.name == dataset_info("synthetic").name and len(on_disk) >= 1
    img, lbl = on_disk[0]
    assert img.shape == (48, 64, 3) and set(np.unique(lbl)) <= set(range(11)) | {255}


def test_data_and_viz_import_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import rdd_edge.data, rdd_edge.viz, rdd_edge.data.check, rdd_edge.cli.commands.data\n"
        "from rdd_edge.data import get_dataset, dataset_info\n"
        "print(dataset_info('camvid').num_classes)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "11"


def test_an_images_folder_alone_is_not_ade20k(tmp_path):
    """ADE20K's layout is images/ + annotations/ with its split folders; a bare images/ (another format's
    images/<split>, a user's folder of pictures) is not claimed by it, so detection stays unambiguous."""
    from rdd_edge.data.registry import detect_dataset
    from rdd_edge.errors import DataError

    (tmp_path / "images" / "train").mkdir(parents=True)
    (tmp_path / "annotations").mkdir()
    with pytest.raises(DataError, match="no known data set layout"):
        detect_dataset(tmp_path)
    (tmp_path / "images" / "validation").mkdir()
    assert detect_dataset(tmp_path) == "ade20k"
