"""The versions that decide whether an engine builds and runs on a device, read without touching CUDA.

The first lines of a device report (``trt_acceptance``, the bundle's installer): L4T / JetPack
release, NVIDIA driver, CUDA runtime, cuda-python bindings, TensorRT, numpy, ONNX Runtime and its
execution providers. Every probe is optional and says "not found" instead of failing; none
creates a CUDA context (the acceptance check forks its engine processes afterwards).
"""

from __future__ import annotations

import importlib.metadata as md
import platform
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy

from rdd_edge.deploy import board
from rdd_edge.deploy.backends.onnxruntime import ort_distributions
from rdd_edge.deploy.cuda_mem import binding_order, cuda_version_text, import_cudart, libcudart_version
from rdd_edge.deploy.engine_meta import tensorrt_module

# L4T major release -> JetPack major (NVIDIA's JetPack archive)
JETPACK_OF_L4T = {32: "4", 35: "5", 36: "6", 38: "7"}


def l4t_release(text: str | None = None) -> str | None:
    """``"R36.4.3 (JetPack 6)"`` from /etc/nv_tegra_release ("# R36 (release), REVISION: 4.3, ..."), else None."""
    if text is None:
        try:
            text = board.TEGRA_RELEASE.read_text(errors="replace")
        except OSError:
            return None
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    if not m:
        return None
    major = int(m.group(1))
    jetpack = JETPACK_OF_L4T.get(major)
    return f"R{major}.{m.group(2).rstrip('.')}" + (f" (JetPack {jetpack})" if jetpack else "")


def driver_version() -> str | None:
    """The NVIDIA driver version (nvidia-smi, else /proc/driver/nvidia/version), None without one."""
    exe = shutil.which("nvidia-smi")
    if exe:
        try:
            out = subprocess.run([exe, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=10)
            line = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""
            if line:
                return line.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        m = re.search(r"Kernel Module\s+(?:for \S+\s+)?([\d.]+)", Path("/proc/driver/nvidia/version").read_text())
        return m.group(1) if m else None
    except OSError:
        return None


def cuda_runtime_version() -> str | None:
    """The CUDA runtime version cuda-python links (``cudaRuntimeGetVersion``: no context is created)."""
    try:
        err, number = import_cudart().cudaRuntimeGetVersion()
    except Exception:  # noqa: BLE001 - no binding, or a binding without a runtime
        return None
    return cuda_version_text(int(number)) if int(err) == 0 else None


def dist_version(*names: str) -> str | None:
    """The installed version of the first distribution found among ``names``."""
    for name in names:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            continue
    return None


def collect() -> dict[str, Any]:
    """Everything the report header shows, as data (None where a piece is absent)."""
    trt = tensorrt_module()
    try:
        import onnxruntime  # lazy: optional dependency (onnxruntime)

        ort_version: str | None = str(onnxruntime.__version__)
        providers: list[str] = list(onnxruntime.get_available_providers())
    except Exception:  # noqa: BLE001
        ort_version, providers = None, []
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "l4t": l4t_release(),
        "driver": driver_version(),
        "jetson": board.jetson_signs(),
        "board_cuda": board.board_cuda_version(),
        "libcudart": libcudart_version(),
        "buffers": binding_order(),
        "cuda_runtime": cuda_runtime_version(),
        "cuda_bindings": dist_version("cuda-bindings", "cuda-python"),
        "pycuda": dist_version("pycuda"),
        "tensorrt": str(trt.__version__) if trt is not None else None,
        "numpy": numpy.__version__,
        "onnxruntime": ort_version,
        "onnxruntime_providers": providers,
        "onnxruntime_distributions": ort_distributions(),
        "rdd_edge": dist_version("rdd-edge"),
    }


def _newer_than_board(runtime: str | None, board_cuda: str | None) -> str | None:
    """What a cuda-python runtime newer than the machine's CUDA means (None when it is not newer).

    A Tegra driver refuses a newer runtime without the cuda-compat package (cudaErrorInsufficientDriver;
    NVIDIA's CUDA compatibility guide, "Jetson": forward compatibility needs cuda-compat)."""
    have, want = board.major_minor(runtime), board.major_minor(board_cuda)
    if have is None or want is None or have <= want:
        return None
    return "rdd-edge uses the system libcudart for engines on a Jetson, so this only matters to other tools"


def header_lines(info: dict[str, Any]) -> list[str]:
    """The report's first lines, one fact each, "not found" where absent; a clobbered ONNX Runtime is said."""
    def v(key: str) -> str:
        return str(info.get(key)) if info.get(key) else "not found"

    providers = ", ".join(p.replace("ExecutionProvider", "") for p in info.get("onnxruntime_providers") or []) or "-"
    lib = info.get("libcudart")
    lines = [
        f"machine: {info.get('machine')}, Python {info.get('python')}, rdd-edge {v('rdd_edge')}",
        f"L4T: {v('l4t')}" if info.get("l4t") else (
            f"L4T: no /etc/nv_tegra_release, but a Jetson ({', '.join(info['jetson'])})" if info.get("jetson")
            else "L4T: not a Jetson (no /etc/nv_tegra_release)"),
        f"NVIDIA driver: {v('driver')}; CUDA on this machine (/usr/local/cuda/version.json): {v('board_cuda')}",
        f"CUDA runtimes: libcudart {lib[0] + ' (' + lib[1] + ')' if lib else 'not found'}; cuda-python {v('cuda_runtime')}"
        f" (cuda-bindings {v('cuda_bindings')})" + (f"; pycuda {info['pycuda']}" if info.get("pycuda") else "")
        + (f"; engines' buffers try {', '.join(info['buffers'])}" if info.get("buffers") else ""),
        f"TensorRT: {v('tensorrt')}; numpy: {v('numpy')}",
        f"ONNX Runtime: {v('onnxruntime')} (providers: {providers})",
    ]
    skew = _newer_than_board(info.get("cuda_runtime"), info.get("board_cuda")) if info.get("jetson") else None
    if skew:
        lines.append(f"warning: cuda-python's CUDA runtime {info['cuda_runtime']} is newer than this machine's CUDA "
                     f"{info['board_cuda']}; {skew}")
    dists = info.get("onnxruntime_distributions") or {}
    if len(dists) > 1:
        lines.append("warning: both " + " and ".join(f"{k} {ver}" for k, ver in dists.items()) + " are installed; "
                     "they share one import package and the one installed last owns it. In a bundle's venv, run "
                     "its install.sh again (add --ort-wheel PATH|URL for an onnxruntime-gpu wheel): it removes the "
                     "venv's own CPU build; elsewhere: python -m pip uninstall -y onnxruntime, then reinstall the "
                     "GPU build")
    return lines
