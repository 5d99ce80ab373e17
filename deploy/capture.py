"""What ``--source`` names, and how OpenCV opens it: cameras, files, folders, URLs, GStreamer pipelines.

:func:`parse_source` turns the text into a :class:`SourceSpec` (the kind of source, the exact string
or index OpenCV gets, and the capture backend) without touching a device, so every rule here is
tested without a camera. :func:`open_capture` then opens it: live sources (cameras, streams,
pipelines) inside a watchdog, so a camera or stream that never answers costs ``timeout`` seconds
and one line, never a hang; a UVC camera gets the size, frame rate and pixel format asked for, and
a note when it ignored them (read back after setting).

The Jetson shortcuts build the pipelines NVIDIA documents for its GStreamer elements:
``nvarguscamerasrc`` is the Argus (ISP) camera source of a CSI sensor, whose frames are NV12 in NVMM
(device) memory (Jetson Linux Developer Guide, "Camera Software Development Solution",
https://docs.nvidia.com/jetson/archives/r36.5/DeveloperGuide/SD/CameraDevelopment/CameraSoftwareDevelopmentSolution.html),
and ``nvv4l2decoder`` is the hardware (NVDEC) H.264/H.265 decoder, also NV12 out (DeepStream's
Gst-nvvideo4linux2 page, https://docs.nvidia.com/metropolis/deepstream/6.3/dev-guide/text/DS_plugin_gst-nvvideo4linux2.html);
``nvvidconv`` (the VIC) copies either out of NVMM as BGRx and ``videoconvert`` drops the x for
OpenCV's BGR ``appsink``.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import cv2

from rdd_edge.errors import DeployError

BACKENDS = {"any": "CAP_ANY", "v4l2": "CAP_V4L2", "gstreamer": "CAP_GSTREAMER", "ffmpeg": "CAP_FFMPEG"}
CSI_SIZE = (1920, 1080)  # a mode both devkit sensors have natively (IMX219: 1920x1080 at 30, IMX477: at 60)
CSI_FPS = 30.0
RTSP_LATENCY_MS = 200  # rtspsrc's jitter buffer: its default is 2000 ms, too laggy for a live overlay
_APPSINK = "appsink drop=true max-buffers=1"  # a slow model gets the newest frame, not a backlog


@dataclass(frozen=True)
class CaptureOptions:
    """What the user asked of a camera (``--camera-size WxH``, ``--fps``, ``--fourcc``) and how long a
    live source may take to open (``timeout``, seconds)."""

    size: tuple[int, int] | None = None  # (width, height)
    fps: float | None = None
    fourcc: str | None = None
    timeout: float = 10.0


@dataclass(frozen=True)
class SourceSpec:
    """One source, resolved: ``kind`` is camera, file, folder, url or gstreamer; ``target`` what
    ``cv2.VideoCapture`` gets (an index, a path, a URL or a pipeline); ``backend`` a key of
    :data:`BACKENDS`; ``live`` whether a drop is worth reconnecting (not the end of a file)."""

    kind: str
    target: int | str
    backend: str
    live: bool
    label: str  # what the user typed, for messages
    notes: tuple[str, ...] = field(default=())


def gstreamer_in(build_info: str) -> bool:
    """Whether ``cv2.getBuildInformation()`` says this OpenCV has GStreamer ("GStreamer: YES (1.20.3)")."""
    m = re.search(r"^\s*GStreamer:\s*(\S+)", build_info, re.MULTILINE)
    return m is not None and m.group(1).upper().startswith("YES")


def no_gstreamer_line(label: str) -> str:
    """The one line for a GStreamer source on an OpenCV without GStreamer, saying how to get one."""
    return (f"--source {label}: this OpenCV ({cv2.__version__}) is built without GStreamer (cv2.getBuildInformation() "
            "says 'GStreamer: NO'; pip's opencv-python wheels never have it), and CSI cameras and GStreamer pipelines "
            "need it; on a Jetson use JetPack's OpenCV: run the bundle's install.sh (its venv sees the system "
            "site-packages and removes pip's opencv-python-headless), or in your own venv made with "
            "--system-site-packages: pip uninstall opencv-python-headless")


def parse_camera_size(text: str | None, option: str = "--camera-size") -> tuple[int, int] | None:
    """``"1280x720"`` -> (1280, 720): width x height, as cameras name their modes."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise DeployError(f"{option} {text!r}: expected WIDTHxHEIGHT, e.g. 1280x720")
    return int(m.group(1)), int(m.group(2))


def check_fourcc(text: str | None) -> str | None:
    """A four-character pixel format (MJPG, YUYV, H264...), upper-cased; None stays None."""
    if text is None:
        return None
    if not re.fullmatch(r"[0-9A-Za-z ]{4}", text):
        raise DeployError(f"--fourcc {text!r}: expected four characters, e.g. MJPG or YUYV")
    return text.upper()


def _fraction(fps: float) -> str:
    f = Fraction(fps).limit_denominator(1001)  # 29.97 -> 30000/1001
    return f"{f.numerator}/{f.denominator}"


def csi_pipeline(sensor: int, size: tuple[int, int] = CSI_SIZE, fps: float = CSI_FPS) -> str:
    """The CSI camera ``sensor`` through Argus: NV12 in NVMM at ``size`` (w, h) and ``fps``, out as BGR."""
    w, h = size
    return (f"nvarguscamerasrc sensor-id={sensor} ! video/x-raw(memory:NVMM),width={w},height={h},"
            f"framerate={_fraction(fps)},format=NV12 ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! "
            f"video/x-raw,format=BGR ! {_APPSINK}")


def rtsp_jetson_pipeline(url: str, latency_ms: int = RTSP_LATENCY_MS) -> str:
    """An H.264 RTSP stream decoded by the Jetson's NVDEC (``nvv4l2decoder``), out as BGR."""
    quoted = url.replace('"', "%22")
    return (f'rtspsrc location="{quoted}" latency={latency_ms} ! rtph264depay ! h264parse ! nvv4l2decoder ! '
            f"nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! {_APPSINK}")


def parse_source(source: str | int, options: CaptureOptions = CaptureOptions(), jetson: bool = False,
                 has_gstreamer: bool = False) -> SourceSpec:
    """What ``--source`` names, resolved without opening it (DeployError, one line, when it names nothing).

    ``0``: camera index; ``/dev/video0`` (or a ``/dev/v4l/by-id/...`` link): that V4L2 camera; ``csi:N``:
    CSI sensor N through Argus; ``gst:PIPELINE`` or any text with `` ! ``: a GStreamer pipeline; a URL
    (``rtsp://``, ``http://``...): through FFmpeg, except RTSP on a Jetson with a GStreamer OpenCV,
    which decodes on NVDEC; otherwise an existing folder of images or a video file.
    """
    label = str(source).strip()
    notes: list[str] = []
    camera_opts = options.size is not None or options.fps is not None or options.fourcc is not None

    def gst(pipeline: str, live: bool = True) -> SourceSpec:
        if not has_gstreamer:
            raise DeployError(no_gstreamer_line(label))
        return SourceSpec("gstreamer", pipeline, "gstreamer", live, label, tuple(notes))

    if isinstance(source, int) or label.isdigit():
        return SourceSpec("camera", int(label), "any", True, label)
    if re.fullmatch(r"/dev/(video\d+|v4l/.+)", label):
        return SourceSpec("camera", label, "v4l2", True, label)
    m = re.fullmatch(r"csi:(.*)", label, re.IGNORECASE)
    if m:
        if not m.group(1).isdigit():
            raise DeployError(f"--source {label}: expected csi:N with N the sensor id, e.g. csi:0")
        if options.fourcc:
            notes.append(f"--fourcc {options.fourcc}: not used for a CSI camera (Argus gives NV12)")
        return gst(csi_pipeline(int(m.group(1)), options.size or CSI_SIZE, options.fps or CSI_FPS))
    if label.lower().startswith("gst:") or " ! " in label:
        pipeline = label[4:].strip() if label.lower().startswith("gst:") else label
        if not pipeline:
            raise DeployError(f"--source {label}: the GStreamer pipeline after gst: is empty")
        if camera_opts:
            notes.append("--camera-size/--fps/--fourcc: not used with a GStreamer pipeline (set them in its caps)")
        live = not re.match(r"\s*(filesrc|multifilesrc)\b", pipeline)  # a file pipeline ends; a camera or stream drops
        return gst(pipeline, live)
    if "://" in label:
        if camera_opts:
            notes.append("--camera-size/--fps/--fourcc: apply to cameras only; not used for a URL")
        if jetson and has_gstreamer and label.lower().startswith("rtsp://"):
            notes.append("RTSP decoded on the Jetson's NVDEC (H.264; for H.265 pass the pipeline with gst: and "
                         "rtph265depay ! h265parse)")
            return SourceSpec("gstreamer", rtsp_jetson_pipeline(label), "gstreamer", True, label, tuple(notes))
        return SourceSpec("url", label, "ffmpeg", True, label, tuple(notes))
    path = Path(label)
    if path.is_dir():
        return SourceSpec("folder", label, "any", False, label)
    if not path.exists():
        raise DeployError(f"--source {label}: no such file, folder, camera (0, /dev/video0, csi:0), URL or GStreamer pipeline")
    if camera_opts:
        notes.append("--camera-size/--fps/--fourcc: apply to cameras only; not used for a video file")
    return SourceSpec("file", label, "any", False, label, tuple(notes))


def quiet_opencv() -> None:
    """OpenCV's own log down to errors."""
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is not None:
        logging.setLogLevel(logging.LOG_LEVEL_ERROR)


def _fourcc_text(code: float) -> str:
    c = int(code)
    return "".join(chr((c >> 8 * i) & 0xFF) for i in range(4)).strip("\0 ") if c > 0 else "?"


def apply_camera_options(cap: Any, options: CaptureOptions, label: str) -> str | None:
    """Set a camera's pixel format, size and frame rate (format first: V4L2 offers sizes per format), read
    them back, and return one line naming what the camera did not take (None when it took all)."""
    asked, got = [], []
    if options.fourcc:
        cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*options.fourcc))
    if options.size:
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, options.size[0])
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, options.size[1])
    if options.fps:
        cap.set(cv2.CAP_PROP_FPS, options.fps)
    if options.fourcc:
        now = _fourcc_text(cap.get(cv2.CAP_PROP_FOURCC))
        if now != options.fourcc.strip():
            asked.append(f"--fourcc {options.fourcc}")
            got.append(now)
    if options.size:
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if (w, h) != tuple(options.size):
            asked.append(f"--camera-size {options.size[0]}x{options.size[1]}")
            got.append(f"{w}x{h}")
    if options.fps:
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if fps > 0 and abs(fps - options.fps) > 0.5:  # 0: the backend cannot say
            asked.append(f"--fps {options.fps:g}")
            got.append(f"{fps:g} fps")
    if not asked:
        return None
    return (f"camera {label} ignored {' '.join(asked)}: it gives {', '.join(got)} (list its modes with "
            f"v4l2-ctl --list-formats-ext)")


def _within(open_fn: Callable[[], Any], seconds: float) -> tuple[bool, Any]:
    """``(True, open_fn())`` run on a watchdog thread, ``(False, None)`` when it has not returned after
    ``seconds`` (the thread is left behind, a daemon, and releases what it opens late)."""
    box: dict[str, Any] = {}
    done, abandoned = threading.Event(), threading.Event()

    def run() -> None:
        try:
            box["cap"] = open_fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = exc
        done.set()
        if abandoned.is_set() and box.get("cap") is not None:
            box["cap"].release()

    threading.Thread(target=run, daemon=True, name="capture-open").start()
    if not done.wait(seconds):
        abandoned.set()
        if done.is_set() and box.get("cap") is not None:  # finished in between
            box["cap"].release()
        return False, None
    if "error" in box:
        raise box["error"]
    return True, box["cap"]


def open_capture(spec: SourceSpec, options: CaptureOptions = CaptureOptions(),
                 capture: Callable[..., Any] | None = None) -> tuple[Any, list[str]]:
    """Open ``spec`` with ``capture`` (default ``cv2.VideoCapture``; or a stand-in): the capture and notes, or a
    DeployError of one line. Live sources open on a watchdog of ``options.timeout`` seconds; FFmpeg also
    gets OpenCV's own open and read timeouts, so a stalled stream's ``read()`` returns instead of blocking."""
    if spec.kind == "folder":
        raise DeployError(f"--source {spec.label}: a folder is read image by image, not opened as a capture")
    api = getattr(cv2, BACKENDS[spec.backend])
    make = capture if capture is not None else cv2.VideoCapture  # looked up now: a stand-in set on cv2 is seen
    quiet_opencv()  # a failed open is reported once, as a DeployError, not as OpenCV's own warnings
    ms = int(options.timeout * 1000)

    def open_it() -> Any:
        if spec.backend == "ffmpeg":
            props = [getattr(cv2, p) for p in ("CAP_PROP_OPEN_TIMEOUT_MSEC", "CAP_PROP_READ_TIMEOUT_MSEC") if hasattr(cv2, p)]
            cap = make(spec.target, api, [v for p in props for v in (p, ms)])
        else:
            cap = make(spec.target, api)
        if not cap.isOpened():
            cap.release()
            return None
        return cap

    timed_out = False
    if spec.live or spec.backend == "gstreamer":  # a pipeline missing an element can block OpenCV's open for ever
        finished, cap = _within(open_it, options.timeout + 1.0)  # a second past OpenCV's own timeout: that one answers first
        timed_out = not finished
    else:
        cap = open_it()
    if cap is None:
        raise DeployError(_cannot_open(spec, options.timeout, timed_out))
    notes = list(spec.notes)
    if spec.kind == "camera":
        line = apply_camera_options(cap, options, spec.label)
        if line:
            notes.append(line)
    return cap, notes


def _cannot_open(spec: SourceSpec, timeout: float, timed_out: bool) -> str:
    within = f" (no answer within {timeout:g} s)" if timed_out else ""
    if spec.kind == "camera":
        return (f"--source {spec.label}: cannot open the camera{within}: not connected, busy in another program, "
                "or no permission (add your user to the video group)")
    if spec.kind == "gstreamer":
        return (f"--source {spec.label}: the GStreamer pipeline did not start{within}: an element missing, a camera "
                "not there, or a stream not answering (try it with gst-launch-1.0 first)")
    if spec.kind == "url":
        return (f"--source {spec.label}: the stream did not open (not reachable, no answer within {timeout:g} s, or "
                "not a video OpenCV's FFmpeg can decode)")
    return f"--source {spec.label}: cannot open it (not a video OpenCV can decode)"
