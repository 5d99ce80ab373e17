"""``rdd-edge qat RUN``: quantization-aware distillation (QAD) of an exported run's INT8 files.

When float islands cannot bring INT8 within a budget (or cost too much speed), the field fine-tunes the
quantized network against its FP32 teacher (NVIDIA Model Optimizer's guide "Quantization-Aware Training
and Distillation"). ``run_qad`` does it with what the run already has:

1. the export (``<run>/export``, made with ``--int8``): its FP32 graph, its calibration (the cache of the
   method it chose) and the float layers it kept per file (``--int8-only``: none);
2. with ``--equalize``, cross-layer equalization first (``export.qad_equalize``: exact Conv -> ReLU -> Conv
   rescaling that levels channel ranges one layer blew up, which tens of fine-tuning steps cannot undo), the
   equalized graph calibrated again (same method and images) and scored;
3. the fake-quantized student (``export.qad_torch``: TensorRT's contract, the PTQ activation scales read
   from the TensorRT file, or the equalized one's; BN folded as in the graph), trained for ``iters`` steps with a small LR on the
   run's training data (at the export's input size), against the frozen FP32 teacher of the run with the
   run's loss as the trainer builds it (RDD's TSE stage + its KD method, the labels); a run without a
   teacher distils from its own FP32 student (KD on its logits alone: the data set's labels would train it
   towards another function than the one deployed);
4. the checkpoint ``<run>/qad.pt`` (written atomically, read back with the safe loader), whose folded
   conv weights replace the FP32 graph's Conv initializers (nothing else in the graph changes, so the
   calibration cache and the float layers apply by name);
5. both INT8 files quantized from that graph with the same float layers: the TensorRT file with the calibrated
   ranges QAD trained with; the CPU file, which also quantizes every op's output (uint8, asymmetric) where the
   TensorRT contract QAD trains does not, with ranges measured again on the QAD weights (same method and
   number of training images: its PTQ ranges describe the PTQ weights' activations); each scored
   like every artifact (agreement with the FP32 file and mIoU on the export's check images, the format's
   agreement floor, and ``max_drop`` when given) and swapped into the export folder with the manifest's
   ``qad`` record (iterations, loss, drop and agreement before/after per file). Before is PTQ with the
   same float layers, quantized and scored in the same run. Nothing is replaced when a gate fails.
"""

from __future__ import annotations

import copy
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx

from rdd_edge import formats as table
from rdd_edge.data import DataSpec, open_split
from rdd_edge.deploy.info import read_manifest
from rdd_edge.deploy.postprocess import resize_labels
from rdd_edge.deploy.preprocess import preprocess
from rdd_edge.errors import ConfigError, ExportError
from rdd_edge.export.int8_budget import FLAVOURS
from rdd_edge.export.qad_graph import conv_input_scales, write_weights
from rdd_edge.export.manifest import MANIFEST, add_artifact
from rdd_edge.export.onnx_io import sha256_file
from rdd_edge.export.scoring import CheckScorer
from rdd_edge.normalize import recorded_normalization
from rdd_edge.runs import DEFAULT_ROOT, folder_lock, remove_leftovers, resolve_run


CHECKPOINT = "qad.pt"
DEFAULT_LR = 1e-4  # Adam; NVIDIA's QAT guidance: a small fraction of the training LR, a few % of its steps


@dataclass
class QadSpec:
    """What ``rdd-edge qat`` was asked: the run (folder or checkpoint), steps, LR, batch and the gates."""

    source: str | Path | None = None
    iters: int = 200
    lr: float = DEFAULT_LR
    batch: int = 8
    teacher: str | Path | None = None  # None: the run's (its config; without one: "self"); "self": its own FP32 student
    int8_only: bool = False  # quantize the layers the export kept in float too
    max_drop: float | None = None  # fail (nothing replaced) when a file still loses more mIoU points
    data: str | Path | None = None  # the data folder, when it moved since training
    device: str = "auto"  # auto (CUDA when there is one), cpu, cuda, cuda:N
    crop: tuple[int, int] | None = None  # train on random HxW windows of the export-size images (default: whole)
    equalize: bool = False  # cross-layer equalization of Conv -> ReLU -> Conv chains first (export.qad_equalize)
    seed: int = 0
    runs_root: str | Path = DEFAULT_ROOT


def command(run: str | Path, iters: int) -> str:
    """The command line that runs QAD on ``run`` (offered by ``--int8-budget`` when float islands fall short)."""
    return f"rdd-edge qat {run} --iters {iters} --int8-only --equalize"


# ------------------------------------------------------------------ the export's records
def _export_of(ckpt_path: Path) -> tuple[Path, dict]:
    out = ckpt_path.parent / "export"
    manifest, path = read_manifest(out / MANIFEST)
    if manifest is None:
        raise ExportError(f"{out}: no export of {ckpt_path.name}; export it with INT8 first: "
                          f"rdd-edge export {ckpt_path.parent} --int8")
    missing = [k for k in ("onnx", *FLAVOURS) if k not in (manifest.get("artifacts") or {})]
    if missing:
        raise ExportError(f"{path}: the export has no {', '.join(missing)} file; re-export with --int8")
    return out, manifest


def _check_source(ckpt_path: Path, ckpt: dict | None, manifest: dict, out: Path) -> None:
    """The export must be this checkpoint's (its bytes, then its model): QAD trains these weights and writes them
    into the export's graph."""
    other = manifest.get("source_sha256") != sha256_file(ckpt_path)
    if other or (ckpt is not None and manifest.get("model_name") != ckpt.get("model_name")):
        raise ExportError(f"{out}: exported from {manifest.get('source_checkpoint')} ({manifest.get('model_name')}), "
                          f"not from {ckpt_path}; re-export it first: rdd-edge export {ckpt_path.parent} --int8")


# ------------------------------------------------------------------ data
def _check_set(manifest: dict, data: DataSpec, size: tuple[int, int]) -> tuple[list, list]:
    """The export's check images and labels (the same evenly spread val images export scored on)."""
    from rdd_edge.export.pipeline import _evenly  # lazy: the pipeline imports torch-free deploy code only

    val = open_split(data, "val")
    if len(val) == 0:
        raise ExportError(f"{data.describe()}: the val split is empty; QAD scores on the export's check images")
    n = int(manifest["artifacts"]["onnx"].get("checked_images") or len(val))
    pairs = [val[i] for i in _evenly(len(val), n)]
    return [p[0] for p in pairs], [resize_labels(p[1], size) for p in pairs]


class Batches:
    """Random training batches at the export's input size (horizontal flips; ``crop``: random windows of that
    size, for speed), read as they are needed."""

    def __init__(self, data: DataSpec, size: tuple[int, int], normalization: Any, batch: int, seed: int,
                 crop: tuple[int, int] | None = None) -> None:
        self.split = open_split(data, "train")
        if len(self.split) == 0:
            raise ExportError(f"{data.describe()}: the train split is empty; QAD trains on the run's training images")
        self.size, self.norm, self.batch = size, normalization, int(batch)
        self.crop = tuple(crop) if crop is not None else None
        if self.crop is not None and (self.crop[0] > size[0] or self.crop[1] > size[1]):
            raise ConfigError(f"--crop {self.crop[0]}x{self.crop[1]}: larger than the export's input {size[0]}x{size[1]}")
        self.rng = np.random.default_rng(seed)

    def __next__(self) -> tuple[np.ndarray, np.ndarray]:
        idx = self.rng.integers(0, len(self.split), self.batch)
        xs, ys = [], []
        for i in idx:
            image, label = self.split[int(i)]
            x, y = preprocess(image, self.size, self.norm)[0], resize_labels(label, self.size)
            if self.rng.random() < 0.5:
                x, y = x[:, :, ::-1], y[:, ::-1]
            if self.crop is not None:  # a random window of the export-size image (the run's own training crop)
                t, l = (int(self.rng.integers(0, s - c + 1)) for s, c in zip(self.size, self.crop))
                x, y = x[:, t:t + self.crop[0], l:l + self.crop[1]], y[t:t + self.crop[0], l:l + self.crop[1]]
            xs.append(x)
            ys.append(y)
        return np.ascontiguousarray(np.stack(xs)), np.ascontiguousarray(np.stack(ys)).astype(np.int64)


# ------------------------------------------------------------------ the loss the run trained with
def step_context(ckpt: dict, student: Any, spec: QadSpec, ignore_index: int, params: list,
                 say: Callable[[str], None]) -> tuple[Any, str]:
    """The trainer's step (``distill.train.build_step_context``: RDD + KD as the run was configured, TSE stage)
    with Adam at ``spec.lr`` over ``params``; the teacher is the run's, or the student's own FP32 copy.
    Returns (context, the teacher: its checkpoint path or "self")."""
    import torch

    from rdd_edge.distill.config import config_from_dict
    from rdd_edge.distill.data import renormalizer
    from rdd_edge.distill.train import build_step_context, load_teacher
    from rdd_edge.models.checkpoint import resolve_checkpoint

    saved = dict(ckpt.get("config") or {})
    has_teacher = saved.get("mode", "distill") == "distill" and (saved.get("method", "kd") != "none" or saved.get("rdd", True))
    teacher_path = spec.teacher or (saved.get("teacher") if has_teacher else None)
    if str(teacher_path) == "self":  # --teacher self: keep the FP32 function, even where the run has a teacher
        teacher_path = None
    norm = recorded_normalization(ckpt)
    overrides = dict(amp=False, compile=False, channels_last=False, device=spec.device, lr=spec.lr, grad_clip=0.0)
    if teacher_path is not None:
        path = resolve_checkpoint(teacher_path)
        teacher, tckpt = load_teacher(path, student.num_classes, False, next(student.parameters()).device)
        cfg = config_from_dict({**saved, "mode": "distill", "teacher": str(path)}, **overrides)
        say(f"qat: teacher {path} ({tckpt['model_name']}), loss: {'RDD (TSE) + ' if cfg.rdd else 'CE + '}"
            f"{cfg.method} KD, labels")
        t_input, who = renormalizer(norm, recorded_normalization(tckpt)), str(path)
    else:
        teacher = copy.deepcopy(student).eval().requires_grad_(False)
        cfg = config_from_dict({k: v for k, v in saved.items() if k not in ("kd_weight", "kd_options")},
                               **{**overrides, "mode": "distill", "method": "kd", "rdd": False})
        say("qat: teacher: the student's own FP32 logits (KD on them alone"
            + ("; the run has no teacher)" if spec.teacher is None else ")"))
        t_input, who = None, "self"
    ctx = build_step_context(cfg, student, teacher, ignore_index=ignore_index, teacher_input=t_input)
    if ctx.rdd.enabled:
        ctx.rdd.current = "tse"  # where the run's training ended
    extra = list(ctx.kd.parameters()) if ctx.kd is not None and hasattr(ctx.kd, "parameters") else []
    ctx.params = [*params, *extra]
    ctx.optimizer = torch.optim.Adam(ctx.params, lr=spec.lr)
    return ctx, who


# ------------------------------------------------------------------ the stage
def _score(scorer: CheckScorer, path: Path, fp32: dict) -> dict:
    s = scorer(path)
    return {"miou": 100.0 * float(s["miou"] or 0.0), "drop": 100.0 * (float(fp32["miou"] or 0.0) - float(s["miou"] or 0.0)),
            "agreement": 100.0 * float(s.get("label_agreement", 1.0)), "raw": s}


def run_qad(spec: QadSpec, console: Any = None) -> dict:
    """Fine-tune the fake-quantized student, re-quantize both INT8 files, score, gate, and update the export."""
    import torch

    from onnxruntime.quantization.shape_inference import quant_pre_process

    from rdd_edge.export.int8 import ImageFolderReader, _method, _quantize, select_calibration
    from rdd_edge.export.int8_calib import calibrate_methods
    from rdd_edge.export.pipeline import _calib_items, _checked, _commit, _transaction
    from rdd_edge.models.checkpoint import resolve_checkpoint
    from rdd_edge.distill.dist import init_distributed
    from rdd_edge.export.qad_equalize import equalize, relu_chains
    from rdd_edge.export.qad_torch import fake_quantized, fold_batchnorm, trainable
    from rdd_edge.models import model_from_checkpoint, save_checkpoint

    def say(msg: str) -> None:
        if console is not None:
            console.print(msg)

    if spec.iters < 1:
        raise ConfigError(f"--iters {spec.iters}: QAD needs at least one step")
    if not spec.lr > 0:
        raise ConfigError(f"--lr {spec.lr}: must be > 0 (QAD fine-tunes: 1e-5 .. 1e-3)")
    if spec.batch < 1:
        raise ConfigError(f"--batch {spec.batch}: must be >= 1")
    t0 = time.perf_counter()
    ckpt_path = resolve_checkpoint(resolve_run(spec.source, "distill", "run to fine-tune (qat)", root=spec.runs_root),
                                   prefer="best.pt")
    out, manifest = _export_of(ckpt_path)
    _check_source(ckpt_path, None, manifest, out)  # before any model is built
    student, ckpt = model_from_checkpoint(ckpt_path, aux=False)
    _check_source(ckpt_path, ckpt, manifest, out)
    arts = manifest["artifacts"]
    calib = arts["int8"].get("calibration") or {}
    cache = out / str(calib.get("cache"))
    if not cache.is_file():
        raise ExportError(f"{out}: the calibration cache {cache.name} is missing; re-export with --int8")
    method, trt_float = str(calib.get("method")), str(arts["int8"].get("trt_float") or "fp16")
    exclude = {f: [] if spec.int8_only else list(arts[f].get("keep_float") or []) for f in FLAVOURS}
    size = tuple(int(v) for v in manifest["input"]["size"])
    norm, embedded = recorded_normalization(manifest), bool(manifest["input"].get("embedded_preprocess"))
    data = DataSpec.from_dict(manifest["data"]).overridden(root=spec.data)
    if data.root is None and not data.generated:
        raise ConfigError(f"qat trains on the run's {data.name} images; pass --data PATH")
    images, labels = _check_set(manifest, data, size)
    batches = Batches(data, size, norm, spec.batch, spec.seed, spec.crop)
    ignore = int(manifest.get("ignore_index", 255))
    scorer = CheckScorer(images, labels, size, norm, len(manifest["classes"]), embedded=embedded)
    fp32_path = out / arts["onnx"]["file"]
    fp32 = scorer(fp32_path)

    # the export folder is held from here (a second qat or an export is refused by name, not interleaved)
    with folder_lock(out, "export or qat"), tempfile.TemporaryDirectory(prefix="rdd-qad-") as tmpdir:
        tmp = Path(tmpdir)
        # -- before: PTQ with these float layers, as the export quantizes it (its own files when they are that)
        ptq = {f: out / arts[f]["file"] for f in FLAVOURS}
        if spec.int8_only or "qad" in manifest:
            prep = tmp / "prep.onnx"
            quant_pre_process(str(fp32_path), str(prep), skip_symbolic_shape=False)
            for f in FLAVOURS:
                ptq[f] = tmp / f"ptq-{f}.onnx"
                _quantize(prep, ptq[f], f, _method(method), cache, None, exclude[f], trt_float)
        before = {f: _score(scorer, ptq[f], fp32) for f in FLAVOURS}
        scales = conv_input_scales(onnx.load(str(ptq["int8"])))
        say("qat: PTQ " + ", ".join(f"{f} drop {v['drop']:.2f}, agree {v['agreement']:.1f}%" for f, v in before.items())
            + f"; {len(scales)} Convs fake-quantized")

        # -- train the fake-quantized student (BN folded as in the graph, which must hold these weights)
        torch.manual_seed(spec.seed)
        example = torch.from_numpy(preprocess(images[0], size, norm))
        pairs = fold_batchnorm(student, example)
        fp32_graph = onnx.load(str(fp32_path))
        write_weights(fp32_graph, student, pairs, check=True)
        items = select_calibration(_calib_items(open_split(data, "train")), int(calib.get("images") or 300),
                                   min_images=1, warn=lambda m: None)
        trt_cache = cache
        if spec.equalize:  # level the channel ranges first (export.qad_equalize), then calibrate them again
            chains = relu_chains(fp32_graph)
            ratios = equalize(student, chains, pairs)
            eq_prep = tmp / "prep-eq.onnx"
            onnx.save(write_weights(fp32_graph, student, pairs), str(tmp / "eq-fp32.onnx"))
            quant_pre_process(str(tmp / "eq-fp32.onnx"), str(eq_prep), skip_symbolic_shape=False)
            trt_cache = tmp / "eq.calib.json"
            calibrate_methods(eq_prep, ImageFolderReader(items, size, norm, embedded), {method: trt_cache}, chunk=4)
            equalized = {}
            for f in FLAVOURS:
                _quantize(eq_prep, tmp / f"eq-{f}.onnx", f, _method(method), trt_cache, None, exclude[f], trt_float)
                equalized[f] = _score(scorer, tmp / f"eq-{f}.onnx", fp32)
            scales = conv_input_scales(onnx.load(str(tmp / "eq-int8.onnx")))
            say(f"qat: equalized {len(chains)} Conv -> ReLU -> Conv chains (channel range spread up to "
                f"{max(ratios, default=1.0):.0f}x), calibrated again: " + ", ".join(
                    f"{f} drop {v['drop']:.2f}, agree {v['agreement']:.1f}%" for f, v in equalized.items()))
        device = init_distributed(spec.device)
        student.to(device)
        params = trainable(student, pairs)
        ctx, teacher = step_context(ckpt, student, spec, ignore, params, say)
        from rdd_edge.distill.train import poly_lr, train_step

        losses: list[float] = []
        t = time.perf_counter()
        with fake_quantized(student, scales):
            for it in range(spec.iters):
                for group in ctx.optimizer.param_groups:  # the trainer's poly schedule, from the small QAD LR
                    group["lr"] = poly_lr(spec.lr, it, spec.iters)
                x, y = next(batches)
                x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
                if teacher == "self":  # the FP32 student is the function to keep: its logits, not the data set's labels
                    y = torch.full_like(y, ignore)
                now = train_step(ctx, x, y)
                losses.append(float(now[0]))
                if not np.isfinite(losses[-1]):
                    raise ExportError(f"qat: non-finite loss at step {it + 1}; try a lower --lr")
                if (it + 1) % max(1, spec.iters // 5) == 0 or it == 0:
                    say(f"qat: step {it + 1}/{spec.iters} loss {losses[-1]:.4f}")
        train_s = time.perf_counter() - t
        student.eval().requires_grad_(False).cpu()

        # -- the checkpoint, read back with the safe loader; its weights go into the FP32 graph
        k = max(1, min(10, len(losses) // 5))
        record: dict[str, Any] = {"iterations": spec.iters, "lr": spec.lr, "batch": spec.batch, "optimizer": "adam",
                                  "crop": list(spec.crop) if spec.crop else list(size),
                                  "int8_only": spec.int8_only, "teacher": teacher,
                                  "loss": {"first": float(np.mean(losses[:k])), "last": float(np.mean(losses[-k:]))},
                                  "fake_quantized_convs": len(scales), "train_seconds": round(train_s, 1)}
        qad_path = save_checkpoint(ckpt_path.parent / CHECKPOINT, student, dataset=ckpt.get("dataset"),
                                   data=ckpt.get("data"), normalization=ckpt.get("normalization"),
                                   config=ckpt.get("config"), step=spec.iters, best_miou=None,
                                   qad={k2: v for k2, v in record.items()})
        qad_model, _ = model_from_checkpoint(qad_path, aux=False)
        qad_pairs = fold_batchnorm(qad_model, example)  # identity BNs: folds nothing away, finds the pairs
        graph = tmp / "qad-fp32.onnx"
        onnx.save(write_weights(fp32_graph, qad_model, qad_pairs), str(graph))
        prep2 = tmp / "prep-qad.onnx"
        quant_pre_process(str(graph), str(prep2), skip_symbolic_shape=False)
        # the CPU file quantizes every op's output (uint8), which the TensorRT contract trained above does not
        # see: its ranges are measured again on the QAD weights (same method, as many training images)
        caches = {"int8": trt_cache, "int8-cpu": tmp / "qad-cpu.calib.json"}
        calibrate_methods(prep2, ImageFolderReader(items, size, norm, embedded), {method: caches["int8-cpu"]}, chunk=4)
        record["cpu_calibration"] = {"method": method, "images": len(items), "on": "the QAD weights"}
        if spec.equalize:
            record["equalized"] = {"chains": [list(c) for c in chains], "range_spread": [round(r, 2) for r in ratios],
                                   "files": {f: _row(v) for f, v in equalized.items()}}

        # -- both INT8 files, scored and gated, swapped into the export folder with the manifest's record
        remove_leftovers(out)
        with _transaction(out, copy_from=out) as stage:
            after: dict[str, dict] = {}
            for f in FLAVOURS:
                fmt = table.BY_KEY[f]
                path = stage / fmt.file
                path.unlink(missing_ok=True)  # a hard link to the PTQ file: write a new one
                _quantize(prep2, path, f, _method(method), caches[f], None, exclude[f], trt_float)
                after[f] = _score(scorer, path, fp32)
                checked = _checked(after[f]["raw"], fmt, path)
                old = {k2: v for k2, v in arts[f].items() if k2 not in ("file", "precision", "runtime", "bytes",
                                                                            "sha256", "miou", "checked_images", "agreement", "qad")}
                if spec.int8_only:
                    old.pop("int8_budget", None)
                    old["keep_float"] = []
                add_artifact(manifest, f, path, fmt.precision, fmt.runtime, **old, **checked,
                             qad={"before": _row(before[f]), "after": _row(after[f])})
            say("qat: QAD " + ", ".join(f"{f} drop {v['drop']:.2f}, agree {v['agreement']:.1f}%" for f, v in after.items()))
            worst = max(after, key=lambda f: after[f]["drop"])
            if spec.max_drop is not None and after[worst]["drop"] > spec.max_drop:
                raise ExportError(f"--max-drop {spec.max_drop:g}: after {spec.iters} QAD steps {worst} still loses "
                                  f"{after[worst]['drop']:.2f} mIoU points (PTQ: {before[worst]['drop']:.2f}); the export "
                                  f"is unchanged; try more --iters or another --lr ({spec.lr:g})")
            record.update(checkpoint=qad_path.name, checkpoint_sha256=sha256_file(qad_path),
                          calibration={"method": method, "cache": cache.name, "tensorrt_ranges": "calibrated again after "
                                       "equalization" if spec.equalize else "the PTQ cache"}, float_layers=exclude,
                          files={f: {"before": _row(before[f]), "after": _row(after[f])} for f in FLAVOURS},
                          seconds=round(time.perf_counter() - t0, 1))
            manifest["qad"] = record
            manifest.pop("export_dir", None)
            plan = manifest.get("int8_sensitivity")
            if plan:  # the sensitivity table and picture gain the QAD result
                from rdd_edge.export.int8_report import write_report

                plan = {k2: v for k2, v in plan.items() if k2 != "files"}
                plan["qad"] = record
                paths = write_report(plan, stage)
                manifest["int8_sensitivity"] = {**plan, "files": {k2: p.name for k2, p in paths.items()}}
            return _commit(manifest, stage, out)


def _row(s: dict) -> dict:
    return {"miou": round(s["miou"], 3), "drop": round(s["drop"], 3), "agreement": round(s["agreement"], 3)}
