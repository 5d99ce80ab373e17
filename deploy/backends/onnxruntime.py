"""ONNX Runtime backend: the portable path (CPU everywhere; CUDA/TensorRT providers when installed).

With onnxruntime-gpu, an ``.onnx`` file runs on the TensorRT execution provider first (engine and
timing cache in ``trt-cache/`` beside the file; on ONNX Runtime >= 1.22 no precision flag for the FP16
and Q/DQ files, whose precision is in the graph, so the provider builds them strongly typed; before
1.22, FP16 for the FP16 file and INT8 for the Q/DQ file),
then CUDA, then CPU; :func:`provider_options` computes that choice as a pure function. Which file
may go to TensorRT, and at what precision, is the formats table's word (``rdd_edge.formats``), read
by the key the manifest lists the file under (else its exact file name), never guessed from a name.
"""

from __future__ import annotations

import ctypes
import importlib.metadata as md
import logging
import os
import re
import tempfile
import weakref
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rdd_edge import formats
from rdd_edge.deploy.info import read_manifest
from rdd_edge.devices import check_threads, cuda_index, parse_device
from rdd_edge.errors import DeployError, MissingDependencyError
from rdd_edge.extras import install_hint
from rdd_edge.formats import ExportFormat

# Fastest first; only those the installed onnxruntime build offers are used.
# ONNX Runtime graph rewrites that change what a file computes. WeightBiasQuantization (ORT 1.2x+)
# turns a Q/DQ Conv's float bias into an int32 bias at the product of the input and weight scales;
# with the FP16 scales of the TensorRT Q/DQ file that product loses the bias (measured: a Conv's
# output off by 4.7e4 where it should be below 3, 97% label agreement with its own FP32-math twin
# instead of 99.9%). TensorRT never sees the rewrite, so the file is run as written.
EXACT_DISABLED_OPTIMIZERS = ("WeightBiasQuantization",)

# the precisions TensorRT's execution provider is told (trt_fp16_enable / trt_int8_enable)
TRT_EP_PRECISIONS = ("fp32", "fp16", "int8")
# ONNX Runtime's TensorRT EP builds a weakly typed network whenever trt_fp16_enable or trt_int8_enable
# is set, and a strongly typed one with both off (onnxruntime PR #24298, released in 1.22): from there
# the FP16 and Q/DQ files keep the precision written in them (their FP16 islands stay FP16, not hints).
ORT_STRONGLY_TYPED = (1, 22)
TRT_EP_MAX_BATCH = 4  # the TensorRT EP's default profile: batch 1..4 (an engine per profile: keep it small)

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")

# The distributions that install the `onnxruntime` import package (one owns it at a time).
ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu")
ORT_INSTALL = ("ONNX Runtime is not installed: the `cpu` extra (" + install_hint("cpu") + ") or the `gpu` extra "
               "(onnxruntime-gpu, x86_64 + CUDA 12; on a Jetson, NVIDIA's onnxruntime-gpu wheel for your JetPack); "
               "install only one of them: they share the import name")


def import_onnxruntime() -> Any:
    """The installed ``onnxruntime`` module (CPU or GPU build, whichever is present), or one
    MissingDependencyError line saying exactly what to install."""
    try:
        import onnxruntime  # lazy: optional dependency (onnxruntime)
    except ImportError as exc:
        raise MissingDependencyError(f"{ORT_INSTALL} ({exc})") from None
    if not hasattr(onnxruntime, "InferenceSession"):  # a half-removed install leaves an empty package
        raise MissingDependencyError(f"{ORT_INSTALL}; the onnxruntime package here is broken (an uninstall of one of "
                                     "two builds removed the other's files): pip install --force-reinstall it")
    return onnxruntime


def ort_distributions() -> dict[str, str]:
    """Installed ONNX Runtime distributions and their versions (both present means one clobbered the other)."""
    found = {}
    for name in ORT_DISTRIBUTIONS:
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return found


def gpu_providers(available: Sequence[str]) -> list[str]:
    """The GPU execution providers among ``available`` (TensorRT, CUDA)."""
    return [p for p in GPU_PROVIDERS if p in available]

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
}


def choose_providers(
    available: Sequence[str], requested: Sequence[str] | None = None, device: str = "auto"
) -> list[str]:
    """Pick execution providers: ``requested`` if given (each must be available), else by ``device``.

    ``device``: ``auto`` (TensorRT > CUDA > CPU as available), ``cpu``, or ``cuda`` (GPU providers,
    an error when none is installed). CPU is always last as the fallback.
    """
    available = list(available)
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise DeployError(f"ONNX Runtime providers {missing} are not available here; available: {available}")
        return list(requested)
    if device == "cpu":
        return ["CPUExecutionProvider"]
    chosen = [p for p in PREFERRED_PROVIDERS if p in available]
    if device == "cuda":
        gpu = [p for p in chosen if p != "CPUExecutionProvider"]
        if not gpu:
            raise DeployError(
                f"--device cuda: this onnxruntime build has no GPU provider (available: {available}); "
                "install onnxruntime-gpu or use --device cpu"
            )
    elif device != "auto":
        raise DeployError(f"device {device!r}: expected auto, cpu or cuda")
    return chosen or ["CPUExecutionProvider"]


def _manifest(path: Path) -> dict[str, Any] | None:
    """The export manifest beside ``path`` (None when there is none or it is unreadable)."""
    try:
        return read_manifest(path)[0]
    except DeployError:
        return None


def artifact_format(path: str | Path) -> ExportFormat | None:
    """The formats table's row of an ONNX file: by the key ``manifest.json`` beside it lists the file
    under, else by the table's exact file name; None for a file neither knows (run as plain FP32)."""
    path = Path(path)
    return formats.format_of(path.name, _manifest(path))


def artifact_precision(path: str | Path) -> str:
    """``fp32`` / ``fp16`` / ``int8`` of an ONNX file: its row's precision (:func:`artifact_format`);
    ``fp32`` for a file the manifest and the table do not know."""
    row = artifact_format(path)
    return row.precision if row is not None else "fp32"


def _trt_float(path: Path) -> str:
    """The float math a TensorRT Q/DQ file carries: its manifest entry's ``trt_float`` (``fp16`` unless
    the manifest says ``fp32``)."""
    manifest = _manifest(path)
    key = formats.artifact_key(path.name, manifest)
    entry = ((manifest or {}).get("artifacts") or {}).get(key) if key is not None else None
    entry = entry if isinstance(entry, dict) else {}
    return str(entry.get("trt_float") or entry.get("int8_float") or "fp16")


def installed_ort_version() -> str | None:
    """The installed ONNX Runtime's version, from its distribution (no import)."""
    for name in ORT_DISTRIBUTIONS[::-1]:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            continue
    return None


def ort_builds_strongly_typed(version: str | None) -> bool:
    """Whether this ONNX Runtime's TensorRT EP builds strongly typed with both precision flags off (>= 1.22)."""
    nums = [int(x) for x in re.findall(r"\d+", str(version or ""))[:2]]
    return len(nums) == 2 and (nums[0], nums[1]) >= ORT_STRONGLY_TYPED


def provider_options(
    path: str | Path,
    available: Sequence[str],
    device: str = "auto",
    precision: str | None = None,
    cache_dir: str | Path | None = None,
    requested: Sequence[str] | None = None,
    device_id: int = 0,
    profile: dict[str, Any] | None = None,
    workspace_gb: float | None = None,
    trt_ep: bool | None = None,
    ort_version: str | None = None,
) -> tuple[list[str], list[dict[str, Any]]]:
    """Providers and their options for ``onnxruntime.InferenceSession`` (pure: no session made).

    On NVIDIA (onnxruntime-gpu with TensorRT): TensorRT EP first with an engine and timing cache in
    ``cache_dir`` (default ``<file's folder>/trt-cache``); then CUDA, then CPU. Precision flags: on an
    ONNX Runtime that builds strongly typed with both flags off (>= 1.22, ``ort_version``, default the
    installed one) none for the FP16 and Q/DQ files, whose precision is in the graph; before that,
    FP16 for the FP16 file and INT8 (plus FP16 for the float layers unless the file keeps them FP32)
    for the Q/DQ file.
    The formats table decides (:func:`artifact_format`: the manifest's key for the file, else its exact
    name): a row with ``trt_ep`` False (the uint8 CPU INT8 file) never goes to TensorRT, and its
    ``precision`` sets the FP16 / INT8 flags; a file the table does not know runs as plain FP32.
    ``precision`` (``fp32``/``fp16``/``int8``) and ``trt_ep`` override the row's.
    ``profile``: optional ``{"min": shape, "opt": shape, "max": shape}`` of the input ``images``
    for TensorRT's explicit shape range (no engine rebuild per new batch size).
    """
    path = Path(path)
    row = artifact_format(path) if precision is None or trt_ep is None else None
    prec = str(precision or (row.precision if row is not None else "fp32")).lower()
    may_trt = trt_ep if trt_ep is not None else (row.trt_ep if row is not None else True)  # unknown: plain FP32
    providers = choose_providers(available, requested, device)
    if not may_trt and not requested:
        providers = [p for p in providers if p != "TensorrtExecutionProvider"]
    if "TensorrtExecutionProvider" in providers and prec not in TRT_EP_PRECISIONS:
        raise DeployError(f"{path}: precision {prec!r} for TensorRT's execution provider: expected "
                          f"{', '.join(TRT_EP_PRECISIONS)}")
    cache = Path(cache_dir) if cache_dir is not None else path.parent / "trt-cache"
    options: list[dict[str, Any]] = []
    for p in providers:
        if p == "TensorrtExecutionProvider":
            int8 = prec == "int8"
            fp16 = prec == "fp16" or (int8 and _trt_float(path) != "fp32")
            if prec in ("fp16", "int8") and ort_builds_strongly_typed(
                    ort_version if ort_version is not None else installed_ort_version()):
                fp16 = int8 = False  # strongly typed: the file's own FP16 types and Q/DQ nodes decide
            o: dict[str, Any] = {
                "device_id": int(device_id),
                "trt_fp16_enable": fp16,
                "trt_int8_enable": int8,
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(cache),
                "trt_timing_cache_enable": True,
                "trt_timing_cache_path": str(cache),
            }
            if workspace_gb:
                o["trt_max_workspace_size"] = int(workspace_gb * (1 << 30))
            if profile:
                name = str(profile.get("name") or "images")
                for k in ("min", "opt", "max"):
                    o[f"trt_profile_{k}_shapes"] = f"{name}:" + "x".join(str(int(d)) for d in profile[k])
            options.append(o)
        elif p == "CUDAExecutionProvider":
            options.append({"device_id": int(device_id)})
        else:
            options.append({})
    return providers, options


_LIVE: "weakref.WeakSet[Any]" = weakref.WeakSet()  # the sessions alive in this process (their thread pools)


def sessions_opened() -> int:
    """How many ONNX Runtime sessions are alive in this process (read before forking: their thread
    pools make a fork unsafe)."""
    return len(_LIVE)


log = logging.getLogger(__name__)
_WARNED: set[str] = set()
# what a GPU provider needs from the loader (onnxruntime-gpu's CUDA 12 builds): TensorRT 10's libnvinfer
# (pip TensorRT keeps it in site-packages/tensorrt_libs, off the loader path) and cuDNN 9
PROVIDER_LIBS = {"TensorrtExecutionProvider": ("libnvinfer.so.10", "TensorRT 10's libnvinfer (pip TensorRT keeps it "
                                                "in site-packages/tensorrt_libs: add that folder to LD_LIBRARY_PATH)"),
                 "CUDAExecutionProvider": ("libcudnn.so.9", "cuDNN 9 (pip install nvidia-cudnn-cu12, or the system's)")}


def _ort_log(ort: Any, path: Path, provider: str, options: dict[str, Any]) -> str:
    """What ONNX Runtime logs while it tries ``provider`` alone on ``path`` (its C++ log goes to fd 2,
    captured here): the first error or warning line, without its prefix."""
    with tempfile.TemporaryFile(mode="w+b") as cap:
        saved = os.dup(2)
        try:
            os.dup2(cap.fileno(), 2)
            opts = ort.SessionOptions()
            opts.log_severity_level = 2
            try:
                ort.InferenceSession(str(path), sess_options=opts, providers=[provider], provider_options=[options])
            except Exception as exc:  # noqa: BLE001 - its message is the reason
                os.write(2, f"[E:python] {exc}".encode())
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        cap.seek(0)
        text = cap.read().decode(errors="replace")
    lines = [ln for ln in text.splitlines() if re.match(r"\s*\S*\[[EW]:", ln) or "rror" in ln]
    line = lines[0] if lines else ""
    return re.sub(r"^.*?\]\s*(?:\S+\.cc:\d+\s+\S+\]\s*)?", "", line).strip()[:300]


def fallback_note(ort: Any, path: Path, asked: Sequence[str], options: Sequence[dict[str, Any]],
                  got: Sequence[str]) -> str:
    """One line when a GPU provider that was asked for did not load (ONNX Runtime then falls back
    quietly), with the reason ONNX Runtime gives and what the loader misses; warned once per process
    and reason. '' when every provider asked for is in use."""
    notes = []
    for provider, opts in zip(asked, options):
        if provider not in GPU_PROVIDERS or provider in got:
            continue
        why = _ort_log(ort, path, provider, opts)
        lib, what = PROVIDER_LIBS[provider]
        try:
            ctypes.CDLL(lib)
        except OSError:
            why = f"{why}; " if why else ""
            why += f"{lib} does not load: needs {what}"
        notes.append(f"{provider.replace('ExecutionProvider', '')} provider not used ({why or 'no reason given'})")
    note = "; ".join(notes)
    if note and note not in _WARNED:
        _WARNED.add(note)
        log.warning("%s: %s; running on %s", path.name, note, got[0] if got else "?")
    return f"{note}; ran on {got[0] if got else '?'}" if note else ""


class OrtBackend:
    """One ``onnxruntime.InferenceSession`` with a thread count and provider choice."""

    def __init__(
        self,
        path: str | Path,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        device: str = "auto",
        max_batch: int = TRT_EP_MAX_BATCH,
    ):
        ort = import_onnxruntime()
        self.path = Path(path)
        opts = ort.SessionOptions()
        if threads is not None:
            opts.intra_op_num_threads = check_threads(threads)  # 1..the usable CPUs
        opts.log_severity_level = 3
        device = parse_device(device)
        kind = "cuda" if device.startswith("cuda") else device  # cuda:N -> the GPU providers on device N
        chosen, chosen_opts = provider_options(self.path, ort.get_available_providers(), kind, requested=providers,
                                               device_id=cuda_index(device), profile=_trt_profile(self.path, max_batch))
        if "TensorrtExecutionProvider" in chosen:
            Path(chosen_opts[chosen.index("TensorrtExecutionProvider")]["trt_engine_cache_path"]).mkdir(parents=True, exist_ok=True)
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=chosen,
                                                provider_options=chosen_opts,
                                                disabled_optimizers=list(EXACT_DISABLED_OPTIMIZERS))
        except Exception as exc:  # noqa: BLE001 - ORT raises several types for a bad file
            msg = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise DeployError(f"{self.path}: not a loadable ONNX model ({msg}); re-export it with `rdd-edge export`") from None
        _LIVE.add(self.session)
        self.provider = self.session.get_providers()[0]
        self.fallback_note = fallback_note(ort, self.path, chosen, chosen_opts, self.session.get_providers())
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise DeployError(f"{self.path}: expected one image input, the graph has {len(inputs)}: {[i.name for i in inputs]}")
        self.input_name = inputs[0].name
        self.input_shape: list[Any] = list(inputs[0].shape)
        self.input_dtype = _ORT_TYPES.get(inputs[0].type, inputs[0].type)
        outs = self.session.get_outputs()
        self.output_names = [o.name for o in outs]
        self.output_shapes = {o.name: list(o.shape) for o in outs}
        b = self.input_shape[0]
        # the largest batch one call takes: a static batch dimension, else no limit
        self.max_batch: int | None = int(b) if isinstance(b, int) and b > 0 else None

    def run(self, batch: np.ndarray, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Feed one NCHW batch; return the requested (default all) outputs by name."""
        names = list(outputs) if outputs else self.output_names
        try:
            res = self.session.run(names, {self.input_name: batch})
        except Exception as exc:  # noqa: BLE001
            msg = str(exc).strip().splitlines()[0][:300]
            raise DeployError(f"{self.path}: inference failed on a {batch.dtype} batch of shape {batch.shape} ({msg})") from None
        return dict(zip(names, res))

    def close(self) -> None:
        """Drop the session (ONNX Runtime frees it, and any TensorRT engine it built, with the object)."""
        self.__dict__.pop("session", None)

    def __enter__(self) -> "OrtBackend":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _trt_profile(path: Path, max_batch: int) -> dict[str, Any] | None:
    """Explicit TensorRT EP shape range for a dynamic-batch graph with the manifest's static H x W."""
    try:
        manifest, _ = read_manifest(path)
    except DeployError:
        return None
    inp = (manifest or {}).get("input") or {}
    shape = inp.get("shape")
    if not (isinstance(shape, list) and len(shape) == 4 and all(isinstance(d, int) and d > 0 for d in shape[1:])):
        return None
    if isinstance(shape[0], int) and shape[0] > 0:
        return None  # static batch: nothing to range over
    c, h, w = shape[1:]
    return {"name": str(inp.get("name") or "images"), "min": [1, c, h, w], "opt": [1, c, h, w],
            "max": [max(1, int(max_batch)), c, h, w]}
