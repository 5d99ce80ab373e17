"""export_int8(trt_float=...): the TensorRT Q/DQ file keeps its float math in FP16 by default."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from rdd_edge.errors import ExportError

from rdd_edge.export.int8 import export_int8
from trt_double import tiny_fp32_onnx

SIZE = (16, 24)


def _items(n=8):
    return [(f"r{i}", (lambda i=i: np.random.default_rng(50 + i).integers(0, 256, (20, 30, 3), dtype=np.uint8)))
            for i in range(n)]


def _run(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x})


def _dq_weights(m):
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    out = {}
    for n in m.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].dtype == np.int8:
            q, s = inits[n.input[0]].astype(np.float64), inits[n.input[1]].astype(np.float64)
            out[n.input[0]] = (q * s.reshape(-1, *[1] * (q.ndim - 1)), s)
    return out


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    root = tmp_path_factory.mktemp("int8float")
    src = tiny_fp32_onnx(root / "model.onnx", SIZE)
    (root / "f16").mkdir()
    (root / "f32").mkdir()
    i16 = export_int8(src, root / "f16", _items(), size=SIZE)
    i32 = export_int8(src, root / "f32", _items(), size=SIZE, trt_float="fp32")
    return root, src, i16, i32


def test_fp16_float_is_the_default_and_recorded(both):
    root, src, i16, i32 = both
    assert i16["trt_float"] == "fp16" and i32["trt_float"] == "fp32"
    m16, m32 = onnx.load(str(root / "f16" / "model.int8.onnx")), onnx.load(str(root / "f32" / "model.int8.onnx"))
    onnx.checker.check_model(m16, full_check=True)
    assert next(o.version for o in m16.opset_import if o.domain in ("", "ai.onnx")) >= 19  # float16 Q/DQ scales
    inits = {t.name: numpy_helper.to_array(t) for t in m16.graph.initializer}
    qdq = [n for n in m16.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq and all(inits[n.input[1]].dtype == np.float16 for n in qdq)
    assert all(inits[n.input[2]].dtype == np.int8 and not inits[n.input[2]].any() for n in qdq)  # symmetric int8
    assert {c.input[2]: inits[c.input[2]].dtype for c in m16.graph.node if c.op_type == "Conv"} == {"b1": np.float16, "b2": np.float16}
    # graph I/O stays float32 / int64
    assert [i.type.tensor_type.elem_type for i in m16.graph.input] == [1]
    assert [o.type.tensor_type.elem_type for o in m16.graph.output] == [1, 7]
    # the opt-out keeps the previous file: float32 scales at the source opset
    inits32 = {t.name: numpy_helper.to_array(t) for t in m32.graph.initializer}
    assert all(inits32[n.input[1]].dtype == np.float32 for n in m32.graph.node if n.op_type == "DequantizeLinear")
    # the CPU flavour is the same either way (uint8 activations, float32 scales)
    c16, c32 = (onnx.load(str(root / d / "model.int8-cpu.onnx")) for d in ("f16", "f32"))
    assert [n.op_type for n in c16.graph.node] == [n.op_type for n in c32.graph.node]


def test_weights_re_rounded_to_the_float16_scales(both):
    root, _, _, _ = both
    w16 = _dq_weights(onnx.load(str(root / "f16" / "model.int8.onnx")))
    w32 = _dq_weights(onnx.load(str(root / "f32" / "model.int8.onnx")))
    assert set(w16) == set(w32) and w16
    for name, (real16, s16) in w16.items():
        real32, s32 = w32[name]
        # the same real weights, within half a quantization step of the float16 grid (+ fp16 scale rounding)
        step = s16.reshape(-1, *[1] * (real16.ndim - 1))
        assert np.all(np.abs(real16 - real32) <= 0.5 * step + 1e-3 * np.abs(real32) + 1e-12), name


def test_runs_on_cpu_and_agrees_with_fp32(both):
    root, src, _, _ = both
    x = np.random.default_rng(3).normal(size=(4, 3, *SIZE)).astype(np.float32)
    ref = _run(src, x)[1]
    for d in ("f16", "f32"):
        logits, labels = _run(root / d / "model.int8.onnx", x)
        assert logits.dtype == np.float32 and labels.shape == ref.shape
        assert (labels == ref).mean() >= 0.9, d


def test_bad_choice(tmp_path):
    src = tiny_fp32_onnx(tmp_path / "model.onnx", SIZE)
    with pytest.raises(ExportError, match="--int8-float 'bf16'"):
        export_int8(src, tmp_path, _items(), size=SIZE, trt_float="bf16")
