"""The CLI shell: help and version without torch, one-line errors."""

import subprocess
import sys


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_help_and_version_work_without_torch():
    block = "import sys; sys.modules['torch'] = None; sys.modules['torchvision'] = None; sys.modules['timm'] = None\n"
    r = run(block + "from rdd_edge.cli import main; main(['--version'])")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().startswith("rdd-edge 0.")
    r = run(block + "from rdd_edge.cli import main; main(['--help'])")
    assert r.returncode == 0, r.stderr
    assert "Usage" in r.stdout and "models" in r.stdout


def test_library_errors_become_one_line_and_exit_1():
    code = (
        "from rdd_edge.cli.app import app\n"
        "from rdd_edge.errors import DataError\n"
        "@app.command('boom')\n"
        "def boom():\n"
        "    raise DataError('x.png: cannot decode image')\n"
        "from rdd_edge.cli import main\n"
        "main(['boom'])\n"
    )
    r = run(code)
    assert r.returncode == 1
    assert r.stderr.strip() == "error: x.png: cannot decode image"
    assert "Traceback" not in r.stderr


def test_deploy_only_install_runs_check_and_demo_without_torch(tmp_path):
    """A Jetson-style install (no torch, torchvision, timm, tensorboard): check and demo work, training says what to install."""
    import json

    from deploy_utils import export_onnx, rand_image, tiny_net, write_manifest

    d = tmp_path / "runs" / "distill-x" / "export"
    export_onnx(tiny_net(), d / "model.onnx")
    man = json.loads(write_manifest(d).read_text())
    man["data"] = {"name": "synthetic", "val_images": 2, "size": [48, 64]}
    (d / "manifest.json").write_text(json.dumps(man))
    frames = tmp_path / "frames"
    frames.mkdir()
    import cv2

    cv2.imwrite(str(frames / "a.png"), rand_image(48, 64))
    block = ("import sys\nfor m in ('torch', 'torchvision', 'timm', 'tensorboard', 'onnxscript', 'onnxslim'):\n"
             "    sys.modules[m] = None\nfrom rdd_edge.cli import main\n")
    r = run(block + f"main(['check', {str(d.parent)!r}, '--min-time', '0.01', '--batch', '1', '--max-drop', '100'])")
    assert r.returncode == 0, r.stderr[-1500:]
    report = json.loads((d / "check.json").read_text())
    assert report["gate_failed"] is False and [r["status"] for r in report["rows"]] == ["passed"]  # no torch row
    r = run(block + f"main(['demo', {str(d / 'model.onnx')!r}, '--source', {str(frames)!r}, '--out', {str(tmp_path / 'o')!r}])")
    assert r.returncode == 0, r.stderr[-1500:]
    assert (tmp_path / "o" / "frame_000000.png").is_file()
    r = run(block + f"main(['eval', {str(tmp_path / 'x.pt')!r}])")
    assert r.returncode == 1 and "pip install -e '.[train]'" in r.stderr and "Traceback" not in r.stderr
