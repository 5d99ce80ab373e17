"""Which artifact of an export to run, trusting nothing that can be edited unchecked.

``check.json`` and ``manifest.json`` are plain files in a folder someone may have changed: a row
of check.json may name any path, an artifact may have been replaced after the check passed. So an
artifact is chosen only when check.json says it passed, its name is a plain file inside the
export folder and its bytes match the manifest's sha256; when none qualifies the choice is
refused in one line. A file a user names explicitly is theirs to run: it is only compared with
the manifest, and a difference becomes a note.

TensorRT engines count too (issue 26: on a Jetson the engine is the point): an engine qualifies when,
besides the above, its sidecar says it was built here (same GPU compute capability and the exact
TensorRT release, :func:`deploy.engine_meta.check_compatible`). A faster artifact passed over
(failed, changed since the check, an engine built elsewhere) is named in one note with the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rdd_edge.deploy.engine_meta import check_compatible, read_sidecar, runtime_identity
from rdd_edge.deploy.info import MANIFEST_NAME, read_manifest
from rdd_edge.deploy.integrity import sealed_rows
from rdd_edge.devices import cuda_index
from rdd_edge.errors import DeployError
from rdd_edge.runs import inside, sha256_file


def manifest_entry(manifest: dict[str, Any] | None, name: str) -> dict[str, Any] | None:
    """The manifest's artifact entry whose file is ``name`` (None when none is)."""
    for entry in ((manifest or {}).get("artifacts") or {}).values():
        if isinstance(entry, dict) and entry.get("file") == name:
            return entry
    return None


def mismatch(path: Path, manifest: dict[str, Any] | None) -> str | None:
    """Why ``path`` is not the exported file the manifest beside it lists (None when it is)."""
    if manifest is None:
        return None
    entry = manifest_entry(manifest, path.name)
    if entry is None:
        return f"{path.name} is not listed in the manifest beside it"
    sha = entry.get("sha256")
    if not isinstance(sha, str):
        return f"the manifest gives no sha256 for {path.name}"
    if sha256_file(path) != sha:
        return f"{path.name} differs from the exported file (sha256; replaced or edited since export)"
    return None


def passed_rows(export_dir: Path) -> list[dict[str, Any]] | None:
    """The rows of the last ``check.json`` here (None when no check has run or it is unreadable)."""
    return sealed_rows(Path(export_dir))  # DeployError when check.json was edited or the manifest changed since


def scored_these_bytes(row: dict[str, Any], manifest: dict[str, Any] | None, name: str) -> bool:
    """Whether the check row recorded the sha256 the manifest lists for ``name`` (the row scored these bytes)."""
    return row.get("sha256") == (manifest_entry(manifest, name) or {}).get("sha256")


def _fps(row: dict[str, Any]) -> float:
    b1 = (row.get("latency") or {}).get("b1") if isinstance(row.get("latency"), dict) else None
    try:
        return float(b1["fps"]) if isinstance(b1, dict) else 0.0
    except (KeyError, TypeError, ValueError):
        return 0.0


def fastest_passed(export_dir: Path, manifest: dict[str, Any] | None = None, suffixes: tuple[str, ...] = (".onnx",)) -> str | None:
    """The file of the fastest artifact that passed the last check here and is still the exported
    file (inside the folder, sha256 as in the manifest); None without one."""
    export_dir = Path(export_dir)
    if manifest is None:
        manifest, _ = read_manifest(export_dir / MANIFEST_NAME)
    ok = []
    for r in passed_rows(export_dir) or []:
        name = r.get("file")
        if r.get("status") != "passed" or not isinstance(name, str) or not name.endswith(suffixes):
            continue
        try:
            path = inside(export_dir, name, "check.json row")
        except DeployError:
            continue
        if path.is_file() and mismatch(path, manifest) is None and scored_these_bytes(r, manifest, name):
            ok.append(r)
    return str(max(ok, key=_fps)["file"]) if ok else None


ENGINE_SUFFIXES = (".engine", ".plan")


def _engine_problem(path: Path, device: str, identity: dict[str, Any] | None) -> str | None:
    """Why an intact engine cannot run here (None when it can): ``--device cpu``, no sidecar, built for
    another GPU or TensorRT release."""
    if device == "cpu":
        return "an engine, and --device cpu"
    try:
        check_compatible(read_sidecar(path), identity)
    except DeployError as exc:
        text = str(exc)
        return text.split(": ", 1)[1] if text.startswith(f"{path}: ") else text
    return None


def _skip_note(skipped: list[tuple[dict[str, Any], str]], chosen: str) -> str:
    parts = [f"{r.get('file')} ({_fps(r):.0f} images/s at batch 1 in the check)" if _fps(r) else str(r.get("file"))
             for r, _ in skipped]
    why = "; ".join(f"{r.get('file')}: {reason}" for r, reason in skipped)
    return f"running {chosen}; skipped faster {', '.join(parts)}: {why}"


def choose_artifact(export_dir: Path, device: str = "auto") -> tuple[Path, list[str]]:
    """The artifact to run from an export folder and notes about the choice; DeployError when no
    artifact qualifies (every one failed its check, or was changed since).

    The fastest (batch-1 images/s of the last check) among the rows that passed, are still the
    exported file, and, for an engine, were built for this GPU and TensorRT release; with
    ``device="cpu"`` engines are passed over. Faster rows that were passed over are named in one note."""
    export_dir = Path(export_dir)
    manifest, mpath = read_manifest(export_dir / MANIFEST_NAME)
    if manifest is None:
        raise DeployError(f"{mpath}: no manifest; pass a model file, or export again")
    rows = passed_rows(export_dir)
    if rows is not None:
        identity: list[dict[str, Any]] = []  # probed once, and only when an engine is a candidate
        ok: list[dict[str, Any]] = []
        passed_over: list[tuple[dict[str, Any], str]] = []
        for r in sorted(rows, key=_fps, reverse=True):
            name = r.get("file")
            if not isinstance(name, str) or not name.endswith((".onnx", *ENGINE_SUFFIXES)):
                continue
            try:
                path = inside(export_dir, name, "check.json row")
            except DeployError:
                continue
            if r.get("status") != "passed":
                passed_over.append((r, f"{r.get('status')} in the last check"))
                continue
            if not path.is_file() or mismatch(path, manifest) is not None:
                passed_over.append((r, "changed or missing since the check (sha256 differs from the manifest)"))
                continue
            if not scored_these_bytes(r, manifest, name):
                passed_over.append((r, "the check scored other bytes than the manifest lists"))
                continue
            if name.endswith(ENGINE_SUFFIXES):
                if not identity and device != "cpu":
                    identity.append(runtime_identity(cuda_index(device)))
                why = _engine_problem(path, device, identity[0] if identity else None)
                if why:
                    passed_over.append((r, why))
                    continue
            ok.append(r)
        if not ok:
            why = "; ".join(f"{r.get('file')}: {reason}" for r, reason in passed_over[:4]) or "no model rows"
            raise DeployError(f"{export_dir}: no artifact both passed the last check and still matches the "
                              f"manifest, runnable here ({why}); run `rdd-edge check {export_dir}`, or name a model file")
        best = ok[0]
        faster = [(r, why) for r, why in passed_over
                  if _fps(r) > _fps(best) or str(r.get("file", "")).endswith(ENGINE_SUFFIXES)]
        return export_dir / str(best["file"]), ([_skip_note(faster, str(best["file"]))] if faster else [])
    path = inside(export_dir, "model.onnx", "FP32 model")
    if not path.is_file():
        raise DeployError(f"{path}: not found; export again, or name a model file")
    why = mismatch(path, manifest)
    if why:
        raise DeployError(f"{export_dir}: {why}; re-export it, or name the file explicitly to run it anyway")
    return path, [f"no check has run in {export_dir}: running model.onnx (run `rdd-edge check` to pick the fastest "
                  "artifact that passes)"]
