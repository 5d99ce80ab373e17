"""Tiny models and export folders for the deploy/check/demo tests (torch allowed here, not in deploy/)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

CLASSES = ["sky", "road", "car", "person"]
PALETTE = [[70, 130, 180], [128, 64, 128], [0, 0, 142], [220, 20, 60]]
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def tiny_net(num_classes: int = 4, seed: int = 0):
    """A conv net that emits logits at input size: down 2x, conv, up (bilinear) -- like the students."""
    import torch
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, num_classes, 1))

        def forward(self, x):
            y = self.body(x)
            return nn.functional.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)

    torch.manual_seed(seed)
    return Tiny().eval()


def export_onnx(net, path: Path, size=(48, 64), output: str = "logits", embedded: bool = False) -> Path:
    """torch.onnx.export of ``net`` with the graph I/O names deploy expects."""
    import torch

    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            if embedded:
                x = (x.float() / 255.0 - mean) / std
            logits = self.net(x)
            if output == "labels":
                return logits.argmax(1)
            if output == "both":
                return logits, logits.argmax(1)
            return logits

    names = {"logits": ["logits"], "labels": ["labels"], "both": ["logits", "labels"]}[output]
    dtype = torch.uint8 if embedded else torch.float32
    x = torch.zeros(1, 3, *size, dtype=dtype)
    axes = {"images": {0: "batch"}, **{n: {0: "batch"} for n in names}}
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated but fast for tiny nets
        warnings.simplefilter("ignore")
        torch.onnx.export(Wrap().eval(), (x,), str(path), input_names=["images"], output_names=names,
                          dynamic_axes=axes, opset_version=17, dynamo=False)
    return path


def write_manifest(export_dir: Path, size=(48, 64), output: str = "logits", embedded: bool = False,
                   artifacts: dict | None = None, dataset: dict | None = None) -> Path:
    names = {"logits": ["logits"], "labels": ["labels"], "both": ["logits", "labels"]}[output]
    m = {
        "format": "rdd-edge-export", "version": 1, "model_name": "tiny", "num_classes": len(CLASSES),
        "classes": CLASSES, "palette": PALETTE, "mean": MEAN, "std": STD,
        "input": {"name": "images", "shape": ["batch", 3, *size], "dtype": "uint8" if embedded else "float32",
                  "layout": "NCHW", "embedded_preprocess": embedded},
        "outputs": [{"name": n} for n in names], "output": output, "opset": 17,
        "artifacts": artifacts or {"onnx": {"file": "model.onnx", "precision": "fp32"}},
    }
    if dataset is not None:
        m["dataset"] = dataset
    from rdd_edge.runs import sha256_file

    for entry in m["artifacts"].values():  # the checksums export writes (check refuses an artifact without one)
        f = export_dir / entry.get("file", "")
        if f.is_file() and "sha256" not in entry:
            entry["sha256"] = sha256_file(f)
    p = export_dir / "manifest.json"
    p.write_text(json.dumps(m, indent=2))
    return p


def torch_labels(net, image: np.ndarray, size=(48, 64)) -> np.ndarray:
    """Reference prediction computed with torch + OpenCV independently of deploy/."""
    import cv2
    import torch

    h, w = size
    x = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
    x = (x - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    with torch.no_grad():
        logits = net(torch.from_numpy(x.transpose(2, 0, 1)[None].copy()))
    lab = logits.argmax(1)[0].numpy().astype(np.uint8)
    return cv2.resize(lab, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)


def rand_image(h: int = 60, w: int = 90, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return img


def synthetic_export(folder: Path, size=(16, 24), val_images: int = 6) -> Path:
    """A torch-free export of a tiny 11-class network in the synthetic scenes' classes, with the manifest the
    export stage writes (data spec, checksums, scores, the files list): what bundle / check / install.sh read."""
    from rdd_edge.data import DataSpec
    from rdd_edge.data.registry import dataset_info
    from rdd_edge.export.fp16 import export_fp16
    from rdd_edge.export.int8 import export_int8
    from rdd_edge.export.manifest import add_artifact, new_manifest, save_manifest
    from rdd_edge.export.onnx_io import graph_io, load_export_onnx
    from rdd_edge.normalize import IMAGENET
    from rdd_edge.runs import sha256_file
    from trt_double import tiny_fp32_onnx

    folder.mkdir(parents=True, exist_ok=True)
    src = tiny_fp32_onnx(folder / "model.onnx", size, classes=11)
    export_fp16(src, folder / "model.fp16.onnx")
    items = [(f"rand{i}", (lambda i=i: np.random.default_rng(100 + i).integers(0, 256, (20, 30, 3), dtype=np.uint8)))
             for i in range(8)]
    export_int8(src, folder, items, size=size)
    info = dataset_info("synthetic").as_dict()
    data = DataSpec(name="synthetic", val_images=val_images, size=size)
    m = new_manifest("tiny", info, data, size, "both", False, False, 18, src, sha256_file(src), graph_io(load_export_onnx(src)),
                     IMAGENET)
    for key, file, prec in (("onnx", "model.onnx", "fp32"), ("fp16", "model.fp16.onnx", "fp16"),
                            ("int8-cpu", "model.int8-cpu.onnx", "int8"), ("int8", "model.int8.onnx", "int8")):
        add_artifact(m, key, folder / file, prec, "onnxruntime", checked_images=val_images)
    m["files"] = sorted(p.name for p in folder.iterdir() if p.is_file()) + ["manifest.json"]
    save_manifest(m, folder)
    return folder
