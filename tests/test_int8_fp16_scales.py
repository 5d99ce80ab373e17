"""The TensorRT INT8 file with FP16 float math keeps tiny weight scales instead of failing on them.

A barely trained ResNet-18 (timm's zero-initialised block BatchNorm folded into its conv) has channels
whose per-channel weight scale is below float16's range; the export used to stop with "weight scale ...
underflows float16" (or, between 3e-8 and 1e-7, let the float16 converter raise the scale under the
weights, doubling them). Each weight must stay within half a float16 quantization step of its real value.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from rdd_edge.export.int8 import FP16_MIN_SCALE, _float16_qdq


def _dq_conv(scales: np.ndarray, q: np.ndarray) -> onnx.ModelProto:
    """x -> Conv(x, DequantizeLinear(q, scales, 0; axis 0)) -> y, opset 18 like quantize_static's files."""
    c_out, c_in = q.shape[:2]
    inits = [numpy_helper.from_array(q, "w_q"), numpy_helper.from_array(scales.astype(np.float32), "w_scale"),
             numpy_helper.from_array(np.zeros(c_out, np.int8), "w_zp")]
    nodes = [helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"], name="w_dq", axis=0),
             helper.make_node("Conv", ["x", "w"], ["y"], name="conv")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c_in, 2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c_out, 2, 2])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _weights(model: onnx.ModelProto) -> np.ndarray:
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    scale = inits["w_scale"].astype(np.float64)
    return inits["w_q"].astype(np.float64) * scale.reshape(-1, 1, 1, 1)


def test_tiny_weight_scales_survive_float16_within_half_a_step():
    # channel 0 underflows float16 outright, channel 1 is a float16 subnormal under the converter's floor,
    # channel 2 is an ordinary scale
    scales = np.array([1e-9, 5e-8, 0.02])
    q = np.array([[127, -64], [127, -90], [100, -50]], np.int8).reshape(3, 2, 1, 1)
    model = _dq_conv(scales, q)
    real = _weights(model)
    half = _float16_qdq(model)  # raised ExportError ("underflows float16") before
    got = _weights(half)
    inits = {t.name: t for t in half.graph.initializer}
    assert inits["w_scale"].data_type == TensorProto.FLOAT16
    step = numpy_helper.to_array(inits["w_scale"]).astype(np.float64)
    assert np.all(step >= np.float16(FP16_MIN_SCALE))
    assert np.all(np.abs(got - real) <= step.reshape(-1, 1, 1, 1) / 2 + 1e-12), (got.ravel(), real.ravel())
    # the file runs, and its output is the real weights' output to within those half steps
    import onnxruntime as ort

    x = np.random.default_rng(0).standard_normal((1, 2, 2, 2)).astype(np.float32)
    sess = ort.InferenceSession(half.SerializeToString(), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"x": x})[0].astype(np.float64)
    want = np.einsum("oi,bihw->bohw", real[:, :, 0, 0], x.astype(np.float64))
    bound = np.abs(x).sum(axis=1, keepdims=True) * (step.reshape(1, -1, 1, 1) / 2) + 1e-3 * np.abs(want) + 1e-9
    assert np.all(np.abs(y - want) <= bound)
