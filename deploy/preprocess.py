"""Image -> network input, shared by the runtime, the check, the demo and INT8 calibration.

One function so that calibration (export stage) and inference (deploy stage) feed the graph
exactly the same tensor: resize to the model size (bilinear), HWC -> CHW, and normalise the way
the model's weights were trained (its recorded :class:`~rdd_edge.normalize.Normalization`:
channel order, scale, mean, std) unless the graph embeds that step (then the input is the raw pixels the
graph was exported for: uint8 RGB, or float32 0..255 RGB / BGR; ``rdd_edge.normalize.EMBED_MODES``).
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from rdd_edge.errors import DeployError
from rdd_edge.normalize import DEFAULT, Normalization, embed_mode, graph_pixels  # torch-free core


def check_image(image: object, what: str = "image") -> np.ndarray:
    """Return ``image`` as a uint8 RGB HxWx3 array, or raise a DeployError naming the problem."""
    if not isinstance(image, np.ndarray):
        raise DeployError(f"{what}: expected a numpy array (uint8 RGB HxWx3), got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        chans = 1 if image.ndim == 2 else (image.shape[2] if image.ndim == 3 else None)
        raise DeployError(
            f"{what}: expected 3 channels (uint8 RGB HxWx3), got shape {tuple(image.shape)}"
            + (f" ({chans} channel{'s' if chans != 1 else ''})" if chans is not None else "")
            + "; convert it first (e.g. cv2.cvtColor(img, cv2.COLOR_GRAY2RGB) or COLOR_BGRA2RGB)"
        )
    if image.dtype != np.uint8:
        raise DeployError(
            f"{what}: expected dtype uint8 (0..255), got {image.dtype}; "
            "scale and cast it first (e.g. (img * 255).clip(0, 255).astype(np.uint8))"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise DeployError(f"{what}: empty image of shape {tuple(image.shape)}")
    return image


def preprocess(
    image_rgb_uint8: np.ndarray,
    size: Sequence[int],
    normalization: Normalization = DEFAULT,
    embedded: bool | str = False,
) -> np.ndarray:
    """uint8 RGB HxWx3 -> (1, 3, H, W) at ``size`` = (H, W).

    float32 made with ``normalization`` by default; when ``embedded`` (the graph does the channel
    order, cast and normalisation itself) the raw pixels its mode asks for: ``True`` / ``"uint8"``
    uint8 RGB 0..255, ``"float255"`` / ``"float255-bgr"`` float32 0..255 RGB / BGR.
    """
    image = check_image(image_rgb_uint8)
    h, w = int(size[0]), int(size[1])
    if image.shape[:2] != (h, w):
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    chw = np.ascontiguousarray(image.transpose(2, 0, 1))[None]
    mode = embed_mode(embedded)
    if mode:
        return graph_pixels(chw, mode)
    return normalization.apply(chw)


def preprocess_batch(
    images: Sequence[np.ndarray],
    size: Sequence[int],
    normalization: Normalization = DEFAULT,
    embedded: bool | str = False,
) -> np.ndarray:
    """Several images (any sizes) -> one (N, 3, H, W) batch."""
    if len(images) == 0:
        raise DeployError("empty image batch: pass at least one image")
    return np.concatenate([preprocess(im, size, normalization, embedded) for im in images], axis=0)


RESIZE_MODES = ("stretch", "letterbox")


def letterbox(image: np.ndarray, size: Sequence[int], fill: Sequence[int] = (0, 0, 0)) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """``image`` scaled to fit ``size`` = (H, W) with its aspect ratio kept, centred and padded with ``fill``.

    ``fill``: the training padding colour (``Normalization.fill_rgb()``, which the network sees as
    zeros, as in the random-scale crops it was trained on). Returns the padded image and the box
    ``(top, left, height, width)`` the image occupies in it, which
    :func:`rdd_edge.deploy.postprocess.unletterbox` cuts out of the label map again.
    """
    image = check_image(image)
    H, W = int(size[0]), int(size[1])
    h, w = image.shape[:2]
    s = min(H / h, W / w)
    nh, nw = max(1, min(H, round(h * s))), max(1, min(W, round(w * s)))
    top, left = (H - nh) // 2, (W - nw) // 2
    out = np.empty((H, W, 3), np.uint8)
    out[...] = np.asarray(fill, np.uint8)
    out[top : top + nh, left : left + nw] = image if (nh, nw) == (h, w) else cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return out, (top, left, nh, nw)
