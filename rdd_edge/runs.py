"""Run folders and atomic file writes.

Every command writes into ``runs/<stage>-<name>/``; a later stage defaults to the latest run of
the stage before it. Files are written to a temporary name in the same folder and renamed into
place, so an interrupted write never leaves a half-written checkpoint or artifact.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from rdd_edge.errors import ConfigError, DeployError

DEFAULT_ROOT = Path("runs")


_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def check_run_name(name: str | None) -> str | None:
    """A run name is one folder name of safe characters (never a path: ``x/../..`` or ``..`` would
    put the run outside ``--runs``); ConfigError otherwise."""
    if name is None:
        return None
    if not isinstance(name, str) or not _RUN_NAME.fullmatch(name) or ".." in name:
        raise ConfigError(f"--name {name!r}: a run name is one folder name of letters, digits, '_', '.' and '-' "
                          "(e.g. mbv2-camvid), up to 100 characters, no '..'")
    return name


def _mkdir(path: Path, exist_ok: bool) -> None:
    """``path.mkdir(parents=True)`` with a file-system refusal as one ConfigError line."""
    try:
        path.mkdir(parents=True, exist_ok=exist_ok)
    except FileExistsError:
        raise
    except OSError as exc:
        blocker = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), None)
        why = f"{blocker} is a file, not a folder" if blocker is not None else (exc.strerror or type(exc).__name__)
        raise ConfigError(f"{path}: cannot create the run folder ({why}); choose another --runs") from None


def new_run_dir(stage: str, name: str | None = None, root: str | Path = DEFAULT_ROOT, exist_ok: bool = False) -> Path:
    """Create ``root/<stage>-<name>``; without ``exist_ok`` a taken name gets ``-2``, ``-3`` ..."""
    root = Path(root)
    base = f"{stage}-{check_run_name(name) or 'run'}"
    path = root / base
    if exist_ok:
        _mkdir(path, exist_ok=True)
        return path
    i = 1
    while path.exists():
        i += 1
        path = root / f"{base}-{i}"
    _mkdir(path, exist_ok=False)
    return path


def inside(folder: str | Path, name: Any, what: str = "file") -> Path:
    """``folder/name`` for a plain file name that stays inside ``folder`` once links are resolved.

    Names come from files others can edit (manifests, sidecars, check.json): a path, ``..``, an
    absolute name or a link that points elsewhere is refused by name (DeployError)."""
    folder = Path(folder)
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise DeployError(f"{folder}: {what} {name!r} is not a plain file name inside the folder; refusing it")
    path = folder / name
    try:
        real, base = path.resolve(), folder.resolve()
    except (OSError, RuntimeError) as exc:
        raise DeployError(f"{path}: cannot resolve ({exc}); refusing it") from None
    if real.parent != base:
        raise DeployError(f"{path}: {what} leads outside {folder} (a link to {real}); refusing it")
    return path


def latest_run(stage: str, root: str | Path = DEFAULT_ROOT, must_contain: str | None = None) -> Path | None:
    """The most recently modified ``root/<stage>-*`` folder (holding ``must_contain`` if given)."""
    root = Path(root)
    if not root.is_dir():
        return None
    cands = [p for p in root.glob(f"{stage}-*") if p.is_dir() and (must_contain is None or (p / must_contain).exists())]
    if not cands:
        return None
    return max(cands, key=lambda p: p.stat().st_mtime)


def resolve_run(path: str | Path | None, stage: str, what: str, root: str | Path = DEFAULT_ROOT, must_contain: str | None = None) -> Path:
    """A run folder given explicitly, or the latest run of ``stage``; a clear error otherwise."""
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"{p}: no such file or folder ({what})")
        return p
    found = latest_run(stage, root, must_contain)
    if found is None:
        raise ConfigError(
            f"no {stage} run found under {Path(root).resolve()} ({what}); run `rdd-edge {stage}` first or pass a path"
        )
    return found


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix if suffix is not None else path.suffix + ".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically (numpy scalars and paths are converted)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes (manifests, sidecars, cache keys, the check's integrity test)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str = "export") -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (``.<name>.lock`` beside it) for the block; a second
    process asking for it is refused at once, by name, instead of both writing the same folder."""
    folder = Path(folder)
    lock = folder.parent / f".{folder.name}.lock"
    try:
        import fcntl  # lazy: optional (no POSIX locks on Windows)
    except ImportError:  # no POSIX locks (Windows): nothing to hold
        folder.parent.mkdir(parents=True, exist_ok=True)
        yield
        return
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock, "a+")
    except OSError as exc:  # a read-only or full file system: one line, before any work
        raise ConfigError(f"{folder}: cannot write its lock file {lock.name} beside it ({exc.strerror or exc}); "
                          f"the {what} needs a writable folder") from None
    with handle as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise ConfigError(f"{folder}: another {what} is writing this folder ({holder}); wait for it to finish") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def remove_leftovers(folder: str | Path) -> list[Path]:
    """Remove staging / old copies of ``folder`` an interrupted write left beside it (call while
    holding :func:`folder_lock`, so none of them can belong to a running write)."""
    folder = Path(folder)
    gone = []
    for p in folder.parent.glob(f".{folder.name}.*-*"):
        if p.is_dir() and (".staging-" in p.name or ".old-" in p.name):
            shutil.rmtree(p, ignore_errors=True)
            gone.append(p)
    return gone



def remove_temp_files(folder: str | Path) -> list[Path]:
    """Remove the temporary files :func:`atomic_path` leaves when a process is killed mid-write (``.last.pt.*.pt.tmp``);
    call while holding :func:`folder_lock` on ``folder``, so none belongs to a running write."""
    gone = []
    for p in Path(folder).glob(".*.tmp"):
        if p.is_file():
            p.unlink(missing_ok=True)
            gone.append(p)
    return gone
