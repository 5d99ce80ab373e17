"""``export_run(spec)``: the export stage's entry point.

One checkpoint -> every requested artifact of the formats table in ``<run>/export/`` +
``manifest.json``. The export is transactional: everything is built in a staging folder beside
the export folder and swapped in only when every requested format succeeded, so a failing
re-export leaves the previous export exactly as it was, and the manifest always lists exactly
the files in the folder. Every ONNX artifact is scored the same way: label agreement with the
FP32 model and mIoU on the val images the checkpoint was trained against.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from rdd_edge.data import DataSpec, open_split, spec_of_checkpoint
from rdd_edge.deploy.backends.onnxruntime import import_onnxruntime
from rdd_edge.deploy.check import find_export_dir
from rdd_edge.deploy.engine_meta import precision_summary
from rdd_edge.deploy.engine_plan import engine_source
from rdd_edge.deploy.info import read_manifest
from rdd_edge.deploy.integrity import refuse_inside_export
from rdd_edge.deploy.postprocess import resize_labels
from rdd_edge.deploy.preprocess import preprocess
from rdd_edge.errors import ConfigError, ExportError
from rdd_edge.normalize import recorded_normalization
from rdd_edge.runs import DEFAULT_ROOT, folder_lock, remove_leftovers, resolve_run

from rdd_edge import formats as table
from rdd_edge.export import formats
from rdd_edge.export.builders import BuildContext, ExportContext, build_engines
from rdd_edge.export.formats import ExportSpec
from rdd_edge.export.int8 import image_folder, select_calibration
from rdd_edge.export.manifest import MANIFEST, add_artifact, new_manifest, save_manifest
from rdd_edge.export.onnx_io import graph_io, load_export_onnx, sha256_file
from rdd_edge.export.scoring import CheckScorer
from rdd_edge.export.tensorrt import require_tensorrt

PARITY_IMAGES = 8  # torch-vs-ONNX parity and INT8 fitting run on this many of the check images
# caches a re-export reuses when it builds a format that takes calibration options / runs on TensorRT
REUSABLE = {"model.int8.calib-*.json": "calib", "timing*.cache": "tensorrt"}


def find_checkpoint(source: str | Path | None, runs_root: str | Path = DEFAULT_ROOT) -> Path:
    """A checkpoint file, a run folder (``best.pt`` preferred) or, if None, the latest distill run."""
    from rdd_edge.models.checkpoint import resolve_checkpoint  # lazy: torch; `rdd-edge engine` stays torch-free

    return resolve_checkpoint(resolve_run(source, "distill", "checkpoint to export", root=runs_root), prefer="best.pt")


def _builder(ref: str) -> Callable[..., dict]:
    module, _, fn = ref.partition(":")
    return getattr(importlib.import_module(module), fn)


def _calib_items(ds: Any) -> list:
    """Calibration items of a reader: image files, or (id, loader) for images without a file (synthetic)."""
    items = []
    for i in range(len(ds)):
        path = ds.image_path(i) if hasattr(ds, "image_path") else None
        items.append(path if path is not None else (f"{ds.info.name}:{ds.split}:{ds.name(i)}", (lambda i=i: ds[i][0])))
    return items


def _evenly(n_total: int, n: int | None) -> list[int]:
    if n is None or n >= n_total:
        return list(range(n_total))
    return sorted(set(np.linspace(0, n_total - 1, n).round().astype(int).tolist()))


def _check_other_run(out: Path, ckpt_path: Path, overwrite: bool) -> None:
    """``--out`` onto the export of another checkpoint replaces it only with ``--overwrite``."""
    try:
        src = json.loads((out / MANIFEST).read_text()).get("source_checkpoint")
    except (OSError, ValueError, AttributeError):
        return
    if src and Path(str(src)).resolve() != ckpt_path.resolve() and not overwrite:
        raise ConfigError(f"--out {out}: holds the export of another checkpoint ({src}); choose another --out, "
                          "or add --overwrite to replace it")


def _check_out_dir(out: Path) -> None:
    """Only an export folder (or a new / empty one) may be replaced by an export."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file())):
        raise ConfigError(f"--out {out}: exists and is not an rdd-edge export folder; choose a new or empty folder")


def _link_or_copy(src: str | Path, dst: str | Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _staging(out: Path, copy_from: Path | None = None) -> Path:
    """A fresh staging folder beside ``out`` (with ``copy_from``'s files and folders, e.g. a bundle's
    check-data/, hard-linked in, or copied)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    stage.chmod(0o755)
    for f in sorted(copy_from.iterdir()) if copy_from is not None else ():
        if f.is_symlink() or f.name.startswith("."):
            continue
        if f.is_file() and not f.name.startswith("check."):  # check's reports describe the folder as it was
            _link_or_copy(f, stage / f.name)
        elif f.is_dir():
            shutil.copytree(f, stage / f.name, copy_function=_link_or_copy, symlinks=True)
    return stage


@contextlib.contextmanager
def _transaction(out: Path, copy_from: Path | None = None) -> Iterator[Path]:
    """A staging folder for ``out``, removed again if the block fails (``out`` is then untouched)."""
    stage = _staging(out, copy_from)
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def _commit(manifest: dict, stage: Path, out: Path) -> dict:
    """List every file of the staging folder in the manifest, save it there and swap the folder in."""
    manifest["files"] = sorted(p.name for p in stage.iterdir() if p.is_file() and p.name != MANIFEST) + [MANIFEST]
    save_manifest(manifest, stage)
    _swap_in(stage, out)
    manifest["export_dir"] = str(out)
    return manifest


def _swap_in(stage: Path, out: Path) -> None:
    """Replace ``out`` by the finished ``stage`` folder (two renames on the same file system)."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        old.rmdir()
        out.rename(old)
    stage.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_run(spec: ExportSpec | None = None, console: Any = None, **fields: Any) -> dict:
    """Export a checkpoint (or run folder; default the latest distill run); returns the manifest.

    ``spec`` is an :class:`~export.formats.ExportSpec` (or give its fields as keywords).
    """
    from rdd_edge.export.onnx_export import check_size  # lazy: torch; `rdd-edge engine` stays torch-free
    from rdd_edge.models import model_from_checkpoint  # lazy: torch; `rdd-edge engine` stays torch-free
    from rdd_edge.models.checkpoint import check_dataset_classes  # lazy: torch, as above

    def log(msg: str) -> None:
        if console is not None:
            console.print(msg, soft_wrap=True)  # long lines (the trtexec command) stay one copyable line

    # -- settle every option and input before any work
    spec = (spec or ExportSpec(**fields)).normalised()
    formats.check_options(spec)
    wanted = formats.requested(spec)
    import_onnxruntime()  # every artifact is scored with ONNX Runtime: say what to install before any work
    if any(f.runtime == "tensorrt" for f in wanted):
        require_tensorrt(f"--trt {spec.trt}")
    ckpt_path = find_checkpoint(spec.source, spec.runs_root)
    model, ckpt = model_from_checkpoint(ckpt_path, aux=False)
    check_dataset_classes(ckpt, ckpt_path)  # the manifest's class list is the model's, never an edited record's
    dataset = dict(ckpt.get("dataset") or {})
    if not dataset.get("classes"):
        raise ExportError(f"{ckpt_path}: checkpoint has no dataset description (classes, mean/std); re-save it with rdd-edge")
    data = spec_of_checkpoint(ckpt).overridden(root=spec.data)
    size = check_size(spec.size or data.size or tuple(dataset.get("eval_size") or (360, 480)), model)
    normalization = recorded_normalization(ckpt)  # the input the weights were trained on
    num_classes = len(dataset["classes"])
    out = Path(spec.out) if spec.out is not None else ckpt_path.parent / "export"
    _check_out_dir(out)
    refuse_inside_export(out)  # the next export of the outer one would delete it
    _check_other_run(out, ckpt_path, spec.overwrite)
    with folder_lock(out, "export"):  # a second export into this folder is refused by name, not interleaved
        remove_leftovers(out)  # staging folders an interrupted export left beside it
        log(f"exporting [bold]{ckpt['model_name']}[/] from {ckpt_path} at {size[0]}x{size[1]} -> {out}")

        # -- the val images every artifact is scored on (the split training validated on); a checkpoint with no
        # data folder at hand (an imported one, say) is checked on synthetic scenes: parity and agreement, no mIoU
        labels: list | None
        if data.root is None and not data.generated:
            scenes = DataSpec("synthetic", val_images=spec.check_images or PARITY_IMAGES, size=size)
            images = [open_split(scenes, "val")[i][0] for i in range(scenes.val_images)]
            labels = None
            log(f"note: no {data.name} folder (pass --data PATH to score mIoU): torch/ONNX parity and FP16/INT8 label "
                f"agreement are checked on {len(images)} synthetic scenes; mIoU is not scored")
        else:
            val = open_split(data, "val")
            if len(val) == 0:
                raise ExportError(f"{data.describe()}: the val split is empty; parity and accuracy checks need validation images")
            idx = _evenly(len(val), spec.check_images or formats.CHECK_IMAGES)
            pairs = [val[i] for i in idx]
            images = [p[0] for p in pairs]
            labels = [resize_labels(p[1], size) for p in pairs]
        parity_batch = np.concatenate([preprocess(im, size, normalization, embedded=spec.embed_preprocess)
                                       for im in images[:PARITY_IMAGES]])

        # -- calibration images, settled before any file is written (too few is an error)
        calib_items: list = []
        calibrated = [f for f in wanted if "calib" in f.options]
        if calibrated:
            flag = calibrated[0].flag or calibrated[0].key
            if spec.calib_data is not None:
                pool, where = image_folder(spec.calib_data), f"--calib-data {spec.calib_data}"
            elif labels is None:
                raise ConfigError(f"{flag}: calibration needs images of {data.name}, the data set the model was trained on; "
                                  "pass --data PATH or --calib-data DIR")
            else:
                pool, where = _calib_items(open_split(data, "train")), f"train split of {data.describe()}"
            if labels is None and (spec.budget is not None or spec.int8_report):
                raise ConfigError("--int8-budget / --int8-report measure mIoU on labelled val images of "
                                  f"{data.name}; pass --data PATH")
            calib_items = select_calibration(pool, spec.calib, spec.min_calib, source=where,
                                             warn=lambda m: log(f"[yellow]warning:[/] {m}"))

        # -- build into a staging folder; swap it in only when everything succeeded
        with _transaction(out) as stage:
            kinds = set().union(*(f.options for f in wanted)) | {f.runtime for f in wanted}
            for pattern, kind in REUSABLE.items():
                for f in out.glob(pattern) if out.is_dir() and kind in kinds else ():
                    shutil.copy2(f, stage / f.name)
            meta = {"rdd_edge.model_name": ckpt["model_name"], "rdd_edge.classes": ",".join(dataset["classes"]),
                    "rdd_edge.normalization": json.dumps(normalization.as_dict()),
                    "rdd_edge.embedded_preprocess": spec.embed_preprocess or "false"}
            ctx = ExportContext(spec=spec, out=stage, log=log, model=model, ckpt=ckpt, ckpt_path=ckpt_path, size=size,
                                normalization=normalization, num_classes=num_classes, check_images=images, check_labels=labels,
                                parity_batch=parity_batch, calib_items=calib_items, metadata=meta)
            score = ctx.scorer = CheckScorer(images, labels, size, normalization, num_classes, embedded=spec.embed_preprocess)
            manifest: dict | None = None
            groups: dict[str, list[str]] = {}
            for f in wanted:
                groups.setdefault(f.build, []).append(f.key)
            for ref, keys in groups.items():
                t = time.perf_counter()
                records = _builder(ref)(ctx, tuple(keys))
                dt = time.perf_counter() - t
                for key in keys:
                    fmt, rec = table.BY_KEY[key], dict(records[key])
                    path = Path(rec.pop("path"))
                    log(f"[green]✓[/] {fmt.name} -> {path.name} ({dt:.1f} s, {path.stat().st_size / 1e6:.2f} MB)")
                    if manifest is None:  # the FP32 graph is built first: the manifest describes its I/O
                        manifest = new_manifest(ckpt["model_name"], dataset, data, size,
                                                spec.outputs, spec.embed_preprocess, spec.dynamic, spec.opset,
                                                ckpt_path.resolve(), sha256_file(ckpt_path), graph_io(load_export_onnx(path)),
                                                normalization)
                    if fmt.runtime == "onnxruntime":
                        rec.update(_checked(score(path), fmt, path))
                    add_artifact(manifest, key, path, fmt.precision, fmt.runtime, **rec)
            assert manifest is not None
            manifest.update(ctx.manifest_extra)
            return _commit(manifest, stage, out)


def _checked(scores: dict, fmt: table.ExportFormat, path: Path) -> dict:
    """The artifact's scores; an ExportError when it falls below its format's agreement floor."""
    agree = scores.get("label_agreement")
    if fmt.min_agreement is not None and agree is not None and agree < fmt.min_agreement:
        raise ExportError(f"{path.name}: labels agree with FP32 on only {agree:.3%} of pixels "
                          f"(< {fmt.min_agreement:.1%}); keep the FP32 model")
    return {"miou": scores["miou"], "checked_images": scores["images"],
            **({"agreement": {"label_agreement": agree}} if agree is not None else {})}


def engine_run(spec: ExportSpec | None = None, console: Any = None, **fields: Any) -> dict:
    """Build TensorRT engines from the ONNX files of an existing export folder and list them in its manifest.

    Torch-free, for the device itself (a Jetson with a deploy-only install): ``spec.source`` is the
    run or export folder, ``spec.trt`` which engines (``fp16``, ``int8``, ``all``); the engine
    options (``max_batch``, ``workspace``, ``dla_core``, ``profile``) as for ``export``. The folder
    is updated transactionally like an export.
    """
    def log(msg: str) -> None:
        if console is not None:
            console.print(msg, soft_wrap=True)  # long lines (the trtexec command) stay one copyable line

    spec = (spec or ExportSpec(**fields)).normalised()
    keys = [k for k in table.ORDER if table.BY_KEY[k].flag in table.TRT_CHOICES[spec.trt]]
    if not keys:
        raise ConfigError(f"--trt: say which engines to build: {', '.join(c for c in table.TRT_CHOICES if c != 'none')}")
    run = resolve_run(spec.source, "distill", "the export to build engines for", root=spec.runs_root,
                      must_contain=f"export/{MANIFEST}")
    out = find_export_dir(run)
    manifest, _ = read_manifest(out / MANIFEST)
    assert manifest is not None
    for key in keys:
        engine_source(key, out, listed=manifest.get("artifacts") or {})
    if spec.dynamic is False and manifest.get("dynamic") and spec.profile is None:
        raise ConfigError(f"{out}: the graph has dynamic H and W; give the engine's range with --dynamic --profile MIN,OPT,MAX")
    require_tensorrt("rdd-edge engine", on_device=True)
    with folder_lock(out, "export or engine build"):
        remove_leftovers(out)  # before this build's own staging folder exists
        with _transaction(out, copy_from=out) as stage:
            records = build_engines(BuildContext(spec, stage, log), tuple(keys))
            for key, rec in records.items():
                rec = dict(rec)
                path = Path(rec.pop("path"))
                fmt = table.BY_KEY[key]
                log(f"[green]✓[/] {fmt.name} -> {path.name} ({precision_summary(rec)})")
                add_artifact(manifest, key, path, fmt.precision, fmt.runtime, **rec)
            return _commit(manifest, stage, out)


__all__ = ["export_run", "engine_run", "find_checkpoint", "ExportSpec"]
