"""``export_run``: one checkpoint -> every requested artifact in ``<run>/export/`` + ``manifest.json``.

Order: FP32 ONNX (+ parity with torch), FP16 (+ agreement), INT8 x2 (one calibration), engines.
Each step logs its time and file size; the manifest is rewritten after every artifact, so a later
failure (e.g. no TensorRT) leaves the finished artifacts usable and listed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from rdd_edge.data.base import IMAGENET_MEAN, IMAGENET_STD
from rdd_edge.errors import ConfigError, ExportError, RddError

CHECKPOINT_NAMES = ("best.pt", "last.pt")


def find_checkpoint(source: str | Path | None, runs_root: str | Path = "runs") -> Path:
    """A checkpoint file, a run folder (``best.pt`` preferred) or, if None, the latest distill run."""
    from rdd_edge.runs import resolve_run

    p = resolve_run(source, "distill", "checkpoint to export", root=runs_root)
    if p.is_file():
        return p
    for name in CHECKPOINT_NAMES:
        if (p / name).is_file():
            return p / name
    raise ConfigError(f"{p}: no {' or '.join(CHECKPOINT_NAMES)} in this run folder; pass a checkpoint file or train first")


def _log(console: Any, msg: str) -> None:
    if console is not None:
        console.print(msg)


def _step(console: Any, what: str, fn: Callable[[], Any]) -> tuple[Any, float]:
    t = time.perf_counter()
    res = fn()
    dt = time.perf_counter() - t
    size = f", {Path(res).stat().st_size / 1e6:.2f} MB" if isinstance(res, Path) and res.is_file() else ""
    _log(console, f"[green]✓[/] {what} ({dt:.1f} s{size})")
    return res, dt


def _open_split(dataset: dict, cfg: dict, split: str, n: int, size: tuple[int, int], data_root: str | Path | None) -> Any:
    from rdd_edge.data import get_dataset

    name = dataset.get("name") or cfg.get("dataset") or "synthetic"
    root = data_root if data_root is not None else cfg.get("data")
    if name == "synthetic" and root is None:
        seed = {"train": 0, "val": 1}.get(split, 2)
        return get_dataset("synthetic", split=split, n=n, size=size, seed=int(cfg.get("seed", 0)) * 7 + seed + 1000)
    return get_dataset(name, root, split=split)


def _check_set(ds: Any, n: int) -> tuple[list[np.ndarray], np.ndarray | None]:
    """The first ``n`` val images (evenly spread) and their labels."""
    if len(ds) == 0:
        raise ExportError("the val split is empty: parity and accuracy checks need a few validation images")
    idx = np.linspace(0, len(ds) - 1, min(n, len(ds))).round().astype(int)
    pairs = [ds[int(i)] for i in idx]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _calib_items(ds: Any) -> list:
    items = []
    for i in range(len(ds)):
        path = ds.image_path(i) if hasattr(ds, "image_path") else None
        items.append(path if path is not None else (f"{getattr(ds, 'info', None) and ds.info.name}:{ds.split}:{ds.name(i)}",
                                                    (lambda i=i: ds[i][0])))
    return items


def export_run(
    source: str | Path | None = None,
    out_dir: str | Path | None = None,
    size: Sequence[int] | str | None = None,
    output: str = "labels",
    embed_preprocess: bool = False,
    dynamic: bool = False,
    fp16: bool = False,
    int8: bool = False,
    trt: str = "none",
    calib: int = 300,
    calib_method: str = "percentile",
    calib_data: str | Path | None = None,
    keep_float: Sequence[str] = (),
    int8_max_drop: float | None = None,
    opset: int = 18,
    check_images: int = 8,
    min_calib: int = 32,
    data_root: str | Path | None = None,
    workspace_gb: float = 2.0,
    runs_root: str | Path = "runs",
    console: Any = None,
) -> dict:
    """Export a checkpoint (or run folder; default the latest distill run) and return the manifest."""
    from models import model_from_checkpoint

    from export import formats
    from export.manifest import add_artifact, new_manifest, save_manifest
    from export.onnx_export import check_size, export_onnx
    from export.onnx_io import graph_io, load_export_onnx, sha256_file
    from export.parity import MIN_FP16_AGREEMENT, check_parity, compare, make_batch, run_onnx
    from deploy.postprocess import resize_labels

    # -- settle every option before any work
    output = formats.resolve_output(output)
    trt = formats.resolve_trt(trt)
    calib_method = formats.resolve_calib_method(calib_method)
    wanted = [f.key for f in formats.requested_formats(fp16, int8, trt)]
    if int8_max_drop is not None and not 0 <= int8_max_drop < 100:
        raise ConfigError(f"--int8-max-drop {int8_max_drop}: mIoU points between 0 and 100, e.g. 1.0 (as rdd-edge check --max-drop)")
    if (keep_float or int8_max_drop is not None or calib_data) and "int8" not in wanted:
        raise ConfigError("--keep-float / --int8-max-drop / --calib-data only apply with --int8 (or --trt int8)")
    ckpt_path = find_checkpoint(source, runs_root)
    model, ckpt = model_from_checkpoint(ckpt_path, aux=False)
    dataset = dict(ckpt.get("dataset") or {})
    cfg = dict(ckpt.get("config") or {})
    if not dataset.get("classes"):
        raise ExportError(f"{ckpt_path}: checkpoint has no dataset description (classes, mean/std); re-save it with rdd-edge")
    size = formats.parse_size(size) or tuple(dataset.get("eval_size") or (360, 480))
    size = check_size(size, model)
    mean, std = dataset.get("mean", IMAGENET_MEAN), dataset.get("std", IMAGENET_STD)
    out = Path(out_dir) if out_dir is not None else ckpt_path.parent / "export"
    out.mkdir(parents=True, exist_ok=True)
    _log(console, f"exporting [bold]{ckpt['model_name']}[/] from {ckpt_path} at {size[0]}x{size[1]} -> {out}")

    # -- check images (val split) shared by every accuracy check
    val = _open_split(dataset, cfg, "val", check_images, size, data_root)
    imgs, lbls = _check_set(val, check_images)
    labels = np.stack([resize_labels(lb, size) for lb in lbls])
    batch = make_batch(imgs, size, mean, std, embed_preprocess)

    # -- calibration images, settled before any file is written (too few is an error)
    items: list = []
    if "int8" in wanted:
        from export.int8 import image_folder, select_calibration

        if calib_data is not None:
            pool, where = image_folder(calib_data), f"--calib-data {calib_data}"
        else:
            pool, where = _calib_items(_open_split(dataset, cfg, "train", max(calib, min_calib), size, data_root)), "train split"
        items = select_calibration(pool, calib, min_calib, warn=lambda m: _log(console, f"[yellow]warning:[/] {m}"), source=where)

    # -- FP32 ONNX + parity
    onnx_path = out / formats.BY_KEY["onnx"].file
    meta = {"rdd_edge.model_name": ckpt["model_name"], "rdd_edge.classes": ",".join(dataset["classes"]),
            "rdd_edge.mean": ",".join(map(str, mean)), "rdd_edge.std": ",".join(map(str, std)),
            "rdd_edge.embedded_preprocess": str(embed_preprocess).lower()}
    _step(console, f"ONNX opset {opset} -> {onnx_path.name}", lambda: export_onnx(
        model, onnx_path, size, output, embed_preprocess, dynamic, opset, mean, std, metadata=meta))
    try:
        parity = check_parity(model, onnx_path, batch, mean, std, embedded=embed_preprocess)
    except ExportError:
        onnx_path.unlink(missing_ok=True)
        raise
    _log(console, f"  parity vs torch: {parity['label_agreement']:.4%} labels agree"
         + (f", max |Δlogit| {parity['max_abs_logit_diff']:.2e}" if "max_abs_logit_diff" in parity else ""))
    manifest = new_manifest(ckpt["model_name"], dataset, size, output, embed_preprocess, dynamic, opset,
                            ckpt_path.resolve(), sha256_file(ckpt_path), graph_io(load_export_onnx(onnx_path)))
    fp32_out = run_onnx(onnx_path, batch)
    add_artifact(manifest, "onnx", onnx_path, "fp32", "onnxruntime", parity=parity, miou=_miou(fp32_out, labels, dataset))
    save_manifest(manifest, out)

    # -- FP16
    if "fp16" in wanted:
        from export.fp16 import export_fp16

        p = out / formats.BY_KEY["fp16"].file
        _step(console, f"FP16 -> {p.name}", lambda: export_fp16(onnx_path, p))
        agree = compare(fp32_out, run_onnx(p, batch))
        if agree["label_agreement"] < MIN_FP16_AGREEMENT:
            p.unlink(missing_ok=True)
            raise ExportError(f"{p}: FP16 labels agree with FP32 on only {agree['label_agreement']:.3%} of pixels "
                              f"(< {MIN_FP16_AGREEMENT:.1%}); keep the FP32 model")
        add_artifact(manifest, "fp16", p, "fp16", "onnxruntime", agreement=agree)
        save_manifest(manifest, out)

    # -- INT8: one calibration, two files
    if "int8" in wanted:
        from export.int8 import export_int8
        info, _ = _step(console, f"INT8 ({calib_method}, {len(items)} images) -> model.int8.onnx, model.int8-cpu.onnx",
                        lambda: export_int8(onnx_path, out, items, size, mean, std, calib_method, keep_float, None if int8_max_drop is None else int8_max_drop / 100,
                                            batch, labels, len(dataset["classes"]),
                                            warn=lambda m: _log(console, f"[yellow]warning:[/] {m}")))
        if info["calibration"]["cache_hit"]:
            _log(console, f"  calibration ranges reused from {info['calibration']['cache']}")
        for key in ("int8", "int8-cpu"):
            p = out / info["files"][key]
            agree = compare(fp32_out, run_onnx(p, batch))
            add_artifact(manifest, key, p, "int8", "onnxruntime", agreement=agree, miou=_miou(run_onnx(p, batch), labels, dataset),
                         calibration=info["calibration"], keep_float=info["keep_float"],
                         **({"max_drop": info["max_drop"]} if "max_drop" in info else {}))
        save_manifest(manifest, out)

    # -- TensorRT engines (optional dependency: a clear error after the ONNX files are safe)
    engines = formats.TRT_CHOICES[trt]
    if engines:
        from export.engine_plan import engine_source
        from export.tensorrt import build_engine

        cache = out / "timing.cache"
        for key in engines:
            src = engine_source(key, out)
            p = out / formats.BY_KEY[key].file
            _step(console, f"TensorRT {formats.BY_KEY[key].precision} -> {p.name}",
                  lambda: build_engine(src, p, workspace_gb=workspace_gb, timing_cache=cache, fp16_flag=(key == "engine-int8")))
            add_artifact(manifest, key, p, formats.BY_KEY[key].precision, "tensorrt", source=src.name, sidecar=p.name + ".json")
            save_manifest(manifest, out)
    manifest["export_dir"] = str(out)
    return manifest


def _miou(outputs: dict, labels: np.ndarray, dataset: dict) -> float | None:
    from export.parity import miou_of

    m = miou_of(outputs, labels, len(dataset["classes"]), dataset.get("ignore_index", 255))
    return None if m is None else round(m, 5)


__all__ = ["export_run", "find_checkpoint", "RddError"]
