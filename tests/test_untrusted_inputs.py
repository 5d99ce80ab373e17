"""The third bad-input round (issue 19): every case is the attack or fault itself, reproduced here.

Names stay inside --runs; an edited manifest, check.json or check-data index can neither make the
gate pass nor point outside the export folder; demo and deploy.load run only what passed and
still matches its checksum; metadata is validated before anything is built from it; a second
export into a folder is refused; truncated images are caught by name; coincident chart points
stay visible.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from console_width import wide_runner
from rdd_edge.cli import app
from rdd_edge.errors import ConfigError, DataError, DeployError
from rdd_edge.runs import sha256_file

from export_attacks import CHECK, _check, _edit, export  # noqa: E402,F401  (export: a fixture)


# ---------------------------------------------------------------- 1. --name stays one folder name
@pytest.mark.parametrize("name", ["x/../../../escaped2", "../../escaped", "..", "a/b", "/abs", ".hidden", "x" * 101])
def test_run_names_are_one_safe_folder_name(tmp_path, name):
    from rdd_edge.runs import new_run_dir

    with pytest.raises(ConfigError, match="a run name is one folder name"):
        new_run_dir("distill", name, root=tmp_path / "runs")
    res = CliRunner().invoke(app, ["distill", "--runs", str(tmp_path / "runs"), "--name", name, "--iters", "1"])
    assert res.exit_code != 0 and "a run name is one folder name" in str(res.exception)
    assert not (tmp_path / "runs").exists() and not list(tmp_path.parent.glob("escaped*"))  # nothing written anywhere
    assert new_run_dir("distill", "mbv2-camvid.v2", root=tmp_path / "runs").name == "distill-mbv2-camvid.v2"


def test_a_run_folder_that_cannot_be_made_is_one_line(tmp_path):
    from rdd_edge.runs import new_run_dir

    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ConfigError, match="file is a file, not a folder") as exc:
        new_run_dir("distill", "x", root=tmp_path / "file" / "runs")
    assert "\n" not in str(exc.value)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        import os

        if os.geteuid() != 0:  # root writes anywhere: the permission case only exists for other users
            with pytest.raises(ConfigError, match="cannot create the run folder"):
                new_run_dir("distill", "x", root=ro)
    finally:
        ro.chmod(0o700)


# ---------------------------------------------------------------- 2. the gate fails closed on an edited manifest
def test_an_artifact_without_its_checksum_fails_the_gate(export):
    shutil.copy(export / "model.onnx", export / "model.int8.onnx")  # swapped ...
    _edit(export, lambda m: m["artifacts"]["int8"].pop("sha256"))  # ... and its checksum deleted
    res = _check(export)
    rows = {r["name"]: r for r in json.loads((export / "check.json").read_text())["rows"]}
    assert res.exit_code == 1 and rows["int8"]["status"] == "failed"
    assert "gives no sha256" in rows["int8"]["reason"]


def test_a_model_file_left_out_of_the_manifest_fails_the_gate(export):
    _edit(export, lambda m: m["artifacts"].pop("int8"))
    res = _check(export)
    check = json.loads((export / "check.json").read_text())
    assert res.exit_code == 1
    assert any("model.int8.onnx is in the folder but not in the manifest" in f for f in check["failures"])


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_max_drop_must_be_finite(export, value):
    res = _check(export, "--max-drop", value)
    assert res.exit_code != 0 and "--max-drop" in str(res.exception) and "finite" in str(res.exception)


# ---------------------------------------------------------------- 3. no path leaves the export folder
@pytest.mark.parametrize("bad", ["../../other_export/model.onnx", "/etc/passwd", "sub/model.onnx"])
def test_manifest_paths_outside_the_folder_are_refused_by_name(export, tmp_path, bad):
    other = tmp_path / "other_export"
    other.mkdir()
    shutil.copy(export / "model.onnx", other / "model.onnx")
    (export / "model.int8.onnx").unlink()
    sha = sha256_file(other / "model.onnx")
    _edit(export, lambda m: m["artifacts"]["int8"].update(file=bad, sha256=sha))
    res = _check(export)
    rows = {r["name"]: r for r in json.loads((export / "check.json").read_text())["rows"]}
    assert res.exit_code == 1 and rows["int8"]["status"] == "failed"
    assert "not a plain file name inside the folder" in rows["int8"]["reason"]


def test_a_link_to_a_file_outside_is_refused(export, tmp_path):
    outside = tmp_path / "outside.onnx"
    shutil.copy(export / "model.int8.onnx", outside)
    (export / "model.int8.onnx").unlink()
    (export / "model.int8.onnx").symlink_to(outside)  # same bytes, same checksum: only the link gives it away
    res = _check(export)
    rows = {r["name"]: r for r in json.loads((export / "check.json").read_text())["rows"]}
    assert res.exit_code == 1 and "leads outside" in rows["int8"]["reason"]


# ---------------------------------------------------------------- 4. demo and deploy.load run only what passed and matches
def _frames(folder: Path) -> Path:
    from rdd_edge.data.base import write_image
    from rdd_edge.data.synthetic import render_scene

    for i in range(2):
        write_image(folder / f"{i}.png", render_scene(i, (16, 24))[0])
    return folder


def test_demo_ignores_a_check_json_row_that_points_outside(export, tmp_path):
    assert _check(export).exit_code == 0
    evil = tmp_path / "outside" / "evil.onnx"
    evil.parent.mkdir()
    shutil.copy(export / "model.onnx", evil)
    doc = json.loads((export / "check.json").read_text())
    doc["rows"].append({"name": "evil", "file": "../../outside/evil.onnx", "status": "passed",
                        "latency": {"b1": {"fps": 1e9}}})
    from rdd_edge.deploy.integrity import seal

    doc["seal"] = seal(doc)  # even with the seal recomputed (an edit without it is refused outright: issue 32)
    (export / "check.json").write_text(json.dumps(doc))
    from rdd_edge.deploy.choose import choose_artifact

    path, _ = choose_artifact(export)
    assert path.parent == export and path.name != "evil.onnx"


def test_demo_refuses_an_artifact_replaced_after_its_check(export, tmp_path):
    from rdd_edge.deploy.choose import choose_artifact

    assert _check(export).exit_code == 0
    best, _ = choose_artifact(export)
    other = "model.onnx" if best.name != "model.onnx" else "model.fp16.onnx"
    shutil.copy(export / other, best)  # replaced after the check passed
    second, _ = choose_artifact(export)
    assert second.name != best.name  # the replaced file is never picked
    for row in json.loads((export / "check.json").read_text())["rows"]:  # replace every one of them
        if row["file"].endswith(".onnx") and row["file"] != best.name:
            (export / row["file"]).write_bytes((export / row["file"]).read_bytes() + b"\0")
    with pytest.raises(DeployError, match="no artifact both passed the last check and still matches the manifest, runnable here \\(model"):
        choose_artifact(export)
    res = CliRunner().invoke(app, ["demo", str(export), "--source", str(_frames(tmp_path / "frames")), "--max-frames", "1"])
    assert res.exit_code != 0 and "still matches" in str(res.exception)


def test_when_every_artifact_failed_demo_does_not_fall_back(export, tmp_path):
    (export / "model.onnx").write_bytes((export / "model.onnx").read_bytes() + b"\0")  # sha mismatch on model.onnx
    for f in ("model.fp16.onnx", "model.int8.onnx", "model.int8-cpu.onnx"):
        (export / f).write_bytes(b"garbage")
    assert _check(export).exit_code == 1
    res = CliRunner().invoke(app, ["demo", str(export), "--source", str(_frames(tmp_path / "frames")), "--max-frames", "1"])
    assert res.exit_code != 0 and "no artifact both passed" in str(res.exception) and "failed in the last check" in str(res.exception)


def test_an_explicit_file_runs_with_a_note_when_it_is_not_the_exported_one(export):
    from rdd_edge import deploy

    (export / "model.onnx").write_bytes((export / "model.onnx").read_bytes())  # untouched: no note
    with deploy.load(export / "model.onnx", device="cpu") as seg:
        assert not seg.info.notes
    shutil.copy(export / "model.fp16.onnx", export / "model.onnx")
    with deploy.load(export / "model.onnx", device="cpu") as seg:  # named explicitly: it runs, with a note
        assert any("differs from the exported file" in n for n in seg.info.notes)
    with pytest.raises(DeployError, match="model.onnx differs from the exported file"):
        deploy.load(export, device="cpu")  # the folder, no check run yet: model.onnx would be the choice: refused
    _check(export)
    with deploy.load(export, device="cpu") as seg:  # after a check: a verified artifact that passed, not model.onnx
        assert seg.path.name != "model.onnx" and not seg.info.notes


# ---------------------------------------------------------------- 5. metadata is validated before use
@pytest.mark.parametrize("field, value, says", [
    ("palette", "red", "palette"), ("mean", ["a", 0, 0], "mean"), ("std", [0, 1, 1], "std"),
    ("num_classes", 100000000, "num_classes"), ("classes", "sky", "classes"),
    ("input", {"size": [-1, 10**9]}, "input.size"),
])
def test_manifest_fields_are_checked_before_anything_is_built(export, tmp_path, field, value, says):
    from rdd_edge import deploy

    _edit(export, lambda m: m.update({field: value}))
    with pytest.raises(DeployError, match=says) as exc:
        deploy.load(export / "model.onnx", device="cpu")
    assert "\n" not in str(exc.value) and "manifest.json" in str(exc.value)
    res = CliRunner().invoke(app, ["demo", str(export / "model.onnx"), "--source", str(_frames(tmp_path / "f")),
                                   "--max-frames", "1"])
    assert res.exit_code == 1 and says in str(res.exception)


def test_a_manifest_from_another_model_is_caught(export):
    from rdd_edge import deploy
    from rdd_edge.data.registry import dataset_info

    cam = dataset_info("cityscapes")  # 19 classes for an 11-class network
    _edit(export, lambda m: m.update(classes=list(cam.classes), num_classes=19, palette=[list(c) for c in cam.palette]))
    with pytest.raises(DeployError, match="outputs 11 classes but .* lists 19"):
        deploy.load(export / "model.onnx", device="cpu")


# ---------------------------------------------------------------- 8. one export into a folder at a time
def test_a_second_writer_of_an_export_folder_is_refused_by_name(tmp_path):
    from rdd_edge.runs import folder_lock

    out = tmp_path / "run" / "export"
    with folder_lock(out, "export"):
        with pytest.raises(ConfigError, match=r"another export is writing this folder \(pid \d+\)"):
            with folder_lock(out, "export"):
                pass
    with folder_lock(out, "export"):  # released: the next one gets it
        pass


def test_leftover_staging_folders_are_removed_under_the_lock(tmp_path):
    from rdd_edge.runs import folder_lock, remove_leftovers

    out = tmp_path / "export"
    for name in (".export.staging-abc", ".export.old-def"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.onnx").write_text("half")
    (tmp_path / ".other.staging-x").mkdir()  # another folder's: not ours to remove
    with folder_lock(out):
        gone = remove_leftovers(out)
    assert sorted(p.name for p in gone) == [".export.old-def", ".export.staging-abc"]
    assert (tmp_path / ".other.staging-x").is_dir()


# ---------------------------------------------------------------- 10. truncated images are named, not grey-filled
def test_a_truncated_jpeg_is_caught_by_data_check_and_the_readers(tmp_path):
    from rdd_edge.data.base import read_image, write_image, write_label
    from rdd_edge.data.synthetic import render_scene

    root = tmp_path / "camvid"
    for split in ("train", "val"):
        for i in range(2):
            img, lbl = render_scene(i, (32, 48))
            write_image(root / split / "images" / f"a{i}.jpg", img)
            write_label(root / split / "labels" / f"a{i}.png", lbl)
    bad = root / "val" / "images" / "a1.jpg"
    bad.write_bytes(bad.read_bytes()[:500])  # head -c 500
    with pytest.raises(DataError, match="a1.jpg: truncated: no JPEG end-of-image marker"):
        read_image(bad)
    res = wide_runner().invoke(app, ["data", "check", str(root), "--dataset", "camvid"])  # file names unfolded
    assert res.exit_code != 0 and "a1.jpg" in res.output and "truncated" in res.output
    from rdd_edge.data import dataset_info
    from rdd_edge.data.base import SegDataset

    ds = SegDataset(dataset_info("camvid"), "val", [(bad, root / "val" / "labels" / "a1.png")])
    assert any("truncated" in p for p in ds.verify_files())  # the pre-training scan


def test_an_empty_val_split_fails_data_check_as_training_would(tmp_path):
    from rdd_edge.data.base import write_image, write_label
    from rdd_edge.data.synthetic import render_scene

    root = tmp_path / "camvid"
    img, lbl = render_scene(0, (32, 48))
    write_image(root / "train" / "images" / "a.png", img)
    write_label(root / "train" / "labels" / "a.png", lbl)
    (root / "val" / "images").mkdir(parents=True)
    (root / "val" / "labels").mkdir(parents=True)
    res = wide_runner().invoke(app, ["data", "check", str(root), "--dataset", "camvid"])  # file names unfolded
    assert res.exit_code != 0 and "empty-split" in res.output and "'val' split has no" in " ".join(res.output.split())


# ---------------------------------------------------------------- 12. engine without TensorRT says what to install
def test_engine_without_tensorrt_names_the_install_not_itself(export):
    res = CliRunner().invoke(app, ["engine", str(export)])
    msg = str(res.exception)
    assert res.exit_code != 0 and "TensorRT is not installed here" in msg and "JetPack" in msg
    assert "build the engines on the device with `rdd-edge engine`" not in msg


# ---------------------------------------------------------------- 13. coincident points on check.png stay visible
def test_coincident_points_are_spread_and_labelled():
    from rdd_edge.deploy.check_report import coincident_groups, spread_coincident

    pts = [(100.0, 50.0), (101.0, 51.0), (300.0, 80.0), (100.5, 50.5)]
    assert coincident_groups(pts) == [[1, 3], [0, 3], [], [0, 1]]
    spread = spread_coincident(pts)
    xs = sorted(p[0] for p in (spread[0], spread[1], spread[3]))
    assert xs[1] - xs[0] >= 9 and xs[2] - xs[1] >= 9 and spread[2] == pts[2]


def test_check_png_shows_both_of_two_identical_rows(tmp_path):
    from PIL import Image

    from rdd_edge.deploy.check_report import plot
    from rdd_edge.deploy.check_rows import PASSED, Row

    lat = {"b1": {"p50_ms": 5.0, "p90_ms": 5.0, "p99_ms": 5.0, "fps": 200.0}}
    rows = [Row("onnx", "model.onnx", "fp32", status=PASSED, miou=50.0, drop=0.0, latency=lat),
            Row("fp16", "model.fp16.onnx", "fp16", status=PASSED, miou=50.0, drop=0.0, latency=lat)]
    plot(rows, tmp_path / "c.png", {"max_drop": 1.0})
    layout = json.loads(Image.open(tmp_path / "c.png").text["rdd-edge-layout"])
    (a, b) = [p["xy"] for p in layout["points"]]
    assert abs(a[0] - b[0]) >= 9  # side by side, not on top of each other
    assert {lab["text"] for lab in layout["labels"]} == {"onnx (= fp16)", "fp16 (= onnx)"}


def test_out_onto_the_export_of_another_checkpoint_needs_overwrite(tmp_path):
    from rdd_edge.export.pipeline import _check_other_run

    out = tmp_path / "export"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"source_checkpoint": str(tmp_path / "runs" / "a" / "best.pt")}))
    mine = tmp_path / "runs" / "b" / "best.pt"
    with pytest.raises(ConfigError, match=r"holds the export of another checkpoint .*add --overwrite"):
        _check_other_run(out, mine, overwrite=False)
    _check_other_run(out, mine, overwrite=True)  # said explicitly: allowed
    _check_other_run(out, tmp_path / "runs" / "a" / "best.pt", overwrite=False)  # its own export: re-export in place
