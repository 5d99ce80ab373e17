"""demo --source: what each source text opens (a recording stand-in for cv2.VideoCapture), GStreamer
missing, sources that never answer, UVC options, and --resize letterbox aligned with the frame."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from deploy_utils import write_manifest

import rdd_edge.cli  # noqa: F401 - registers the commands
from rdd_edge import deploy
from rdd_edge.cli.app import app
from rdd_edge.deploy import demo as demo_mod
from rdd_edge.deploy.capture import CaptureOptions, gstreamer_in, open_capture, parse_source
from rdd_edge.deploy.demo import FrameSource, run_demo
from rdd_edge.deploy.postprocess import unletterbox
from rdd_edge.deploy.preprocess import letterbox
from rdd_edge.errors import DeployError


class Recorder:
    """cv2.VideoCapture's shape: records what it was opened with and every property set; ``modes`` is what
    the camera really gives back (None: whatever was asked)."""

    opened: list[tuple] = []
    modes: dict[int, float] | None = None

    def __init__(self, target, api=cv2.CAP_ANY, params=None):
        Recorder.opened.append((target, api, params))
        self.props: dict[int, float] = {}
        self.order: list[int] = []

    def isOpened(self):
        return True

    def release(self):
        pass

    def set(self, prop, value):
        self.props[prop] = float(value)
        self.order.append(prop)
        return True

    def get(self, prop):
        if Recorder.modes is not None and prop in Recorder.modes:
            return Recorder.modes[prop]
        return self.props.get(prop, 0.0)


@pytest.fixture
def recorder():
    Recorder.opened, Recorder.modes = [], None
    return Recorder


def _open(source, options=CaptureOptions(), jetson=False, gst=True):
    spec = parse_source(source, options, jetson=jetson, has_gstreamer=gst)
    cap, notes = open_capture(spec, options, Recorder)
    return spec, Recorder.opened[-1], notes


def test_each_source_reaches_the_right_capture_call(recorder, tmp_path):
    video = tmp_path / "in.avi"
    video.write_bytes(b"x")
    (tmp_path / "imgs").mkdir()
    ffmpeg_params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 10000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 10000]
    cases = {
        "0": ("camera", (0, cv2.CAP_ANY, None)),
        "/dev/video2": ("camera", ("/dev/video2", cv2.CAP_V4L2, None)),
        "/dev/v4l/by-id/usb-cam-video-index0": ("camera", ("/dev/v4l/by-id/usb-cam-video-index0", cv2.CAP_V4L2, None)),
        str(video): ("file", (str(video), cv2.CAP_ANY, None)),
        "http://cam.local/video.mjpg": ("url", ("http://cam.local/video.mjpg", cv2.CAP_FFMPEG, ffmpeg_params)),
        "rtsp://cam.local/stream": ("url", ("rtsp://cam.local/stream", cv2.CAP_FFMPEG, ffmpeg_params)),
        "gst:videotestsrc ! videoconvert ! appsink": ("gstreamer", ("videotestsrc ! videoconvert ! appsink", cv2.CAP_GSTREAMER, None)),
        "v4l2src device=/dev/video0 ! videoconvert ! appsink": (
            "gstreamer", ("v4l2src device=/dev/video0 ! videoconvert ! appsink", cv2.CAP_GSTREAMER, None)),
    }
    for source, (kind, call) in cases.items():
        spec, opened, _ = _open(source)
        assert (spec.kind, opened) == (kind, call), source
    assert [s.live for s in map(parse_source, ["0", str(video), "rtsp://cam.local/s"])] == [True, False, True]
    folder = parse_source(str(tmp_path / "imgs"))
    assert (folder.kind, folder.live) == ("folder", False)


def test_csi_and_jetson_rtsp_build_nvidias_pipelines(recorder):
    spec, (pipeline, api, params), _ = _open("csi:0")
    assert api == cv2.CAP_GSTREAMER and params is None and spec.live
    assert pipeline == ("nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM),width=1920,height=1080,framerate=30/1,"
                        "format=NV12 ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! "
                        "appsink drop=true max-buffers=1")
    _, (pipeline, _, _), notes = _open("csi:1", CaptureOptions(size=(1280, 720), fps=59.94, fourcc="MJPG"))
    assert "sensor-id=1 " in pipeline and "width=1280,height=720,framerate=2997/50," in pipeline
    assert any("--fourcc MJPG: not used for a CSI camera" in n for n in notes)
    # RTSP on a Jetson: NVDEC; on a desktop (or a Jetson whose OpenCV lacks GStreamer): FFmpeg as before
    _, (pipeline, api, _), notes = _open("rtsp://cam.local:8554/live", jetson=True)
    assert api == cv2.CAP_GSTREAMER and pipeline.startswith('rtspsrc location="rtsp://cam.local:8554/live" latency=200 ! ')
    assert "! rtph264depay ! h264parse ! nvv4l2decoder ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! " in pipeline
    assert _open("rtsp://cam.local:8554/live", jetson=True, gst=False)[1][1] == cv2.CAP_FFMPEG
    with pytest.raises(DeployError, match="expected csi:N"):
        parse_source("csi:left", has_gstreamer=True)


def test_frame_source_opens_through_the_parse(recorder, monkeypatch):
    monkeypatch.setattr(demo_mod, "gstreamer_in", lambda info: True)
    src = FrameSource("csi:0", capture=Recorder)
    assert src.live and Recorder.opened[-1][1] == cv2.CAP_GSTREAMER and "nvarguscamerasrc" in Recorder.opened[-1][0]


def test_no_gstreamer_is_one_line_saying_how_to_get_it(tmp_path):
    assert gstreamer_in("  Video I/O:\n    FFMPEG:                      YES\n    GStreamer:                   NO\n") is False
    assert gstreamer_in("  Video I/O:\n    GStreamer:                   YES (1.20.3)\n") is True
    assert gstreamer_in("no such section") is False
    for source in ("csi:0", "gst:videotestsrc ! appsink", "videotestsrc ! appsink"):
        with pytest.raises(DeployError) as err:
            parse_source(source, has_gstreamer=False)
        line = str(err.value)
        assert "\n" not in line and line.startswith(f"--source {source}: ") and "without GStreamer" in line
        assert "--system-site-packages" in line and "install.sh" in line
    if not gstreamer_in(cv2.getBuildInformation()):  # this machine's pip OpenCV: the CLI says the same line
        res = CliRunner().invoke(app, ["demo", str(tmp_path / "no-model.onnx"), "--source", "csi:0"])
        assert isinstance(res.exception, DeployError) and "without GStreamer" in str(res.exception)  # before any model


def test_an_rtsp_url_that_never_answers_returns_in_time():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    held: list[socket.socket] = []

    def accept() -> None:  # accepts, then never says a word
        while True:
            try:
                held.append(srv.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    url = f"rtsp://127.0.0.1:{srv.getsockname()[1]}/live"
    t0 = time.monotonic()
    try:
        with pytest.raises(DeployError) as err:
            FrameSource(url, options=CaptureOptions(timeout=1.0))
    finally:
        srv.close()
        for c in held:
            c.close()
    assert time.monotonic() - t0 < 2.5
    assert str(err.value).startswith(f"--source {url}: the stream did not open") and "\n" not in str(err.value)


def test_a_pipeline_that_hangs_is_cut_by_the_watchdog(recorder):
    class Hangs(Recorder):
        def __init__(self, *args):
            time.sleep(5)

    spec = parse_source("gst:nvarguscamerasrc ! appsink", has_gstreamer=True)
    t0 = time.monotonic()
    with pytest.raises(DeployError, match=r"did not start \(no answer within 0.2 s\): an element missing"):
        open_capture(spec, CaptureOptions(timeout=0.2), Hangs)
    assert time.monotonic() - t0 < 2.0


def test_uvc_options_reach_the_capture_and_a_refusal_is_one_line(recorder):
    opts = CaptureOptions(size=(1280, 720), fps=60.0, fourcc="MJPG")
    src = FrameSource("/dev/video0", options=opts, capture=Recorder)
    cap = src.cap
    assert cap.props == {cv2.CAP_PROP_FOURCC: float(cv2.VideoWriter_fourcc(*"MJPG")), cv2.CAP_PROP_FRAME_WIDTH: 1280.0,
                         cv2.CAP_PROP_FRAME_HEIGHT: 720.0, cv2.CAP_PROP_FPS: 60.0}
    assert cap.order[0] == cv2.CAP_PROP_FOURCC  # the format first: V4L2 lists sizes per format
    assert src.notes == [] and src.fps == 60.0
    # a camera that keeps its default mode: one line naming what it gave instead
    Recorder.modes = {cv2.CAP_PROP_FRAME_WIDTH: 640.0, cv2.CAP_PROP_FRAME_HEIGHT: 480.0, cv2.CAP_PROP_FPS: 30.0,
                      cv2.CAP_PROP_FOURCC: float(cv2.VideoWriter_fourcc(*"YUYV"))}
    src = FrameSource("0", options=opts, capture=Recorder)
    assert src.notes == ["camera 0 ignored --fourcc MJPG --camera-size 1280x720 --fps 60: it gives YUYV, 640x480, "
                         "30 fps (list its modes with v4l2-ctl --list-formats-ext)"]


def test_letterbox_keeps_the_aspect_ratio():
    img = np.full((90, 160, 3), 7, np.uint8)
    out, (top, left, h, w) = letterbox(img, (48, 64), fill=(1, 2, 3))
    assert out.shape == (48, 64, 3) and (top, left, h, w) == (6, 0, 36, 64)  # 160:90 -> 64:36, centred
    assert abs(w / h - 160 / 90) < 0.02
    assert (out[:top] == (1, 2, 3)).all() and (out[top + h :] == (1, 2, 3)).all() and (out[top : top + h] == 7).all()
    labels = np.zeros((48, 64), np.uint8)
    labels[top : top + h, left : left + w] = 5
    assert (unletterbox(labels, (top, left, h, w), (90, 160)) == 5).all()  # the padding never reaches the frame


@pytest.fixture(scope="module")
def red_model(tmp_path_factory):
    """A 1x1-conv graph (48x64 input, 4:3): class 1 where the pixel is redder than the training mean, else 0.
    Pointwise, so its labels land exactly where the object is unless the geometry around it is wrong."""
    import onnx
    from onnx import TensorProto, helper

    w = np.zeros((4, 3, 1, 1), np.float32)
    w[1, 0] = 1.0  # class 1 reads the normalised red channel
    b = np.array([0.1, 0.0, -10.0, -10.0], np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["images", "w", "b"], ["logits"])], "red",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 48, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4, 48, 64])],
        [helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.ravel()), helper.make_tensor("b", TensorProto.FLOAT, b.shape, b)])
    d = tmp_path_factory.mktemp("red") / "export"
    d.mkdir()
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), d / "model.onnx")
    write_manifest(d)
    return d / "model.onnx"


def test_letterboxed_overlay_lands_on_the_object_in_the_original_frame(red_model, tmp_path):
    frame = np.zeros((90, 160, 3), np.uint8)  # 16:9 into a 4:3 model
    frame[30:60, 100:140] = (255, 0, 0)  # the object: a red rectangle, right of centre
    truth = np.zeros((90, 160), bool)
    truth[30:60, 100:140] = True
    seg = deploy.load(red_model)
    label = seg.predict(frame, resize="letterbox")
    assert label.shape == (90, 160)
    inner, outer = np.zeros_like(truth), np.ones_like(truth)
    inner[33:57, 103:137] = True  # the rectangle two model pixels in: certainly the object
    outer[27:63, 97:143] = False  # two model pixels out: certainly background
    assert (label[inner] == 1).all() and (label[outer & ~truth] == 0).all()
    assert ((label == 1) == truth).mean() > 0.98
    # the demo draws it on the original frame: at alpha 1 the rectangle is class 1's colour, the rest class 0's
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "f.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    res = run_demo(seg, str(folder), out=tmp_path / "out", alpha=1.0)
    drawn = cv2.cvtColor(cv2.imread(str(tmp_path / "out" / "frame_000000.png")), cv2.COLOR_BGR2RGB)
    assert res.frames == 1 and drawn.shape == frame.shape
    assert (drawn[inner] == seg.info.palette[1]).all() and (drawn[75:90, 0:60][outer[75:90, 0:60]] == seg.info.palette[0]).all()


@pytest.mark.parametrize("args, match", [
    (["--camera-size", "1280"], "--camera-size '1280': expected WIDTHxHEIGHT"),
    (["--fourcc", "MJPEG"], "--fourcc 'MJPEG': expected four characters"),
    (["--fps", "0"], "--fps 0.0: expected a frame rate"),
    (["--resize", "crop"], "--resize crop: expected one of stretch, letterbox"),
    (["--timeout", "0"], "--timeout 0.0: expected seconds")])
def test_bad_camera_options_are_one_line_before_any_model(tmp_path, args, match):
    res = CliRunner().invoke(app, ["demo", str(tmp_path / "no-model.onnx"), "--source", "0", *args])
    assert isinstance(res.exception, DeployError) and str(res.exception).startswith(match), res.exception


@pytest.mark.skipif(not gstreamer_in(cv2.getBuildInformation()), reason="this OpenCV has no GStreamer (pip's never has)")
def test_a_real_gstreamer_pipeline_gives_frames_and_a_stuck_one_is_cut():
    """Runs where OpenCV has GStreamer (JetPack's, a distro's): videotestsrc through gst:, then a pipeline whose
    source element does not exist (GStreamer builds the rest, and OpenCV 4.6's open waits for it forever) cut by
    the watchdog."""
    src = FrameSource("gst:videotestsrc num-buffers=5 ! video/x-raw,width=160,height=90 ! videoconvert ! "
                      "video/x-raw,format=BGR ! appsink", options=CaptureOptions(timeout=5))
    frames = list(src)
    assert len(frames) == 5 and frames[0].shape == (90, 160, 3)
    t0 = time.monotonic()
    with pytest.raises(DeployError, match="did not start"):
        FrameSource("gst:nosuchsrc ! videoconvert ! appsink",
                    options=CaptureOptions(timeout=1))
    assert time.monotonic() - t0 < 3
