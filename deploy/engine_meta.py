"""The JSON sidecar beside every TensorRT engine, and the load-time compatibility check.

A serialized engine only runs on the TensorRT version that built it and on GPUs of the same
compute capability; loading it elsewhere fails deep inside TensorRT with "Version tag does not
match" or worse. The export stage writes ``<engine>.json`` with the build machine's identity;
deploy compares it with this machine's before deserialising and says what to do.
Torch-free: tensorrt and the CUDA bindings are imported inside the functions, all optional.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from rdd_edge.errors import DeployError, RddError
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


MIN_TRT = (10, 0)  # strong typing, named I/O tensors, no implicit calibrators (JetPack 6 ships 10.3)


def parse_trt_version(version: str | None) -> tuple[int, int, int]:
    """``"10.3.0.30"`` -> (10, 3, 0); missing parts are 0; unparsable -> (0, 0, 0)."""
    parts = re.findall(r"\d+", str(version or ""))[:3]
    nums = [int(p) for p in parts] + [0] * (3 - len(parts))
    return nums[0], nums[1], nums[2]


def check_trt_version(version: str | None, error: type[RddError] = DeployError, where: str = "") -> tuple[int, int, int]:
    """Refuse TensorRT older than 10.0 with one line; return the parsed version."""
    v = parse_trt_version(version)
    if v[:2] < MIN_TRT:
        raise error(f"{where}TensorRT {version or '?'} found; rdd-edge needs TensorRT 10.0 or newer "
                    "(JetPack 6 ships 10.3; desktop: pip install rdd-edge[trt]), or run the .onnx file with ONNX Runtime")
    return v


def tensorrt_module() -> Any | None:
    """The real ``tensorrt`` module, or None when it is absent, broken, or only a type-stub
    package (``tensorrt-stubs`` installs a ``tensorrt/`` folder of ``.pyi`` files that Python
    imports as an empty namespace package)."""
    try:
        import tensorrt
    except Exception:  # noqa: BLE001 - absent or broken install: no TensorRT here
        return None
    if not hasattr(tensorrt, "Builder") or not getattr(tensorrt, "__version__", None):
        return None
    return tensorrt


def _tensorrt_version() -> str | None:
    trt = tensorrt_module()
    return str(trt.__version__) if trt is not None else None


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


# --- per-layer precision from the engine inspector ---------------------------------------------

# Ordered: the first token found in a tensor's data type / format text decides (BF16 before FP16/
# FLOAT, UINT8 before INT8). TensorRT 10 writes one "Format/Datatype" text per tensor (e.g. "Row
# major linear FP16 format", "Thirty-two wide channel vectorized row major Int8 format"); 11.x
# splits it into "Format" and "DataType" (e.g. "Float", "Half", "Int8").
_DTYPE_TOKENS = (
    ("BFLOAT16", "bf16"), ("BF16", "bf16"),
    ("FP8", "fp8"), ("FP4", "fp4"),
    ("UINT8", "uint8"), ("INT8", "int8"), ("INT4", "int4"),
    ("FP16", "fp16"), ("HALF", "fp16"),
    ("FP32", "fp32"), ("FLOAT", "fp32"),
    ("INT32", "int32"), ("INT64", "int64"), ("BOOL", "bool"),
)
MAIN_PRECISIONS = ("int8", "fp16", "fp32")


def tensor_precision(tensor: Any) -> str | None:
    """Precision named by one inspector tensor entry (dict with DataType / Format/Datatype)."""
    if not isinstance(tensor, dict):
        return None
    for key in ("DataType", "Datatype", "Format/Datatype", "Format"):
        text = tensor.get(key)
        if isinstance(text, str) and text.strip() and "N/A" not in text.upper():
            up = text.upper().replace("-", "")
            for token, name in _DTYPE_TOKENS:
                if token in up:
                    return name
    return None


def layer_precision(layer: Any) -> str:
    """The precision a layer computes in: its first input's type (an INT8 convolution reads INT8
    and may write FP16), else its first output's; ``unknown`` when the entry has no types (engine
    built without ``ProfilingVerbosity.DETAILED``)."""
    if not isinstance(layer, dict):
        return "unknown"
    for key in ("Inputs", "Outputs"):
        for t in layer.get(key) or []:
            p = tensor_precision(t)
            if p is not None:
                return p
    return "unknown"


def layer_precisions(inspector_json: str | dict | list) -> dict[str, int]:
    """``IEngineInspector.get_engine_information(LayerInformationFormat.JSON)`` -> layer count per
    precision, e.g. ``{"int8": 41, "fp16": 12, "fp32": 0}`` (int8/fp16/fp32 always present).

    Accepts the JSON text, the parsed object (``{"Layers": [...], ...}``) or a bare layer list.
    Layers reported by name only count as ``unknown``."""
    data: Any = inspector_json
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise DeployError(f"engine inspector output is not JSON ({exc})") from None
    layers = data.get("Layers") if isinstance(data, dict) else data
    if not isinstance(layers, list):
        raise DeployError("engine inspector JSON has no \"Layers\" list")
    counts = {p: 0 for p in MAIN_PRECISIONS}
    for layer in layers:
        p = layer_precision(layer)
        counts[p] = counts.get(p, 0) + 1
    return counts


def precision_summary(meta: dict[str, Any]) -> str:
    """One line from a sidecar: ``"INT8 41, FP16 12, FP32 0 layers"`` (other kinds appended when present)."""
    counts = meta.get("precision_layers") if isinstance(meta, dict) else None
    if not isinstance(counts, dict) or not counts:
        return "layer precisions unknown (engine built without the precision report; rebuild with rdd-edge export)"
    parts = [f"{p.upper()} {int(counts.get(p, 0))}" for p in MAIN_PRECISIONS]
    parts += [f"{p.upper()} {int(n)}" for p, n in counts.items() if p not in MAIN_PRECISIONS and n]
    return ", ".join(parts) + " layers"
