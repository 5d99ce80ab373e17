"""--recipe release: every option of the released scripts at once, and the options it needs (TFE KL direction,
align_corners upsampling, discrete scales, fp16 autocast); the defaults stay the paper's variant."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rdd_edge.distill.config import make_config
from rdd_edge.distill.data import draw_scale
from rdd_edge.distill.rdd import tfe_weights, weighted_ce

# Read by hand from the released scripts (github.com/sunyueue/RDD train_onlykd_two_stage_diff.py argparse defaults,
# train_scripts/exp_table_1/train_different_student_two_stage.sh, dataset/cityscapes.py, losses/loss.py), written
# here independently of distill/recipes.py: a change to either shows as a difference.
RELEASED_DISTILL = {
    "iters": 40000, "batch": 16, "lr": 0.02, "momentum": 0.9, "weight_decay": 1e-4, "poly_power": 0.9,
    "crop": (512, 1024), "scale_min": 0.5, "scale_max": 2.0, "scale_step": 0.1, "val_every": 1600,
    "method": "kd", "kd_weight": 1.0, "kd_options": {"T": 1.0}, "rdd": True, "tfe_fraction": 0.1, "rdd_mode": "xor",
    "rdd_threshold": 0.7, "confidence": "gt", "rdd_class_weights": "cityscapes", "tfe_kl": "aux_main",
    "tfe_average": "all", "aux_weight": 0.4, "amp": True, "amp_dtype": "fp16", "align_corners": True,
    "rdd_min_kept": 400000,  # 100000 per GPU of 4 crops; one process holds all 16
    "init": "release",
}
# CIRKD at 91735ef: train_baseline.py defaults and train_scripts/train_baseline/citys/deeplabv3_res101.sh
RELEASED_TEACHER = {
    "iters": 40000, "batch": 16, "lr": 0.02, "momentum": 0.9, "weight_decay": 1e-4, "poly_power": 0.9,
    "crop": (512, 1024), "scale_min": 0.5, "scale_max": 2.0, "scale_step": 0.1, "aux": True, "aux_weight": 0.4,
    "val_every": 800, "amp": False, "align_corners": True, "init": "release",
}


@pytest.mark.parametrize("mode,expected", [("distill", RELEASED_DISTILL), ("teacher", RELEASED_TEACHER)])
def test_recipe_release_sets_every_released_option(mode, expected, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    cfg = make_config(mode, "cityscapes", recipe="release")
    got = {k: getattr(cfg, k) for k in expected}
    assert got == expected
    base = make_config(mode, "cityscapes")
    changed = {line.split(":")[0] for line in cfg.recipe_changes}
    assert changed == {k for k in expected if getattr(base, k) != expected[k]}  # the printed list is exactly the changes
    assert all("\n" not in line and "->" in line for line in cfg.recipe_changes)


def test_explicit_options_win_and_min_kept_scales_per_process(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    cfg = make_config("distill", "cityscapes", recipe="release", iters=500, tfe_kl="main_aux")
    assert (cfg.iters, cfg.tfe_kl, cfg.rdd_min_kept) == (500, "main_aux", 100000)  # 4 crops per process, as released
    assert not any(line.startswith(("iters:", "tfe_kl:")) for line in cfg.recipe_changes)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert make_config("distill", "cityscapes", recipe="release", batch=8).rdd_min_kept == 100000


def test_defaults_stay_the_papers_variant():
    cfg = make_config("distill", "cityscapes")
    assert (cfg.recipe, cfg.tfe_kl, cfg.tfe_average, cfg.align_corners, cfg.scale_step, cfg.amp_dtype, cfg.rdd_min_kept,
            cfg.rdd_class_weights, cfg.recipe_changes, cfg.init) == (None, "main_aux", "valid", False, 0.0, "auto", 0, None, [],
                                                           "timm")


def test_the_cli_prints_what_the_recipe_changed(tmp_path):
    from typer.testing import CliRunner

    from rdd_edge.cli import app

    res = CliRunner().invoke(app, ["distill", "--recipe", "release", "--dataset", "synthetic", "--teacher",
                                   str(tmp_path / "none.pt"), "--runs", str(tmp_path / "runs"), "--iters", "2"])
    lines = res.output.splitlines()
    assert lines[0].startswith("recipe release: ") and "settings changed" in lines[0]
    assert any(line.strip().startswith("tfe_kl: 'main_aux' -> 'aux_main'") for line in lines)
    assert not any(line.strip().startswith("iters:") for line in lines)  # --iters 2 is the user's


def test_tfe_kl_aux_main_is_the_released_kl_direction():
    """The release: variance = sum_c KLDivLoss(reduction='none')(log_softmax(main), softmax(aux)), w = exp(-variance)."""
    g = torch.Generator().manual_seed(0)
    main, aux = torch.randn(2, 5, 6, 7, generator=g) * 3, torch.randn(2, 5, 6, 7, generator=g) * 3
    released = torch.exp(-torch.nn.KLDivLoss(reduction="none")(F.log_softmax(main, 1), F.softmax(aux, 1)).sum(1))
    torch.testing.assert_close(tfe_weights(main, aux, (6, 7), kl="aux_main"), released, rtol=0, atol=1e-6)
    assert (tfe_weights(main, aux, (6, 7)) - released).abs().max() > 1e-2  # the paper's direction differs
    # resized to the label size the released way (bilinear, align_corners=True)
    up = F.interpolate(released.unsqueeze(1), (12, 14), mode="bilinear", align_corners=True).squeeze(1)
    torch.testing.assert_close(tfe_weights(main, aux, (12, 14), kl="aux_main", align_corners=True), up,
                               rtol=0, atol=1e-6)


def test_align_corners_upsamples_logits_as_the_release():
    g = torch.Generator().manual_seed(1)
    logits, target = torch.randn(2, 4, 5, 6, generator=g), torch.randint(0, 4, (2, 20, 24), generator=g)
    ones = torch.ones(target.shape)
    released = F.cross_entropy(F.interpolate(logits, (20, 24), mode="bilinear", align_corners=True), target)
    torch.testing.assert_close(weighted_ce(logits, target, ones, align_corners=True), released, rtol=0, atol=1e-6)
    assert abs(float(weighted_ce(logits, target, ones)) - float(released)) > 1e-4


def test_scale_step_draws_the_released_scale_set():
    rng = np.random.default_rng(0)
    draws = {draw_scale(rng, 0.5, 2.0, 0.1) for _ in range(2000)}
    assert draws == {round(0.5 + i / 10, 10) for i in range(16)}  # 0.5 + randint(0, 15) / 10
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    assert draw_scale(a, 0.5, 2.0) == b.uniform(0.5, 2.0)  # step 0: the continuous draw, unchanged


def test_amp_dtype_fp16_on_a_bf16_capable_gpu(monkeypatch):
    from rdd_edge.distill import train as T

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    for choice, expected in (("auto", torch.bfloat16), ("fp16", torch.float16), ("bf16", torch.bfloat16)):
        cfg = make_config("distill", "synthetic", amp_dtype=choice)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # GradScaler("cuda") on a machine without CUDA warns and disables itself
            _, _, dtype = T.amp_setup(cfg, torch.device("cuda"))
        assert dtype == expected, choice


def test_tfe_average_batch_is_the_released_at_cwd_scripts_loss():
    """train_other_kd_two_stage_diff.py: its CE (losses/task.py) returns the mean over valid pixels whatever the
    reduction asked, so the TFE loss is (CE_main + 0.4 CE_aux) x the mean TFE weight over all pixels."""
    from rdd_edge.distill.rdd import RDDWeighting

    g = torch.Generator().manual_seed(2)
    s_out, s_aux = torch.randn(2, 4, 5, 6, generator=g), torch.randn(2, 4, 5, 6, generator=g)
    t_out, t_aux = torch.randn(2, 4, 5, 6, generator=g) * 2, torch.randn(2, 4, 5, 6, generator=g) * 2
    target = torch.randint(0, 4, (2, 20, 24), generator=g)
    target[0, :5] = 255
    rdd = RDDWeighting(tfe_fraction=1.0, tfe_average="batch", tfe_kl="aux_main", align_corners=True)
    loss, _ = rdd.task_loss({"out": s_out, "aux": s_aux}, {"out": t_out, "aux": t_aux}, target, stage="tfe")

    def ce(x):  # the release's SegCrossEntropyLoss (losses/task.py)
        up = F.interpolate(x, (20, 24), mode="bilinear", align_corners=True)
        return torch.nn.CrossEntropyLoss(ignore_index=255)(up, target)

    variance = torch.sum(torch.nn.KLDivLoss(reduction="none")(F.log_softmax(t_out, 1), F.softmax(t_aux, 1)), dim=1)
    scale = F.interpolate(torch.exp(-variance).unsqueeze(1), (20, 24), mode="bilinear", align_corners=True).squeeze()
    released = torch.mean((ce(s_out) + 0.4 * ce(s_aux)) * scale)
    torch.testing.assert_close(loss, released, rtol=1e-6, atol=1e-6)
    per_pixel = RDDWeighting(tfe_fraction=1.0, tfe_average="all", tfe_kl="aux_main", align_corners=True)
    other, _ = per_pixel.task_loss({"out": s_out, "aux": s_aux}, {"out": t_out, "aux": t_aux}, target, stage="tfe")
    assert abs(float(other) - float(released)) > 1e-3


def test_recipe_release_with_another_kd_method_or_none():
    at = make_config("distill", "cityscapes", recipe="release", method="at")
    assert (at.method, at.tfe_average, at.kd_options, at.rdd) == ("at", "batch", {}, True)
    base = make_config("distill", "cityscapes", recipe="release", method="none", rdd=False)
    assert (base.rdd, base.tfe_kl, base.amp_dtype, base.align_corners) == (False, "main_aux", "fp16", True)


@pytest.mark.parametrize("model", ["deeplabv3_r18", "deeplabv3_mbv2"])
def test_release_init_statistics(model):
    """He fan-out over every output channel (depthwise convs too), BatchNorm 1/0, no zero-initialised last BN;
    timm's own init differs in exactly those places."""
    import torch.nn as nn

    from rdd_edge.distill.train import build_model

    torch.manual_seed(0)
    cfg = make_config("distill", "synthetic", model=model, pretrained="none", init="release")
    net = build_model(cfg, 5, init=True)
    timm_net = build_model(make_config("distill", "synthetic", model=model, pretrained="none"), 5, init=True)
    convs = [(n, m) for n, m in net.backbone.named_modules() if isinstance(m, nn.Conv2d) and m.weight.numel() >= 2000]
    for name, m in convs:
        k, out = m.kernel_size[0] * m.kernel_size[1], m.out_channels
        expected = (2.0 / (k * out)) ** 0.5  # the release: normal_(0, sqrt(2 / n)), n = k * k * out_channels
        assert float(m.weight.detach().std()) == pytest.approx(expected, rel=0.1), name
    bns = [m for m in net.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(bool((b.weight == 1).all() and (b.bias == 0).all()) for b in bns)
    timm_modules = dict(timm_net.backbone.named_modules())
    if model == "deeplabv3_r18":  # timm zero-initialises each residual block's last BN
        assert any(bool((m.weight == 0).all()) for m in timm_modules.values() if isinstance(m, nn.BatchNorm2d))
    else:  # timm's depthwise convs: fan-out k*k only, about sqrt(channels) wider than the release's
        dw = [(n, m) for n, m in convs if m.groups > 1]
        assert dw and all(float(timm_modules[n].weight.detach().std()) > 5 * float(m.weight.detach().std()) for n, m in dw)


def test_eval_upsamples_logits_with_align_corners_when_asked():
    """The released eval.py: interpolate(outputs[0], (H, W), bilinear, align_corners=True) before the argmax."""
    from rdd_edge.distill.evaluate import predict_logits

    class EighthRes(torch.nn.Module):
        def forward(self, x):
            return {"out": F.avg_pool2d(x, 8) * torch.tensor([1.0, -2.0, 3.0]).view(1, 3, 1, 1)}

    x = torch.randn(1, 3, 32, 48, generator=torch.Generator().manual_seed(4))
    logits = EighthRes()(x)["out"]
    for align in (True, False):
        expected = F.interpolate(logits, (32, 48), mode="bilinear", align_corners=align).softmax(1)
        torch.testing.assert_close(predict_logits(EighthRes(), x, align_corners=align), expected, rtol=0, atol=1e-6)
