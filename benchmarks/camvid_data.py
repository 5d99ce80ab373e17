"""CamVid for the benchmark: decoded once, held in memory or on the GPU, augmented there.

``open_camvid`` opens the train and val splits through the trainer (``distill.train.build_data``,
which checks them) and returns the ``TrainData`` every run of the protocol trains on: the val
split decoded once (``CachedReader``), the train split either decoded in RAM for the trainer's own
CPU loader or held on the device (``DeviceTrainSet``) with ``batches`` as the trainer's batch
source, augmented there by ``distill.data.gpu_augment`` (random scale, pad, crop, flip, normalise;
the trainer's own augmentation on CUDA) with the sample order and per-sample seeds of
``distill.data.StepSampler``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from rdd_edge.distill.data import StepSampler, draw_params, gpu_augment


def open_camvid(root: str | Path, device: str, gpu_data: bool, limit: int | None = None):
    """The ``distill.train.TrainData`` of CamVid at ``root`` (the first ``limit`` images of each split)."""
    from rdd_edge.distill.config import make_config
    from rdd_edge.distill.train import TrainData, build_data

    base = build_data(make_config("teacher", "camvid", data=str(root)))
    val = CachedReader(base.val, limit)
    if gpu_data:
        train = DeviceTrainSet(base.train, device, limit)
        return TrainData(base.info, train, val, base.eval_size, batches=train.batches)
    return TrainData(base.info, CachedReader(base.train, limit), val, base.eval_size)


class CachedReader:
    """A reader decoded once into memory (CamVid train+val is ~250 MB decoded); same item interface."""

    def __init__(self, reader, limit: int | None = None, threads: int = 8):
        from concurrent.futures import ThreadPoolExecutor

        n = len(reader) if limit is None else min(limit, len(reader))
        with ThreadPoolExecutor(max(1, threads)) as pool:  # OpenCV decodes outside the GIL
            self.items = list(pool.map(reader.__getitem__, range(n)))
        self.info, self.split = getattr(reader, "info", None), getattr(reader, "split", None)
        self._names = [reader.name(i) if hasattr(reader, "name") else str(i) for i in range(n)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]

    def name(self, i: int) -> str:
        return self._names[i]

    def image_path(self, i: int):
        return None


class DeviceTrainSet(CachedReader):
    """The decoded train split on the training device; ``batches`` is the trainer's batch source
    (``TrainData(..., batches=train_set.batches)``).

    The sample order and per-sample augmentation seeds are ``distill.data.StepSampler``'s, so a run
    is deterministic given its seed and resumes exactly at any step.
    """

    def __init__(self, reader, device: str, limit: int | None = None):
        import torch

        super().__init__(reader, limit)
        hm = max(im.shape[0] for im, _ in self.items)
        wm = max(im.shape[1] for im, _ in self.items)
        n = len(self.items)
        imgs = torch.zeros((n, 3, hm, wm), dtype=torch.uint8)
        lbls = torch.full((n, hm, wm), 255, dtype=torch.uint8)
        for k, (im, lb) in enumerate(self.items):
            imgs[k, :, : im.shape[0], : im.shape[1]] = torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1)))
            lbls[k, : lb.shape[0], : lb.shape[1]] = torch.from_numpy(lb)
        self.sizes_np = np.array([lb.shape for _, lb in self.items], dtype=np.int64)
        self.device = torch.device(device)
        self.images, self.labels = imgs.to(self.device), lbls.to(self.device)
        self.sizes = torch.from_numpy(self.sizes_np).to(self.device)

    @property
    def nbytes(self) -> int:
        return int(self.images.numel() + self.labels.numel())

    def batches(self, cfg, start_step: int, rank: int, world: int) -> Iterator:
        """Batches for steps ``start_step .. cfg.iters-1`` of this process (``TrainData.batches``)."""
        from rdd_edge.normalize import DEFAULT, normalization_of

        norm = normalization_of(cfg.normalization) if cfg.normalization else DEFAULT  # the trainer settles it first
        sampler = StepSampler(len(self), cfg.batch, cfg.iters, start_step, rank, world, cfg.seed)
        crop, scale = tuple(cfg.crop), (cfg.scale_min, cfg.scale_max)
        batch: list[tuple[int, int]] = []
        for item in sampler:
            batch.append(item)
            if len(batch) == sampler.per_rank:
                idx = [i for i, _ in batch]
                params = [draw_params(seed, tuple(self.sizes_np[i]), crop, scale, cfg.hflip) for i, seed in batch]
                yield gpu_augment(self.images, self.labels, self.sizes, idx, [p[0] for p in params],
                                  [p[1] for p in params], [p[2] for p in params], crop, norm)
                batch = []
