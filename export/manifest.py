"""``<run>/export/manifest.json``: everything deploy needs to run the artifacts (see ARCHITECTURE.md)."""

from __future__ import annotations

import importlib.metadata as md
import platform
from pathlib import Path
from typing import Any

from rdd_edge.export.onnx_io import sha256_file
from rdd_edge.normalize import EMBED_MODES, embed_mode
from rdd_edge.runs import write_json

FORMAT = "rdd-edge-export"
VERSION = 1
MANIFEST = "manifest.json"


def tool_versions() -> dict[str, str | None]:
    """Versions of the packages that shaped the artifacts (None where not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in ("rdd-edge", "torch", "onnx", "onnxruntime", "onnxslim", "onnxscript", "timm", "tensorrt"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def new_manifest(model_name: str, dataset: dict[str, Any], data: Any, size: tuple[int, int], output: str, embedded: bool | str,
                 dynamic: bool, opset: int, source: Path, source_sha256: str, io: dict[str, Any],
                 normalization: Any) -> dict[str, Any]:
    """The manifest before any artifact is listed; ``data`` is the DataSpec the checks ran on,
    ``normalization`` the input the weights were trained on (``rdd_edge.normalize``; deploy applies it)."""
    h, w = size
    mode = embed_mode(embedded)  # '' or the raw pixels the graph takes (normalize.EMBED_MODES): deploy feeds those
    embed = {"embed": mode, "channel_order": EMBED_MODES[mode][1]} if mode else {}
    spatial: list[Any] = ["height", "width"] if dynamic else [h, w]
    return {
        "format": FORMAT, "version": VERSION,
        "model_name": model_name,
        "num_classes": len(dataset.get("classes", [])),
        "classes": list(dataset.get("classes", [])),
        "palette": [list(c) for c in dataset.get("palette", [])],
        "dataset": dataset.get("name"),
        "data": data.as_dict(),  # the images training validated on: check scores on the same by default
        "ignore_index": dataset.get("ignore_index", 255),
        "normalization": normalization.as_dict(),
        "input": {"name": "images", "shape": ["batch", 3, *spatial], "size": [h, w],
                  "dtype": EMBED_MODES[mode][0] if mode else "float32", "layout": "NCHW", "embedded_preprocess": bool(mode),
                  **embed},
        "outputs": io.get("outputs", []),
        "output": output,
        "dynamic": dynamic,
        "opset": opset,
        "source_checkpoint": str(source),
        "source_sha256": source_sha256,
        "versions": tool_versions(),
        "artifacts": {},
    }


def add_artifact(manifest: dict[str, Any], key: str, path: Path, precision: str, runtime: str, **extra: Any) -> dict:
    """Record one artifact (file name relative to the export folder, size, precision, checks)."""
    entry = {"file": path.name, "precision": precision, "runtime": runtime,
             "bytes": path.stat().st_size, "sha256": sha256_file(path), **extra}
    manifest["artifacts"][key] = entry
    return entry


def save_manifest(manifest: dict[str, Any], out_dir: Path) -> Path:
    return write_json(Path(out_dir) / MANIFEST, manifest)
