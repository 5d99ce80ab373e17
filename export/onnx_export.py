"""torch model -> ``model.onnx`` (FP32) with the graph I/O every later stage relies on.

The exported graph takes ``images`` (N, 3, H, W): float32 normalised the way the weights were
trained (the checkpoint's :class:`~rdd_edge.normalize.Normalization`), or raw pixels when the
preprocessing is embedded (channel order, cast, scale and mean/std inside the graph): uint8 RGB, or float32
0..255 RGB / BGR (``float255``: what DeepStream's nvinfer feeds with net-scale-factor=1). It emits ``logits``
(N, C, H, W, bilinear upsampling of the 1/8 output to the input size) and/or ``labels``
(N, H, W, int64 argmax).

Exporter choice (checked on torch 2.14 / onnx 1.23 / onnxruntime 1.32): ``dynamo=True`` is the
default and its native opset is 18; it exports DeepLabV3 and PSPNet at valid sizes to clean graphs
whose output shapes keep the symbolic ``batch`` name, while the TorchScript exporter is deprecated
and leaves anonymous output dims and Shape/Gather chains. So dynamo is used; the TorchScript
exporter is only a fallback if dynamo raises.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any, Sequence

import onnx
import torch
import torch.nn.functional as F

from rdd_edge.errors import ExportError
from rdd_edge.models import model_cfg

from rdd_edge.export.formats import resolve_output
from rdd_edge.export.onnx_io import INPUT_NAME, save_onnx_atomic

log = logging.getLogger(__name__)

from rdd_edge.normalize import DEFAULT, Normalization, embed_gather, embed_mode  # noqa: E402
OUTPUTS = {"labels": ("labels",), "logits": ("logits",), "both": ("logits", "labels")}


def input_rules(model: Any) -> dict[str, Any]:
    """What the model's head asks of the input size (``input_multiple``, ``dynamic_hw``; models' default cfg)."""
    name = getattr(model, "model_name", "")
    if not name:
        return {"input_multiple": 8, "dynamic_hw": True, "head": "?"}
    return model_cfg(name)


def check_size(size: Sequence[int], model: Any = None, option: str = "--size") -> tuple[int, int]:
    """Validate (H, W) for a stride-8 network and its head's input multiple; return it as ints."""
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ExportError(f"{option}: expected (H, W), got {size!r}") from None
    if h < 8 or w < 8 or h % 8 or w % 8:
        lo_h, lo_w = max(8, h // 8 * 8), max(8, w // 8 * 8)
        raise ExportError(f"{option} {h}x{w}: height and width must be multiples of 8 (output stride 8); try {lo_h}x{lo_w}")
    step = int(input_rules(model)["input_multiple"]) if model is not None else 8
    if h % step or w % step:
        sug_h, sug_w = max(step, round(h / step) * step), max(step, round(w / step) * step)
        raise ExportError(
            f"{option} {h}x{w}: the {input_rules(model).get('head', '').upper()} head needs H and W multiples of {step} "
            f"(PSPNet pools the 1/8 feature map into bins 1/2/3/6); try {sug_h}x{sug_w}")
    return h, w


def _wrapper(model: Any, size: tuple[int, int], output: str, embed_preprocess: bool | str, normalization: Normalization) -> Any:
    class ExportWrapper(torch.nn.Module):
        """images -> (logits at input size and/or argmax labels); optional embedded preprocessing."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.embed = bool(embed_mode(embed_preprocess))
            self.outputs = OUTPUTS[output]
            mul, add = normalization.affine()  # x[k] = pixel[perm[k]] * mul[k] + add[k]
            self.perm = embed_gather(normalization, embed_preprocess) if self.embed else None  # input channel per network channel
            self.register_buffer("mul", torch.tensor(mul, dtype=torch.float32).view(1, 3, 1, 1))
            self.register_buffer("add", torch.tensor(add, dtype=torch.float32).view(1, 3, 1, 1))

        def forward(self, images: torch.Tensor):  # noqa: ANN201
            x = images
            if self.embed:  # uint8 RGB / float 0..255 RGB or BGR -> the network's channel order, scale, mean and std
                x = x.to(torch.float32)
                if self.perm is not None:
                    x = x[:, self.perm]
                x = x * self.mul + self.add
            out = self.model(x)["out"]
            logits = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
            res = []
            for name in self.outputs:
                res.append(logits if name == "logits" else logits.argmax(1))
            return tuple(res) if len(res) > 1 else res[0]

    return ExportWrapper().eval()


def export_onnx(
    model: Any,
    path: str | Path,
    size: Sequence[int] = (360, 480),
    output: str = "labels",
    embed_preprocess: bool | str = False,
    dynamic: bool = False,
    opset: int = 18,
    normalization: Normalization = DEFAULT,
    metadata: dict[str, str] | None = None,
    simplify: bool = True,
) -> Path:
    """Export ``model`` (forward returns ``{"out": (N, C, H/8, W/8)}``) to ``path``; return the path.

    Batch is always dynamic; ``dynamic=True`` also frees H and W (multiples of 8) except for PSPNet,
    whose adaptive pooling only exports at fixed sizes. The file is checked with the ONNX checker
    (full check), simplified with onnxslim and written atomically: on failure nothing is left.
    """
    output = resolve_output(output)
    h, w = check_size(size, model)
    if dynamic and not input_rules(model).get("dynamic_hw", True):
        raise ExportError(f"--dynamic: {getattr(model, 'model_name', 'this model')}'s head (PSPNet's pyramid pooling) cannot "
                          "take dynamic H and W; export at a fixed --size (batch stays dynamic)")
    if not 13 <= int(opset) <= 21:
        raise ExportError(f"--opset {opset}: use 13..21 (18 is native for torch.onnx and inside TensorRT 10/11's parser range)")
    path = Path(path)
    mode = embed_mode(embed_preprocess)
    wrapper = _wrapper(model, (h, w), output, mode, normalization)
    dummy = (torch.randint(0, 256, (2, 3, h, w), dtype=torch.uint8) if mode == "uint8"
             else torch.rand(2, 3, h, w) * 255.0 if mode else torch.randn(2, 3, h, w))
    out_names = list(OUTPUTS[output])
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with _quiet_tmp(path) as raw:
            _torch_export(wrapper, dummy, raw, out_names, opset, dynamic)
            m = onnx.load(str(raw))
    m = _finish(m, simplify, metadata, path)
    save_onnx_atomic(m, path)
    return path


class _quiet_tmp:
    """A temporary file beside ``path`` that is always removed (the raw torch export)."""

    def __init__(self, path: Path) -> None:
        self.tmp = path.with_name(f".{path.name}.raw.onnx")

    def __enter__(self) -> Path:
        return self.tmp

    def __exit__(self, *exc: object) -> None:
        self.tmp.unlink(missing_ok=True)
        self.tmp.with_name(self.tmp.name + ".data").unlink(missing_ok=True)


def _torch_export(wrapper: Any, dummy: Any, raw: Path, out_names: list[str], opset: int, dynamic: bool) -> None:
    errors = []
    for dynamo in (True, False):
        try:
            if dynamo:
                batch = torch.export.Dim("batch", min=1, max=1024)
                shape: dict[int, Any] = {0: batch}
                if dynamic:
                    shape[2] = 8 * torch.export.Dim("h8", min=1, max=512)
                    shape[3] = 8 * torch.export.Dim("w8", min=1, max=512)
                kw: dict[str, Any] = {"dynamic_shapes": ({**shape},), "external_data": False, "dynamo": True}
            else:
                axes = {0: "batch", **({2: "height", 3: "width"} if dynamic else {})}
                kw = {"dynamic_axes": {INPUT_NAME: axes, **{n: {0: "batch"} for n in out_names}}, "dynamo": False}
            with contextlib.redirect_stdout(io.StringIO()):
                torch.onnx.export(wrapper, (dummy,), str(raw), input_names=[INPUT_NAME], output_names=out_names,
                                  opset_version=int(opset), verbose=False, **kw)
            if not dynamo:
                log.warning("dynamo export failed (%s); used the TorchScript exporter", errors[-1])
            return
        except Exception as exc:  # exporter errors are many types; collect and report both
            errors.append(f"{'dynamo' if dynamo else 'torchscript'}: {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}")
    raise ExportError(f"{raw.name.lstrip('.').removesuffix('.raw.onnx')}: torch.onnx.export failed ({'; '.join(errors)})")


def _finish(m: Any, simplify: bool, metadata: dict[str, str] | None, path: Path) -> Any:
    """Simplify with onnxslim, attach metadata and run the full ONNX check."""
    if simplify:
        try:
            import onnxslim  # lazy: optional (a missing or failing onnxslim keeps the unsimplified graph)

            m = onnxslim.slim(m)
        except Exception as exc:  # a simplifier failure must not sink the export
            log.warning("onnxslim failed (%s); keeping the unsimplified graph", exc)
    rename = {"8*h8": "height", "8*w8": "width"}  # dynamo's names for the dynamic spatial dims
    for v in list(m.graph.input) + list(m.graph.output) + list(m.graph.value_info):
        for d in v.type.tensor_type.shape.dim:
            if d.dim_param in rename:
                d.dim_param = rename[d.dim_param]
    for k, v in (metadata or {}).items():
        m.metadata_props.append(onnx.StringStringEntryProto(key=str(k), value=str(v)))
    try:
        onnx.checker.check_model(m, full_check=True)
    except Exception as exc:
        raise ExportError(f"{path}: exported graph fails the ONNX checker: {exc}") from None
    return m
