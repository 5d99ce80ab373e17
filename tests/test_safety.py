"""Nothing executed, nothing lost: crafted checkpoints, the --set parser, failure-safe training."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from console_width import wide_runner
from rdd_edge.cli import app
from rdd_edge.errors import CheckpointError, ConfigError, DataError
from train_helpers import INFO, readers, tiny_config


class _Payload:
    """Unpickling this creates a marker file: what an attacker's code would do, made visible."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _crafted(tmp_path: Path, marker: Path, name: str = "best.pt", model: str = "r18", classes: int = 11) -> Path:
    """A valid rdd-edge checkpoint (real weights, config, data) with a code payload inside."""
    from rdd_edge.distill.config import make_config
    from rdd_edge.models import create_model
    from rdd_edge.data import dataset_info

    torch.manual_seed(0)
    net = create_model(model, num_classes=classes, aux=True, head_channels=8)
    cfg = make_config("distill", model="mbv2", eval_size=(48, 64), synthetic_val=2, synthetic_train=2, method="kd")
    ckpt = {"format": "rdd-edge-checkpoint", "version": 1, "model_name": net.model_name, "model_kwargs": net.model_kwargs,
            "state_dict": net.state_dict(), "dataset": dataset_info("synthetic").as_dict(),
            "data": cfg.data_spec().as_dict(), "config": {**cfg.as_dict(), "mode": "teacher", "method": "none", "rdd": False},
            "step": 1, "best_miou": 0.1, "optimizer": {"state": {}, "param_groups": []}, "extra": _Payload(marker)}
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path


def _run(args: list[str]) -> tuple[int, str]:
    res = wide_runner().invoke(app, args)  # usage errors in typer's panel unwrapped (console_width.py)
    real_error = res.exception is not None and not isinstance(res.exception, SystemExit)
    return res.exit_code, str(res.exception) if real_error else res.output


@pytest.fixture()
def evil(tmp_path):
    marker = tmp_path / "PWNED"
    return _crafted(tmp_path / "run", marker), marker


def test_no_command_runs_code_from_a_checkpoint(evil, tmp_path, monkeypatch):
    ckpt, marker = evil
    monkeypatch.chdir(tmp_path)
    tiny = ["--iters", "1", "--batch", "2", "--crop", "48x64", "--eval-size", "48x64", "--train-images", "2",
            "--val-images", "2", "--device", "cpu", "--head-channels", "8", "-q"]
    commands = [
        ["eval", str(ckpt), "--device", "cpu"],
        ["export", str(ckpt), "--size", "48x64"],
        ["difficulty", str(ckpt), "--teacher", str(ckpt), "--images", "1", "--device", "cpu"],
        ["distill", "--teacher", str(ckpt), *tiny],
        ["train-teacher", "--resume", str(ckpt), "-q"],
        ["pipeline", "--teacher", str(ckpt), "--iters", "1", "--batch", "2", "--device", "cpu", "-q"],
    ]
    for args in commands:
        code, msg = _run(args)
        assert code != 0, args
        assert "refused" in msg and "--trust-checkpoint" in msg and "posix.system" not in msg, (args, msg)
        assert str(ckpt) in msg and "\n" not in msg.strip(), (args, msg)
        assert not marker.exists(), args


def test_check_never_runs_code_from_the_source_checkpoint(evil, tmp_path):
    """The manifest names the checkpoint; check's torch row refuses it, the artifacts are still checked."""
    from deploy_utils import export_onnx, tiny_net, write_manifest

    ckpt, marker = evil
    d = tmp_path / "runs" / "distill-x" / "export"
    export_onnx(tiny_net(), d / "model.onnx")
    man = json.loads(write_manifest(d).read_text())
    man.update(source_checkpoint=str(ckpt), data={"name": "synthetic", "val_images": 2, "size": [48, 64]})
    (d / "manifest.json").write_text(json.dumps(man))
    code, out = _run(["check", str(d.parent), "--min-time", "0.01", "--batch", "1", "--max-drop", "100"])
    report = json.loads((d / "check.json").read_text())
    rows = {r["name"]: r for r in report["rows"]}
    assert rows["torch"]["status"] == "failed" and "refused" in rows["torch"]["reason"]
    assert rows["onnx"]["status"] == "passed" and code == 0  # a reference row does not decide the gate
    assert not marker.exists()


def test_trust_checkpoint_is_the_only_way_in(tmp_path):
    """A file the user made that needs the full unpickler (an older last.pt with numpy RNG state) loads on request."""
    from rdd_edge.models.checkpoint import load_checkpoint, trusted_checkpoints

    marker = tmp_path / "ran"
    ckpt = _crafted(tmp_path, marker)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(ckpt)
    assert not marker.exists()
    with trusted_checkpoints():
        assert load_checkpoint(ckpt)["step"] == 1
    assert marker.exists()  # proof that the opt-in really is the full unpickler: only for files you made
    marker.unlink()
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(ckpt)  # and only inside the block


def test_training_state_loads_with_the_safe_unpickler(tmp_path):
    from rdd_edge.distill.train import train

    train(tiny_config(iters=2, val_every=2, batch=2), data=readers(), run_dir=tmp_path, progress=False)
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert {"optimizer", "scaler", "rng"} <= set(last) and last["rng"][0]["numpy"][0] == "MT19937"
    assert not {"optimizer", "scaler", "rng"} & set(best)  # best.pt: weights and metadata only
    assert best["best_miou"] == last["best_miou"] and best["step"] == 2
    assert (tmp_path / "best.pt").stat().st_size < 0.75 * (tmp_path / "last.pt").stat().st_size


def test_set_values_are_read_as_the_field_type():
    from rdd_edge.distill.config import parse_overrides

    assert parse_overrides(["lr=1", "iters=5", "hflip=no", "crop=64", "eval_size=none", "kd_options={\"T\": 2}"]) == {
        "lr": 1.0, "iters": 5, "hflip": False, "crop": (64, 64), "eval_size": None, "kd_options": {"T": 2}}
    for item, msg in (("lr=abc", "lr takes a number"), ("iters=1.5", "iters takes a whole number"),
                      ("hflip=maybe", "true or false"), ("crop=big", "HxW"), ("lrr=1", "Did you mean 'lr'"),
                      ("iters=none", "cannot be none"), ("nokey", "KEY=VALUE")):
        with pytest.raises(ConfigError, match=msg):
            parse_overrides([item])
    code, msg = _run(["distill", "--set", "lr=abc", "--iters", "1"])
    assert code == 1 and msg == "--set 'lr=abc': lr takes a number, e.g. 5e-4"


def test_a_corrupt_val_image_is_found_before_the_first_step(tmp_path):
    """Every file header is read up front: the run refuses to start instead of crashing at validation."""
    from rdd_edge.distill.train import TrainData, build_data
    from rdd_edge.data.base import write_image, write_label

    root = tmp_path / "camvid"
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("val", 5)):
        for i in range(n):
            write_image(root / split / "images" / f"f{i}.png", rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
            write_label(root / split / "labels" / f"f{i}.png", rng.integers(0, 11, (48, 64), dtype=np.uint8))
    (root / "val" / "images" / "f2.png").write_bytes(b"\x89PNG garbage")  # in the middle of the split
    cfg = tiny_config(dataset="camvid", data=str(root), iters=2, batch=2)
    with pytest.raises(DataError, match=r"f2\.png: not a readable image"):
        build_data(cfg)
    del TrainData


def test_validation_failure_keeps_the_trained_steps(tmp_path):
    """A val item that breaks mid-validation: last.pt holds the steps trained so far, the error names the item."""
    from rdd_edge.distill.train import TrainData, train
    from train_helpers import Blobs

    class BadVal(Blobs):
        def __getitem__(self, i):
            if i == 2:
                raise DataError("val/f2.png: cannot decode image (corrupt or not an image)")
            return super().__getitem__(i)

    data = readers()
    data = TrainData(INFO, data.train, BadVal(4, seed=99), data.eval_size)
    with pytest.raises(DataError, match="f2.png"):
        train(tiny_config(iters=3, val_every=3, batch=2), data=data, run_dir=tmp_path, progress=False)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["step"] == 3


def test_second_ctrl_c_during_the_save_still_leaves_last_pt(tmp_path, monkeypatch):
    """Ctrl-C, then another while last.pt is being written: the save completes, the message is printed."""
    import signal

    import rdd_edge.models.checkpoint as ck
    from rdd_edge.distill import train as train_mod

    calls = {"n": 0}
    real_step, real_save = train_mod.step_losses, ck.save_checkpoint

    def interrupted(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_step(*a, **k)

    def impatient_save(path, *a, **k):
        os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C lands in the middle of the save
        return real_save(path, *a, **k)

    monkeypatch.setattr(train_mod, "step_losses", interrupted)
    monkeypatch.setattr(ck, "save_checkpoint", impatient_save)
    with pytest.raises(KeyboardInterrupt):
        train_mod.train(tiny_config(iters=6, val_every=5, batch=2), data=readers(), run_dir=tmp_path, progress=False)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["step"] == 1


def test_an_image_without_a_label_is_an_error_in_training_and_data_check(tmp_path):
    from rdd_edge.data import get_dataset
    from rdd_edge.data.base import write_image, write_label
    from rdd_edge.data.check import check_dataset

    root = tmp_path / "camvid"
    for split in ("train", "val"):
        for i in range(2):
            write_image(root / split / "images" / f"f{i}.png", np.zeros((16, 16, 3), np.uint8))
            write_label(root / split / "labels" / f"f{i}.png", np.zeros((16, 16), np.uint8))
    write_image(root / "train" / "images" / "lonely.png", np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(DataError, match="lonely.png: image has no label"):
        get_dataset("camvid", root, "train")
    rep = check_dataset(root, "camvid", progress=False)
    assert [p.kind for p in rep.problems] == ["missing-label"]
    import shutil

    shutil.rmtree(root / "val")
    rep = check_dataset(root, "camvid", progress=False)
    assert "missing-split" in [p.kind for p in rep.problems] and not rep.ok  # as training would refuse it
    with pytest.raises(DataError, match="no 'val' split"):
        get_dataset("camvid", root, "val")


def test_messages_give_the_right_fix(tmp_path):
    code, msg = _run(["export", "--calib", "4", "--int8"])
    assert code == 2 and "--calib" in msg and "greater than or equal to 32" in msg  # the usage error names the bound
    existing = tmp_path / "sheets.png"
    existing.write_bytes(b"not a folder")
    code, msg = _run(["difficulty", str(tmp_path / "x.pt"), "--out", str(existing)])
    assert code == 1 and "sheets.png: is a file; difficulty sheets go into a folder" in msg
    assert existing.read_bytes() == b"not a folder"
    from rdd_edge.deploy.demo import run_demo
    from rdd_edge.errors import DeployError

    frames = tmp_path / "frames"
    frames.mkdir()
    from rdd_edge.data.base import write_image

    write_image(frames / "a.png", np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(DeployError, match="--out .*out.txt: not a video name"):
        run_demo(object(), str(frames), out=tmp_path / "out.txt")
    assert not (tmp_path / "out.txt").exists()


def test_data_folder_without_dataset_is_read_as_what_it_is(tmp_path):
    """`train-teacher --data CAMVID_FOLDER` without --dataset trains on CamVid (its layout), not on synthetic scenes."""
    from rdd_edge.distill.config import resolve_config
    from rdd_edge.data.base import write_image, write_label

    root = tmp_path / "camvid"
    for split in ("train", "val"):
        write_image(root / split / "images" / "a.png", np.zeros((16, 16, 3), np.uint8))
        write_label(root / split / "labels" / "a.png", np.zeros((16, 16), np.uint8))
    cfg = resolve_config("teacher", data=root)
    assert cfg.dataset == "camvid" and cfg.data == str(root) and cfg.crop == (360, 360)  # CamVid's preset
    (tmp_path / "junk").mkdir()
    with pytest.raises(DataError, match="no known data set layout here; pass --dataset with one of"):
        resolve_config("teacher", data=tmp_path / "junk")
