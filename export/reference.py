"""The source checkpoint as a row of ``rdd-edge check`` (torch side, so ``deploy/`` stays torch-free).

Same pre/post-processing as the runtime: resize + normalise with deploy's ``preprocess``, logits
upsampled bilinearly to the input size (as the exported graph does), argmax, nearest resize.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rdd_edge.deploy.check import Candidate
from rdd_edge.deploy.info import ModelInfo, default_palette, read_manifest
from rdd_edge.deploy.postprocess import resize_labels, to_labels
from rdd_edge.deploy.preprocess import preprocess
from rdd_edge.export.parity import torch_outputs
from rdd_edge.normalize import recorded_normalization

# lazy imports here: torch and rdd_edge.models, so that deploy's check can load this module by its entry
# point on a torch-free device (torch_candidate then gives no row)


def torch_candidate(export_dir: Path, threads: int | None = None) -> Any:
    """A check row for the manifest's source checkpoint; None when torch or the checkpoint is absent."""
    manifest, _ = read_manifest(Path(export_dir) / "manifest.json")
    ckpt = (manifest or {}).get("source_checkpoint")
    if not ckpt or not Path(ckpt).is_file():
        return None
    try:
        import torch  # noqa: F401

        import rdd_edge.models  # noqa: F401
    except ImportError:
        return None
    # the checkpoint lies outside the export (the run's best.pt): loaded only through the safe unpickler,
    # and only when it is the file the export was made from
    sha = (manifest or {}).get("source_sha256")
    return Candidate(name="torch", load=lambda: TorchSegmenter(Path(ckpt), manifest, threads), file=Path(ckpt),
                     precision="fp32", gated=False, sha256=sha if isinstance(sha, str) else None, needs_sha=False)


class TorchSegmenter:
    """The torch model behind the ``Segmenter`` interface the check uses (preprocess, run, predict_batch)."""

    def __init__(self, ckpt: Path, manifest: dict, threads: int | None = None) -> None:
        import torch

        from rdd_edge.models import model_from_checkpoint

        if threads:
            torch.set_num_threads(int(threads))
        self.provider = f"torch {torch.__version__} CPU"
        self.model, _ = model_from_checkpoint(ckpt, aux=False)
        inp = manifest.get("input", {})
        classes = list(manifest.get("classes") or [])
        self.info = ModelInfo(classes=classes, palette=default_palette(len(classes)),
                              input_size=tuple(inp.get("size") or inp.get("shape")[2:]),
                              normalization=recorded_normalization(manifest), output_names=["logits"])

    def preprocess(self, image):  # noqa: ANN001, ANN201
        return preprocess(image, self.info.input_size, self.info.normalization)

    def run(self, batch):  # noqa: ANN001, ANN201
        return torch_outputs(self.model, batch, self.info.normalization, embedded=False)["logits"]

    def predict_batch(self, images):  # noqa: ANN001, ANN201
        labels = to_labels(self.run(np.concatenate([self.preprocess(im) for im in images])), "logits")
        return [resize_labels(lab, im.shape[:2]) for lab, im in zip(labels, images)]
