"""Quantization-aware distillation (``rdd-edge qat``, issue 28): the fake-quantized student and its refusals.

The fake quantization is checked against an independent numpy QuantizeLinear/DequantizeLinear (TensorRT's
contract: symmetric, zero point 0); the BN fold against the unfolded network. The end-to-end case (a hostile
student whose PTQ files fail the budget, brought within it by ``rdd-edge qat``) shares the hostile exports of
tests/test_int8_budget.py and lives there.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from rdd_edge.errors import RddError
from rdd_edge.export.qad import QadSpec, command, run_qad
from rdd_edge.export.qad_torch import fake_input, fake_quantized, fake_weight, fold_batchnorm, folded_bias, trainable


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 4, 1, bias=True), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 2)
                m.bias.uniform_(-1, 1)
    return net.eval()


def _qdq(x: np.ndarray, scale: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """ONNX QuantizeLinear (round half to even, saturate) then DequantizeLinear, zero point 0."""
    return np.clip(np.rint(x / scale), lo, hi) * scale


def test_batchnorm_folds_into_the_conv_before_it_and_the_function_is_unchanged():
    net, x = _net(), torch.randn(2, 3, 8, 8)
    ref = net(x)
    pairs = fold_batchnorm(net, x)
    assert pairs == [("0", "1"), ("3", "4")]  # the last conv has no BN
    torch.testing.assert_close(net(x), ref, rtol=1e-5, atol=1e-5)
    bn = net[1]
    assert torch.all(bn.weight == 1) and torch.all(bn.running_mean == 0)
    # the folded conv alone, plus its folded bias, is the conv + BN of before
    y = nn.functional.conv2d(x, net[0].weight, folded_bias(net, "0", pairs), padding=1)
    torch.testing.assert_close(y, net[1](net[0](x)), rtol=1e-5, atol=1e-5)
    assert net[3].bias.abs().max() == 0 and folded_bias(net, "3", pairs) is not None  # its own bias moved into the BN


def test_fake_quantization_is_tensorrt_symmetric_int8_with_straight_through_gradients():
    w = torch.randn(4, 3, 3, 3) * torch.tensor([1.0, 10.0, 0.1, 3.0]).view(-1, 1, 1, 1)
    s = w.abs().amax(dim=(1, 2, 3)).numpy() / 127
    np.testing.assert_allclose(fake_weight(w).numpy(), _qdq(w.numpy(), s.reshape(-1, 1, 1, 1), -127, 127), rtol=0, atol=1e-6)
    x = torch.linspace(-3, 3, 101, requires_grad=True)
    y = fake_input(x, 0.02)  # 0.02 * 127 = 2.54: the ends saturate
    np.testing.assert_allclose(y.detach().numpy(), _qdq(x.detach().numpy(), np.float32(0.02), -128, 127), atol=1e-6)
    y.sum().backward()
    inside = (x.detach() >= -128 * 0.02) & (x.detach() <= 127 * 0.02)
    assert torch.equal(x.grad, inside.float())  # straight through inside the range, zero where clipped


def test_fake_quantized_patches_only_inside_the_block_and_trains_only_conv_weights_and_biases():
    net, x = _net(), torch.randn(2, 3, 8, 8)
    pairs = fold_batchnorm(net, x)
    keys, ref = list(net.state_dict()), net(x)
    with fake_quantized(net, {"0": 0.05, "3": 0.05}) as patched:
        assert patched == ["0", "3"]
        q = net(x)
        assert not torch.allclose(q, ref)
        np.testing.assert_allclose(q.detach().numpy(), ref.detach().numpy(), atol=0.3)  # close: 8 bits
    torch.testing.assert_close(net(x), ref)
    assert list(net.state_dict()) == keys  # a checkpoint of it loads into the same architecture
    params = trainable(net, pairs)
    assert {id(p) for p in net.parameters() if p.requires_grad} == {id(p) for p in params}
    assert not net[1].weight.requires_grad and net[1].bias.requires_grad


def test_a_missing_run_or_an_export_of_another_checkpoint_is_one_line(tmp_path):
    with pytest.raises(RddError) as err:
        run_qad(QadSpec(tmp_path / "nope"))
    assert "\n" not in str(err.value) and "nope" in str(err.value)
    run = tmp_path / "distill-a"
    run.mkdir()
    (run / "best.pt").write_bytes(b"not the exported one")
    with pytest.raises(RddError) as err:
        run_qad(QadSpec(run))
    assert "\n" not in str(err.value) and "rdd-edge export" in str(err.value) and "--int8" in str(err.value)
    (run / "export").mkdir()
    (run / "export" / "manifest.json").write_text(json.dumps({
        "format": "rdd-edge-export", "model_name": "deeplabv3_mbv2", "source_checkpoint": "/elsewhere/best.pt",
        "source_sha256": "0" * 64, "artifacts": {"onnx": {}, "int8": {}, "int8-cpu": {}}}))
    with pytest.raises(RddError) as err:
        run_qad(QadSpec(run))
    msg = str(err.value)
    assert "\n" not in msg and "exported from /elsewhere/best.pt" in msg and f"rdd-edge export {run} --int8" in msg


def test_options_are_checked_before_any_work(tmp_path):
    for spec, word in ((QadSpec(tmp_path, iters=0), "--iters"), (QadSpec(tmp_path, lr=0), "--lr"),
                       (QadSpec(tmp_path, batch=0), "--batch")):
        with pytest.raises(RddError, match=word):
            run_qad(spec)
    assert command("runs/distill-x", 200) == "rdd-edge qat runs/distill-x --iters 200 --int8-only --equalize"


def test_the_int8_report_shows_the_qad_result_per_file_in_80_columns():
    from rdd_edge.export.int8_report import qad_lines

    q = {"iterations": 60, "lr": 1e-3, "teacher": "/runs/teacher-r18/best.pt", "loss": {"first": 0.51, "last": 0.14},
         "files": {"int8-cpu": {"before": {"drop": 12.82, "agreement": 93.2}, "after": {"drop": 0.8, "agreement": 99.1}},
                   "int8": {"before": {"drop": 40.11, "agreement": 73.2}, "after": {"drop": 1.2, "agreement": 98.7}}}}
    lines = qad_lines(q)
    assert max(map(len, lines)) <= 80 and "teacher best.pt" in lines[0] and "0.510 -> 0.140" in lines[0]
    text = " ".join(" ".join(lines).split())
    assert "int8-cpu: PTQ drop 12.82 (agree 93.2%) -> QAD 0.80 (agree 99.1%)" in text
    assert "int8 (TensorRT): PTQ drop 40.11 (agree 73.2%) -> QAD 1.20 (agree 98.7%)" in text
    assert "its own FP32 student" in qad_lines({**q, "teacher": "self"})[0]


def test_a_budget_float_layers_cannot_reach_offers_the_exact_qad_commands(monkeypatch, tmp_path):
    """--int8-budget P that float islands within --int8-max-float cannot reach: the one error line says so (as
    before) and gives the commands that run QAD on this run instead, never silently."""
    import types

    import rdd_edge.export.int8 as int8
    from rdd_edge.export.builders import build_int8
    from rdd_edge.export.int8_budget import BudgetNotMet

    said = "--int8-budget 1: int8 still loses 20.05 mIoU points with 2 of 59 layers in float (at most 2, ...)"

    def unreachable(*args, **kwargs):
        raise BudgetNotMet(said, 1.0)

    monkeypatch.setattr(int8, "export_int8", unreachable)
    run = tmp_path / "runs" / "distill-x"
    spec = types.SimpleNamespace(budget=1.0, int8_report=False, calib_method="percentile", keep_float=(), int8_max_float=2,
                                 int8_loo=None, int8_float="fp16")
    ctx = types.SimpleNamespace(spec=spec, out=tmp_path, calib_items=[], size=(48, 96), normalization=None, scorer=None,
                                log=print, model=None, ckpt_path=run / "best.pt", path=lambda key: tmp_path / key)
    with pytest.raises(BudgetNotMet) as err:
        build_int8(ctx, ("int8", "int8-cpu"))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(said)
    assert msg.endswith(f"rdd-edge export {run} --int8, then rdd-edge qat {run} --iters 200 --int8-only --equalize --max-drop 1")
