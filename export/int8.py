"""FP32 ONNX -> explicit INT8 (QDQ) ONNX, calibrated once on real training images.

One calibration, two files, because the two runtimes want different integer types:

- ``model.int8.onnx`` (TensorRT): symmetric int8 activations and per-channel symmetric int8
  weights (every zero point 0), float biases (TensorRT rejects a DequantizeLinear on an int32 bias),
  a dedicated Q/DQ pair per consumer, Conv inputs and the residual input of each Add (NVIDIA's
  placement for a Conv + Add fusion in INT8: ``export.int8_residual``), and the input of average
  pooling and of PSPNet's upsampled bins, Concat and MaxPool left to TensorRT's Q/DQ propagation
  (``export.int8_placement``, with NVIDIA's rule for each op). TensorRT 10/11 builds INT8 engines from
  these Q/DQ nodes; no implicit calibrator is involved. Its float math is FP16 by default
  (``trt_float="fp16"``): a strongly typed engine runs every layer in the type the file gives it,
  so an FP32 file would run its non-quantized layers (and the Q/DQ arithmetic) in FP32. The FP16
  file is the shape NVIDIA's Model Optimizer emits for an FP16 "high precision" type: opset 19
  (DequantizeLinear-19 takes a float16 scale), float16 scales, biases and activations, float32
  graph I/O; weight scales are rounded to float16 and the int8 weights re-rounded against them.
- ``model.int8-cpu.onnx`` (ONNX Runtime on CPUs): uint8 (asymmetric) activations with per-channel
  int8 weights, the pairing ONNX Runtime's x86 VNNI / ARM dot-product kernels run fast.

Weights are stored as int8 initializers feeding a DequantizeLinear (not float weights with a Q/DQ
pair), so both files are about a quarter of the FP32 one; TensorRT folds that pattern as well.
The calibration ranges are cached as JSON next to the model, keyed by a hash of the model, the
calibration image list and the method, so a re-export with the same images skips calibration.
"""

# onnxruntime is imported inside the functions that use it (lazy on purpose): it is an extra (`cpu` or `gpu`);
# export_run checks for it before any work and names the extra in one line (import_onnxruntime).
from __future__ import annotations

import contextlib
import difflib
import hashlib
import io
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence, Union

import numpy as np
import onnx
from onnx import numpy_helper

from rdd_edge import formats as table
from rdd_edge.data.base import read_image
from rdd_edge.deploy.preprocess import preprocess
from rdd_edge.errors import ExportError
from rdd_edge.export.formats import CALIB_METHODS, resolve_calib_method
from rdd_edge.export.int8_budget import plan_int8
from rdd_edge.export.int8_calib import calibrate_methods
from rdd_edge.export.int8_placement import INPUT_ONLY_OPS, not_placed
from rdd_edge.export.int8_residual import constant_adds, keep_main_side_float, residual_adds
from rdd_edge.export.onnx_io import input_size, load_export_onnx, sha256_file, topo_sort
from rdd_edge.normalize import DEFAULT, Normalization, embed_mode, network_input
from rdd_edge.runs import atomic_path

log = logging.getLogger(__name__)

# A calibration item: an image file, or (id, loader) for images that have no file (synthetic data).
CalibItem = Union[str, Path, tuple[str, Callable[[], np.ndarray]]]

RECOMMENDED_CALIB = 300
CALIB_CHUNK = 4  # images whose activations ORT holds at once while calibrating (mbv2 at 512x1024: ~1 GB each)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def image_folder(folder: str | Path) -> list[Path]:
    """Every image file under ``folder`` (recursively, sorted) for ``--calib-data``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ExportError(f"--calib-data {folder}: not a folder; pass a folder of training images")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ExportError(f"--calib-data {folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    return files


def _item_id(item: CalibItem) -> str:
    return item[0] if isinstance(item, tuple) else str(Path(item).resolve())


def _load(item: CalibItem) -> np.ndarray:
    if isinstance(item, tuple):
        return item[1]()
    try:
        return read_image(item)
    except Exception as exc:  # DataError already names the file
        raise ExportError(f"calibration image {item}: {exc}") from None


class ImageFolderReader:
    """ONNX Runtime ``CalibrationDataReader``: one preprocessed image per ``get_next`` call.

    Images go through deploy's ``preprocess`` so calibration sees exactly what inference sees.
    ``calls`` counts the images handed out (tests use it to prove the cache skips calibration).
    """

    def __init__(self, items: Sequence[CalibItem], size: Sequence[int], normalization: Normalization = DEFAULT,
                 embedded: bool = False, input_name: str = "images") -> None:
        self.items, self.size, self.normalization = list(items), tuple(size), normalization
        self.embedded, self.input_name = embedded, input_name
        self.calls = 0
        self._it = iter(self.items)

    def get_next(self) -> dict | None:
        item = next(self._it, None)
        if item is None:
            return None
        self.calls += 1
        return {self.input_name: preprocess(_load(item), self.size, self.normalization, embedded=self.embedded)}

    def rewind(self) -> None:
        self._it = iter(self.items)

    def set_range(self, start_index: int, end_index: int) -> None:
        """Hand out only items[start:end] (ONNX Runtime calibrates chunk by chunk through this)."""
        self._it = iter(self.items[start_index:end_index])

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):  # noqa: ANN204
        return self

    def __next__(self) -> dict:
        r = self.get_next()
        if r is None:
            raise StopIteration
        return r


def select_calibration(items: Sequence[CalibItem], calib: int, min_images: int = 32,
                       warn: Callable[[str], None] = log.warning, source: str = "train split") -> list[CalibItem]:
    """The first ``calib`` items (evenly spread); too few is an error, fewer than 300 a warning."""
    if calib < min_images:
        raise ExportError(f"--calib {calib}: INT8 calibration needs at least {min_images} images; "
                          f"pass --calib {min_images} or more (300-500 recommended)")
    items = list(items)
    n = min(calib, len(items))
    if n < min_images:
        raise ExportError(f"--calib: INT8 calibration needs at least {min_images} images, found {len(items)} in the "
                          f"{source}; point --calib-data at a folder of at least {min_images} training images")
    if n < RECOMMENDED_CALIB:
        warn(f"INT8 calibration on {n} images (< {RECOMMENDED_CALIB} recommended): ranges may be noisy")
    idx = np.linspace(0, len(items) - 1, n).round().astype(int) if n < len(items) else np.arange(n)
    return [items[i] for i in idx]


def _method(name: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    return {"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile,
            "minmax": CalibrationMethod.MinMax}[resolve_calib_method(name)]


RESIDUAL_QDQ = True  # False: the TensorRT file's placement before issue 28 (Conv inputs only), for benchmarks/int8_residual.py
FUSION_QDQ = True  # False: no Q/DQ on pooling / Resize inputs (export.int8_placement), for benchmarks/int8_residual.py


def _trt_ops() -> list[str]:
    """The op types the TensorRT file quantizes (inputs only), per the placement switches above."""
    return ["Conv", *(["Add"] if RESIDUAL_QDQ else []), *(INPUT_ONLY_OPS if FUSION_QDQ else [])]


def _profiles() -> dict[str, dict]:
    """quantize_static keyword sets for the two flavours (see the module docstring for why)."""
    from onnxruntime.quantization import QuantFormat, QuantType

    common = dict(quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8)
    return {
        # TensorRT: Conv inputs and the residual input of each Add (export.int8_residual takes the pair off
        # the Add's Conv side and skips Adds with a constant); TensorRT fuses the rest around them
        # and (FUSION_QDQ) the input of average pooling and of a Resize feeding a Concat (export.int8_placement,
        # which names the nodes of those types left alone); outputs of all of them stay float
        "int8": dict(common, op_types_to_quantize=[*_trt_ops()], activation_type=QuantType.QInt8, extra_options={
            "ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
            "AddQDQPairToWeight": False, "DedicatedQDQPair": True,
            # ForceQuantizeNoInputCheck: ORT quantizes an AveragePool / Resize input only if it is quantized already
            "ForceQuantizeNoInputCheck": FUSION_QDQ,
            "OpTypesToExcludeOutputQuantization": ["Conv", "Add", *INPUT_ONLY_OPS], "CalibPercentile": 99.999}),
        # ONNX Runtime CPU: every op ORT has an integer kernel for (Add, Concat, Resize, pooling ...), so
        # activations stay uint8 between layers instead of round-tripping through float at each Conv:
        # MobileNetV2 at 360x480 on the 2-core VNNI CPU, 2.0x -> 2.7x the FP32 speed
        "int8-cpu": dict(common, op_types_to_quantize=None, activation_type=QuantType.QUInt8, reduce_range=False, extra_options={
            "ActivationSymmetric": False, "WeightSymmetric": True, "CalibPercentile": 99.999}),
    }


def _check_keep_float(names: Sequence[str], nodes: list[str], path: Path) -> list[str]:
    """``--keep-float`` names must be nodes of the graph (any op: Conv, Resize, ArgMax ...)."""
    for name in names:
        if name not in nodes:
            close = difflib.get_close_matches(name, nodes, n=1, cutoff=0.4)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ExportError(f"--keep-float {name}: no node of that name in {path.name}.{hint} "
                              f"Last nodes: {', '.join(nodes[-6:])}{' ...' if len(nodes) > 6 else ''}")
    return list(dict.fromkeys(names))


def cache_key(onnx_path: str | Path, items: Sequence[CalibItem], method: str) -> str:
    """Hash of the model bytes, the calibration image ids (in order) and the method."""
    h = hashlib.sha256()
    h.update(sha256_file(onnx_path).encode())
    h.update(resolve_calib_method(method).encode())
    for it in items:
        h.update(_item_id(it).encode() + b"\0")
    return h.hexdigest()[:16]


TRT_FLOATS = ("fp16", "fp32")
FP16_MIN_SCALE = 1e-7  # convert_float_to_float16's min_positive_val: smaller positive floats become it
QDQ_FP16_OPSET = 19  # QuantizeLinear/DequantizeLinear-19 accept float16 scales


def _float16_qdq(model: Any) -> Any:
    """A Q/DQ model with FP16 float math (see the module docstring); returns a new checked model."""

    from onnxruntime.transformers.float16 import convert_float_to_float16


    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits or node.input[1] not in inits:
            continue
        q = numpy_helper.to_array(inits[node.input[0]])
        if q.dtype != np.int8:
            continue
        scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
        # Scales below FP16_MIN_SCALE (weights all under ~1.3e-5 in a channel: a zero-initialised BatchNorm
        # gamma folded into the conv after little training) would underflow float16, or be raised to it by
        # the converter below without the weights knowing; raise them here and requantize the weights to match.
        scale16 = np.maximum(scale, FP16_MIN_SCALE).astype(np.float16).astype(np.float64)
        if np.any(scale < FP16_MIN_SCALE):
            inits[node.input[1]].CopyFrom(numpy_helper.from_array(
                scale16.astype(numpy_helper.to_array(inits[node.input[1]]).dtype), node.input[1]))
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        ratio = scale / scale16
        if ratio.ndim == 1 and q.ndim > 1:
            shape = [1] * q.ndim
            shape[axis % q.ndim] = -1
            ratio = ratio.reshape(shape)
        # the same real weights on the float16 grid: w = q * s = q' * s16
        q16 = np.clip(np.round(q.astype(np.float64) * ratio), -127, 127).astype(np.int8)
        inits[node.input[0]].CopyFrom(numpy_helper.from_array(q16, node.input[0]))
    for op in model.opset_import:
        if op.domain in ("", "ai.onnx") and op.version < QDQ_FP16_OPSET:
            op.version = QDQ_FP16_OPSET  # 18 -> 19 only widened types / added attributes of the ops used here
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("onnxruntime.transformers.float16").setLevel(logging.ERROR)
        half = topo_sort(convert_float_to_float16(model, keep_io_types=True, min_positive_val=FP16_MIN_SCALE))
    onnx.checker.check_model(half, full_check=True)
    return half


def _quantize(prep: Path, out: Path, flavour: str, method: Any, cache: Path, reader: Any, exclude: Sequence[str],
              trt_float: str = "fp32") -> None:
    """One ``quantize_static`` call, written atomically; ranges come from (or go to) ``cache``.
    The TensorRT flavour gets FP16 float math when ``trt_float == "fp16"``."""

    from onnxruntime.quantization import quantize_static


    kw = _profiles()[flavour]
    adds: dict[str, int | None] = {}
    if flavour == "int8" and RESIDUAL_QDQ:  # Q/DQ on the residual input of each Add only (export.int8_residual)
        fp32 = onnx.load(str(prep))
        adds = residual_adds(fp32)
        exclude = [*exclude, *constant_adds(fp32)]
    if flavour == "int8" and FUSION_QDQ:  # pooling / Resize nodes the placement leaves in float (export.int8_placement)
        exclude = [*exclude, *not_placed(onnx.load(str(prep)))]
    if hasattr(reader, "set_range") and len(reader) > CALIB_CHUNK:
        # ORT keeps every calibration image's activations until it histograms them: feed it chunks
        # (merged histograms), so memory is bounded by CALIB_CHUNK images, not by --calib
        n = len(reader)
        kw["extra_options"] = {**kw["extra_options"], "CalibStridedMinMax": max(d for d in range(1, CALIB_CHUNK + 1) if n % d == 0)}
    with atomic_path(out, suffix=".onnx.tmp") as tmp, contextlib.redirect_stdout(io.StringIO()):
        quantize_static(str(prep), str(tmp), calibration_data_reader=reader, calibrate_method=method,
                        nodes_to_exclude=list(exclude), calibration_cache_path=str(cache), **kw)
        if flavour == "int8":
            qmodel = onnx.load(str(tmp))
            keep_main_side_float(qmodel, adds)
            onnx.save(_float16_qdq(qmodel) if trt_float == "fp16" else qmodel, str(tmp))
        os.chmod(tmp, 0o644)


def _torch_inputs(embedded: bool, normalization: Normalization) -> Callable[[np.ndarray], np.ndarray] | None:
    """What the torch model takes for a graph input: the same batch, or (``--embed-preprocess``) normalised."""
    mode = embed_mode(embedded)
    return (lambda batch: network_input(batch, normalization, mode)) if mode else None


def cache_path(out_dir: Path, onnx_path: Path, items: Sequence[CalibItem], method: str) -> Path:
    """The calibration cache of one method: ``model.int8.calib-<method>-<key>.json``."""
    meth = resolve_calib_method(method)
    return Path(out_dir) / f"model.int8.calib-{meth}-{cache_key(onnx_path, items, meth)}.json"


def export_int8(
    onnx_path: str | Path,
    out_dir: str | Path,
    items: Sequence[CalibItem],
    *,
    size: Sequence[int] | None = None,
    normalization: Normalization = DEFAULT,
    method: str = "percentile",
    keep_float: Sequence[str] = (),
    budget: float | None = None,
    report: bool = False,
    scorer: Any = None,
    max_float: int | None = None,
    loo: int | None = None,
    reader_factory: Callable[..., Any] | None = None,
    trt_float: str = "fp16",
    say: Callable[[str], None] | None = None,
    measure_latency: bool = True,
    torch_model: Any = None,
) -> dict:
    """Calibrate once, write ``model.int8.onnx`` and ``model.int8-cpu.onnx`` into ``out_dir``.

    ``items`` are the calibration images (already selected, see :func:`select_calibration`); every
    other option is keyword-only (there are many, several of one type: a position would mix them up).
    ``size``: the input HxW (default: the ONNX file's); ``normalization``: the images' preprocessing;
    ``method``: the calibration method (``--calib-method``).
    ``keep_float``: nodes the user keeps in float in both files (``--keep-float``).
    ``budget`` (mIoU points on the check images, e.g. 1.0) or ``report``: measure what each layer
    costs and, with a budget, keep the fewest layers in float (per file) until both files lose at
    most ``budget`` points against FP32, after trying every calibration method (``export.int8_budget``);
    both need ``scorer`` (an ``export.scoring.CheckScorer`` that has scored the FP32 model or will
    score ``onnx_path`` first). ``max_float``: the most layers a budget may keep in float (default
    10% of them, at least 2); ``loo``: how many of the noisiest layers are measured leave-one-out
    (default: as many as ``max_float``; negative: all). ``torch_model``: the torch model ``onnx_path`` was
    exported from; with it the estimate that picks those layers weighs each layer's noise by the
    loss gradient (``export.int8_sensitivity``), without it by the layer's own signal.
    ``trt_float``: float math of the TensorRT file ``model.int8.onnx``: ``fp16`` (default, what a
    strongly typed INT8 engine should run between its INT8 layers) or ``fp32``; the CPU flavour is
    unaffected.
    Returns a dict for the manifest: files, calibration info, nodes kept in float (per file),
    ``trt_float`` and, with a budget or report, ``plan`` (the sensitivity report).
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process


    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    model = load_export_onnx(onnx_path, "FP32 ONNX model (input of --int8)")
    recorded = {p.key: p.value for p in model.metadata_props}.get("rdd_edge.embedded_preprocess")  # export's metadata
    embedded = embed_mode(recorded) or ("uint8" if model.graph.input[0].type.tensor_type.elem_type == 2 else "")
    size = tuple(size) if size is not None else input_size(model)
    if not items:
        raise ExportError("--int8: no calibration images; pass --calib-data with a folder of training images")
    planned = budget is not None or report
    if planned and scorer is None:
        raise ExportError("--int8-budget / --int8-report need labelled val images to score on; the data set has none")
    if trt_float not in TRT_FLOATS:
        raise ExportError(f"--int8-float {trt_float!r}: expected one of {', '.join(TRT_FLOATS)}")
    meth = resolve_calib_method(method)
    methods = list(dict.fromkeys([meth, *CALIB_METHODS])) if budget is not None else [meth]
    caches = {m: cache_path(out_dir, onnx_path, items, m) for m in methods}
    cache, key = caches[meth], cache_key(onnx_path, items, meth)
    for stale in out_dir.glob("model.int8.calib-*.json"):
        if stale not in caches.values():
            stale.unlink(missing_ok=True)
    cache_hit = all(c.is_file() for c in caches.values())
    make_reader = reader_factory or ImageFolderReader
    reader = make_reader(items, size, normalization, embedded)
    files = {k: out_dir / table.BY_KEY[k].file for k in ("int8", "int8-cpu")}
    t0 = time.perf_counter()
    plan = None
    keep_by_file = {}
    with tempfile.TemporaryDirectory(prefix="rdd-int8-") as tmpdir:
        prep = Path(tmpdir) / "prep.onnx"
        try:
            quant_pre_process(str(onnx_path), str(prep), skip_symbolic_shape=False)
        except Exception as exc:
            raise ExportError(f"{onnx_path}: quantization pre-processing failed ({type(exc).__name__}: {str(exc)[:300]})") from None

        graph = onnx.load(str(prep)).graph
        keep = _check_keep_float(keep_float, [n.name for n in graph.node], onnx_path)
        calib_s = None
        try:
            t = time.perf_counter()
            missing = {m: c for m, c in caches.items() if not c.is_file()}
            if len(missing) > 1 or (missing and planned):
                # one pass over the images fills every missing method's cache (ORT's own collectors)

                calibrate_methods(prep, reader, missing, chunk=CALIB_CHUNK)
                calib_s = time.perf_counter() - t
            if planned:
                if not scorer.has_reference:
                    scorer(onnx_path)
                plan = plan_int8(prep, onnx_path, files, caches, meth, methods, scorer, keep, trt_float, budget,
                                 max_float, loo, say or (lambda m: None), measure_latency=measure_latency,
                                 model=torch_model, torch_inputs=_torch_inputs(embedded, normalization))
                meth = plan["calibration"]["chosen"]
                cache = caches[meth]
                for k in files:
                    keep_by_file[k] = list(dict.fromkeys([*keep, *plan["flavours"][k]["final"]["excluded_nodes"]]))
            else:
                # the one calibration: the first call fills the cache, the second reads it; the CPU
                # flavour goes first because it quantizes the most tensors (a superset of Conv inputs)
                for flavour in ("int8-cpu", "int8"):
                    t = time.perf_counter()
                    _quantize(prep, files[flavour], flavour, _method(meth), cache, reader, keep, trt_float)
                    if calib_s is None and not cache_hit:
                        calib_s = time.perf_counter() - t
                    keep_by_file[flavour] = list(keep)
        except Exception as exc:
            for f in files.values():  # no half-made INT8 file stays behind (a budget not met, a failed quantization)
                f.unlink(missing_ok=True)
            if isinstance(exc, ExportError):
                raise
            raise ExportError(f"{onnx_path}: INT8 quantization failed ({type(exc).__name__}: {str(exc)[:300]})") from None
    calibration: dict[str, Any] = {"method": meth, "images": len(items), "cache": cache.name,
                                   "cache_key": cache_key(onnx_path, items, meth) if plan else key,
                                   "cache_hit": cache_hit, "reader_calls": getattr(reader, "calls", None),
                                   "seconds": round(calib_s, 3) if calib_s is not None else 0.0}
    info: dict[str, Any] = {
        "files": {k: v.name for k, v in files.items()},
        "calibration": calibration,
        "keep_float": keep_by_file,
        "trt_float": trt_float,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if plan is not None:
        calibration["tried"] = plan["calibration"]["tried"]
        info["plan"] = plan
    return info
