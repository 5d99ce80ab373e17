"""deploy.Segmenter splits batches the engine/graph cannot take in one call, and closes its backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rdd_edge import deploy
from rdd_edge.deploy.info import ModelInfo, default_palette
from rdd_edge.deploy.runtime import Segmenter
from deploy_utils import write_manifest
from trt_double import tiny_fp32_onnx


class CountingBackend:
    """max_batch 3; labels = channel 0 > 0; records every call's batch size and close()."""

    provider = "counting"
    max_batch = 3

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.closed = False

    def run(self, batch: np.ndarray, outputs=None) -> dict[str, np.ndarray]:
        assert batch.shape[0] <= self.max_batch
        self.sizes.append(batch.shape[0])
        return {"labels": (batch[:, 0] > 0).astype(np.int64)}

    def close(self) -> None:
        self.closed = True


def _info(batch=None) -> ModelInfo:
    return ModelInfo(classes=["a", "b"], palette=default_palette(2), input_size=(8, 8), output_names=["labels"], batch=batch)


def test_batch_larger_than_the_engine_is_split_in_order():
    be = CountingBackend()
    with Segmenter(be, _info(), Path("x.engine")) as seg:
        assert seg.max_batch == 3
        x = np.random.default_rng(0).normal(size=(7, 3, 8, 8)).astype(np.float32)
        out = seg.run(x)
        assert be.sizes == [3, 3, 1] and out.shape == (7, 8, 8)
        assert (out == (x[:, 0] > 0)).all()
        be.sizes.clear()
        seg.run(x[:2])
        assert be.sizes == [2]
    assert be.closed


def test_static_batch_graph_pads_the_last_chunk(tmp_path):
    path = tiny_fp32_onnx(tmp_path / "model.onnx", (16, 24), batch=2)
    write_manifest(tmp_path, (16, 24), output="both")
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (20, 30, 3), dtype=np.uint8) for _ in range(5)]
    with deploy.load(path, device="cpu") as seg:
        assert seg.info.batch == 2 and seg.max_batch == 2
        together = seg.predict_batch(images)  # 2 + 2 + 1 (padded to 2)
        alone = [seg.predict_batch([im, im])[0] for im in images]
    assert len(together) == 5 and all((a == b).all() for a, b in zip(together, alone))
