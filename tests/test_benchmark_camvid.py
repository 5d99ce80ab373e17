"""benchmarks/camvid*.py: the plan and its budget (camvid_plan), results aggregation (camvid_report),
the on-device augmentation (camvid_data) and the options of the main script (camvid).

The protocol's pieces are checked against direct computations; one tiny run goes through the
main script's ``run_one`` to show the trainer takes its batches from ``TrainData.batches``.
"""

from __future__ import annotations

import csv
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import data_utils as du
from benchmarks import camvid
from benchmarks import camvid_data as camdata
from benchmarks import camvid_plan as planning
from benchmarks import camvid_report as report
from rdd_edge.errors import ConfigError
from rdd_edge.normalize import Normalization


# ---------------------------------------------------------------- plan + budget
def test_main_plan_is_teacher_plus_three_students_three_ways_two_seeds():
    plan = planning.build_plan(planning.STUDENTS, [0, 1], "main", 100, 200)
    assert plan[0].way == "teacher" and plan[0].model == "deeplabv3_r101" and plan[0].iters == 200
    students = plan[1:]
    assert len(students) == 18 and len({p.id for p in plan}) == 19
    assert {(p.model, p.way, p.seed) for p in students} == {
        (m, w, s) for m in planning.STUDENTS for w in ("alone", "kd", "kd+rdd") for s in (0, 1)}
    alone = next(p for p in students if p.way == "alone")
    rdd = next(p for p in students if p.way == "kd+rdd")
    assert (alone.method, alone.rdd) == ("none", False) and (rdd.method, rdd.rdd) == ("kd", True)
    assert len(planning.build_plan(planning.STUDENTS, [0, 1], "main", 100, 200, train_teacher=False)) == 18


def test_ablation_plan_reuses_the_default_rdd_run():
    abl = planning.build_plan(planning.STUDENTS, [3, 4], "ablations", 100, 200, train_teacher=False)
    assert all(p.model == "deeplabv3_r18" and p.seed == 3 and p.way == "kd+rdd" for p in abl)
    got = {(p.rdd_mode, p.threshold, p.tfe) for p in abl}
    assert got == {("xor", 0.7, 0.1), ("or", 0.7, 0.1), ("and", 0.7, 0.1), ("xor", 0.7, 0.0),
                   ("xor", 0.6, 0.1), ("xor", 0.8, 0.1)}
    both = planning.build_plan(planning.STUDENTS, [0, 1], "all", 100, 200)
    assert len(both) == 19 + 5  # the default xor / 0.7 / 0.1 run is the main row's, not run twice
    with pytest.raises(ConfigError, match="--only"):
        planning.build_plan(planning.STUDENTS, [0], "everything", 1, 1)


def test_step_times_scale_with_pixels_from_the_measured_h100_steps():
    spec = lambda model, way: planning.RunSpec("x", "main", model, way, 0, 1000)  # noqa: E731
    assert planning.step_ms(spec("deeplabv3_r101", "teacher"), (360, 360), 16) == pytest.approx(69.0)
    assert planning.step_ms(spec("deeplabv3_r18", "kd"), (360, 360), 16) == pytest.approx(36.0)
    assert planning.step_ms(spec("deeplabv3_mbv2", "kd"), (180, 360), 16) == pytest.approx(34.0)
    assert planning.step_ms(spec("deeplabv3_r18", "kd+rdd"), (360, 360), 8) == pytest.approx(36.0 * 1.06 / 2)
    assert planning.step_ms(spec("deeplabv3_r18", "alone"), (360, 360), 16) == pytest.approx(36.0 - 23.0)
    s = spec("deeplabv3_r18", "kd")
    assert planning.estimate_s(s, (360, 360), 16, 4) == pytest.approx(1000 * 0.036 + 4 * 2.0 + 15.0)


def test_default_main_rows_fit_about_twenty_minutes():
    d = planning.DEFAULTS
    plan = planning.build_plan(planning.STUDENTS, list(d["seeds"]), "main", d["iters"], d["teacher_iters"])
    rows = planning.plan_table(plan, d["crop"], d["batch"], d["val_points"])
    total = sum(planning.estimate_s(p, d["crop"], d["batch"], d["val_points"]) for p in plan) / 60
    assert rows[-1]["cum_min"] == pytest.approx(total)
    assert 15.0 <= total <= 21.0
    assert max(r["loader_img_s"] for r in rows if r["way"] != "alone") > 300  # why the data sits on the GPU


def test_val_every_gives_the_requested_points():
    assert planning.val_every(1200, 5) == 240
    assert planning.val_every(7, 5) == 2 and planning.val_every(3, 10) == 1


def test_parse_args_scale_paper_and_errors():
    a = camvid.parse_args(["--scale", "paper", "--students", "r18,psp18", "--seeds", "0,1,2"])
    assert (a.iters, a.teacher_iters, tuple(a.crop), a.batch) == (40000, 40000, (360, 360), 16)
    assert a.students == ["deeplabv3_r18", "pspnet_r18"] and a.seeds == [0, 1, 2]
    b = camvid.parse_args(["--scale", "2", "--crop", "64x96"])
    assert (b.iters, b.teacher_iters, tuple(b.crop)) == (2400, 8000, (64, 96))
    assert camvid.parse_args(["--scale", "1000"]).iters == 40000  # capped at the paper's schedule
    with pytest.raises(ConfigError, match="--crop"):
        camvid.parse_args(["--crop", "big"])
    with pytest.raises(ConfigError, match="--seeds"):
        camvid.parse_args(["--seeds", "a,b"])
    with pytest.raises(ConfigError, match="--scale"):
        camvid.parse_args(["--scale", "fast"])


def test_run_config_maps_the_three_ways_to_the_trainer(tmp_path):
    args = camvid.parse_args(["--iters", "10", "--teacher-iters", "20", "--crop", "64", "--batch", "2", "--no-gpu-data"])
    alone, kd, abl = (planning.RunSpec("a", "main", "deeplabv3_r18", "alone", 1, 10),
                      planning.RunSpec("b", "main", "deeplabv3_r18", "kd", 1, 10),
                      planning.RunSpec("c", "ablation", "deeplabv3_r18", "kd+rdd", 1, 10, "and", 0.6, 0.0))
    c = planning.run_config(alone, args, "t.pt", tmp_path)
    assert (c.mode, c.model, c.method, c.rdd, c.seed, c.crop) == ("teacher", "deeplabv3_r18", "none", False, 1, (64, 64))
    c = planning.run_config(kd, args, "t.pt", tmp_path)
    assert (c.mode, c.method, c.rdd, c.teacher) == ("distill", "kd", False, "t.pt")
    c = planning.run_config(abl, args, "t.pt", tmp_path)
    assert (c.method, c.rdd, c.rdd_mode, c.rdd_threshold, c.tfe_fraction) == ("kd", True, "and", 0.6, 0.0)


# ---------------------------------------------------------------- results
def _rec(model, way, seed, best, final, group="main", **kw):
    spec = planning.RunSpec(f"{model}-{way}-s{seed}", group, model, way, seed, 10, **kw)
    rec = dict(vars(spec))
    rec.update(method=spec.method, rdd=spec.rdd, steps=10, best_miou=best, final_miou=final, wall_s=60.0 + seed,
               images_per_s=400.0 + seed, log_dir="/nonexistent")
    return rec


def test_mean_spread_against_numpy():
    v = [0.41, 0.45, 0.47]
    s = report.mean_spread(v)
    assert s["mean"] == pytest.approx(np.mean(v)) and s["std"] == pytest.approx(np.std(v, ddof=1))
    assert (s["min"], s["max"], s["n"]) == (0.41, 0.47, 3)
    assert report.mean_spread([0.5])["std"] == 0.0
    assert report.mean_spread([float("nan"), None])["n"] == 0


def test_aggregate_gains_and_markdown():
    recs = [_rec("deeplabv3_r18", "alone", 0, 0.40, 0.39), _rec("deeplabv3_r18", "alone", 1, 0.42, 0.41),
            _rec("deeplabv3_r18", "kd", 0, 0.43, 0.42), _rec("deeplabv3_r18", "kd", 1, 0.45, 0.44),
            _rec("deeplabv3_r18", "kd+rdd", 0, 0.44, 0.43), _rec("deeplabv3_r18", "kd+rdd", 1, 0.46, 0.46),
            _rec("deeplabv3_r18", "kd+rdd", 0, 0.30, 0.30, group="ablation", rdd_mode="and", label="mode and")]
    rows = report.aggregate(recs)
    assert [(r["way"], r["seeds"]) for r in rows] == [("alone", [0, 1]), ("kd", [0, 1]), ("kd+rdd", [0, 1])]
    rdd = rows[2]
    assert rdd["best_miou"]["mean"] == pytest.approx(0.45)
    assert rdd["best_miou"]["std"] == pytest.approx(np.std([0.44, 0.46], ddof=1))
    assert rdd["final_miou"]["mean"] == pytest.approx(0.445)
    assert rdd["wall_s"]["mean"] == pytest.approx(60.5)
    (g,) = report.gains(rows)
    assert g["kd_vs_alone"] == pytest.approx(3.0) and g["rdd_vs_alone"] == pytest.approx(4.0)
    assert g["rdd_vs_kd"] == pytest.approx(1.0) and g["order_ok"] is True and g["gain_ok"] is True
    md = report.results_markdown(recs, {"date": "today", "device": "H100", "iters": 10})
    assert "| deeplabv3_r18 | kd+rdd | 2 | 45.00 ± 1.41 | 44.50 ± 2.12 |" in md
    assert "| deeplabv3_r18 | +3.00 | +4.00 | +1.00 | yes | yes |" in md
    assert "| mode and | and | 0.7 | 0.1 | 0 | 30.00 | 30.00 |" in md
    assert "from scratch" in md and "68.55" in md and "66.92" in md


def test_gains_flag_a_missed_target():
    recs = [_rec("deeplabv3_mbv2", "alone", 0, 0.40, 0.40), _rec("deeplabv3_mbv2", "kd", 0, 0.41, 0.41),
            _rec("deeplabv3_mbv2", "kd+rdd", 0, 0.405, 0.40)]
    (g,) = report.gains(report.aggregate(recs))
    assert g["order_ok"] is False and g["gain_ok"] is False and g["rdd_vs_alone"] == pytest.approx(0.5)


def test_curves_png_from_the_run_logs(tmp_path):
    recs = []
    for way, level in (("alone", 0.3), ("kd+rdd", 0.4)):
        d = tmp_path / way
        d.mkdir()
        with open(d / "val_log.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["step", "miou"])
            w.writerows([[10, level / 2], [20, level]])
        with open(d / "train_log.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["step", "loss", "it_per_s"])
            w.writerows([[5, 2.0, 10.0], [10, 1.5, 12.0], [15, 1.2, 30.0]])
        r = _rec("deeplabv3_r18", way, 0, level, level)
        r["log_dir"] = str(d)
        recs.append(r)
    assert report.read_log(tmp_path / "alone" / "val_log.csv", "step", "miou") == ([10.0, 20.0], [0.15, 0.3])
    assert report.images_per_s(tmp_path / "alone" / "train_log.csv", 4) == pytest.approx(48.0)
    path = report.plot_curves(recs, tmp_path, "main")
    assert path.name == "curves_main.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.plot_curves(recs, tmp_path, "ablation") is None  # no ablation runs: no figure


# ---------------------------------------------------------------- on-device augmentation (CPU tensors here)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
NORM = Normalization("test", mean=MEAN, std=STD)
# gpu_augment reads pixel centres with grid_sample through float32 coordinates: (2x + 1) / W - 1 and grid_sample's
# unnormalisation of it round to ~2 ulps at W <= 64 px, at most 64 * 2**-22 = 1.5e-5 px, so a neighbour up to
# 1 / 0.224 = 4.5 away (normalised units) leaks in by up to 6.8e-5. Seen 4.3e-6 with torch's AVX-512, AVX2 and
# scalar kernels; another compiler's rounding (FMA contraction on aarch64) may differ, within the bound. A crop off
# by one pixel is off by ~1.
GRID_ATOL = 64 * 2**-22 / min(STD)


def _set(n=2, h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    images = torch.from_numpy(rng.integers(0, 256, (n, 3, h, w), dtype=np.uint8))
    labels = torch.from_numpy(rng.integers(0, 11, (n, h, w), dtype=np.uint8))
    sizes = torch.tensor([[h, w]] * n)
    return images, labels, sizes


def _norm(img_u8: torch.Tensor) -> torch.Tensor:
    m, s = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    return (img_u8.float() / 255 - m) / s


def test_scale_one_is_an_exact_crop():
    images, labels, sizes = _set()
    x, y = camdata.gpu_augment(images, labels, sizes, [1, 0], [1.0, 1.0], [(5, 7), (0, 0)], [False, False], (32, 40), NORM)
    assert x.shape == (2, 3, 32, 40) and x.dtype == torch.float32 and y.shape == (2, 32, 40) and y.dtype == torch.int64
    torch.testing.assert_close(x[0], _norm(images[1, :, 5:37, 7:47]), atol=GRID_ATOL, rtol=0)
    assert torch.equal(y[0], labels[1, 5:37, 7:47].long())
    assert torch.equal(y[1], labels[0, :32, :40].long())


def test_scale_two_labels_are_nearest():
    images, labels, sizes = _set()
    _, y = camdata.gpu_augment(images, labels, sizes, [0], [2.0], [(10, 20)], [False], (32, 40), NORM)
    up = labels[0].repeat_interleave(2, 0).repeat_interleave(2, 1)
    assert torch.equal(y[0], up[10:42, 20:60].long())


def test_small_scale_pads_labels_255_and_images_with_the_mean():
    images, labels, sizes = _set()
    x, y = camdata.gpu_augment(images, labels, sizes, [0], [0.5], [(0, 0)], [False], (40, 40), NORM)
    # 48x64 at 0.5 -> 24x32, padded bottom/right to 40x40
    assert (y[0, 24:] == 255).all() and (y[0, :, 32:] == 255).all()
    assert (y[0, :24, :32] != 255).all() and set(y[0, :24, :32].unique().tolist()) <= set(range(11))
    assert (x[0, :, 24:] == 0).all() and (x[0, :, :, 32:] == 0).all()
    assert x[0, :, :24, :32].abs().sum() > 0


def test_flip_mirrors_image_and_label_together():
    images, labels, sizes = _set(seed=3)
    args = ([0, 1], [1.37, 0.8], [(6, 3), (0, 2)])
    x0, y0 = camdata.gpu_augment(images, labels, sizes, *args, [False, False], (36, 44), NORM)
    x1, y1 = camdata.gpu_augment(images, labels, sizes, *args, [True, True], (36, 44), NORM)
    torch.testing.assert_close(x1, x0.flip(-1), atol=GRID_ATOL, rtol=0)
    assert torch.equal(y1, y0.flip(-1))
    assert not torch.equal(y1, y0)


def test_images_smaller_than_the_store_never_read_its_padding():
    images, labels, sizes = _set(n=2, h=48, w=64)
    images[1, :, 30:, :], images[1, :, :, 40:] = 255, 255
    labels[1, 30:, :], labels[1, :, 40:] = 7, 7
    sizes[1] = torch.tensor([30, 40])  # image 1 is really 30x40
    x, y = camdata.gpu_augment(images, labels, sizes, [1], [1.0], [(0, 0)], [False], (32, 48), NORM)
    assert (y[0, 30:] == 255).all() and (y[0, :, 40:] == 255).all()
    assert torch.equal(y[0, :30, :40], labels[1, :30, :40].long())
    torch.testing.assert_close(x[0, :, :30, :40], _norm(images[1, :, :30, :40]), atol=GRID_ATOL, rtol=0)


class _Reader:
    def __init__(self, n=5, h=48, w=64):
        from rdd_edge.data import dataset_info

        rng = np.random.default_rng(1)
        self.items = [(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), rng.integers(0, 11, (h, w), dtype=np.uint8))
                      for _ in range(n)]
        self.info = dataset_info("camvid")

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_device_train_set_feeds_the_trainer_hook_deterministically():
    ds = camdata.DeviceTrainSet(_Reader(), "cpu")
    assert ds.nbytes == 5 * 48 * 64 * 4
    cfg = SimpleNamespace(batch=3, iters=4, seed=2, crop=(32, 40), scale_min=0.5, scale_max=2.0, hflip=True, normalization=None)
    full = list(ds.batches(cfg, 0, 0, 1))
    assert len(full) == 4 and full[0][0].shape == (3, 3, 32, 40) and full[0][1].shape == (3, 32, 40)
    again = list(ds.batches(cfg, 0, 0, 1))
    assert all(torch.equal(a[1], b[1]) and torch.equal(a[0], b[0]) for a, b in zip(full, again))
    tail = list(ds.batches(cfg, 2, 0, 1))  # resuming at step 2 continues the same stream
    assert len(tail) == 2 and all(torch.equal(a[1], b[1]) for a, b in zip(full[2:], tail))
    labels = torch.cat([b[1] for b in full])
    assert ((labels < 11) | (labels == 255)).all() and math.isfinite(float(full[0][0].abs().max()))


def test_run_one_trains_from_the_device_set_through_train_data(tmp_path, monkeypatch):
    du.camvid_segnet(tmp_path / "camvid", n=2)
    args = camvid.parse_args(["--data", str(tmp_path / "camvid"), "--out", str(tmp_path / "out"), "--device", "cpu",
                              "--gpu-data", "--students", "mbv2", "--iters", "2", "--crop", "16x24", "--batch", "2",
                              "--limit", "1", "--val-points", "1"])
    train_data = camdata.open_camvid(args.data, "cpu", gpu_data=True, limit=1)
    assert isinstance(train_data.train, camdata.DeviceTrainSet) and train_data.batches == train_data.train.batches
    assert (len(train_data.train), len(train_data.val), train_data.eval_size) == (1, 1, (360, 480))
    drawn = []
    source = train_data.batches

    def counted(cfg, start_step, rank, world):
        for images, labels in source(cfg, start_step, rank, world):
            drawn.append((start_step, tuple(images.shape), tuple(labels.shape)))
            yield images, labels

    train_data.batches = counted
    spec = planning.RunSpec("mbv2-alone-s0", "main", "deeplabv3_mbv2", "alone", 0, 2)
    rec = camvid.run_one(spec, args, train_data, teacher=None)
    assert drawn == [(0, (2, 3, 16, 24), (2, 16, 24))] * 2  # every step's batch came from the device set
    assert rec["steps"] == 2 and rec["way"] == "alone" and 0.0 <= rec["best_miou"] <= 1.0
    saved = report.read_log(tmp_path / "out" / "logs" / spec.id / "val_log.csv", "step", "miou")
    assert saved[0] == [2.0] and (tmp_path / "out" / "logs" / spec.id / "summary.json").is_file()


def test_final_weights_are_scored_on_test_when_there_is_one(tmp_path):
    """The paper's CamVid numbers are test numbers: the benchmark scores final weights on test when the folder
    has it, and says so (val only) when it has not."""
    du.camvid_segnet(tmp_path / "with", splits=("train", "val", "test"), n=1)
    du.camvid_segnet(tmp_path / "without", n=1)
    assert camvid.final_eval(camvid.parse_args(["--data", str(tmp_path / "with")])) == (tmp_path / "with", "test")
    assert camvid.final_eval(camvid.parse_args(["--data", str(tmp_path / "without")])) is None
    assert camvid.final_eval(camvid.parse_args(["--data", str(tmp_path / "with"), "--eval-data",
                                                str(tmp_path / "without")])) == (tmp_path / "without", "val")
    recs = [_rec("deeplabv3_r18", "kd+rdd", s, 0.45, 0.44) for s in (0, 1)]
    for r, t in zip(recs, (0.40, 0.42)):
        r["eval_data"] = {"test": t}
    md = report.results_markdown(recs, {"eval_data": "camvid (test)"})
    assert "| best val mIoU | final val mIoU | final test mIoU |" in md and "| 41.00 ± 1.41 |" in md
    assert "final weights scored on: camvid (test)" in md and "The paper's CamVid numbers: test mIoU" in md
    md = report.results_markdown([_rec("deeplabv3_r18", "kd", 0, 0.4, 0.4)], {"note": "camvid has no test split: val only"})
    assert "final test mIoU" not in md and "- camvid has no test split: val only" in md
