"""Live segmentation demo: camera / video / stream / image folder -> overlay video or frames.

Capture and inference overlap: a reader thread fills a small bounded queue (old frames are
not hoarded: a slow model makes the reader wait) and the main thread runs the model, draws the
colour overlay, legend and live FPS, and writes. The output is written under a temporary name
and renamed once the VideoWriter is released, so end of stream, a dropped camera and Ctrl-C all
leave a complete, playable file. Live sources (camera, URL) are reopened a few times with
backoff when they drop.

``show=True`` opens a window only where one can work: an OpenCV with a GUI backend (the
project installs opencv-python-headless, which has none) and, on Linux, a reachable display.
Otherwise the demo goes on without it and adds one note saying exactly what would give a window.
"""

from __future__ import annotations

import os
import queue
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import cv2
import numpy as np

from rdd_edge.deploy.board import is_jetson
from rdd_edge.deploy.capture import (CaptureOptions, check_fourcc, gstreamer_in, open_capture, parse_camera_size,
                                     parse_source)
from rdd_edge.deploy.check import find_export_dir
from rdd_edge.deploy.choose import choose_artifact
from rdd_edge.deploy.demo_summary import run_measured, write_summary
from rdd_edge.deploy.preprocess import RESIZE_MODES
from rdd_edge.deploy.runtime import load
from rdd_edge.devices import parse_device
from rdd_edge.errors import DeployError
from rdd_edge.runs import DEFAULT_ROOT, atomic_path, atomic_write_bytes, resolve_run
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
    device_state: dict[str, Any] = field(default_factory=dict)  # read before the first frame (deploy.device_state)
    power: dict[str, Any] = field(default_factory=dict)  # fps, power_w, fps_per_w over the whole loop (deploy.power)
    summary: Path | None = None  # the JSON beside --out (deploy.demo_summary)


class FrameSource:
    """Frames (uint8 RGB) from what ``--source`` names (see :func:`deploy.capture.parse_source`): a
    camera, a video file, a URL, a GStreamer pipeline or a folder of images."""

    STABLE = 30.0  # seconds of frames after a reconnect before a later drop gets its own reconnects again

    def __init__(self, source: str | int, reconnects: int = 3, backoff: float = 0.5, read_timeout: float = 10.0,
                 options: CaptureOptions | None = None, capture: Callable[..., Any] | None = None):
        self.source = source
        self.reconnects = reconnects
        self.backoff = backoff
        self.read_timeout = read_timeout  # a live source silent this long has stalled (issue 32)
        self.options = options if options is not None else CaptureOptions(timeout=read_timeout)
        self.capture = capture
        self.folder: list[Path] | None = None
        self.cap: Any = None
        self.fps = 25.0
        self.notes: list[str] = []
        self.spec = parse_source(source, self.options, jetson=is_jetson(),
                                 has_gstreamer=gstreamer_in(cv2.getBuildInformation()))
        self.live = self.spec.live
        if self.spec.kind == "folder":
            s = self.spec.label
            self.folder = sorted(p for p in Path(s).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self.folder:
                raise DeployError(f"{s}: folder has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            return
        self.cap, self.notes = open_capture(self.spec, self.options, self.capture)
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        if fps and 1 <= fps <= 240:
            self.fps = float(fps)

    def _open(self) -> Any:
        """Reopen after a drop (the camera options set again); None when it does not open yet."""
        try:
            return open_capture(self.spec, self.options, self.capture)[0]
        except DeployError:
            return None

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.folder is not None:
            for p in self.folder:
                img = cv2.imread(str(p), cv2.IMREAD_COLOR)
                if img is None:
                    print(f"warning: {p}: not a readable image, skipped", file=sys.stderr)
                    continue
                yield cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
            return
        tries, since = 0, time.monotonic()
        while True:
            ok, frame = self.cap.read()
            if ok and frame is not None:
                if tries and time.monotonic() - since >= self.STABLE:
                    tries = 0  # flowing again for a while: a later drop is a new outage
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
                    since = time.monotonic()
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


# --- --show: can this OpenCV open a window here, and if not, what would make it -------------------

_GUI_LINE = re.compile(r"^(\s*)GUI:\s*(.*?)\s*$")
_SUB_LINE = re.compile(r"^(\s*)([^:]+?)\s*:\s*(.*?)\s*$")
_NOT_BACKENDS = {"VTK SUPPORT", "BUILT-IN UNICODE FONT", "OPENGL SUPPORT", "GTHREAD", "GTKGLEXT", "QT OPENGL SUPPORT"}


def gui_backend(build_info: str) -> str | None:
    """The GUI backend named in ``cv2.getBuildInformation()``'s "GUI:" section, or None when headless.

    OpenCV 4.5+ writes it on the "GUI:" line itself ("QT5", "GTK3", "WIN32UI", "COCOA", or "NONE"
    in the opencv-python-headless wheels); older builds leave that line empty and list one
    "QT: YES (ver ...)" / "GTK+ 3.x: YES" / "Win32 UI: YES" / "Cocoa: YES" line per toolkit under it.
    No "GUI:" section at all counts as headless.
    """
    lines = build_info.splitlines()
    for i, line in enumerate(lines):
        m = _GUI_LINE.match(line)
        if not m:
            continue
        indent, value = len(m.group(1)), m.group(2)
        if value:
            return None if value.upper() in ("NONE", "NO") else value
        for sub in lines[i + 1 :]:
            if not sub.strip():
                continue
            sm = _SUB_LINE.match(sub)
            if sm is None or len(sm.group(1)) <= indent:
                break  # the next section
            name, val = sm.group(2).strip(), sm.group(3).strip()
            if val.upper().startswith("YES") and name.upper() not in _NOT_BACKENDS:
                return name
        return None
    return None


@dataclass(frozen=True)
class ShowDecision:
    show: bool
    note: str | None = None  # one line for the user when ``show`` is False although asked for


def _gui_install_hint(cv_version: str, dist: str | None) -> str:
    """The pip line that swaps the headless wheel for the GUI one of the same version."""
    gui = "opencv-contrib-python" if dist and "contrib" in dist else "opencv-python"
    headless = dist if dist and dist.endswith("-headless") else "opencv-python-headless"
    major_minor_patch = ".".join(cv_version.split(".")[:3])
    return f'pip uninstall -y {headless} && pip install "{gui}=={major_minor_patch}.*"'


def show_decision(requested: bool, backend: str | None, platform: str = sys.platform, env: Mapping[str, str] | None = None,
                  cv_version: str = cv2.__version__, dist: str | None = None, has_out: bool = True,
                  path_exists: Callable[[str], bool] = os.path.exists) -> ShowDecision:
    """Whether ``--show`` can open a window, else one line saying exactly what would make it work.

    ``backend``: :func:`gui_backend` of this OpenCV; ``env``: the environment (DISPLAY,
    WAYLAND_DISPLAY); ``dist``: the installed OpenCV distribution (e.g. "opencv-python-headless");
    ``has_out``: whether frames also go to ``--out`` (if not, the note says nothing is kept).
    On Linux a local ``DISPLAY=:N`` must have its X socket ``/tmp/.X11-unix/XN`` (OpenCV's Qt
    backend aborts the whole process when it cannot reach the display), and the Qt backend of the
    pip wheels needs X11 (DISPLAY; Wayland sessions provide it through XWayland).
    """
    if not requested:
        return ShowDecision(False)
    env = os.environ if env is None else env
    tail = "" if has_out else "; nothing is being saved either: add --out FILE.mp4"
    if backend is None:
        name = dist or "this OpenCV build"
        return ShowDecision(False, f"--show: {name} {cv_version} is headless (no GUI backend), so no window can open; "
                                   f"for a window: {_gui_install_hint(cv_version, dist)} "
                                   f"(reinstalling rdd-edge brings the headless wheel back){tail}")
    if platform.startswith("linux"):
        display, wayland = env.get("DISPLAY", ""), env.get("WAYLAND_DISPLAY", "")
        x11_only = backend.upper().startswith("QT")
        if not display and not (wayland and not x11_only):
            what = "DISPLAY is unset" + (f" (WAYLAND_DISPLAY={wayland}, but OpenCV's {backend} backend needs X11)" if wayland
                                           else " and so is WAYLAND_DISPLAY")
            return ShowDecision(False, f"--show: no display: {what}; run on a machine with a screen, connect with "
                                       f"`ssh -X`, or set DISPLAY=:0 for the screen attached to this machine{tail}")
        m = re.fullmatch(r":(\d+)(?:\.\d+)?", display)
        if m and not path_exists(f"/tmp/.X11-unix/X{m.group(1)}"):
            return ShowDecision(False, f"--show: DISPLAY={display} but no X server is listening there "
                                       f"(/tmp/.X11-unix/X{m.group(1)} is missing); start one or point DISPLAY at a running one{tail}")
    return ShowDecision(True)


def opencv_distribution() -> str | None:
    """Which OpenCV wheel is installed (its pip name), or None (e.g. a source or distro build)."""
    for name in ("opencv-python-headless", "opencv-contrib-python-headless", "opencv-python", "opencv-contrib-python"):
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        return name
    return None


WINDOW_KEYS = {27: "Esc", ord("q"): "q", ord("Q"): "q"}


class Window:
    """An OpenCV window that shows RGB frames; ``show()`` returns False once the user quits
    (q or Esc, or closing the window). ``close()`` is safe to call more than once."""

    def __init__(self, title: str):
        self.title = title
        self.open = False
        self.quit_by: str | None = None

    def show(self, rgb: np.ndarray) -> bool:
        if not self.open:
            cv2.namedWindow(self.title, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO | cv2.WINDOW_GUI_NORMAL)
            cv2.resizeWindow(self.title, int(rgb.shape[1]), int(rgb.shape[0]))
            self.open = True
        cv2.imshow(self.title, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        key = cv2.waitKey(1) & 0xFF
        if key in WINDOW_KEYS:
            self.quit_by = WINDOW_KEYS[key]
            return False
        try:
            if cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
                self.quit_by = "window closed"
                return False
        except cv2.error:  # some backends cannot tell; keys still work
            pass
        return True

    def close(self) -> None:
        if self.open:
            self.open = False
            try:
                cv2.destroyWindow(self.title)
                for _ in range(3):  # let the toolkit process the close before the process moves on
                    cv2.waitKey(1)
            except cv2.error:
                pass


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


# ---------------------------------------------------------------- where frames go: one small sink each
class _VideoSink:
    """Frames -> a video at a temporary name beside ``path``, renamed into place when the sink is
    committed (the VideoWriter released first, so the container is finalised); an empty or failed
    run leaves no file."""

    def __init__(self, path: Path, fps: float):
        self.path, self.fps, self.writer, self.n = path, fps, None, 0
        self._tmp = atomic_path(path, suffix=".tmp" + path.suffix)
        try:
            self.tmp = self._tmp.__enter__()
        except OSError as exc:  # a read-only or full file system, a file where a folder should be
            raise DeployError(f"--out {path}: cannot write there ({exc.strerror or exc})") from None

    def write(self, rgb: np.ndarray) -> None:
        if self.writer is None:
            fourcc = cv2.VideoWriter_fourcc(*("mp4v" if self.path.suffix.lower() in (".mp4", ".mov") else "MJPG"))
            h, w = rgb.shape[:2]
            self.writer = cv2.VideoWriter(str(self.tmp), fourcc, self.fps, (w, h))
            if not self.writer.isOpened():
                raise DeployError(f"{self.path}: cannot open a video writer for it (try an .mp4 or .avi name, or --out DIR)")
        self.writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        self.n += 1

    def finish(self, keep: bool) -> Path | None:
        """Release the writer; rename the video into place when ``keep`` and it plays back whole, else remove it."""
        if self.writer is not None:
            self.writer.release()
        if keep:
            # OpenCV's writer reports no write error (a full disk leaves a truncated, unplayable file): read it back
            if self.n and not video_is_whole(self.tmp, self.n):
                self._tmp.__exit__(DeployError, DeployError("incomplete"), None)
                raise DeployError(f"--out {self.path}: the video could not be written whole ({self.n} frames; disk full "
                                  "or not writable?); the partial file was removed")
            try:
                self._tmp.__exit__(None, None, None)
            except OSError as exc:
                raise DeployError(f"--out {self.path}: cannot write it ({exc.strerror or exc}); nothing was kept") from None
            return self.path if self.path.exists() else None
        self._tmp.__exit__(DeployError, DeployError("discarded"), None)
        return None


class _FolderSink:
    """One PNG per frame in a folder."""

    def __init__(self, folder: Path):
        self.folder, self.n = folder, 0
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DeployError(f"--out {folder}: cannot create the folder ({exc.strerror or exc})") from None

    def write(self, rgb: np.ndarray) -> None:
        # encoded here, written by Python: a full disk raises (cv2.imwrite only returns False, or leaves empty files)
        name = self.folder / f"frame_{self.n:06d}.png"
        ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        try:
            if not ok:
                raise OSError("PNG encoding failed")
            atomic_write_bytes(name, png.tobytes())
        except OSError as exc:
            raise DeployError(f"--out {self.folder}: could not write {name.name} ({exc.strerror or exc}); the {self.n} "
                              f"frames before it are complete in {self.folder}") from None
        self.n += 1

    def finish(self, keep: bool) -> Path | None:
        return self.folder


class _NullSink:
    """Nowhere (a window or a count only)."""

    def write(self, rgb: np.ndarray) -> None:
        pass

    def finish(self, keep: bool) -> Path | None:
        return None


def video_is_whole(path: Path, frames: int) -> bool:
    """Whether the video file at ``path`` opens and holds about ``frames`` frames (its container's count)."""
    cap = cv2.VideoCapture(str(path))
    try:
        return bool(cap.isOpened()) and cap.get(cv2.CAP_PROP_FRAME_COUNT) >= max(1, frames - 1)
    finally:
        cap.release()


def open_sink(out: str | Path | None, fps: float) -> _VideoSink | _FolderSink | _NullSink:
    """The sink for ``--out``: a video name, a folder (no suffix, or an existing folder), or nothing."""
    if out is None:
        return _NullSink()
    path = Path(out)
    if path.is_dir() or not path.suffix:
        return _FolderSink(path)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise DeployError(f"--out {path}: not a video name ({', '.join(sorted(VIDEO_SUFFIXES))}) nor a folder; "
                          "name a video file, or a folder (no suffix) for one PNG per frame")
    return _VideoSink(path, fps)


# ---------------------------------------------------------------- the window, if one can open
class _View:
    """``--show``: a window where one can work, else a note; a window that fails later is dropped with a note."""

    def __init__(self, show: bool, title: str, has_out: bool, notes: list[str]):
        self.window: Window | None = None
        self.notes = notes
        if show:
            decision = show_decision(True, gui_backend(cv2.getBuildInformation()), dist=opencv_distribution(), has_out=has_out)
            if decision.show:
                self.window = Window(title)
            else:
                notes.append(str(decision.note))

    def show(self, frame: np.ndarray, frames: int) -> bool:
        """Show one frame; False once the user quit."""
        if self.window is None:
            return True
        try:
            if self.window.show(frame):
                return True
        except cv2.error as exc:  # the backend failed after all: go on without a window
            self.notes.append(f"--show: OpenCV could not open a window ({str(exc).strip().splitlines()[-1]}); going on without one")
            self.close()
            return True
        self.notes.append(f"stopped from the window ({self.window.quit_by}) after {frames} frames")
        return False

    def close(self) -> None:
        if self.window is not None:
            self.window.close()
            self.window = None


class _Frames:
    """Frames of a source read by a background thread into a small bounded queue (capture and
    inference overlap; a slow model makes the reader wait instead of hoarding frames). Iterating
    stops at the end of the source or at its error, kept in ``error``."""

    def __init__(self, src: FrameSource, queue_size: int):
        self.src = src
        self.q: "queue.Queue[Any]" = queue.Queue(maxsize=max(1, queue_size))
        self.stop = threading.Event()
        self.error: DeployError | None = None
        self.thread = threading.Thread(target=_reader, args=(src, self.q, self.stop), daemon=True, name="demo-reader")

    def __iter__(self) -> Iterator[np.ndarray]:
        self.thread.start()
        wait = self.src.read_timeout * 2 if self.src.live else None  # a read blocked past OpenCV's own timeout
        while True:
            try:
                item = self.q.get(timeout=wait)
            except queue.Empty:
                self.error = DeployError(f"--source {self.src.source}: no frame for {wait:g} s (the stream stalled); "
                                         "output kept up to the last frame")
                return
            if item is _END:
                return
            if isinstance(item, DeployError):
                self.error = item
                return
            yield item

    def close(self) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout=2.0)
        if not self.thread.is_alive():  # a reader still blocked in read() keeps its capture (a daemon thread)
            self.src.release()


class _FpsMeter:
    """Smoothed frames per second of the loop (the first frame has no rate yet)."""

    def __init__(self) -> None:
        self.last, self.ema = time.perf_counter(), None

    def tick(self) -> float | None:
        now = time.perf_counter()
        inst = 1.0 / max(now - self.last, 1e-6)
        first = self.ema is None
        self.last, self.ema = now, inst if self.ema is None else 0.9 * self.ema + 0.1 * inst
        return None if first else self.ema


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
    options: CaptureOptions | None = None,
    resize: str = "letterbox",
) -> DemoResult:
    """Segment every frame of ``source`` with ``seg`` (a :class:`deploy.Segmenter`).

    ``out``: a video file (``.mp4``/``.avi``...) or a folder (one PNG per frame), or None.
    ``options``: camera size, FPS, pixel format and the open timeout; ``resize``: ``letterbox``
    (the frame keeps its aspect ratio in the model's input, the labels come back aligned with it)
    or ``stretch``. Ctrl-C stops cleanly: the output is finalised and ``interrupted`` is set.
    """
    if not (0.0 <= alpha <= 1.0):  # also refuses nan
        raise DeployError(f"--alpha {alpha}: must be between 0 and 1")
    if resize not in RESIZE_MODES:
        raise DeployError(f"--resize {resize}: expected one of {', '.join(RESIZE_MODES)}")
    opts = options if options is not None else CaptureOptions()
    src = FrameSource(source, reconnects=reconnects, backoff=backoff, read_timeout=opts.timeout, options=opts)
    res = DemoResult(notes=list(src.notes))
    sink = open_sink(out, src.fps)
    view = _View(show, f"rdd-edge demo: {source} (q or Esc quits)", out is not None, res.notes)
    frames, meter, t0 = _Frames(src, queue_size), _FpsMeter(), time.perf_counter()
    try:
        for image in frames:
            label = seg.predict(image, resize=resize)
            frame = render(image, label, seg.info, alpha, meter.tick())
            sink.write(frame)
            res.frames += 1
            if not view.show(frame, res.frames):
                break
            if on_frame is not None:
                on_frame(res.frames)
            if max_frames is not None and res.frames >= max_frames:
                break
    except KeyboardInterrupt:
        res.interrupted = True
    except BaseException:
        sink.finish(keep=False)
        raise
    finally:
        frames.close()
        view.close()
        res.fps = res.frames / max(time.perf_counter() - t0, 1e-9)
    res.out = sink.finish(keep=res.frames > 0 or res.interrupted)
    if res.frames == 0 and not res.interrupted:
        raise frames.error or DeployError(f"--source {source}: no frames could be read")
    if frames.error is not None:
        res.notes.append(str(frames.error))
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
    camera_size: str | None = None  # WxH, a camera's mode
    fps: float | None = None  # a camera's frame rate
    fourcc: str | None = None  # a UVC camera's pixel format (MJPG, YUYV)
    resize: str = "letterbox"  # how frames fit the model's input: letterbox keeps objects' proportions
    timeout: float = 10.0  # seconds a camera, stream or pipeline may take to open, or stay silent

    def capture_options(self) -> CaptureOptions:
        """The camera and timeout options, checked (one line each when malformed)."""
        if self.fps is not None and not (0 < self.fps <= 1000):
            raise DeployError(f"--fps {self.fps}: expected a frame rate between 0 and 1000")
        if not (0 < self.timeout <= 3600):
            raise DeployError(f"--timeout {self.timeout}: expected seconds between 0 and 3600")
        return CaptureOptions(size=parse_camera_size(self.camera_size), fps=self.fps, fourcc=check_fourcc(self.fourcc),
                              timeout=self.timeout)


def resolve_artifact(artifact: str | Path | None, runs_root: str | Path = DEFAULT_ROOT,
                     device: str = "auto") -> tuple[Path, list[str]]:
    """A model file as given, or for a run / export folder the artifact :func:`choose_artifact` picks
    (the fastest that passed its last check, still matches the manifest and, for an engine, was built
    for this GPU and TensorRT); with notes about the choice."""
    if artifact is not None and Path(artifact).is_file():
        return Path(artifact), []
    run = resolve_run(artifact, "distill", "the model to run", root=runs_root, must_contain="export/manifest.json")
    return choose_artifact(find_export_dir(run), parse_device(device))


def demo(spec: DemoSpec, on_load: Any = None) -> DemoResult:
    """Load the artifact and segment the source; ``on_load(segmenter)`` is told what runs before frames flow."""
    options = spec.capture_options()  # a malformed option or source is reported before a model loads
    if spec.resize not in RESIZE_MODES:
        raise DeployError(f"--resize {spec.resize}: expected one of {', '.join(RESIZE_MODES)}")
    parse_source(spec.source, options, jetson=is_jetson(), has_gstreamer=gstreamer_in(cv2.getBuildInformation()))
    path, notes = resolve_artifact(spec.artifact, spec.runs_root, spec.device)
    seg = load(path, device=parse_device(spec.device), threads=spec.threads)
    if on_load is not None:
        on_load(seg)
    res, state, power = run_measured(lambda: run_demo(seg, spec.source, out=spec.out, show=spec.show, alpha=spec.alpha,
                                                      max_frames=spec.max_frames, options=options,
                                                      resize=spec.resize),
                                     getattr(seg, "provider", ""), parse_device(spec.device))
    res.notes[:0] = [*notes, *seg.info.notes]
    res.device_state, res.power = state, power
    if res.out is not None:  # the figures beside the frames, comparable with another device's
        res.summary, why = write_summary(res.out, {
            "source": str(spec.source), "artifact": str(path), "backend": getattr(seg, "provider", ""),
            "frames": res.frames, "interrupted": res.interrupted, "out": str(res.out),
            "end_to_end": power, "device_state": state, "notes": res.notes})
        if why:
            res.notes.append(why)
    return res
