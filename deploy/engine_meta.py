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

from rdd_edge.deploy import board
from rdd_edge.deploy.cuda_mem import CtypesRuntime, import_cudart, load_libcudart
from rdd_edge.errors import DeployError, RddError
from rdd_edge.formats import TRT_CHOICES, engine_for
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


def trt_release(version: str | None) -> tuple[int, ...]:
    """Every numeric part of a TensorRT version, build included: ``"10.3.0.30"`` -> (10, 3, 0, 30).

    NVIDIA's support policy ties a serialized engine and a timing cache to the exact
    major.minor.patch.build that made them."""
    return tuple(int(p) for p in re.findall(r"\d+", str(version or ""))[:4])


def check_trt_version(version: str | None, error: type[RddError] = DeployError, where: str = "") -> tuple[int, int, int]:
    """Refuse TensorRT older than 10.0 with one line; return the parsed version."""
    v = parse_trt_version(version)
    if v[:2] < MIN_TRT:
        raise error(f"{where}TensorRT {version or '?'} found; rdd-edge needs TensorRT 10.0 or newer "
                    "(JetPack 6 ships 10.3; desktop: the `trt` extra), or run the .onnx file with ONNX Runtime")
    return v


def tensorrt_module() -> Any | None:
    """The real ``tensorrt`` module, or None when it is absent, broken, or only a type-stub
    package (``tensorrt-stubs`` installs a ``tensorrt/`` folder of ``.pyi`` files that Python
    imports as an empty namespace package)."""
    try:
        import tensorrt  # lazy: optional dependency (tensorrt)
    except Exception:  # noqa: BLE001 - absent or broken install: no TensorRT here
        return None
    if not hasattr(tensorrt, "Builder") or not getattr(tensorrt, "__version__", None):
        return None
    return tensorrt


_LOGGER: list[Any] = []  # [(tensorrt module, its logger)]: one logger per process


def trt_logger(trt: Any) -> Any:
    """The process's one TensorRT logger (builder, parser and runtime all share it: TensorRT ties
    its logging to the first logger it is handed, and a logger per object only repeats messages)."""
    if not _LOGGER or _LOGGER[0][0] is not trt:
        _LOGGER[:] = [(trt, trt.Logger(trt.Logger.WARNING))]
    return _LOGGER[0][1]


# DLA per TensorRT release (NVIDIA's "Working with DLA" pages of 11.4.1 and 11.5.0, and the 11.4.1 release
# notes): 10.0-10.7 build DLA the 10.x way, a weakly typed network with the FP16 / INT8 builder flags and GPU
# fallback ("DLA support is currently limited to networks running in FP16 and INT8 mode", dla-build-and-run;
# "TensorRT 10.7 was the last 10.x release that supported DLA"); none in 10.8+, 11.0-11.3 or 11.4.0 (Windows
# on ARM only); 11.4.1 on Jetson AGX Orin with JetPack 7.2.2+, strongly typed ("Strongly Typed Networks for
# DLA"); 11.5.0 does not support JetPack at all. Later releases: not documented here (warned).
DLA_WEAK = ((10, 0, 0), (10, 7, 99))
DLA_STRONG = ((11, 4, 1), (11, 4, 99))
DLA_NONE = (((10, 8, 0), (10, 99, 99)), ((11, 0, 0), (11, 4, 0)), ((11, 5, 0), (11, 5, 99)))


def dla_support(version: str | None) -> str:
    """How this TensorRT release builds for DLA: ``"weak"`` (10.0-10.7: weakly typed + precision flags),
    ``"strong"`` (11.4.1+: strongly typed), ``"no"``, or ``"unknown"`` (not in NVIDIA's tables)."""
    v = parse_trt_version(version)
    if DLA_WEAK[0] <= v <= DLA_WEAK[1]:
        return "weak"
    if DLA_STRONG[0] <= v <= DLA_STRONG[1]:
        return "strong"
    if any(lo <= v <= hi for lo, hi in DLA_NONE):
        return "no"
    return "unknown"


def dla_placement_after_build(inspector_json: str | dict | list) -> dict[str, Any] | None:
    """Where the built engine's layers run, from the engine inspector (NVIDIA: read placement from the
    engine, not from the network): ``{"source": "engine inspector", "dla": n, "gpu": m, "dla_layers": [...]}``.
    An engine layer counts as DLA when its ``LayerType`` is ``DLA`` (a DLA subgraph, usually named
    ``{ForeignNode[...]}``). None when the report names no layer types (built without detailed verbosity).
    Not yet checked against a real DLA engine: the device script in benchmarks/README.md does that."""
    data: Any = inspector_json
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except json.JSONDecodeError:
            return None
    layers = data.get("Layers") if isinstance(data, dict) else data
    if not isinstance(layers, list) or not any(isinstance(x, dict) and x.get("LayerType") for x in layers):
        return None
    on_dla = [x for x in layers if isinstance(x, dict) and str(x.get("LayerType", "")).upper() == "DLA"]
    return {"source": "engine inspector", "dla": len(on_dla), "gpu": len(layers) - len(on_dla),
            "dla_layers": [str(x.get("Name", "?"))[:120] for x in on_dla[:8]]}


def _tensorrt_version() -> str | None:
    trt = tensorrt_module()
    return str(trt.__version__) if trt is not None else None


_CC = re.compile(r"\d{1,2}\.\d{1,2}")


def compute_capability(text: Any) -> str | None:
    """A compute capability only as ``N.N`` (e.g. ``"8.7"``); anything else is unknown (None)."""
    text = str(text).strip() if text is not None else ""
    return text if _CC.fullmatch(text) else None


def _gpu_cuda_python(device: int = 0) -> tuple[str, str | None] | None:
    try:
        cudart = import_cudart()  # cuda.bindings.runtime, or cuda.cudart of cuda-python < 12.6
        err, props = cudart.cudaGetDeviceProperties(int(device))
    except Exception:  # noqa: BLE001 - absent binding or no driver: another source may know
        return None
    if int(err) != 0:
        return None
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return name.strip("\x00 "), compute_capability(f"{props.major}.{props.minor}")


def _gpu_libcudart(device: int = 0) -> tuple[str, str | None] | None:
    try:
        found = CtypesRuntime(*load_libcudart()).device_identity(int(device))
    except (OSError, AttributeError):
        return None
    return (found[0], compute_capability(f"{found[1][0]}.{found[1][1]}")) if found else None


def _gpu_pycuda(device: int = 0) -> tuple[str, str | None] | None:
    try:
        import pycuda.driver as drv  # type: ignore[import-not-found]  # lazy: optional dependency (pycuda)

        drv.init()
        dev = drv.Device(int(device))
        major, minor = dev.compute_capability()
        return str(dev.name()), compute_capability(f"{major}.{minor}")
    except Exception:  # noqa: BLE001
        return None


def _gpu_nvidia_smi(device: int = 0) -> tuple[str, str | None] | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, f"--id={int(device)}", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    line = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""
    if "," not in line:
        return None
    name, cc = (s.strip() for s in line.rsplit(",", 1))
    return name, compute_capability(cc)


def runtime_identity(device: int = 0) -> dict[str, Any]:
    """This machine's TensorRT version and the name and compute capability of GPU ``device``
    (the ``N`` of ``cuda:N``; None where unknown)."""
    probes = ([_gpu_libcudart, _gpu_cuda_python] if board.is_jetson() else [_gpu_cuda_python, _gpu_libcudart])
    gpu = None
    for probe in (*probes, _gpu_pycuda, _gpu_nvidia_smi):  # the runtime the buffers use first (cuda_mem.binding_order)
        gpu = probe(device)
        if gpu:
            break
    return {
        "tensorrt": _tensorrt_version(),
        "gpu": gpu[0] if gpu else None,
        "compute_capability": gpu[1] if gpu else None,
    }


def _sm(cc: Any) -> str:
    return "sm_" + str(cc).replace(".", "") if cc else "sm_?"


def _same_trt(a: str, b: str) -> bool:
    """Engines are tied to the exact TensorRT release: major.minor.patch.build must match (the parts
    both versions give, at least major.minor.patch)."""
    ra, rb = trt_release(a), trt_release(b)
    n = min(len(ra), len(rb))
    return n >= 3 and ra[:n] == rb[:n]


def check_compatible(meta: dict[str, Any], current: dict[str, Any] | None = None, engine: str | Path | None = None,
                     device: int = 0) -> None:
    """Raise DeployError unless an engine described by ``meta`` can run on ``current``.

    Same TensorRT release (major.minor.patch.build) and same compute capability are required (a
    different GPU model of the same capability is fine). ``current`` defaults to
    :func:`runtime_identity` of GPU ``device``.
    """
    if current is None:
        current = runtime_identity(device)
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
    row = engine_for(str(meta.get("precision") or ""))  # the table's engine row of this precision: its flag rebuilds it
    flag = row.flag if row is not None and row.flag else f"--trt {'|'.join(c for c in TRT_CHOICES if c != 'none')}"
    where = f"{engine}: " if engine else ""
    have_gpu = f"{cur_gpu} ({_sm(cur_cc)})" if cur_gpu else "no usable NVIDIA GPU"
    have_trt = f"TensorRT {cur_trt}" if cur_trt else "no TensorRT"
    built_for = f"{built_gpu or 'an unknown GPU'} ({_sm(built_cc)}) with TensorRT {built_trt or '?'}"
    rebuild = f"rdd-edge engine {Path(engine).parent if engine else 'EXPORT'} {flag}"
    raise ForeignEngineError(
        f"{where}engine built for {built_for}; this machine has {have_gpu} with {have_trt}: rebuild it here with "
        f"`{rebuild}` (or run the ONNX file instead)", built_for=built_for, rebuild=rebuild)


class ForeignEngineError(DeployError):
    """An intact engine made for another GPU or TensorRT release (or a machine without either): not a
    fault of the file; ``built_for`` and ``rebuild`` (the command) say what and how."""

    def __init__(self, message: str, built_for: str = "", rebuild: str = "rdd-edge engine") -> None:
        super().__init__(message)
        self.built_for, self.rebuild = built_for, rebuild


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


# Kernel names that say the math is INT8 (xmma/imma GEMM kernels name their operand types,
# e.g. "..._interleaved_i8f16", "..._i8i8_i8i32_f32"; "imma" is the integer tensor-core MMA).
_INT8_TACTIC = re.compile(r"int8|i8i8|i8f16|i8f32|i8i32|(?<![a-z0-9])i8(?![0-9])|imma", re.IGNORECASE)


def tactic_is_int8(layer: Any) -> bool:
    """Whether a layer's kernel (``TacticName``) names INT8 math."""
    if not isinstance(layer, dict):
        return False
    name = layer.get("TacticName")
    return isinstance(name, str) and bool(_INT8_TACTIC.search(name))


def layer_precision(layer: Any) -> str:
    """The precision a layer computes in: its first input's type (an INT8 convolution reads INT8
    and may write FP16), else its first output's, with INT8 also read from the kernel's name
    (``TacticName``) when the types do not say it; ``unknown`` when the entry has neither (an
    engine built without ``ProfilingVerbosity.DETAILED``, or read without an execution context)."""
    if not isinstance(layer, dict):
        return "unknown"
    found = None
    for key in ("Inputs", "Outputs"):
        for t in layer.get(key) or []:
            found = tensor_precision(t)
            if found is not None:
                break
        if found is not None:
            break
    if found != "int8" and tactic_is_int8(layer):
        return "int8"
    return found or "unknown"


def report_is_readable(counts: dict[str, int] | None) -> bool:
    """Whether a precision report says enough to judge an engine: at least one layer, and more
    layers with a known precision than unknown ones (Myelin may fuse a graph into a few coarse
    layers: few layers are fine, mostly-unknown ones are not)."""
    if not counts:
        return False
    unknown = int(counts.get("unknown", 0))
    known = sum(int(v) for k, v in counts.items() if k != "unknown")
    return known > 0 and known >= unknown


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
