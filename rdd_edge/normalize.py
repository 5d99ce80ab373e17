"""How pixels become network input: one small value object, recorded with the weights.

A network only works on input normalised the way its weights were trained. timm's ImageNet
weights expect RGB scaled to 0..1 minus the ImageNet mean, divided by its std; the paper's
released code feeds BGR in 0..255 minus the caffe mean and divides by nothing. A
:class:`Normalization` says which: the channel ``order`` the network reads, a ``scale`` applied to
the 0..255 pixel values, then ``(value - mean) / std`` per network channel. Training records it
in every checkpoint, ``import`` records the released one, export copies it into the manifest
and the ONNX metadata, and every consumer (training's data, eval, difficulty maps, export's
preprocessing and ``--embed-preprocess``, INT8 calibration, check, demo) applies the recorded
one through this module. Torch-free: the edge runtime reads it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from rdd_edge.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)  # the released code's dataset/*.py
ORDERS = {"rgb": (0, 1, 2), "bgr": (2, 1, 0)}  # network channel k reads RGB channel ORDERS[order][k]


@dataclass(frozen=True)
class Normalization:
    """``x[k] = (pixel[order[k]] * scale - mean[k]) / std[k]`` for 0..255 pixels; ``mean``/``std`` per network channel."""

    name: str
    order: str = "rgb"
    scale: float = 1.0 / 255.0
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.order not in ORDERS:
            raise ConfigError(f"normalization {self.name!r}: channel order {self.order!r} is not one of {', '.join(ORDERS)}")
        if len(self.mean) != 3 or len(self.std) != 3 or not all(float(s) > 0 for s in self.std) or not float(self.scale) > 0:
            raise ConfigError(f"normalization {self.name!r}: needs 3 means, 3 positive stds and a positive scale")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        object.__setattr__(self, "scale", float(self.scale))

    @property
    def perm(self) -> tuple[int, int, int]:
        """The RGB channel each network channel reads."""
        return ORDERS[self.order]

    def affine(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mul, add)`` per network channel: ``x[k] = pixel[perm[k]] * mul[k] + add[k]`` (float64)."""
        std = np.asarray(self.std, np.float64)
        return self.scale / std, -np.asarray(self.mean, np.float64) / std

    def apply(self, chw_rgb: np.ndarray) -> np.ndarray:
        """uint8 (or float) RGB pixels ``(..., 3, H, W)`` in 0..255 -> float32 network input of the same shape."""
        x = np.asarray(chw_rgb)[..., list(self.perm), :, :].astype(np.float32)
        shape = (3, 1, 1)
        mean = np.asarray(self.mean, np.float32).reshape(shape)
        std = np.asarray(self.std, np.float32).reshape(shape)
        return ((x * np.float32(self.scale) - mean) / std).astype(np.float32)

    def fill_rgb(self) -> tuple[int, int, int]:
        """The RGB pixel that normalises to (about) zero: the colour padding takes."""
        rgb = [0, 0, 0]
        for k, c in enumerate(self.perm):
            rgb[c] = int(round(min(255.0, max(0.0, self.mean[k] / self.scale))))
        return rgb[0], rgb[1], rgb[2]

    def describe(self) -> str:
        chans = self.order.upper()
        if self.std == (1.0, 1.0, 1.0):
            return f"{self.name}: {chans} {self._range()} minus mean {_nums(self.mean)}, no std"
        return f"{self.name}: {chans} {self._range()} minus mean {_nums(self.mean)}, divided by std {_nums(self.std)}"

    def _range(self) -> str:
        return "0-255" if self.scale == 1.0 else ("0-1" if abs(self.scale * 255.0 - 1.0) < 1e-12 else f"x {self.scale:g}")

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "order": self.order, "scale": self.scale, "mean": list(self.mean), "std": list(self.std)}


def _nums(v: Sequence[float]) -> str:
    return "(" + ", ".join(f"{x:.5g}" for x in v) + ")"


IMAGENET = Normalization("imagenet")
CAFFE = Normalization("caffe", order="bgr", scale=1.0, mean=CAFFE_MEAN_BGR, std=(1.0, 1.0, 1.0))
PRESETS: dict[str, Normalization] = {n.name: n for n in (IMAGENET, CAFFE)}
# What a network trained from random weights is fed (the project's default since its start).
DEFAULT = IMAGENET


def preset(name: str) -> Normalization:
    """A named normalisation (``imagenet``, ``caffe``); ConfigError listing them otherwise."""
    key = str(name).strip().lower()
    if key not in PRESETS:
        raise ConfigError(f"normalization {name!r}: use one of {', '.join(PRESETS)} "
                          "(imagenet: RGB 0-1, ImageNet mean/std, timm's weights; caffe: BGR 0-255 minus the caffe mean, the released code's)")
    return PRESETS[key]


def normalization_of(value: Any) -> Normalization:
    """A :class:`Normalization` from what files record: itself, a preset name or an ``as_dict()`` dict."""
    if isinstance(value, Normalization):
        return value
    if isinstance(value, str):
        return preset(value)
    if isinstance(value, Mapping):
        try:
            return Normalization(name=str(value.get("name", "custom")), order=str(value.get("order", "rgb")),
                                 scale=float(value.get("scale", 1.0 / 255.0)),
                                 mean=tuple(float(m) for m in value["mean"]),  # type: ignore[arg-type]
                                 std=tuple(float(s) for s in value["std"]))  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"normalization {dict(value)!r}: expected name, order, scale, mean and std") from None
    raise ConfigError(f"normalization {value!r}: expected a name ({', '.join(PRESETS)}) or a dict")


def recorded_normalization(record: Mapping[str, Any] | None) -> Normalization:
    """The normalisation a checkpoint or export manifest records.

    ``record["normalization"]`` when present; files written before normalisations were recorded
    hold ``mean``/``std`` (RGB, 0..1), at the top (manifests) or under ``dataset`` (checkpoints);
    with neither, the default (ImageNet), which is what every such file was trained with.
    """
    record = record or {}
    if record.get("normalization") is not None:
        return normalization_of(record["normalization"])
    for d in (record, record.get("dataset") or {}):
        if isinstance(d, Mapping) and d.get("mean") is not None and d.get("std") is not None:
            mean, std = tuple(float(m) for m in d["mean"]), tuple(float(s) for s in d["std"])
            if (mean, std) == (IMAGENET.mean, IMAGENET.std):
                return IMAGENET
            return Normalization("custom", mean=mean, std=std)  # type: ignore[arg-type]
    return DEFAULT


# --embed-preprocess: what a graph that normalises inside takes instead of network input. ``uint8``: uint8 RGB
# 0..255; ``float255`` / ``float255-bgr``: float32 0..255 in RGB / BGR channel order, what DeepStream's nvinfer
# feeds with net-scale-factor=1 and no offsets (its preprocessing is y = net-scale-factor * (x - offsets), one
# scale for all channels: Gst-nvinfer, https://docs.nvidia.com/metropolis/deepstream/dev-guide/text/DS_plugin_gst-nvinfer.html),
# so a per-channel std (ImageNet's) can only be applied inside the graph.
EMBED_MODES: dict[str, tuple[str, str]] = {"uint8": ("uint8", "rgb"), "float255": ("float32", "rgb"),
                                           "float255-bgr": ("float32", "bgr")}


def embed_mode(value: Any) -> str:
    """The canonical ``--embed-preprocess`` mode: ``""`` (the graph takes normalised float32) or an
    :data:`EMBED_MODES` key; ``True`` (the option's old flag form) is ``uint8``."""
    if value is None or value is False or value == "" or str(value).lower() in ("none", "false", "no"):
        return ""
    if value is True or str(value).lower() in ("true", "yes"):
        return "uint8"
    key = str(value).strip().lower()
    if key not in EMBED_MODES:
        raise ConfigError(f"--embed-preprocess {value!r}: use one of {', '.join(EMBED_MODES)} (uint8: uint8 RGB; "
                          "float255: float32 0-255 RGB, DeepStream's model-color-format=0; float255-bgr: the same in BGR, "
                          "model-color-format=1)")
    return key


def graph_pixels(chw_rgb: np.ndarray, mode: Any) -> np.ndarray:
    """uint8 RGB ``(..., 3, H, W)`` -> what a graph exported with ``--embed-preprocess mode`` takes."""
    dtype, order = EMBED_MODES[embed_mode(mode) or "uint8"]
    x = np.asarray(chw_rgb)
    if order != "rgb":
        x = x[..., list(ORDERS[order]), :, :]
    return np.ascontiguousarray(x.astype(np.dtype(dtype), copy=False))


def network_input(pixels: np.ndarray, normalization: Normalization, mode: Any) -> np.ndarray:
    """The inverse view: what the network itself receives for a batch fed to an embedding graph (float32)."""
    order = EMBED_MODES[embed_mode(mode) or "uint8"][1]
    x = np.asarray(pixels)
    if order != "rgb":
        x = x[..., list(ORDERS[order]), :, :]  # RGB <-> BGR is its own inverse
    return normalization.apply(x)


def embed_gather(normalization: Normalization, mode: Any) -> list[int] | None:
    """The input channel each network channel reads in a graph exported with ``mode`` (None: the same order)."""
    order = EMBED_MODES[embed_mode(mode) or "uint8"][1]
    idx = [ORDERS[order][c] for c in normalization.perm]  # input channel j holds RGB channel ORDERS[order][j]
    return None if idx == [0, 1, 2] else idx
