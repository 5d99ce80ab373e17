"""``rdd-edge bundle --deepstream``: the files DeepStream's ``nvinfer`` takes for an rdd-edge export.

    DIR/deepstream/
      model.probs.onnx               the export's FP32 graph with one output, ``probs`` (N, C, H, W): a
                                     Softmax over the logits' class axis (argmax unchanged)
      config_infer_primary_<name>.txt  nvinfer's [property] group: semantic segmentation (network-type=2)
      labels.txt                     the class names, one a line
      pipeline.sh                    gst-launch-1.0: file -> nvstreammux -> nvinfer -> nvsegvisual -> display

Why a Softmax: nvinfer's segmentation parser (nvdsinfer_context_impl_output_parsing.cpp, DeepStream's
open sources) reads the *first* output layer as a float C x H x W score map and labels a pixel with the
class whose score is highest **and above segmentation-threshold**, starting from -1; raw logits below 0
would leave pixels unlabelled (-1), and the threshold cannot be negative (gstnvinfer_property_parser.cpp
refuses it). Probabilities are >= 1/C at the argmax, so threshold 0 labels every pixel as the export does.

The keys are those of ``gstnvinfer_property_parser.h`` (DeepStream SDK API reference,
https://docs.nvidia.com/metropolis/deepstream/dev-guide/sdk-api/gstnvinfer__property__parser_8h.html)
as the Gst-nvinfer page documents them
(https://docs.nvidia.com/metropolis/deepstream/dev-guide/text/DS_plugin_gst-nvinfer.html) and NVIDIA's
semantic segmentation sample uses them (deepstream_python_apps,
apps/deepstream-segmentation/dstest_segmentation_config_semantic.txt). Not run here: no DeepStream on
the machines this was written on. Torch-free (``onnx`` is a base dependency).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any, Callable

import onnx
from onnx import helper

from rdd_edge.deploy.onnx_graph import load_export_onnx, tensor_dims
from rdd_edge.errors import ConfigError
from rdd_edge.normalize import EMBED_MODES, recorded_normalization
from rdd_edge.runs import atomic_write_bytes, atomic_write_text

FOLDER = "deepstream"
PROBS_FILE = "model.probs.onnx"
PROBS = "probs"
COLOR_FORMAT = {"rgb": 0, "bgr": 1}  # model-color-format: 0 RGB, 1 BGR, 2 GRAY (Gst-nvinfer)
NETWORK_MODE = {"fp32": 0, "int8": 1, "fp16": 2}  # network-mode: 0 FP32, 1 INT8, 2 FP16 (Gst-nvinfer)
LOGITS_EXPORT = "rdd-edge export RUN --outputs logits --embed-preprocess float255"


def config_name(manifest: dict[str, Any]) -> str:
    """``config_infer_primary_<model>.txt``, the name DeepStream's samples give a primary GIE's config."""
    return f"config_infer_primary_{safe_name(manifest.get('model_name'))}.txt"


def safe_name(name: Any, default: str = "rdd_edge") -> str:
    """A file / model name of letters, digits, ``_`` and ``-`` only."""
    s = re.sub(r"[^A-Za-z0-9_-]+", "_", str(name or "")).strip("_")
    return s or default


def nvinfer_preprocess(manifest: dict[str, Any]) -> dict[str, str]:
    """net-scale-factor, offsets (when any) and model-color-format for the export's input, or a ConfigError.

    nvinfer computes ``y = net-scale-factor * (x - offsets[c])`` on 0..255 pixels (Gst-nvinfer): one
    scale for all channels. A graph with ``--embed-preprocess float255[-bgr]`` needs scale 1 and no
    offsets; a normalised-float graph fits only when its std is the same for the three channels."""
    inp = manifest.get("input") or {}
    mode = str(inp.get("embed") or ("uint8" if inp.get("embedded_preprocess") else ""))
    if mode == "uint8":
        raise ConfigError("--deepstream: the export's graph takes uint8 pixels and nvinfer feeds float; re-export with "
                          f"`{LOGITS_EXPORT}`")
    if mode:
        return {"net-scale-factor": "1.0", "model-color-format": str(COLOR_FORMAT[EMBED_MODES[mode][1]])}
    norm = recorded_normalization(manifest)
    if len(set(norm.std)) != 1:
        raise ConfigError(f"--deepstream: {norm.describe()}: nvinfer has one net-scale-factor for all channels, so this "
                          f"per-channel std cannot be expressed outside the graph; re-export with `{LOGITS_EXPORT}`")
    scale = norm.scale / norm.std[0]  # (x * s - m) / d = (s / d) * (x - m / s)
    offsets = ";".join(f"{m / norm.scale:.9g}" for m in norm.mean)  # per network channel, in model-color-format order
    return {"net-scale-factor": f"{scale:.9g}", "offsets": offsets, "model-color-format": str(COLOR_FORMAT[norm.order])}


def probs_graph(onnx_path: str | Path) -> Any:
    """The export's graph with a single output ``probs`` = Softmax(logits, axis=1); ConfigError without logits."""
    model = load_export_onnx(onnx_path, "FP32 ONNX model (for --deepstream)")
    outs = {o.name: o for o in model.graph.output}
    if "logits" not in outs:
        raise ConfigError(f"--deepstream: {Path(onnx_path).name} outputs only labels; nvinfer's segmentation parser needs "
                          f"per-class score maps: re-export with `{LOGITS_EXPORT}`")
    logits = outs["logits"]
    model.graph.node.append(helper.make_node("Softmax", ["logits"], [PROBS], name="rdd_edge_probs", axis=1))
    probs = helper.make_tensor_value_info(PROBS, logits.type.tensor_type.elem_type, tensor_dims(logits))
    del model.graph.output[:]
    model.graph.output.append(probs)
    keep = _needed_nodes(model.graph, PROBS)  # the labels branch (ArgMax) goes with its output
    nodes = [n for i, n in enumerate(model.graph.node) if i in keep]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.checker.check_model(model, full_check=True)
    return model


def _needed_nodes(graph: Any, output: str) -> set[int]:
    """Indices of the nodes ``output`` depends on."""
    nodes = list(graph.node)
    producer = {o: i for i, n in enumerate(nodes) for o in n.output}
    need: set[int] = set()
    todo = [output]
    while todo:
        i = producer.get(todo.pop())
        if i is not None and i not in need:
            need.add(i)
            todo.extend(nodes[i].input)
    return need


def nvinfer_config(manifest: dict[str, Any], model: Any, onnx_file: str, precision: str = "fp16", batch: int = 1,
                   gpu_id: int = 0) -> str:
    """The ``[property]`` group nvinfer reads, built from the manifest and the graph ``model`` (probs output)."""
    dims = tensor_dims(model.graph.input[0])
    out = model.graph.output[0]
    c, h, w = tensor_dims(out)[1], dims[2], dims[3]
    if not all(isinstance(v, int) and v > 0 for v in (c, h, w)):
        raise ConfigError(f"--deepstream: the graph's H, W or class count is not fixed ({dims}, {tensor_dims(out)}); "
                          "nvinfer's infer-dims needs a static size: re-export without --dynamic")
    engine = f"{onnx_file}_b{batch}_gpu{gpu_id}_{precision}.engine"  # the name nvinfer saves a built engine under
    pre = nvinfer_preprocess(manifest)
    keys: list[tuple[str, Any, str]] = [
        ("gpu-id", gpu_id, ""),
        ("net-scale-factor", pre["net-scale-factor"], "y = net-scale-factor * (x - offsets) on 0-255 pixels"),
        *([("offsets", pre["offsets"], "")] if "offsets" in pre else []),
        ("model-color-format", pre["model-color-format"], "0 RGB, 1 BGR"),
        ("onnx-file", onnx_file, ""),
        ("model-engine-file", engine, "built from onnx-file on the first run when missing"),
        ("labelfile-path", "labels.txt", ""),
        ("infer-dims", f"3;{h};{w}", "C;H;W of the input"),
        ("batch-size", batch, ""),
        ("network-mode", NETWORK_MODE[precision], "0 FP32, 1 INT8, 2 FP16"),
        ("network-type", 2, "2: segmentation"),
        ("output-blob-names", out.name, "Softmax over the logits' class axis"),
        ("num-detected-classes", c, ""),
        ("segmentation-threshold", "0.0", "probabilities: every pixel gets its argmax class"),
        ("segmentation-output-order", 0, "0 NCHW"),
        ("maintain-aspect-ratio", 0, "stretched to H x W, as rdd-edge's preprocessing"),
        ("scaling-filter", 1, "1 bilinear (nvbufsurftransform.h NvBufSurfTransform_Inter), as rdd-edge's preprocessing"),
        ("gie-unique-id", 1, ""),
        ("process-mode", 1, "1: primary (full frames)"),
        ("interval", 0, ""),
    ]
    lines = [f"# nvinfer config for {manifest.get('model_name')} ({manifest.get('dataset')}), written by rdd-edge bundle",
             "# keys: https://docs.nvidia.com/metropolis/deepstream/dev-guide/text/DS_plugin_gst-nvinfer.html",
             "[property]"]
    for key, value, note in keys:
        if note:
            lines.append(f"# {note}")
        lines.append(f"{key}={value}")
    return "\n".join(lines) + "\n"


def pipeline_script(config: str, size: tuple[int, int]) -> str:
    """gst-launch-1.0: a video file -> nvstreammux -> nvinfer -> nvsegvisual (class colours) -> a window."""
    h, w = size
    return f"""#!/usr/bin/env bash
# Segment a video with DeepStream and show the class colours (nvsegvisual), e.g.:
#   bash pipeline.sh /opt/nvidia/deepstream/deepstream/samples/streams/sample_720p.h264.mp4
# Written by rdd-edge bundle; not run where it was written (no DeepStream there). Elements: Gst-nvstreammux,
# Gst-nvinfer, Gst-nvsegvisual (DeepStream plugin guide). The first run builds the TensorRT engine (minutes).
set -euo pipefail
cd "$(dirname "$0")"
video=$(realpath "${{1:?usage: bash pipeline.sh VIDEO_FILE}}")
sink=nveglglessink
[ "$(uname -m)" = aarch64 ] && sink=nv3dsink  # Jetson
[ -z "${{DISPLAY:-}}" ] && sink=fakesink  # headless: runs the pipeline, shows nothing
gst-launch-1.0 uridecodebin uri="file://$video" ! m.sink_0 \\
  nvstreammux name=m batch-size=1 width=1280 height=720 ! \\
  nvinfer config-file-path={shlex.quote(config)} ! \\
  nvsegvisual width={w} height={h} ! nvvideoconvert ! $sink
"""


def write_deepstream(export_dir: Path, manifest: dict[str, Any], dst: Path, say: Callable[[str], None] = lambda _: None,
                     precision: str = "fp16") -> list[Path]:
    """Write ``dst`` (DIR/deepstream) from the export's FP32 graph; return the files written."""
    arts = manifest.get("artifacts") or {}
    src = export_dir / str((arts.get("onnx") or {}).get("file") or "model.onnx")
    nvinfer_preprocess(manifest)  # the input first: one line on what to re-export, before any file is written
    model = probs_graph(src)
    config = config_name(manifest)
    text = nvinfer_config(manifest, model, PROBS_FILE, precision)  # every check before the first file
    dst.mkdir(parents=True, exist_ok=True)
    files = [atomic_write_bytes(dst / PROBS_FILE, model.SerializeToString()),
             atomic_write_text(dst / config, text),
             atomic_write_text(dst / "labels.txt", "".join(f"{c}\n" for c in manifest.get("classes") or [])),
             atomic_write_text(dst / "pipeline.sh", pipeline_script(config, tuple(tensor_dims(model.graph.input[0])[2:])))]
    (dst / "pipeline.sh").chmod(0o755)
    say(f"deepstream: {dst.name}/{config} (nvinfer, network-type=2) on {PROBS_FILE} (Softmax of {src.name}'s logits), "
        "pipeline.sh")
    return files
