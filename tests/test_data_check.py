"""``check_dataset`` and ``rdd-edge data check``: every bad file reported by name, in one run."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

import data_utils as du
from console_width import wide_runner
from rdd_edge.data.check import check_dataset
from rdd_edge.errors import ConfigError, DataError


def _cli(*args: str):
    from rdd_edge.cli import app

    return wide_runner().invoke(app, list(args))  # table cells and paths unfolded (console_width.py)


def test_clean_folder_counts_and_histogram_match_the_labels(tmp_path):
    raw = du.camvid_compact(tmp_path, splits=("train", "val"), n=2)
    rep = check_dataset(tmp_path, "camvid", progress=False)
    assert rep.ok and rep.problems == []
    assert rep.counts == {"train": 2, "val": 2}
    for split in ("train", "val"):
        expected = np.zeros(12, np.int64)  # 11 classes + ignore (raw 11 = void)
        for (s, _), lbl in raw.items():
            if s == split:
                expected += np.bincount(lbl.ravel(), minlength=12)
        np.testing.assert_array_equal(rep.histogram[split], expected)
    assert rep.total_histogram().sum() == 4 * du.H * du.W
    shown = check_dataset(tmp_path, "camvid", progress=True)  # with the rich progress bar: same result
    assert shown.counts == rep.counts and all((shown.histogram[s] == rep.histogram[s]).all() for s in rep.histogram)


def test_every_kind_of_problem_in_one_run(tmp_path):
    du.camvid_compact(tmp_path, splits=("train", "val"), n=7)
    img_dir, lbl_dir = tmp_path / "train" / "images", tmp_path / "train" / "labels"
    names = sorted(p.stem for p in img_dir.glob("*.jpg"))
    (lbl_dir / f"{names[0]}.png").unlink()  # image without label
    (img_dir / f"{names[1]}.jpg").unlink()  # label without image
    du.write_gray(lbl_dir / f"{names[2]}.png", np.zeros((du.H + 2, du.W), np.uint8))  # size mismatch
    (img_dir / f"{names[3]}.jpg").write_bytes(b"\xff\xd8 truncated garbage")  # corrupt image
    (lbl_dir / f"{names[4]}.png").write_bytes(b"not a png at all")  # corrupt label
    bad = np.zeros((du.H, du.W), np.uint8)
    bad[0, 0], bad[1, 1] = 12, 200
    du.write_gray(lbl_dir / f"{names[5]}.png", bad)  # out-of-range values
    du.write_rgb(lbl_dir / f"{names[6]}.png", du.rgb(3))  # colour label
    rep = check_dataset(tmp_path, "camvid", progress=False)

    found = {(p.kind, p.file.name) for p in rep.problems}
    assert found == {
        ("missing-label", f"{names[0]}.jpg"),
        ("missing-image", f"{names[1]}.png"),
        ("size-mismatch", f"{names[2]}.png"),
        ("corrupt-image", f"{names[3]}.jpg"),
        ("corrupt-label", f"{names[4]}.png"),
        ("out-of-range", f"{names[5]}.png"),
        ("colour-label", f"{names[6]}.png"),
    }
    for p in rep.problems:
        assert p.file.name in p.message and p.split == "train"
    oor = next(p for p in rep.problems if p.kind == "out-of-range")
    assert "12" in oor.message and "200" in oor.message
    size_msg = next(p for p in rep.problems if p.kind == "size-mismatch").message
    assert f"label is {du.W}x{du.H + 2}" in size_msg and f"is {du.W}x{du.H}" in size_msg
    assert rep.counts == {"train": 0, "val": 7}  # train pairs all bad; val untouched and clean
    assert rep.histogram["train"].sum() == 0 and rep.histogram["val"].sum() == 7 * du.H * du.W


def test_format_specific_problems_cityscapes_and_voc(tmp_path):
    du.cityscapes(tmp_path / "cs", n=2)
    lbl = next((tmp_path / "cs" / "gtFine" / "val").glob("*/*_labelIds.png"))
    du.write_gray(lbl, np.full((du.H, du.W), 40, np.uint8))  # labelIds stop at 33
    rep = check_dataset(tmp_path / "cs", "cityscapes", progress=False)
    assert [(p.kind, p.file) for p in rep.problems] == [("out-of-range", lbl)]
    assert rep.counts == {"train": 2, "val": 1}
    # car pixels (labelId 26) are counted as train id 13
    raw = cv2.imread(str(next((tmp_path / "cs" / "gtFine" / "train").glob("*/*_labelIds.png"))), cv2.IMREAD_UNCHANGED)
    assert rep.histogram["train"][13] >= (raw == 26).sum() > 0

    du.voc(tmp_path / "v", n=2)
    base = tmp_path / "v" / "VOCdevkit" / "VOC2012"
    lbl = sorted((base / "SegmentationClass").glob("*.png"))[0]
    du.write_rgb(lbl, du.rgb(5))  # a true RGB image saved over a palette label
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_100000\n2007_100001\nmissing_one\n")
    rep = check_dataset(tmp_path / "v", "voc", progress=False)
    kinds = sorted((p.kind, p.file.name) for p in rep.problems)
    assert ("colour-label", lbl.name) in kinds
    assert any(p.kind == "missing-image" and "missing_one" in p.message for p in rep.problems)
    assert rep.counts["val"] == 2


def test_wrong_layout_and_unknown_format(tmp_path):
    (tmp_path / "stuff").mkdir()
    with pytest.raises(DataError, match=r"not a CamVid folder"):
        check_dataset(tmp_path, "camvid", progress=False)
    with pytest.raises(ConfigError, match="known: synthetic, camvid"):
        check_dataset(tmp_path, "pascal", progress=False)


def test_cli_check_exit_codes_and_json(tmp_path):
    du.camvid_segnet(tmp_path / "good", n=2)
    r = _cli("data", "check", str(tmp_path / "good"), "--format", "camvid", "--json", str(tmp_path / "rep.json"),
             "--preview", str(tmp_path / "prev.png"))  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "Pedestrian" in r.output and "no problems" in r.output
    rep = json.loads((tmp_path / "rep.json").read_text())
    assert rep["ok"] and rep["counts"] == {"train": 2, "val": 2} and len(rep["histogram"]["train"]) == 12
    prev = cv2.imread(str(tmp_path / "prev.png"))
    assert prev is not None and prev.shape[1] > 3 * du.W

    du.camvid_segnet(tmp_path / "bad", n=2)
    next((tmp_path / "bad" / "valannot").glob("*.png")).unlink()
    r = _cli("data", "check", str(tmp_path / "bad"), "--format", "camvid")
    assert r.exit_code == 1
    assert "missing-label" in r.output and "1 problem" in r.output


def test_cli_layout_error_is_one_line_exit_1(tmp_path):
    r = subprocess.run([sys.executable, "-m", "rdd_edge", "data", "check", str(tmp_path), "--format", "ade20k"],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 1
    assert r.stderr.startswith("error: ") and str(tmp_path) in r.stderr and "Traceback" not in r.stderr


def test_cli_list_shows_formats():
    from rdd_edge.data import DATASETS, dataset_info

    r = _cli("data", "list")
    assert r.exit_code == 0, r.output
    for name in DATASETS:  # every registered data set, with its eval size and class count
        info = dataset_info(name)
        for text in (name, "{}x{}".format(*info.eval_size), str(info.num_classes)):
            assert text in r.output, (name, text)


def test_cli_synth_writes_a_checkable_folder(tmp_path):
    out = tmp_path / "synth"
    r = _cli("data", "synth", str(out), "--n", "5", "--size", "48x64", "--seed", "2")
    assert r.exit_code == 0, r.output
    assert str(out) in r.output.replace("\n", "")
    rep = check_dataset(out, "synthetic", progress=False)
    assert rep.ok, [p.message for p in rep.problems]
    assert sum(rep.counts.values()) == 5
    r = _cli("data", "synth", str(out), "--size", "48by64")
    assert r.exit_code == 1 and "--size '48by64': expected HxW" in str(r.exception)
    r = _cli("data", "synth", str(out), "--n", "2")  # not empty: the message names the option that replaces it
    assert r.exit_code == 1 and "pass --overwrite" in str(r.exception)
    r = _cli("data", "synth", str(out), "--n", "2", "--overwrite")
    assert r.exit_code == 0, r.output
    assert sum(check_dataset(out, "camvid", progress=False).counts.values()) == 2
    r = _cli("data", "check", str(out))  # no --dataset: the layout is detected
    assert r.exit_code == 0 and "camvid" in r.output
