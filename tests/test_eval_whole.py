"""Whole-image evaluation (VOC, ADE20K): each image at its own size, padded to the stride, logits cropped back.

The paper and its released code (CIRKD eval.py: VOCDataValSet / ADEDataValSet, batch 1, no resize)
evaluate these data sets on whole images; squashing them to 512x512 changed the protocol.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rdd_edge.distill.data import eval_loader
from rdd_edge.normalize import IMAGENET
from rdd_edge.distill.evaluate import evaluate, predict_logits
from rdd_edge.data import dataset_info
from rdd_edge.data.base import DatasetInfo

CLASSES = ("a", "b", "c")
WHOLE = DatasetInfo("whole", CLASSES, ((255, 0, 0), (0, 255, 0), (0, 0, 255)), eval_size=(32, 32), crop_size=(32, 32),
                    eval_whole=True)


class Reader:
    """Images of different, non-square sizes; label = colour index (class k painted in pure colour k)."""

    def __init__(self, labels: list[np.ndarray]):
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        lbl = self.labels[i]
        img = np.zeros((*lbl.shape, 3), np.uint8)
        for k in range(3):
            img[lbl == k, k] = 255
        return img, lbl.astype(np.uint8)


class ConstModel(torch.nn.Module):
    """Class ``k`` everywhere at 1/8 resolution; records the input sizes it saw."""

    def __init__(self, k: int):
        super().__init__()
        self.k, self.seen = k, []

    def forward(self, x):
        self.seen.append(tuple(x.shape[-2:]))
        out = torch.zeros(x.shape[0], 3, x.shape[2] // 8, x.shape[3] // 8)
        out[:, self.k] = 5.0
        return {"out": out}


class PoolModel(torch.nn.Module):
    """A stride-8 'network' whose prediction depends on position: the mean colour of each 8x8 cell
    (ceil grid, like a ResNet at output stride 8 on any input size), one logit per colour channel."""

    def forward(self, x):
        return {"out": F.avg_pool2d(x, 8, ceil_mode=True)}


def test_voc_and_ade20k_declare_whole_image_eval_others_keep_their_size():
    for name in ("voc", "ade20k"):
        info = dataset_info(name)
        assert info.eval_whole and info.default_eval_size() is None
        assert info.eval_size == (512, 512) and info.as_dict()["eval_whole"] is True  # still the export default
    for name, size in (("cityscapes", (1024, 2048)), ("camvid", (360, 480))):
        assert not dataset_info(name).eval_whole and dataset_info(name).default_eval_size() == size


def test_whole_image_miou_matches_a_direct_count_on_non_square_images():
    """Constant prediction: IoU of class k = its share of the valid pixels, 0 for the other present classes."""
    g = np.random.default_rng(0)
    sizes = [(36, 52), (44, 20), (24, 64)]  # aspects 0.69, 2.2, 0.375; no side a multiple of 8 except 24 / 64
    labels = [g.integers(0, 3, s) for s in sizes]
    labels[1][:5] = 255  # ignored rows
    model = ConstModel(1)
    loader = eval_loader(Reader(labels), IMAGENET, WHOLE.default_eval_size(), batch=4)
    m = evaluate(model, loader, 3)
    flat = np.concatenate([lb.ravel() for lb in labels])
    valid = flat[flat != 255]
    assert m.miou == pytest.approx((valid == 1).mean() / 3) and m.pixel_acc == pytest.approx((valid == 1).mean())
    # each image went in whole, only padded at the bottom/right to multiples of 8 (no 32x32 squash)
    assert model.seen == [(40, 56), (48, 24), (24, 64)]
    # flip and scales average softmaxes of a constant: same result
    m2 = evaluate(ConstModel(1), eval_loader(Reader(labels), IMAGENET, None), 3, flip=True, scales=(0.75, 1.0))
    assert m2.miou == pytest.approx(m.miou)


def test_padding_and_crop_keep_the_prediction_aligned_with_the_pixels():
    """Region borders on multiples of 8 (column 24 of a 36x52 image, row 16 of a 44x20 one): pad to multiples
    of 8, upsample, crop back -> every pixel right. Stretching the logits over the unpadded image, or a
    squash to 32x32, moves the borders."""
    cols = np.zeros((36, 52), np.int64)
    cols[:, 24:] = 1
    rows = np.zeros((44, 20), np.int64)
    rows[16:] = 2
    reader = Reader([cols, rows])
    m = evaluate(PoolModel(), eval_loader(reader, IMAGENET, None), 3)
    assert m.miou == pytest.approx(1.0) and m.pixel_acc == pytest.approx(1.0)

    # the same prediction computed directly: pad bottom/right, pool, upsample x8, crop, argmax
    x, _ = next(iter(eval_loader(Reader([cols]), IMAGENET, None)))
    padded = F.pad(x, (0, 4, 0, 4))
    direct = F.interpolate(F.avg_pool2d(padded, 8), size=(40, 56), mode="bilinear", align_corners=False)[..., :36, :52]
    got = predict_logits(PoolModel(), x).argmax(1)
    assert torch.equal(got, direct.argmax(1)) and torch.equal(got[0], torch.from_numpy(cols))

    # the test can fail: no padding (stride 1 = never pad) stretches the 5x7 grid over 36x52 and moves the border
    stretched = predict_logits(PoolModel(), x, stride=1).argmax(1)[0].numpy()
    assert (stretched != cols).mean() > 0.02
    squashed = evaluate(PoolModel(), eval_loader(reader, IMAGENET, (32, 32)), 3)
    assert squashed.pixel_acc < 0.99


def test_training_validation_and_eval_use_whole_images_for_voc(tmp_path, monkeypatch):
    """One declaration, three users: training's validation, checkpoint_split (eval, difficulty), rdd-edge eval."""
    from data_utils import voc
    from rdd_edge.distill import train as train_mod
    from rdd_edge.distill.config import make_config
    from rdd_edge.distill.evaluate import EvalSpec, checkpoint_split, evaluate_checkpoint
    from rdd_edge.models import load_checkpoint

    raw = voc(tmp_path / "voc", n=2)  # 24x32 images and labels (aspect 3:4)
    sizes = []
    real = train_mod.eval_loader

    def spy(reader, info, eval_size, *a, **k):
        sizes.append(eval_size)
        return real(reader, info, eval_size, *a, **k)

    monkeypatch.setattr(train_mod, "eval_loader", spy)
    cfg = make_config("teacher", "voc", data=str(tmp_path / "voc"), model="mbv2", model_kwargs={"head_channels": 8},
                      iters=1, batch=2, crop=(24, 32), val_every=1, device="cpu", tensorboard=False,
                      runs_root=str(tmp_path / "runs"), pretrained="none")
    train_mod.train(cfg, run_dir=tmp_path / "run", progress=False)
    assert sizes == [None]  # validated whole

    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    info, reader, size = checkpoint_split(ckpt)
    assert info.name == "voc" and size is None and len(reader) == 2
    assert checkpoint_split(ckpt, eval_size=(16, 24))[2] == (16, 24)  # --eval-size stays an explicit choice

    # rdd-edge eval: a real network made constant (zero classifier weights, bias on class 15 = person)
    from rdd_edge.models import model_from_checkpoint, save_checkpoint

    model, _ = model_from_checkpoint(ckpt)
    with torch.no_grad():
        model.head.classifier.weight.zero_()
        model.head.classifier.bias.zero_()
        model.head.classifier.bias[15] = 5.0
    const = save_checkpoint(tmp_path / "const.pt", model, **{k: ckpt[k] for k in ("dataset", "data", "config")})
    r = evaluate_checkpoint(EvalSpec(const, device="cpu"))
    labels = np.concatenate([raw[n].ravel() for n in sorted(raw) if n.startswith("2007_1")])  # the val split
    valid = labels[labels != 255]
    present = len(set(valid.tolist()))
    assert r.size is None and r.images == 2
    assert r.metrics.miou == pytest.approx((valid == 15).mean() / present)
    assert evaluate_checkpoint(EvalSpec(const, device="cpu", eval_size=(16, 16))).size == (16, 16)
