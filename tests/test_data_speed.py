"""benchmarks/data_speed.py: Cityscapes-layout scenes the cityscapes reader reads back as the scenes'
classes, and the measurements going through the trainer's own loader (both paths) and trainer."""

from __future__ import annotations

import json
import math

import numpy as np

import data_utils as du
import rdd_edge.distill.data
import rdd_edge.distill.train
from benchmarks import data_speed
from rdd_edge.data import cityscapes
from rdd_edge.data.synthetic import CLASSES, item_seed, render_scene


def test_cityscapes_layout_reads_back_as_the_scenes_classes(tmp_path):
    root = data_speed.write_cityscapes(tmp_path / "cs", 2, (48, 96), seed=3)
    reader = cityscapes.open_dataset(root, "train")
    assert len(reader) == 2
    to_train = np.full(256, 255, np.uint8)  # synthetic class -> Cityscapes trainId through the written labelIds
    for k, name in enumerate(CLASSES):
        to_train[k] = cityscapes.LABEL_TO_TRAIN[data_speed.SYNTH_TO_LABEL_ID[name]]
    for i in range(2):
        image, label = render_scene(item_seed(3, "train", i), (48, 96))
        got_image, got_label = reader[i]
        assert np.array_equal(got_image, image)
        assert np.array_equal(got_label, to_train[label])
        assert (label == 255).any() == (got_label == 255).any()


def test_the_benchmark_measures_the_trainers_loader_and_trainer(tmp_path, monkeypatch):
    calls = []
    real = rdd_edge.distill.data.train_loader

    def spy(*a, **kw):
        calls.append((a[6] if len(a) > 6 else kw.get("workers"), kw.get("device_augment")))
        return real(*a, **kw)

    monkeypatch.setattr(rdd_edge.distill.data, "train_loader", spy)  # the benchmark's loader runs
    monkeypatch.setattr(rdd_edge.distill.train, "train_loader", spy)  # its CPU trainings
    du.camvid_segnet(tmp_path / "camvid", n=2)
    out = tmp_path / "speed.json"
    assert data_speed.main(["--images", "2", "--size", "48x96", "--crop", "32x64", "--samples", "4", "--camvid",
                            str(tmp_path / "camvid"), "--camvid-samples", "4", "--batch", "2", "--workers", "0", "1",
                            "--split-images", "2", "--cpu-iters", "2", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert sorted(res["sets"]) == ["camvid", "cityscapes"] and "logical CPUs" in res["cpu"] and res["date"]
    for name, e in res["sets"].items():
        assert [(r["path"], r["workers"], r["images"]) for r in e["rates"]] == [
            (p, w, 4) for p in ("cpu", "gpu") for w in (0, 1)]
        assert {"decode", "RandomScale", "RandomCrop", "Normalize", "collate (cpu)", "collate (gpu)"} <= set(e["split_ms"])
        g = e["gpu"]
        assert g["images_per_s_needed"] == 16 / (g["step_ms"] / 1000)
        for p in g["paths"].values():
            assert p["workers_needed"] == math.ceil(g["images_per_s_needed"] / p["one_worker_images_per_s"])
    # the loader runs: the trainer's loader on both paths (4 per data set), then the CPU trainings (2)
    assert calls[:8] == [(w, aug) for _ in range(2) for aug in (False, True) for w in (0, 1)]
    assert len(calls) == 10
    assert [r["workers"] for r in res["cpu_training"]] == [0, 1]
    assert all(r["s_per_it"] > 0 and 0.0 <= r["data_share"] <= 1.0 for r in res["cpu_training"])
