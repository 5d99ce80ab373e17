"""Is an export folder still what its export wrote? Checked before it travels or is trusted.

Every artifact the manifest lists must be a plain file inside the folder (no path, no link leading
out: a manifest naming ``/etc/passwd`` is refused) whose bytes match the sha256 the manifest
records, and that record must be there. ``rdd-edge bundle`` runs this before copying anything
(issue 32), so a bundle never carries an export that ``check`` would fail.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from rdd_edge.errors import ConfigError, DeployError
from rdd_edge.runs import inside, sha256_file


def verify_artifacts(export_dir: Path, manifest: dict[str, Any], where: str = "manifest.json") -> list[Path]:
    """The manifest's artifact files, each inside ``export_dir`` and matching its recorded sha256; else
    one DeployError naming the artifact and what is wrong."""
    arts = manifest.get("artifacts")
    if not isinstance(arts, dict) or not arts:
        raise DeployError(f"{export_dir / where}: lists no artifacts; re-run `rdd-edge export`")
    out = []
    for key, entry in arts.items():
        entry = entry if isinstance(entry, dict) else {}
        f = inside(export_dir, entry.get("file"), f"artifact {key}'s file")
        if f.is_symlink() or not f.is_file():
            raise DeployError(f"{f}: artifact {key} is not a plain file in the export; re-run `rdd-edge export`")
        want = entry.get("sha256")
        if not isinstance(want, str) or not want:
            raise DeployError(f"{export_dir / where}: artifact {key} ({f.name}) has no sha256 (edited?); re-export")
        try:
            got = sha256_file(f)
        except OSError as exc:
            raise DeployError(f"{f}: unreadable ({exc.strerror})") from None
        if got != want:
            raise DeployError(f"{f}: sha256 differs from the manifest's (replaced, truncated or corrupt since export); "
                              "re-export, then bundle")
        files = manifest.get("files")
        if isinstance(files, list) and f.name not in files:
            raise DeployError(f"{export_dir / where}: artifact {key} ({f.name}) is missing from its files list "
                              "(edited?); re-export")
        out.append(f)
    return out


# ---------------------------------------------------------------- check.json bound to what it checked
SEAL_KEY = "seal"


def seal(doc: dict[str, Any]) -> str:
    """sha256 of a check.json document without its seal, in one canonical JSON form: an edited row
    (a failed artifact marked "passed") no longer matches. Rows carry each artifact's sha256 and the
    document the manifest's, so the seal binds the verdicts to those exact bytes."""
    body = json.loads(json.dumps({k: v for k, v in doc.items() if k != SEAL_KEY}))
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def sealed_rows(export_dir: Path, manifest_name: str = "manifest.json") -> list[dict[str, Any]] | None:
    """The rows of ``export_dir``'s check.json when its seal holds and it checked the manifest that is
    there now; None when no check has run (or its report is unreadable); DeployError naming the
    problem when check.json was edited or the manifest changed since."""
    path = Path(export_dir) / "check.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    rows = doc.get("rows") if isinstance(doc, dict) else None
    if not isinstance(rows, list):
        return None
    if SEAL_KEY not in doc:
        raise DeployError(f"{path}: has no seal (an older rdd-edge wrote it, or it was edited); "
                          f"run `rdd-edge check {export_dir}` again")
    if doc.get(SEAL_KEY) != seal(doc):
        raise DeployError(f"{path}: edited since `rdd-edge check` wrote it (its seal does not match its rows); "
                          f"run `rdd-edge check {export_dir}` again")
    try:
        current = sha256_file(Path(export_dir) / manifest_name)
    except OSError:
        current = None
    if doc.get("manifest_sha256") != current:
        raise DeployError(f"{path}: checked another {manifest_name} (changed since the check); "
                          f"run `rdd-edge check {export_dir}` again")
    return [r for r in rows if isinstance(r, dict)]


# ---------------------------------------------------------------- outputs never inside an export
def export_above(out: str | Path) -> Path | None:
    """The export folder ``out`` would sit inside (a parent holding an rdd-edge export manifest), else None.

    The next export of that run replaces its folder whole, deleting whatever was written inside it, so
    ``bundle --out`` and ``export --out`` refuse such a place (issue 32)."""
    for parent in Path(out).resolve().parents:
        try:
            doc = json.loads((parent / "manifest.json").read_text())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and doc.get("format") == "rdd-edge-export":
            return parent
    return None


def refuse_inside_export(out: str | Path, option: str = "--out") -> None:
    """ConfigError naming the export when ``out`` lies inside one."""
    above = export_above(out)
    if above is not None:
        raise ConfigError(f"{option} {out}: is inside the export folder {above}, which the next export of that run "
                          "replaces whole (deleting it); choose a folder outside it")
