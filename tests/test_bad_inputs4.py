"""The fourth bad-input round (issue 32): each numbered finding reproduced as the attack or fault itself.

The model's own output count is the truth for the class list; a bundle is verified end to end;
demo runs only what a check bound to the artifact's bytes passed; outputs never land inside an
export; writes that fail are one line; options that size memory or threads are bounded first.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rdd_edge.cli import app
from rdd_edge.errors import DeployError
from rdd_edge.runs import sha256_file

from export_attacks import CHECK, _check, _edit, export  # noqa: E402,F401  (export: a fixture)


def _labels_only(export: Path, strip_shapes: bool = False) -> None:
    """Turn every ONNX file of ``export`` into the default labels-only graph (no ``logits`` output), as
    `rdd-edge export` writes it; ``strip_shapes`` also drops the recorded intermediate shapes."""
    import onnx

    m = json.loads((export / "manifest.json").read_text())
    for key, art in m["artifacts"].items():
        f = export / art["file"]
        model = onnx.load(str(f))
        keep = [o for o in model.graph.output if o.name == "labels"]
        del model.graph.output[:]
        model.graph.output.extend(keep)
        if strip_shapes:
            del model.graph.value_info[:]
        onnx.save(model, str(f))
        art["sha256"] = sha256_file(f)
    m["output"], m["outputs"] = "labels", [{"name": "labels"}]
    (export / "manifest.json").write_text(json.dumps(m))


# ---------------------------------------------------------------- 1. an edited class list cannot fool the gate
@pytest.mark.parametrize("strip", [False, True])
def test_the_class_count_of_a_labels_only_graph_is_read_from_the_graph(export, strip):
    from rdd_edge.deploy.class_count import file_class_count

    _labels_only(export, strip_shapes=strip)
    for f in ("model.onnx", "model.fp16.onnx", "model.int8.onnx", "model.int8-cpu.onnx"):
        assert file_class_count(export / f) == 11, f  # the synthetic network's 11 classes, also through Q/DQ


@pytest.mark.parametrize("names", [["road"], ["a", "b", "c"]])
def test_an_edited_class_list_fails_the_gate_of_a_labels_only_export(export, names):
    from rdd_edge import deploy

    _labels_only(export)
    _edit(export, lambda m: m.update(classes=names, num_classes=len(names), palette=[[1, 2, 3]] * len(names)))
    res = _check(export)
    assert res.exit_code == 1, res.output
    assert f"the model outputs 11 classes but" in res.output + str(res.exception)
    rows = json.loads((export / "check.json").read_text())["rows"]
    assert all(r["status"] == "failed" and r["miou"] is None for r in rows)  # no made-up mIoU 100.00
    with pytest.raises(DeployError, match=f"outputs 11 classes but .* lists {len(names)}"):
        deploy.load(export / "model.onnx", device="cpu")


def test_a_prediction_beyond_the_class_list_fails_its_row_instead_of_being_clamped():
    """An engine declares no class count: the labels it predicts are the last word (never clamped into a class)."""
    import numpy as np

    from rdd_edge.deploy.check import Candidate, evaluate_rows

    class Seg:
        def predict_batch(self, images):
            return [np.full((4, 4), 7, np.uint8) for _ in images]

    imgs, labs = [np.zeros((4, 4, 3), np.uint8)], [np.zeros((4, 4), np.uint8)]
    (row,) = evaluate_rows([Candidate(name="onnx", load=Seg, needs_sha=False)], imgs, labs, num_classes=1,
                           latency_kw={"min_time": 0.001})
    assert row.status == "failed" and "predicts class 7 but the manifest lists 1 classes" in row.reason


# ---------------------------------------------------------------- 2. a checkpoint's dataset record cannot either
@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    """A small 11-class rdd-edge checkpoint in a run folder (read-only here: tests copy or re-save it)."""
    from rdd_edge.data.registry import dataset_info
    from rdd_edge.models import create_model
    from rdd_edge.models.checkpoint import save_checkpoint

    run = tmp_path_factory.mktemp("ckpt") / "runs" / "distill-tiny"
    run.mkdir(parents=True)
    model = create_model("mbv2", num_classes=11, head_channels=16)
    return save_checkpoint(run / "best.pt", model, dataset=dataset_info("synthetic"))


def _resaved(ckpt: Path, dst: Path, change) -> Path:
    import torch

    c = torch.load(ckpt, weights_only=True)
    change(c)
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(c, dst)
    return dst


def test_an_edited_dataset_record_in_a_checkpoint_is_refused_before_export(tiny_ckpt, tmp_path):
    from rdd_edge.errors import CheckpointError
    from rdd_edge.models.checkpoint import check_dataset_classes, load_checkpoint

    def one_class(c):
        c["dataset"]["classes"], c["dataset"]["palette"] = ["road"], [[1, 2, 3]]

    bad = _resaved(tiny_ckpt, tmp_path / "runs" / "distill-x" / "best.pt", one_class)
    with pytest.raises(CheckpointError, match="dataset record lists 1 classes but the model outputs 11"):
        check_dataset_classes(load_checkpoint(bad), bad)
    res = CliRunner().invoke(app, ["export", str(bad), "--runs", str(tmp_path / "runs")])
    assert res.exit_code == 1 and "lists 1 classes but the model outputs 11" in str(res.exception)
    assert not (bad.parent / "export").exists()
    assert load_checkpoint(tiny_ckpt)["dataset"]["name"] == "synthetic"  # the record as saved stays accepted


# ---------------------------------------------------------------- 3. bundle verifies the export it copies
@pytest.mark.parametrize("attack, says", [
    ("replaced", "model.onnx: sha256 differs from the manifest's"),
    ("no-sha", "artifact onnx (model.onnx) has no sha256"),
    ("passwd", "is not a plain file name inside the folder"),
])
def test_bundle_refuses_an_export_that_is_not_as_exported(export, tmp_path, attack, says):
    if attack == "replaced":
        (export / "model.onnx").write_bytes((export / "model.onnx").read_bytes() + b"\0")
    elif attack == "no-sha":
        _edit(export, lambda m: m["artifacts"]["onnx"].pop("sha256"))
    else:
        _edit(export, lambda m: m["artifacts"]["onnx"].update(file="/etc/passwd"))
    res = CliRunner().invoke(app, ["bundle", str(export), "--out", str(tmp_path / "B")])
    assert res.exit_code == 1 and says in str(res.exception), res.output + repr(res.exception)
    assert not (tmp_path / "B").exists() and not list(tmp_path.glob(".B.*"))


# ---------------------------------------------------------------- 4. check.json is bound to the bytes it checked
def _frames(folder: Path) -> Path:
    from rdd_edge.data.base import write_image
    from rdd_edge.data.synthetic import render_scene

    folder.mkdir(parents=True)
    write_image(folder / "0.png", render_scene(0, (16, 24))[0])
    return folder


def test_an_edited_check_json_cannot_choose_what_demo_runs(export, tmp_path):
    from rdd_edge.deploy.choose import choose_artifact

    (export / "model.int8.onnx").write_bytes((export / "model.int8.onnx").read_bytes() + b"\0")  # fails its row
    assert _check(export).exit_code == 1
    doc = json.loads((export / "check.json").read_text())
    for r in doc["rows"]:  # every row "passed", the broken file the fastest
        r["status"] = "passed"
        r["latency"] = {"b1": {"fps": 1e9 if r["file"] == "model.int8.onnx" else 1.0}}
    (export / "check.json").write_text(json.dumps(doc))
    with pytest.raises(DeployError, match="check.json: edited since `rdd-edge check` wrote it"):
        choose_artifact(export)
    res = CliRunner().invoke(app, ["demo", str(export), "--source", str(_frames(tmp_path / "f")), "--max-frames", "1"])
    assert res.exit_code == 1 and "edited since `rdd-edge check` wrote it" in str(res.exception)


def test_a_check_json_row_runs_only_the_bytes_it_scored(export):
    from rdd_edge.deploy.choose import choose_artifact
    from rdd_edge.deploy.integrity import seal

    assert _check(export).exit_code == 0
    doc = json.loads((export / "check.json").read_text())
    assert doc["manifest_sha256"] == sha256_file(export / "manifest.json")
    assert all(r["sha256"] == sha256_file(export / r["file"]) for r in doc["rows"])
    best, _ = choose_artifact(export)
    # the same verdicts recorded for other bytes (a forged row with a recomputed seal): never chosen
    for r in doc["rows"]:
        r["sha256"] = "0" * 64 if r["file"] == best.name else r["sha256"]
    doc["seal"] = seal(doc)
    (export / "check.json").write_text(json.dumps(doc))
    assert choose_artifact(export)[0].name != best.name
    _edit(export, lambda m: m.update(model_name="other"))  # the manifest changed after the check
    with pytest.raises(DeployError, match="checked another manifest.json"):
        choose_artifact(export)


def test_a_check_data_link_leading_out_of_the_export_is_refused(export, tmp_path):
    from rdd_edge.deploy.check_data import write_check_data
    from rdd_edge.data.synthetic import render_scene

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    img, lbl = render_scene(0, (16, 24))
    entry = write_check_data(outside, [img], [lbl], ["x"], "test")
    (export / "check-data").symlink_to(outside / "check-data")  # contents and checksums all consistent
    _edit(export, lambda m: m.update(check_data=entry))
    res = _check(export)
    assert res.exit_code == 1 and "check-data: leads outside" in str(res.exception)


# ---------------------------------------------------------------- 5. no output inside an export folder
def test_bundle_out_inside_an_export_is_refused(export, tmp_path, monkeypatch):
    res = CliRunner().invoke(app, ["bundle", str(export.parent), "--out", str(export / "mybundle")])
    assert res.exit_code == 1 and f"is inside the export folder {export.resolve()}" in str(res.exception)
    assert not (export / "mybundle").exists() and not list(export.glob(".mybundle*"))


def test_export_out_inside_another_export_is_refused(export, tiny_ckpt, tmp_path):
    res = CliRunner().invoke(app, ["export", str(tiny_ckpt), "--out", str(export / "nested")])
    assert res.exit_code == 1 and "is inside the export folder" in str(res.exception)
    assert not (export / "nested").exists()


# ---------------------------------------------------------------- 6 / 16. demo --out: failed writes are one line
def _many_frames(folder: Path, n: int = 4) -> Path:
    from rdd_edge.data.base import write_image
    from rdd_edge.data.synthetic import render_scene

    folder.mkdir(parents=True)
    for i in range(n):
        write_image(folder / f"{i}.png", render_scene(i, (16, 24))[0])
    return folder


def _demo(export: Path, source: Path, out: Path):
    return CliRunner().invoke(app, ["demo", str(export / "model.onnx"), "--source", str(source), "--out", str(out)])


def test_demo_png_frames_onto_a_full_disk_stop_with_one_line(export, tmp_path, monkeypatch):
    import errno

    from rdd_edge.deploy import demo as demo_mod

    real, calls = demo_mod.atomic_write_bytes, []

    def full_after_two(path, data):
        calls.append(path)
        if len(calls) > 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(demo_mod, "atomic_write_bytes", full_after_two)
    out = tmp_path / "frames-out"
    res = _demo(export, _many_frames(tmp_path / "src"), out)
    assert res.exit_code == 1, res.output
    msg = str(res.exception)
    assert "could not write frame_000002.png (No space left on device); the 2 frames before it are complete" in msg
    assert sorted(p.name for p in out.iterdir()) == ["frame_000000.png", "frame_000001.png"]  # no empty files
    assert all(p.stat().st_size > 0 for p in out.iterdir())


def test_demo_video_that_could_not_be_written_whole_is_removed(export, tmp_path, monkeypatch):
    import cv2

    from rdd_edge.deploy import demo as demo_mod

    class Truncating:  # what OpenCV's writer leaves on a full disk: a file that does not play
        def __init__(self, path, *a):
            self.path = path

        def isOpened(self):
            return True

        def write(self, frame):
            with open(self.path, "ab") as f:
                f.write(b"\0" * 16)

        def release(self):
            pass

    monkeypatch.setattr(demo_mod.cv2, "VideoWriter", Truncating)
    monkeypatch.setattr(demo_mod.cv2, "VideoWriter_fourcc", cv2.VideoWriter_fourcc)
    out = tmp_path / "v.mp4"
    res = _demo(export, _many_frames(tmp_path / "src"), out)
    assert res.exit_code == 1 and "could not be written whole (4 frames" in str(res.exception), res.output
    assert not out.exists() and not list(tmp_path.glob(".v.mp4*"))


def test_demo_out_where_no_folder_can_be_made_is_one_line(export, tmp_path):
    (tmp_path / "file").write_text("x")
    res = _demo(export, _many_frames(tmp_path / "src", 1), tmp_path / "file" / "frames")
    assert res.exit_code == 1 and "cannot create the folder" in str(res.exception)
    res = _demo(export, tmp_path / "src", tmp_path / "file" / "v.mp4")
    assert res.exit_code == 1 and "cannot write there" in str(res.exception)


# ---------------------------------------------------------------- 16. read-only / full file systems: one line
def _oserror(code: int):
    import errno
    import os

    def fail(*a, **k):
        raise OSError(code, os.strerror(code), str(a[0]) if a else "")

    return fail, errno


def test_check_prints_its_verdict_and_exits_by_it_when_the_report_cannot_be_written(export, monkeypatch):
    import errno

    from rdd_edge.deploy import check as check_mod

    assert _check(export).exit_code == 0 and (export / "check.json").is_file()
    fail, _ = _oserror(errno.EROFS)
    monkeypatch.setattr(check_mod, "write_report", fail)
    res = _check(export)
    assert res.exit_code == 0 and "gate passed" in res.output, res.output + repr(res.exception)
    assert "could not write check.json / check.md / check.png" in res.output and "Read-only file system" in res.output
    assert "the earlier check.json was removed" in res.output and not (export / "check.json").exists()
    (export / "model.fp16.onnx").write_bytes(b"garbage")
    res = _check(export)
    assert res.exit_code == 1 and "gate failed" in res.output and "Traceback" not in res.output


def test_a_lock_file_that_cannot_be_written_is_one_line(tmp_path, monkeypatch):
    import errno

    from rdd_edge import runs
    from rdd_edge.errors import ConfigError

    fail, _ = _oserror(errno.EROFS)
    monkeypatch.setattr(runs, "open", fail, raising=False)
    with pytest.raises(ConfigError, match=r"cannot write its lock file \.export\.lock beside it \(Read-only file system\); "
                                          "the engine build needs a writable folder"):
        with runs.folder_lock(tmp_path / "export", "engine build"):
            pass


def test_bundle_onto_a_full_or_unwritable_place_is_one_line(export, tmp_path, monkeypatch):
    import errno

    from rdd_edge.deploy import bundle as bundle_mod

    (tmp_path / "file").write_text("x")
    res = CliRunner().invoke(app, ["bundle", str(export), "--out", str(tmp_path / "file" / "B"), "--no-check-images"])
    assert res.exit_code == 1 and "cannot write there" in str(res.exception)
    fail, _ = _oserror(errno.ENOSPC)
    monkeypatch.setattr(bundle_mod, "build_wheel", fail)
    res = CliRunner().invoke(app, ["bundle", str(export), "--out", str(tmp_path / "B"), "--no-check-images"])
    assert res.exit_code == 1 and "could not write the bundle (No space left on device); nothing was written" in str(res.exception)
    assert not (tmp_path / "B").exists() and not list(tmp_path.glob(".B.*"))


def _fake_wheel(folder: Path) -> Path:
    """A wheel holding rdd_edge alone, made in no time (bundle's own wheel build is tested in test_bundle)."""
    import zipfile

    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / "rdd_edge-0.0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("rdd_edge/__init__.py", "")
        zf.writestr("rdd_edge-0.0.0.dist-info/METADATA", "Name: rdd-edge\n")
    return wheel


def test_bundle_out_dot_inside_a_bundle_replaces_it(export, tmp_path, monkeypatch):
    from rdd_edge.deploy import bundle as bundle_mod

    monkeypatch.setattr(bundle_mod, "build_wheel", _fake_wheel)
    b = tmp_path / "B"
    b.mkdir()
    (b / "bundle.json").write_text("{}")  # an earlier bundle: what --overwrite may replace
    monkeypatch.chdir(b)
    res = CliRunner().invoke(app, ["bundle", str(export), "--out", ".", "--overwrite", "--no-check-images"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert (b / "bundle.json").is_file() and not list(tmp_path.glob(".B.*"))


# ---------------------------------------------------------------- 7 / 13 / 14. what a weights file may hold
def _weights(path: Path, state) -> Path:
    import torch

    torch.save(state, path)
    return path


def _odd_states():
    import torch

    w = torch.ones(4, 3)
    return {
        "int key": ({0: w}, "has a int key 0"),
        "tuple key": ({("a", 1): w}, "has a tuple key"),
        "meta": ({"w": torch.empty(4, 3, device="meta")}, "w is a meta (data-less) tensor"),
        "sparse": ({"w": w.to_sparse()}, "w is a sparse tensor"),
        "quantized": (lambda: {"w": torch.quantize_per_tensor(w, 0.1, 0, torch.qint8)}, "w is a quantized tensor"),
        "expanded": ({"w": torch.zeros(1).expand(10**6, 10**6)}, "w declares shape (1000000, 1000000)"),
        "nan": ({"w": torch.full((4, 3), float("nan"))}, "1 tensors hold inf/NaN (w): the file is damaged"),
        "int": ({"w": torch.ones(4, 3, dtype=torch.int64)}, "w is a int64 tensor; weights are floating point"),
        "bool": ({"w": torch.ones(4, 3, dtype=torch.bool)}, "w is a bool tensor"),
        "complex": ({"w": torch.ones(4, 3, dtype=torch.complex64)}, "w is a complex64 tensor"),
    }


@pytest.mark.parametrize("case", ["int key", "tuple key", "meta", "sparse", "quantized", "expanded", "nan", "int", "bool",
                                  "complex"])
def test_a_weights_file_is_checked_before_anything_is_computed_from_it(tmp_path, case):
    from rdd_edge.errors import CheckpointError
    from rdd_edge.models.pretrained import read_weights

    state, says = _odd_states()[case]
    try:
        state = state() if callable(state) else state
        f = _weights(tmp_path / "w.pth", state)
    except Exception:  # this torch cannot save it: it cannot arrive as a file either
        pytest.skip(f"torch cannot save a {case} state dict")
    try:
        read_weights(f)
    except CheckpointError as exc:
        assert says in str(exc) and str(f) in str(exc) and "\n" not in str(exc)
    else:
        raise AssertionError(f"{case}: accepted")


def test_import_of_nan_weights_is_one_line_naming_the_file(tmp_path):
    import torch

    f = _weights(tmp_path / "released.pth", {"pretrained.conv1.weight": torch.full((2, 2), float("inf"))})
    res = CliRunner().invoke(app, ["import", str(f), "--model", "r18", "--dataset", "camvid", "--runs", str(tmp_path / "runs")])
    assert res.exit_code == 1 and "hold inf/NaN" in str(res.exception) and "diverged; use another copy" in str(res.exception)
    assert not (tmp_path / "runs").exists()


def test_a_checkpoint_with_an_expanded_huge_tensor_is_refused_before_the_finite_check(tiny_ckpt, tmp_path):
    import torch

    from rdd_edge.errors import CheckpointError
    from rdd_edge.models import model_from_checkpoint

    def huge(c):
        c["state_dict"]["head.extra"] = torch.zeros(1).expand(10**6, 10**6)

    bad = _resaved(tiny_ckpt, tmp_path / "best.pt", huge)
    with pytest.raises(CheckpointError, match=r"head.extra declares shape \(1000000, 1000000\) \(1e\+12 elements"):
        model_from_checkpoint(bad)


# ---------------------------------------------------------------- 15. memory-sizing options bounded before work
@pytest.mark.parametrize("options, says", [
    ({"crop": "20000x20000"}, "--crop 20000x20000: sides are at most 4096"),
    ({"head_channels": 1000000}, "--head-channels 1000000: must be a whole number in 1..4096; its 3x3 convolutions "
                                 "alone would hold 1.44e+05 GB"),
    ({"sets": ['model_kwargs={"num_classes": 100000000}']}, "--set model_kwargs: num_classes cannot be set here"),
])
def test_options_that_size_memory_are_bounded_before_any_work(tmp_path, options, says):
    from rdd_edge.distill.config import resolve_config
    from rdd_edge.errors import ConfigError

    with pytest.raises(ConfigError) as exc:
        resolve_config("distill", dataset="synthetic", runs_root=str(tmp_path / "runs"), **options)
    assert says in str(exc.value), str(exc.value)
    if "crop" in options:
        # synthetic: 11 classes, batch 8; FP32 input (3 planes) and logits (11 planes) of 20000x20000
        assert f"the input and logits alone would need {8 * (3 + 11) * 20000 * 20000 * 4 / 1e9:.3g} GB at batch 8" in str(exc.value)


def test_crop_on_the_command_line_is_one_line_and_writes_nothing(tmp_path):
    res = CliRunner().invoke(app, ["distill", "--runs", str(tmp_path / "runs"), "--crop", "20000x20000", "--iters", "1"])
    assert res.exit_code == 1 and "sides are at most 4096" in str(res.exception)
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- 17. threads and search sizes bounded
def test_threads_are_bounded_by_the_usable_cpus(export, monkeypatch):
    from rdd_edge import devices

    monkeypatch.setattr(devices, "usable_cpus", lambda: 2)
    res = _check(export, "--threads", "5000")
    assert res.exit_code != 0 and "--threads 5000: this process may use 2 CPUs; give 1..2" in str(res.exception)
    assert not (export / "check.json").exists()  # refused before any work
    res = CliRunner().invoke(app, ["demo", str(export), "--source", "nowhere", "--threads", "100000"])
    assert res.exit_code != 0 and "--threads 100000: this process may use 2 CPUs" in str(res.exception)
    from rdd_edge import deploy
    from rdd_edge.errors import ConfigError

    with pytest.raises(ConfigError, match="--threads 3: this process may use 2 CPUs"):
        deploy.load(export / "model.onnx", device="cpu", threads=3)  # the API too
    assert deploy.load(export / "model.onnx", device="cpu", threads=2).info.num_classes == 11


def test_int8_search_sizes_are_clamped_to_the_graph_with_a_line():
    from rdd_edge.export.int8_budget import search_sizes

    said: list[str] = []
    assert search_sizes(10000, 1000000, 40, said.append) == (40, 40)
    assert said == ["  --int8-max-float 10000: the graph has 40 Conv layers; using 40",
                    "  --int8-loo 1000000: the graph has 40 Conv layers; measuring all 40 (as -1 does)"]
    said.clear()
    assert search_sizes(None, None, 40, said.append) == (4, 4) and said == []  # 10% of 40
    assert search_sizes(3, -1, 40, said.append) == (3, 40) and said == []


# ---------------------------------------------------------------- 18. stalls and a second resume end at once
class _StallingCapture:
    """A stream that opens, gives ``frames`` frames, then times out on every read (what a stalled MJPEG gives)."""

    opened = 0

    def __init__(self, *args, frames: int = 2):
        type(self).opened += 1
        self.left = frames

    def isOpened(self):
        return True

    def read(self):
        import numpy as np

        if self.left:
            self.left -= 1
            return True, np.zeros((8, 8, 3), np.uint8)
        return False, None

    def get(self, prop):
        return 25.0

    def release(self):
        pass


def test_a_stream_that_keeps_stalling_ends_after_bounded_reconnects(monkeypatch):
    from rdd_edge.deploy import demo as demo_mod

    _StallingCapture.opened = 0
    monkeypatch.setattr(demo_mod.cv2, "VideoCapture", _StallingCapture)
    src = demo_mod.FrameSource("http://camera.invalid/video.mjpg", reconnects=3, backoff=0.001)
    frames = 0
    with pytest.raises(DeployError, match="stream lost and 3 reconnects failed"):
        for _ in src:
            frames += 1
            assert frames < 1000, "reconnects forever"
    assert frames == 2 * 4 and _StallingCapture.opened == 4  # the first open and 3 reconnects, never more


def test_a_read_that_blocks_is_a_stall_not_a_hang(monkeypatch):
    import threading

    from rdd_edge.deploy import demo as demo_mod

    release = threading.Event()

    class Blocking(_StallingCapture):
        def read(self):
            if self.left:
                return super().read()
            release.wait(30)  # an OpenCV without read timeouts blocks here
            return False, None

    monkeypatch.setattr(demo_mod.cv2, "VideoCapture", Blocking)
    src = demo_mod.FrameSource("http://camera.invalid/video.mjpg", read_timeout=0.2)
    frames = demo_mod._Frames(src, 2)
    try:
        assert len(list(frames)) == 2
        assert "no frame for 0.4 s (the stream stalled)" in str(frames.error)
    finally:
        release.set()
        frames.close()


def test_a_second_resume_of_a_run_is_refused_before_any_setup(tmp_path, monkeypatch):
    import torch

    from rdd_edge.distill import train as train_mod
    from rdd_edge.distill.config import make_config
    from rdd_edge.errors import ConfigError
    from rdd_edge.runs import folder_lock

    run = tmp_path / "runs" / "teacher-x"
    run.mkdir(parents=True)
    monkeypatch.setattr(train_mod, "setup_processes", lambda cfg: (torch.device("cpu"), 0, 1, True))
    monkeypatch.setattr(train_mod, "read_resume", lambda cfg, resume: {"path": str(run / "last.pt"), "step": 1})

    def setup(*a, **k):
        raise AssertionError("the second resume built its data before asking for the lock")

    monkeypatch.setattr(train_mod, "build_data", setup)
    with folder_lock(run, "training"):  # the first resume, still running
        with pytest.raises(ConfigError, match="another training is writing this folder"):
            train_mod.train(make_config("teacher", "synthetic"), resume=run / "last.pt")


# ---------------------------------------------------------------- 9 / 10. imported runs: normalisation, data path
def test_pretrained_from_an_imported_checkpoint_takes_its_recorded_normalisation(tiny_ckpt, tmp_path):
    from rdd_edge.models import create_model
    from rdd_edge.models.pretrained import normalization_for
    from rdd_edge.normalize import CAFFE, IMAGENET

    caffe = _resaved(tiny_ckpt, tmp_path / "imported.pt", lambda c: c.update(normalization=CAFFE.as_dict()))
    model = create_model("mbv2", num_classes=11, head_channels=16, pretrained=str(caffe))
    assert model.init_report.loaded > 100 and normalization_for(model.init_report) == CAFFE
    plain = create_model("mbv2", num_classes=11, head_channels=16, pretrained=str(tiny_ckpt))
    assert normalization_for(plain.init_report) == IMAGENET  # what that checkpoint records (the default)


def test_a_bad_normalisation_record_names_the_checkpoint(tiny_ckpt, tmp_path):
    from rdd_edge.errors import CheckpointError
    from rdd_edge.models.checkpoint import load_checkpoint

    bad = _resaved(tiny_ckpt, tmp_path / "bad-norm.pt", lambda c: c.update(normalization={"order": "xyz"}))
    with pytest.raises(CheckpointError, match=r"bad-norm.pt: its normalization record is not usable"):
        load_checkpoint(bad)


def test_import_stores_the_data_folder_absolute(tmp_path, monkeypatch):
    import torch
    from test_released import released_state

    from rdd_edge.models.checkpoint import load_checkpoint

    torch.save(released_state("deeplabv3_r18", "module."), tmp_path / "r18.pth")
    (tmp_path / "cs").mkdir()
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["import", "r18.pth", "--model", "r18", "--dataset", "cityscapes", "--data", "cs",
                                   "--runs", "runs"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    ckpt = load_checkpoint(tmp_path / "runs" / "distill-imported" / "best.pt")
    assert ckpt["data"]["root"] == str((tmp_path / "cs").resolve()) == ckpt["config"]["data"]


# ---------------------------------------------------------------- 8. --pretrained that covers almost nothing
def test_pretrained_weights_covering_almost_nothing_are_refused_unless_asked(tmp_path):
    import torch

    from rdd_edge.distill.config import make_config
    from rdd_edge.distill.train import build_model
    from rdd_edge.errors import ModelError
    from rdd_edge.models import create_model

    own = create_model("mbv2", num_classes=11, head_channels=16).state_dict()
    f = tmp_path / "one-tensor.pth"
    torch.save({"conv_stem.weight": own["backbone.conv_stem.weight"].clone()}, f)  # timm layout, 1 tensor
    n_backbone = sum(1 for k in own if k.startswith("backbone.") and not k.endswith("num_batches_tracked"))
    cfg = make_config("distill", "synthetic", model="mbv2", pretrained=str(f), model_kwargs={"head_channels": 16})
    with pytest.raises(ModelError, match=rf"loaded 1 of the backbone's {n_backbone} tensors \(0%\); the other "
                                         rf"{n_backbone - 1} would start from random weights.*--pretrained-partial"):
        build_model(cfg, 11, init=True)
    cfg.pretrained_partial = True
    assert build_model(cfg, 11, init=True).init_report.loaded == 1  # asked for: trains from them
    res = CliRunner().invoke(app, ["distill", "--pretrained", str(f), "--pretrained-partial", "--iters", "0",
                                   "--runs", str(tmp_path / "runs")])
    assert "--pretrained-partial" not in str(res.exception)  # the option exists (--iters 0 is refused on its own)


# ---------------------------------------------------------------- 11. two timings of one file are no gain
def test_a_budget_met_with_no_layer_in_float_claims_no_latency_gain():
    from rdd_edge.deploy.check_rows import Row
    from rdd_edge.deploy.check_report import budget_line
    from rdd_edge.export.int8_report import summary_lines

    plan = {"budget": 0.0, "layers": [{"name": f"conv{i}"} for i in range(4)], "fp32": {"latency_ms": 14.0},
            "flavours": {"int8-cpu": {"full": {"drop": 0.0, "agreement": 100.0, "latency_ms": 10.5},
                                      "final": {"float_layers": [], "drop": 0.0, "agreement": 100.0, "latency_ms": 8.6},
                                      "steps": []}}}
    text = " ".join(summary_lines(plan, width=200))
    assert "budgeted = full INT8 (no layer in float: the same file)" in text and "vs full INT8" not in text
    row = Row(name="int8-cpu", file="model.int8-cpu.onnx", precision="int8", int8_budget={
        "float_layers": [], "layers": 4, "budget": 0.0, "drop_full": 0.0, "drop": 0.0,
        "latency_ms": {"fp32": 14.0, "full": 10.5, "budgeted": 8.6}})
    line = budget_line(row)
    assert "no layer in float: the file is the full INT8 one" in line and "budgeted 8.6" not in line


# ---------------------------------------------------------------- 12. --gpus 0
@pytest.mark.parametrize("command", ["distill", "train-teacher"])
def test_gpus_zero_is_refused(tmp_path, command):
    res = CliRunner().invoke(app, [command, "--gpus", "0", "--iters", "1", "--runs", str(tmp_path / "runs")])
    assert res.exit_code == 1 and "--gpus 0: processes to launch, at least 1" in str(res.exception)
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- 19. clear messages
def test_a_legacy_torch_file_is_read_not_refused(tmp_path):
    import torch

    from rdd_edge.models.checkpoint import read_torch_file
    from rdd_edge.models.pretrained import read_weights

    f = tmp_path / "old.pth"
    torch.save({"w": torch.ones(2, 2)}, f, _use_new_zipfile_serialization=False)  # torch < 1.6's format
    assert torch.equal(read_torch_file(f)["w"], torch.ones(2, 2)) and list(read_weights(f)) == ["w"]


@pytest.mark.parametrize("sets, says", [
    (["weight_decay=nan"], "--set weight_decay=nan: must be a finite number"),
    (["kd_options=1"], 'kd_options takes a JSON object of the KD method\'s hyperparameters, e.g. {"T": 2}'),
    (["pretrained_report=abc"], "--set pretrained_report: filled in by the trainer"),
])
def test_set_messages_name_what_exists(sets, says):
    from rdd_edge.distill.config import resolve_config
    from rdd_edge.errors import ConfigError

    with pytest.raises(ConfigError) as exc:
        resolve_config("distill", dataset="synthetic", sets=sets)
    assert says in str(exc.value) and "--weight-decay" not in str(exc.value) and "head_channels" not in str(exc.value)


def test_demo_names_the_artifacts_it_skips_as_changed_since_the_check(export, tmp_path):
    from rdd_edge.deploy.choose import choose_artifact

    assert _check(export).exit_code == 0
    best, notes = choose_artifact(export)
    assert notes == []
    (export / best.name).write_bytes((export / best.name).read_bytes() + b"\0")
    second, notes = choose_artifact(export)
    assert second != best and len(notes) == 1
    assert f"{best.name}: changed or missing since the check" in notes[0]  # named, with the reason


def test_install_sh_options_without_a_value_are_one_line(tmp_path):
    import os
    import subprocess

    script = Path(__file__).resolve().parents[1] / "deploy" / "bundle_files" / "install.sh"
    for opt in ("--venv", "--max-batch", "--workspace"):
        r = subprocess.run(["bash", str(script), opt], capture_output=True, text=True, cwd=tmp_path,
                           env={**os.environ, "RDD_TEGRA_RELEASE": str(tmp_path / "none")})
        assert r.returncode == 2 and r.stderr.strip() == f"install.sh: {opt} needs a value (see --help)"


def test_install_sh_failed_check_points_at_this_checks_output(tmp_path):
    """The end of install.sh, run with a check that fails before writing its report: the stale check.md of an
    earlier passing check is removed, the line names check.txt, and no demo is suggested."""
    import subprocess

    script = (Path(__file__).resolve().parents[1] / "deploy" / "bundle_files" / "install.sh").read_text()
    tail = script[script.index('  REPORT="$HERE/export/check.md"'):]
    b = tmp_path / "my bundle"
    (b / "export").mkdir(parents=True)
    (b / "export" / "check.md").write_text("all passed (an earlier check)")
    (b / ".venv" / "bin").mkdir(parents=True)
    (b / ".venv" / "bin" / "rdd-edge").write_text("#!/bin/sh\necho 'error: boom'; exit 1\n")
    (b / ".venv" / "bin" / "rdd-edge").chmod(0o755)
    prog = (f'set -euo pipefail\nHERE={json.dumps(str(b))}\nVENV="$HERE/.venv"\nsay() {{ echo "install.sh: $*"; }}\n'
            "if false; then :\nelse\n" + tail)
    r = subprocess.run(["bash", "-c", prog], capture_output=True, text=True)
    assert r.returncode == 1 and not (b / "export" / "check.md").exists()
    assert f"acceptance check FAILED (exit 1); report: {b}/check.txt" in r.stdout
    assert "rdd-edge demo" not in r.stdout and "my\\ bundle/check.txt" in r.stdout  # quoted for the shell


def test_bundle_next_step_quotes_a_path_with_spaces(export, tmp_path, monkeypatch):
    from rdd_edge.deploy import bundle as bundle_mod

    monkeypatch.setattr(bundle_mod, "make_bundle", lambda spec, say: Path(tmp_path / "my bundle"))
    res = CliRunner().invoke(app, ["bundle", str(export)])
    assert "then run: bash 'my bundle/install.sh'" in res.output
