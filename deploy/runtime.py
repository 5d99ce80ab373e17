"""``load(path) -> Segmenter``: one object that turns RGB images into label maps, on any backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rdd_edge.devices import cuda_index, parse_device
from rdd_edge.errors import DeployError, RddError

from rdd_edge.deploy.backends.onnxruntime import OrtBackend
from rdd_edge.deploy.backends.tensorrt import TrtBackend
from rdd_edge.deploy.choose import choose_artifact, mismatch
from rdd_edge.deploy.class_count import file_class_count
from rdd_edge.deploy.info import ModelInfo, build_info
from rdd_edge.deploy.postprocess import resize_labels, to_labels, unletterbox
from rdd_edge.deploy.preprocess import RESIZE_MODES, check_image, letterbox, preprocess

SUFFIXES = {".onnx": "onnxruntime", ".engine": "tensorrt", ".plan": "tensorrt"}


class Segmenter:
    """A loaded model: ``predict(image) -> label map`` at the image's own size.

    ``run(batch)`` gives the raw network output (``labels`` when the graph emits them, else
    ``logits``) for an already preprocessed NCHW batch of any length (split into chunks the
    engine/graph accepts); ``info`` has classes, palette, input size. ``close()`` (or ``with``)
    releases the backend.
    """

    def __init__(self, backend: Any, info: ModelInfo, path: Path):
        self.backend = backend
        self.info = info
        self.path = path

    @property
    def provider(self) -> str:
        return str(getattr(self.backend, "provider", type(self.backend).__name__))

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        i = self.info
        return preprocess(image, i.input_size, i.normalization, embedded=i.embed_mode or i.embedded_preprocess)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Raw output for a preprocessed (N, 3, H, W) batch: labels (N, H, W) or logits (N, C, H, W)."""
        want = np.uint8 if (self.info.embed_mode or self.info.embedded_preprocess) in ("uint8", True) else np.float32
        if not isinstance(batch, np.ndarray) or batch.ndim != 4 or batch.shape[1] != 3:
            shape = getattr(batch, "shape", None)
            raise DeployError(f"{self.path.name}: run() expects a preprocessed (N, 3, H, W) batch, got shape {shape}")
        if batch.dtype != want:
            raise DeployError(f"{self.path.name}: run() expects a {np.dtype(want).name} batch, got {batch.dtype}; use preprocess()")
        fixed = self.static_batch  # a static-batch graph or engine takes exactly this many images
        limit = fixed or getattr(self.backend, "max_batch", None)
        n = batch.shape[0]
        if limit is None or (n <= limit and (fixed is None or n == fixed)):
            return self._run_one(batch)
        parts = []
        for i in range(0, n, limit):
            chunk = batch[i : i + limit]
            k = chunk.shape[0]
            if fixed is not None and k < fixed:  # pad the last chunk of a static-batch graph, drop the padding after
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], fixed - k, axis=0)])
            parts.append(self._run_one(chunk)[:k])
        return np.concatenate(parts)

    def _run_one(self, batch: np.ndarray) -> np.ndarray:
        out = self.backend.run(np.ascontiguousarray(batch), [self.info.output])
        return out[self.info.output]

    @property
    def fallback_note(self) -> str:
        """Why an ONNX Runtime GPU provider that was asked for is not in use ('' when none fell back)."""
        return str(getattr(self.backend, "fallback_note", "") or "")

    @property
    def static_batch(self) -> int | None:
        """The one batch size the model takes (a static-batch graph; an engine whose profile is a single
        batch, as DLA requires), None when it takes a range. Shorter batches are padded by :meth:`run`."""
        if self.info.batch:
            return self.info.batch
        lo, hi = getattr(self.backend, "min_batch", None), getattr(self.backend, "max_batch", None)
        return int(hi) if lo is not None and hi is not None and int(lo) == int(hi) else None

    @property
    def max_batch(self) -> int | None:
        """The largest batch one backend call takes (None: no limit); :meth:`run` splits larger ones."""
        return self.static_batch or getattr(self.backend, "max_batch", None)

    def close(self) -> None:
        """Release the backend (TensorRT context, stream and CUDA buffers; the ORT session)."""
        close = getattr(self.backend, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> "Segmenter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def predict_batch(self, images: Sequence[np.ndarray], resize: str = "stretch") -> list[np.ndarray]:
        """uint8 RGB images (any sizes) -> uint8 label maps, each at its image's size.

        ``resize``: ``stretch`` (each image resized to the model size, as check scores) or
        ``letterbox`` (aspect ratio kept, padded with the training mean colour; the labels of the
        padding are cut off before they are resized back onto the image).
        """
        if resize not in RESIZE_MODES:
            raise DeployError(f"resize {resize!r}: expected one of {', '.join(RESIZE_MODES)}")
        if len(images) == 0:
            return []
        imgs = [check_image(im, f"image {k}") for k, im in enumerate(images)]
        if resize == "letterbox":
            fill = self.info.normalization.fill_rgb()
            boxed = [letterbox(im, self.info.input_size, fill) for im in imgs]
            batch = np.concatenate([self.preprocess(b) for b, _ in boxed])
            labels = to_labels(self.run(batch), self.info.output)
            return [unletterbox(lab, box, im.shape[:2]) for lab, (_, box), im in zip(labels, boxed, imgs)]
        batch = np.concatenate([self.preprocess(im) for im in imgs])
        labels = to_labels(self.run(batch), self.info.output)
        return [resize_labels(lab, im.shape[:2]) for lab, im in zip(labels, imgs)]

    def predict(self, image: np.ndarray, resize: str = "stretch") -> np.ndarray:
        """One uint8 RGB HxWx3 image -> uint8 HxW label map (``resize``: see :meth:`predict_batch`)."""
        return self.predict_batch([check_image(image)], resize=resize)[0]

    def __repr__(self) -> str:
        h, w = self.info.input_size
        return f"Segmenter({self.path.name}, {self.provider}, {self.info.num_classes} classes, {h}x{w})"


def load(
    path: str | Path,
    providers: Sequence[str] | None = None,
    threads: int | None = None,
    device: str = "auto",
    cuda_mem: str | None = None,
) -> Segmenter:
    """Load an artifact by suffix: ``.onnx`` -> ONNX Runtime, ``.engine``/``.plan`` -> TensorRT.

    Configured from ``manifest.json`` beside the file (classes, palette, size, mean/std); without
    one, what the graph declares is used with ImageNet mean/std and a warning. ``providers``
    overrides ONNX Runtime's choice (TensorRT > CUDA > CPU), ``threads`` sets intra-op threads,
    ``device`` is ``auto``, ``cpu`` or ``cuda``; ``cuda_mem`` picks the engine's CUDA buffer binding
    (``libcudart``, ``cuda-python``, ``pycuda``; default: the board's libcudart first on a Jetson).
    """
    device = parse_device(device)
    path = Path(path)
    if not path.exists():
        raise DeployError(f"{path}: model file not found; pass an exported .onnx or .engine (see `rdd-edge export`)")
    notes: list[str] = []
    if path.is_dir():  # an export folder: the artifact that passed its check and still matches the manifest
        from rdd_edge.deploy.check import find_export_dir  # lazy: import cycle check <-> runtime

        try:
            export_dir = find_export_dir(path)
        except RddError:
            raise DeployError(f"{path}: is a folder without an export manifest; pass a model file inside it") from None
        path, notes = choose_artifact(export_dir, device)
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DeployError(f"{path}: unknown model type {path.suffix!r}; expected one of {sorted(SUFFIXES)}")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise DeployError(f"{path}: cannot read the model file ({exc.strerror})") from None
    if kind == "onnxruntime":
        backend: Any = OrtBackend(path, providers=providers, threads=threads, device=device)
    else:
        if device == "cpu":
            raise DeployError(f"{path}: a TensorRT engine needs an NVIDIA GPU; use the .onnx file with --device cpu")
        backend = TrtBackend(path, cuda_mem=cuda_mem, device=cuda_index(device))

    def probe(hw: tuple[int, int]) -> dict[str, np.ndarray]:
        b = backend.input_shape[0] if isinstance(backend.input_shape[0], int) else 1
        return backend.run(np.zeros((b, 3, *hw), dtype=backend.input_dtype))

    try:
        info = build_info(
            path, backend.input_name, backend.input_shape, backend.input_dtype, backend.output_names, backend.output_shapes, probe,
            graph_classes=file_class_count(path) if kind == "onnxruntime" else None,
        )
    except BaseException:
        close = getattr(backend, "close", None)
        if callable(close):
            close()
        raise
    if not notes and info.manifest is not None:  # a file named explicitly: run it, but say when it is not the export's
        why = mismatch(path, info.manifest)
        if why:
            notes.append(f"{why}: running it as named")
    info.notes[:0] = notes
    if getattr(backend, "fallback_note", ""):
        info.notes.append(backend.fallback_note)
    return Segmenter(backend, info, path)
