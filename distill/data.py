"""Torch data pipeline over any reader: pair transforms, a resumable sampler, loaders.

A reader yields ``(uint8 RGB HxWx3, uint8 HxW label)``. Transforms map ``(image, label)`` to
``(image, label)`` on NumPy arrays with OpenCV; labels always resize with NEAREST and pad with
255 (ignored), images pad with the mean colour (zero after normalisation). Images become network
input through the :class:`~rdd_edge.normalize.Normalization` of the network's weights (channel
order, scale, mean, std), never through constants of the data set.

Determinism: the training stream is a fixed sequence of positions. Position ``p`` reads sample
``perm_e[p % n]`` with ``e = p // n`` (a fresh permutation per epoch from ``(seed, e)``) and
augments it with a generator seeded by ``(seed, p)``. Step ``s`` with global batch ``B`` covers
positions ``s*B .. s*B+B-1``, split into equal contiguous slices per process. So the data a step
sees depends only on the seed and the step: resuming at step ``k`` continues exactly, and one
process with batch ``B`` sees the same samples (and augmentations) as ``N`` processes with
``B/N`` each. Both data paths keep this: the CPU path (:class:`TrainPreset` in the loader) and
the device path (the loader decodes and draws the augmentation from the same per-sample
generator, :func:`device_batch` applies it on the training device), and so does any number of
loader workers (batches come back in step order).

Loader workers: :func:`resolve_workers` turns ``--workers auto`` into a number per training
process (on CUDA from the CPUs this process may use; on a CPU, :data:`CPU_WORKERS`).
"""

from __future__ import annotations

import functools
import math
import os
import signal
from typing import Callable, Iterator, Mapping, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from rdd_edge.normalize import Normalization

IGNORE = 255
AUTO = "auto"
# ``--workers auto`` when training on a CPU (with at least 2 CPUs per training process; else 0).
# benchmarks/RESULTS.md ("Training data pipeline"), R18 on the synthetic preset on 2 cores: 2 workers
# were the fastest (once tied with 1) in each of 7 rounds (0.546-0.581 s/it against 0.550-0.608 with none:
# 0.5-5% faster); the wait for data fell from 12% of the time to 0.5%, and the step lost less than
# that to the workers sharing its cores.
CPU_WORKERS = 2
# ``--workers auto`` on CUDA: at most this many per training process. benchmarks/RESULTS.md: one worker
# decodes ~15 Cityscapes-size images/s (1024x2048 PNG pairs, one core of a 2-core Xeon), and an H100
# distilling DeepLabV3-R18 takes ~107 images/s (150 ms per batch of 16 at 512x1024): 8 workers; 12
# leaves half again for slower cores and larger files without flooding big nodes with processes.
MAX_AUTO_WORKERS = 12
PairTransform = Callable[[np.ndarray, np.ndarray, np.random.Generator], "tuple[np.ndarray, np.ndarray]"]


# ---------------------------------------------------------------- pair transforms (numpy)
def draw_scale(rng, lo: float, hi: float, step: float = 0.0) -> float:
    """A scale factor: uniform in [lo, hi] (``step`` 0), or one of lo, lo + step, ..., hi with equal chance
    (the released code's ``0.5 + randint(0, 15) / 10``: ``step=0.1`` over 0.5..2.0)."""
    if hi <= lo:
        return float(lo)
    if step > 0:
        n = int(round((hi - lo) / step))
        return float(round(lo + step * int(rng.integers(0, n + 1)), 10))
    return float(rng.uniform(lo, hi))


class RandomScale:
    """Resize image (bilinear) and label (nearest) by a factor drawn from [lo, hi] (on a grid of ``step`` if > 0)."""

    def __init__(self, lo: float, hi: float, step: float = 0.0):
        self.lo, self.hi, self.step = lo, hi, step

    def __call__(self, image, label, rng):
        s = draw_scale(rng, self.lo, self.hi, self.step)
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
    """uint8 RGB HxWx3 -> float32 3xHxW network input (``normalization``); label -> int64 HxW tensor."""

    def __init__(self, normalization: Normalization):
        self.normalization = normalization

    def __call__(self, image, label, rng):
        x = self.normalization.apply(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return (torch.from_numpy(np.ascontiguousarray(x)),
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

    def __init__(self, crop: tuple[int, int], normalization: Normalization, scale: tuple[float, ...] = (0.5, 2.0),
                 hflip: bool = True):
        ts: list = [RandomScale(*scale), PadIfNeeded(crop, normalization.fill_rgb()), RandomCrop(crop)]
        if hflip:
            ts.append(RandomHFlip())
        ts.append(Normalize(normalization))
        super().__init__(ts)


class EvalPreset(Compose):
    """Resize the image to the eval size, normalise; the label keeps its size so mIoU is measured
    at full label resolution (logits are upsampled to it).

    ``eval_size=None`` keeps every image whole at its own size (no resize, aspect kept): the
    protocol of data sets that declare ``eval_whole`` (VOC, ADE20K; ``DatasetInfo.default_eval_size``).
    Padding to the network's stride happens at prediction time (``distill.evaluate.predict_logits``)."""

    def __init__(self, eval_size: tuple[int, int] | None, normalization: Normalization, resize_labels: bool = False):
        super().__init__([Resize(eval_size, labels=resize_labels), Normalize(normalization)])


# ---------------------------------------------------------------- augmentation on the device
class AugmentDraws:
    """Decode-only item for the device path: ``(image, label, (scale, (y0, x0), flip))``.

    The draws are :func:`draw_params`' from the sample's own generator, so a sample gets the
    same scale, crop and flip as :class:`TrainPreset` would give it on the CPU."""

    def __init__(self, crop: tuple[int, int], scale: tuple[float, ...] = (0.5, 2.0), hflip: bool = True):
        self.crop, self.scale, self.hflip = tuple(crop), tuple(scale), hflip

    def __call__(self, image, label, rng):
        return image, label, draw_params(rng, label.shape, self.crop, self.scale, self.hflip)


def draw_params(rng, size: tuple[int, int], crop: tuple[int, int], scale: tuple[float, ...],
                hflip: bool) -> tuple[float, tuple[int, int], bool]:
    """(scale, (y0, x0), flip) of one sample of ``size`` (H, W), in the CPU pipeline's order of draws
    (:class:`RandomScale`, :class:`PadIfNeeded` + :class:`RandomCrop`, :class:`RandomHFlip`).

    ``rng``: the sample's generator or its seed."""
    rng = np.random.default_rng(rng)
    s = draw_scale(rng, *scale)
    hs, ws = max(1, round(size[0] * s)), max(1, round(size[1] * s))
    y0 = int(rng.integers(0, max(hs, crop[0]) - crop[0] + 1))
    x0 = int(rng.integers(0, max(ws, crop[1]) - crop[1] + 1))
    flip = bool(hflip and rng.random() < 0.5)
    return s, (y0, x0), flip


def device_collate(batch):
    """Collate :class:`AugmentDraws` items: ``(images uint8 (B, Hm, Wm, 3), labels uint8 (B, Hm, Wm),
    sizes (B, 2), scales (B,), offsets (B, 2), flips (B,))``.

    Images keep their full size (padded bottom/right to the largest of the batch; the padding is
    never read) and stay uint8, a quarter of the bytes of normalised float crops at Cityscapes size."""

    hm = max(b[1].shape[0] for b in batch)
    wm = max(b[1].shape[1] for b in batch)

    def padded(a: np.ndarray, fill: int) -> torch.Tensor:
        ph, pw = hm - a.shape[0], wm - a.shape[1]
        if ph or pw:
            a = cv2.copyMakeBorder(a, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=fill)
        return torch.from_numpy(np.ascontiguousarray(a))

    images = default_collate([padded(b[0], 0) for b in batch])  # in a worker: straight into shared memory
    labels = default_collate([padded(b[1], IGNORE) for b in batch])
    sizes = torch.tensor([b[1].shape for b in batch], dtype=torch.int64)
    scales = torch.tensor([b[2][0] for b in batch], dtype=torch.float32)
    offsets = torch.tensor([b[2][1] for b in batch], dtype=torch.int64)
    flips = torch.tensor([b[2][2] for b in batch], dtype=torch.bool)
    return images, labels, sizes, scales, offsets, flips


def device_batch(batch, device: torch.device, crop: tuple[int, int],
                 normalization: Normalization) -> tuple[torch.Tensor, torch.Tensor]:
    """A :func:`device_collate` batch on ``device``, augmented there: ``(float32 (B, 3, ch, cw), int64 (B, ch, cw))``.

    Copies are ``non_blocking`` (from pinned memory they do not wait for the device) and the
    augmentation is queued behind them, so nothing here waits for the GPU."""
    images, labels, sizes, scales, offsets, flips = (t.to(device, non_blocking=True) for t in batch)
    return gpu_augment(images.permute(0, 3, 1, 2), labels, sizes, None, scales, offsets, flips, tuple(crop), normalization)


@functools.lru_cache(maxsize=16)
def _affine(normalization: Normalization, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, 3, 1, 1) ``mul`` and ``add`` of ``normalization`` on ``device``, made once (a copy from Python
    values waits for the device)."""
    mul, add = normalization.affine()
    return (torch.tensor(mul, dtype=torch.float32).view(1, 3, 1, 1).to(device),
            torch.tensor(add, dtype=torch.float32).view(1, 3, 1, 1).to(device))


def normalize_tensor(x: torch.Tensor, normalization: Normalization) -> torch.Tensor:
    """(N, 3, H, W) RGB pixels in 0..255 (any float or uint8 dtype) -> float32 network input."""
    x = x.float()
    if normalization.order != "rgb":
        x = x[:, list(normalization.perm)]
    mul, add = _affine(normalization, x.device)
    return x * mul + add


def renormalizer(src: Normalization, dst: Normalization) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """A function turning network input made with ``src`` into the same pixels made with ``dst``
    (e.g. a student's input into its teacher's); None when both normalise alike.

    Exact up to float rounding: ``src`` is undone per channel (back to 0..255 RGB), then ``dst`` applied.
    """
    if (src.order, src.scale, src.mean, src.std) == (dst.order, dst.scale, dst.mean, dst.std):
        return None
    inverse = [src.perm.index(c) for c in range(3)]  # RGB channel c sits at this index of src's input

    def convert(x: torch.Tensor) -> torch.Tensor:
        mul, add = _affine(src, x.device)
        return normalize_tensor(((x.float() - add) / mul)[:, inverse], dst)

    return convert


def gpu_augment(images, labels, sizes, idx, scales, offsets, flips, crop: tuple[int, int], normalization: Normalization):
    """Random-scale / pad / crop / flip / normalise a batch on the tensors' device, in one gather.

    ``images`` (N, 3, Hm, Wm) uint8 and ``labels`` (N, Hm, Wm) uint8 hold the images (padded to
    the largest; ``sizes`` (N, 2) the true h, w). Per sample b of the batch: ``idx[b]`` picks
    the image (``idx=None``: sample b is image b), ``scales[b]`` resizes it to
    ``round(h*s), round(w*s)``, which is padded bottom/right to the crop, cropped at
    ``offsets[b] = (y0, x0)`` and mirrored when ``flips[b]``. Images are bilinear (pixel centres,
    like cv2.INTER_LINEAR) and normalised (``normalization``); labels are nearest; padding is 0
    after normalisation (the mean colour) for images and 255 for labels. Returns ``(float32 (B, 3, ch, cw), int64 (B, ch, cw))``.
    """

    dev = images.device
    ch, cw = crop
    if idx is not None:
        idx = torch.as_tensor(idx, device=dev, dtype=torch.long)
        images, labels, sizes = images[idx], labels[idx], torch.as_tensor(sizes, device=dev)[idx]
    n = images.shape[0]
    s = torch.as_tensor(scales, device=dev, dtype=torch.float32)
    off = torch.as_tensor(offsets, device=dev, dtype=torch.float32).reshape(-1, 2)
    flip = torch.as_tensor(flips, device=dev, dtype=torch.bool)
    hw = torch.as_tensor(sizes, device=dev).float()  # (B, 2) true sizes
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
    x = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    x = normalize_tensor(x, normalization) * inside[:, None]
    # label: nearest source pixel, 255 outside the scaled image
    iy = torch.minimum(torch.floor((dy + 0.5) / sy), (h - 1)[:, None]).long()  # (B, ch)
    ix = torch.minimum(torch.floor((dx + 0.5) / sx), (w - 1)[:, None]).long()  # (B, cw)
    flat = (iy[:, :, None] * wm + ix[:, None, :]).reshape(n, -1)
    y = labels.reshape(n, -1).gather(1, flat).reshape(n, ch, cw).long()
    y = torch.where(inside, y, torch.full_like(y, IGNORE))
    return x.contiguous(), y


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


def train_loader(reader, cfg, normalization: Normalization, start_step: int, rank: int, world: int,
                 workers: int | None = None, device_augment: bool = False, pin_memory: bool | None = None) -> DataLoader:
    """The training loader for steps ``start_step .. cfg.iters-1`` of this process (input made with ``normalization``).

    ``workers``: loader processes (default: ``cfg.workers`` resolved for a CPU run). With
    ``device_augment`` the loader only decodes: its batches are :func:`device_collate`'s (whole
    uint8 images and each sample's augmentation draws) for :func:`device_batch` to scale, crop,
    flip and normalise on the training device; otherwise :class:`TrainPreset` does all of it here.
    ``pin_memory`` (default: CUDA is present) pins batches for asynchronous copies to the GPU.
    """
    crop, scale = tuple(cfg.crop), (cfg.scale_min, cfg.scale_max, cfg.scale_step)
    if device_augment:
        tf: PairTransform = AugmentDraws(crop, scale, cfg.hflip)
    else:
        tf = TrainPreset(crop, normalization, scale, cfg.hflip)
    sampler = StepSampler(len(reader), cfg.batch, cfg.iters, start_step, rank, world, cfg.seed)
    workers = resolve_workers(cfg.workers, "cpu") if workers is None else int(workers)
    return DataLoader(
        TorchSegDataset(reader, tf), batch_size=sampler.per_rank, sampler=sampler, drop_last=False,
        collate_fn=device_collate if device_augment else None, num_workers=workers,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        persistent_workers=workers > 0, prefetch_factor=2 if workers > 0 else None,
        # no cv2.setNumThreads in the workers: after a fork from a process whose OpenCV thread pool
        # has run, it deadlocks (seen with opencv-python here)
        # own generator: creating the iterator must not draw from the global torch RNG (resume)
        generator=torch.Generator().manual_seed(cfg.seed),
        worker_init_fn=_worker_ignores_sigterm if workers > 0 else None,
    )


def _worker_ignores_sigterm(worker_id: int) -> None:
    """A loader worker leaves SIGTERM to the training process: ``timeout``, SLURM and a shell's kill of the process
    group send it to every process, and a worker killed by it makes torch raise "worker killed" in the trainer
    before the trainer can save. The trainer shuts its workers down itself (and they exit when it is gone)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def eval_loader(reader, normalization: Normalization, eval_size: tuple[int, int] | None, rank: int = 0, world: int = 1,
                batch: int = 1, workers: int = 0, persistent: bool = False) -> DataLoader:
    """Whole-image eval loader over this process's shard (input made with ``normalization``); labels at their original size.

    ``eval_size=None``: each image at its own size, one image per batch (sizes differ).
    ``persistent``: keep the worker processes between passes (the trainer validates many times)."""
    ds = TorchSegDataset(reader, EvalPreset(eval_size, normalization))
    return DataLoader(ds, batch_size=batch if eval_size is not None else 1, sampler=ShardSampler(len(reader), rank, world),
                      num_workers=workers, collate_fn=eval_collate, persistent_workers=persistent and workers > 0,
                      worker_init_fn=_worker_ignores_sigterm if workers > 0 else None)


def close_loader(loader) -> None:
    """Stop a loader's persistent worker processes now.

    torch has no public call for it; left to the garbage collector (a loader inside a traceback,
    say) the shutdown waited 5 s per worker here (a worker whose queue was already closed never
    hears it should stop)."""
    it = getattr(loader, "_iterator", None)
    if it is not None and hasattr(it, "_shutdown_workers"):
        it._shutdown_workers()
        loader._iterator = None


# ---------------------------------------------------------------- how many loader workers
def auto_workers(device_type: str, cpus: int, local_world: int = 1) -> int:
    """Loader workers per training process for ``--workers auto`` (pure).

    ``cpus`` (those this process may use) are shared evenly by the ``local_world`` training
    processes of this node. On CUDA: that share less one for the training process itself (it
    launches the GPU work and pins batches), at most :data:`MAX_AUTO_WORKERS`. On a CPU:
    :data:`CPU_WORKERS` (measured fastest) when the share is at least 2 CPUs, else none.
    """
    per_process = max(1, int(cpus)) // max(1, int(local_world))
    if device_type != "cuda":
        return CPU_WORKERS if per_process >= 2 else 0
    return max(0, min(MAX_AUTO_WORKERS, per_process - 1))


def available_cpus() -> int:
    """CPUs this process may really use: its affinity mask where the OS has one (else all), capped by a
    container's CPU quota (cgroup ``cpu.max``; ``docker --cpus 2`` on a 16-core host is 2, not 16)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cpu_quota()
    return max(1, min(cpus, math.ceil(quota))) if quota is not None else cpus


def cgroup_cpu_quota(root: str = "/sys/fs/cgroup") -> float | None:
    """CPUs' worth of time the cgroup may use (cgroup v2 ``cpu.max``, or v1 ``cpu.cfs_quota_us`` / period);
    None when unlimited or unknown."""
    for path, split in ((f"{root}/cpu.max", None), (f"{root}/cpu/cpu.cfs_quota_us", f"{root}/cpu/cpu.cfs_period_us")):
        try:
            if split is None:
                quota, period = open(path).read().split()[:2]
            else:
                quota, period = open(path).read().strip(), open(split).read().strip()
            if quota in ("max", "-1"):
                return None
            return int(quota) / int(period)
        except (OSError, ValueError):
            continue
    return None


def resolve_workers(value: int | str, device_type: str, cpus: int | None = None,
                    env: Mapping[str, str] | None = None, in_memory: bool = False) -> int:
    """``--workers`` as a number: an explicit count as given; ``auto`` from :func:`auto_workers` with
    this machine's :func:`available_cpus` and the processes per node (``LOCAL_WORLD_SIZE``, set by
    torchrun; 1 otherwise). ``cpus`` / ``env`` stand in for the machine's (tests)."""
    if value != AUTO:
        return int(value)
    if in_memory and device_type != "cuda":  # nothing to decode: workers would take CPU time from training
        return 0
    env = os.environ if env is None else env
    local_world = int(env.get("LOCAL_WORLD_SIZE") or 1)
    return auto_workers(device_type, available_cpus() if cpus is None else cpus, local_world)
