"""The deploy check: every exported artifact side by side, accuracy gate included.

One row per artifact in the export manifest (plus optional reference rows, e.g. the torch
checkpoint, given by the caller): status, size, mIoU on the val images, drop and pixel
agreement vs the FP32 ONNX model, and model-only latency at batch 1 and at a larger batch.
A failing artifact fills its status cell and the loop goes on. The report
(``check.json``, ``check.md``, ``check.png``) is rendered by :mod:`deploy.check_report`.

Post-processing is the runtime's (:mod:`deploy.postprocess`), so every row is scored on exactly
what an application would get from :meth:`deploy.Segmenter.predict`.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from rdd_edge import formats as table
from rdd_edge.data import DataSpec, open_split
from rdd_edge.devices import cuda_index, parse_device
from rdd_edge.errors import ConfigError, DeployError, RddError
from rdd_edge.metrics import ConfusionMatrix
from rdd_edge.runs import DEFAULT_ROOT, inside, resolve_run, sha256_file

from rdd_edge.deploy.backends.onnxruntime import gpu_providers, import_onnxruntime
from rdd_edge.deploy.check_data import open_check_data
from rdd_edge.deploy.check_report import cpu_meta, on_cpu, write_report
from rdd_edge.deploy import device_state, power as power_meter
from rdd_edge.deploy.check_rows import (FAILED, FAILED_GATE, PASSED, REFERENCE_KEY, SKIPPED,  # noqa: F401
                                        Row, row_order)  # the row model, re-exported for callers of the check
from rdd_edge.deploy.engine_meta import ForeignEngineError, precision_summary, sidecar_path, tensorrt_module
from rdd_edge.deploy.info import MANIFEST_NAME, read_manifest
from rdd_edge.deploy.latency import measure_segmenter
from rdd_edge.deploy.runtime import load


@dataclass
class Candidate:
    """Something to check: ``load()`` returns a Segmenter-like object (predict_batch, preprocess, run, info)."""

    name: str
    load: Callable[[], Any]
    file: Path | None = None
    precision: str = "fp32"
    gated: bool = True  # subject to --max-drop (everything but the reference rows)
    sha256: str | None = None  # what the manifest recorded; a file that differs fails its row
    note: str = ""  # said in the row (e.g. "ran on the CPU: ...")
    problem: str = ""  # why this row fails before anything is loaded (a path outside the folder, no checksum)
    needs_sha: bool = True  # manifest artifacts must carry a checksum (reference rows need none)
    int8_budget: dict | None = None  # the manifest's --int8-budget record of an INT8 file


def find_export_dir(run: str | Path) -> Path:
    """``run`` may be a distill run (``<run>/export``) or the export folder itself."""
    run = Path(run)
    for d in (run / "export", run):
        if (d / MANIFEST_NAME).is_file():
            return d
    raise ConfigError(f"{run}: no export/{MANIFEST_NAME} found; run `rdd-edge export` on this run first")


def manifest_candidates(export_dir: Path, manifest: dict[str, Any], device: str = "cpu", threads: int | None = None) -> list[Candidate]:
    """One candidate per artifact the manifest lists, FP32 ONNX first.

    With a GPU ``device``, engines run on the GPU and ONNX files on ONNX Runtime's GPU providers
    when this onnxruntime build has them, else on the CPU with a note in their row (never a
    failure: the FP32 reference must produce figures for the gate to mean anything).
    """
    arts = manifest.get("artifacts") or {}
    if not arts:
        raise ConfigError(f"{export_dir / MANIFEST_NAME}: lists no artifacts; re-run `rdd-edge export`")
    order = row_order()
    keys = sorted(arts, key=lambda k: (order.index(k) if k in order else len(order), k))
    onnx_device, onnx_note = onnx_placement(device)
    out = []
    for k in keys:
        entry = arts[k] if isinstance(arts[k], dict) else {}
        name = entry.get("file")
        try:
            f: Path | None = inside(export_dir, name, f"artifact {k}'s file")
        except DeployError as exc:
            out.append(Candidate(name=k, load=_refused, file=None, precision=_precision(k, entry),
                                 problem=str(exc)))
            continue
        assert f is not None
        is_onnx = f.suffix.lower() == ".onnx"
        dev = onnx_device if is_onnx else device
        out.append(
            Candidate(
                name=k,
                load=(lambda f=f, dev=dev: _load_onnx(load, f, dev, threads)) if is_onnx else
                     (lambda f=f: load(f, device=device, threads=threads)),
                file=f,
                precision=_precision(k, entry),
                gated=k != REFERENCE_KEY,
                sha256=entry.get("sha256") if isinstance(entry.get("sha256"), str) else None,
                note=onnx_note if is_onnx else "",
                int8_budget=entry.get("int8_budget") if isinstance(entry.get("int8_budget"), dict) else None,
            )
        )
    listed = {c.file.name for c in out if c.file is not None}
    for f in sorted(export_dir.iterdir()):  # a model file the manifest does not list is never run unchecked
        if f.suffix.lower() in MODEL_SUFFIXES and f.name not in listed:
            out.append(Candidate(name=f.name, load=_refused, file=None, precision="?",
                                 problem=f"{f.name} is in the folder but not in the manifest (added or edited "
                                         "since export); re-export, or remove it"))
    return out


MODEL_SUFFIXES = (".onnx", ".engine", ".plan")


def _precision(key: str, entry: dict[str, Any]) -> str:
    """An artifact's precision: its format key's row in the table; the manifest's own word for a key
    the table does not know (a newer export), else "?"."""
    row = table.BY_KEY.get(key)
    return row.precision if row is not None else str(entry.get("precision") or "?")


def _refused() -> Any:
    raise DeployError("not loaded")  # never called: rows with a problem fail before loading


def onnx_placement(device: str) -> tuple[str, str]:
    """Where ONNX files run for ``device`` and the note their rows carry: a GPU device with a
    CPU-only ONNX Runtime runs them on the CPU ("ran on the CPU: ...")."""
    if not device.startswith("cuda"):
        return device, ""
    available = list(import_onnxruntime().get_available_providers())
    if gpu_providers(available):
        return device, ""
    return "cpu", ("ran on the CPU: this ONNX Runtime has no GPU provider (onnxruntime-gpu: the `gpu` extra; "
                   "on a Jetson, NVIDIA's onnxruntime-gpu wheel)")


class _Fallback:
    """A loaded ONNX segmenter that records why it runs on the CPU instead of the GPU."""

    def __init__(self, seg: Any, note: str) -> None:
        self._seg, self.fallback_note = seg, note

    def __getattr__(self, name: str) -> Any:
        return getattr(self._seg, name)


def _load_onnx(load: Callable[..., Any], f: Path, device: str, threads: int | None) -> Any:
    """An ONNX artifact on ``device``; when its GPU providers fail to load it, on the CPU instead (noted)."""
    if not device.startswith("cuda"):
        return load(f, device=device, threads=threads)
    try:
        return load(f, device=device, threads=threads)
    except DeployError as exc:
        seg = load(f, device="cpu", threads=threads)
        return _Fallback(seg, f"ran on the CPU: the GPU providers could not load it ({str(exc)[:160]})")


def verify_file(cand: Candidate) -> None:
    """The file a candidate names must exist, be readable and match the manifest's sha256 (which
    every artifact must have: a manifest edited to drop it fails the row, never skips the test)."""
    if cand.problem:
        raise DeployError(cand.problem)
    if cand.file is None:
        return
    if not cand.file.is_file():
        raise DeployError(f"{cand.file.name}: listed in the manifest but not found")
    if cand.needs_sha and not cand.sha256:
        raise DeployError(f"{cand.file.name}: the manifest gives no sha256 for it (edited?); re-export")
    if cand.sha256:
        try:
            digest = sha256_file(cand.file)
        except OSError as exc:
            raise DeployError(f"{cand.file.name}: unreadable ({exc.strerror})") from None
        if digest != cand.sha256:
            raise DeployError(f"{cand.file.name}: sha256 differs from the manifest's (replaced, truncated or corrupt "
                              "since export); re-export it")


def _predict_all(seg: Any, images: Sequence[np.ndarray], batch: int) -> list[np.ndarray]:
    preds: list[np.ndarray] = []
    for i in range(0, len(images), batch):
        preds.extend(seg.predict_batch(images[i : i + batch]))
    return preds


def evaluate_rows(
    candidates: Sequence[Candidate],
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    num_classes: int,
    batch: int = 4,
    max_drop: float = 1.0,
    ignore_index: int = 255,
    latency_kw: dict | None = None,
    on_row: Callable[[Row], None] | None = None,
    power: power_meter.PowerSampler | None = None,
    profile_layers: Path | None = None,
) -> list[Row]:
    """Score every candidate; the reference (first ungated candidate named ``onnx``) sets drop/agreement.
    With ``power`` (a started sampler), each latency figure carries the power drawn while it was timed.
    ``profile_layers``: a folder for each TensorRT row's per-layer time table (``--profile-layers``)."""
    latency_kw = {"min_time": 1.0, **(latency_kw or {})}
    rows: list[Row] = []
    ref_preds: list[np.ndarray] | None = None
    ref_miou: float | None = None
    for cand in candidates:
        row = Row(name=cand.name, file=cand.file.name if cand.file else None, precision=cand.precision,
                  int8_budget=cand.int8_budget)
        if cand.file is not None and cand.file.is_file():
            row.size_mb = cand.file.stat().st_size / 1e6
        seg, intact = None, False
        try:
            verify_file(cand)
            row.sha256 = cand.sha256
            intact = True  # present, readable and as exported: whatever fails now is the runtime's
            if cand.file is not None and cand.file.suffix == ".engine":
                row.detail = _engine_precisions(cand.file)
            seg = cand.load()
            row.backend = getattr(seg, "provider", "")
            row.note = getattr(seg, "fallback_note", "") or cand.note
            preds = _predict_all(seg, images, max(1, batch))
            cm = ConfusionMatrix(num_classes, ignore_index)
            for lab, pred in zip(labels, preds):
                top = int(pred.max()) if pred.size else 0
                if top >= num_classes:  # never clamped into a class: the manifest's class list is not this model's
                    raise DeployError(f"the model predicts class {top} but the manifest lists {num_classes} classes "
                                      "(edited, or another model's); re-export")
                cm.update(lab, pred)
            row.miou = 100.0 * cm.compute().miou
            if cand.name == REFERENCE_KEY:
                ref_preds, ref_miou = preds, row.miou
            if ref_preds is not None:
                same = sum(int((a == b).sum()) for a, b in zip(preds, ref_preds))
                row.agreement = 100.0 * same / max(1, sum(p.size for p in preds))
                row.drop = ref_miou - row.miou if ref_miou is not None else None
            row.latency["b1"] = power_meter.timed(power, row.backend, lambda: measure_segmenter(seg, 1, **latency_kw))
            big = min(batch, getattr(seg, "max_batch", None) or batch)  # what an engine's profile accepts
            if big > 1:
                row.latency[f"b{big}"] = power_meter.timed(power, row.backend,
                                                           lambda: measure_segmenter(seg, big, **latency_kw))
            if profile_layers is not None and hasattr(getattr(seg, "backend", None), "profile_layers"):
                row.layer_profile = _profile_layers(seg, images[0], cand, profile_layers)  # last: leaves the profiler on
            gate_fail = cand.gated and row.drop is not None and row.drop > max_drop
            row.status = FAILED_GATE if gate_fail else PASSED
            if gate_fail:
                row.reason = f"mIoU drop {row.drop:.2f} > --max-drop {max_drop:g}"
        except ForeignEngineError as exc:  # intact, sha256 as exported, made for another GPU / TensorRT release
            row.status, row.reason = SKIPPED, f"built for {exc.built_for}; rebuild with `{exc.rebuild}`"
        except RddError as exc:
            row.status, row.reason = FAILED, str(exc)
        except Exception as exc:  # noqa: BLE001 - one broken artifact must not stop the table
            row.status, row.reason = FAILED, f"{type(exc).__name__}: {exc}"
        finally:
            if seg is not None and hasattr(seg, "close"):
                seg.close()  # device buffers, streams, sessions: one artifact at a time
        if row.status == FAILED and intact and cand.file is not None and cand.file.suffix == ".engine" and _no_tensorrt():
            row.status = SKIPPED  # an intact engine on a machine without TensorRT: not a failure of the artifact
        rows.append(row)
        if on_row:
            on_row(row)
    return rows


PROFILE_RUNS = 20


def _profile_layers(seg: Any, image: np.ndarray, cand: Candidate, folder: Path) -> list[str]:
    """TensorRT's per-layer times for one check image at batch 1 (deploy.layer_profile), as file names."""
    from rdd_edge.deploy.layer_profile import write_layer_profile

    layers = seg.backend.profile_layers(seg.preprocess(image), runs=PROFILE_RUNS)
    paths = write_layer_profile(folder, cand.name, layers, PROFILE_RUNS, engine=cand.file.name if cand.file else "")
    return [p.name for p in paths.values()]


def _engine_precisions(engine: Path) -> str:
    """"INT8 41, FP16 12, FP32 0 layers" from an engine's sidecar ('' when it has none)."""
    try:
        return precision_summary(json.loads(sidecar_path(engine).read_text()))
    except (OSError, ValueError):
        return ""


def _no_tensorrt() -> bool:
    return tensorrt_module() is None


def eval_spec(manifest: dict[str, Any], dataset: str | None = None, root: str | Path | None = None) -> Any:
    """The data the check scores on: the manifest's (what training validated on) unless told otherwise."""
    recorded = manifest.get("data")
    base = DataSpec.from_dict(recorded) if isinstance(recorded, dict) else DataSpec(name=str(manifest.get("dataset") or "synthetic"))
    return base.overridden(dataset, root)


def load_eval_data(manifest: dict[str, Any], dataset: str | None, root: str | Path | None, images: int | None,
                   split: str = "val", export_dir: Path | None = None) -> tuple[Any, list[np.ndarray], list[np.ndarray]]:
    """(reader, images, labels) the check scores on: the first ``images`` of the split (all by default).

    An export that carries its check images (``check-data/``, written by ``rdd-edge bundle``) is scored
    on those unless ``--dataset`` / ``--data`` say otherwise: a device has no copy of the data set."""
    bundled = None
    if dataset is None and root is None and export_dir is not None:
        bundled = open_check_data(export_dir, manifest)
    if bundled is not None:
        ds, where = bundled, f"{bundled.folder}"
    else:
        spec = eval_spec(manifest, dataset, root)
        ds, where = open_split(spec, split), spec.describe()
    n = len(ds) if images is None else min(int(images), len(ds))
    if n == 0:
        raise ConfigError(f"{where} has no {split} images to check on")
    pairs = [ds[i] for i in range(n)]
    return ds, [p[0] for p in pairs], [p[1] for p in pairs]


# ---------------------------------------------------------------- the check stage's entry point
@dataclass
class CheckSpec:
    """What ``rdd-edge check`` checks, on which images and how."""

    run: str | Path | None = None  # distill run or its export folder (None: the latest with an export)
    runs_root: str | Path = DEFAULT_ROOT
    images: int | None = None  # score on the first N val images (None: all)
    batch: int = 4  # the second latency batch size (an engine's maximum caps it)
    max_drop: float = 1.0  # gate: mIoU points an artifact may lose vs FP32 ONNX
    device: str = "auto"
    threads: int | None = None
    dataset: str | None = None  # data set name (default: the manifest's)
    data: str | Path | None = None  # data folder (default: the manifest's)
    min_time: float = 1.0  # seconds of timed runs per latency figure
    reference: bool = True  # add the reference rows installed providers give (the torch checkpoint, with torch)
    profile_layers: bool = False  # TensorRT rows: per-layer GPU times (IProfiler) into check-layers-<row>.csv / .md


@dataclass
class CheckResult:
    """The check's rows, where its reports went, and the gate's decision as data."""

    rows: list[Row]
    meta: dict[str, Any]
    paths: dict[str, Path]
    failures: list[str]  # one line per reason the gate fails (empty: passed)

    @property
    def passed(self) -> bool:
        return not self.failures


def gate(rows: Sequence[Row], max_drop: float) -> list[str]:
    """Why the gate fails, one line each: a listed artifact that is missing, unreadable, altered or
    does not run, or one that loses more than ``max_drop`` mIoU points (reference rows excepted)."""
    out = []
    for r in rows:
        if r.name == "torch":
            continue  # a reference, not an artifact of the export
        if r.status == FAILED:
            out.append(f"{r.name}: {r.reason or 'failed'}")
        elif r.status == FAILED_GATE:
            out.append(f"{r.name} lost {r.drop:.2f} mIoU points (--max-drop {max_drop:g})")
    return out


REFERENCE_GROUP = "rdd_edge.check_references"  # entry points: (export_dir, threads) -> Candidate | None


def reference_candidates(export_dir: Path, threads: int | None) -> list[Candidate]:
    """Reference rows from the installed providers (pyproject's ``rdd_edge.check_references`` entry
    points; the torch checkpoint row is ``rdd_edge.export.reference:torch_candidate``). A provider
    whose stack is not installed (no torch on a device) gives none; deploy never imports one itself."""
    out = []
    for ep in md.entry_points(group=REFERENCE_GROUP):
        try:
            provider = ep.load()
        except ImportError:
            continue
        cand = provider(export_dir, threads)
        if cand is not None:
            out.append(cand)
    return out


def run_check(spec: CheckSpec, extra: Sequence[Candidate] = (), on_row: Callable[[Row], None] | None = None) -> CheckResult:
    """Check every artifact an export's manifest lists (after the reference rows: the installed
    providers' with ``spec.reference``, and ``extra``); write check.json / check.md / check.png;
    return the rows and the gate decision."""
    device = parse_device(spec.device)
    if spec.batch < 1:
        raise ConfigError(f"--batch {spec.batch}: must be >= 1")
    if not (isinstance(spec.max_drop, (int, float)) and math.isfinite(spec.max_drop) and spec.max_drop >= 0):
        raise ConfigError(f"--max-drop {spec.max_drop}: mIoU points, a finite number >= 0 (e.g. 1.0)")
    if not (isinstance(spec.min_time, (int, float)) and math.isfinite(spec.min_time) and spec.min_time > 0):
        raise ConfigError(f"--min-time {spec.min_time}: seconds, a finite number > 0")
    run_dir = resolve_run(spec.run, "distill", "the run to check", root=spec.runs_root, must_contain="export/manifest.json")
    export_dir = find_export_dir(run_dir)
    manifest, _ = read_manifest(export_dir / MANIFEST_NAME)
    if manifest is None:
        raise ConfigError(f"{export_dir}: no {MANIFEST_NAME}; run `rdd-edge export` first")
    manifest_sha = sha256_file(export_dir / MANIFEST_NAME)  # the report names the manifest it checked
    ds, imgs, lbls = load_eval_data(manifest, spec.dataset, spec.data, spec.images, export_dir=export_dir)
    refs = reference_candidates(export_dir, spec.threads) if spec.reference else []
    cands = [*refs, *extra, *manifest_candidates(export_dir, manifest, device=device, threads=spec.threads)]
    n_cls = int(manifest.get("num_classes") or len(manifest.get("classes", [])))
    state = device_state.collect(device=device, gpu_index=cuda_index(device))  # before the timed runs
    with power_meter.open_sampler(device=device, gpu_index=cuda_index(device)) as sampler:
        rows = evaluate_rows(cands, imgs, lbls, n_cls, batch=spec.batch, max_drop=spec.max_drop,
                             ignore_index=int(manifest.get("ignore_index", 255)), latency_kw={"min_time": spec.min_time},
                             on_row=on_row, power=sampler,
                             profile_layers=export_dir if spec.profile_layers else None)
    inp = manifest.get("input") or {}
    meta = {"run": str(run_dir), "export_dir": str(export_dir), "model_name": manifest.get("model_name"),
            "dataset": ds.info.name, "split": getattr(ds, "split", "val"), "images": len(imgs),
            "input_size": list(inp.get("size") or inp.get("shape", [0, 0, 0, 0])[2:]),
            "max_drop": spec.max_drop, "batch": spec.batch, "device": device, "threads": spec.threads,
            "manifest_sha256": manifest_sha, "device_state": {**state, "power_source": sampler.name}}
    failures = gate(rows, spec.max_drop)
    meta.update(failures=failures, gate_failed=bool(failures))
    if on_cpu(rows, meta):  # CPU latencies: name the CPU and the INT8 instruction set they depend on
        meta["cpu"] = cpu_meta()
    try:
        paths = write_report(export_dir, rows, meta)
    except OSError as exc:  # a read-only or full file system: the verdict stands, the report is what is lost
        paths = {}
        meta["report_error"] = (f"could not write check.json / check.md / check.png into {export_dir} "
                                f"({exc.strerror or exc}){_drop_stale_report(export_dir)}")
    return CheckResult(rows, meta, paths, failures)


def _drop_stale_report(export_dir: Path) -> str:
    """Remove an earlier check.json (it must not speak for this check); what became of it, for the message."""
    old = export_dir / "check.json"
    if not old.exists():
        return ""
    try:
        old.unlink()
        return "; the earlier check.json was removed"
    except OSError:
        return "; an earlier check.json is still there and describes an earlier check"
