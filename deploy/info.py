"""What the runtime needs to know about a model: classes, palette, input size, normalisation.

Read from the export stage's ``manifest.json`` beside the artifact (its ``normalization``: the
input the weights were trained on); without one, inferred from the graph's inputs and outputs
(size, dtype, class count) with the default normalisation (ImageNet mean/std) and generated
class names and palette, and a note saying so.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from rdd_edge.errors import DeployError

from rdd_edge.normalize import DEFAULT, EMBED_MODES, Normalization, recorded_normalization

MANIFEST_NAME = "manifest.json"


class DeployWarning(UserWarning):
    """Something was guessed (e.g. no manifest): the result may be off; the message says why."""


@dataclass
class ModelInfo:
    """Everything pre/post-processing and reports need, independent of the backend."""

    classes: list[str]
    palette: np.ndarray  # (C, 3) uint8 RGB
    input_size: tuple[int, int]  # (H, W)
    normalization: Normalization = DEFAULT
    embedded_preprocess: bool = False
    embed_mode: str = ""  # with embedded_preprocess: the raw pixels the graph takes (normalize.EMBED_MODES)
    input_name: str = "images"
    output_names: list[str] = field(default_factory=list)
    batch: int | None = None  # fixed batch size of the graph, None when dynamic
    model_name: str | None = None
    manifest: dict[str, Any] | None = None  # the manifest as read, None when inferred
    manifest_path: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def output(self) -> str:
        """``labels`` when the graph emits them (preferred), else ``logits``."""
        return "labels" if "labels" in self.output_names else "logits"

    def as_dict(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "classes": self.classes,
            "palette": self.palette.tolist(),
            "input_size": list(self.input_size),
            "normalization": self.normalization.as_dict(),
            "embedded_preprocess": self.embedded_preprocess,
            "embed": self.embed_mode,
            "input_name": self.input_name,
            "outputs": self.output_names,
            "batch": self.batch,
            "manifest": str(self.manifest_path) if self.manifest_path else None,
            "notes": self.notes,
        }


def default_palette(n: int) -> np.ndarray:
    """A deterministic, well-spread (n, 3) uint8 palette (the PASCAL VOC bit-interleaving scheme)."""
    pal = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


def read_manifest(artifact: str | Path) -> tuple[dict[str, Any] | None, Path]:
    """The ``manifest.json`` beside ``artifact`` (None when there is none)."""
    path = Path(artifact).parent / MANIFEST_NAME
    if not path.is_file():
        return None, path
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DeployError(f"{path}: unreadable export manifest ({exc}); re-run `rdd-edge export` or delete it") from None
    if not isinstance(data, dict) or data.get("format") != "rdd-edge-export":
        raise DeployError(f"{path}: not an rdd-edge export manifest (missing \"format\": \"rdd-edge-export\")")
    validate_manifest(data, path)
    return data, path


MAX_CLASSES = 1024  # ADE20K has 150; nothing real comes near this
MAX_SIDE = 16384


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and bool(np.isfinite(v))


def validate_manifest(m: dict[str, Any], path: Path) -> None:
    """The manifest's fields have the types and ranges deploy relies on (it is a file anyone can edit):
    DeployError naming the field otherwise, before anything is built from it."""
    def bad(field: str, want: str) -> DeployError:
        return DeployError(f"{path}: {field} {str(m.get(field.split('.')[0]))[:80]!r} is not {want}; re-export "
                           "or restore the manifest")

    classes = m.get("classes")
    if classes is not None and not (isinstance(classes, list) and 0 < len(classes) <= MAX_CLASSES
                                    and all(isinstance(c, str) for c in classes)):
        raise bad("classes", f"a list of 1..{MAX_CLASSES} class names")
    n = m.get("num_classes")
    if n is not None and not (isinstance(n, int) and not isinstance(n, bool) and 0 < n <= MAX_CLASSES):
        raise bad("num_classes", f"an integer in 1..{MAX_CLASSES}")
    if isinstance(classes, list) and n is not None and n != len(classes):
        raise DeployError(f"{path}: num_classes {n} but {len(classes)} class names; re-export")
    pal = m.get("palette")
    if pal is not None and not (isinstance(pal, list) and len(pal) <= MAX_CLASSES and all(
            isinstance(c, list) and len(c) == 3 and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255
                                                       for v in c) for c in pal)):
        raise bad("palette", "a list of [R, G, B] colours (integers 0..255)")
    for key in ("mean", "std"):
        v = m.get(key)
        if v is not None and not (isinstance(v, list) and len(v) == 3 and all(_finite(x) for x in v)
                                  and (key == "mean" or all(x > 0 for x in v))):
            raise bad(key, "three finite numbers" + (" > 0" if key == "std" else ""))
    ign = m.get("ignore_index")
    if ign is not None and not (isinstance(ign, int) and 0 <= ign <= 255):
        raise bad("ignore_index", "an integer in 0..255")
    inp = m.get("input")
    if inp is not None:
        if not isinstance(inp, dict):
            raise bad("input", "an object")
        size = inp.get("size")
        if size is not None and not (isinstance(size, list) and len(size) == 2 and all(
                isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_SIDE for v in size)):
            raise DeployError(f"{path}: input.size {size!r} is not [H, W] in 1..{MAX_SIDE}; re-export")
        shape = inp.get("shape")
        if shape is not None and not (isinstance(shape, list) and len(shape) == 4 and all(
                isinstance(v, str) or (isinstance(v, int) and 0 < v <= MAX_SIDE) for v in shape)):
            raise DeployError(f"{path}: input.shape {shape!r} is not [N, 3, H, W]; re-export")
        if "embedded_preprocess" in inp and not isinstance(inp["embedded_preprocess"], bool):
            raise DeployError(f"{path}: input.embedded_preprocess must be true or false")
        if "embed" in inp and not (inp["embed"] in EMBED_MODES and inp.get("embedded_preprocess") is True):
            raise DeployError(f"{path}: input.embed {str(inp['embed'])[:40]!r} is not one of {', '.join(EMBED_MODES)} "
                              "with embedded_preprocess true; re-export or restore the manifest")
    arts = m.get("artifacts")
    if arts is not None and not (isinstance(arts, dict) and all(isinstance(a, dict) for a in arts.values())):
        raise bad("artifacts", "an object of artifact entries")


def _dim(v: Any) -> int | None:
    return int(v) if isinstance(v, (int, np.integer)) and int(v) > 0 else None


def build_info(
    artifact: str | Path,
    input_name: str,
    input_shape: Sequence[Any],
    input_dtype: str,
    output_names: Sequence[str],
    output_shapes: dict[str, Sequence[Any]],
    probe: Callable[[tuple[int, int]], dict[str, np.ndarray]] | None = None,
    graph_classes: int | None = None,
) -> ModelInfo:
    """Combine the manifest (when present) with what the graph/engine itself declares.

    ``probe((H, W))`` runs the model once on zeros; used only without a manifest when the graph
    does not declare its class count statically. ``graph_classes`` is the class count read from the
    graph itself (:mod:`deploy.class_count`; labels-only graphs too): a manifest listing another
    count belongs to another model, or was edited, and is refused."""
    manifest, mpath = read_manifest(artifact)
    artifact = Path(artifact)
    if len(input_shape) != 4:
        raise DeployError(f"{artifact}: input {input_name!r} has shape {list(input_shape)}; expected NCHW (N, 3, H, W)")
    g_h, g_w = _dim(input_shape[2]), _dim(input_shape[3])
    embedded = "uint8" in str(input_dtype)
    notes: list[str] = []
    if manifest is not None:
        inp = manifest.get("input", {})
        shape = inp.get("shape", [None, 3, g_h, g_w])
        h, w = _dim(shape[2]) or g_h, _dim(shape[3]) or g_w
        classes = [str(c) for c in manifest.get("classes") or []]
        n = int(manifest.get("num_classes") or len(classes) or 0)
        if not classes:
            classes = [f"class{i}" for i in range(n)]
        pal = manifest.get("palette")
        palette = np.asarray(pal, dtype=np.uint8).reshape(-1, 3) if pal else default_palette(len(classes))
        if len(palette) < len(classes):
            palette = np.concatenate([palette, default_palette(len(classes))[len(palette):]])
        normalization = recorded_normalization(manifest)
        graph_uint8 = embedded
        embedded = bool(inp.get("embedded_preprocess", embedded))
        mode = str(inp.get("embed") or ("uint8" if embedded else ""))
        if embedded and (EMBED_MODES[mode][0] == "uint8") != graph_uint8:
            raise DeployError(f"{artifact}: {mpath} says the graph takes {EMBED_MODES[mode][0]} pixels ({mode}) but its "
                              f"input is {input_dtype}; the manifest belongs to another export (re-export, or restore it)")
        model_name = manifest.get("model_name")
    else:
        h, w = g_h, g_w
        n = None
        if "logits" in output_shapes and len(output_shapes["logits"]) == 4:
            n = _dim(output_shapes["logits"][1])
        if n is None:
            n = graph_classes
        if n is None and probe is not None and "logits" in output_names and g_h and g_w:
            n = int(probe((g_h, g_w))["logits"].shape[1])  # one dummy run tells the class count
        if n is None:
            raise DeployError(
                f"{artifact}: no {MANIFEST_NAME} beside it and the graph does not declare its class count "
                "(no static `logits` output); copy the export folder's manifest.json next to the model"
            )
        classes = [f"class{i}" for i in range(n)]
        palette = default_palette(n)
        normalization = DEFAULT
        mode = "uint8" if embedded else ""
        model_name = None
        notes.append(
            f"no {MANIFEST_NAME} beside {artifact.name}: classes, palette and input size come from the graph, "
            f"the input normalisation defaults to ImageNet's ({DEFAULT.describe()})" + (" (preprocessing embedded in the graph)" if embedded else "")
        )
        warnings.warn(notes[-1], DeployWarning, stacklevel=3)
    if h is None or w is None:
        raise DeployError(
            f"{artifact}: input size unknown (the graph has dynamic H/W and no manifest gives it); "
            "export with a static size or keep manifest.json beside the model"
        )
    if not any(o in ("labels", "logits") for o in output_names):
        raise DeployError(f"{artifact}: graph outputs {list(output_names)}; expected `logits` and/or `labels`")
    if manifest is not None:
        out_c = _dim(output_shapes["logits"][1]) if len(output_shapes.get("logits") or []) == 4 else None
        out_c = out_c or graph_classes
        if out_c is not None and out_c != len(classes):
            raise DeployError(f"{artifact}: the model outputs {out_c} classes but {mpath} lists {len(classes)}; "
                              "the manifest belongs to another model (re-export, or restore it)")
    return ModelInfo(
        classes=classes,
        palette=palette,
        input_size=(h, w),
        normalization=normalization,
        embedded_preprocess=embedded,
        embed_mode=mode,
        input_name=input_name,
        output_names=list(output_names),
        batch=_dim(input_shape[0]),
        model_name=model_name,
        manifest=manifest,
        manifest_path=mpath if manifest is not None else None,
        notes=notes,
    )
