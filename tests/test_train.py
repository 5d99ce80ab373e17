"""Trainer tests: DDP == single process, exact resume, distillation learns, NaN stop, bad input, CLI."""

from __future__ import annotations

import csv
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from rdd_edge.distill import train as train_mod
from rdd_edge.distill.config import config_from_dict, make_config, parse_overrides
from rdd_edge.sizes import parse_hw as parse_size
from rdd_edge.distill.data import StepSampler, TrainPreset
from rdd_edge.normalize import IMAGENET
from rdd_edge.distill.train import poly_lr, train
from rdd_edge.errors import CheckpointError, ConfigError, TrainingError
from train_helpers import INFO, Blobs, ddp_worker, readers, tiny_config


def _weights(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]  # training state loads safely


def _assert_same(a: dict, b: dict, atol=1e-5) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if a[k].is_floating_point():
            torch.testing.assert_close(a[k], b[k], atol=atol, rtol=1e-4, msg=lambda m: f"{k}: {m}")
        else:
            assert torch.equal(a[k], b[k]), k


def _teacher_ckpt(tmp_path: Path, num_classes: int = 4, name: str = "teacher.pt") -> Path:
    """An untrained tiny teacher (R18 with aux head, standing in for R101)."""
    from rdd_edge.models import create_model, save_checkpoint

    torch.manual_seed(1)
    t = create_model("r18", num_classes=num_classes, aux=True, head_channels=8)
    return save_checkpoint(tmp_path / name, t, dataset=INFO, config={}, step=0, best_miou=None)


# ------------------------------------------------------------------ pure parts
def test_poly_lr_and_presets():
    assert poly_lr(0.02, 0, 100) == 0.02
    assert poly_lr(0.02, 50, 100, 0.9) == pytest.approx(0.02 * 0.5 ** 0.9)
    assert poly_lr(0.02, 100, 100) == 0.0
    cfg = make_config("distill", "camvid", iters=10)
    assert cfg.crop == (360, 360) and cfg.iters == 10 and cfg.lr == 0.02 and cfg.weight_decay == 1e-4
    assert make_config("distill", "cityscapes").crop == (512, 1024)
    assert make_config("teacher").model == "deeplabv3_r101" and make_config("teacher", "ade20k").iters == 80000
    assert config_from_dict(cfg.as_dict()) == cfg  # JSON round trip (tuples come back as lists)
    assert parse_size("48x64") == (48, 64) and parse_size("360") == (360, 360)
    with pytest.raises(ConfigError, match="--crop"):
        parse_size("big", "--crop")
    assert parse_size("360,480") == parse_size((360, 480)) == parse_size(" 360 X 480 ") == (360, 480)
    with pytest.raises(ConfigError, match="at least 8"):
        parse_size("4x64")
    assert parse_overrides(["momentum=0.8", "crop=64x96", "tensorboard=false", "lr=1"]) == {
        "momentum": 0.8, "crop": (64, 96), "tensorboard": False, "lr": 1.0}
    with pytest.raises(ConfigError, match="bogus"):
        parse_overrides(["bogus=1"])
    with pytest.raises(ConfigError, match="--rdd-mode"):
        make_config("distill", rdd_mode="nand")


def test_step_sampler_splits_global_batch_and_resumes():
    full = list(StepSampler(10, 4, total_steps=6, seed=3))
    ranks = [list(StepSampler(10, 4, total_steps=6, rank=r, world=2, seed=3)) for r in range(2)]
    merged = [x for s in range(6) for r in range(2) for x in ranks[r][2 * s:2 * s + 2]]
    assert merged == full  # 2 x 2 per step holds the same samples and augment seeds as 1 x 4
    assert list(StepSampler(10, 4, total_steps=6, start_step=4, seed=3)) == full[16:]
    idx = [i for i, _ in full[:20]]
    assert sorted(idx[:10]) == list(range(10)) and sorted(idx[10:]) == list(range(10))  # each epoch a permutation
    assert idx[:10] != idx[10:]


def test_train_preset_pads_with_ignore_and_keeps_label_values():
    image, label = Blobs(1)[0]
    tf = TrainPreset((48, 64), IMAGENET, scale=(0.5, 0.5))
    x, y = tf(image, label, np.random.default_rng(0))
    assert x.shape == (3, 48, 64) and y.shape == (48, 64) and x.dtype == torch.float32
    assert set(np.unique(y.numpy())) <= {0, 1, 2, 3, 255}
    assert (y == 255).float().mean() > 0.5  # a half-size image fills a quarter of the crop; the rest is ignore
    pad = x[:, y == 255]
    assert torch.allclose(pad, torch.zeros_like(pad), atol=0.02)  # mean-colour padding normalises to ~0


# ------------------------------------------------------------------ training behaviour
def _assert_same_relative_to_update(a: dict, b: dict, init: dict, share: float = 0.05) -> None:
    """``a`` and ``b`` moved the same way from ``init``: their difference is under ``share`` of the
    update, as a norm over all trained float tensors together.

    Two processes sum gradients in another order than one (all-reduce, then per-process means),
    and the CPU's vector units change the order again (AVX-512 vs AVX2 kernels). Per tensor that
    rounding can reach a quarter of a tiny update where a gradient is a sum of large terms that
    cancel (a BN shift moved by 2e-4 in three steps, on a 2-core AVX2 EPYC), so tensors are not
    compared one by one. Over the whole model the difference stays near one percent of the update
    (1.3% for the three-step run, 0.2% for the CWD run, on that EPYC), while a wrong gradient (a missing all-reduce trains each process on its own two
    images) changes the update by a share comparable to the update itself.
    """
    assert a.keys() == b.keys()
    diff2 = upd2 = 0.0
    for k in a:
        if not a[k].is_floating_point():
            assert torch.equal(a[k], b[k]), k
            continue
        diff2 += float(((a[k] - b[k]).double() ** 2).sum())
        upd2 += float(((a[k] - init[k]).double() ** 2).sum())
    assert upd2 > 0, "nothing trained"
    assert diff2 ** 0.5 <= share * upd2 ** 0.5, f"the runs differ by {diff2 ** 0.5 / upd2 ** 0.5:.2%} of the update"


@pytest.mark.slow
def test_ddp_two_processes_match_one_process(tmp_path, monkeypatch):
    """Global batch 4: 2 gloo processes x 2 == 1 process x 4.

    Equivalence holds with frozen BN (running statistics, per-sample): torch's SyncBatchNorm runs
    on CUDA only, so on CPU each process would otherwise normalise over its own 2 images. Crops
    cover whole images (no padding) and the data has no ignored pixels, so each process averages
    its loss over equally many pixels; dropout is off (its masks come from per-process RNGs).
    """
    import torch.multiprocessing as mp

    monkeypatch.setattr(torch.nn.Dropout, "forward", lambda self, x: x)  # as ddp_worker's no_dropout()
    cfg = tiny_config(iters=3, val_every=3, freeze_bn=True, scale_min=1.0, scale_max=1.0, lr=0.05)
    single = train(cfg, data=readers(), run_dir=tmp_path / "one", progress=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(ddp_worker, args=(2, port, str(tmp_path / "two"), cfg.as_dict()), nprocs=2, start_method="spawn")
    one, two = _weights(tmp_path / "one" / "last.pt"), _weights(tmp_path / "two" / "last.pt")
    torch.manual_seed(cfg.seed)  # the trainer's initialisation
    init = train_mod.build_model(cfg, 4).state_dict()
    assert any(not torch.allclose(one[k], init[k]) for k in one if one[k].is_floating_point())  # it did train
    _assert_same_relative_to_update(one, two, init)
    assert single["steps"] == 3


@pytest.mark.slow
def test_resume_continues_exactly(tmp_path):
    """K of 2K steps, then --resume: same weights as 2K straight (distillation, TFE->TSE switch, dropout on)."""
    teacher = _teacher_ckpt(tmp_path)
    cfg = tiny_config("distill", model="r18", teacher=str(teacher), method="kd", tfe_fraction=0.25, iters=4,
                      val_every=3, batch=2)
    train(cfg, data=readers(), run_dir=tmp_path / "straight", progress=False)
    train(cfg, data=readers(), run_dir=tmp_path / "split", stop_after=2, progress=False)
    half = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    assert half["step"] == 2 and half["rdd_stage"] == "tse"
    out = train(config_from_dict(half["config"]), resume=tmp_path / "split", data=readers(), progress=False)
    assert out["steps"] == 4
    _assert_same(_weights(tmp_path / "straight" / "last.pt"), _weights(tmp_path / "split" / "last.pt"), atol=1e-6)
    rows = list(csv.DictReader(open(tmp_path / "split" / "train_log.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]  # the resumed log continues, no duplicates


@pytest.mark.slow
def test_distillation_on_synthetic_learns(tmp_path):
    """Short KD+RDD run on synthetic scenes: the training loss falls and val mIoU beats the untrained student.

    The stand-in teacher is untrained (an R18 with aux head, for speed), so TSE-XOR selects few
    pixels (both models find everything hard); half the run is TFE, where the weights are ~1.
    """
    from rdd_edge.distill.data import eval_loader
    from rdd_edge.distill.evaluate import evaluate
    from rdd_edge.distill.train import build_data

    teacher = _teacher_ckpt(tmp_path, num_classes=11)
    cfg = tiny_config("distill", model="mbv2", teacher=str(teacher), method="kd", iters=20, batch=4, crop=(48, 72),
                      tfe_fraction=0.5, eval_size=(48, 72), val_every=10, log_every=4, synthetic_train=48,
                      synthetic_val=6, lr=0.05)
    rd = build_data(cfg)
    torch.manual_seed(cfg.seed)
    untrained = evaluate(train_mod.build_model(cfg, 11), eval_loader(rd.val, IMAGENET, rd.eval_size), 11).miou
    out = train(cfg, data=rd, run_dir=tmp_path / "run", progress=False)
    rows = list(csv.DictReader(open(tmp_path / "run" / "train_log.csv")))
    first, last = float(rows[0]["loss"]), float(rows[-1]["loss"])
    assert last < 0.5 * first, (first, last)
    assert out["best_miou"] > untrained + 0.04, (untrained, out["best_miou"])
    assert [r["stage"] for r in rows] == ["tfe", "tfe", "tse", "tse", "tse"]  # switch after 10 of 20
    assert float(rows[0]["selected"]) == 1.0 and float(rows[-1]["selected"]) < 1.0


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = train_mod.step_losses

    def poisoned(*a, **k):
        loss, parts = real(*a, **k)
        calls["n"] += 1
        return (loss * float("nan"), parts) if calls["n"] == 3 else (loss, parts)

    monkeypatch.setattr(train_mod, "step_losses", poisoned)
    cfg = tiny_config(iters=4, val_every=2, batch=2)
    with pytest.raises(TrainingError, match="iteration 3 of 4") as exc:
        train(cfg, data=readers(), run_dir=tmp_path, progress=False)
    assert "last.pt" in str(exc.value)
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    assert ckpt["step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_bad_inputs_fail_before_training(tmp_path, monkeypatch):
    teacher5 = _teacher_ckpt(tmp_path, num_classes=5, name="t5.pt")
    runs = tmp_path / "runs"
    cfg = tiny_config("distill", teacher=str(teacher5), runs_root=str(runs))
    with pytest.raises(CheckpointError, match=r"t5.pt.*5 classes.*4"):
        train(cfg, data=readers(), progress=False)
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        train(tiny_config("distill", teacher=str(junk), runs_root=str(runs)), data=readers(), progress=False)
    assert not runs.exists()  # nothing was started
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="--batch 3.*2 processes"):
        train(tiny_config(batch=3, runs_root=str(runs)), data=readers(), progress=False)
    monkeypatch.delenv("WORLD_SIZE")
    with pytest.raises(Exception, match="nowhere"):
        train(make_config("teacher", "camvid", data=str(tmp_path / "nowhere"), runs_root=str(runs)), progress=False)


@pytest.mark.slow
def test_cli_end_to_end(tmp_path, capsys):
    """train-teacher (with a split + --resume), distill (default teacher), eval, difficulty; errors as one line."""
    import cv2
    from typer.testing import CliRunner

    from rdd_edge.cli import app, main

    runs = tmp_path / "runs"
    tiny = ["--iters", "2", "--batch", "2", "--crop", "48x72", "--eval-size", "48x72", "--train-images", "4",
            "--val-images", "2", "--val-every", "2", "--device", "cpu", "--runs", str(runs), "--head-channels", "8", "-q"]
    r = CliRunner()
    res = r.invoke(app, ["train-teacher", "--model", "r18", "--name", "t", "--stop-after", "1", *tiny])
    assert res.exit_code == 0, res.output
    assert torch.load(runs / "teacher-t" / "last.pt", weights_only=True)["step"] == 1
    res = r.invoke(app, ["train-teacher", "--resume", str(runs / "teacher-t"), "-q"])
    assert res.exit_code == 0, res.output
    assert "best mIoU" in res.output and (runs / "teacher-t" / "best.pt").is_file()
    assert torch.load(runs / "teacher-t" / "last.pt", weights_only=True)["step"] == 2

    res = r.invoke(app, ["distill", "--student", "mbv2", "--method", "kd", "--name", "s", "--set", "weight_decay=5e-4",
                         "--set", "hflip=false", *tiny])
    assert res.exit_code == 0, res.output
    best = torch.load(runs / "distill-s" / "best.pt", weights_only=True)
    assert best["config"]["weight_decay"] == 5e-4 and best["config"]["hflip"] is False
    assert best["config"]["teacher"].endswith("teacher-t/best.pt") and best["config"]["rdd"] is True

    res = r.invoke(app, ["eval", str(runs / "distill-s"), "--device", "cpu", "--flip", "--scales", "0.75,1"])
    assert res.exit_code == 0, res.output
    res = r.invoke(app, ["eval", str(runs / "distill-s"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert f"{100 * best['best_miou']:.2f}" in res.output  # same val scenes as in training -> same mIoU
    assert "Sky" in res.output and "images/s" in res.output

    res = r.invoke(app, ["difficulty", str(runs / "distill-s"), "--images", "2", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    sheets = sorted((runs / "distill-s" / "difficulty").glob("*.png"))
    assert len(sheets) == 2
    img = cv2.imread(str(sheets[0]))
    assert img is not None and img.shape[1] > 6 * 72  # six tiles side by side

    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00" * 10)
    with pytest.raises(SystemExit) as exc:
        main(["distill", "--teacher", str(junk), *tiny])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "junk.pt" in err and "Traceback" not in err


class _ConstModel(torch.nn.Module):
    """Predicts class ``k`` everywhere, at 1/8 resolution like the real models."""

    def __init__(self, k: int, c: int = 4):
        super().__init__()
        self.k, self.c = k, c

    def forward(self, x):
        out = torch.zeros(x.shape[0], self.c, x.shape[2] // 8, x.shape[3] // 8)
        out[:, self.k] = 5.0
        return {"out": out}


def test_evaluate_matches_direct_count_at_label_size():
    """Labels stay at their own size (64x96) while images are resized to the eval size (32x48)."""
    from rdd_edge.distill.data import eval_loader
    from rdd_edge.distill.evaluate import evaluate

    reader = Blobs(3, size=(64, 96))
    labels = np.stack([reader[i][1] for i in range(3)])
    for flip, scales in ((False, (1.0,)), (True, (0.75, 1.0))):
        m = evaluate(_ConstModel(1), eval_loader(reader, IMAGENET, (32, 48), batch=2), 4, flip=flip, scales=scales)
        present = [c for c in range(4) if (labels == c).any()]
        expected = (labels == 1).mean() / len(present)  # IoU of class 1 = its share; others 0
        assert m.miou == pytest.approx(expected) and m.pixel_acc == pytest.approx((labels == 1).mean())
        assert m.images_per_s > 0


def test_ctrl_c_saves_last_checkpoint(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = train_mod.step_losses

    def interrupted(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(train_mod, "step_losses", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(iters=6, val_every=5, batch=2), data=readers(), run_dir=tmp_path, progress=False)
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    assert ckpt["step"] == 2 and "optimizer" in ckpt and len(ckpt["rng"]) == 1


def test_heatmap_colours_easy_red_hard_blue():
    from rdd_edge.distill.difficulty import heatmap

    hm = heatmap(np.array([[0.0, 1.0]]))
    assert hm[0, 0, 2] > 100 and hm[0, 0, 0] < 50  # weight 0 (hard): blue
    assert hm[0, 1, 0] > 100 and hm[0, 1, 2] < 50  # weight 1 (easy): red


def test_student_alone_needs_no_teacher(tmp_path):
    """--method none --no-rdd trains the student by itself, even with no teacher run anywhere."""
    cfg = tiny_config("distill", method="none", rdd=False, iters=2, val_every=2, batch=2, runs_root=str(tmp_path / "runs"))
    summary = train(cfg, data=readers(), run_dir=tmp_path / "run", progress=False)
    assert summary["steps"] == 2 and summary["teacher"] is None
    # with KD the missing teacher is a clear error
    cfg = tiny_config("distill", method="kd", rdd=False, iters=2, batch=2, runs_root=str(tmp_path / "runs"))
    with pytest.raises(ConfigError, match="no teacher given"):
        train(cfg, data=readers(), run_dir=tmp_path / "run2", progress=False)


def test_progress_lines_fit_80_columns_and_show_the_state():
    from rich.console import Console

    from rdd_edge.distill.train import _progress, progress_info

    prog, task = _progress(True, 40000, 0, console=Console(width=80))
    prog.update(task, completed=12345, speed="3.21 it/s", info=progress_info([1.2345, 1.1, 0.1345, 0.123], "tse", 0.3123))
    out = Console(width=80, record=True)
    out.print(*prog.get_renderables())
    lines = out.export_text().splitlines()
    assert all(len(line) <= 80 for line in lines) and "…" not in "".join(lines)
    assert lines[0].startswith("train") and "12345/40000" in lines[0] and "3.21 it/s" in lines[0] and "ETA" in lines[0]
    assert lines[1].split() == ["loss", "1.234", "task", "1.10", "kd", "0.13", "tse", "12%", "mIoU", "31.2"]
    prog.update(task, description="val")
    out = Console(width=80, record=True)
    out.print(*prog.get_renderables())
    assert out.export_text().startswith("val")
    assert progress_info([0.5, 0.5, 0.0, 1.0], None, None) == "loss 0.500"  # teacher: no KD, no RDD


def _teacher_ckpt_wide(tmp_path: Path, head_channels: int = 16) -> Path:
    """A tiny teacher whose head is wider than the students' (8), as R101 (256) vs R18/MBV2 (128)."""
    from rdd_edge.models import create_model, save_checkpoint

    torch.manual_seed(2)
    t = create_model("r18", num_classes=4, aux=True, head_channels=head_channels)
    return save_checkpoint(tmp_path / "wide.pt", t, dataset=INFO, config={}, step=0, best_miou=None)


@pytest.mark.slow
def test_cwd_connector_trains_saves_and_resumes_with_the_student(tmp_path, monkeypatch):
    """--method cwd: the 1x1 connector (8 -> 16 channels) is in the optimiser, changes, is saved in the
    checkpoint and restored on --resume (straight 2 steps == 1 + 1, TFE then TSE); the RDD options reach RDDWeighting."""
    from rdd_edge.distill import losses, rdd
    from rdd_edge.distill import train as trainer

    made = {}
    real_bind, real_rdd = losses.CWDTerms.bind, rdd.RDDWeighting

    def bind(self, student, teacher):
        real_bind(self, student, teacher)
        made.setdefault("init", self.connector.weight.detach().clone())

    class SpyRDD(real_rdd):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made["rdd"] = self

    monkeypatch.setattr(losses.CWDTerms, "bind", bind)
    monkeypatch.setattr(trainer, "RDDWeighting", SpyRDD)  # the name the trainer imported
    teacher = _teacher_ckpt_wide(tmp_path)
    cfg = tiny_config("distill", model="mbv2", teacher=str(teacher), method="cwd", tfe_fraction=0.5, iters=2,
                      val_every=2, batch=2, rdd_min_kept=50, rdd_class_weights=[1.0, 2.0, 0.5, 1.5])
    train(cfg, data=readers(), run_dir=tmp_path / "straight", progress=False)
    assert made["rdd"].min_kept == 50 and made["rdd"].class_weights.tolist() == [1.0, 2.0, 0.5, 1.5]
    last = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    conn = last["kd_state"]["connector.weight"]
    assert conn.shape == (16, 8, 1, 1) and not torch.allclose(conn, made["init"])  # trained
    n_student = len(last["state_dict"]) - sum(1 for k in last["state_dict"] if "running_" in k or "num_batches" in k)
    assert len(last["optimizer"]["state"]) == n_student + 1  # momentum for every student parameter + the connector
    assert last["config"]["rdd_min_kept"] == 50 and last["config"]["method"] == "cwd"

    train(cfg, data=readers(), run_dir=tmp_path / "split", stop_after=1, progress=False)
    half = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    assert not torch.allclose(half["kd_state"]["connector.weight"], conn)
    train(config_from_dict(half["config"]), resume=tmp_path / "split", data=readers(), progress=False)
    resumed = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    _assert_same(last["state_dict"], resumed["state_dict"], atol=1e-6)
    _assert_same(last["kd_state"], resumed["kd_state"], atol=1e-6)


def test_rdd_options_are_one_line_errors(tmp_path, capsys):
    from rdd_edge.cli import main

    for args, msg in ((["--rdd-min-kept", "-1"], "--rdd-min-kept -1"), (["--rdd-class-weights", "heavy"], "heavy"),
                      (["--rdd-class-weights", "1,-2"], "positive")):
        with pytest.raises(SystemExit) as exc:
            main(["distill", *args, "--runs", str(tmp_path / "runs"), "--device", "cpu", "-q"])
        assert exc.value.code == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and msg in err and "Traceback" not in err and err.count("\n") == 1
    cfg = make_config("distill", rdd_min_kept=100000, rdd_class_weights="cityscapes")
    assert config_from_dict(cfg.as_dict()) == cfg and make_config("distill").rdd_min_kept == 0
    with pytest.raises(ConfigError, match="19 class weights.*11 classes"):  # synthetic has 11 classes
        train(make_config("distill", rdd_class_weights="cityscapes", method="none", rdd=True, tfe_fraction=0.0,
                          runs_root=str(tmp_path / "r"), device="cpu", teacher=str(_teacher_ckpt(tmp_path, 11))),
              progress=False)


@pytest.mark.slow
def test_ddp_averages_the_cwd_connector_like_the_student(tmp_path, monkeypatch):
    """2 gloo processes x 2 == 1 process x 4 for the student *and* the connector (DDP-wrapped by the trainer)."""
    import torch.multiprocessing as mp

    monkeypatch.setattr(torch.nn.Dropout, "forward", lambda self, x: x)  # as ddp_worker's no_dropout()
    teacher = _teacher_ckpt_wide(tmp_path)
    cfg = tiny_config("distill", model="mbv2", teacher=str(teacher), method="cwd", iters=2, val_every=2,
                      freeze_bn=True, scale_min=1.0, scale_max=1.0, lr=0.05, tfe_fraction=1.0)
    train(cfg, data=readers(), run_dir=tmp_path / "one", progress=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(ddp_worker, args=(2, port, str(tmp_path / "two"), cfg.as_dict()), nprocs=2, start_method="spawn")
    one = torch.load(tmp_path / "one" / "last.pt", weights_only=True)
    two = torch.load(tmp_path / "two" / "last.pt", weights_only=True)
    torch.manual_seed(cfg.seed)  # the trainer's initialisation
    init = train_mod.build_model(cfg, 4).state_dict()
    _assert_same_relative_to_update(one["state_dict"], two["state_dict"], init)
    _assert_same(one["kd_state"], two["kd_state"], atol=1e-4)  # the connector (1x1 conv): its updates are ~1e-2


# ------------------------------------------------------------------ NaN guard without a host sync per step
def _poison_step(monkeypatch, k: int, rank: int | None = None) -> None:
    """Make the loss of iteration ``k`` (1-based; step_losses runs once per step) NaN, on ``rank`` only if given."""
    calls = {"n": 0}
    real = train_mod.step_losses

    def poisoned(*a, **kw):
        loss, parts = real(*a, **kw)
        calls["n"] += 1
        hit = calls["n"] == k and (rank is None or train_mod.dist.rank() == rank)
        return (loss * float("nan"), parts) if hit else (loss, parts)

    monkeypatch.setattr(train_mod, "step_losses", poisoned)


@pytest.mark.parametrize("iters, val_every, log_every, k, saved, logged", [
    (10, 2, 5, 3, 2, []),  # k between log points: found by the check before the step-4 checkpoint
    (8, 4, 3, 5, 4, [3]),  # k between log points and after a checkpoint: found at the step-6 log point
])
def test_nan_guard_names_the_iteration_between_log_points(tmp_path, monkeypatch, iters, val_every, log_every, k, saved,
                                                          logged):
    _poison_step(monkeypatch, k)
    cfg = tiny_config(iters=iters, val_every=val_every, log_every=log_every, batch=2)
    with pytest.raises(TrainingError, match=rf"at iteration {k} of {iters} \(found at iteration {k + 1}\)") as exc:
        train(cfg, data=readers(), run_dir=tmp_path, progress=False)
    assert f"last.pt keeps iteration {saved}" in str(exc.value) and "\n" not in str(exc.value)
    for name in ("last.pt", "best.pt"):  # nothing saved after the last good iteration
        ckpt = torch.load(tmp_path / name, weights_only=True)
        assert ckpt["step"] == saved
        assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    rows = [int(r["step"]) for r in csv.DictReader(open(tmp_path / "train_log.csv"))]
    assert rows == logged  # no row averages in the NaN


def test_train_step_reads_nothing_back_from_the_device(monkeypatch):
    """A NaN step returns normally (no value is read on the host); the guard names it when asked."""
    from rdd_edge.models import create_model

    cfg = tiny_config("distill", method="kd", rdd=True, tfe_fraction=0.0)  # TSE: both models' confidences
    torch.manual_seed(0)
    teacher = create_model("r18", num_classes=4, aux=True, head_channels=8).eval().requires_grad_(False)
    ctx = train_mod.build_step_context(cfg, train_mod.build_model(cfg, 4), teacher)  # the trainer's own step
    ctx.guard = train_mod.NonFiniteGuard(start=10)
    images, labels = torch.randn(2, 3, 32, 48), torch.randint(0, 4, (2, 32, 48))
    poisoned = images.clone()
    poisoned[0, 0, 0, 0] = float("nan")

    def refuse(*a, **kw):
        raise AssertionError("train_step read a tensor value on the host")

    with monkeypatch.context() as m:
        for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
            m.setattr(torch.Tensor, name, refuse)
        for x in (images, poisoned, images):  # iterations 11, 12, 13
            train_mod.train_step(ctx, x, labels)
    with pytest.raises(train_mod.NonFiniteLoss, match="at iteration 12$") as exc:
        ctx.guard.check()
    assert exc.value.iteration == 12 and exc.value.value != exc.value.value  # NaN


def _ddp_nan_worker(rank: int, world: int, port: int, run_dir: str, cfg_dict: dict, out: str) -> None:
    """A gloo process whose rank 1 alone gets a NaN loss at iteration 3; writes how it stopped."""
    import os

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    from rdd_edge.distill import dist
    from rdd_edge.distill.config import config_from_dict

    calls = {"n": 0}
    real = train_mod.step_losses

    def poisoned(*a, **kw):
        loss, parts = real(*a, **kw)
        calls["n"] += 1
        return (loss * float("nan"), parts) if calls["n"] == 3 and rank == 1 else (loss, parts)

    train_mod.step_losses = poisoned
    try:
        train_mod.train(config_from_dict(cfg_dict), data=readers(), run_dir=run_dir, progress=False)
        msg = "finished"
    except TrainingError as exc:
        msg = str(exc)
    Path(out, f"rank{rank}.txt").write_text(msg)
    dist.cleanup()


@pytest.mark.slow
def test_ddp_processes_stop_together_when_one_loss_is_nan(tmp_path):
    """The all-reduced losses put the same finding on every process: both stop at the same check, naming iteration 3."""
    import torch.multiprocessing as mp

    cfg = tiny_config(iters=6, val_every=2, log_every=5, freeze_bn=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_ddp_nan_worker, args=(2, port, str(tmp_path / "run"), cfg.as_dict(), str(tmp_path)), nprocs=2,
                       start_method="spawn")
    msgs = [(tmp_path / f"rank{r}.txt").read_text() for r in range(2)]
    assert all("at iteration 3 of 6 (found at iteration 4)" in m for m in msgs), msgs
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["step"] == 2


# ------------------------------------------------------------------ data-bound display
def test_progress_says_when_training_waits_for_data():
    from rich.console import Console

    from rdd_edge.distill.train import _progress, progress_info

    assert progress_info([1.0, 1.0, 0.0, 1.0], None, None, 0.62).split()[-2:] == ["data-bound", "62%"]
    assert progress_info([1.0, 1.0, 0.0, 1.0], None, 0.25, 0.04).split()[-4:] == ["mIoU", "25.0", "data", "4%"]
    prog, task = _progress(True, 40000, 0, console=Console(width=80))
    prog.update(task, completed=12345, speed="3.21 it/s",
                info=progress_info([1.2345, 1.1, 0.1345, 0.123], "tse", 0.3123, 0.875))
    out = Console(width=80, record=True)
    out.print(*prog.get_renderables())
    second = out.export_text().splitlines()[1]
    assert len(second) <= 80 and second.split()[-4:] == ["mIoU", "31.2", "data-bound", "88%"]


def test_data_share_is_logged_from_the_wait_for_batches(tmp_path, monkeypatch):
    """A batch source that takes 0.3 s per batch (against 0.1 s of training) makes the log say 75%; the same
    batches at once, 0%. The trainer's clock is a fake one the source and the step advance: nothing is timed."""
    from types import SimpleNamespace

    base = readers()
    clock = [0.0]
    monkeypatch.setattr(train_mod, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    real_step = train_mod.train_step

    def step(*a, **k):
        clock[0] += 0.1
        return real_step(*a, **k)

    monkeypatch.setattr(train_mod, "train_step", step)

    def batches(delay):
        def source(cfg, start, rank, world):
            for images, labels in train_mod.train_loader(base.train, cfg, IMAGENET, start, rank, world, 0):
                clock[0] += delay
                yield images, labels
        return source

    shares = {}
    for delay in (0.3, 0.0):
        data = train_mod.TrainData(base.info, base.train, base.val, base.eval_size, batches=batches(delay))
        cfg = tiny_config(iters=4, val_every=4, log_every=2, batch=2)
        train(cfg, data=data, run_dir=tmp_path / str(delay), progress=False)
        rows = list(csv.DictReader(open(tmp_path / str(delay) / "train_log.csv")))
        shares[delay] = [float(r["data_share"]) for r in rows]
    assert shares[0.3] == pytest.approx([0.75, 0.75]), shares
    assert shares[0.0] == pytest.approx([0.0, 0.0], abs=1e-9), shares


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: host syncs only exist there")
@pytest.mark.parametrize("stage", [None, "tfe", "tse"])
def test_train_step_never_waits_for_the_gpu(stage):
    """CUDA's sync debug mode turns every host sync inside train_step into an error (after one warm-up step)."""
    from rdd_edge.models import create_model

    dev = torch.device("cuda")
    cfg = tiny_config("distill", method="kd", rdd=stage is not None, tfe_fraction=1.0 if stage == "tfe" else 0.0,
                      device="cuda")
    torch.manual_seed(0)
    teacher = create_model("r18", num_classes=4, aux=True, head_channels=8).to(dev).eval().requires_grad_(False)
    ctx = train_mod.build_step_context(cfg, train_mod.build_model(cfg, 4).to(dev), teacher)  # the trainer's own step
    images, labels = torch.randn(2, 3, 32, 48, device=dev), torch.randint(0, 4, (2, 32, 48), device=dev)
    train_mod.train_step(ctx, images, labels)  # warm-up: lazy initialisation, autotuning
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(2):
            train_mod.train_step(ctx, images, labels)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    ctx.guard.check()  # finite
