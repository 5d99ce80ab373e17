"""The third bad-input round, training side (issue 19): edited checkpoint metadata, SIGTERM, a full disk,
non-finite options and weights, resuming with another schedule, crops larger than the images, paths
stored absolute, KD options of the wrong type. Each test reproduces the fault itself."""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from rdd_edge.errors import CheckpointError, ConfigError, DataError, TrainingError
from train_helpers import readers, tiny_config


def _small_checkpoint(tmp_path: Path, **edit) -> Path:
    """A real rdd-edge checkpoint of a tiny 4-class model, its model_kwargs edited as an attacker would."""
    from rdd_edge.models import create_model, save_checkpoint

    net = create_model("mbv2", num_classes=4, head_channels=8)
    path = save_checkpoint(tmp_path / "best.pt", net)
    ckpt = torch.load(path, weights_only=True)
    ckpt["model_kwargs"].update(edit)
    torch.save(ckpt, path)
    return path


# ---------------------------------------------------------------- 5. metadata is input too
@pytest.mark.parametrize("edit, says", [
    ({"num_classes": 100_000_000}, "num_classes=100000000 is not an integer in 1..1024"),
    ({"num_classes": -3}, "not an integer in 1..1024"),
    ({"num_classes": 7}, "no weight in its state_dict has 7 output channels"),
    ({"head_channels": 10**9}, "head_channels=1000000000 is not an integer in 1..4096"),
    ({"aux": "yes"}, "aux='yes' is not true/false"),
])
def test_edited_model_metadata_is_refused_before_anything_is_built(tmp_path, monkeypatch, edit, says):
    from rdd_edge.models import checkpoint as ck

    path = _small_checkpoint(tmp_path, **edit)
    monkeypatch.setattr(ck, "create_model", lambda *a, **k: pytest.fail("a model was built from edited metadata"))
    with pytest.raises(CheckpointError, match=says) as exc:
        ck.model_from_checkpoint(path)
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)


# ---------------------------------------------------------------- 6. SIGTERM saves like Ctrl-C
def _signal_at_step(monkeypatch, n: int, sig: int) -> None:
    from rdd_edge.distill import train as train_mod

    calls, real = {"n": 0}, train_mod.train_step

    def step(*a, **k):
        out = real(*a, **k)
        calls["n"] += 1
        if calls["n"] == n:
            os.kill(os.getpid(), sig)  # what docker stop / SLURM / timeout send
        return out

    monkeypatch.setattr(train_mod, "train_step", step)


def test_sigterm_during_training_saves_last_pt_and_says_so(tmp_path, monkeypatch, capsys):
    from rdd_edge import interrupts
    from rdd_edge.distill.train import train
    from rdd_edge.interrupts import Terminated

    monkeypatch.setattr(interrupts, "_SEEN", [])

    _signal_at_step(monkeypatch, 2, signal.SIGTERM)
    outside = signal.getsignal(signal.SIGTERM)  # SIG_DFL, or whatever a runner (CI agent, xdist worker) installed
    with pytest.raises(Terminated):
        train(tiny_config(iters=50, val_every=100, batch=2), data=readers(), run_dir=tmp_path, progress=False)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["step"] == 2
    assert f"terminated (SIGTERM) at iteration 2; saved {tmp_path / 'last.pt'}" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGTERM) is outside  # the handler is the trainer's only while it runs


def test_the_cli_exits_143_on_sigterm_after_saving(tmp_path, monkeypatch, capsys):
    from rdd_edge import cli, interrupts

    monkeypatch.setattr(interrupts, "_SEEN", [])  # this process's record of stop signals, fresh for the test
    _signal_at_step(monkeypatch, 3, signal.SIGTERM)
    with pytest.raises(SystemExit) as exc:
        cli.main(["train-teacher", "--model", "mbv2", "--head-channels", "8", "--iters", "50", "--batch", "2",
                  "--crop", "32x48", "--eval-size", "32x48", "--val-every", "100", "--device", "cpu", "--quiet",
                  "--runs", str(tmp_path), "--name", "t", "--set", "synthetic_train=4", "--set", "synthetic_val=2",
                  "--workers", "0"])
    out = capsys.readouterr()
    assert exc.value.code == 143 and "terminated (SIGTERM)" in out.err and "at iteration 3; saved" in out.out
    assert torch.load(tmp_path / "teacher-t" / "last.pt", weights_only=True)["step"] == 3


@pytest.fixture
def ctrl_c_as_in_a_terminal():
    """SIGINT raising KeyboardInterrupt, as in a terminal: a shell starts a background job with SIGINT
    ignored, and pytest keeps that, so a test that needs Ctrl-C sets it."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_a_stop_request_waits_for_the_end_of_the_step_and_between_steps_acts_at_once(monkeypatch, ctrl_c_as_in_a_terminal):
    """The trainer's StepBoundary: one handler for the whole loop; what it does between steps is what the
    handlers outside it do (Ctrl-C at once, an ignored SIGINT still ignored), and it puts them back."""
    from rdd_edge import interrupts

    monkeypatch.setattr(interrupts, "_SEEN", [])
    outside = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    done = []
    with interrupts.terminate_like_ctrl_c():
        with pytest.raises(interrupts.Terminated):
            with interrupts.StepBoundary() as boundary:
                boundary.holding = True
                os.kill(os.getpid(), signal.SIGTERM)
                os.kill(os.getpid(), signal.SIGINT)
                done.append("step")  # the step runs to its end
                boundary.release()  # then the first request is raised
                done.append("next step")
        assert done == ["step"] and interrupts.sigterm_received()
        with pytest.raises(KeyboardInterrupt):
            with interrupts.StepBoundary():
                os.kill(os.getpid(), signal.SIGINT)  # between steps
                for _ in range(1000):
                    done.append("waiting for data")
        assert done == ["step"]
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with interrupts.StepBoundary():
            os.kill(os.getpid(), signal.SIGINT)  # ignored outside, ignored here
            done.append("ignored")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert done == ["step", "ignored"]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == outside


# ---------------------------------------------------------------- 7. a failed save keeps the previous files
def test_a_full_disk_during_a_save_keeps_the_previous_last_pt(tmp_path, monkeypatch):
    from rdd_edge.distill.train import train
    from rdd_edge.models import checkpoint as ck

    real, saves = torch.save, {"n": 0}

    def disk_fills_up(obj, f, *a, **k):
        saves["n"] += 1
        if saves["n"] > 2:  # best.pt and last.pt at iteration 2 fit; the disk is full at iteration 4
            Path(f).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(obj, f, *a, **k)

    monkeypatch.setattr(ck.torch, "save", disk_fills_up)
    with pytest.raises(TrainingError) as exc:
        train(tiny_config(iters=4, val_every=2, batch=2), data=readers(), run_dir=tmp_path, progress=False)
    msg = str(exc.value)
    assert "No space left on device" in msg and "the previous file is unchanged" in msg
    assert "trained 4 of 4 iterations" in msg and "keeps iteration 2" in msg and "\n" not in msg
    monkeypatch.undo()
    assert torch.load(tmp_path / "last.pt", weights_only=True)["step"] == 2
    assert sorted(p.name for p in tmp_path.glob(".*.tmp")) == []  # no half-written temp file left


# ---------------------------------------------------------------- 9. non-finite options and weights
@pytest.mark.parametrize("option", [{"lr": float("inf")}, {"lr": float("nan")}, {"kd_weight": float("inf")},
                                    {"tfe_fraction": float("nan")}, {"grad_clip": float("-inf")}])
def test_non_finite_options_are_refused(option):
    (key, value), = option.items()
    flag = f"--{key.replace('_', '-')} {value}" if key != "grad_clip" else f"--set {key}={value}"  # no --grad-clip
    with pytest.raises(ConfigError, match=f"{flag}: must be a finite number"):
        tiny_config("distill", **option)


def test_the_cli_refuses_lr_inf_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from rdd_edge.cli import app

    res = CliRunner().invoke(app, ["train-teacher", "--lr", "inf", "--runs", str(tmp_path), "--iters", "1"])
    assert res.exit_code != 0 and "--lr inf: must be a finite number" in str(res.exception)
    assert not any(tmp_path.iterdir())


def test_non_finite_weights_are_never_saved_as_best_and_export_refuses_them(tmp_path, monkeypatch):
    from rdd_edge.distill import train as train_mod
    from rdd_edge.models import create_model, model_from_checkpoint, save_checkpoint

    real = train_mod.train_step

    def diverging(ctx, *a, **k):
        out = real(ctx, *a, **k)
        with torch.no_grad():
            next(ctx.model.parameters()).fill_(float("inf"))  # the step that broke the weights had a finite loss
        return out

    monkeypatch.setattr(train_mod, "train_step", diverging)
    with pytest.raises(TrainingError, match=r"weights hold inf/NaN after iteration 1 of 2 .*not saved"):
        train_mod.train(tiny_config(iters=2, val_every=1, batch=2), data=readers(), run_dir=tmp_path, progress=False)
    assert not (tmp_path / "best.pt").exists() and not (tmp_path / "last.pt").exists()

    net = create_model("mbv2", num_classes=4, head_channels=8)
    with torch.no_grad():
        next(net.parameters()).view(-1)[0] = float("nan")
    path = save_checkpoint(tmp_path / "diverged.pt", net)
    with pytest.raises(CheckpointError, match="hold inf/NaN .*diverged"):
        model_from_checkpoint(path)  # what export, eval, difficulty and a distillation's teacher load through


# ---------------------------------------------------------------- 11. resume with another schedule; crops
def test_resume_with_fewer_iters_is_refused_and_more_iters_says_what_changes(tmp_path, capsys):
    from rdd_edge.distill.config import config_from_dict
    from rdd_edge.distill.train import train

    first = tiny_config(iters=10, val_every=100, batch=2)
    train(first, data=readers(), run_dir=tmp_path, progress=False, stop_after=2)
    capsys.readouterr()
    with pytest.raises(ConfigError, match=r"--iters 2: .*already trained 2 iterations"):
        train(config_from_dict(first.as_dict(), iters=2), resume=tmp_path, data=readers(), progress=False)
    train(config_from_dict(first.as_dict(), iters=20, lr=0.01), resume=tmp_path, data=readers(), progress=False,
          stop_after=3)
    out = capsys.readouterr().out
    assert "resume: --iters 10 -> 20: the poly LR at iteration 2 is" in out and "reaches 0 at iteration 20" in out
    assert "resume: lr 0.05 -> 0.01" in out


def _camvid_folder(root: Path, size=(48, 64)) -> Path:
    from rdd_edge.data.base import write_image, write_label

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for i in range(2):
            write_image(root / split / "images" / f"f{i}.png", rng.integers(0, 255, (*size, 3), dtype=np.uint8))
            write_label(root / split / "labels" / f"f{i}.png", rng.integers(0, 11, size, dtype=np.uint8))
    return root


def test_a_crop_larger_than_the_images_is_said_with_the_figures(tmp_path):
    from rdd_edge.distill.train import build_data

    root = _camvid_folder(tmp_path / "camvid")
    big = build_data(tiny_config(dataset="camvid", data=str(root), crop=(4000, 4000)))
    assert len(big.notes) == 1 and big.notes[0].startswith(
        "--crop 4000x4000 is larger than the training images (48x64, 96x128 at the largest scale 2): "
        "every crop is mostly padding") and "Use at most 96x128" in big.notes[0]
    assert build_data(tiny_config(dataset="camvid", data=str(root), crop=(96, 96))).notes == []


# ---------------------------------------------------------------- 12. absolute paths; KD option values
def test_the_data_folder_is_stored_absolute_and_a_missing_one_names_the_path_tried(tmp_path, monkeypatch):
    from rdd_edge.distill.config import resolve_config
    from rdd_edge.data.registry import detect_dataset

    root = _camvid_folder(tmp_path / "camvid")
    monkeypatch.chdir(tmp_path)
    cfg = resolve_config("teacher", data="camvid", dataset="camvid")
    assert cfg.data == str(root.resolve())
    with pytest.raises(DataError, match=rf"nowhere: data folder not found \(looked for {tmp_path.resolve()}/nowhere\)"):
        detect_dataset("nowhere")


@pytest.mark.parametrize("option, says", [
    ({"T": "abc"}, "--kd-option T=abc: kd method 'kd' takes a finite number, e.g. T=1.0"),
    ({"T": float("inf")}, "takes a finite number"),
    ({"T": True}, "takes a finite number"),
])
def test_kd_option_values_of_the_wrong_type_are_one_line(option, says):
    with pytest.raises(ConfigError, match=says.replace("(", r"\(").replace(".", r"\.")):
        tiny_config("distill", method="kd", kd_options=option)


def test_kd_option_from_the_command_line(tmp_path):
    from typer.testing import CliRunner

    from rdd_edge.cli import app

    res = CliRunner().invoke(app, ["distill", "--kd-option", "T=abc", "--runs", str(tmp_path), "--iters", "1"])
    assert res.exit_code != 0 and "--kd-option T=abc" in str(res.exception) and "finite number" in str(res.exception)
    assert tiny_config("distill", method="kd", kd_options={"T": 2}).kd_options == {"T": 2}


def test_a_sigterm_to_the_whole_process_group_leaves_the_loader_workers_to_the_trainer():
    """timeout / SLURM / kill -TERM -PGID reach the loader workers too: they must not die first (torch would
    then raise "worker killed by signal" in the trainer before it can save)."""
    from rdd_edge.distill.data import train_loader
    from rdd_edge.normalize import IMAGENET

    data = readers()
    loader = train_loader(data.train, tiny_config(iters=40, batch=2), IMAGENET, 0, 0, 1, workers=1)
    it = iter(loader)
    next(it)
    worker = it._workers[0]
    os.kill(worker.pid, signal.SIGTERM)
    for _ in range(5):
        next(it)  # batches keep coming from the same worker
    assert worker.is_alive()
    it._shutdown_workers()


def test_a_killed_save_leaves_no_temp_file_after_the_next_run_and_one_run_folder_trains_once(tmp_path):
    from rdd_edge.distill.train import train
    from rdd_edge.runs import folder_lock

    stale = tmp_path / ".last.pt.abc123.pt.tmp"  # what kill -9 during a save leaves
    stale.write_bytes(b"half a checkpoint")
    train(tiny_config(iters=2, val_every=2, batch=2), data=readers(), run_dir=tmp_path, progress=False)
    assert not stale.exists() and (tmp_path / "last.pt").is_file()
    with folder_lock(tmp_path, "training"):  # another process training this run folder
        with pytest.raises(ConfigError, match="another training is writing this folder"):
            train(tiny_config(iters=4, val_every=2, batch=2), resume=tmp_path, data=readers(), progress=False)
