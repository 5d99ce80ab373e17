"""The training loader: the same batches for any number of workers, on both data paths (CPU
augmentation; decode-only batches augmented on the device), and ``--workers auto``."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rdd_edge.distill import data as D
from rdd_edge.distill.config import make_config, parse_overrides
from rdd_edge.errors import ConfigError
from train_helpers import Blobs

from rdd_edge.normalize import IMAGENET

CFG = SimpleNamespace(batch=4, iters=3, seed=5, crop=(24, 32), scale_min=0.5, scale_max=2.0, scale_step=0.0, hflip=True,
                      workers=0)


def _batches(workers: int, device_augment: bool, reader=None, start: int = 0, rank: int = 0, world: int = 1, cfg=CFG):
    """Every batch of the loader, augmented (on this CPU for the device path, as on a GPU)."""
    loader = D.train_loader(reader or Blobs(6), cfg, IMAGENET, start, rank, world, workers, device_augment=device_augment,
                            pin_memory=False)
    out = []
    for batch in loader:
        if device_augment:
            batch = D.device_batch(batch, torch.device("cpu"), cfg.crop, IMAGENET)
        out.append(batch)
    return out


def _same(a, b) -> None:
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


@pytest.mark.parametrize("device_augment", [False, True])
def test_two_workers_yield_the_batches_of_none(device_augment):
    none = _batches(0, device_augment)
    assert len(none) == CFG.iters and none[0][0].shape == (4, 3, 24, 32) and none[0][1].shape == (4, 24, 32)
    assert not torch.equal(none[0][1], none[1][1])  # the steps differ (a loader that repeats a batch fails)
    _same(_batches(2, device_augment), none)


def test_device_path_resumes_and_splits_across_processes_like_the_cpu_path():
    full = _batches(0, True)
    _same(_batches(0, True, start=1), full[1:])  # resume at step 1
    halves = [_batches(0, True, rank=r, world=2) for r in range(2)]
    for s in range(CFG.iters):  # 2 processes x 2 images == 1 process x 4
        assert torch.equal(torch.cat([halves[0][s][1], halves[1][s][1]]), full[s][1])
        assert torch.equal(torch.cat([halves[0][s][0], halves[1][s][0]]), full[s][0])


def test_device_path_draws_the_cpu_paths_crops_and_flips():
    """At scale 1 both paths are exact crops: the same positions and flips from the same per-sample seeds."""
    cfg = SimpleNamespace(**{**vars(CFG), "scale_min": 1.0, "scale_max": 1.0})
    cpu, dev = _batches(0, False, cfg=cfg), _batches(0, True, cfg=cfg)
    for (xc, yc), (xd, yd) in zip(cpu, dev):
        assert torch.equal(yc, yd)
        # the device path samples pixel centres with grid_sample through float32 coordinates (test_benchmark_camvid's
        # GRID_ATOL: <= 64 * 2**-22 px, times a neighbour up to 1 / 0.224 away = 6.8e-5); seen 4.1e-6 on AVX-512, AVX2, scalar
        torch.testing.assert_close(xc, xd, atol=64 * 2**-22 / min(IMAGENET.std), rtol=0)


def test_device_collate_pads_images_of_different_sizes():
    class Two:
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return Blobs(1, size=(32, 48) if i == 0 else (40, 36))[0]

    items = [D.AugmentDraws((24, 32))(*Two()[i], np.random.default_rng(i)) for i in range(2)]
    images, labels, sizes, scales, offsets, flips = D.device_collate(items)
    assert images.shape == (2, 40, 48, 3) and images.dtype == torch.uint8 and labels.shape == (2, 40, 48)
    assert sizes.tolist() == [[32, 48], [40, 36]] and (labels[0, 32:] == 255).all() and (labels[1, :, 36:] == 255).all()
    assert scales.dtype == torch.float32 and offsets.shape == (2, 2) and flips.dtype == torch.bool


# ------------------------------------------------------------------ --workers auto
@pytest.mark.parametrize("cpus, local_world, expected", [
    (16, 1, D.MAX_AUTO_WORKERS),  # one GPU, many CPUs: capped
    (16, 4, 3),  # 4 GPU processes share 16 CPUs: 4 each, one for the training process
    (8, 1, 7),
    (2, 2, 0),  # one CPU per process: load in the training process
    (1, 1, 0),
])
def test_auto_workers_on_cuda_share_the_cpus_between_processes(cpus, local_world, expected):
    assert D.resolve_workers("auto", "cuda", cpus=cpus, env={"LOCAL_WORLD_SIZE": str(local_world)}) == expected


def test_auto_workers_elsewhere_and_explicit_counts(monkeypatch):
    assert D.resolve_workers("auto", "cpu", cpus=64, env={}) == D.CPU_WORKERS == 2  # measured fastest on a CPU
    assert D.resolve_workers("auto", "cpu", cpus=2, env={"LOCAL_WORLD_SIZE": "2"}) == 0  # one CPU per process
    assert D.resolve_workers("auto", "cuda", cpus=6, env={}) == 5  # no LOCAL_WORLD_SIZE: one process
    assert D.resolve_workers(3, "cuda", cpus=64, env={"LOCAL_WORLD_SIZE": "8"}) == 3  # a number wins
    assert D.resolve_workers(0, "cuda", cpus=64, env={}) == 0
    monkeypatch.setattr(D.os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert D.available_cpus() == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert D.resolve_workers("auto", "cuda") == 2  # this process's affinity, not the machine's CPU count
    monkeypatch.delattr(D.os, "sched_getaffinity")  # e.g. macOS
    monkeypatch.setattr(D.os, "cpu_count", lambda: 5)
    assert D.available_cpus() == 5


def test_workers_option_takes_a_number_or_auto(capsys):
    assert make_config("distill").workers == "auto"
    assert make_config("distill", workers="4").workers == 4 and make_config("distill", workers=" AUTO ").workers == "auto"
    assert make_config("distill", **parse_overrides(["workers=2"])).workers == 2
    for bad, msg in (("many", "--workers 'many'"), (-1, "--workers -1: must be >= 0")):
        with pytest.raises(ConfigError, match=msg):
            make_config("distill", workers=bad)
    from rdd_edge.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["distill", "--workers", "lots", "--device", "cpu", "-q"])
    err = capsys.readouterr().err
    assert exc.value.code == 1 and err.startswith("error: --workers 'lots'") and err.count("\n") == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_path_on_a_gpu_matches_this_cpu_and_is_pinned():
    loader = D.train_loader(Blobs(6), CFG, IMAGENET, 0, 0, 1, 2, device_augment=True, pin_memory=True)
    for batch in loader:
        assert all(t.is_pinned() for t in batch)
        xc, yc = D.device_batch(batch, torch.device("cpu"), CFG.crop, IMAGENET)
        xg, yg = D.device_batch(batch, torch.device("cuda"), CFG.crop, IMAGENET)
        assert torch.equal(yg.cpu(), yc)
        torch.testing.assert_close(xg.cpu(), xc, atol=1e-4, rtol=0)  # CUDA rounds the coordinates its own way: ~1.5x that bound
