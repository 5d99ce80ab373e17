"""``rdd-edge bundle``: the one folder a user copies from the workstation to the device.

    DIR/
      export/              the export as `check` accepts it (ONNX artifacts, manifest, calibration
                           cache) plus check-data/: the val images the export scored on; no TensorRT
                           engines, sidecars or timing caches (tied to the GPU and TensorRT release
                           that made them: the device builds its own with `rdd-edge engine`)
      wheels/              a wheel of this rdd-edge (the torch-free runtime, every extra declared);
                           put more wheels here for a device without an index
      install.sh           makes DIR/.venv for the machine it finds, then runs the acceptance check
      README.txt           what is here and the commands, in a few lines
      bundle.json          what went in: versions and the sha256 of every file
      deepstream/          with --deepstream: DeepStream nvinfer config, its ONNX file, a pipeline (deploy/deepstream.py)
      triton/, triton-plan/  with --triton: Triton model repositories (deploy/triton.py)

Written into a staging folder beside DIR and renamed into place, so a failed bundle leaves
nothing half-written; an existing DIR is replaced only with ``overwrite`` and only when it is a
bundle. Torch-free: the check images are read with the core's data readers.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from rdd_edge.data import DataSpec, open_split
from rdd_edge.deploy.check import find_export_dir
from rdd_edge.deploy.check_data import write_check_data
from rdd_edge.deploy.deepstream import write_deepstream
from rdd_edge.deploy.info import MANIFEST_NAME, read_manifest
from rdd_edge.deploy.integrity import refuse_inside_export, verify_artifacts
from rdd_edge.deploy.triton import write_triton
from rdd_edge.deploy.versions import dist_version
from rdd_edge.deploy.wheel import build_wheel, wheel_top_level
from rdd_edge.errors import ConfigError
from rdd_edge.runs import DEFAULT_ROOT, resolve_run, sha256_file, write_json

BUNDLE_FORMAT = "rdd-edge-bundle"
FILES = Path(__file__).resolve().parent / "bundle_files"
CHECK_IMAGES = 100  # as export: the val split, evenly spread past this many


@dataclass
class BundleSpec:
    """What goes into a bundle and where."""

    source: str | Path | None = None  # distill run or export folder (None: the latest run with an export)
    out: str | Path | None = None  # the bundle folder (default <run>/bundle)
    runs_root: str | Path = DEFAULT_ROOT
    data: str | Path | None = None  # the data folder, when not where the run recorded it
    check_images: int | None = None  # default: as many as the export scored on
    images: bool = True  # False: no check images (the device then needs its own data to score)
    deepstream: bool = False  # also write deepstream/ (nvinfer config, model.probs.onnx, pipeline.sh)
    triton: bool = False  # also write triton/ and triton-plan/ (model repositories)
    overwrite: bool = False


def evenly(n_total: int, n: int | None) -> list[int]:
    """``n`` indices spread evenly over ``range(n_total)`` (all of them when ``n`` is None or larger)."""
    if n is None or n >= n_total:
        return list(range(n_total))
    return sorted(set(np.linspace(0, n_total - 1, n).round().astype(int).tolist()))


def _check_images(manifest: dict[str, Any], spec: BundleSpec, say: Callable[[str], None]) -> tuple[list, list, list, str]:
    """The images the export scored on (same data, same evenly spread indices), their labels and names."""
    recorded = manifest.get("data")
    data = DataSpec.from_dict(recorded) if isinstance(recorded, dict) else DataSpec(name=str(manifest.get("dataset") or "synthetic"))
    data = data.overridden(root=spec.data)
    if data.root is not None and not Path(data.root).is_dir():
        raise ConfigError(f"{data.root}: the export's data folder is not here; pass --data PATH (the {data.name} folder) "
                          "or --no-check-images")
    val = open_split(data, "val")
    scored = (manifest.get("artifacts") or {}).get("onnx", {}).get("checked_images")
    n = spec.check_images or (int(scored) if isinstance(scored, int) and scored > 0 else CHECK_IMAGES)
    idx = evenly(len(val), n)
    if not idx:
        raise ConfigError(f"{data.describe()}: the val split is empty; nothing to score on the device")
    say(f"check images: {len(idx)} of {len(val)} val images of {data.describe()}")
    pairs = [val[i] for i in idx]
    names = [val.name(i) if hasattr(val, "name") else str(i) for i in idx]
    return [p[0] for p in pairs], [p[1] for p in pairs], names, f"{data.name} val, {len(idx)} of {len(val)} images"


ENGINE_FILES = (".engine", ".plan", ".engine.json", ".plan.json", ".cache")  # engines, their sidecars, timing caches


def leave_out_engines(manifest: dict[str, Any]) -> list[str]:
    """Drop the TensorRT engines, their sidecars and timing caches from a bundle's copy of the manifest
    (artifacts and files); say so in it; return the names left out. An engine is only valid on the GPU
    and the exact TensorRT release that built it (NVIDIA's TensorRT developer guide, "Serialized engines
    are not portable across platforms or TensorRT versions")."""
    arts = manifest.get("artifacts") or {}
    out = []
    for key in [k for k, a in arts.items() if isinstance(a, dict) and str(a.get("file", "")).endswith(ENGINE_FILES[:2])]:
        out.append(str(arts.pop(key)["file"]))
    files = [f for f in manifest.get("files") or [] if isinstance(f, str)]
    out += [f for f in files if f.endswith(ENGINE_FILES) and f not in out]
    manifest["files"] = [f for f in files if f not in out]
    if out:
        manifest["bundle_note"] = ("TensorRT engines, sidecars and timing caches left out (" + ", ".join(sorted(out)) +
                                   "): they only run on the GPU and TensorRT release that built them; build them here "
                                   "with `rdd-edge engine`")
    return sorted(out)


def make_bundle(spec: BundleSpec, say: Callable[[str], None] = lambda _: None) -> Path:
    """Write the bundle folder; return its path."""
    run = resolve_run(spec.source, "distill", "the export to bundle", root=spec.runs_root, must_contain=f"export/{MANIFEST_NAME}")
    export_dir = find_export_dir(run)
    manifest, _ = read_manifest(export_dir / MANIFEST_NAME)
    assert manifest is not None
    verify_artifacts(export_dir, manifest)  # a bundle never carries an export its check would fail
    out = Path(spec.out).resolve() if spec.out is not None else export_dir.parent / "bundle"  # `--out .` has a name
    refuse_inside_export(out)  # the next export of that run would delete it
    if out.exists():
        if not spec.overwrite:
            raise ConfigError(f"--out {out}: exists; choose a new folder or add --overwrite")
        if not (out / "bundle.json").is_file():
            raise ConfigError(f"--out {out}: exists and is not an rdd-edge bundle; --overwrite replaces bundles only")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None
    try:
        # the export, as check accepts it: every file the manifest lists (reports of an earlier check left out)
        dst = stage / "export"
        dst.mkdir()
        exported = copy.deepcopy(manifest)  # as exported: its engines' batch range sizes Triton's max_batch_size
        left_out = leave_out_engines(manifest)
        if left_out:
            say(f"export: left out {', '.join(left_out)} (engines are built on the device: rdd-edge engine)")
        listed = [f for f in manifest.get("files") or [] if isinstance(f, str)]
        for name in listed:
            src = export_dir / name
            if Path(name).name != name or not src.is_file() or src.is_symlink():
                raise ConfigError(f"{export_dir / MANIFEST_NAME}: lists {name!r}, which is not a plain file in the folder; "
                                  "re-run `rdd-edge export`")
            shutil.copy2(src, dst / name)
        say(f"export: {len(listed)} files from {export_dir}")
        write_json(dst / MANIFEST_NAME, manifest)  # the copy lists what the bundle holds
        if spec.deepstream:  # before the slow steps: a graph nvinfer cannot take is one line, at once
            write_deepstream(export_dir, exported, stage / "deepstream", say)
        if spec.triton:
            write_triton(export_dir, exported, stage / "triton", say)
        if spec.images:
            images, labels, names, source = _check_images(manifest, spec, say)
            manifest["check_data"] = write_check_data(dst, images, labels, names, source)
            write_json(dst / MANIFEST_NAME, manifest)  # the copy lists its check images (with their index's sha256)
        wheel = build_wheel(stage / "wheels")
        tops = wheel_top_level(wheel)
        if tops != ["rdd_edge"]:
            raise ConfigError(f"{wheel.name}: installs {tops}; a bundle's wheel must hold the rdd_edge package alone")
        say(f"wheel: {wheel.name}")
        for name in ("install.sh", "README.txt"):
            shutil.copy2(FILES / name, stage / name)
        (stage / "install.sh").chmod(0o755)
        files = sorted(str(p.relative_to(stage)) for p in stage.rglob("*") if p.is_file())
        write_json(stage / "bundle.json", {
            "format": BUNDLE_FORMAT, "version": 1, "rdd_edge": dist_version("rdd-edge"), "wheel": f"wheels/{wheel.name}",
            "model_name": manifest.get("model_name"), "source_export": str(export_dir.resolve()),
            "check_images": (manifest.get("check_data") or {}).get("images", 0),
            "files": {f: sha256_file(stage / f) for f in files},
        })
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            old.rmdir()
            out.rename(old)
            stage.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            stage.rename(out)
    except BaseException as exc:
        shutil.rmtree(stage, ignore_errors=True)
        if isinstance(exc, OSError):  # a full or read-only file system while writing: nothing is left half-written
            raise ConfigError(f"--out {out}: could not write the bundle ({exc.strerror or exc}); nothing was written") from None
        raise
    return out
