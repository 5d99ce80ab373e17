"""The deploy check: every exported artifact side by side, accuracy gate included.

One row per artifact in the export manifest (plus optional reference rows, e.g. the torch
checkpoint, given by the caller): status, size, mIoU on the val images, drop and pixel
agreement vs the FP32 ONNX model, and model-only latency at batch 1 and at a larger batch.
A failing artifact fills its status cell and the loop goes on. The report is written as
``check.json``, ``check.md`` and ``check.png`` (latency vs mIoU) in the export folder.

Post-processing is the runtime's (:mod:`deploy.postprocess`), so every row is scored on exactly
what an application would get from :meth:`deploy.Segmenter.predict`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from rdd_edge.errors import ConfigError, DeployError, RddError
from rdd_edge.metrics import ConfusionMatrix
from rdd_edge.runs import DEFAULT_ROOT, atomic_path, atomic_write_text, write_json

from deploy.info import MANIFEST_NAME
from export.formats import ORDER as FORMAT_ORDER

# Status cells
PASSED = "passed"
FAILED_GATE = "failed gate"  # exported and runs, but lost more mIoU than allowed
FAILED = "failed"
SKIPPED = "skipped"

REFERENCE_KEY = "onnx"  # the FP32 ONNX model every other row is compared with
ORDER = ("torch", *FORMAT_ORDER)  # reference row first, then the formats table's order


@dataclass
class Row:
    """One line of the check table."""

    name: str
    file: str | None
    precision: str
    backend: str = ""
    status: str = FAILED
    reason: str = ""
    size_mb: float | None = None
    miou: float | None = None  # in percent
    drop: float | None = None  # mIoU points lost vs the FP32 reference (positive = worse)
    agreement: float | None = None  # fraction of pixels with the reference's label, in percent
    latency: dict[str, dict] = field(default_factory=dict)  # "b1", "bN" -> Latency.as_dict()

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Candidate:
    """Something to check: ``load()`` returns a Segmenter-like object (predict_batch, preprocess, run, info)."""

    name: str
    load: Callable[[], Any]
    file: Path | None = None
    precision: str = "fp32"
    gated: bool = True  # subject to --max-drop (everything but the reference rows)
    sha256: str | None = None  # what the manifest recorded; a file that differs fails its row


def find_export_dir(run: str | Path) -> Path:
    """``run`` may be a distill run (``<run>/export``) or the export folder itself."""
    run = Path(run)
    for d in (run / "export", run):
        if (d / MANIFEST_NAME).is_file():
            return d
    raise ConfigError(f"{run}: no export/{MANIFEST_NAME} found; run `rdd-edge export` on this run first")


def manifest_candidates(export_dir: Path, manifest: dict[str, Any], device: str = "cpu", threads: int | None = None) -> list[Candidate]:
    """One candidate per artifact the manifest lists, FP32 ONNX first."""
    from deploy.runtime import load

    arts = manifest.get("artifacts") or {}
    if not arts:
        raise ConfigError(f"{export_dir / MANIFEST_NAME}: lists no artifacts; re-run `rdd-edge export`")
    keys = sorted(arts, key=lambda k: (ORDER.index(k) if k in ORDER else len(ORDER), k))
    out = []
    for k in keys:
        entry = arts[k] if isinstance(arts[k], dict) else {"file": str(arts[k])}
        f = export_dir / str(entry.get("file", ""))
        out.append(
            Candidate(
                name=k,
                load=lambda f=f: load(f, device=device, threads=threads),
                file=f,
                precision=str(entry.get("precision", "fp32" if k == REFERENCE_KEY else k)),
                gated=k != REFERENCE_KEY,
                sha256=entry.get("sha256"),
            )
        )
    return out


def verify_file(cand: Candidate) -> None:
    """The file a candidate names must exist, be readable and match the manifest's sha256."""
    from rdd_edge.runs import sha256_file

    if cand.file is None:
        return
    if not cand.file.is_file():
        raise DeployError(f"{cand.file.name}: listed in the manifest but not found")
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
) -> list[Row]:
    """Score every candidate; the reference (first ungated candidate named ``onnx``) sets drop/agreement."""
    from deploy.latency import measure_segmenter

    latency_kw = {"min_time": 1.0, **(latency_kw or {})}
    rows: list[Row] = []
    ref_preds: list[np.ndarray] | None = None
    ref_miou: float | None = None
    for cand in candidates:
        row = Row(name=cand.name, file=cand.file.name if cand.file else None, precision=cand.precision)
        if cand.file is not None and cand.file.is_file():
            row.size_mb = cand.file.stat().st_size / 1e6
        try:
            verify_file(cand)
            seg = cand.load()
            row.backend = getattr(seg, "provider", "")
            preds = _predict_all(seg, images, max(1, batch))
            cm = ConfusionMatrix(num_classes, ignore_index)
            for lab, pred in zip(labels, preds):
                cm.update(lab, np.minimum(pred, num_classes - 1) if pred.size else pred)
            row.miou = 100.0 * cm.compute().miou
            if cand.name == REFERENCE_KEY:
                ref_preds, ref_miou = preds, row.miou
            if ref_preds is not None:
                same = sum(int((a == b).sum()) for a, b in zip(preds, ref_preds))
                row.agreement = 100.0 * same / max(1, sum(p.size for p in preds))
                row.drop = ref_miou - row.miou if ref_miou is not None else None
            row.latency["b1"] = measure_segmenter(seg, 1, **latency_kw).as_dict()
            if batch > 1:
                row.latency[f"b{batch}"] = measure_segmenter(seg, batch, **latency_kw).as_dict()
            gate_fail = cand.gated and row.drop is not None and row.drop > max_drop
            row.status = FAILED_GATE if gate_fail else PASSED
            if gate_fail:
                row.reason = f"mIoU drop {row.drop:.2f} > --max-drop {max_drop:g}"
        except RddError as exc:
            row.status, row.reason = FAILED, str(exc)
        except Exception as exc:  # noqa: BLE001 - one broken artifact must not stop the table
            row.status, row.reason = FAILED, f"{type(exc).__name__}: {exc}"
        if (row.status == FAILED and cand.file is not None and cand.file.suffix == ".engine" and _no_tensorrt()
                and _intact(cand)):
            row.status = SKIPPED  # an intact engine on a machine without TensorRT: not a failure of the artifact
        rows.append(row)
        if on_row:
            on_row(row)
    return rows


def _intact(cand: Candidate) -> bool:
    try:
        verify_file(cand)
    except DeployError:
        return False
    return True


def _no_tensorrt() -> bool:
    from deploy.engine_meta import runtime_identity

    return runtime_identity()["tensorrt"] is None


def fastest_passed(export_dir: Path) -> str | None:
    """The file of the fastest ONNX artifact that passed the last check here (None without one)."""
    import json

    try:
        rows = json.loads((Path(export_dir) / "check.json").read_text()).get("rows", [])
    except (OSError, ValueError):
        return None
    ok = [r for r in rows if r.get("status") == PASSED and str(r.get("file", "")).endswith(".onnx")
          and (r.get("latency") or {}).get("b1") and (Path(export_dir) / r["file"]).is_file()]
    return max(ok, key=lambda r: r["latency"]["b1"]["fps"])["file"] if ok else None


def gate_failures(rows: Sequence[Row]) -> list[Row]:
    return [r for r in rows if r.status == FAILED_GATE]


def _fmt(v: float | None, nd: int = 2) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def _short_backend(name: str) -> str:
    if name.startswith("torch"):
        return "torch"
    return name.replace("ExecutionProvider", "").replace("Tensorrt", "TensorRT").replace(" CPU", "").strip()


def table_rows(rows: Sequence[Row], compact: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and string cells of the markdown report; ``compact`` for an 80-column screen."""
    bkeys = sorted({k for r in rows for k in r.latency if k != "b1"})
    if compact:
        head = ["artifact", "status", "MB", "mIoU", "drop", "agree%", "p50 ms", "FPS"]
        body = []
        for r in rows:
            b1 = r.latency.get("b1")
            status = r.status if not r.reason else f"{r.status}: {r.reason}"
            backend = _short_backend(r.backend)
            name = r.name if backend in ("torch", "CPU", "") else f"{r.name} ({backend})"
            body.append([name, status, _fmt(r.size_mb, 1), _fmt(r.miou), _fmt(r.drop), _fmt(r.agreement, 1),
                         _fmt(b1["p50_ms"]) if b1 else "-", _fmt(b1["fps"], 1) if b1 else "-"])
        return head, body
    head = ["artifact", "precision", "backend", "status", "MB", "mIoU", "drop", "agree %", "b1 p50/p90/p99 ms", "b1 FPS"]
    for k in bkeys:
        head += [f"{k} p50 ms", f"{k} FPS"]
    body = []
    for r in rows:
        status = r.status if not r.reason else f"{r.status}: {r.reason}"
        b1 = r.latency.get("b1")
        cells = [r.name, r.precision, r.backend, status, _fmt(r.size_mb), _fmt(r.miou), _fmt(r.drop), _fmt(r.agreement),
                 f"{b1['p50_ms']:.2f}/{b1['p90_ms']:.2f}/{b1['p99_ms']:.2f}" if b1 else "-", _fmt(b1["fps"], 1) if b1 else "-"]
        for k in bkeys:
            lb = r.latency.get(k)
            cells += [_fmt(lb["p50_ms"]) if lb else "-", _fmt(lb["fps"], 1) if lb else "-"]
        body.append(cells)
    return head, body


def to_markdown(rows: Sequence[Row], meta: dict[str, Any]) -> str:
    head, body = table_rows(rows)
    lines = [
        f"# Deploy check: {meta.get('model_name') or ''}".rstrip(),
        "",
        f"{meta['images']} {meta['dataset']} {meta['split']} images, model input {meta['input_size'][0]}x{meta['input_size'][1]}, "
        f"gate: drop <= {meta['max_drop']:g} mIoU points vs FP32 ONNX. Latency: model only, after warm-up, sigma-clipped.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in cells) + " |" for cells in body]
    lines += ["", f"Result: {'FAILED' if meta['gate_failed'] else 'passed'} ({time.strftime('%Y-%m-%d %H:%M:%S')})", ""]
    return "\n".join(lines)


def plot(rows: Sequence[Row], path: Path) -> Path | None:
    """Latency (batch 1, p50) vs mIoU scatter, one labelled point per row that ran."""
    pts = [(r.latency["b1"]["p50_ms"], r.miou, r.name, r.status) for r in rows if r.miou is not None and "b1" in r.latency]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for ms, miou, name, status in pts:
        ax.scatter([ms], [miou], c="tab:red" if status == FAILED_GATE else "tab:blue")
        ax.annotate(name, (ms, miou), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("latency, batch 1, p50 (ms)")
    ax.set_ylabel("mIoU (%)")
    ax.set_title("latency vs mIoU" + ("" if pts else " (no artifact ran)"))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def write_report(export_dir: Path, rows: Sequence[Row], meta: dict[str, Any]) -> dict[str, Path]:
    """check.json, check.md and check.png in ``export_dir`` (atomically)."""
    meta = {**meta, "gate_failed": bool(meta.get("failures", gate_failures(rows)))}
    out = {"json": export_dir / "check.json", "md": export_dir / "check.md", "png": export_dir / "check.png"}
    write_json(out["json"], {"format": "rdd-edge-check", "version": 1, **meta, "rows": [r.as_dict() for r in rows]})
    atomic_write_text(out["md"], to_markdown(rows, meta))
    plot(rows, out["png"])
    return out


def eval_spec(manifest: dict[str, Any], dataset: str | None = None, root: str | Path | None = None) -> Any:
    """The data the check scores on: the manifest's (what training validated on) unless told otherwise."""
    from rdd_edge.data import DataSpec

    recorded = manifest.get("data")
    base = DataSpec.from_dict(recorded) if isinstance(recorded, dict) else DataSpec(name=str(manifest.get("dataset") or "synthetic"))
    if dataset is not None and dataset != base.name:
        return DataSpec(name=dataset, root=str(root) if root is not None else None)
    return base.with_(root=str(root) if root is not None else None)


def load_eval_data(manifest: dict[str, Any], dataset: str | None, root: str | Path | None, images: int | None,
                   split: str = "val") -> tuple[Any, list[np.ndarray], list[np.ndarray]]:
    """(reader, images, labels) the check scores on: the first ``images`` of the split (all by default)."""
    from rdd_edge.data import open_split

    spec = eval_spec(manifest, dataset, root)
    ds = open_split(spec, split)
    n = len(ds) if images is None else min(int(images), len(ds))
    if n == 0:
        raise ConfigError(f"{spec.describe()} has no {split} images to check on")
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


def run_check(spec: CheckSpec, extra: Sequence[Candidate] = (), on_row: Callable[[Row], None] | None = None) -> CheckResult:
    """Check every artifact an export's manifest lists (plus ``extra`` reference rows, e.g. the torch
    checkpoint); write check.json / check.md / check.png; return the rows and the gate decision."""
    from deploy.info import read_manifest
    from rdd_edge.devices import parse_device
    from rdd_edge.runs import resolve_run

    device = parse_device(spec.device)
    if spec.batch < 1:
        raise ConfigError(f"--batch {spec.batch}: must be >= 1")
    run_dir = resolve_run(spec.run, "distill", "the run to check", root=spec.runs_root, must_contain="export/manifest.json")
    export_dir = find_export_dir(run_dir)
    manifest, _ = read_manifest(export_dir / MANIFEST_NAME)
    if manifest is None:
        raise ConfigError(f"{export_dir}: no {MANIFEST_NAME}; run `rdd-edge export` first")
    ds, imgs, lbls = load_eval_data(manifest, spec.dataset, spec.data, spec.images)
    cands = [*extra, *manifest_candidates(export_dir, manifest, device=device, threads=spec.threads)]
    n_cls = int(manifest.get("num_classes") or len(manifest.get("classes", [])))
    rows = evaluate_rows(cands, imgs, lbls, n_cls, batch=spec.batch, max_drop=spec.max_drop,
                         ignore_index=int(manifest.get("ignore_index", 255)), latency_kw={"min_time": spec.min_time},
                         on_row=on_row)
    inp = manifest.get("input") or {}
    meta = {"run": str(run_dir), "export_dir": str(export_dir), "model_name": manifest.get("model_name"),
            "dataset": ds.info.name, "split": "val", "images": len(imgs),
            "input_size": list(inp.get("size") or inp.get("shape", [0, 0, 0, 0])[2:]),
            "max_drop": spec.max_drop, "batch": spec.batch, "device": device, "threads": spec.threads}
    failures = gate(rows, spec.max_drop)
    meta.update(failures=failures, gate_failed=bool(failures))
    paths = write_report(export_dir, rows, meta)
    return CheckResult(rows, meta, paths, failures)
