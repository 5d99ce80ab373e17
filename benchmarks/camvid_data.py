"""CamVid for the benchmark: decoded once, held in memory or on the GPU, augmented there.

``open_camvid`` opens the train and val splits through the trainer (``distill.train.build_data``,
which checks them) and returns the ``TrainData`` every run of the protocol trains on: the val
split decoded once (``CachedReader``), the train split either decoded in RAM for the trainer's own
CPU loader or held on the device (``DeviceTrainSet``) with ``batches`` as the trainer's batch
source, augmented there by ``gpu_augment`` (random scale, pad, crop, flip, normalise) with the
sample order and per-sample seeds of ``distill.data.StepSampler``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np


def open_camvid(root: str | Path, device: str, gpu_data: bool, limit: int | None = None):
    """The ``distill.train.TrainData`` of CamVid at ``root`` (the first ``limit`` images of each split)."""
    from distill.config import make_config
    from distill.train import TrainData, build_data

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


def gpu_augment(images, labels, sizes, idx, scales, offsets, flips, crop: tuple[int, int], mean, std):
    """Random-scale / pad / crop / flip / normalise a batch on the tensors' device, in one gather.

    ``images`` (N, 3, Hm, Wm) uint8 and ``labels`` (N, Hm, Wm) uint8 hold the whole set (padded to
    the largest image; ``sizes`` (N, 2) the true h, w). Per sample b of the batch: ``idx[b]`` picks
    the image, ``scales[b]`` resizes it to ``round(h*s), round(w*s)``, which is padded bottom/right
    to the crop, cropped at ``offsets[b] = (y0, x0)`` and mirrored when ``flips[b]``. Images are
    bilinear (pixel centres, like cv2.INTER_LINEAR) and normalised; labels are nearest; padding is
    0 after normalisation (the mean colour) for images and 255 for labels. Returns
    ``(float32 (B, 3, ch, cw), int64 (B, ch, cw))``.
    """
    import torch
    import torch.nn.functional as F

    dev = images.device
    ch, cw = crop
    idx = torch.as_tensor(idx, device=dev, dtype=torch.long)
    s = torch.as_tensor(scales, device=dev, dtype=torch.float32)
    off = torch.as_tensor(offsets, device=dev, dtype=torch.float32).reshape(-1, 2)
    flip = torch.as_tensor(flips, device=dev, dtype=torch.bool)
    hw = torch.as_tensor(sizes, device=dev)[idx].float()  # (B, 2) true sizes
    h, w = hw[:, 0], hw[:, 1]
    hs, ws = torch.clamp(torch.round(h * s), min=1), torch.clamp(torch.round(w * s), min=1)  # scaled sizes
    sy, sx = (hs / h)[:, None], (ws / w)[:, None]
    i = torch.arange(ch, device=dev, dtype=torch.float32)[None]
    j = torch.arange(cw, device=dev, dtype=torch.float32)[None]
    dy = off[:, :1] + i  # (B, ch) row in the scaled (padded) image
    dx = off[:, 1:] + torch.where(flip[:, None], (cw - 1) - j, j)  # (B, cw)
    inside = (dy < hs[:, None])[:, :, None] & (dx < ws[:, None])[:, None, :]  # (B, ch, cw)
    hm, wm = images.shape[-2:]
    # image: bilinear at the source pixel centre, clamped into the true image
    src_y = torch.minimum(torch.clamp((dy + 0.5) / sy - 0.5, min=0.0), (h - 1)[:, None])
    src_x = torch.minimum(torch.clamp((dx + 0.5) / sx - 0.5, min=0.0), (w - 1)[:, None])
    gy = (2 * src_y + 1) / hm - 1
    gx = (2 * src_x + 1) / wm - 1
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)  # (B, ch, cw, 2) as (x, y)
    src = images[idx].float()
    x = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)
    m = torch.as_tensor(mean, device=dev, dtype=torch.float32).view(1, 3, 1, 1)
    sd = torch.as_tensor(std, device=dev, dtype=torch.float32).view(1, 3, 1, 1)
    x = ((x / 255.0 - m) / sd) * inside[:, None]
    # label: nearest source pixel, 255 outside the scaled image
    iy = torch.minimum(torch.floor((dy + 0.5) / sy), (h - 1)[:, None]).long()  # (B, ch)
    ix = torch.minimum(torch.floor((dx + 0.5) / sx), (w - 1)[:, None]).long()  # (B, cw)
    flat = (iy[:, :, None] * wm + ix[:, None, :]).reshape(len(idx), -1)
    y = labels[idx].reshape(len(idx), -1).gather(1, flat).reshape(len(idx), ch, cw).long()
    y = torch.where(inside, y, torch.full_like(y, 255))
    return x.contiguous(), y


def draw_params(aug_seed: int, size: tuple[int, int], crop: tuple[int, int], scale: tuple[float, float],
                hflip: bool) -> tuple[float, tuple[int, int], bool]:
    """(scale, (y0, x0), flip) of one sample from its own seed (the CPU pipeline's order of draws)."""
    rng = np.random.default_rng(aug_seed)
    s = float(rng.uniform(*scale)) if scale[1] > scale[0] else float(scale[0])
    hs, ws = max(1, round(size[0] * s)), max(1, round(size[1] * s))
    y0 = int(rng.integers(0, max(hs, crop[0]) - crop[0] + 1))
    x0 = int(rng.integers(0, max(ws, crop[1]) - crop[1] + 1))
    flip = bool(hflip and rng.random() < 0.5)
    return s, (y0, x0), flip


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
        from distill.data import StepSampler

        info = self.info
        sampler = StepSampler(len(self), cfg.batch, cfg.iters, start_step, rank, world, cfg.seed)
        crop, scale = tuple(cfg.crop), (cfg.scale_min, cfg.scale_max)
        batch: list[tuple[int, int]] = []
        for item in sampler:
            batch.append(item)
            if len(batch) == sampler.per_rank:
                idx = [i for i, _ in batch]
                params = [draw_params(seed, tuple(self.sizes_np[i]), crop, scale, cfg.hflip) for i, seed in batch]
                yield gpu_augment(self.images, self.labels, self.sizes, idx, [p[0] for p in params],
                                  [p[1] for p in params], [p[2] for p in params], crop, info.mean, info.std)
                batch = []
