"""Speed of the training data pipeline: images/s of the trainer's own loader, the cost of each
part per image, and how many loader workers a GPU needs.

Every figure comes from ``distill.data.train_loader`` (the loader ``distill.train.train``
builds, with its transforms and collate), on both of its paths:

- ``cpu``: the loader of a CPU run: decode, random scale 0.5-2.0, pad, crop, flip and normalise
  (``TrainPreset``) in the loader, float crops collated;
- ``gpu``: the loader of a CUDA run: decode and the augmentation draws only, whole uint8 images
  collated (``device_collate``); scale, crop, flip and normalise run on the GPU
  (``device_batch``), which this CPU-only benchmark does not time.

Data: Cityscapes-size scenes (synthetic street scenes rendered at 1024x2048 and written in the
Cityscapes layout into a temporary folder, read back by the cityscapes reader: PNG decode,
labelIds -> trainIds; crop 512x1024) and, with ``--camvid DIR``, the real CamVid (360x480,
crop 360x360). Files are read from the page cache (just written / read once before timing).

From the single-worker rate and a GPU's step time (``--step-ms`` at ``--gpu-batch`` images) it
prints the workers that GPU needs. Training itself (``distill.train.train``, as
``rdd-edge train-teacher`` runs it; s/it and the share of time spent waiting for data, from its
``train_log.csv``): ``--cpu-iters N`` trains R18 on the synthetic preset on this CPU with each
worker count (the figure behind ``--workers auto`` on a CPU); ``--gpu-iters N`` trains R18 on
the Cityscapes-size folder (crop 512x1024, batch 16) on CUDA with ``--workers auto`` and with
none.

    python -m benchmarks.data_speed --camvid ../shared/data/camvid --images 32 --cpu-iters 12 --json data_speed.json
    python -m benchmarks.data_speed --images 48 --gpu-iters 30 --json $OUT/data_speed.json   # a GPU machine
    python -m benchmarks.data_speed --images 4 --size 128x256 --crop 64x128 --samples 8   # smoke test
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from rdd_edge.distill import data as loaders
from rdd_edge.distill.config import make_config
from rdd_edge.data import cityscapes, open_split
from rdd_edge.data.base import write_image, write_label
from rdd_edge.data.synthetic import CLASSES as SYNTH_CLASSES
from rdd_edge.data.synthetic import item_seed, render_scene
from rdd_edge.normalize import DEFAULT as DEFAULT_NORMALIZATION
from rdd_edge.sizes import parse_hw

# synthetic (CamVid) class -> Cityscapes labelId, so the reader's trainIds are the scene's classes
SYNTH_TO_LABEL_ID = {"Sky": 23, "Building": 11, "Pole": 17, "Road": 7, "Pavement": 8, "Tree": 21, "SignSymbol": 20,
                     "Fence": 13, "Car": 26, "Pedestrian": 24, "Bicyclist": 33}
# H100, eager bf16, channels_last: DeepLabV3-R18 student step with the R101 teacher's forward and KD,
# batch 16 (the figure at 360x360; 512x1024 scaled by pixels)
STEP_MS = {"cityscapes": 150.0, "camvid": 36.0}


def label_id_lut() -> np.ndarray:
    lut = np.zeros(256, np.uint8)  # 255 (ignore) -> 0 (unlabeled)
    for k, name in enumerate(SYNTH_CLASSES):
        lut[k] = SYNTH_TO_LABEL_ID[name]
    return lut


def write_cityscapes(out: Path, n: int, size: tuple[int, int], seed: int = 0, n_val: int = 0) -> Path:
    """``n`` synthetic scenes of ``size`` in the Cityscapes layout (train split, one city; ``n_val``
    more in val) under ``out``."""
    lut = label_id_lut()
    for split, count in (("train", n), ("val", n_val)):
        for i in range(count):
            image, label = render_scene(item_seed(seed, split, i), size)
            stem = f"synth_000000_{i:06d}"
            write_image(out / "leftImg8bit" / split / "synth" / f"{stem}{cityscapes.IMG_SUFFIX}", image)
            write_label(out / "gtFine" / split / "synth" / f"{stem}{cityscapes.LBL_SUFFIX}", lut[label])
    return out


def _config(dataset: str, crop: tuple[int, int], batch: int, samples: int, workers: int):
    iters = max(1, math.ceil(samples / batch))
    return make_config("teacher", dataset, crop=crop, batch=batch, iters=iters, workers=workers)


def loader_rate(reader, info, dataset: str, crop, path: str, workers: int, samples: int, batch: int) -> dict:
    """images/s of ``train_loader`` over ``samples`` images (worker start-up included), first-batch latency."""
    cfg = _config(dataset, crop, batch, samples, workers)
    t0 = time.perf_counter()
    loader = loaders.train_loader(reader, cfg, DEFAULT_NORMALIZATION, 0, 0, 1, workers, device_augment=path == "gpu", pin_memory=False)
    first, n = None, 0
    for batch_ in loader:
        n += len(batch_[0])
        first = first or time.perf_counter() - t0
    total = time.perf_counter() - t0
    return {"images_per_s": n / total, "first_batch_s": first, "images": n}


def _ms(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, 1000 * (time.perf_counter() - t0)


def cost_split(reader, info, crop, batch: int, n: int) -> dict:
    """Mean ms per image of each part, in this process: decode, each TrainPreset transform, collate (both paths)."""
    from torch.utils.data import default_collate

    preset = loaders.TrainPreset(crop, DEFAULT_NORMALIZATION)
    draws = loaders.AugmentDraws(crop)
    parts: dict[str, list[float]] = {"decode": []}
    cpu_items, gpu_items = [], []
    for i in range(n):
        (image, label), ms = _ms(reader.__getitem__, i % len(reader))
        parts["decode"].append(ms)
        rng = np.random.default_rng([7, i])
        gpu_items.append(draws(image, label, np.random.default_rng([7, i])))
        for t in preset.transforms:
            (image, label), ms = _ms(t, image, label, rng)
            parts.setdefault(type(t).__name__, []).append(ms)
        cpu_items.append((image, label))
    for key, collate, items in (("collate (cpu)", default_collate, cpu_items),
                                ("collate (gpu)", loaders.device_collate, gpu_items)):
        for k in range(0, n - batch + 1, batch):
            _, ms = _ms(collate, items[k:k + batch])
            parts.setdefault(key, []).append(ms / batch)
    return {k: statistics.fmean(v) for k, v in parts.items() if v}


def workers_needed(images_per_s_needed: float, per_worker: float) -> int:
    return max(1, math.ceil(images_per_s_needed / per_worker))


def train_speed(cfg, run_dir: Path) -> dict:
    """Train ``cfg`` (``distill.train.train``): s/it, images/s and data share over steps 2..N, the workers used."""
    from rdd_edge.distill.train import train

    summary = train(cfg, run_dir=run_dir, progress=False)
    log = list(csv.DictReader(open(run_dir / "train_log.csv")))
    steady = log[1:] or log  # the first step includes start-up (model, workers, cuDNN autotuning)
    first, last = float(log[0]["time_s"]), float(log[-1]["time_s"])
    s_per_it = (last - first) / (len(log) - 1) if len(log) > 1 else first
    return {"workers": cfg.workers, "resolved_workers": summary["workers"], "s_per_it": s_per_it,
            "images_per_s": cfg.batch / s_per_it,
            "data_share": statistics.fmean(float(r["data_share"]) for r in steady)}


def cpu_training(iters: int, workers_list: list, root: Path) -> list[dict]:
    """R18 trained on the synthetic preset on this CPU with each worker count."""
    return [train_speed(make_config("teacher", "synthetic", model="r18", iters=iters, val_every=iters, log_every=1,
                                    workers=w, device="cpu", tensorboard=False, synthetic_val=4, runs_root=str(root)),
                        root / f"cpu-w{w}") for w in workers_list]


def gpu_training(iters: int, data: Path, root: Path) -> list[dict]:
    """R18 trained on the Cityscapes-size folder (its preset: crop 512x1024, batch 16) on CUDA, auto and no workers."""
    return [train_speed(make_config("teacher", "cityscapes", data=str(data), model="r18", iters=iters, val_every=iters,
                                    log_every=1, workers=w, device="cuda", tensorboard=False, runs_root=str(root),
                                    pretrained="none"),  # a speed measurement: no ImageNet file needed
                        root / f"gpu-w{w}") for w in ("auto", 0)]


def measure(args) -> dict:
    from rdd_edge.cpuinfo import detect

    result: dict = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cpu": detect().line(),
                    "cpus": loaders.available_cpus(), "load_before": os.getloadavg()[0], "batch": args.batch,
                    "workers": args.workers, "sets": {}}
    with tempfile.TemporaryDirectory(prefix="data_speed_") as tmp:
        t0 = time.perf_counter()
        root = write_cityscapes(Path(tmp) / "cityscapes", args.images, args.size, n_val=2 if args.gpu_iters else 0)
        result["write_s"] = time.perf_counter() - t0
        sets = [("cityscapes", root, args.crop, args.step_ms, args.samples)]
        if args.camvid:
            sets.append(("camvid", Path(args.camvid), (360, 360), args.camvid_step_ms, args.camvid_samples))
        for name, folder, crop, step_ms, samples in sets:
            cfg = make_config("teacher", name, data=str(folder))
            reader = open_split(cfg.data_spec(), "train")
            info = reader.info
            for i in range(min(len(reader), samples)):  # warm the page cache
                reader[i]
            entry: dict = {"images": len(reader), "size": list(reader[0][1].shape), "crop": list(crop), "samples": samples,
                           "rates": []}
            entry["split_ms"] = cost_split(reader, info, crop, args.batch, min(args.split_images, len(reader)))
            for path in ("cpu", "gpu"):
                for w in args.workers:
                    r = loader_rate(reader, info, name, crop, path, w, samples, args.batch)
                    entry["rates"].append({"path": path, "workers": w, **r})
                    print(f"{name:10s} {path} workers={w}: {r['images_per_s']:6.1f} images/s", flush=True)
            need = args.gpu_batch / (step_ms / 1000)
            split = entry["split_ms"]
            one = {r["path"]: r["images_per_s"] for r in entry["rates"] if r["workers"] == 1}
            per_image = {"cpu": sum(v for k, v in split.items() if k != "collate (gpu)"),
                         "gpu": split["decode"] + split["collate (gpu)"]}
            entry["gpu"] = {"step_ms": step_ms, "batch": args.gpu_batch, "images_per_s_needed": need, "paths": {
                p: {"per_image_ms": per_image[p], "one_worker_images_per_s": one.get(p),
                    "workers_needed": workers_needed(need, one.get(p) or 1000 / per_image[p])} for p in ("cpu", "gpu")}}
            result["sets"][name] = entry
        if args.cpu_iters:
            result["cpu_training"] = cpu_training(args.cpu_iters, args.workers, Path(tmp) / "runs")
        if args.gpu_iters:
            import torch

            result["gpu"] = torch.cuda.get_device_name()
            result["gpu_training"] = gpu_training(args.gpu_iters, root, Path(tmp) / "runs")
    result["load_after"] = os.getloadavg()[0]
    return result


def markdown(res: dict) -> str:
    lines = [f"Run {res['date']}; CPU: {res['cpu']} ({res['cpus']} usable); load {res['load_before']:.1f} before, "
             f"{res['load_after']:.1f} after; loader batch {res['batch']}.", "",
             "| data | size -> crop | path | " + " | ".join(f"{w} workers" for w in res["workers"]) + " |",
             "|---|---|---|" + "---|" * len(res["workers"])]
    for name, e in res["sets"].items():
        for path in ("cpu", "gpu"):
            cells = [f"{r['images_per_s']:.1f}" for r in e["rates"] if r["path"] == path]
            lines.append(f"| {name} | {e['size'][0]}x{e['size'][1]} -> {e['crop'][0]}x{e['crop'][1]} | {path} | "
                         + " | ".join(cells) + " |")
    lines += ["", "Images/s of `train_loader` over " + ", ".join(f"{e['samples']} {n}" for n, e in res["sets"].items())
              + " images per run (worker start-up included). Cost per image in one process (ms):", ""]
    keys = list(next(iter(res["sets"].values()))["split_ms"])
    lines += ["| data | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for name, e in res["sets"].items():
        lines.append(f"| {name} | " + " | ".join(f"{e['split_ms'].get(k, float('nan')):.1f}" for k in keys) + " |")
    lines += ["", "| data | GPU step | images/s needed | path | ms/image (one process) | 1 worker images/s | workers needed |",
              "|---|---|---|---|---|---|---|"]
    for name, e in res["sets"].items():
        g = e["gpu"]
        for path, p in g["paths"].items():
            one = "-" if p["one_worker_images_per_s"] is None else f"{p['one_worker_images_per_s']:.1f}"
            lines.append(f"| {name} | {g['step_ms']:.0f} ms x {g['batch']} | {g['images_per_s_needed']:.0f} | {path} | "
                         f"{p['per_image_ms']:.1f} | {one} | {p['workers_needed']} |")
    for key, title in (("cpu_training", "CPU training (R18, synthetic preset)"),
                       ("gpu_training", f"{res.get('gpu')} training (R18, Cityscapes preset)")):
        if res.get(key):
            lines += ["", f"| {title} | s/it | images/s | data share |", "|---|---|---|---|"]
            for r in res[key]:
                lines.append(f"| --workers {r['workers']} ({r['resolved_workers']}) | {r['s_per_it']:.3f} | "
                             f"{r['images_per_s']:.2f} | {r['data_share']:.1%} |")
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=32, help="synthetic Cityscapes-size scenes written (temporary folder)")
    p.add_argument("--size", default="1024x2048", help="HxW of the synthetic scenes (Cityscapes: 1024x2048)")
    p.add_argument("--crop", default="512x1024", help="training crop of the synthetic scenes (Cityscapes preset)")
    p.add_argument("--camvid", default=None, help="CamVid folder (SegNet or compact layout) to measure too")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="loader worker counts to measure")
    p.add_argument("--samples", type=int, default=64, help="images per loader run (Cityscapes size)")
    p.add_argument("--camvid-samples", type=int, default=256, help="images per loader run (CamVid: 7x smaller images)")
    p.add_argument("--batch", type=int, default=4, help="batch of the measured loaders")
    p.add_argument("--split-images", type=int, default=8, help="images of the per-image cost split")
    p.add_argument("--step-ms", type=float, default=STEP_MS["cityscapes"], help="GPU step time at 512x1024 (ms)")
    p.add_argument("--camvid-step-ms", type=float, default=STEP_MS["camvid"], help="GPU step time at 360x360 (ms)")
    p.add_argument("--gpu-batch", type=int, default=16, help="images per GPU step (per process)")
    p.add_argument("--cpu-iters", type=int, default=0, help="also train R18 on this CPU for N iterations per worker count")
    p.add_argument("--gpu-iters", type=int, default=0, help="also train R18 on CUDA for N iterations (workers auto and 0)")
    p.add_argument("--json", default=None, help="write the figures to this JSON file")
    p.add_argument("--markdown", default=None, help="write the tables to this Markdown file")
    args = p.parse_args(argv)
    args.size, args.crop = parse_hw(args.size, "--size"), parse_hw(args.crop, "--crop")
    if args.images < 1 or args.samples < 1 or args.batch < 1 or min(args.workers) < 0:
        p.error("--images, --samples and --batch must be >= 1, --workers >= 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    res = measure(args)
    text = markdown(res)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
