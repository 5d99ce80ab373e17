"""``rdd-edge bundle --triton``: a Triton Inference Server model repository for an rdd-edge export.

    DIR/triton/                the repository Triton serves as it is:
      <name>/config.pbtxt      the FP32 ONNX file on the onnxruntime backend, TensorRT as its GPU
      <name>/1/model.onnx      execution accelerator (FP16), dynamic batching
    DIR/triton-plan/           a second repository, complete once its plan is built:
      <name>_trt/config.pbtxt  the same model as a TensorRT plan (tensorrt backend); 1/model.plan is
      <name>_trt/README.txt    built on the serving machine with the TensorRT of its Triton release
                               (a plan runs only with the TensorRT version and GPU that built it);
                               apart, so that the first repository loads before it exists

Field names follow Triton's ``model_config.proto`` (triton-inference-server/common, protobuf/
model_config.proto: ModelConfig name, backend, max_batch_size, input/output name, data_type, dims,
dynamic_batching, instance_group, optimization.execution_accelerators.gpu_execution_accelerator with
name "tensorrt" and parameters precision_mode / max_workspace_size_bytes, as the onnxruntime_backend
README documents them). With ``max_batch_size`` > 0, ``dims`` leave the batch dimension out (Triton's
model configuration guide). Not run here: no Triton server on the machines this was written on.
Torch-free.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

from rdd_edge.deploy.deepstream import safe_name
from rdd_edge.deploy.engine_plan import DEFAULT_MAX_BATCH
from rdd_edge.deploy.onnx_graph import graph_io, load_export_onnx
from rdd_edge.errors import ConfigError
from rdd_edge.runs import atomic_path, atomic_write_text

FOLDER = "triton"
PLAN_FOLDER = "triton-plan"
# numpy dtype name (graph_io) -> model_config.proto DataType
DATA_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "uint8": "TYPE_UINT8", "int8": "TYPE_INT8",
              "int32": "TYPE_INT32", "int64": "TYPE_INT64", "bool": "TYPE_BOOL"}
WORKSPACE_BYTES = 1 << 30


def max_batch(manifest: dict[str, Any]) -> int:
    """The export's batch range: the largest ``max_batch`` its TensorRT engines were built for, else
    ``rdd-edge export``'s default ``--max-batch``."""
    found = [a.get("max_batch") for a in (manifest.get("artifacts") or {}).values() if isinstance(a, dict)]
    sizes = [int(b) for b in found if isinstance(b, int) and not isinstance(b, bool) and b > 0]
    return max(sizes) if sizes else DEFAULT_MAX_BATCH


def _tensor(row: dict[str, Any], batched: bool, what: str) -> str:
    dtype = DATA_TYPES.get(str(row.get("dtype")))
    if dtype is None:
        raise ConfigError(f"--triton: {what} {row['name']!r} has type {row.get('dtype')}, which Triton's config has no name for here")
    shape = list(row["shape"])[1:] if batched else list(row["shape"])
    dims = ", ".join(str(d) if isinstance(d, int) and d > 0 else "-1" for d in shape)  # -1: a dynamic dimension
    return f'  {{\n    name: "{row["name"]}"\n    data_type: {dtype}\n    dims: [ {dims} ]\n  }}'


def model_config(name: str, io: dict[str, Any], batch: int, plan: bool = False) -> str:
    """config.pbtxt text (protobuf text format of ``inference.ModelConfig``)."""
    first = io["inputs"][0]["shape"][0]
    batched = not (isinstance(first, int) and first > 0)  # a symbolic batch dimension: Triton batches
    lines = [f'name: "{name}"', f'backend: "{"tensorrt" if plan else "onnxruntime"}"',
             f"max_batch_size: {batch if batched else 0}"]
    lines.append("input [\n" + ",\n".join(_tensor(r, batched, "input") for r in io["inputs"]) + "\n]")
    lines.append("output [\n" + ",\n".join(_tensor(r, batched, "output") for r in io["outputs"]) + "\n]")
    if batched:
        lines.append("dynamic_batching {\n  max_queue_delay_microseconds: 100\n}")
    lines.append("instance_group [\n  {\n    kind: KIND_GPU\n    count: 1\n  }\n]")
    if plan:
        lines.append('default_model_filename: "model.plan"')
    else:
        lines.append(
            "optimization {\n  execution_accelerators {\n    gpu_execution_accelerator: [\n      {\n"
            '        name: "tensorrt"\n'
            '        parameters { key: "precision_mode" value: "FP16" }\n'
            f'        parameters {{ key: "max_workspace_size_bytes" value: "{WORKSPACE_BYTES}" }}\n'
            "      }\n    ]\n  }\n}")
    return "\n".join(lines) + "\n"


def plan_readme(name: str, io: dict[str, Any], batch: int) -> str:
    """How to make ``<name>_trt/1/model.plan`` on the serving machine (trtexec, the same shapes)."""
    shape = io["inputs"][0]["shape"]
    chw = "x".join(str(d) for d in shape[1:])
    inp = io["inputs"][0]["name"]
    return (f"Build 1/model.plan in this folder with the trtexec of the TensorRT that your Triton release ships (a plan runs only\n"
            f"with the TensorRT version and GPU that built it), e.g. inside the tritonserver container:\n\n"
            f"  trtexec --onnx=../../{FOLDER}/{name}/1/model.onnx --saveEngine=1/model.plan --fp16 \\\n"
            f"    --minShapes={inp}:1x{chw} --optShapes={inp}:1x{chw} --maxShapes={inp}:{batch}x{chw}\n\n"
            "then serve both repositories: tritonserver --model-repository=triton --model-repository=triton-plan\n"
            "(run from the bundle folder)\n")


def write_triton(export_dir: Path, manifest: dict[str, Any], dst: Path, say: Callable[[str], None] = lambda _: None) -> list[Path]:
    """Write the model repositories ``dst`` (DIR/triton) and DIR/triton-plan beside it from the export's
    FP32 graph; return the files written."""
    arts = manifest.get("artifacts") or {}
    src = export_dir / str((arts.get("onnx") or {}).get("file") or "model.onnx")
    io = graph_io(load_export_onnx(src, "FP32 ONNX model (for --triton)"))
    name = safe_name(manifest.get("model_name"), "segmenter")
    batch = max_batch(manifest)
    (dst / name / "1").mkdir(parents=True, exist_ok=True)
    with atomic_path(dst / name / "1" / "model.onnx") as tmp:
        shutil.copyfile(src, tmp)
    files = [dst / name / "1" / "model.onnx",
             atomic_write_text(dst / name / "config.pbtxt", model_config(name, io, batch))]
    plan = dst.parent / PLAN_FOLDER / f"{name}_trt"
    (plan / "1").mkdir(parents=True, exist_ok=True)
    files += [atomic_write_text(plan / "config.pbtxt", model_config(f"{name}_trt", io, batch, plan=True)),
              atomic_write_text(plan / "README.txt", plan_readme(name, io, batch))]
    say(f"triton: {dst.name}/{name} (onnxruntime + TensorRT FP16, max_batch_size {batch}); {PLAN_FOLDER}/{name}_trt "
        "(tensorrt backend: build its model.plan on the server, README.txt there)")
    return files
