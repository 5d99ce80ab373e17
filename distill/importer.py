"""``rdd-edge import``: a checkpoint saved by the paper's released code as a run folder.

The released training scripts save a plain state dict (``model.state_dict()``, from DDP with a
``module.`` prefix), the FCN aux head included where the network has one. ``import_released``
reads it with the safe ``weights_only`` unpickler, maps it one tensor to one tensor onto our
network of the same name (``models.released``), and writes ``runs/<stage>-<name>/best.pt`` as
if rdd-edge had trained it: model name and kwargs, data set and data spec, a config, and the
input normalisation the released code trains with (BGR, 0-255, minus the caffe mean, no std).
Teachers (DeepLabV3-R101) go to a ``teacher-`` folder, students to a ``distill-`` folder, so
``distill``, ``eval``, ``difficulty`` and ``export`` find them as they find trained runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rdd_edge.data import dataset_info
from rdd_edge.distill.config import make_config
from rdd_edge.errors import CheckpointError, ConfigError
from rdd_edge.models import create_model, model_cfg, resolve_name, save_checkpoint
from rdd_edge.models.pretrained import read_weights
from rdd_edge.models.released import load_released
from rdd_edge.sources import describe_layout
from rdd_edge.normalize import CAFFE
from rdd_edge.runs import DEFAULT_ROOT, new_run_dir, sha256_file, write_json


@dataclass
class ImportSpec:
    """What ``rdd-edge import`` reads and where it writes."""

    checkpoint: str | Path
    model: str
    dataset: str
    data: str | Path | None = None  # the data set's folder, recorded so eval / export find it
    name: str | None = None  # run folder name: runs/<stage>-<name>; default "imported"
    runs_root: str | Path = DEFAULT_ROOT
    head_channels: int | None = None  # None: the paper's width; 512 for a CIRKDv2 checkpoint (rdd_edge.sources)


@dataclass
class ImportResult:
    run_dir: Path
    checkpoint: Path
    model_name: str
    num_classes: int
    aux: bool
    tensors: int
    normalization: object  # rdd_edge.normalize.Normalization
    params: int = 0  # the network's parameter count (differs from the paper's with --head-channels)


def import_released(spec: ImportSpec) -> ImportResult:
    """Map a released state dict onto our network and write it as a run folder (the import stage's entry point)."""

    name = resolve_name(spec.model)
    cfg = model_cfg(name)
    if not cfg.get("released"):
        raise ConfigError(f"--model {spec.model}: not one of the paper's released networks (r101, r18, mbv2, psp18)")
    info = dataset_info(spec.dataset)
    source = Path(spec.checkpoint)
    state = read_weights(source)
    aux = bool(cfg["aux_head"]) and any(k.startswith("auxlayer.") for k in state)
    width = {} if spec.head_channels is None else {"head_channels": int(spec.head_channels)}
    model = create_model(name, num_classes=info.num_classes, aux=aux, **width)
    try:
        tensors = load_released(model, state, str(source))
    except CheckpointError:
        other = describe_layout(state)  # a CIRKDv2 / torchvision / timm file: name it instead of blaming --model
        if other is None:
            raise
        raise CheckpointError(f"{source}: {other}") from None

    mode = "teacher" if cfg.get("role") == "teacher" else "distill"
    data = str(Path(spec.data).expanduser().resolve()) if spec.data is not None else None  # absolute, as training stores it
    config = make_config(mode, info.name, model=name, aux=aux, data=data,
                         pretrained="none", normalization=CAFFE.name, name=spec.name or "imported",
                         runs_root=str(spec.runs_root), model_kwargs=width or None)
    run = new_run_dir(mode, config.name, root=spec.runs_root)
    imported = {"file": str(source.resolve()), "sha256": sha256_file(source), "layout": "released", "tensors": tensors}
    ckpt = save_checkpoint(run / "best.pt", model, dataset=info, data=config.data_spec().as_dict(), config=config.as_dict(),
                           step=0, best_miou=None, normalization=CAFFE.as_dict(), imported=imported)
    write_json(run / "config.json", config.as_dict())
    write_json(run / "import.json", {**imported, "model": name, "dataset": info.name, "aux": aux,
                                     "normalization": CAFFE.as_dict(), "checkpoint": str(ckpt)})
    params = sum(p.numel() for p in model.parameters())
    return ImportResult(run, ckpt, name, info.num_classes, aux, tensors, CAFFE, params)
