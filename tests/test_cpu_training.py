"""CPU training that uses the CPU it has (issue 21): rendered scenes kept in memory, no loader workers for
in-memory data on a CPU, threads from the CPUs the process really has, channels_last on a CPU too, with the
same learning as the contiguous layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rdd_edge.data import synthetic as S
from rdd_edge.distill import data as D
from train_helpers import readers, tiny_config


def test_a_cached_scene_equals_its_render_and_callers_cannot_change_the_cache(monkeypatch):
    monkeypatch.setattr(S, "_CACHE", S._RenderCache())
    scenes = S.SyntheticScenes("train", 3, size=(48, 96), seed=7)
    first = scenes[1]
    again = scenes[1]
    image, label = S.render_scene(S.item_seed(7, "train", 1), (48, 96))
    assert np.array_equal(first[0], image) and np.array_equal(first[1], label)
    assert np.array_equal(again[0], image) and again[0] is not first[0]
    first[0][:] = 0  # an in-place augmentation of what it got
    assert np.array_equal(scenes[1][0], image)
    assert len(S._CACHE.items) == 1


def test_the_cache_stops_growing_at_its_limit_and_says_when_a_set_fits(monkeypatch):
    one = 48 * 96 * 4  # image (3 bytes) + label (1 byte) per pixel
    monkeypatch.setattr(S, "_CACHE", S._RenderCache(limit=2 * one))
    scenes = S.SyntheticScenes("train", 3, size=(48, 96))
    for i in range(3):
        scenes[i]
    assert len(S._CACHE.items) == 2 and S._CACHE.used == 2 * one
    assert np.array_equal(scenes[2][0], S.render_scene(S.item_seed(0, "train", 2), (48, 96))[0])  # still rendered
    assert not scenes.in_memory and S.SyntheticScenes("train", 2, size=(48, 96)).in_memory


def test_in_memory_data_gets_no_loader_workers_on_a_cpu_only():
    assert D.resolve_workers("auto", "cpu", cpus=16, env={}, in_memory=True) == 0
    assert D.resolve_workers("auto", "cpu", cpus=16, env={}, in_memory=False) == D.CPU_WORKERS
    assert D.resolve_workers("auto", "cuda", cpus=6, env={}, in_memory=True) == 5
    assert D.resolve_workers(2, "cpu", cpus=16, env={}, in_memory=True) == 2  # a number wins


@pytest.mark.parametrize("files, quota", [
    ({"cpu.max": "200000 100000\n"}, 2.0),
    ({"cpu.max": "150000 100000\n"}, 1.5),
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3.0),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({}, None),
])
def test_the_container_cpu_quota_is_read_from_cgroup_v2_and_v1(tmp_path, files, quota):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert D.cgroup_cpu_quota(str(tmp_path)) == quota


def test_threads_follow_the_cpus_the_process_has(monkeypatch):
    from rdd_edge.distill.train import fit_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
        monkeypatch.setattr(D, "cgroup_cpu_quota", lambda: 1.0)  # docker --cpus 1 on a bigger host
        assert fit_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's word wins
        torch.set_num_threads(3)
        assert fit_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_channels_last_on_a_cpu_learns_the_same(tmp_path, monkeypatch):
    """The NHWC layout changes how oneDNN computes, not what: the same loss, the same update up to float rounding.
    Dropout is off here: its masks are drawn in the tensor's memory order, so they differ (same distribution)."""
    from rdd_edge.distill.train import train
    from rdd_edge.models import create_model

    monkeypatch.setattr(torch.nn.Dropout, "forward", lambda self, x: x)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")  # NHWC whatever CPU runs the test
    for cl in (False, True):
        train(tiny_config(iters=1, val_every=1, batch=2, channels_last=cl, workers=0), data=readers(),
              run_dir=tmp_path / str(cl), progress=False)
    a, b = (torch.load(tmp_path / str(cl) / "last.pt", weights_only=True)["state_dict"] for cl in (False, True))
    loss = [float((tmp_path / str(cl) / "train_log.csv").read_text().splitlines()[1].split(",")[2]) for cl in (False, True)]
    # the first step's loss: one float32 forward pass through the network in two memory layouts, which oneDNN sums in
    # different orders (seen 4.7e-6 relative with AVX-512 and AVX2 kernels, 2.6e-6 scalar): 1e-4 is ~20x that
    assert loss[1] == pytest.approx(loss[0], rel=1e-4)
    torch.manual_seed(0)
    init = create_model("mbv2", num_classes=4, head_channels=8).state_dict()  # the trainer's init (seed 0)
    keys = [k for k in a if a[k].is_floating_point() and "running" not in k]
    update = sum(float((a[k].double() - init[k].double()).square().sum()) for k in keys) ** 0.5
    apart = sum(float((a[k].double() - b[k].double()).square().sum()) for k in keys) ** 0.5
    assert update > 0 and apart / update < 0.05, (apart, update)  # measured 1.2%: BN biases whose true gradient is ~0


def test_nhwc_only_where_it_is_the_fast_layout(monkeypatch):
    """channels_last on CUDA and on CPUs whose torch kernels are AVX2 or wider; NCHW on narrower ones, where
    oneDNN's NHWC kernels made a distillation step 38% slower (benchmarks/RESULTS.md, kernels capped to AVX)."""
    import dataclasses

    from rdd_edge.distill.train import build_step_context, use_channels_last
    from rdd_edge.models import create_model

    cfg = tiny_config(iters=1)
    cpu = torch.device("cpu")
    for capability, nhwc in (("AVX512", True), ("AVX2", True), ("DEFAULT", False), ("SVE256", False)):
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda c=capability: c)
        assert use_channels_last(cfg, cpu) is nhwc, capability
        assert use_channels_last(cfg, torch.device("cuda")) is True  # a device object only: no GPU needed
        student = create_model("mbv2", num_classes=4, head_channels=8)
        ctx = build_step_context(cfg, student)
        conv = next(m for m in student.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
        assert ctx.channels_last is nhwc
        assert conv.weight.is_contiguous(memory_format=torch.channels_last if nhwc else torch.contiguous_format)
    off = dataclasses.replace(cfg, channels_last=False)
    assert not use_channels_last(off, cpu) and not use_channels_last(off, torch.device("cuda"))
