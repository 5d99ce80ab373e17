"""Live segmentation demo: camera / video / stream / image folder -> overlay video or frames.

Capture and inference overlap: a reader thread fills a small bounded queue (old frames are
not hoarded: a slow model makes the reader wait) and the main thread runs the model, draws the
colour overlay, legend and live FPS, and writes. The output is written under a temporary name
and renamed once the VideoWriter is released, so end of stream, a dropped camera and Ctrl-C all
leave a complete, playable file. Live sources (camera, URL) are reopened a few times with
backoff when they drop.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

from rdd_edge.errors import DeployError
from rdd_edge.runs import DEFAULT_ROOT, atomic_path
from rdd_edge.viz import draw_legend, overlay

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov"}
_END = object()


@dataclass
class DemoResult:
    frames: int = 0
    out: Path | None = None
    fps: float = 0.0  # end-to-end frames per second (read + infer + draw + write)
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)


def _quiet_opencv() -> None:
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is not None:
        logging.setLogLevel(logging.LOG_LEVEL_ERROR)


class FrameSource:
    """Frames (uint8 RGB) from a camera index, a video file, a URL or a folder of images."""

    def __init__(self, source: str | int, reconnects: int = 3, backoff: float = 0.5):
        self.source = source
        self.reconnects = reconnects
        self.backoff = backoff
        self.folder: list[Path] | None = None
        self.cap: Any = None
        self.fps = 25.0
        s = str(source)
        self.live = s.isdigit() or "://" in s
        if not self.live and Path(s).is_dir():
            self.folder = sorted(p for p in Path(s).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self.folder:
                raise DeployError(f"{s}: folder has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            return
        if not self.live and not Path(s).exists():
            raise DeployError(f"--source {s}: no such file, folder, camera index or URL")
        self.cap = self._open()
        if self.cap is None:
            raise DeployError(f"--source {s}: cannot open it (not a video OpenCV can decode, or the camera/stream is unavailable)")
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        if fps and 1 <= fps <= 240:
            self.fps = float(fps)

    def _open(self) -> Any:
        s = str(self.source)
        _quiet_opencv()  # a failed open is reported once, as a DeployError, not as OpenCV's own warnings
        cap = cv2.VideoCapture(int(s)) if s.isdigit() else cv2.VideoCapture(s)
        if not cap.isOpened():
            cap.release()
            return None
        return cap

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.folder is not None:
            for p in self.folder:
                img = cv2.imread(str(p), cv2.IMREAD_COLOR)
                if img is None:
                    print(f"warning: {p}: not a readable image, skipped", file=sys.stderr)
                    continue
                yield cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
            return
        tries = 0
        while True:
            ok, frame = self.cap.read()
            if ok and frame is not None:
                tries = 0
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                continue
            if not self.live:
                return  # end of the file
            # a live source dropped: reopen with backoff, then give up with a clear message
            self.cap.release()
            while tries < self.reconnects:
                time.sleep(self.backoff * 2**tries)
                tries += 1
                self.cap = self._open()
                if self.cap is not None:
                    break
            else:
                raise DeployError(f"--source {self.source}: stream lost and {self.reconnects} reconnects failed; output kept up to the last frame")

    def release(self) -> None:
        if self.cap is not None:
            self.cap.release()


def _reader(src: FrameSource, q: "queue.Queue[Any]", stop: threading.Event) -> None:
    try:
        for frame in src:
            while not stop.is_set():
                try:
                    q.put(frame, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if stop.is_set():
                return
        q.put(_END)
    except DeployError as exc:
        q.put(exc)
    except Exception as exc:  # noqa: BLE001 - surface reader crashes in the main thread
        q.put(DeployError(f"--source {src.source}: reading failed ({type(exc).__name__}: {exc})"))


def has_display() -> bool:
    """True when a window can be shown (X11/Wayland on Linux; assumed elsewhere)."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def render(frame: np.ndarray, label: np.ndarray, info: Any, alpha: float, fps: float | None) -> np.ndarray:
    """Overlay + legend of the classes present + FPS counter, uint8 RGB."""
    out = overlay(frame, label, info.palette, alpha)
    out = draw_legend(out, info.classes, info.palette, present=np.unique(label))
    if fps is not None:
        h, w = out.shape[:2]
        scale = max(0.4, min(1.0, h / 500))
        text = f"{fps:.1f} FPS"
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        org = (max(0, w - tw - 6), th + 6)
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


class _VideoSink:
    """Frames -> a video at a temporary name; ``close()`` releases the writer (finalising it)."""

    def __init__(self, path: Path, fps: float):
        self.path, self.fps, self.writer = path, fps, None

    def write(self, rgb: np.ndarray) -> None:
        if self.writer is None:
            fourcc = cv2.VideoWriter_fourcc(*("mp4v" if self.path.suffix.lower() in (".mp4", ".mov") else "MJPG"))
            h, w = rgb.shape[:2]
            self.writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, (w, h))
            if not self.writer.isOpened():
                raise DeployError(f"{self.path}: cannot open a video writer for it (try an .mp4 or .avi name, or --out DIR)")
        self.writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


def run_demo(
    seg: Any,
    source: str | int,
    out: str | Path | None = None,
    show: bool = False,
    alpha: float = 0.5,
    max_frames: int | None = None,
    queue_size: int = 4,
    reconnects: int = 3,
    backoff: float = 0.5,
    on_frame: Any = None,
) -> DemoResult:
    """Segment every frame of ``source`` with ``seg`` (a :class:`deploy.Segmenter`).

    ``out``: a video file (``.mp4``/``.avi``...) or a folder (one PNG per frame), or None.
    Ctrl-C stops cleanly: the output is finalised and ``interrupted`` is set.
    """
    if not 0.0 <= alpha <= 1.0:
        raise DeployError(f"--alpha {alpha}: must be between 0 and 1")
    src = FrameSource(source, reconnects=reconnects, backoff=backoff)
    res = DemoResult()
    if show and not has_display():
        res.notes.append("no display found (DISPLAY/WAYLAND_DISPLAY unset): running headless, --show ignored")
        show = False
    out_path = Path(out) if out is not None else None
    if out_path is not None and out_path.suffix and not out_path.is_dir() and out_path.suffix.lower() not in VIDEO_SUFFIXES:
        raise DeployError(f"--out {out_path}: not a video name ({', '.join(sorted(VIDEO_SUFFIXES))}) nor a folder; "
                          "name a video file, or a folder (no suffix) for one PNG per frame")
    to_dir = out_path is not None and (out_path.is_dir() or out_path.suffix.lower() not in VIDEO_SUFFIXES)
    if to_dir:
        out_path.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
    q: "queue.Queue[Any]" = queue.Queue(maxsize=max(1, queue_size))
    stop = threading.Event()
    reader = threading.Thread(target=_reader, args=(src, q, stop), daemon=True, name="demo-reader")
    error: DeployError | None = None

    def loop(sink: _VideoSink | None) -> None:
        nonlocal error
        t0 = time.perf_counter()
        ema: float | None = None
        last = t0
        reader.start()
        try:
            while max_frames is None or res.frames < max_frames:
                item = q.get()
                if item is _END:
                    break
                if isinstance(item, DeployError):
                    error = item
                    break
                label = seg.predict(item)
                now = time.perf_counter()
                inst = 1.0 / max(now - last, 1e-6)
                last = now
                ema = inst if ema is None else 0.9 * ema + 0.1 * inst
                frame = render(item, label, seg.info, alpha, ema if res.frames > 0 else None)
                if sink is not None:
                    sink.write(frame)
                elif to_dir:
                    cv2.imwrite(str(out_path / f"frame_{res.frames:06d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))  # type: ignore[operator]
                if show:
                    try:
                        cv2.imshow("rdd-edge demo", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
                        if cv2.waitKey(1) & 0xFF in (27, ord("q")):
                            break
                    except cv2.error:
                        res.notes.append("this OpenCV build cannot open windows (headless): --show ignored")
                        show_off()
                res.frames += 1
                if on_frame is not None:
                    on_frame(res.frames)
        except KeyboardInterrupt:
            res.interrupted = True
        finally:
            stop.set()
            reader.join(timeout=2.0)
            src.release()
            res.fps = res.frames / max(time.perf_counter() - t0, 1e-9)

    def show_off() -> None:
        nonlocal show
        show = False

    if out_path is not None and not to_dir:
        with atomic_path(out_path, suffix=".tmp" + out_path.suffix) as tmp:
            sink = _VideoSink(tmp, src.fps)
            try:
                loop(sink)
            finally:
                sink.close()  # release before the rename: the container is finalised here
            if res.frames == 0 and not res.interrupted:  # nothing to keep: the temp file is removed
                raise error or DeployError(f"--source {source}: no frames could be read")
        res.out = out_path if out_path.exists() else None
    else:
        loop(None)
        res.out = out_path
    if show:
        cv2.destroyAllWindows()
    if error is not None:
        if res.frames == 0:
            raise error
        res.notes.append(str(error))
    return res


def count_frames(path: str | Path) -> int:
    """Frames in a video file, counted by decoding (container counts can be approximate)."""
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


# ---------------------------------------------------------------- the demo stage's entry point
@dataclass
class DemoSpec:
    """What ``rdd-edge demo`` runs, on what, and where the result goes."""

    source: str | int
    artifact: str | Path | None = None  # an .onnx/.engine file, or a run / export folder (default: the latest run)
    runs_root: str | Path = DEFAULT_ROOT
    out: str | Path | None = None
    show: bool = False
    alpha: float = 0.5
    max_frames: int | None = None
    device: str = "auto"
    threads: int | None = None


def resolve_artifact(artifact: str | Path | None, runs_root: str | Path = DEFAULT_ROOT) -> Path:
    """A model file as given, or for a run / export folder its best artifact: the fastest ONNX file
    that passed ``rdd-edge check`` there, else ``model.onnx``."""
    from deploy.check import fastest_passed, find_export_dir
    from rdd_edge.runs import resolve_run

    if artifact is not None and Path(artifact).is_file():
        return Path(artifact)
    run = resolve_run(artifact, "distill", "the model to run", root=runs_root, must_contain="export/model.onnx")
    export_dir = find_export_dir(run)
    return export_dir / (fastest_passed(export_dir) or "model.onnx")


def demo(spec: DemoSpec, on_load: Any = None) -> DemoResult:
    """Load the artifact and segment the source; ``on_load(segmenter)`` is told what runs before frames flow."""
    from deploy.runtime import load
    from rdd_edge.devices import parse_device

    seg = load(resolve_artifact(spec.artifact, spec.runs_root), device=parse_device(spec.device), threads=spec.threads)
    if on_load is not None:
        on_load(seg)
    res = run_demo(seg, spec.source, out=spec.out, show=spec.show, alpha=spec.alpha, max_frames=spec.max_frames)
    res.notes[:0] = list(seg.info.notes)
    return res
