"""One builder per row group of the formats table: ``build_x(ctx) -> {key: artifact record}``.

A builder writes its file(s) into ``ctx.out`` and returns, per manifest key, the file path and
what it measured (parity, calibration ...). The export pipeline scores every ONNX artifact the
same way afterwards (label agreement with FP32, mIoU on the val images) and writes the manifest.

Each builder imports its own module inside its body (lazy on purpose): an export loads only the
requested formats' code, so ``--fp16`` never loads ONNX Runtime's quantizer and no engine build
loads without TensorRT.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from rdd_edge import formats as table
from rdd_edge.export.formats import ExportSpec


@dataclass
class BuildContext:
    """What every builder needs: the spec, the folder being written (a staging folder until the export
    succeeds) and where progress lines go. Engine builds need nothing more (``rdd-edge engine``, no torch)."""

    spec: ExportSpec
    out: Path
    log: Callable[[str], None]

    def path(self, key: str) -> Path:
        return self.out / table.BY_KEY[key].file


@dataclass
class ExportContext(BuildContext):
    """A build from the checkpoint: the model and the images every ONNX artifact is checked on."""

    model: Any  # the torch model (aux head dropped)
    ckpt: dict
    ckpt_path: Path
    size: tuple[int, int]
    normalization: Any  # rdd_edge.normalize.Normalization the checkpoint was trained with
    num_classes: int
    check_images: list  # uint8 RGB val images every artifact is scored on
    check_labels: list | None  # their labels at the model's input size (None: no data folder, nothing scored)
    parity_batch: np.ndarray  # the first few check images, preprocessed: torch-vs-ONNX parity, INT8 fitting
    calib_items: list = field(default_factory=list)
    metadata: dict = field(default_factory=dict)  # ONNX metadata_props of model.onnx
    scorer: Any = None  # export.scoring.CheckScorer: scores every ONNX artifact (FP32 first), set by export_run
    manifest_extra: dict = field(default_factory=dict)  # top-level manifest entries a builder adds (int8_sensitivity)


def build_onnx(ctx: ExportContext, keys: tuple[str, ...] = ()) -> dict[str, dict]:
    """``model.onnx`` (FP32) from the torch model, with torch-vs-ONNX Runtime parity."""
    from rdd_edge.export.onnx_export import export_onnx
    from rdd_edge.export.parity import check_parity

    s = ctx.spec
    p = export_onnx(ctx.model, ctx.path("onnx"), ctx.size, s.outputs, s.embed_preprocess, s.dynamic, s.opset,
                    ctx.normalization, metadata=ctx.metadata)
    parity = check_parity(ctx.model, p, ctx.parity_batch, ctx.normalization, embedded=s.embed_preprocess)
    ctx.log(f"  parity vs torch: {parity['label_agreement']:.4%} labels agree"
            + (f", max |Δlogit| {parity['max_abs_logit_diff']:.2e}" if "max_abs_logit_diff" in parity else ""))
    return {"onnx": {"path": p, "parity": parity}}


def build_fp16(ctx: ExportContext, keys: tuple[str, ...] = ()) -> dict[str, dict]:
    """``model.fp16.onnx``: FP16 weights and math, FP32 I/O."""
    from rdd_edge.export.fp16 import export_fp16

    return {"fp16": {"path": export_fp16(ctx.path("onnx"), ctx.path("fp16"))}}


def build_int8(ctx: ExportContext, keys: tuple[str, ...] = ()) -> dict[str, dict]:
    """``model.int8.onnx`` (TensorRT Q/DQ) and ``model.int8-cpu.onnx`` from one calibration; with
    ``--int8-budget`` / ``--int8-report`` also the sensitivity report (``int8-sensitivity.json`` and
    ``.png``, and the manifest's ``int8_sensitivity``)."""
    from rdd_edge.export.int8 import export_int8
    from rdd_edge.export.int8_budget import BudgetNotMet
    from rdd_edge.export.qad import command as qad_command

    s = ctx.spec
    planned = s.budget is not None or s.int8_report
    try:
        info = export_int8(ctx.path("onnx"), ctx.out, ctx.calib_items, size=ctx.size, normalization=ctx.normalization,
                           method=s.calib_method, keep_float=s.keep_float, budget=s.budget, report=s.int8_report,
                           scorer=ctx.scorer if planned else None, max_float=s.int8_max_float, loo=s.int8_loo,
                           trt_float=s.int8_float, say=ctx.log, torch_model=ctx.model if planned else None)
    except BudgetNotMet as exc:  # float islands are not enough: say so, and offer quantization-aware distillation
        run = ctx.ckpt_path.parent
        raise BudgetNotMet(f"{exc}; or fine-tune the quantized student against its teacher (QAD): rdd-edge export {run} "
                           f"--int8, then {qad_command(run, 200)} --max-drop {exc.budget:g}", exc.budget) from None
    if info["calibration"]["cache_hit"]:
        ctx.log(f"  calibration ranges reused from {info['calibration']['cache']}")
    out = {k: {"path": ctx.out / info["files"][k], "calibration": info["calibration"],
               "keep_float": info["keep_float"][k]} for k in ("int8", "int8-cpu")}
    out["int8"]["trt_float"] = info["trt_float"]  # float math of the TensorRT Q/DQ file (ORT's TensorRT EP reads it)
    plan = info.get("plan")
    if plan is not None:
        from rdd_edge.export.int8_report import budget_record, write_report

        paths = write_report(plan, ctx.out, model_name=ctx.ckpt.get("model_name"), size=ctx.size)
        for k in ("int8", "int8-cpu"):
            out[k]["int8_budget"] = budget_record(plan, k, paths)
        ctx.manifest_extra["int8_sensitivity"] = {**plan, "files": {k: p.name for k, p in paths.items()}}
    return out


def build_engines(ctx: BuildContext, keys: tuple[str, ...] = ("engine-fp16", "engine-int8")) -> dict[str, dict]:
    """TensorRT engines from the FP16 / Q/DQ ONNX files (strongly typed: precision comes from the file;
    DLA on TensorRT 10.x the 10.x way, see deploy.engine_plan.dla_recipe)."""
    from rdd_edge.deploy.engine_meta import precision_summary
    from rdd_edge.export.tensorrt import build_engine

    s = ctx.spec
    out = {}
    for key in keys:
        src, p = ctx.path(str(table.BY_KEY[key].source)), ctx.path(key)
        meta = build_engine(src, p, max_batch=s.max_batch, opt_batch=s.opt_batch, dynamic_hw=s.profile,
                            workspace_gb=s.workspace, timing_cache_dir=ctx.out, dla_core=s.dla_core,
                            allow_gpu_fallback=s.allow_gpu_fallback)
        ctx.log(f"  {p.name}: {precision_summary(meta)} (TensorRT {meta.get('tensorrt')}, {meta.get('gpu')})")
        ctx.log(f"  trtexec (in the export folder): {meta.get('trtexec')}")
        out[key] = {"path": p, "source": src.name, "sidecar": p.name + ".json",
                    **{k: meta.get(k) for k in ("precision_layers", "profile", "max_batch", "tensorrt", "gpu",
                                                "compute_capability", "dla_core", "dla_layers", "dla_estimate",
                                                "strongly_typed", "timing_cache", "trtexec", "trtexec_load")}}
    return out
