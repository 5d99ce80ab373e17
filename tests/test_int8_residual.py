"""export.int8_residual: which side of an Add is the residual one (graph-level, no quantization run)."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from rdd_edge.export.int8_residual import constant_adds, residual_adds


def _graph():
    """x -> A -> relu: r; identity block: r -> B -> relu -> C, Add(r, C); downsample block: s = Add out,
    s -> D -> relu -> E (main, two convs), s -> F (downsample, one conv), Add(E, F); a constant Add; a
    two-branch Add with one conv each (same depth)."""
    w = numpy_helper.from_array(np.ones((4, 4, 1, 1), np.float32), "w")
    k = numpy_helper.from_array(np.ones((1, 4, 1, 1), np.float32), "k")
    conv = lambda name, i, o: helper.make_node("Conv", [i, "w"], [o], name=name)  # noqa: E731
    relu = lambda name, i, o: helper.make_node("Relu", [i], [o], name=name)  # noqa: E731
    nodes = [conv("A", "x", "a"), relu("ra", "a", "r"),
             conv("B", "r", "b"), relu("rb", "b", "b1"), conv("C", "b1", "c"), helper.make_node("Add", ["r", "c"], ["s"], name="add_identity"),
             conv("D", "s", "d"), relu("rd", "d", "d1"), conv("E", "d1", "e"), conv("F", "s", "f"),
             helper.make_node("Add", ["e", "f"], ["t"], name="add_downsample"),
             helper.make_node("Add", ["t", "k"], ["u"], name="add_const"),
             conv("G", "u", "g"), conv("H", "u", "h"), helper.make_node("Add", ["g", "h"], ["y"], name="add_even")]
    vi = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4, 2, 2])  # noqa: E731
    return helper.make_model(helper.make_graph(nodes, "g", [vi("x")], [vi("y")], [w, k]))


def test_the_residual_side_is_the_shallower_one_and_constant_adds_are_left_alone():
    m = _graph()
    assert residual_adds(m) == {"add_identity": 0, "add_downsample": 1, "add_even": None}
    assert constant_adds(m) == ["add_const"]
