"""Pinned paper-era files and the layouts `rdd-edge import` names: CIRKDv2 (512-wide heads), torchvision, timm."""

from __future__ import annotations

import pytest
import torch

from released_fixture import load_fixture
from rdd_edge.models import create_model, model_from_checkpoint
from rdd_edge.models.released import BACKBONE_PREFIX, released_names
from rdd_edge.sources import PAPER_FILES, PINNED_COMMIT, describe_layout


def test_pinned_tensor_counts_match_the_released_key_lists():
    """The expected counts are the released model code's key lists (tests/data/released): a whole teacher
    state dict with aux head and step counters; a backbone file's backbone tensors without step counters."""
    keys = {m: load_fixture(m)[0]["keys"] for m in ("deeplabv3_r101", "deeplabv3_r18", "deeplabv3_mbv2")}
    keys = {m: [k if isinstance(k, str) else k[0] for k in v] for m, v in keys.items()}
    for f in PAPER_FILES:
        names = keys[f.model]
        if f.dataset:
            assert f.tensors == len(names) and any(k.startswith("auxlayer.") for k in names), f.name
        else:
            prefix = BACKBONE_PREFIX["mobilenetv2" if "mbv2" in f.model else "resnet"]
            assert f.tensors == sum(k.startswith(prefix) and not k.endswith("num_batches_tracked") for k in names), f.name
    assert sorted(f.miou for f in PAPER_FILES if f.miou) == [42.70, 69.84, 77.67, 78.07]
    assert {f.name for f in PAPER_FILES if not f.dataset} == {
        "resnet101-imagenet.pth", "resnet18-imagenet.pth", "mobilenetv2-imagenet.pth"}


def test_import_help_shows_the_pinned_table():
    from typer.testing import CliRunner

    from rdd_edge.cli import app

    out = CliRunner().invoke(app, ["import", "--help"], env={"COLUMNS": "400"}).output
    assert PINNED_COMMIT in out and "--head-channels" in out
    for f in PAPER_FILES:
        assert f.link in out and f"{f.tensors} " in out
    assert "78.07" in out and "resnet18-imagenet.pth" in out


def test_the_pretrained_error_names_the_pinned_link():
    with pytest.raises(Exception) as exc:
        create_model("r18", num_classes=3, head_channels=8, pretrained="imagenet")  # timm has no deep-stem R18
    msg = str(exc.value)
    assert "resnet18-imagenet.pth (115 backbone tensors; https://drive.google.com/file/d/1_i0n3ZePtQuh66uQIftiSwN7QAUlFb8_" in msg
    assert PINNED_COMMIT in msg and "\n" not in msg


def _cirkdv2_file(tmp_path):
    """A CIRKDv2 DeepLabV3-R18 checkpoint: the release's key names, heads 512 wide (CIRKD models/deeplabv3.py at
    dab64db), saved from DDP like the release's."""
    net = create_model("r18", num_classes=19, aux=True, head_channels=512)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.01)
    state = {"module." + k: net.state_dict()[ours].clone() for k, ours in released_names(net).items()}
    path = tmp_path / "kd_deeplabv3_resnet18_citys_best_model.pth"
    torch.save(state, path)
    return path, net


def test_a_cirkdv2_checkpoint_is_named_in_one_line_and_imports_with_head_channels_512(tmp_path, capsys):
    from rdd_edge.cli import main

    path, net = _cirkdv2_file(tmp_path)
    runs = tmp_path / "runs"
    with pytest.raises(SystemExit) as exc:
        main(["import", str(path), "--model", "r18", "--dataset", "cityscapes", "--runs", str(runs)])
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {path}: a CIRKDv2 checkpoint")
    assert "--head-channels 512" in err and "--model" not in err and not runs.exists()

    with pytest.raises(SystemExit) as exc:
        main(["import", str(path), "--model", "r18", "--dataset", "cityscapes", "--runs", str(runs), "--name", "v2",
              "--head-channels", "512"])
    assert exc.value.code == 0
    assert "head 512 wide" in capsys.readouterr().out
    model, ckpt = model_from_checkpoint(runs / "distill-v2" / "best.pt")
    assert ckpt["model_kwargs"]["head_channels"] == 512 and ckpt["config"]["model_kwargs"] == {"head_channels": 512}
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x)["out"], net.eval()(x)["out"], rtol=0, atol=0)


@pytest.mark.parametrize("state,named", [
    ({"backbone.conv1.weight": torch.zeros(64, 3, 7, 7), "backbone.layer1.0.conv1.weight": torch.zeros(64, 64, 1, 1),
      "classifier.0.convs.0.0.weight": torch.zeros(256, 2048, 1, 1), "classifier.4.weight": torch.zeros(19, 256, 1, 1)},
     "a torchvision DeepLabV3 checkpoint"),
    ({"conv1.0.weight": torch.zeros(32, 3, 3, 3), "layer1.0.conv1.weight": torch.zeros(64, 128, 3, 3),
      "fc.weight": torch.zeros(1000, 512)}, "an ImageNet backbone in timm's"),
    ({"backbone.stem.0.weight": torch.zeros(32, 3, 3, 3), "decode_head.conv_seg.weight": torch.zeros(19, 512, 1, 1)},
     "an mmsegmentation checkpoint"),
])
def test_other_layouts_are_named_in_one_line(tmp_path, capsys, state, named):
    from rdd_edge.cli import main

    path = tmp_path / "other.pth"
    torch.save(state, path)
    with pytest.raises(SystemExit):
        main(["import", str(path), "--model", "r18", "--dataset", "cityscapes", "--runs", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {path}: {named}")


def test_the_release_layout_is_not_misnamed():
    """A paper-era checkpoint (ASPP 128 / 256 wide) is none of the other layouts: its own misfit message stays."""
    net = create_model("r18", num_classes=19, aux=True)
    state = {k: net.state_dict()[ours] for k, ours in released_names(net).items()}
    assert describe_layout(state) is None
