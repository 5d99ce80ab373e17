"""The formula behind tests/data/released: weights and an image anyone can regenerate without the released code.

Every tensor of a state dict is a function of its key, its shape and the element index only (a
Weyl sequence, IEEE multiplications and floors, so the values are the same on every machine).
tests/data/released/README.md says how the stored logits were made from these values with the
paper's released model code; the tests rebuild the same state dict from the stored key list and
compare our networks' logits with the stored ones.
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np

DATA = Path(__file__).parent / "data" / "released"
# Our model name -> (fixture file stem, input (H, W)); PSPNet's 1/8 map (12x12) divides by its bins 1, 2, 3 and 6.
FIXTURES = {
    "deeplabv3_r101": ("deeplabv3_r101", (64, 64)),
    "deeplabv3_r18": ("deeplabv3_r18", (64, 64)),
    "deeplabv3_mbv2": ("deeplabv3_mbv2", (64, 64)),
    "pspnet_r18": ("pspnet_r18", (96, 96)),
}
NUM_CLASSES = 19
GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def _weyl(key: str, n: int) -> np.ndarray:
    """n values uniform in [0, 1), determined by ``key``: frac(offset + i * alpha)."""
    h = zlib.crc32(key.encode("utf-8"))
    alpha = math.fmod(GOLDEN * (1 + h % 9973), 1.0)
    offset = (h % 65521) / 65521.0
    i = np.arange(n, dtype=np.float64)
    v = offset + i * alpha
    return v - np.floor(v)


def tensor_for(key: str, shape: tuple[int, ...], norm: bool) -> np.ndarray:
    """The value of one state-dict entry (float32; int64 zeros for ``num_batches_tracked``);
    ``norm``: the entry belongs to a BatchNorm layer."""
    n = int(np.prod(shape)) if shape else 1
    if key.endswith("num_batches_tracked"):
        return np.zeros(shape, np.int64)
    u = _weyl(key, n)
    s = 2.0 * u - 1.0  # uniform in [-1, 1), variance 1/3
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "running_var":
        v = 0.5 + u  # positive: 0.5 .. 1.5
    elif leaf == "running_mean":
        v = 0.2 * s
    elif norm and leaf == "weight":
        v = 0.6 + 0.3 * s
    elif norm and leaf == "bias":
        v = 0.1 * s
    elif leaf == "bias":  # a classifier's: small, so the logits follow the input rather than the bias
        v = 0.01 * s
    else:  # conv weight: variance 2 / fan_in (He)
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        v = s * math.sqrt(3.0) * math.sqrt(2.0 / fan_in)
    return v.reshape(shape).astype(np.float32)


def state_dict_values(keys: list[tuple[str, list[int]]]) -> dict[str, np.ndarray]:
    """``{key: array}`` for ``[(key, shape), ...]`` (the stored key list of a fixture)."""
    norms = {k.rsplit(".", 1)[0] for k, _ in keys if k.endswith(".running_var")}
    return {k: tensor_for(k, tuple(int(d) for d in shape), k.rsplit(".", 1)[0] in norms) for k, shape in keys}


def fixture_image(h: int, w: int) -> np.ndarray:
    """A uint8 RGB (h, w, 3) image: smooth colour ramps plus a Weyl texture."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    tex = _weyl("image", h * w * 3).reshape(h, w, 3)
    base = np.stack([255 * x / max(w - 1, 1), 255 * y / max(h - 1, 1), 127.5 + 100 * np.sin(x / 5.0) * np.cos(y / 7.0)], -1)
    return np.clip(0.6 * base + 100 * tex, 0, 255).astype(np.uint8)


def released_input(image_rgb: np.ndarray) -> np.ndarray:
    """The released code's preprocessing, written out: BGR, float, minus the caffe mean, no std -> (1, 3, H, W)."""
    bgr = image_rgb[:, :, ::-1].astype(np.float32)
    x = bgr - np.array([104.00698793, 116.66876762, 122.67891434], np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))[None].astype(np.float32)


def load_fixture(model: str) -> tuple[dict, dict[str, np.ndarray]]:
    """(meta with ``keys``, stored outputs ``{"out", "aux"?}``) of one network."""
    stem, _ = FIXTURES[model]
    meta = json.loads((DATA / f"{stem}.json").read_text())
    with np.load(DATA / f"{stem}.npz") as z:
        outs = {k: z[k] for k in z.files}
    return meta, outs
