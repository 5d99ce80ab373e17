"""The paper's released networks: key mapping, exact logits, `rdd-edge import`, the recorded normalisation.

Fixtures (tests/data/released, made as its README says): the released model code's state-dict key
lists, conv settings and logits for weights computed by tests/released_fixture.py. Here the same
weights are rebuilt without the released code, mapped onto our networks and run.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from released_fixture import FIXTURES, NUM_CLASSES, fixture_image, load_fixture, released_input, state_dict_values
from rdd_edge.errors import CheckpointError
from rdd_edge.models import create_model, model_from_checkpoint
from rdd_edge.models.released import load_released, released_names

ATOL = 1e-5  # float32, same ops in another order; the logits' spread is ~1e-2 and more


def released_state(model: str, prefix: str = "") -> dict[str, torch.Tensor]:
    meta, _ = load_fixture(model)
    return {prefix + k: torch.from_numpy(v) for k, v in state_dict_values(meta["keys"]).items()}


def fixture_logits(net: nn.Module, model: str, x: np.ndarray | None = None) -> dict[str, np.ndarray]:
    h, w = FIXTURES[model][1]
    x = released_input(fixture_image(h, w)) if x is None else x
    with torch.no_grad():
        out = net.eval()(torch.from_numpy(x))
    return {k: v.numpy() for k, v in out.items()}


@pytest.mark.parametrize("model", list(FIXTURES))
def test_released_state_dict_maps_one_to_one_and_gives_identical_logits(model):
    meta, stored = load_fixture(model)
    net = create_model(model, num_classes=NUM_CLASSES, aux="aux" in stored)
    names = released_names(net)
    shapes = {k: tuple(s) for k, s in meta["keys"]}
    assert set(names) == set(shapes) and len(set(names.values())) == len(names)  # a bijection onto ours
    own = net.state_dict()
    assert all(tuple(own[names[k]].shape) == shapes[k] for k in shapes)
    assert sum(p.numel() for p in net.parameters()) == meta["params"]
    modules = dict(net.named_modules())
    for key, setting in meta["convs"].items():  # stride, padding, dilation, groups of every convolution
        conv = modules[names[key].rsplit(".", 1)[0]]
        assert [list(conv.stride), list(conv.padding), list(conv.dilation), conv.groups] == setting, key

    assert load_released(net, released_state(model), "fixture") == len(shapes)
    got = fixture_logits(net, model)
    assert set(got) == set(stored)
    for k, ref in stored.items():
        assert np.abs(ref).max() > 100 * ATOL and ref.reshape(NUM_CLASSES, -1).std(1).mean() > 100 * ATOL
        np.testing.assert_allclose(got[k], ref, rtol=0, atol=ATOL, err_msg=f"{model} {k}")


def test_a_mapping_mistake_or_a_random_init_would_be_caught():
    """The comparison is sensitive: one swapped pair of tensors, or no weights at all, breaks it."""
    _, stored = load_fixture("deeplabv3_r18")
    state = released_state("deeplabv3_r18")
    a, b = "head.aspp.b1.block.0.weight", "head.aspp.b2.block.0.weight"  # same shape, neighbouring branches
    state[a], state[b] = state[b], state[a]
    net = create_model("r18", num_classes=NUM_CLASSES, aux=True)
    load_released(net, state, "swapped")
    assert np.abs(fixture_logits(net, "deeplabv3_r18")["out"] - stored["out"]).max() > 100 * ATOL
    fresh = create_model("r18", num_classes=NUM_CLASSES, aux=True)
    assert np.abs(fixture_logits(fresh, "deeplabv3_r18")["out"] - stored["out"]).max() > 100 * ATOL


def test_misfit_names_missing_unexpected_and_the_first_shape_mismatch():
    state = released_state("deeplabv3_r18")
    net = create_model("r18", num_classes=11, aux=True)  # a 19-class checkpoint for an 11-class data set
    with pytest.raises(CheckpointError) as exc:
        load_released(net, state, "r18.pth")
    msg = str(exc.value)
    assert msg.startswith("r18.pth: does not fit deeplabv3_r18 with 11 classes")
    assert "0 missing keys; 0 unexpected keys" in msg
    assert "first shape mismatch: head.block.4.weight (19, 128, 1, 1) in the file vs (11, 128, 1, 1) here (4 in all)" in msg
    assert "\n" not in msg

    del state["pretrained.conv1.weight"], state["head.aspp.b0.0.weight"]
    state["fc.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError) as exc:
        load_released(create_model("r18", num_classes=19, aux=True), state, "r18.pth")
    msg = str(exc.value)
    assert "2 missing keys (pretrained.conv1.weight, head.aspp.b0.0.weight)" in msg and "1 unexpected keys (fc.weight)" in msg
    assert "shape mismatch" not in msg
