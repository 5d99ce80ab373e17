"""What quantizing each layer costs: a cheap estimate for every layer, leave-one-out measured for the worst.

Two measurements, both per flavour (``int8-cpu``, and ``int8`` for TensorRT):

- **Estimate (every layer, cached activations).** The FP32 model runs once per check image with every
  Conv's input and output as graph outputs. Each layer's Conv is then cut out of the quantized
  file (``onnx.utils.Extractor``: the activation's QuantizeLinear -> DequantizeLinear, the int8
  weights' DequantizeLinear, the Conv) and run by ONNX Runtime on the cached FP32 input; its output
  is compared with the cached FP32 output. The figure is the noise the layer's own quantization
  adds, relative to its signal: ``noise = sum |y_int8 - y_fp32|^2 / sum |y_fp32|^2`` over all
  check images, shown as a signal-to-noise ratio in dB (low = the layer hurts). It costs about two
  network runs per image for all layers together, where leave-one-out costs one run per image
  *per layer*. It sees what per-tensor activation ranges do to uneven channels (the big channels
  set the scale, the small ones round to a few levels, and the next Conv, which multiplies the
  small ones back up, passes that error on).
- **Leave-one-out (measured).** The layer alone is left in float (its float island, see
  ``export.int8_layers``), the file quantized again from the calibration cache, and scored on the
  check images like every artifact: the mIoU points and agreement with FP32 it gains back are
  what quantizing that layer costs.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import numpy as np
import onnx
from onnx import helper

from rdd_edge.deploy.backends.onnxruntime import EXACT_DISABLED_OPTIMIZERS
from rdd_edge.export.int8_layers import QuantLayer


def _session(model_or_path: Any) -> Any:
    """A CPU session whose idle threads sleep: torch computes the gradients between its runs, and ONNX
    Runtime's spinning worker threads would otherwise take the cores from it (5-10x slower on 2 cores)."""
    import onnxruntime as ort  # lazy: optional dependency (onnxruntime, an extra)

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    src = model_or_path.SerializeToString() if hasattr(model_or_path, "SerializeToString") else str(model_or_path)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"], disabled_optimizers=list(EXACT_DISABLED_OPTIMIZERS))


def _layer_cut(qmodel: Any, extractor: Any, conv: str) -> tuple[Any, str] | None:
    """The quantized Conv ``conv`` alone (activation Q/DQ, weight DQ, Conv) as a model, and the name of
    its float input; None when the Conv runs in float in this file."""
    producer = {o: n for n in qmodel.graph.node for o in n.output}
    node = next(n for n in qmodel.graph.node if n.name == conv)
    dq = producer.get(node.input[0])
    if dq is None or dq.op_type != "DequantizeLinear":
        return None
    q = producer.get(dq.input[0])
    if q is None or q.op_type != "QuantizeLinear":
        return None
    return extractor.extract_model([q.input[0]], [node.output[0]]), q.input[0]


class _Gradients:
    """Gradients, in the exported graph's terms, at the outputs of a torch model's convs.

    The exported Conv computes BN(conv(x)) (``quant_pre_process`` folds BN into it). For a conv whose
    output feeds a BatchNorm (found by tensor identity during the forward pass), the gradient at the
    folded output is the gradient at the conv output divided by the BN's per-channel scale
    (``gamma / sqrt(var + eps)``). The loss is the cross-entropy of the upsampled logits against the
    model's own labels, summed over pixels: large where a pixel's label is close to flipping.
    """

    def __init__(self, model: Any, modules: dict[str, str]) -> None:
        self.model, self.modules = model, modules  # layer name -> module path

    def __call__(self, x: np.ndarray, size: Sequence[int]) -> dict[str, np.ndarray]:
        # lazy: torch only weights the estimate when a torch model is given; `rdd-edge engine` imports this
        # module torch-free (export.pipeline -> int8 -> int8_budget -> here)
        import torch
        import torch.nn.functional as F

        named = dict(self.model.named_modules())
        outs: dict[str, Any] = {}
        bn_of: dict[str, Any] = {}
        handles = []

        def conv_hook(layer: str) -> Callable[..., None]:
            def hook(m: Any, inp: Any, out: Any) -> None:  # returns None: the output stays as it is
                out.retain_grad()
                outs[layer] = out
            return hook

        for layer, path in self.modules.items():
            if path in named:
                handles.append(named[path].register_forward_hook(conv_hook(layer)))

        def bn_hook(m: Any, inp: Any, out: Any) -> None:
            for layer, t in outs.items():
                if inp[0] is t:
                    bn_of[layer] = m

        handles += [m.register_forward_hook(bn_hook) for m in named.values() if isinstance(m, torch.nn.BatchNorm2d)]
        flags = [p.requires_grad for p in self.model.parameters()]
        try:
            for p in self.model.parameters():
                p.requires_grad_(False)
            self.model.eval()
            with torch.enable_grad():
                xt = torch.from_numpy(np.ascontiguousarray(x, np.float32)).requires_grad_(True)
                logits = F.interpolate(self.model(xt)["out"], size=tuple(size), mode="bilinear", align_corners=False)
                F.cross_entropy(logits, logits.argmax(1).detach(), reduction="sum").backward()
        finally:
            for h in handles:
                h.remove()
            for p, f in zip(self.model.parameters(), flags):
                p.requires_grad_(f)
        grads = {}
        for layer, t in outs.items():
            if t.grad is None:
                continue
            g = t.grad.detach().double()
            bn = bn_of.get(layer)
            if bn is not None:
                a = (bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)).view(1, -1, 1, 1)
                g = torch.where(a.abs() > 1e-12, g / a, torch.zeros_like(g))
            grads[layer] = g.numpy()
        return grads


def estimate(prep: Any, quantized: dict[str, Any], layers: Sequence[QuantLayer], inputs: Iterable[np.ndarray],
             model: Any = None, torch_inputs: Callable[[np.ndarray], np.ndarray] | None = None,
             progress: Callable[[int], None] | None = None) -> dict[str, dict[str, list[float | None]]]:
    """Per flavour and layer, from cached activations (see the module docstring):

    - ``local``: relative noise power the layer's quantization adds at its output;
    - ``weighted`` (with the torch ``model``): that noise weighted by the gradient of the loss at the
      same tensor, summed over elements and images: sum (g * (y_int8 - y_fp32))^2, an estimate of how
      much the layer's noise moves the output labels.

    ``quantized``: {flavour: ONNX model with FP32 float math}; ``inputs``: preprocessed check images
    (1, 3, H, W); ``torch_inputs`` maps one to the torch model's input (uint8 graphs: normalised).
    A layer left in float in a file gets 0.0; one the estimate cannot see, None.
    """
    prep_nodes = {n.name: n for n in prep.graph.node}
    outs = {l.name: prep_nodes[l.name].output[0] for l in layers}
    wanted = list(dict.fromkeys([*(l.input for l in layers), *outs.values()]))
    aug = onnx.ModelProto()
    aug.CopyFrom(prep)
    have = {o.name for o in aug.graph.output} | {i.name for i in aug.graph.input}
    for name in wanted:
        if name not in have:
            aug.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    fp32 = _session(aug)
    fp32_names = [o.name for o in fp32.get_outputs()]
    cuts: dict[str, list[tuple[Any, str] | None]] = {}
    for flavour, qmodel in quantized.items():
        ex = onnx.utils.Extractor(onnx.shape_inference.infer_shapes(qmodel))
        cuts[flavour] = []
        for l in layers:
            cut = _layer_cut(qmodel, ex, l.name)
            cuts[flavour].append(None if cut is None else (_session(cut[0]), cut[1]))
    grads = None
    if model is not None:
        grads = _Gradients(model, {l.name: l.module for l in layers if l.module is not None})
    noise = {f: np.zeros(len(layers)) for f in quantized}
    weighted = {f: np.zeros(len(layers)) for f in quantized}
    seen = np.zeros(len(layers), bool)
    signal = np.zeros(len(layers))
    input_name = prep.graph.input[0].name
    size = None
    for k, x in enumerate(inputs):
        acts = dict(zip(fp32_names, fp32.run(None, {input_name: x})))
        acts[input_name] = x
        size = x.shape[-2:]
        g = grads(torch_inputs(x) if torch_inputs else x, size) if grads is not None else {}
        for i, l in enumerate(layers):
            ref = acts[outs[l.name]].astype(np.float64)
            signal[i] += float(np.square(ref).sum())
            gi = g.get(l.name)
            if gi is not None and gi.shape == ref.shape:
                seen[i] = True
            else:
                gi = None
            for flavour in quantized:
                cut = cuts[flavour][i]
                if cut is None:
                    continue
                sess, feed = cut
                d = sess.run(None, {feed: acts[l.input]})[0].astype(np.float64) - ref
                noise[flavour][i] += float(np.square(d).sum())
                if gi is not None:
                    weighted[flavour][i] += float(np.square(gi * d).sum())
        if progress is not None:
            progress(k + 1)
    out: dict[str, dict[str, list[float | None]]] = {}
    for f in quantized:
        out[f] = {"local": [float(n / s) if s > 0 else None for n, s in zip(noise[f], signal)]}
        if grads is not None:
            n_img = max(k + 1, 1)
            out[f]["weighted"] = [float(w / n_img) if ok else None for w, ok in zip(weighted[f], seen)]
    return out


def snr_db(noise: float | None) -> float | None:
    """A relative noise power as a signal-to-noise ratio in dB (None stays None; 0 noise: inf)."""
    if noise is None:
        return None
    return float("inf") if noise <= 0 else float(-10.0 * np.log10(noise))


def rank_by_noise(noise: Sequence[float | None]) -> list[int]:
    """Layer indices, noisiest first (layers without a figure last, in network order)."""
    return sorted(range(len(noise)), key=lambda i: (noise[i] is None, -(noise[i] or 0.0), i))


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation of two equally long sequences (average ranks for ties)."""
    def ranks(seq: Sequence[float]) -> np.ndarray:
        v = np.asarray(seq, np.float64)
        order = np.argsort(v, kind="mergesort")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=np.float64)
        for val in np.unique(v):  # ties share their mean rank
            idx = v == val
            r[idx] = r[idx].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


__all__ = ["estimate", "snr_db", "rank_by_noise", "spearman"]
