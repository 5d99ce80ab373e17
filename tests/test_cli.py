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
        "from rdd_edge.app import app\n"
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
