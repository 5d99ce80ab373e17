"""rdd-edge checkpoints: one dict that rebuilds its own model (see docs/ARCHITECTURE.md).

``save_checkpoint`` writes atomically (temp file beside the target, then ``os.replace``), so an
interrupted save never leaves a half-written ``last.pt``. ``load_checkpoint`` validates before
anyone trusts the contents and names the file in every error.
"""

from __future__ import annotations

import contextlib
import contextvars
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
import torch.nn as nn

from rdd_edge.models.registry import create_model, resolve_name
from rdd_edge.models.tensor_check import check_state
from rdd_edge.errors import CheckpointError, RddError
from rdd_edge.normalize import recorded_normalization
from rdd_edge.runs import atomic_path

FORMAT = "rdd-edge-checkpoint"
VERSION = 1


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP / torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None)
        inner = inner if isinstance(inner, nn.Module) else getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def save_checkpoint(path: str | Path, model: nn.Module, **extra: Any) -> Path:
    """Write ``{"format", "version", "model_name", "model_kwargs", "state_dict", **extra}`` atomically.

    ``extra`` carries what the caller knows: ``dataset`` (a DatasetInfo or its dict), ``config``,
    ``step``, ``best_miou``, ``optimizer``, ``scaler``, ``rng``, ``rdd_stage`` ...
    """
    model = _unwrap(model)
    name, kwargs = getattr(model, "model_name", ""), getattr(model, "model_kwargs", None)
    if not name or kwargs is None:
        raise CheckpointError(f"{path}: cannot save a {type(model).__name__} that was not built by models.create_model "
                              "(it has no model_name / model_kwargs to rebuild it from)")
    if hasattr(extra.get("dataset"), "as_dict"):
        extra["dataset"] = extra["dataset"].as_dict()
    ckpt = {
        "format": FORMAT, "version": VERSION, "model_name": name, "model_kwargs": dict(kwargs),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **extra,
    }
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            torch.save(ckpt, tmp)
    except (OSError, RuntimeError) as exc:  # full disk, read-only folder (torch reports some as RuntimeError)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
        kept = "the previous file is unchanged" if path.is_file() else "no earlier file existed"
        raise CheckpointError(f"{path}: could not save the checkpoint ({reason}); {kept}") from None
    return path


def nonfinite_tensors(state: Mapping[str, Any]) -> list[str]:
    """Names of the floating-point tensors in ``state`` that hold inf or NaN (weights of a diverged training)."""
    return [k for k, v in state.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


_TRUSTED: contextvars.ContextVar[bool] = contextvars.ContextVar("rdd_edge_trust_checkpoints", default=False)


@contextlib.contextmanager
def trusted_checkpoints(enabled: bool = True) -> Iterator[None]:
    """Inside this block a checkpoint that needs Python's full unpickler may be loaded (``--trust-checkpoint``).

    Only for files the user made: the full unpickler runs whatever code the file carries. Every
    other read uses torch's safe ``weights_only`` unpickler, with no fallback.
    """
    token = _TRUSTED.set(bool(enabled))
    try:
        yield
    finally:
        _TRUSTED.reset(token)


# torch's legacy (pre-1.6, ``_use_new_zipfile_serialization=False``) files open with a pickled magic number:
# the 10-byte integer 0x1950a86a20f9469cfc6c (torch/serialization.py MAGIC_NUMBER), written with the LONG1 opcode
# (0x8a, length 10, little-endian) by every pickle protocol torch.save uses (2 and above).
LEGACY_MAGIC = b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


def is_legacy_torch_file(path: Path) -> bool:
    """Whether ``path`` starts like a file of torch's legacy serialisation (the magic number in its first bytes).

    Those files load through the same safe ``weights_only`` unpickler as zip archives: the safety is
    the unpickler's (it builds tensors and plain containers only), not the container's.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(32)
    except OSError:
        return False
    return LEGACY_MAGIC in head


def _torch_load(path: Path, map_location: Any) -> Any:
    """``torch.load`` of a file known to be a torch zip archive or legacy file, through the safe unpickler.

    A file that needs more (any Python object: that is how a pickle carries code) is refused with
    one line, unless the caller is inside :func:`trusted_checkpoints`.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if not _TRUSTED.get():
            found = re.search(r"GLOBAL ([\w.]+)", str(exc))
            obj = f" (it refers to {found.group(1)})" if found else ""
            raise CheckpointError(
                f"{path}: refused: loading it needs Python's full unpickler, which can run code hidden in the file{obj}. "
                "rdd-edge checkpoints never need it; if you made this file yourself, pass --trust-checkpoint") from None
    return torch.load(path, map_location=map_location, weights_only=not _TRUSTED.get())


def resolve_checkpoint(path: str | Path, prefer: str = "best.pt") -> Path:
    """A checkpoint file, or a run folder -> its ``prefer`` (else ``last.pt``/``best.pt``)."""
    p = Path(path)
    if p.is_dir():
        names = list(dict.fromkeys((prefer, "last.pt", "best.pt")))
        for name in names:
            if (p / name).is_file():
                return p / name
        raise CheckpointError(f"{p}: folder holds no {' / '.join(names)}; pass a checkpoint file or a run folder")
    if not p.exists():
        raise CheckpointError(f"{p}: checkpoint not found")
    return p


def read_torch_file(path: str | Path, map_location: Any = "cpu") -> Any:
    """Load any torch file with a ``CheckpointError`` naming it when it is missing or not a torch file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found" + (" (it is a folder)" if path.is_dir() else ""))
    if not zipfile.is_zipfile(path) and not is_legacy_torch_file(path):
        raise CheckpointError(f"{path}: not a torch checkpoint (neither torch.save's zip archive nor its legacy format); "
                              "the file is truncated or corrupt, or was not written by torch.save")
    try:
        return _torch_load(path, map_location)
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{path}: could not read the checkpoint ({type(exc).__name__}: {exc}); "
                              "the file is probably corrupt, save it again") from None


def validate_checkpoint(ckpt: Any, source: str | Path = "<checkpoint>") -> dict:
    """Check the rdd-edge checkpoint layout; returns ``ckpt`` with a canonical ``model_name``."""
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        what = f"format={ckpt.get('format')!r}" if isinstance(ckpt, dict) else f"a {type(ckpt).__name__}"
        raise CheckpointError(f"{source}: not an rdd-edge checkpoint ({what}, expected format '{FORMAT}'); "
                              "use a last.pt / best.pt written by rdd-edge")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{source}: checkpoint version {ckpt.get('version')!r} is not supported (expected {VERSION})")
    for key, typ in (("model_name", str), ("model_kwargs", dict), ("state_dict", Mapping)):
        if not isinstance(ckpt.get(key), typ):
            raise CheckpointError(f"{source}: checkpoint field '{key}' is missing or not a {typ.__name__}")
    check_state(ckpt["state_dict"], source)  # sizes and kinds first: nothing below may materialise a tensor
    try:
        ckpt["model_name"] = resolve_name(ckpt["model_name"])
    except RddError as exc:
        raise CheckpointError(f"{source}: made for a model this version does not know: {exc}") from None
    _check_model_kwargs(ckpt["model_kwargs"], ckpt["state_dict"], source)
    try:  # the input the weights expect: a bad record is named with its file here, not later without it
        recorded_normalization(ckpt)
    except (RddError, ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{source}: its normalization record is not usable ({exc}); the checkpoint's metadata "
                              "was edited or is corrupt") from None
    return ckpt


def check_dataset_classes(ckpt: Mapping[str, Any], source: str | Path) -> None:
    """The ``dataset`` record's class list must have as many names as the model has outputs (model_kwargs
    num_classes, which the weights' shapes confirm when loaded): an edited record would otherwise become an
    export's class list and the gate's denominator (export calls this; nothing else reads the record's classes)."""
    dataset = ckpt.get("dataset")
    classes = dataset.get("classes") if isinstance(dataset, Mapping) else None
    if dataset is None or (isinstance(dataset, Mapping) and classes is None):
        return
    if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise CheckpointError(f"{source}: its dataset record has no list of class names; the checkpoint's metadata "
                              "was edited or is corrupt")
    n = ckpt["model_kwargs"]["num_classes"]
    if classes and len(classes) != n:
        raise CheckpointError(f"{source}: its dataset record lists {len(classes)} classes but the model outputs {n}; "
                              "the checkpoint's metadata was edited or belongs to other weights")


MAX_CLASSES = 1024  # far above any segmentation label set (ADE20K 150, COCO-Stuff 171, Mapillary 124)
MAX_HEAD_CHANNELS = 4096


def _check_model_kwargs(kwargs: Mapping[str, Any], state: Mapping[str, Any], source: str | Path) -> None:
    """The metadata a model is rebuilt from is input too: plain types, sane ranges, and sizes the weights agree with.

    Checked before anything is allocated, so an edited ``num_classes`` of 10^8 is one line, not a 50 GB allocation."""
    def bounded_int(key: str, hi: int) -> int | None:
        v = kwargs.get(key)
        if v is None:
            return None
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= hi:
            raise CheckpointError(f"{source}: model_kwargs {key}={v!r} is not an integer in 1..{hi}; "
                                  "the checkpoint's metadata was edited or is corrupt")
        return v

    n = bounded_int("num_classes", MAX_CLASSES)
    if n is None:
        raise CheckpointError(f"{source}: model_kwargs has no integer num_classes")
    bounded_int("head_channels", MAX_HEAD_CHANNELS)
    if not isinstance(kwargs.get("aux", False), bool):
        raise CheckpointError(f"{source}: model_kwargs aux={kwargs.get('aux')!r} is not true/false")
    if not all(isinstance(k, str) and isinstance(v, (bool, int, float, str)) for k, v in kwargs.items()):
        raise CheckpointError(f"{source}: model_kwargs holds values other than plain numbers, strings and flags")
    # the classifier's output channels are the class count: some weight must have num_classes rows
    tensors = [v for v in state.values() if isinstance(v, torch.Tensor)]
    if tensors and not any(t.dim() >= 1 and t.shape[0] == n for t in tensors):
        raise CheckpointError(f"{source}: model_kwargs says {n} classes but no weight in its state_dict has {n} "
                              "output channels; the metadata does not belong to these weights")


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict:
    """Read and validate an rdd-edge checkpoint; ``CheckpointError`` naming the file otherwise."""
    ckpt = validate_checkpoint(read_torch_file(path, map_location), path)
    ckpt["path"] = str(path)
    return ckpt


def load_weights(model: nn.Module, source: str | Path | Mapping[str, Any], name: str | None = None) -> nn.Module:
    """Load a whole-model state_dict strictly into ``model``.

    ``source`` is an rdd-edge checkpoint, a file holding a plain state_dict, or a state_dict.
    Missing / unexpected keys and shape mismatches become one ``CheckpointError`` naming the file.
    """
    label = name or (str(source) if isinstance(source, (str, Path)) else "<state_dict>")
    obj = read_torch_file(source) if isinstance(source, (str, Path)) else source
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        obj = validate_checkpoint(obj, label)["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{label}: holds neither an rdd-edge checkpoint nor a state_dict of tensors")
    check_state(obj, label)
    state = dict(obj)
    if state and all(k.startswith("module.") for k in state):  # saved from a DDP wrapper
        state = {k[len("module."):]: v for k, v in state.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        target = getattr(model, "model_name", type(model).__name__)
        parts = [f"{len(missing)} missing keys ({_few(missing)})" if missing else "",
                 f"{len(unexpected)} unexpected keys ({_few(unexpected)})" if unexpected else "",
                 f"{len(shapes)} shape mismatches (file vs model: {_few(shapes)})" if shapes else ""]
        raise CheckpointError(f"{label}: weights do not fit {target} with "
                              f"{getattr(model, 'num_classes', '?')} classes: {'; '.join(p for p in parts if p)}. "
                              "Use a checkpoint of the same model, class count and aux setting")
    model.load_state_dict(state, strict=True)
    return model


def _few(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (f", ... +{len(items) - n}" if len(items) > n else "")


def model_from_checkpoint(path_or_ckpt: str | Path | dict, aux: bool | None = None) -> tuple[nn.Module, dict]:
    """Rebuild the model a checkpoint describes and load its weights; returns ``(model.eval(), ckpt)``.

    ``aux=None`` keeps the checkpoint's setting, ``aux=False`` drops the aux head (for export),
    ``aux=True`` requires a checkpoint that has one.
    """
    if isinstance(path_or_ckpt, dict):
        ckpt = validate_checkpoint(path_or_ckpt, path_or_ckpt.get("path", "<checkpoint>"))
    else:
        ckpt = load_checkpoint(path_or_ckpt)
    source = ckpt.get("path", "<checkpoint>")
    kwargs = dict(ckpt["model_kwargs"])
    state = dict(ckpt["state_dict"])
    if aux is True and not kwargs.get("aux"):
        raise CheckpointError(f"{source}: {ckpt['model_name']} was saved without an aux head; cannot build it with aux=True")
    if aux is False:
        kwargs["aux"] = False
        state = {k: v for k, v in state.items() if not k.startswith("aux_head.")}
    try:
        model = create_model(ckpt["model_name"], **kwargs)
    except RddError as exc:
        raise CheckpointError(f"{source}: cannot rebuild its model: {exc}") from None
    bad = nonfinite_tensors(state)
    if bad:
        raise CheckpointError(f"{source}: {len(bad)} weight tensors hold inf/NaN ({_few(bad)}): the training that wrote it "
                              "diverged; use an earlier checkpoint or train again with a lower --lr")
    load_weights(model, state, name=str(source))
    return model.eval(), ckpt
