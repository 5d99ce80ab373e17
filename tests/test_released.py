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

UNIT_ROUNDOFF = 2.0**-24  # float32


def float32_tolerance(net: nn.Module, ref: np.ndarray) -> float:
    """How far two float32 runs of ``net`` may differ when their kernels sum in another order.

    The fixtures were computed on one CPU; another one's kernels (AVX2, AVX-512, VNNI/AMX, NEON,
    oneDNN's blockings) add the same products in another order. A dot product over ``n`` terms then
    differs by about ``u * sqrt(n)`` of its magnitude (rounding errors add as a random walk; Higham and
    Mary, "A new approach to probabilistic rounding error analysis", 2019), and the layers of a network
    add their errors: ``u * sqrt(largest fan-in) * convolutions * max|logit|``. Measured on the fixtures
    (AVX-512 vs the AVX2 that made them), the worst case, PSPNet-R18's aux head, differs by 2.5e-5 where
    this gives 5.6e-4; a wrong key mapping or random weights differ by ~1e-1 and more.
    """
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    fan_in = max(m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1] for m in convs)
    return UNIT_ROUNDOFF * float(np.sqrt(fan_in)) * len(convs) * float(np.abs(ref).max())


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
        tol = float32_tolerance(net, ref)
        assert np.abs(ref).max() > 100 * tol and ref.reshape(NUM_CLASSES, -1).std(1).mean() > 10 * tol
        np.testing.assert_allclose(got[k], ref, rtol=0, atol=tol, err_msg=f"{model} {k}")


def test_a_mapping_mistake_or_a_random_init_would_be_caught():
    """The comparison is sensitive: one swapped pair of tensors, or no weights at all, breaks it."""
    _, stored = load_fixture("deeplabv3_r18")
    state = released_state("deeplabv3_r18")
    a, b = "head.aspp.b1.block.0.weight", "head.aspp.b2.block.0.weight"  # same shape, neighbouring branches
    state[a], state[b] = state[b], state[a]
    net = create_model("r18", num_classes=NUM_CLASSES, aux=True)
    tol = float32_tolerance(net, stored["out"])
    load_released(net, state, "swapped")
    assert np.abs(fixture_logits(net, "deeplabv3_r18")["out"] - stored["out"]).max() > 100 * tol
    fresh = create_model("r18", num_classes=NUM_CLASSES, aux=True)
    assert np.abs(fixture_logits(fresh, "deeplabv3_r18")["out"] - stored["out"]).max() > 100 * tol


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


# ---------------------------------------------------------------- rdd-edge import


def _save_released(tmp_path, model: str, prefix: str = "module.", legacy: bool = False) -> "Path":  # noqa: F821
    path = tmp_path / f"{model}.pth"
    torch.save(released_state(model, prefix), path, _use_new_zipfile_serialization=not legacy)
    return path


def test_import_reads_a_legacy_format_file(tmp_path):
    """A released checkpoint in torch's pre-1.6 (non-zip) format imports like a zip archive, tensor for tensor."""
    import zipfile

    from rdd_edge.cli import main

    src = _save_released(tmp_path, "deeplabv3_r18", legacy=True)
    assert not zipfile.is_zipfile(src)
    with pytest.raises(SystemExit) as exc:
        main(["import", str(src), "--model", "r18", "--dataset", "cityscapes", "--name", "legacy", "--runs",
              str(tmp_path / "runs")])
    assert exc.value.code == 0
    model, ckpt = model_from_checkpoint(tmp_path / "runs" / "distill-legacy" / "best.pt")
    assert ckpt["imported"]["tensors"] == 190
    state = released_state("deeplabv3_r18", "")
    assert torch.equal(model.state_dict()["backbone.conv1.0.weight"], state["pretrained.conv1.weight"])


def test_import_refuses_a_legacy_file_carrying_code(tmp_path, capsys):
    import os

    from rdd_edge.cli import main

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "ran"),))

    evil = tmp_path / "evil.pth"
    torch.save({"pretrained.conv1.weight": torch.zeros(1), "x": Payload()}, evil, _use_new_zipfile_serialization=False)
    with pytest.raises(SystemExit):
        main(["import", str(evil), "--model", "r18", "--dataset", "cityscapes", "--runs", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {evil}: refused:") and "system" in err
    assert not (tmp_path / "ran").exists() and not (tmp_path / "runs").exists()


def test_import_command_writes_a_run_that_reproduces_the_released_logits(tmp_path):
    """A DDP-saved (``module.``) R18 state dict -> runs/distill-<name>/best.pt; its network, fed through
    deploy's preprocessing with the recorded normalisation, gives the released logits."""
    from typer.testing import CliRunner

    from rdd_edge.cli import app
    from rdd_edge.deploy.preprocess import preprocess
    from rdd_edge.normalize import CAFFE, IMAGENET, recorded_normalization

    src = _save_released(tmp_path, "deeplabv3_r18")
    runs = tmp_path / "runs"
    res = CliRunner().invoke(app, ["import", str(src), "--model", "r18", "--dataset", "cityscapes", "--name", "cirkd",
                                   "--runs", str(runs)])
    assert res.exit_code == 0, res.output
    run = runs / "distill-cirkd"
    assert res.output.strip().splitlines()[-1] == f"run folder: {run}"
    model, ckpt = model_from_checkpoint(run / "best.pt")
    assert model.has_aux and ckpt["imported"]["tensors"] == 190 and ckpt["dataset"]["name"] == "cityscapes"
    norm = recorded_normalization(ckpt)
    assert norm == CAFFE

    _, stored = load_fixture("deeplabv3_r18")
    image = fixture_image(64, 64)
    x = preprocess(image, (64, 64), norm)
    np.testing.assert_array_equal(x, released_input(image))  # our preprocessing is the released one, exactly
    got = fixture_logits(model, "deeplabv3_r18", x)
    for k in ("out", "aux"):
        np.testing.assert_allclose(got[k], stored[k], rtol=0, atol=float32_tolerance(model, stored[k]), err_msg=k)
    # fed the wrong normalisation (timm's RGB ImageNet mean/std), the same network is caught at once
    wrong = fixture_logits(model, "deeplabv3_r18", preprocess(image, (64, 64), IMAGENET))["out"]
    assert np.abs(wrong - stored["out"]).max() > 1000 * float32_tolerance(model, stored["out"])


def test_import_refuses_a_checkpoint_of_another_class_count_in_one_line(tmp_path):
    from rdd_edge.cli import main

    src = _save_released(tmp_path, "deeplabv3_r18")
    runs = tmp_path / "runs"
    with pytest.raises(SystemExit) as exc:
        main(["import", str(src), "--model", "r18", "--dataset", "camvid", "--runs", str(runs)])
    assert exc.value.code == 1
    assert not runs.exists()  # nothing written


def test_import_error_line(tmp_path, capsys):
    from rdd_edge.cli import main

    src = _save_released(tmp_path, "deeplabv3_r18", prefix="")
    with pytest.raises(SystemExit):
        main(["import", str(src), "--model", "mbv2", "--dataset", "cityscapes", "--runs", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {src}: does not fit deeplabv3_mbv2")
    assert "missing keys (pretrained.net.features.0.0.weight" in err and "unexpected keys (pretrained.conv1.weight" in err


def test_import_reads_only_through_the_safe_unpickler(tmp_path, capsys):

    from rdd_edge.cli import main

    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pth"
    torch.save({"pretrained.conv1.weight": torch.zeros(1), "x": Payload()}, evil)
    with pytest.raises(SystemExit):
        main(["import", str(evil), "--model", "r18", "--dataset", "cityscapes", "--runs", str(tmp_path / "runs")])
    out = capsys.readouterr()
    assert "pwned" not in out.out and "refused" in out.err


def test_an_imported_teacher_drives_distill_eval_difficulty_and_export(tmp_path, monkeypatch):
    """The released R18 (19 classes) imported as a teacher: a student distils from it, each fed its own
    normalisation (teacher: the released BGR caffe-mean input; student: timm's RGB ImageNet one, from a
    timm-layout backbone file); eval and difficulty run; export, with no data folder at hand, checks parity on
    synthetic scenes and its uint8 graph reproduces the released logits (upsampled as the export upsamples)."""
    import json

    import torch.nn.functional as F
    from data_utils import cityscapes
    from typer.testing import CliRunner

    import rdd_edge.distill.train as train_mod
    from rdd_edge.cli import app
    from rdd_edge.export.parity import run_onnx
    from rdd_edge.normalize import CAFFE, IMAGENET

    data, runs = tmp_path / "cs", tmp_path / "runs"
    cityscapes(data, n=2)
    r = CliRunner()
    res = r.invoke(app, ["import", str(_save_released(tmp_path, "deeplabv3_r18")), "--model", "r18", "--dataset",
                         "cityscapes", "--name", "t", "--runs", str(runs)])
    assert res.exit_code == 0, res.output
    teacher = runs / "distill-t"

    timm_mbv2 = tmp_path / "mbv2-timm.pth"  # a timm-layout ImageNet backbone, made here
    torch.save({k[len("backbone."):]: v for k, v in create_model("mbv2", num_classes=3).state_dict().items()
                if k.startswith("backbone.")}, timm_mbv2)
    seen: dict[str, list] = {"teacher": [], "student": []}
    real_teacher, real_build = train_mod.load_teacher, train_mod.build_model

    def spy_teacher(*a, **k):
        model, ckpt = real_teacher(*a, **k)
        model.register_forward_pre_hook(lambda m, args: seen["teacher"].append(args[0].clone()))
        return model, ckpt

    def spy_build(*a, **k):
        model = real_build(*a, **k)
        model.register_forward_pre_hook(lambda m, args: seen["student"].append(args[0].clone()) if m.training else None)
        return model

    monkeypatch.setattr(train_mod, "load_teacher", spy_teacher)
    monkeypatch.setattr(train_mod, "build_model", spy_build)
    tiny = ["--dataset", "cityscapes", "--data", str(data), "--crop", "24x32", "--eval-size", "24x32", "--batch", "2",
            "--device", "cpu", "--runs", str(runs), "-q", "--set", "tensorboard=false", "--workers", "0"]
    res = r.invoke(app, ["distill", "--teacher", str(teacher), "--student", "mbv2", "--head-channels", "8", "--iters", "2",
                         "--val-every", "2", "--name", "s", "--pretrained", str(timm_mbv2), *tiny])
    assert res.exit_code == 0, res.output
    assert "pretrained: loaded" in res.output and "(timm layout)" in res.output
    cfg = json.loads((runs / "distill-s" / "config.json").read_text())
    assert cfg["normalization"] == "imagenet" and cfg["pretrained_report"]["layout"] == "timm"
    assert cfg["pretrained_report"]["missing"] == [] and cfg["pretrained_report"]["loaded"] > 0
    # each network got its own input: undo each normalisation independently, both give the same 0..255 RGB pixels
    s_in, t_in = seen["student"][0], seen["teacher"][0]
    mean, std = torch.tensor(IMAGENET.mean).view(1, 3, 1, 1), torch.tensor(IMAGENET.std).view(1, 3, 1, 1)
    rgb_student = (s_in * std + mean) * 255.0
    rgb_teacher = t_in[:, [2, 1, 0]] + torch.tensor(CAFFE.mean[::-1]).view(1, 3, 1, 1)
    torch.testing.assert_close(rgb_teacher, rgb_student, atol=2e-3, rtol=0)  # elementwise float32 on 0..255: ~1e-4 apart
    assert (t_in - s_in).abs().max() > 50  # not the same tensor

    res = r.invoke(app, ["eval", str(teacher), "--data", str(data), "--device", "cpu", "--eval-size", "24x32"])
    assert res.exit_code == 0 and "mIoU" in res.output, res.output
    res = r.invoke(app, ["difficulty", str(runs / "distill-s"), "--images", "1", "--device", "cpu", "--data", str(data)])
    assert res.exit_code == 0, res.output

    res = r.invoke(app, ["export", str(teacher), "--size", "64x64", "--outputs", "logits", "--embed-preprocess", "uint8",
                         "--runs", str(runs)])
    assert res.exit_code == 0, res.output
    assert "mIoU is not scored" in " ".join(res.output.split())
    manifest = json.loads((teacher / "export" / "manifest.json").read_text())
    assert manifest["normalization"] == CAFFE.as_dict() and manifest["artifacts"]["onnx"]["miou"] is None
    _, stored = load_fixture("deeplabv3_r18")
    image = fixture_image(64, 64)
    logits = run_onnx(teacher / "export" / "model.onnx", np.ascontiguousarray(image.transpose(2, 0, 1))[None])["logits"]
    ref = F.interpolate(torch.from_numpy(stored["out"]), size=(64, 64), mode="bilinear", align_corners=False).numpy()
    # ONNX Runtime's kernels sum in their own order: the same float32 bound as torch on another CPU
    np.testing.assert_allclose(logits, ref, rtol=0, atol=float32_tolerance(create_model("r18", num_classes=NUM_CLASSES), ref))
