"""Helpers for the trainer tests: a tiny learnable reader and the DDP worker (importable by spawn)."""

from __future__ import annotations

import os

import numpy as np

from rdd_edge.data.base import DatasetInfo

SIZE = (32, 48)
INFO = DatasetInfo("blobs", ("sky", "wall", "road", "car"), ((70, 130, 180), (200, 200, 200), (80, 80, 80), (220, 40, 40)),
                   eval_size=SIZE, crop_size=SIZE)
COLORS = np.array([[60, 120, 220], [200, 200, 200], [80, 80, 80], [220, 40, 40]], np.int16)


class Blobs:
    """Bands (sky / wall / road) with red boxes (car), noisy colours; no ignored pixels."""

    info = INFO

    def __init__(self, n: int, seed: int = 0, size: tuple[int, int] = SIZE):
        self.n, self.seed, self.size = n, seed, size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        rng = np.random.default_rng([self.seed, int(i)])
        h, w = self.size
        lbl = np.zeros((h, w), np.uint8)
        lbl[h // 3:] = 1
        lbl[2 * h // 3:] = 2
        for _ in range(2):
            y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
            lbl[y:y + 8, x:x + 8] = 3
        img = COLORS[lbl] + rng.integers(-25, 25, (h, w, 3))
        return np.clip(img, 0, 255).astype(np.uint8), lbl

    def name(self, i: int) -> str:
        return f"blob{i}"


def readers(n_train: int = 8, n_val: int = 4):
    """The trainer's ``data=`` argument: blobs for train and val."""
    from rdd_edge.distill.train import TrainData

    return TrainData(INFO, Blobs(n_train), Blobs(n_val, seed=99), SIZE)


def no_dropout() -> None:
    """Dropout draws from each process's RNG stream, which differs by construction between 1 and N processes."""
    import torch

    torch.nn.Dropout.forward = lambda self, x: x


def tiny_config(mode: str = "teacher", **kw):
    from rdd_edge.distill.config import make_config

    base = dict(model="mbv2", model_kwargs={"head_channels": 8}, iters=4, batch=4, crop=SIZE, eval_size=SIZE,
                val_every=2, log_every=1, device="cpu", tensorboard=False)
    base.update(kw)
    return make_config(mode, base.pop("dataset", "synthetic"), **base)


def ddp_worker(rank: int, world: int, port: int, run_dir: str, cfg_dict: dict) -> None:
    """One process of a gloo DDP run (started by torch.multiprocessing)."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    import torch

    torch.set_num_threads(1)
    no_dropout()
    from rdd_edge.distill import dist
    from rdd_edge.distill.config import config_from_dict
    from rdd_edge.distill.train import train

    train(config_from_dict(cfg_dict), data=readers(), run_dir=run_dir, progress=False)
    dist.cleanup()
