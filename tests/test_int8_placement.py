"""export.int8_placement: which pooling / Resize nodes the TensorRT file quantizes (graph-level, no quantization run)."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from rdd_edge.export.int8_placement import concat_resizes, is_spatial_mean, not_placed, pools


def _graph():
    """x -> ReduceMean over H, W (axes input, opset 18) / over C / over H, W without keepdims; an AveragePool;
    two Resizes: one into a Concat (a PSPNet bin), one into the graph output (the logits)."""
    inits = [numpy_helper.from_array(np.array(a, np.int64), n) for n, a in
             (("hw", [-1, -2]), ("c", [1]), ("sizes", [1, 4, 8, 8]))]
    nodes = [
        helper.make_node("ReduceMean", ["x", "hw"], ["m1"], name="image_pool", keepdims=1),
        helper.make_node("ReduceMean", ["x", "c"], ["m2"], name="channel_mean", keepdims=1),
        helper.make_node("ReduceMean", ["x", "hw"], ["m3"], name="flat_mean", keepdims=0),
        helper.make_node("AveragePool", ["x"], ["p"], name="bin2", kernel_shape=[4, 4], strides=[4, 4]),
        helper.make_node("Resize", ["p", "", "", "sizes"], ["up"], name="bin_up", mode="linear"),
        helper.make_node("Concat", ["x", "up"], ["cat"], name="cat", axis=1),
        helper.make_node("Resize", ["cat", "", "", "sizes"], ["y"], name="logits_up", mode="linear"),
    ]
    vi = lambda n, s: helper.make_tensor_value_info(n, TensorProto.FLOAT, s)  # noqa: E731
    return helper.make_model(helper.make_graph(nodes, "g", [vi("x", [1, 4, 8, 8])], [vi("y", [1, 8, 8, 8])], inits),
                             opset_imports=[helper.make_opsetid("", 18)])


def test_average_pools_and_bin_resizes_are_placed_the_rest_is_left_alone():
    m = _graph()
    assert pools(m) == ["image_pool", "bin2"]
    assert concat_resizes(m) == ["bin_up"]
    assert not_placed(m) == ["channel_mean", "flat_mean", "logits_up"]


def test_spatial_mean_with_axes_as_an_attribute_opset_13():
    node = helper.make_node("ReduceMean", ["x"], ["m"], axes=[2, 3], keepdims=1)
    assert is_spatial_mean(node, {})
    assert not is_spatial_mean(helper.make_node("ReduceMean", ["x"], ["m"], axes=[1], keepdims=1), {})
    assert not is_spatial_mean(helper.make_node("ReduceMean", ["x", "axes_at_runtime"], ["m"]), {})
