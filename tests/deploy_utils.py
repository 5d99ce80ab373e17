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
