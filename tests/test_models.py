"""models/: registry, networks (shapes, aux, features, sizes vs the paper), checkpoints, FLOPs, CLI."""

import zipfile

import pytest
import torch
import torch.nn as nn

from rdd_edge.models import (
    count_flops,
    count_params,
    create_model,
    list_models,
    load_checkpoint,
    load_weights,
    model_from_checkpoint,
    resolve_name,
    save_checkpoint,
)
from rdd_edge.models.networks import default_cfgs
from rdd_edge.models.registry import aliases_of, model_cfg
from rdd_edge.errors import CheckpointError, ConfigError, ModelError

# Every variant of the model table (models/networks.py default_cfgs), sorted as `rdd-edge models` lists them:
# a new row is covered here without editing these tests
NAMES = sorted(default_cfgs)
STUDENTS = [n for n in NAMES if model_cfg(n)["role"] == "student"]
V1S = [n for n in NAMES if "v1s" in model_cfg(n)["arch"]]  # ResNet-v1s backbones (the released ResNets)
PAPER = [n for n in NAMES if model_cfg(n)["paper_params_m"] is not None]  # the paper's networks, with its figures
# The released networks' parameter counts with aux heads (ResNets), 19 classes: counted on the released model
# code (github.com/sunyueue/RDD models/), the paper's 61.12 / 13.61 / 3.23 / 12.92 M
RELEASED_PARAMS = {"deeplabv3_r101": 61_118_950, "deeplabv3_r18": 13_607_974, "deeplabv3_mbv2": 3_233_171,
                   "pspnet_r18": 12_919_334}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _x(h=64, w=96, n=2):
    return torch.randn(n, 3, h, w)


def _settle_bn(model, x):
    """One train-mode pass so BN running stats differ from their init (a non-trivial state to save)."""
    model.train()
    with torch.no_grad():
        model(x)
    return model.eval()


# ---------------------------------------------------------------- registry


def test_list_and_aliases():
    assert list_models() == NAMES
    assert list_models("deeplab*") == [n for n in NAMES if n.startswith("deeplab")]
    assert list_models("psp18") == ["pspnet_r18"]  # an alias matches its model
    for alias, name in {"r101": "deeplabv3_r101", "R18": "deeplabv3_r18", "mbv2": "deeplabv3_mbv2",
                        "psp18": "pspnet_r18", "pspnet-r18": "pspnet_r18"}.items():
        assert resolve_name(alias) == name
    m = create_model("psp18", num_classes=3, head_channels=8)
    assert m.model_name == "pspnet_r18"


def test_unknown_name_lists_models_and_suggests():
    with pytest.raises(ModelError) as exc:
        create_model("deeplabv3_r19", num_classes=5)
    msg = str(exc.value)
    assert "deeplabv3_r19" in msg and "Did you mean 'deeplabv3_r18'" in msg
    for name in NAMES:
        assert name in msg


def test_bad_options_are_model_errors():
    with pytest.raises(ModelError, match="no auxiliary head"):
        create_model("mbv2", num_classes=5, aux=True)
    with pytest.raises(ModelError, match="num_classes is required"):
        create_model("r18")
    with pytest.raises(ModelError, match="num_classes must be a positive integer"):
        create_model("r18", num_classes=0)
    with pytest.raises(ModelError, match="unknown option.*dilation"):
        create_model("r18", num_classes=3, dilation=2)


def test_none_kwargs_dropped_and_rebuild_from_model_kwargs():
    with torch.device("meta"):
        default = create_model("mbv2", 3, aux=None, head_channels=None)
        small = create_model("mbv2", 3, head_channels=16)
        again = create_model(small.model_name, **small.model_kwargs)
    assert default.model_kwargs == {"num_classes": 3, "aux": False}
    assert default.head.classifier.in_channels == 128  # the default width, not None
    assert small.model_kwargs == {"num_classes": 3, "aux": False, "head_channels": 16}
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}  # noqa: E731
    assert shapes(again) == shapes(small) != shapes(default)


# ---------------------------------------------------------------- networks


@pytest.mark.parametrize("name,aux", [(n, model_cfg(n)["aux_head"]) for n in STUDENTS])
def test_forward_shapes_aux_and_features(name, aux):
    model = create_model(name, num_classes=5, aux=aux, head_channels=16)
    assert model.has_aux is aux and model.num_classes == 5
    x = _x()
    for mode in ("train", "eval"):  # aux is returned in eval too (TFE reads the teacher's aux head)
        getattr(model, mode)()
        with torch.no_grad():
            out = model(x)
        assert out["out"].shape == (2, 5, 8, 12)
        assert ("aux" in out) is aux
        if aux:
            assert out["aux"].shape == (2, 5, 8, 12)
        assert "features" not in out
    with torch.no_grad():
        feats = model(x, features=True)["features"]
    assert [f.shape[1] for f in feats] == model.feature_channels
    assert feats[0].shape[-2:] == (16, 24) and all(f.shape[-2:] == (8, 12) for f in feats[1:])


def test_aux_absent_when_not_asked():
    model = create_model("r18", num_classes=4, head_channels=8).eval()
    assert not model.has_aux and model.aux_head is None
    assert not any(k.startswith("aux_head.") for k in model.state_dict())
    with torch.no_grad():
        assert set(model(_x(n=1))) == {"out"}


def test_teacher_small_forward():
    model = create_model("r101", num_classes=3, aux=True, head_channels=16).eval()
    assert model.feature_channels == [256, 512, 1024, 2048]
    with torch.no_grad():
        out = model(_x(32, 48, n=1))
    assert out["out"].shape == (1, 3, 4, 6) and out["aux"].shape == (1, 3, 4, 6)
    assert torch.isfinite(out["out"]).all()


@pytest.mark.parametrize("name", PAPER)
def test_param_counts_are_the_released_networks(name):
    cfg = model_cfg(name)
    with torch.device("meta"):  # full size, no memory
        model = create_model(name, num_classes=19, aux=cfg["aux_head"])
    n = count_params(model)
    assert n == sum(p.numel() for p in model.parameters())
    assert n == RELEASED_PARAMS[name]
    assert f"{n / 1e6:.2f}" == f"{cfg['paper_params_m']:.2f}"  # the paper's figure, as `rdd-edge models` shows it


def test_resnets_have_the_deep_v1s_stem():
    """Three 3x3 convs (64, 64, 128) before the max-pool; layer 1 starts from 128 channels; dilations 2 and 4."""
    with torch.device("meta"):
        for name in V1S:
            b = create_model(name, num_classes=3).backbone
            convs = [b.conv1[i] for i in (0, 3, 6)]
            assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == [
                (3, 64, (3, 3), (2, 2)), (64, 64, (3, 3), (1, 1)), (64, 128, (3, 3), (1, 1))]
            assert b.layer1[0].conv1.in_channels == 128
            last3 = [m for m in b.layer3.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)][-1]
            last4 = [m for m in b.layer4.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)][-1]
            assert (last3.dilation, last4.dilation) == ((2, 2), (4, 4))


def test_aspp_head_params_by_hand():
    """DeepLabV3-R18 head at width 128 on 512 channels, 19 classes, counted from the layer shapes."""
    with torch.device("meta"):
        model = create_model("r18", num_classes=19)
    cin, c, bn = 512, 128, 2 * 128
    expected = (cin * c + bn) + 3 * (9 * cin * c + bn) + (cin * c + bn)  # 1x1, 3 dilated, image pooling
    expected += 5 * c * c + bn  # projection
    expected += 9 * c * c + bn + c * 19 + 19  # 3x3 conv, classifier
    assert count_params(model.head) == expected


# ---------------------------------------------------------------- FLOPs


def test_count_flops_conv_by_hand_and_meta_matches_cpu():
    conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())  # no model_name: deep-copied to meta
    flops, macs = count_flops(conv, (16, 20))
    assert macs == 16 * 20 * 8 * 3 * 9 and flops == 2 * macs

    model = create_model("mbv2", num_classes=5, head_channels=16)
    flops_meta, _ = count_flops(model, (64, 96))
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(torch.zeros(1, 3, 64, 96))
    assert flops_meta == counter.get_total_flops() > 0
    assert count_flops(model, (128, 192))[0] == pytest.approx(4 * flops_meta, rel=0.02)  # ~linear in pixels


# ---------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def mbv2_ckpt(tmp_path_factory):
    torch.manual_seed(1)
    model = _settle_bn(create_model("mbv2", num_classes=5, head_channels=16), _x())
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    model(_x(n=2))["out"].mean().backward()
    opt.step()
    model.eval()
    path = tmp_path_factory.mktemp("ckpt") / "last.pt"
    save_checkpoint(path, model, dataset={"name": "synthetic", "classes": list("abcde")}, config={"lr": 0.1},
                    step=7, best_miou=0.25, optimizer=opt.state_dict(),
                    rng=[rng_state()])  # training state in the types the safe unpickler reads
    return model, path


def rng_state():
    from rdd_edge.distill.train import rng_state as state

    return state()


def test_checkpoint_round_trip(mbv2_ckpt):
    model, path = mbv2_ckpt
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # the temp file was renamed away
    ckpt = load_checkpoint(path)
    assert ckpt["format"] == "rdd-edge-checkpoint" and ckpt["version"] == 1
    assert ckpt["model_name"] == "deeplabv3_mbv2"
    assert ckpt["model_kwargs"] == {"num_classes": 5, "aux": False, "head_channels": 16}
    assert ckpt["step"] == 7 and ckpt["best_miou"] == 0.25 and ckpt["config"] == {"lr": 0.1}
    assert ckpt["optimizer"]["param_groups"][0]["momentum"] == 0.9
    rebuilt, ckpt2 = model_from_checkpoint(path)
    assert not rebuilt.training and ckpt2["step"] == 7
    x = _x(n=1)
    with torch.no_grad():
        assert torch.equal(rebuilt(x)["out"], model(x)["out"])
    # a plain state_dict file loads whole with load_weights; as pretrained= only its backbone is taken
    plain = path.parent / "plain.pt"
    torch.save(model.state_dict(), plain)
    again = load_weights(create_model("mbv2", num_classes=5, head_channels=16), str(plain)).eval()
    with torch.no_grad():
        assert torch.equal(again(x)["out"], model(x)["out"])
    init = create_model("mbv2", num_classes=5, head_channels=16, pretrained=str(plain)).eval()
    report = init.init_report
    assert (report.layout, report.missing) == ("timm", [])
    assert report.loaded == sum(k.startswith("backbone.") for k in model.state_dict())
    assert report.skipped and all(k.startswith("head.") for k in report.skipped)  # heads are not a backbone
    with torch.no_grad():
        assert torch.equal(init.backbone(x)[-1], model.backbone(x)[-1])
        assert not torch.equal(init(x)["out"], model(x)["out"])  # the head stays at its random init
    plain.unlink()


def test_checkpoint_aux_drop(tmp_path):
    model = _settle_bn(create_model("r18", num_classes=3, aux=True, head_channels=8), _x(n=2))
    path = save_checkpoint(tmp_path / "best.pt", model)
    x = _x(n=1)
    full, _ = model_from_checkpoint(path)
    slim, ckpt = model_from_checkpoint(load_checkpoint(path), aux=False)
    assert full.has_aux and not slim.has_aux and ckpt["model_kwargs"]["aux"] is True
    with torch.no_grad():
        ref = model(x)
        assert torch.equal(full(x)["aux"], ref["aux"])
        assert torch.equal(slim(x)["out"], ref["out"]) and "aux" not in slim(x)

    no_aux = save_checkpoint(tmp_path / "noaux.pt", slim)
    with pytest.raises(CheckpointError, match="without an aux head"):
        model_from_checkpoint(no_aux, aux=True)


def test_checkpoint_for_another_model_or_class_count(mbv2_ckpt):
    _, path = mbv2_ckpt
    with pytest.raises(CheckpointError) as exc:
        load_weights(create_model("r18", num_classes=5, head_channels=16), str(path))
    assert str(path) in str(exc.value) and "missing keys" in str(exc.value) and "unexpected keys" in str(exc.value)
    with pytest.raises(CheckpointError) as exc:
        load_weights(create_model("mbv2", num_classes=7, head_channels=16), path)
    assert str(path) in str(exc.value) and "shape mismatch" in str(exc.value)
    assert "head.classifier.weight (5, 16, 1, 1) vs (7, 16, 1, 1)" in str(exc.value)


def test_corrupt_or_foreign_files(tmp_path, mbv2_ckpt):
    _, good = mbv2_ckpt
    cases = {
        "missing.pt": (None, "not found"),
        "garbage.pt": (b"this is not a checkpoint", "not a torch checkpoint"),
        "truncated.pt": (good.read_bytes()[: good.stat().st_size // 2], "not a torch checkpoint"),
    }
    for fname, (data, msg) in cases.items():
        p = tmp_path / fname
        if data is not None:
            p.write_bytes(data)
        with pytest.raises(CheckpointError, match=msg) as exc:
            load_checkpoint(p)
        assert str(p) in str(exc.value)

    # a truncated legacy-format (non-zip) torch file: read, and its failure is one line naming it
    legacy = tmp_path / "legacy.pt"
    torch.save({"a": torch.zeros(64)}, legacy, _use_new_zipfile_serialization=False)
    legacy.write_bytes(legacy.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="could not read") as exc:
        load_checkpoint(legacy)
    assert str(legacy) in str(exc.value) and "\n" not in str(exc.value)

    # a zip that is not a torch file
    zp = tmp_path / "zip.pt"
    with zipfile.ZipFile(zp, "w") as z:
        z.writestr("hello.txt", "hi")
    with pytest.raises(CheckpointError, match="could not read") as exc:
        load_checkpoint(zp)
    assert str(zp) in str(exc.value)

    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.zeros(2)}, plain)
    with pytest.raises(CheckpointError, match="not an rdd-edge checkpoint"):
        load_checkpoint(plain)

    ckpt = torch.load(good, weights_only=True)
    ckpt["model_name"] = "segformer_b9"
    alien = tmp_path / "alien.pt"
    torch.save(ckpt, alien)
    with pytest.raises(CheckpointError, match="segformer_b9") as exc:
        model_from_checkpoint(alien)
    assert str(alien) in str(exc.value)


def test_save_needs_a_registry_model(tmp_path):
    with pytest.raises(CheckpointError, match="not built by models.create_model"):
        save_checkpoint(tmp_path / "x.pt", nn.Conv2d(1, 1, 1))
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- CLI


def test_models_command_table():
    from console_width import wide_runner
    from rdd_edge.cli import app

    runner = wide_runner()  # rows unfolded, one line each (80 columns: test_widths.py)
    res = runner.invoke(app, ["models", "--size", "64x128", "--classes", "5"])
    assert res.exit_code == 0, res.output
    for name in NAMES + [a for n in NAMES for a in aliases_of(n)] + ["mobilenetv2_100", "ASPP", "PSP", "61.12/2371",
                                                                     "resnet18-v1s", "resnet101s"]:
        assert name in res.output
    with torch.device("meta"):
        mbv2 = create_model("mbv2", 5)
    flops, macs = count_flops(mbv2, (64, 128))
    row = next(line for line in res.output.splitlines() if "deeplabv3_mbv2" in line)
    assert f"{count_params(mbv2) / 1e6:.2f}" in row and f"{macs / 1e9:.1f}" in row and f"{flops / 1e9:.1f}" in row

    res = runner.invoke(app, ["models", "--filter", "r1*"])
    assert res.exit_code == 0 and "deeplabv3_r18" in res.output and "deeplabv3_mbv2" not in res.output
    row = next(line for line in res.output.splitlines() if "deeplabv3_r18" in line)
    assert " 572.0 " in row  # the release's counter at 1024x2048: the paper's "FLOPs" figure

    res = runner.invoke(app, ["models", "--size", "big"])
    assert res.exit_code == 1 and "--size 'big': expected HxW" in str(res.exception)

    res = runner.invoke(app, ["models", "--filter", "zz*"])
    assert isinstance(res.exception, ConfigError) and "zz*" in str(res.exception)


@pytest.mark.parametrize("model,aux,paper", [("r101", True, 2371.7), ("r18", True, 572.0), ("mbv2", False, 128.9),
                                             ("psp18", True, 507.3)])
def test_the_release_counter_gives_the_papers_flops_and_ignores_dilation(model, aux, paper):
    """The release's utils/flops.py sizes a conv's output as (in + 2p - k) // s + 1: for a dilated conv (p = d) the
    map is 2(d - 1) larger than computed. Reproduced, it gives the paper's figures; torch's counter gives less."""
    from rdd_edge.models.flops import count_release_macs

    with torch.device("meta"):
        net = create_model(model, num_classes=19, aux=aux)
    release = count_release_macs(net)
    assert round(release / 1e9, 1) == paper
    assert count_flops(net)[1] < 0.97 * release
    conv = nn.Conv2d(3, 6, 3, padding=2, dilation=2, bias=False)
    assert count_release_macs(conv, (10, 12)) == 3 * 6 * 9 * 12 * 14  # output counted 12x14, computed 10x12
    assert count_flops(conv, (10, 12))[1] == 3 * 6 * 9 * 10 * 12
