"""--pretrained: ImageNet backbones from local files (released or timm layout), timm's cache, and offline errors."""

from __future__ import annotations

import pytest
import torch

from released_fixture import load_fixture, state_dict_values
from rdd_edge.errors import CheckpointError, ModelError
from rdd_edge.models import create_model
from rdd_edge.models.released import BACKBONE_PREFIX
from rdd_edge.normalize import CAFFE, IMAGENET

NETS = {"deeplabv3_r101": "resnet", "deeplabv3_r18": "resnet", "deeplabv3_mbv2": "mobilenetv2", "pspnet_r18": "resnet"}
CLASSIFIER = {"resnet": {"fc.weight": (1000, 512), "fc.bias": (1000,)},
              "mobilenetv2": {"features.18.0.weight": (1280, 320, 1, 1), "classifier.1.weight": (1000, 1280)}}


def released_backbone_file(tmp_path, model: str, legacy: bool = False) -> tuple:
    """What the released code's ImageNet files hold: the backbone's keys without ``pretrained.`` (ResNets) or
    ``pretrained.net.`` (MobileNetV2), plus an ImageNet classifier; values from the fixture formula.
    ``legacy``: written in torch's pre-1.6 format, as 2018-era files may be."""
    layout = NETS[model]
    prefix = BACKBONE_PREFIX[layout]
    meta, _ = load_fixture(model)
    state = {k[len(prefix):]: torch.from_numpy(v) for k, v in state_dict_values(meta["keys"]).items() if k.startswith(prefix)}
    state.update({k: torch.zeros(s) for k, s in CLASSIFIER[layout].items()})
    path = tmp_path / f"{model}-imagenet.pth"
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    return path, state


@pytest.mark.parametrize("model", list(NETS))
def test_released_imagenet_file_initialises_the_backbone(tmp_path, model):
    path, state = released_backbone_file(tmp_path, model)
    net = create_model(model, num_classes=3, head_channels=8, pretrained=str(path))
    r = net.init_report
    backbone = {k: v for k, v in net.state_dict().items() if k.startswith("backbone.")}
    assert (r.layout, r.loaded, r.missing) == ("released", len(state) - 2, [])
    assert sorted(r.skipped) == sorted(CLASSIFIER[NETS[model]])  # the ImageNet classifier is not part of the backbone
    assert r.normalization == CAFFE  # fed the way the released scripts feed these weights
    assert sum(float(v.float().abs().sum()) for v in backbone.values()) == pytest.approx(
        sum(float(v.float().abs().sum()) for k, v in state.items() if k not in CLASSIFIER[NETS[model]]), rel=1e-6)
    line = r.line()
    assert "\n" not in line and f"loaded {r.loaded} backbone tensors from {path} (released layout)" in line
    assert "skipped 2 (" in line and "missing 0" in line


def test_a_legacy_format_backbone_file_loads_through_the_safe_unpickler(tmp_path):
    """A pre-1.6 (non-zip) torch file, as the released ImageNet files may be, loads with --pretrained PATH."""
    import zipfile

    path, state = released_backbone_file(tmp_path, "deeplabv3_r18", legacy=True)
    assert not zipfile.is_zipfile(path)  # really the legacy container
    net = create_model("r18", num_classes=3, head_channels=8, pretrained=str(path))
    assert (net.init_report.layout, net.init_report.loaded) == ("released", len(state) - 2)
    assert torch.equal(net.state_dict()["backbone.conv1.0.weight"], state["conv1.weight"])


def test_a_legacy_file_carrying_code_is_refused_in_one_line(tmp_path):
    """The legacy container changes nothing: a pickled object whose reduce calls a function is refused, not run."""
    import os

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "ran"),))

    path = tmp_path / "evil-imagenet.pth"
    torch.save({"conv1.weight": torch.zeros(1), "x": Payload()}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError) as exc:
        create_model("r18", num_classes=3, head_channels=8, pretrained=str(path))
    msg = str(exc.value)
    assert msg.startswith(f"{path}: refused:") and "\n" not in msg and "system" in msg
    assert not (tmp_path / "ran").exists()


def test_none_is_random_weights():
    for value in (None, False, "none", "None"):
        assert create_model("mbv2", num_classes=3, head_channels=8, pretrained=value).init_report is None


def test_timm_layout_file_and_which_tensor_went_where(tmp_path):
    """A timm-layout file (keys as timm names them, plus timm's classifier) lands tensor for tensor."""
    src = create_model("r18", num_classes=3, head_channels=8)
    state = {k[len("backbone."):]: v.clone() for k, v in src.state_dict().items() if k.startswith("backbone.")}
    state["fc.weight"] = torch.zeros(1000, 512)
    path = tmp_path / "timm_r18.pth"
    torch.save({"state_dict": state}, path)  # a wrapped state dict is read too
    net = create_model("r18", num_classes=3, head_channels=8, pretrained=path)
    r = net.init_report
    assert (r.layout, r.skipped, r.missing, r.normalization) == ("timm", ["fc.weight"], [], IMAGENET)
    for k, v in state.items():
        if k != "fc.weight":
            assert torch.equal(net.state_dict()["backbone." + k], v), k
    # released stem key -> timm key: the released file's bn3 (128 channels) is timm's bn1
    path2, rel = released_backbone_file(tmp_path, "deeplabv3_r18")
    net2 = create_model("r18", num_classes=3, pretrained=path2)
    assert torch.equal(net2.backbone.bn1.running_var, rel["bn3.running_var"])
    assert torch.equal(net2.backbone.conv1[3].weight, rel["conv2.weight"])


def test_backbone_files_that_do_not_fit_are_one_line_errors(tmp_path):
    path, _ = released_backbone_file(tmp_path, "deeplabv3_r18")
    with pytest.raises(CheckpointError, match="no tensor fits the backbone of deeplabv3_mbv2") as exc:
        create_model("mbv2", num_classes=3, pretrained=path)  # a ResNet file for MobileNetV2
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)
    tv = tmp_path / "torchvision_r18.pth"  # a 7x7-stem ResNet-18: the first tensor already differs
    import timm

    torch.save(timm.create_model("resnet18").state_dict(), tv)
    with pytest.raises(CheckpointError, match=r"do not fit deeplabv3_r18 \(released layout; first: conv1.weight "
                                              r"\(64, 3, 7, 7\) in the file vs \(64, 3, 3, 3\) here\)"):
        create_model("r18", num_classes=3, pretrained=tv)
    junk = tmp_path / "junk.pth"
    torch.save([1, 2, 3], junk)
    with pytest.raises(CheckpointError, match="holds no state dict of tensors"):
        create_model("r18", num_classes=3, pretrained=junk)


@pytest.fixture
def no_hub(monkeypatch, tmp_path):
    """An empty Hugging Face cache and an endpoint nothing listens on: offline, and quickly so."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(v, raising=False)
    return tmp_path / "hub"


def test_imagenet_offline_is_one_line_naming_path_and_none(no_hub):
    with pytest.raises(ModelError) as exc:
        create_model("mbv2", num_classes=3, pretrained="imagenet")
    msg = str(exc.value)
    assert "\n" not in msg and "mobilenetv2_100.ra_in1k" in msg and "offline" in msg
    assert "--pretrained PATH" in msg and "--pretrained none" in msg and "mobilenetv2-imagenet.pth" in msg
    # timm has no deep-stem ResNet-18 weights: the released file to download is named, without any download
    with pytest.raises(ModelError) as exc:
        create_model("psp18", num_classes=3, pretrained="imagenet")
    msg = str(exc.value)
    assert "resnet18-imagenet.pth" in msg and "--pretrained PATH" in msg and "--pretrained none" in msg


def test_imagenet_from_timms_local_cache(no_hub):
    """With timm's weights in the local Hugging Face cache, --pretrained imagenet needs no network."""
    import timm
    from safetensors.torch import save_file

    ref = timm.create_model("mobilenetv2_100")
    snap = no_hub / "models--timm--mobilenetv2_100.ra_in1k" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (no_hub / "models--timm--mobilenetv2_100.ra_in1k" / "refs").mkdir()
    (no_hub / "models--timm--mobilenetv2_100.ra_in1k" / "refs" / "main").write_text("abc123")
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(snap / "model.safetensors"))
    net = create_model("mbv2", num_classes=3, head_channels=8, pretrained="imagenet")
    r = net.init_report
    assert r.source == "timm mobilenetv2_100.ra_in1k" and r.layout == "timm" and r.missing == []
    assert {"conv_head.weight", "classifier.weight"} <= set(r.skipped) and r.normalization == IMAGENET
    assert torch.equal(net.backbone.blocks[3][0].conv_pw.weight, ref.blocks[3][0].conv_pw.weight)


def test_the_default_is_imagenet_for_real_data_and_none_for_synthetic(tmp_path):
    from rdd_edge.distill.config import make_config, parse_overrides
    from rdd_edge.errors import ConfigError

    assert make_config("teacher").pretrained == "none"
    assert make_config("distill", "cityscapes").pretrained == "imagenet"
    assert make_config("distill", "camvid", pretrained="NONE").pretrained == "none"
    assert make_config("distill", "camvid", **parse_overrides(["pretrained=none"])).pretrained == "none"
    f = tmp_path / "b.pth"
    f.write_bytes(b"x")
    assert make_config("teacher", "camvid", pretrained=str(f)).pretrained == str(f)
    with pytest.raises(ConfigError, match="--pretrained nowhere.pth: no such file; use imagenet"):
        make_config("teacher", "camvid", pretrained="nowhere.pth")
    with pytest.raises(ConfigError, match="normalization 'rgb255'"):
        make_config("teacher", normalization="rgb255")


def test_a_network_outside_the_paper_takes_timm_layout_weights(tmp_path, monkeypatch):
    """A registered network with no released counterpart (``released`` None, no released ImageNet file) loads a
    timm-layout backbone file, and its errors name no released file."""
    from rdd_edge.models import registry

    name = "deeplabv3_mbv2"
    cfg = {**registry._model_cfgs[name], "released": None, "imagenet_file": None, "imagenet_timm": None}
    monkeypatch.setitem(registry._model_cfgs, name, cfg)
    src = create_model(name, num_classes=3, head_channels=8)
    state = {k[len("backbone."):]: v.clone() for k, v in src.state_dict().items() if k.startswith("backbone.")}
    path = tmp_path / "timm_layout.pth"
    torch.save(state, path)
    net = create_model(name, num_classes=3, head_channels=8, pretrained=path)
    assert (net.init_report.layout, net.init_report.missing) == ("timm", [])
    assert all(torch.equal(net.state_dict()["backbone." + k], v) for k, v in state.items())
    torch.save({"other.weight": torch.zeros(3)}, tmp_path / "wrong.pth")
    with pytest.raises(CheckpointError) as err:
        create_model(name, num_classes=3, head_channels=8, pretrained=tmp_path / "wrong.pth")
    assert "timm layout" in str(err.value) and "released" not in str(err.value) and "None" not in str(err.value)
    with pytest.raises(ModelError) as err:
        create_model(name, num_classes=3, head_channels=8, pretrained="imagenet")
    assert "--pretrained PATH" in str(err.value) and "None" not in str(err.value)
