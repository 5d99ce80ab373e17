"""A tiny DeepLabV3 student for the INT8 budget tests, registered as ``tiny_deeplab`` when imported.

Importing this module adds a model to the registry, so the tests import it only in subprocesses
(``python -c "import int8_tiny; ..."``), never in the pytest process. :func:`make_hostile_run`
trains it briefly on blocky scenes (colour encodes the class), makes it hostile to per-tensor INT8
with ``benchmarks.int8_budget.hostile_head`` (FP32 function unchanged) and writes a run folder
and a data folder whose val labels are the FP32 model's own predictions; with ``pair_factors`` also
a second run from the same trained weights, made hostile in two layers that only help together.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rdd_edge.data import dataset_info
from rdd_edge.data.base import write_image, write_label
from rdd_edge.models.heads import DeepLabHead
from rdd_edge.models.registry import register_model
from rdd_edge.normalize import IMAGENET

SIZE = (48, 96)
INFO = dataset_info("camvid")

default_cfgs = {"tiny_deeplab": dict(backbone="tiny", head="aspp", head_channels=16, aux_head=False, output_stride=8,
                                     input_multiple=8, dynamic_hw=True)}


class TinyDeepLab(nn.Module):
    """Three stride-2 conv-BN-ReLU and one more, then rdd-edge's own DeepLabV3 head (ASPP, 3x3 conv, classifier)."""

    def __init__(self, num_classes: int = 11, ch: int = 16) -> None:
        super().__init__()

        def cbr(i: int, o: int, s: int) -> list[nn.Module]:
            return [nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU()]

        self.backbone = nn.Sequential(*cbr(3, ch, 2), *cbr(ch, ch, 2), *cbr(ch, ch, 2), *cbr(ch, 24, 1))
        self.head = DeepLabHead(24, num_classes, ch, rates=(2, 3, 4))
        self.model_name, self.num_classes = "tiny_deeplab", num_classes
        self.model_kwargs: dict[str, Any] = {"num_classes": num_classes, "aux": False}

    def forward(self, x: torch.Tensor, features: bool = False) -> dict[str, torch.Tensor]:
        return {"out": self.head(self.backbone(x))}  # features: accepted like rdd-edge's models (KD without features)


@register_model
def tiny_deeplab(pretrained: Any = None, num_classes: int = 11, aux: bool = False, **kw: Any) -> TinyDeepLab:
    return TinyDeepLab(num_classes)


BLOCK, NOISE = 16, 20  # blocks on the stride-8 grid: a student trained for seconds is sure of most pixels


def scene(rng: np.random.Generator, h: int = SIZE[0], w: int = SIZE[1]) -> tuple[np.ndarray, np.ndarray]:
    lbl = np.kron(rng.integers(0, 11, (h // BLOCK, w // BLOCK)), np.ones((BLOCK, BLOCK), int))
    img = np.asarray(INFO.palette, np.int16)[lbl] + rng.integers(-NOISE, NOISE, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8), lbl.astype(np.uint8)


def normalise(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(IMAGENET.apply(np.stack(images).transpose(0, 3, 1, 2)))


def predict(model: nn.Module, images: list[np.ndarray]) -> tuple[torch.Tensor, np.ndarray]:
    with torch.no_grad():
        out = nn.functional.interpolate(model(normalise(images))["out"], size=SIZE, mode="bilinear", align_corners=False)
    return out, out.argmax(1).numpy().astype(np.uint8)


# Two cooperating layers (issue 28): at 1024x the quantized conv sees nothing at all. The small half of its
# input channels rounds to zero activations (the big half sets the per-tensor range) and the big half's weights,
# 1024x smaller than the rest of each output channel's, round to zero (per-channel weight scales): the conv
# outputs its bias alone. The head's 3x3 conv and the classifier then each collapse the output to one class
# whatever the other does, so neither gains anything alone in float (the TensorRT file, whose float islands
# are one Conv each); both together give FP32 back. 1024 x the largest activation stays far within float16.
PAIR_FACTORS = (1024.0, 1024.0)


def make_hostile_run(folder: str | Path, steps: int = 200, factors: tuple[float, float] = (64.0, 128.0), n_val: int = 8,
                     pair_factors: tuple[float, float] | None = None) -> dict:
    """Train, make hostile, write ``folder/runs/distill-hostile/best.pt`` and ``folder/data``; returns facts.
    With ``pair_factors``, also ``folder/runs/distill-hostile-pair/best.pt`` (facts under ``pair``)."""
    import copy

    from benchmarks.int8_budget import hostile_head
    from rdd_edge.models import save_checkpoint

    folder = Path(folder)
    torch.manual_seed(0)
    torch.set_num_threads(1)  # one thread: on a busy 2-core box two spin and take 5x longer
    rng = np.random.default_rng(0)
    train = [scene(rng) for _ in range(32)]
    val = [scene(rng)[0] for _ in range(n_val)]
    model = TinyDeepLab()
    x, y = normalise([t[0] for t in train]), torch.from_numpy(np.stack([t[1] for t in train]).astype(np.int64))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    model.train()
    for _ in range(steps):
        idx = torch.randperm(len(train))[:8]
        out = nn.functional.interpolate(model(x[idx])["out"], size=SIZE, mode="bilinear", align_corners=False)
        loss = nn.functional.cross_entropy(out, y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    ref, before = predict(model, val)
    trained = copy.deepcopy(model)
    layers = hostile_head(model, factors)
    got, after = predict(model, val)
    data = folder / "data"
    for i, (im, lab) in enumerate(train):
        write_image(data / "train" / "images" / f"f{i:03d}.png", im)
        write_label(data / "train" / "labels" / f"f{i:03d}.png", lab)
    for i, (im, lab) in enumerate(zip(val, after)):  # val labels: the FP32 model's own, so FP32 scores 100 mIoU
        write_image(data / "val" / "images" / f"f{i:03d}.png", im)
        write_label(data / "val" / "labels" / f"f{i:03d}.png", lab)
    run = folder / "runs" / "distill-hostile"
    save_checkpoint(run / "best.pt", model, dataset=INFO, config={"dataset": "camvid"}, normalization=IMAGENET.as_dict())
    facts = {"run": str(run), "data": str(data), "layers": layers, "loss": float(loss.detach()),
             "relative_logit_change": float((got - ref).abs().max() / ref.abs().max()),
             "labels_changed": float((before != after).mean())}
    if pair_factors is not None:
        pair = folder / "runs" / "distill-hostile-pair"
        facts["pair"] = {"run": str(pair), "layers": hostile_head(trained, pair_factors), "factors": list(pair_factors)}
        got, labels = predict(trained, val)
        facts["pair"].update(relative_logit_change=float((got - ref).abs().max() / ref.abs().max()),
                             labels_changed=float((labels != after).mean()))
        save_checkpoint(pair / "best.pt", trained, dataset=INFO, config={"dataset": "camvid"}, normalization=IMAGENET.as_dict())
    (folder / "facts.json").write_text(json.dumps(facts))
    return facts


def main(argv: list[str]) -> None:
    """``python -c "import int8_tiny; int8_tiny.main([...])"``: ``make FOLDER`` or any rdd-edge command line
    (with one torch thread, as the training: the tests share a 2-core box)."""
    torch.set_num_threads(1)
    if argv and argv[0] == "make":
        make_hostile_run(argv[1])
        return
    from rdd_edge.cli import main as cli

    try:
        cli(argv)
    except SystemExit as exc:  # the CLI always exits; a caller running several commands goes on after a success
        if exc.code not in (0, None):
            raise


if __name__ == "__main__":
    main(sys.argv[1:])
