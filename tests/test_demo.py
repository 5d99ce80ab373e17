"""rdd-edge demo: video in -> overlay video out (same frame count), image folders, bad sources."""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from deploy_utils import export_onnx, rand_image, tiny_net, write_manifest

import deploy
import rdd_edge.cli  # noqa: F401 - registers the commands
from deploy.demo import FrameSource, count_frames, render, run_demo
from rdd_edge.app import app
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
    assert any("headless" in n for n in res.notes)


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
