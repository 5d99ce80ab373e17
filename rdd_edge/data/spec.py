"""Which images a run uses, and the one place that opens a split of them.

A :class:`DataSpec` names the data set and its folder (or, for the generated synthetic scenes,
their counts, size and seed). Training stores it in every checkpoint and export copies it into
the manifest, so ``eval``, ``export`` and ``check`` open exactly the images training validated
on, through :func:`open_split`, unless told otherwise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from rdd_edge.data.registry import dataset_info, get_dataset
from rdd_edge.errors import ConfigError


@dataclass(frozen=True)
class DataSpec:
    """A data set by name and folder; ``train_images``/``val_images``/``size``/``seed`` only
    matter for synthetic scenes generated on the fly (``root`` None)."""

    name: str = "synthetic"
    root: str | None = None
    train_images: int = 200
    val_images: int = 40
    size: tuple[int, int] | None = None  # synthetic render size (H, W); None: the data set's eval size
    seed: int = 0

    @property
    def generated(self) -> bool:
        """True for synthetic scenes rendered from a seed (nothing on disk)."""
        return self.name == "synthetic" and self.root is None

    def describe(self) -> str:
        if self.generated:
            return f"synthetic scenes (seed {self.seed})"
        return f"{self.name} at {self.root}"

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["size"] = list(self.size) if self.size else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DataSpec":
        known = {k: d[k] for k in ("name", "root", "train_images", "val_images", "seed") if d.get(k) is not None}
        size = d.get("size")
        return cls(**known, size=tuple(int(v) for v in size) if size else None)

    def with_(self, **changes: Any) -> "DataSpec":
        """A copy with the given fields changed (None values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def overridden(self, dataset: str | None = None, root: str | Path | None = None,
                   val_images: int | None = None) -> "DataSpec":
        """These images unless ``--dataset`` / ``--data`` say otherwise: another data set starts from
        its own defaults (keeping the counts and seed), another folder keeps the data set."""
        root = str(root) if root is not None else None
        if dataset is not None and dataset != self.name:
            return DataSpec(name=dataset, root=root, train_images=self.train_images,
                            val_images=val_images or self.val_images, seed=self.seed)
        return self.with_(root=root, val_images=val_images)


def spec_of_checkpoint(ckpt: dict[str, Any]) -> DataSpec:
    """The data a checkpoint was trained on (``data`` field; older files: rebuilt from their config)."""
    if isinstance(ckpt.get("data"), dict):
        return DataSpec.from_dict(ckpt["data"])
    cfg = ckpt.get("config") or {}
    name = (ckpt.get("dataset") or {}).get("name") or cfg.get("dataset") or "synthetic"
    size = cfg.get("eval_size") or (ckpt.get("dataset") or {}).get("eval_size")
    return DataSpec(name=name, root=cfg.get("data"), train_images=int(cfg.get("synthetic_train", 200)),
                    val_images=int(cfg.get("synthetic_val", 40)), size=tuple(size) if size else None,
                    seed=int(cfg.get("seed", 0)))


def open_split(spec: DataSpec, split: str = "val") -> Any:
    """A reader over ``split`` of the data ``spec`` names: ``len``, ``[i] -> (uint8 RGB, uint8 labels)``.

    Every stage opens data through this function, so the same spec gives the same images in
    training, ``eval``, ``export`` and ``check``.
    """
    info = dataset_info(spec.name)
    if spec.generated:
        if split not in ("train", "val"):
            raise ConfigError(f"synthetic scenes have train and val splits, not {split!r}")
        n = spec.train_images if split == "train" else spec.val_images
        return get_dataset("synthetic", split=split, n=n, size=tuple(spec.size or info.eval_size), seed=spec.seed)
    if spec.root is None:
        raise ConfigError(f"data set '{spec.name}' needs its folder: pass --data PATH")
    return get_dataset(spec.name, Path(spec.root), split=split)
