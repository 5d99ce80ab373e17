"""Which artifact of an export to run, trusting nothing that can be edited unchecked.

``check.json`` and ``manifest.json`` are plain files in a folder someone may have changed: a row
of check.json may name any path, an artifact may have been replaced after the check passed. So an
artifact is chosen only when check.json says it passed, its name is a plain file inside the
export folder and its bytes match the manifest's sha256; when none qualifies the choice is
refused in one line. A file a user names explicitly is theirs to run: it is only compared with
the manifest, and a difference becomes a note.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rdd_edge.deploy.info import MANIFEST_NAME, read_manifest
from rdd_edge.deploy.integrity import sealed_rows
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
        scored = r.get("sha256") == (manifest_entry(manifest, name) or {}).get("sha256")  # the row scored these bytes
        if path.is_file() and mismatch(path, manifest) is None and scored:
            ok.append(r)
    return str(max(ok, key=_fps)["file"]) if ok else None


def changed_since_check(export_dir: Path, manifest: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    """A note naming the artifacts that passed the last check but were changed since (skipped), if any."""
    changed = []
    for r in rows:
        name = r.get("file")
        if r.get("status") != "passed" or not isinstance(name, str) or not name.endswith(".onnx"):
            continue
        try:
            path = inside(export_dir, name, "check.json row")
        except DeployError:
            continue
        if not path.is_file() or mismatch(path, manifest) is not None:
            changed.append(name)
    return [f"skipped {', '.join(changed)}: passed the last check but changed since (sha256 differs from the manifest); "
            f"run `rdd-edge check {export_dir}` again"] if changed else []


def choose_artifact(export_dir: Path) -> tuple[Path, list[str]]:
    """The artifact to run from an export folder and notes about the choice; DeployError when no
    artifact qualifies (every one failed its check, or was changed since)."""
    export_dir = Path(export_dir)
    manifest, mpath = read_manifest(export_dir / MANIFEST_NAME)
    if manifest is None:
        raise DeployError(f"{mpath}: no manifest; pass a model file, or export again")
    rows = passed_rows(export_dir)
    if rows is not None:
        best = fastest_passed(export_dir, manifest)
        if best is None:
            failed = "; ".join(f"{r.get('name')}: {r.get('status')}" for r in rows[:4])
            raise DeployError(f"{export_dir}: no ONNX artifact both passed the last check and still matches the "
                              f"manifest ({failed}); run `rdd-edge check {export_dir}`, or name a model file")
        return export_dir / best, changed_since_check(export_dir, manifest, rows)
    path = inside(export_dir, "model.onnx", "FP32 model")
    if not path.is_file():
        raise DeployError(f"{path}: not found; export again, or name a model file")
    why = mismatch(path, manifest)
    if why:
        raise DeployError(f"{export_dir}: {why}; re-export it, or name the file explicitly to run it anyway")
    return path, [f"no check has run in {export_dir}: running model.onnx (run `rdd-edge check` to pick the fastest "
                  "artifact that passes)"]
