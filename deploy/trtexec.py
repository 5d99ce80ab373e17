"""The ``trtexec`` command line equivalent to one engine build, from its sidecar: timings people can reproduce.

NVIDIA's forums and TensorRT's issue triage ask first for the ``trtexec`` command and its "GPU Compute
Time". :func:`build_command` turns what :func:`deploy.engine_build.build_engine` recorded (the sidecar:
source file, input, profile, workspace, typing, builder flags, DLA core, timing cache, TensorRT
release) into that command; :func:`load_command` times the engine as built. Pure: no TensorRT here.

Flags, as trtexec's own help text documents them (``samples/common/sampleOptions.cpp`` at NVIDIA/TensorRT
tags v10.3.0, release/10.13 and v11.1; the "trtexec" section of TensorRT's "Command-Line Programs" page,
https://docs.nvidia.com/deeplearning/tensorrt/latest/reference/command-line-programs.html):

- ``--onnx=<file>``, ``--saveEngine=<file>``, ``--loadEngine=<file>``.
- ``--minShapes/--optShapes/--maxShapes=name:NxCxHxW``: "All three of min, opt and max shapes must be
  supplied"; given only when the graph's input has a dynamic dimension, since trtexec refuses shapes for a
  static model ("Static model does not take explicit shapes", sampleEngines.cpp). ``--shapes`` (load only):
  the inference shape; a build line's inference defaults to the opt shapes (sampleOptions.cpp).
- ``--memPoolSize=workspace:<size>`` with base-2 suffixes ``B``/``K``/``M``/``G`` (MiB without one).
- ``--stronglyTyped`` on 10.x ("Create a strongly typed network"; precision flags are not allowed with
  it, README "Example 6"); 11.x: "[Deprecated] Strongly typed network is now enabled by default. This
  flag is a no-op", and it has no ``--fp16`` / ``--int8`` at all: nothing is given.
- ``--fp16`` / ``--int8``: only for the weakly typed DLA builds of TensorRT 10.0-10.7
  (:func:`deploy.engine_plan.dla_recipe`), as the README's DLA examples write them.
- ``--useDLACore=N`` and ``--allowGPUFallback`` (the builder always sets GPU fallback on DLA builds).
- ``--timingCacheFile=<file>`` ("Save/load the serialized global timing cache") when a cache was used.
- ``--profilingVerbosity=detailed``: the builder sets ``ProfilingVerbosity.DETAILED``.

Not given because the builder leaves TensorRT's default, which trtexec shares: builder optimization
level (``--builderOptimizationLevel``, default 3), TF32 (on), I/O formats (the network's, linear), the CUDA
device (0). The line writes ``<engine stem>.trtexec.engine`` beside the export's files, never the engine
the manifest seals (``rdd-edge check`` refuses a model file the manifest does not list: delete it after).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any, Mapping, Sequence

from rdd_edge.errors import ExportError

from rdd_edge.deploy.engine_meta import parse_trt_version

# what each builder flag the builder may set (deploy.engine_plan.dla_recipe, GPU fallback) is in trtexec
BUILDER_FLAGS = {"FP16": "--fp16", "INT8": "--int8", "GPU_FALLBACK": "--allowGPUFallback"}

_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.\-/]+")


def dims_text(shape: Sequence[Any]) -> str:
    """(1, 3, 512, 1024) -> ``1x3x512x1024`` (trtexec's shape spec)."""
    return "x".join(str(int(v)) for v in shape)


def shape_spec(name: str, shape: Sequence[Any]) -> str:
    """``name:1x3x512x1024``; a name with ``:`` or ``,`` in single quotes, as trtexec's help says
    ("Input names can be wrapped with escaped single quotes (ex: 'Input:0')")."""
    quoted = name if _PLAIN_NAME.fullmatch(name) else f"'{name}'"
    return f"{quoted}:{dims_text(shape)}"


def workspace_size(workspace_gb: float) -> str:
    """The workspace the builder set (``int(GB * 2**30)`` bytes) in trtexec's units: whole MiB with ``M``,
    else the exact bytes with ``B``."""
    nbytes = int(float(workspace_gb) * (1 << 30))
    return f"{nbytes >> 20}M" if nbytes % (1 << 20) == 0 else f"{nbytes}B"


def _input(meta: Mapping[str, Any]) -> tuple[str, bool]:
    """The image input's name and whether the graph gives it a dynamic dimension (a name or <= 0)."""
    inputs = meta.get("inputs") or []
    if len(inputs) != 1 or not isinstance(inputs[0], dict) or not inputs[0].get("name"):
        raise ExportError(f"engine sidecar: expected one named image input, found {inputs!r}")
    shape = inputs[0].get("shape") or []
    dynamic = not shape or any(not isinstance(d, int) or d <= 0 for d in shape)
    return str(inputs[0]["name"]), dynamic


def trtexec_engine_name(engine_name: str) -> str:
    """``model.fp16.engine`` -> ``model.fp16.trtexec.engine``: trtexec never overwrites the sealed engine."""
    p = Path(engine_name)
    return f"{p.stem}.trtexec{p.suffix or '.engine'}"


def build_args(meta: Mapping[str, Any], engine_name: str) -> list[str]:
    """The argument list (``trtexec`` first) of the trtexec build equivalent to the build ``meta`` records."""
    name, dynamic = _input(meta)
    args = ["trtexec", f"--onnx={meta['source_onnx']}", f"--saveEngine={trtexec_engine_name(engine_name)}"]
    if dynamic:
        prof = meta["profile"]
        args += [f"--{k}Shapes={shape_spec(name, prof[k])}" for k in ("min", "opt", "max")]
    args.append(f"--memPoolSize=workspace:{workspace_size(meta['workspace_gb'])}")
    major = parse_trt_version(meta.get("tensorrt"))[:1] or (10,)
    if meta.get("strongly_typed", True):
        if major[0] < 11:
            args.append("--stronglyTyped")  # 11.x: always strongly typed, the flag is a deprecated no-op
    flags = list(meta.get("builder_flags") or [])
    unknown = [f for f in flags if f not in BUILDER_FLAGS]
    if unknown:
        raise ExportError(f"engine sidecar: builder flags {unknown} have no trtexec equivalent here")
    args += [BUILDER_FLAGS[f] for f in flags if f != "GPU_FALLBACK"]  # precision flags (weakly typed DLA only)
    if meta.get("dla_core") is not None:
        args.append(f"--useDLACore={int(meta['dla_core'])}")
    if "GPU_FALLBACK" in flags:
        args.append(BUILDER_FLAGS["GPU_FALLBACK"])
    cache = meta.get("timing_cache") or {}
    if isinstance(cache, dict) and cache.get("file"):
        args.append(f"--timingCacheFile={cache['file']}")
    args.append("--profilingVerbosity=detailed")
    return args


def load_args(meta: Mapping[str, Any], engine_name: str) -> list[str]:
    """``trtexec --loadEngine=<engine>``: times the engine as built (its GPU Compute Time), at the
    profile's opt shape when the input is dynamic, on the DLA core it was built for."""
    name, dynamic = _input(meta)
    args = ["trtexec", f"--loadEngine={engine_name}"]
    if dynamic:
        args.append(f"--shapes={shape_spec(name, meta['profile']['opt'])}")
    if meta.get("dla_core") is not None:
        args.append(f"--useDLACore={int(meta['dla_core'])}")
    return args


def build_command(meta: Mapping[str, Any], engine_name: str) -> str:
    """One shell line (quoted with :func:`shlex.join`), run in the export folder."""
    return shlex.join(build_args(meta, engine_name))


def load_command(meta: Mapping[str, Any], engine_name: str) -> str:
    return shlex.join(load_args(meta, engine_name))


def commands(meta: Mapping[str, Any], engine_name: str) -> dict[str, str]:
    """What the sidecar and the manifest store: ``{"trtexec": build line, "trtexec_load": timing line}``."""
    return {"trtexec": build_command(meta, engine_name), "trtexec_load": load_command(meta, engine_name)}
