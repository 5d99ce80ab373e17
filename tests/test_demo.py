"""rdd-edge demo: video in -> overlay video out (same frame count), image folders, bad sources."""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from deploy_utils import export_onnx, rand_image, tiny_net, write_manifest

from rdd_edge import deploy
import rdd_edge.cli  # noqa: F401 - registers the commands
from rdd_edge.deploy.demo import FrameSource, count_frames, render, run_demo
from rdd_edge.cli.app import app
from rdd_edge.errors import DeployError


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("demo") / "export"
    export_onnx(tiny_net(seed=2), d / "model.onnx")
    write_manifest(d)
    return d / "model.onnx"


def _video(path: Path, n: int = 10, size=(64, 96)) -> Path:
    h, w = size
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (w, h))
    assert vw.isOpened()
    for i in range(n):
        vw.write(rand_image(h, w, seed=i))
    vw.release()
    return path


def test_video_to_video_keeps_every_frame(model, tmp_path):
    src = _video(tmp_path / "in.avi", n=10)
    out = tmp_path / "out.mp4"
    res = CliRunner().invoke(app, ["demo", str(model), "--source", str(src), "--out", str(out), "--alpha", "0.6"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert out.is_file() and count_frames(out) == 10
    cap = cv2.VideoCapture(str(out))
    ok, frame = cap.read()
    cap.release()
    assert ok and frame.shape[:2] == (64, 96)
    assert not list(tmp_path.glob(".out.mp4*")), "temporary file left behind"


def test_overlay_shows_the_prediction(model):
    seg = deploy.load(model)
    img = rand_image(64, 96, 3)
    lab = seg.predict(img)
    out = render(img, lab, seg.info, alpha=1.0, fps=None)
    # away from the legend (top-left) every pixel is exactly its class colour at alpha 1
    ys, xs = np.mgrid[40:64, 60:96]
    assert np.array_equal(out[ys, xs], seg.info.palette[lab[ys, xs]])


def test_folder_of_images_to_frames(model, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i:02d}.png"), rand_image(40 + 10 * i, 60, seed=i))
    (folder / "notes.txt").write_text("not an image")
    res = run_demo(deploy.load(model), str(folder), out=tmp_path / "frames", max_frames=None)
    pngs = sorted((tmp_path / "frames").glob("*.png"))
    assert res.frames == 3 and len(pngs) == 3
    assert cv2.imread(str(pngs[2])).shape[:2] == (60, 60)


def test_max_frames_and_headless_show(model, tmp_path, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    src = _video(tmp_path / "in.avi", n=10)
    res = run_demo(deploy.load(model), str(src), out=tmp_path / "o.avi", show=True, max_frames=4)
    assert res.frames == 4 and count_frames(tmp_path / "o.avi") == 4
    # headless OpenCV: how to get a GUI build; a GUI build: no display
    assert any(n.startswith("--show: ") and ("headless" in n or "no display" in n) for n in res.notes)


def test_ctrl_c_leaves_a_finalised_file(model, tmp_path):
    src = _video(tmp_path / "in.avi", n=10)
    seg = deploy.load(model)

    def interrupt_at(k):
        if k == 3:
            raise KeyboardInterrupt

    res = run_demo(seg, str(src), out=tmp_path / "o.mp4", on_frame=interrupt_at)
    assert res.interrupted and res.frames == 3
    assert count_frames(tmp_path / "o.mp4") == 3
    assert threading.active_count() < 10


@pytest.mark.parametrize("source, match", [("missing.mp4", "no such file"), ("not_video.mp4", "cannot open it")])
def test_unopenable_source_is_one_clear_line(model, tmp_path, monkeypatch, source, match):
    monkeypatch.chdir(tmp_path)
    Path("not_video.mp4").write_text("garbage")
    res = CliRunner().invoke(app, ["demo", str(model), "--source", source, "--out", "o.mp4"])
    assert isinstance(res.exception, DeployError) and match in str(res.exception)
    assert not Path("o.mp4").exists()


def test_empty_folder_and_lost_stream(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DeployError, match="no images"):
        FrameSource(str(tmp_path / "empty"))
    # a live source that drops: reconnects fail fast, then a clear message
    src = FrameSource.__new__(FrameSource)
    src.source, src.reconnects, src.backoff, src.live, src.folder = "rtsp://cam", 2, 0.0, True, None

    class Dead:
        def read(self):
            return False, None

        def release(self):
            pass

    src.cap, src._open = Dead(), lambda: None
    with pytest.raises(DeployError, match="2 reconnects failed"):
        list(src)


# --- --show: GUI backend detection, the decision, and the window loop ------------------------------

from rdd_edge.deploy import demo as demo_mod  # noqa: E402
from rdd_edge.deploy.demo import ShowDecision, gui_backend, opencv_distribution, show_decision  # noqa: E402

_HEADLESS_5 = """  Other third-party libraries:
    Lapack:                      NO
  GUI:                           NONE
    VTK support:                 NO
    Built-in Unicode font:       YES

  Media I/O: 
    ZLib:                        /usr/lib64/libz.so (ver 1.2.11)
"""
_QT_WHEEL = """  GUI:                           QT5
    QT:                          YES (ver 5.15.13 )
      QT OpenGL support:         NO
    GTK+:                        NO
    VTK support:                 NO

  Media I/O: 
"""
_GTK_DISTRO = """  GUI:                           GTK3
    GTK+:                        YES (ver 3.24.33)
      GThread :                  YES (ver 2.72.4)
      GtkGlExt:                  NO
    VTK support:                 NO
"""
_OLD_GTK = """  GUI: 
    QT:                          NO
    GTK+ 3.x:                    YES (ver 3.22.30)
    GThread :                    YES (ver 2.56.4)
    GtkGlExt:                    NO
    VTK support:                 NO

  Media I/O: 
    ZLib:                        YES (ver 1.2.11)
"""
_OLD_HEADLESS = """  GUI: 
    QT:                          NO
    GTK+:                        NO
    VTK support:                 NO

  Media I/O: 
    PNG:                         YES (ver 1.6.37)
"""
_WIN = """  GUI:                           WIN32UI
    Win32 UI:                    YES
    VTK support:                 NO
"""
_MAC = """  GUI:                           COCOA
    Cocoa:                       YES
    VTK support:                 NO
"""


@pytest.mark.parametrize("text, backend", [
    (_HEADLESS_5, None), (_QT_WHEEL, "QT5"), (_GTK_DISTRO, "GTK3"), (_OLD_GTK, "GTK+ 3.x"), (_OLD_HEADLESS, None),
    (_WIN, "WIN32UI"), (_MAC, "COCOA"), ("General configuration for OpenCV 4.8.0\n  Version control: 4.8.0\n", None),
])
def test_gui_backend_from_build_information(text, backend):
    assert gui_backend(text) == backend


def test_gui_backend_of_the_installed_opencv():
    dist = opencv_distribution()
    if dist is None:
        pytest.skip("OpenCV not installed from a pip wheel")
    backend = gui_backend(cv2.getBuildInformation())
    assert (backend is None) == dist.endswith("-headless")


def test_show_decision_says_how_to_get_a_window():
    assert show_decision(False, None) == ShowDecision(False, None)
    d = show_decision(True, None, "linux", {"DISPLAY": ":0"}, "4.10.0", "opencv-python-headless", has_out=False)
    assert not d.show and "headless" in d.note and "\n" not in d.note
    assert 'pip uninstall -y opencv-python-headless && pip install "opencv-python==4.10.0.*"' in d.note
    assert "add --out" in d.note
    d = show_decision(True, None, "linux", {}, "4.10.0", "opencv-contrib-python-headless")
    assert 'pip uninstall -y opencv-contrib-python-headless && pip install "opencv-contrib-python==4.10.0.*"' in d.note
    assert "add --out" not in d.note
    # a GUI build without a display
    d = show_decision(True, "QT5", "linux", {}, "4.10.0", "opencv-python")
    assert not d.show and "DISPLAY is unset" in d.note and "ssh -X" in d.note
    d = show_decision(True, "QT5", "linux", {"WAYLAND_DISPLAY": "wayland-0"})
    assert not d.show and "needs X11" in d.note
    assert show_decision(True, "GTK3", "linux", {"WAYLAND_DISPLAY": "wayland-0"}).show
    # a local display whose X server is not there (Qt would abort the whole process)
    d = show_decision(True, "QT5", "linux", {"DISPLAY": ":7"}, path_exists=lambda p: False)
    assert not d.show and "/tmp/.X11-unix/X7" in d.note
    assert show_decision(True, "QT5", "linux", {"DISPLAY": ":7.0"}, path_exists=lambda p: p == "/tmp/.X11-unix/X7").show
    assert show_decision(True, "QT5", "linux", {"DISPLAY": "localhost:10.0"}, path_exists=lambda p: False).show  # ssh -X
    assert show_decision(True, "COCOA", "darwin", {}).show and show_decision(True, "WIN32UI", "win32", {}).show


def test_headless_show_note_in_the_demo(model, tmp_path, monkeypatch):
    monkeypatch.setattr(demo_mod, "gui_backend", lambda text: None)
    monkeypatch.setattr(demo_mod, "opencv_distribution", lambda: "opencv-python-headless")
    src = _video(tmp_path / "in.avi", n=3)
    res = run_demo(deploy.load(model), str(src), show=True)
    assert res.frames == 3
    (note,) = res.notes
    assert note.startswith("--show: opencv-python-headless") and "pip install \"opencv-python==" in note and "add --out" in note


class _FakeGui:
    """Stands in for OpenCV's window functions: records calls, presses ``key`` at frame ``at``."""

    def __init__(self, key: int, at: int, fail: bool = False):
        self.key, self.at, self.fail = key, at, fail
        self.shown: list[tuple[str, tuple]] = []
        self.named: list[str] = []
        self.destroyed: list[str] = []

    def install(self, monkeypatch):
        monkeypatch.setattr(demo_mod, "show_decision", lambda *a, **k: ShowDecision(True))
        for name in ("namedWindow", "resizeWindow", "imshow", "waitKey", "getWindowProperty", "destroyWindow"):
            monkeypatch.setattr(cv2, name, getattr(self, name))

    def namedWindow(self, title, flags=0):
        if self.fail:
            raise cv2.error("The function is not implemented. Rebuild the library with GTK+ 2.x or Cocoa support")
        self.named.append(title)

    def resizeWindow(self, title, w, h):
        pass

    def imshow(self, title, bgr):
        self.shown.append((title, bgr.shape))

    def waitKey(self, delay=0):
        return self.key if isinstance(self.key, int) and len(self.shown) == self.at and not self.destroyed else -1

    def getWindowProperty(self, title, prop):
        return 0.0 if self.key == "close" and len(self.shown) == self.at else 1.0

    def destroyWindow(self, title):
        self.destroyed.append(title)


@pytest.mark.parametrize("key, why", [(ord("q"), "q"), (27, "Esc"), ("close", "window closed")])
def test_window_quits_on_q_or_esc_and_closes(model, tmp_path, monkeypatch, key, why):
    gui = _FakeGui(key, at=3)
    gui.install(monkeypatch)
    src = _video(tmp_path / "in.avi", n=10)
    res = run_demo(deploy.load(model), str(src), out=tmp_path / "o.avi", show=True)
    assert res.frames == 3 and count_frames(tmp_path / "o.avi") == 3  # the file is complete up to the quit
    assert len(gui.named) == 1 and "q or Esc" in gui.named[0] and str(src) in gui.named[0]
    assert gui.shown == [(gui.named[0], (64, 96, 3))] * 3
    assert gui.destroyed == gui.named  # closed once, cleanly
    assert f"stopped from the window ({why}) after 3 frames" in res.notes


def test_window_that_fails_to_open_does_not_stop_the_demo(model, tmp_path, monkeypatch):
    gui = _FakeGui(-1, at=-1, fail=True)
    gui.install(monkeypatch)
    src = _video(tmp_path / "in.avi", n=4)
    res = run_demo(deploy.load(model), str(src), out=tmp_path / "o.avi", show=True)
    assert res.frames == 4 and count_frames(tmp_path / "o.avi") == 4
    assert any(n.startswith("--show: OpenCV could not open a window") and "Rebuild the library" in n for n in res.notes)
