"""Torch data pipeline over any reader: pair transforms, a resumable sampler, loaders.

A reader yields ``(uint8 RGB HxWx3, uint8 HxW label)``. Transforms map ``(image, label)`` to
``(image, label)`` on NumPy arrays with OpenCV; labels always resize with NEAREST and pad with
255 (ignored), images pad with the mean colour (zero after normalisation).

Determinism: the training stream is a fixed sequence of positions. Position ``p`` reads sample
``perm_e[p % n]`` with ``e = p // n`` (a fresh permutation per epoch from ``(seed, e)``) and
augments it with a generator seeded by ``(seed, p)``. Step ``s`` with global batch ``B`` covers
positions ``s*B .. s*B+B-1``, split into equal contiguous slices per process. So the data a step
sees depends only on the seed and the step: resuming at step ``k`` continues exactly, and one
process with batch ``B`` sees the same samples (and augmentations) as ``N`` processes with
``B/N`` each.
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

IGNORE = 255
PairTransform = Callable[[np.ndarray, np.ndarray, np.random.Generator], "tuple[np.ndarray, np.ndarray]"]


# ---------------------------------------------------------------- pair transforms (numpy)
class RandomScale:
    """Resize image (bilinear) and label (nearest) by a factor drawn from [lo, hi]."""

    def __init__(self, lo: float, hi: float):
        self.lo, self.hi = lo, hi

    def __call__(self, image, label, rng):
        s = rng.uniform(self.lo, self.hi) if self.hi > self.lo else self.lo
        if s == 1.0:
            return image, label
        h, w = label.shape
        size = (max(1, round(w * s)), max(1, round(h * s)))
        return (cv2.resize(image, size, interpolation=cv2.INTER_LINEAR),
                cv2.resize(label, size, interpolation=cv2.INTER_NEAREST))


class PadIfNeeded:
    """Pad bottom/right up to (H, W): image with the mean colour, label with 255."""

    def __init__(self, size: tuple[int, int], fill: Sequence[int]):
        self.size, self.fill = size, tuple(int(v) for v in fill)

    def __call__(self, image, label, rng):
        h, w = label.shape
        ph, pw = max(0, self.size[0] - h), max(0, self.size[1] - w)
        if ph == 0 and pw == 0:
            return image, label
        image = cv2.copyMakeBorder(image, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=self.fill)
        label = cv2.copyMakeBorder(label, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=IGNORE)
        return image, label


class RandomCrop:
    """Crop (H, W) at a random position (inputs at least that large: pad first)."""

    def __init__(self, size: tuple[int, int]):
        self.size = size

    def __call__(self, image, label, rng):
        h, w = label.shape
        ch, cw = self.size
        y = int(rng.integers(0, h - ch + 1))
        x = int(rng.integers(0, w - cw + 1))
        return image[y:y + ch, x:x + cw], label[y:y + ch, x:x + cw]


class RandomHFlip:
    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, image, label, rng):
        if rng.random() < self.p:
            return image[:, ::-1], label[:, ::-1]
        return image, label


class Resize:
    """Resize the image to (H, W); the label too (nearest) unless ``labels=False``."""

    def __init__(self, size: tuple[int, int] | None, labels: bool = False):
        self.size, self.labels = size, labels

    def __call__(self, image, label, rng):
        if self.size is None or image.shape[:2] == tuple(self.size):
            return image, label
        wh = (self.size[1], self.size[0])
        image = cv2.resize(image, wh, interpolation=cv2.INTER_LINEAR)
        if self.labels:
            label = cv2.resize(label, wh, interpolation=cv2.INTER_NEAREST)
        return image, label


class Normalize:
    """uint8 RGB HxWx3 -> float32 3xHxW ``(x/255 - mean)/std``; label -> int64 HxW tensor."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean = np.asarray(mean, np.float32).reshape(1, 1, 3)
        self.std = np.asarray(std, np.float32).reshape(1, 1, 3)

    def __call__(self, image, label, rng):
        x = (image.astype(np.float32) / 255.0 - self.mean) / self.std
        return (torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))),
                torch.from_numpy(np.ascontiguousarray(label, dtype=np.int64)))


class Compose:
    def __init__(self, transforms: list):
        self.transforms = transforms

    def __call__(self, image, label, rng):
        for t in self.transforms:
            image, label = t(image, label, rng)
        return image, label


class TrainPreset(Compose):
    """Random scale, pad, random crop, horizontal flip, normalise (the paper's augmentation)."""

    def __init__(self, crop: tuple[int, int], mean, std, scale: tuple[float, float] = (0.5, 2.0), hflip: bool = True):
        fill = [round(m * 255) for m in mean]
        ts: list = [RandomScale(*scale), PadIfNeeded(crop, fill), RandomCrop(crop)]
        if hflip:
            ts.append(RandomHFlip())
        ts.append(Normalize(mean, std))
        super().__init__(ts)


class EvalPreset(Compose):
    """Resize the image to the eval size, normalise; the label keeps its size so mIoU is measured
    at full label resolution (logits are upsampled to it).

    ``eval_size=None`` keeps every image whole at its own size (no resize, aspect kept): the
    protocol of data sets that declare ``eval_whole`` (VOC, ADE20K; ``DatasetInfo.default_eval_size``).
    Padding to the network's stride happens at prediction time (``distill.evaluate.predict_logits``)."""

    def __init__(self, eval_size: tuple[int, int] | None, mean, std, resize_labels: bool = False):
        super().__init__([Resize(eval_size, labels=resize_labels), Normalize(mean, std)])


# ---------------------------------------------------------------- dataset + samplers
class TorchSegDataset(Dataset):
    """Wrap a reader; items are ``(image tensor, label tensor)``.

    Indices are either ``i`` (eval: no randomness) or ``(i, aug_seed)`` from :class:`StepSampler`.
    """

    def __init__(self, reader, transform: PairTransform):
        self.reader, self.transform = reader, transform

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, key):
        i, aug_seed = key if isinstance(key, tuple) else (key, 0)
        image, label = self.reader[int(i)]
        return self.transform(image, label, np.random.default_rng(aug_seed))


class StepSampler(Sampler):
    """This process's share of steps ``start .. total-1`` of the training stream (see module doc).

    Yields ``(index, aug_seed)``; use with ``batch_size = global_batch // world``.
    """

    def __init__(self, n: int, global_batch: int, total_steps: int, start_step: int = 0,
                 rank: int = 0, world: int = 1, seed: int = 0):
        if global_batch % world:
            raise ValueError("global batch must divide by the world size")
        self.n, self.batch, self.total, self.start = n, global_batch, total_steps, start_step
        self.rank, self.world, self.seed = rank, world, seed
        self.per_rank = global_batch // world
        self._perm_cache: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perm_cache:
            self._perm_cache = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.n)}
        return self._perm_cache[epoch]

    def position(self, step: int, k: int) -> int:
        """Stream position of the k-th sample of this process in ``step``."""
        return step * self.batch + self.rank * self.per_rank + k

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for step in range(self.start, self.total):
            for k in range(self.per_rank):
                p = self.position(step, k)
                aug_seed = int(np.random.default_rng([self.seed, 7919, p]).integers(2**62))
                yield int(self._perm(p // self.n)[p % self.n]), aug_seed

    def __len__(self) -> int:
        return max(0, self.total - self.start) * self.per_rank


class ShardSampler(Sampler):
    """Every ``world``-th index from ``rank``: each sample once across processes (eval)."""

    def __init__(self, n: int, rank: int = 0, world: int = 1):
        self.idx = list(range(rank, n, world))

    def __iter__(self):
        return iter(self.idx)

    def __len__(self) -> int:
        return len(self.idx)


def eval_collate(batch):
    """Stack images (same eval size); keep labels as a list (they may differ in size)."""
    images = torch.stack([b[0] for b in batch])
    return images, [b[1] for b in batch]


def train_loader(reader, cfg, info, start_step: int, rank: int, world: int) -> DataLoader:
    """The training loader for steps ``start_step .. cfg.iters-1`` of this process."""
    tf = TrainPreset(tuple(cfg.crop), info.mean, info.std, (cfg.scale_min, cfg.scale_max), cfg.hflip)
    sampler = StepSampler(len(reader), cfg.batch, cfg.iters, start_step, rank, world, cfg.seed)
    return DataLoader(
        TorchSegDataset(reader, tf), batch_size=sampler.per_rank, sampler=sampler, drop_last=False,
        num_workers=cfg.workers, pin_memory=torch.cuda.is_available(), persistent_workers=False,
        # own generator: creating the iterator must not draw from the global torch RNG (resume)
        generator=torch.Generator().manual_seed(cfg.seed),
    )


def eval_loader(reader, info, eval_size: tuple[int, int] | None, rank: int = 0, world: int = 1,
                batch: int = 1, workers: int = 0) -> DataLoader:
    """Whole-image eval loader over this process's shard; labels at their original size.

    ``eval_size=None``: each image at its own size, one image per batch (sizes differ)."""
    ds = TorchSegDataset(reader, EvalPreset(eval_size, info.mean, info.std))
    return DataLoader(ds, batch_size=batch if eval_size is not None else 1, sampler=ShardSampler(len(reader), rank, world),
                      num_workers=workers, collate_fn=eval_collate)
