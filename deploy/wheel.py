"""A wheel of the rdd-edge that is installed here, for a device that cannot reach PyPI for it.

From a clone (an editable install: the usual case on a workstation) the wheel is built by
setuptools from a clean copy of the sources the installed package maps, exactly as
``pip wheel .`` would build it, without touching the clone. From an installed wheel (no source
tree) the installed files are packed again as they are, with their own metadata. Either way the
wheel holds the one ``rdd_edge`` package and declares every extra, so the device picks its own
(``jetson``, ``gpu``, ``cpu`` ...) and never gets torch unless it asks for ``train``.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.metadata as md
import importlib.util
import io
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import rdd_edge
from rdd_edge.errors import ConfigError

DIST = "rdd-edge"
# what a source build needs besides the package folders (pyproject reads README.md as the long description)
SOURCE_FILES = ("pyproject.toml", "README.md")


def source_root() -> Path | None:
    """The clone this rdd-edge runs from (the folder holding its pyproject.toml), None for an installed wheel."""
    root = Path(rdd_edge.__file__).resolve().parents[1]
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and 'name = "rdd-edge"' in pyproject.read_text(errors="replace"):
        return root
    return None


def _package_dirs() -> dict[str, Path]:
    """Folder of every top-level stage package as the installed package maps it (``rdd_edge``,
    ``rdd_edge.models`` -> ``models/`` ...)."""
    dirs = {"rdd_edge": Path(rdd_edge.__file__).resolve().parent}
    for stage in ("models", "distill", "export", "deploy"):
        spec = importlib.util.find_spec(f"rdd_edge.{stage}")
        if spec is None or not spec.origin:
            raise ConfigError(f"rdd_edge.{stage} is not importable here; reinstall rdd-edge (pip install -e .)")
        dirs[f"rdd_edge.{stage}"] = Path(spec.origin).resolve().parent
    importlib.invalidate_caches()
    return dirs


def build_wheel(out_dir: str | Path) -> Path:
    """Write ``rdd_edge-<version>-py3-none-any.whl`` into ``out_dir``; return its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    root = source_root()
    return _from_source(root, out_dir) if root is not None else _repack_installed(out_dir)


def _from_source(root: Path, out_dir: Path) -> Path:
    """setuptools' own build of a clean copy of the sources (no build/ or egg-info left in the clone)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    with tempfile.TemporaryDirectory(prefix="rdd-wheel-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in SOURCE_FILES:
            shutil.copy2(root / name, src / name)
        for folder in {p for p in _package_dirs().values()}:
            shutil.copytree(folder, src / folder.relative_to(root), ignore=ignore)
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(Path(tmp) / "dist"), str(src)]
        if importlib.util.find_spec("setuptools") is not None:
            cmd.insert(4, "--no-build-isolation")  # build with the setuptools here: no index needed
        res = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted((Path(tmp) / "dist").glob("rdd_edge-*.whl"))
        if res.returncode != 0 or len(wheels) != 1:
            last = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no wheel written"]
            raise ConfigError(f"building the rdd-edge wheel from {root} failed: {last[0][:300]} "
                              "(offline without setuptools? pip install setuptools)")
        target = out_dir / wheels[0].name
        shutil.copy2(wheels[0], target)
    return target


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _repack_installed(out_dir: Path) -> Path:
    """The installed files of rdd-edge (its RECORD) in a new wheel, with the installed metadata."""
    dist = md.distribution(DIST)
    version = dist.version
    info = f"rdd_edge-{version}.dist-info"
    files = [f for f in dist.files or [] if str(f).startswith("rdd_edge/") and not str(f).endswith(".pyc")]
    if not files:
        raise ConfigError("rdd-edge is installed without its files here (an editable install whose clone is gone?); "
                          "reinstall it from a clone or a wheel")
    target = out_dir / f"rdd_edge-{version}-py3-none-any.whl"
    rows: list[tuple[str, str, str]] = []
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        def add(name: str, data: bytes) -> None:
            zf.writestr(name, data)
            rows.append((name, _record_hash(data), str(len(data))))

        for f in sorted(files, key=str):
            add(str(f), Path(dist.locate_file(f)).read_bytes())
        for meta in ("METADATA", "entry_points.txt", "top_level.txt"):
            text = dist.read_text(meta)
            if text is not None:
                add(f"{info}/{meta}", text.encode())
        add(f"{info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: rdd-edge bundle\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows([*rows, (f"{info}/RECORD", "", "")])
        zf.writestr(f"{info}/RECORD", buf.getvalue())
    return target


def wheel_top_level(wheel: str | Path) -> list[str]:
    """The top-level names a wheel installs into site-packages (its folders and modules, dist-info aside)."""
    with zipfile.ZipFile(wheel) as zf:
        tops = {n.split("/")[0] for n in zf.namelist()}
    return sorted(t for t in tops if not t.endswith((".dist-info", ".data")))
