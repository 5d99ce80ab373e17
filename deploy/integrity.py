"""Is an export folder still what its export wrote? Checked before it travels or is trusted.

Every artifact the manifest lists must be a plain file inside the folder (no path, no link leading
out: a manifest naming ``/etc/passwd`` is refused) whose bytes match the sha256 the manifest
records, and that record must be there. ``rdd-edge bundle`` runs this before copying anything
(issue 32), so a bundle never carries an export that ``check`` would fail.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rdd_edge.errors import DeployError
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
