"""The JSON sidecar beside every TensorRT engine, and the load-time compatibility check.

A serialized engine only runs on the TensorRT version that built it and on GPUs of the same
compute capability; loading it elsewhere fails deep inside TensorRT with "Version tag does not
match" or worse. The export stage writes ``<engine>.json`` with the build machine's identity;
deploy compares it with this machine's before deserialising and says what to do.
Torch-free: tensorrt and the CUDA bindings are imported inside the functions, all optional.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from rdd_edge.errors import DeployError
from rdd_edge.runs import write_json

SIDECAR_FORMAT = "rdd-edge-engine"


def sidecar_path(engine_path: str | Path) -> Path:
    """``model.fp16.engine`` -> ``model.fp16.engine.json``."""
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


def write_sidecar(engine_path: str | Path, meta: dict[str, Any]) -> Path:
    """Write ``meta`` (identity keys ``tensorrt``, ``gpu``, ``compute_capability`` plus anything
    else, e.g. ``precision``, ``input_shape``) atomically beside the engine."""
    return write_json(sidecar_path(engine_path), {"format": SIDECAR_FORMAT, **meta})


def read_sidecar(engine_path: str | Path) -> dict[str, Any]:
    """The sidecar of ``engine_path``; DeployError when it is missing or not valid JSON."""
    p = sidecar_path(engine_path)
    if not p.is_file():
        raise DeployError(
            f"{p}: engine sidecar not found, so {Path(engine_path).name} cannot be checked against this machine; "
            "rebuild the engine here with `rdd-edge export --trt fp16` (or int8)"
        )
    try:
        meta = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DeployError(f"{p}: unreadable engine sidecar ({exc}); rebuild the engine with `rdd-edge export --trt ...`") from None
    if not isinstance(meta, dict):
        raise DeployError(f"{p}: engine sidecar must be a JSON object")
    return meta


def _tensorrt_version() -> str | None:
    try:
        import tensorrt  # type: ignore[import-not-found]
    except Exception:  # noqa: BLE001 - absent or broken install: no TensorRT here
        return None
    return str(getattr(tensorrt, "__version__", "")) or None


def _gpu_cuda_python() -> tuple[str, str] | None:
    try:
        from cuda.bindings import runtime as cudart  # type: ignore[import-not-found]
    except Exception:  # noqa: BLE001
        return None
    err, props = cudart.cudaGetDeviceProperties(0)
    if int(err) != 0:
        return None
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return name.strip("\x00 "), f"{props.major}.{props.minor}"


def _gpu_pycuda() -> tuple[str, str] | None:
    try:
        import pycuda.driver as drv  # type: ignore[import-not-found]

        drv.init()
        dev = drv.Device(0)
        major, minor = dev.compute_capability()
        return dev.name(), f"{major}.{minor}"
    except Exception:  # noqa: BLE001
        return None


def _gpu_nvidia_smi() -> tuple[str, str] | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,compute_cap", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    line = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""
    if "," not in line:
        return None
    name, cc = (s.strip() for s in line.rsplit(",", 1))
    return name, cc


def runtime_identity() -> dict[str, Any]:
    """This machine's TensorRT version, GPU name and compute capability (None where unknown)."""
    gpu = _gpu_cuda_python() or _gpu_pycuda() or _gpu_nvidia_smi()
    return {
        "tensorrt": _tensorrt_version(),
        "gpu": gpu[0] if gpu else None,
        "compute_capability": gpu[1] if gpu else None,
    }


def _sm(cc: Any) -> str:
    return "sm_" + str(cc).replace(".", "") if cc else "sm_?"


def _same_trt(a: str, b: str) -> bool:
    """Engines are tied to the TensorRT release: compare major.minor.patch (build number ignored)."""
    return a.split(".")[:3] == b.split(".")[:3]


def check_compatible(meta: dict[str, Any], current: dict[str, Any] | None = None, engine: str | Path | None = None) -> None:
    """Raise DeployError unless an engine described by ``meta`` can run on ``current``.

    Same TensorRT release and same compute capability are required (a different GPU model of
    the same capability is fine). ``current`` defaults to :func:`runtime_identity`.
    """
    if current is None:
        current = runtime_identity()
    built_trt, built_cc, built_gpu = meta.get("tensorrt"), meta.get("compute_capability"), meta.get("gpu")
    cur_trt, cur_cc, cur_gpu = current.get("tensorrt"), current.get("compute_capability"), current.get("gpu")
    mismatch = (
        cur_trt is None
        or (built_trt and not _same_trt(str(built_trt), str(cur_trt)))
        or (built_cc and cur_cc and str(built_cc) != str(cur_cc))
        or (cur_cc is None and built_cc)
    )
    if not mismatch:
        return
    flavour = meta.get("precision") or "fp16"
    where = f"{engine}: " if engine else ""
    have_gpu = f"{cur_gpu} ({_sm(cur_cc)})" if cur_gpu else "no usable NVIDIA GPU"
    have_trt = f"TensorRT {cur_trt}" if cur_trt else "no TensorRT"
    raise DeployError(
        f"{where}engine built for {built_gpu or 'an unknown GPU'} ({_sm(built_cc)}) with TensorRT {built_trt or '?'}; "
        f"this machine has {have_gpu} with {have_trt}: rebuild it here with `rdd-edge export --trt {flavour}` "
        "(or run the ONNX file instead)"
    )
