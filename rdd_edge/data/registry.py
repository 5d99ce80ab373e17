"""Data sets by name: ``get_dataset("camvid", root, split)``, ``dataset_info("cityscapes")``.

``synthetic`` needs no folder (scenes are generated from a seed); given a folder written by
``rdd-edge data synth`` it reads that folder in the CamVid compact layout. The synthetic
generator module is imported only when it is used.
"""

from __future__ import annotations

import difflib
import importlib
from pathlib import Path
from typing import Any, Callable

from rdd_edge.data import ade20k, camvid, cityscapes, voc
from rdd_edge.data.base import DatasetInfo, folder_not_found
from rdd_edge.data.layout import DataFormat
from rdd_edge.errors import ConfigError, DataError

_FORMATS: dict[str, DataFormat] = {
    "camvid": camvid.FORMAT,
    "cityscapes": cityscapes.FORMAT,
    "voc": voc.FORMAT,
    "ade20k": ade20k.FORMAT,
}


def _synthetic():
    """The synthetic scene module (imported when first used: it is the largest reader)."""
    return importlib.import_module("rdd_edge.data.synthetic")


def _open_synthetic(root: str | Path | None = None, split: str = "train", **kw: Any):
    if root is None:
        return _synthetic().SyntheticScenes(split=split, **kw)
    _no_options("synthetic (from a folder)", kw)
    return get_format("synthetic").open(root, split)


def _reader(name: str) -> Callable:
    def open_(root: str | Path | None = None, split: str = "train", **kw: Any):
        if root is None:
            raise ConfigError(f"data set '{name}' needs its folder: pass --data PATH (root=...)")
        _no_options(name, kw)
        return _FORMATS[name].open(root, split)

    open_.__doc__ = f"Open the {name} data set at ``root``."
    return open_


def _no_options(name: str, kw: dict) -> None:
    extra = {k: v for k, v in kw.items() if v is not None}
    if extra:
        raise ConfigError(f"data set '{name}' takes no options {sorted(extra)} (only synthetic scenes take n/size/seed)")


DATASETS: dict[str, Callable] = {"synthetic": _open_synthetic, **{n: _reader(n) for n in _FORMATS}}


def _resolve(name: str) -> str:
    key = str(name).strip().lower()
    if key not in DATASETS:
        close = difflib.get_close_matches(key, list(DATASETS), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown data set '{name}'; known: {', '.join(DATASETS)}.{hint}")
    return key


def dataset_info(name: str) -> DatasetInfo:
    """Classes, palette, sizes and normalisation of a data set, without touching the disk."""
    key = _resolve(name)
    if key == "synthetic":
        return _synthetic().SYNTHETIC_INFO
    return _FORMATS[key].info


def get_format(name: str) -> DataFormat:
    """The on-disk format of a data set (``synthetic``: the CamVid layout with synthetic's info)."""
    key = _resolve(name)
    if key == "synthetic":
        return camvid.FORMAT.with_info(_synthetic().SYNTHETIC_INFO, summary=SYNTHETIC_SUMMARY)
    return _FORMATS[key]


SYNTHETIC_SUMMARY = "generated from a seed; or a folder from `data synth` (CamVid compact layout)"


def detect_dataset(root: str | Path) -> str:
    """The data set whose on-disk layout ``root`` has (the rules ``data check`` uses); DataError otherwise.

    A folder written by ``rdd-edge data synth`` has the CamVid layout and the same classes, so it
    is read as ``camvid``.
    """
    root = Path(root)
    if not root.is_dir():
        raise folder_not_found(root)
    found = []
    for name, fmt in _FORMATS.items():
        try:
            fmt.find_splits(root)
        except DataError:
            continue
        found.append(name)
    if len(found) == 1:
        return found[0]
    if not found:
        layouts = "\n".join(f"  {n}: {f.layout.strip().splitlines()[0].strip()}" for n, f in _FORMATS.items())
        raise DataError(f"{root}: no known data set layout here; pass --dataset with one of {', '.join(_FORMATS)}. "
                        f"Layouts:\n{layouts}")
    raise DataError(f"{root}: the folder fits several layouts ({', '.join(found)}); pass --dataset to choose")


def get_dataset(name: str, root: str | Path | None = None, split: str = "train", **kw: Any):
    """A data set reader: ``len(ds)``, ``ds[i] -> (uint8 RGB HxWx3, uint8 HxW, 255 = ignore)``.

    >>> ds = get_dataset("synthetic", split="val", n=8, size=(96, 128), seed=0)
    >>> ds = get_dataset("camvid", "/data/camvid", split="val")
    """
    return DATASETS[_resolve(name)](root, split=split, **kw)
