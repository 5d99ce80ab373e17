"""rdd-edge bundle: one folder from the workstation to the device, installed without PyPI for rdd-edge itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from console_width import wide_runner
from rdd_edge.cli import app
from rdd_edge.runs import sha256_file

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def export_src(synthetic_export_src) -> Path:
    """The session's synthetic export (conftest.py): bundle only reads it; a test that edits it copies it."""
    return synthetic_export_src


@pytest.fixture(scope="module")
def bundle(export_src, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "B"
    res = wide_runner().invoke(app, ["bundle", str(export_src.parent), "--out", str(out)])  # the path in one line
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert res.output.strip().endswith(f"wrote {out}") and "install.sh" in res.output
    return out


def test_bundle_holds_the_export_its_check_images_a_wheel_and_the_installer(bundle, export_src):
    man = json.loads((bundle / "export" / "manifest.json").read_text())
    src = json.loads((export_src / "manifest.json").read_text())
    for key, art in src["artifacts"].items():  # every artifact byte for byte, checksums as exported
        assert sha256_file(bundle / "export" / art["file"]) == art["sha256"] == man["artifacts"][key]["sha256"]
    assert man["check_data"]["images"] == 6 and man["check_data"]["folder"] == "check-data"
    assert sha256_file(bundle / "export" / "check-data" / "index.json") == man["check_data"]["index_sha256"]
    assert os.access(bundle / "install.sh", os.X_OK) and (bundle / "README.txt").is_file()
    info = json.loads((bundle / "bundle.json").read_text())
    assert info["format"] == "rdd-edge-bundle" and info["check_images"] == 6
    on_disk = {str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file()} - {"bundle.json"}
    assert set(info["files"]) == on_disk and all(sha256_file(bundle / f) == h for f, h in info["files"].items())


def test_the_wheel_installs_the_rdd_edge_package_alone_with_every_extra(bundle):
    from rdd_edge.deploy.wheel import wheel_top_level

    (wheel,) = (bundle / "wheels").glob("rdd_edge-*.whl")
    assert wheel_top_level(wheel) == ["rdd_edge"]
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        meta = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    for module in ("rdd_edge/models/networks.py", "rdd_edge/distill/rdd.py", "rdd_edge/export/tensorrt.py",
                   "rdd_edge/deploy/trt_acceptance.py", "rdd_edge/deploy/engine_build.py", "rdd_edge/deploy/backends/tensorrt.py",
                   "rdd_edge/deploy/bundle_files/install.sh", "rdd_edge/cli/commands/deploy.py"):
        assert module in names, module
    assert not any("__pycache__" in n for n in names)
    for extra in ("cpu", "gpu", "train", "trt", "trt11", "jetson", "jetson-cuda13"):
        assert f"Provides-Extra: {extra}" in meta
    # ONNX Runtime only ever through an extra: installing rdd-edge can never replace onnxruntime-gpu
    ort = [line for line in meta.splitlines() if line.startswith("Requires-Dist: onnxruntime")]
    assert ort and all("extra ==" in line for line in ort)
    assert not [line for line in meta.splitlines() if line.startswith("Requires-Dist: torch") and "extra ==" not in line]


def test_check_on_the_bundle_scores_the_bundled_images(bundle, tmp_path):
    import shutil

    copy = tmp_path / "B"
    shutil.copytree(bundle, copy)
    res = CliRunner().invoke(app, ["check", str(copy / "export"), "--min-time", "0.01", "--no-torch", "--device", "cpu"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    check = json.loads((copy / "export" / "check.json").read_text())
    assert check["split"] == "check" and check["images"] == 6 and all(r["status"] == "passed" for r in check["rows"])
    # an edited check image is refused by name, not scored
    img = copy / "export" / "check-data" / "images" / "0003.png"
    img.write_bytes(img.read_bytes()[:-10] + b"0123456789")
    res = CliRunner().invoke(app, ["check", str(copy / "export"), "--min-time", "0.01", "--no-torch", "--device", "cpu"])
    assert res.exit_code == 1 and "0003.png: sha256 differs from index.json" in str(res.exception)
    # an index naming a path outside the folder is refused before anything is read
    index = copy / "export" / "check-data" / "index.json"
    doc = json.loads(index.read_text())
    doc["items"][0]["image"] = "images/../../../manifest.json"
    index.write_text(json.dumps(doc))
    man_path = copy / "export" / "manifest.json"
    man = json.loads(man_path.read_text())
    man["check_data"]["index_sha256"] = sha256_file(index)  # even with the checksum updated to match
    man_path.write_text(json.dumps(man))
    res = CliRunner().invoke(app, ["check", str(copy / "export"), "--no-torch", "--device", "cpu"])
    assert res.exit_code == 1 and "is not a file inside check-data/" in str(res.exception)


def test_bundle_refuses_what_it_would_damage(export_src, bundle, tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep")
    res = CliRunner().invoke(app, ["bundle", str(export_src.parent), "--out", str(tmp_path / "notes"), "--overwrite"])
    assert res.exit_code != 0 and "is not an rdd-edge bundle" in str(res.exception)
    assert (tmp_path / "notes" / "mine.txt").read_text() == "keep"
    res = CliRunner().invoke(app, ["bundle", str(export_src.parent), "--out", str(bundle)])
    assert res.exit_code != 0 and "add --overwrite" in str(res.exception)
    moved = tmp_path / "moved"  # an export whose data folder is not here
    import shutil

    shutil.copytree(export_src, moved)
    man = json.loads((moved / "manifest.json").read_text())
    man["data"] = {"name": "camvid", "root": str(tmp_path / "no-such-camvid")}
    (moved / "manifest.json").write_text(json.dumps(man))
    res = CliRunner().invoke(app, ["bundle", str(moved), "--out", str(tmp_path / "B2")])
    assert res.exit_code != 0 and "data folder is not here; pass --data PATH" in str(res.exception)
    assert not (tmp_path / "B2").exists() and not list(tmp_path.glob(".B2.staging-*"))  # nothing half-written


BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)  # what a device's python3 is: no venv of ours
BASE_HAS_ORT = subprocess.run([BASE_PYTHON, "-c", "import onnxruntime"], capture_output=True).returncode == 0


def _install(bundle: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": BASE_PYTHON, **(env or {})}
    env.pop("VIRTUAL_ENV", None)
    return subprocess.run(["bash", str(bundle / "install.sh"), *args], capture_output=True, text=True, env=env,
                          timeout=900)


@pytest.fixture
def plan_dir(tmp_path) -> Path:
    """install.sh beside a stand-in wheel: enough for --dry-run, which installs nothing (no bundle build)."""
    import shutil

    from rdd_edge.deploy.bundle import FILES

    import hashlib

    d = tmp_path / "bundle"
    (d / "wheels").mkdir(parents=True)
    wheel = "wheels/rdd_edge-0.1.0-py3-none-any.whl"
    (d / wheel).write_bytes(b"stand-in")
    shutil.copy2(FILES / "install.sh", d / "install.sh")
    # install.sh verifies every file bundle.json lists before it plans anything (issue 32)
    (d / "bundle.json").write_text(json.dumps({"wheel": wheel, "files": {wheel: hashlib.sha256(b"stand-in").hexdigest()}}))
    return d


def _machine(tmp_path: Path, release: str | None = None, device_tree: bytes | None = None, kernel: str = "6.8.0-generic",
             cuda: str | None = None, smi: str | None = None, system_ort: str | None = None) -> dict:
    """The environment that makes install.sh see a made-up machine (every probe it has pointed here)."""
    m = tmp_path / "machine"
    (m / "bin").mkdir(parents=True, exist_ok=True)
    env = {"RDD_TEGRA_RELEASE": str(m / "nv_tegra_release"), "RDD_DEVICE_TREE": str(m / "compatible"),
           "RDD_UNAME_R": kernel, "RDD_CUDA_VERSION_JSON": str(m / "version.json")}
    if release:
        (m / "nv_tegra_release").write_text(release + "\n")
    if device_tree:
        (m / "compatible").write_bytes(device_tree)
    if cuda:
        (m / "version.json").write_text(json.dumps({"cuda": {"name": "CUDA SDK", "version": cuda}}, indent=2))
    # nvidia-smi: the desktop's (prints a CUDA version) or one that fails (no NVIDIA driver)
    (m / "bin" / "nvidia-smi").write_text(f"#!/bin/sh\necho '{smi}'\n" if smi else "#!/bin/sh\nexit 9\n")
    (m / "bin" / "nvidia-smi").chmod(0o755)
    env["PATH"] = f"{m / 'bin'}:{os.environ['PATH']}"
    if system_ort:  # an onnxruntime in the system Python with these providers (NVIDIA's Jetson wheel: CUDA, TensorRT)
        pkg = m / "site" / "onnxruntime"
        pkg.mkdir(parents=True, exist_ok=True)
        (pkg / "__init__.py").write_text(f"__version__ = '1.20.0'\ndef get_available_providers():\n    return {system_ort!r}\n")
        env["PYTHONPATH"] = str(m / "site")
    return env


R36_4 = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan 8 01:49:37 UTC 2025"
R36_3 = "# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64, DATE: Mon May 6 17:34:21 UTC 2024"
R38_2 = "# R38 (release), REVISION: 2.0, GCID: 41844464, BOARD: generic, EABI: aarch64, DATE: Fri Aug 22 00:56:39 UTC 2025"
R35_5 = "# R35 (release), REVISION: 5.0, GCID: 35550185, BOARD: t186ref, EABI: aarch64, DATE: Tue Feb 20 04:46:31 UTC 2024"
ORT_EXTRA = "" if BASE_HAS_ORT else ",cpu"  # the CPU build only where this Python has no onnxruntime


def _plan(d: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    r = _install(d, "--dry-run", *args, env=env)
    assert not (d / ".venv").exists()  # a plan changes nothing
    return r


def test_plan_for_jetpack_6_1_r36_4(plan_dir, tmp_path):
    r = _plan(plan_dir, _machine(tmp_path, release=R36_4, cuda="12.6.68"))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "machine: jetpack6 (Jetson: " in out and "Jetson Linux R36.4.3" in out and "CUDA 12.6.68 in" in out
    assert "TensorRT 10.3 from JetPack" in out and "engine buffers through JetPack's libcudart (no cuda-python)" in out
    assert f"with the system site-packages and install rdd_edge-0.1.0-py3-none-any.whl[jetson{ORT_EXTRA}]" in out
    assert f"when it passes: rdd-edge engine {plan_dir}/export --trt all --max-batch 4 --workspace 1, then rdd-edge " \
           f"check {plan_dir}/export --device cuda, then a demo line that runs the engine" in out


def test_plan_for_jetpack_6_0_r36_3_refuses_the_tensorrt_path_before_installing(plan_dir, tmp_path):
    env = _machine(tmp_path, release=R36_3, cuda="12.2.140")
    r = _install(plan_dir, env=env)  # not even a dry run: it stops before the venv
    assert r.returncode == 1 and not (plan_dir / ".venv").exists()
    err = r.stderr.strip()
    assert err.count("\n") == 0 and "Jetson Linux R36.3.0 is JetPack 6.0: TensorRT 8.6.2 and CUDA 12.2" in err
    assert "bash install.sh --onnx-only" in err
    r = _plan(plan_dir, env, "--onnx-only")
    assert r.returncode == 0 and "machine: jetson-onnx" in r.stdout and "no TensorRT engines" in r.stdout
    assert "then: rdd-edge check" in r.stdout and "--device cpu" in r.stdout


def test_plan_for_jetpack_7(plan_dir, tmp_path):
    r = _plan(plan_dir, _machine(tmp_path, release=R38_2, cuda="13.0.48"))
    assert r.returncode == 0 and "machine: jetpack7" in r.stdout and f"[jetson-cuda13{ORT_EXTRA}]" in r.stdout


@pytest.mark.parametrize("sign", ["device tree", "kernel"])
def test_a_container_without_nv_tegra_release_is_a_jetson(plan_dir, tmp_path, sign):
    """JetPack containers often lack /etc/nv_tegra_release; the SoC in the device tree (or a -tegra kernel)
    says Jetson, and the board's CUDA says which JetPack. Without nvidia-smi's word it would be a desktop."""
    env = _machine(tmp_path, device_tree=b"nvidia,p3768-0000+p3767-0005\0nvidia,tegra234\0" if sign == "device tree" else None,
                   kernel="5.15.148-tegra" if sign == "kernel" else "6.8.0-generic", cuda="12.6.68",
                   smi="| NVIDIA-SMI 540.4.0   Driver Version: 540.4.0   CUDA Version: 12.6 |")
    r = _plan(plan_dir, env)
    assert r.returncode == 0, r.stderr
    assert "machine: jetpack6 (Jetson: " in r.stdout and "(release inferred from CUDA 12.6.68)" in r.stdout
    env = _machine(tmp_path / "no-cuda", kernel="5.15.148-tegra")  # a Jetson that says nothing of its JetPack
    r = _plan(plan_dir, env)
    assert r.returncode == 1 and "cannot tell its JetPack" in r.stderr and "--onnx-only" in r.stderr


def test_jetpack_5_is_refused(plan_dir, tmp_path):
    r = _plan(plan_dir, _machine(tmp_path, release=R35_5))
    assert r.returncode == 1 and "R35.5.0 (JetPack 5): not supported" in r.stderr and "JetPack 6.1+ (R36.4+)" in r.stderr


def test_plan_for_a_desktop_with_cuda_12(plan_dir, tmp_path):
    env = _machine(tmp_path, smi="| NVIDIA-SMI 550.54   Driver Version: 550.54   CUDA Version: 12.4 |")
    r = _plan(plan_dir, env)
    assert r.returncode == 0 and "machine: cuda12" in r.stdout and "TensorRT and cuda-python from pip" in r.stdout
    assert "whl[trt]" in r.stdout if BASE_HAS_ORT else "whl[trt,gpu]" in r.stdout  # TensorRT 10 + onnxruntime-gpu


def test_plan_for_a_desktop_with_cuda_13(plan_dir, tmp_path):
    env = _machine(tmp_path, smi="| NVIDIA-SMI 580.65   Driver Version: 580.65   CUDA Version: 13.0 |")
    r = _plan(plan_dir, env)
    assert r.returncode == 0 and "machine: cuda13" in r.stdout and "the trt-cuda13 extra" in r.stdout


def test_plan_for_a_cpu_machine(plan_dir, tmp_path):
    r = _plan(plan_dir, _machine(tmp_path))
    assert r.returncode == 0 and "machine: cpu" in r.stdout and "ONNX Runtime on the CPU" in r.stdout
    assert f"install rdd_edge-0.1.0-py3-none-any.whl[{ORT_EXTRA.lstrip(',')}]" in r.stdout
    assert "then: rdd-edge check" in r.stdout and "trt_acceptance" not in r.stdout


def test_a_system_onnxruntime_gpu_is_never_shadowed_and_a_wheel_can_be_named(plan_dir, tmp_path):
    env = _machine(tmp_path, release=R36_4, cuda="12.6.68", system_ort=["TensorrtExecutionProvider",
                                                                          "CUDAExecutionProvider", "CPUExecutionProvider"])
    r = _plan(plan_dir, env)
    assert r.returncode == 0 and "would keep the system's onnxruntime-gpu" in r.stdout and "whl[jetson]" in r.stdout
    r = _plan(plan_dir, _machine(tmp_path / "w", release=R36_4, cuda="12.6.68"), "--ort-wheel",
              "https://example.invalid/onnxruntime_gpu-1.20.0-cp310-cp310-linux_aarch64.whl")
    assert "would install the ONNX Runtime wheel https://example.invalid/onnxruntime_gpu" in r.stdout
    assert "whl[jetson]" in r.stdout  # no CPU build beside it


@pytest.mark.slow
def test_install_sh_makes_a_torch_free_venv_whose_check_passes(bundle, tmp_path):
    """The device journey on this CPU machine: bash install.sh, then that venv's rdd-edge check."""
    import shutil

    b = tmp_path / "B"
    shutil.copytree(bundle, b)
    r = _install(b, env={"RDD_TEGRA_RELEASE": str(tmp_path / "none")})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "installed rdd_edge-" in r.stdout and "acceptance check passed; report: " in r.stdout
    vpy = b / ".venv" / "bin" / "python"
    probe = ("import importlib.util as u, sys; import rdd_edge.deploy, rdd_edge.deploy.check; "
             "sys.exit(any(u.find_spec(m) for m in ('torch', 'torchvision', 'timm')))")
    # (run outside the clone: python -c puts the working directory first, and the clone has rdd_edge/)
    assert subprocess.run([str(vpy), "-c", probe], cwd=tmp_path).returncode == 0  # no torch in the device venv
    res = subprocess.run([str(b / ".venv" / "bin" / "rdd-edge"), "check", str(b / "export"), "--min-time", "0.01"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads((b / "export" / "check.json").read_text())["split"] == "check"
    again = _install(b, "--no-check", env={"RDD_TEGRA_RELEASE": str(tmp_path / "none")})
    assert again.returncode == 0 and "nothing to install" in again.stdout  # idempotent
    # the installed wheel packs again as it is (no source tree there): still the rdd_edge package alone
    code = ("import sys; from pathlib import Path; from rdd_edge.deploy.wheel import build_wheel, wheel_top_level, "
            "source_root; assert source_root() is None; w = build_wheel(Path(sys.argv[1])); print(wheel_top_level(w))")
    out = subprocess.run([str(vpy), "-c", code, str(tmp_path / "w")], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "['rdd_edge']", out.stderr


def test_install_sh_help_works_by_a_relative_path_from_another_folder(plan_dir):
    """`bash rdd-bundle/install.sh --help` from the folder above: the script changes into its own folder
    first, so reading its help through a relative $0 failed (exit 2); only the comment block is printed."""
    res = subprocess.run(["bash", f"{plan_dir.name}/install.sh", "--help"], cwd=plan_dir.parent, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("Install this bundle's rdd-edge") and "--dry-run prints" in res.stdout
    assert "set -euo pipefail" not in res.stdout


def test_install_sh_verifies_every_file_and_installs_exactly_the_named_wheel(bundle, tmp_path):
    """Issue 32 #3: bundle.json's sha256 list is read; another rdd_edge-*.whl in wheels/ is never chosen."""
    import shutil

    b = tmp_path / "B"
    shutil.copytree(bundle, b)
    named = json.loads((b / "bundle.json").read_text())["wheel"]
    (b / "wheels" / "rdd_edge-0.0.9-py3-none-any.whl").write_bytes((b / named).read_bytes())  # sorts first
    r = _install(b, "--dry-run", env={"RDD_TEGRA_RELEASE": str(tmp_path / "none")})
    assert r.returncode == 0 and f"install {Path(named).name}[" in r.stdout, r.stdout + r.stderr
    (b / named).write_bytes((b / named).read_bytes() + b"\0")  # a modified wheel
    r = _install(b, "--dry-run", env={"RDD_TEGRA_RELEASE": str(tmp_path / "none")})
    assert r.returncode == 1 and "differ from bundle.json's sha256" in r.stderr and named in r.stderr
    assert "Traceback" not in r.stderr and not (b / ".venv").exists()
    doc = json.loads((b / "bundle.json").read_text())
    doc["files"]["../../etc/passwd"] = "0" * 64
    (b / "bundle.json").write_text(json.dumps(doc))
    r = _install(b, "--dry-run", env={"RDD_TEGRA_RELEASE": str(tmp_path / "none")})
    assert r.returncode == 1 and "not a file inside the bundle" in r.stderr


def _system_opencv(env: dict, tmp_path: Path, gstreamer: str, numpy: str = "1.26.4") -> dict:
    """A system cv2 whose build information says ``GStreamer: <gstreamer>`` and a numpy of that version."""
    site = tmp_path / "cvsite"
    for name, body in {"cv2": f"def getBuildInformation():\n    return '  Video I/O:\\n    GStreamer:   {gstreamer}\\n'\n",
                       "numpy": f"__version__ = {numpy!r}\n"}.items():
        (site / name).mkdir(parents=True, exist_ok=True)
        (site / name / "__init__.py").write_text(body)
    return {**env, "PYTHONPATH": str(site)}


def test_jetpacks_opencv_with_gstreamer_is_kept_and_not_shadowed(plan_dir, tmp_path):
    """Issue 27: csi:N and gst: sources need JetPack's OpenCV; pip's opencv-python-headless must not shadow it,
    nor pull a numpy 2 it was not built for."""
    keep = "would keep JetPack's OpenCV (GStreamer) over pip's opencv-python-headless"
    jetson = _machine(tmp_path, release=R36_4, cuda="12.6.68")
    r = _plan(plan_dir, _system_opencv(jetson, tmp_path, "YES (1.20.3)"))
    assert r.returncode == 0 and f"{keep} (pins for it: numpy<2 opencv-python-headless<4.12)" in r.stdout, r.stdout
    # (the other plan tests' Python has pip's OpenCV, without GStreamer: their plans never say it)
