"""The input normalisation: one value object, recorded with the weights, applied the same way everywhere."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rdd_edge.errors import ConfigError
from rdd_edge.normalize import CAFFE, IMAGENET, Normalization, normalization_of, preset, recorded_normalization


def _image(h=20, w=28, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_presets_against_their_formulas():
    img = _image()
    chw = img.transpose(2, 0, 1).astype(np.float64)
    x = IMAGENET.apply(img.transpose(2, 0, 1))
    for c in range(3):  # RGB, 0..1, ImageNet mean/std
        # float32 values up to 2.64: a few ulps of 2.4e-7 (seen 5.9e-7)
        np.testing.assert_allclose(x[c], (chw[c] / 255 - IMAGENET.mean[c]) / IMAGENET.std[c], atol=1e-5)
    x = CAFFE.apply(img.transpose(2, 0, 1))
    for k, (c, m) in enumerate(zip((2, 1, 0), (104.00698793, 116.66876762, 122.67891434))):  # BGR, 0..255, caffe mean
        np.testing.assert_allclose(x[k], chw[c] - m, atol=1e-4)  # float32 values up to 152: ulp 1.5e-5 (seen 9.1e-6)
    assert CAFFE.fill_rgb() == (123, 117, 104) and IMAGENET.fill_rgb() == (124, 116, 104)
    assert "BGR 0-255 minus mean (104.01, 116.67, 122.68), no std" in CAFFE.describe()


def test_names_dicts_and_what_files_record():
    assert normalization_of("caffe") is CAFFE and normalization_of(CAFFE.as_dict()) == CAFFE
    assert normalization_of(json.loads(json.dumps(CAFFE.as_dict()))) == CAFFE  # survives a JSON manifest
    with pytest.raises(ConfigError, match="normalization 'bgr': use one of imagenet, caffe"):
        preset("bgr")
    with pytest.raises(ConfigError, match="channel order 'gbr'"):
        Normalization("x", order="gbr")
    assert recorded_normalization({"normalization": CAFFE.as_dict()}) == CAFFE
    # files from before normalisations were recorded: mean/std (RGB, 0..1), or nothing (ImageNet's)
    assert recorded_normalization({"dataset": {"mean": list(IMAGENET.mean), "std": list(IMAGENET.std)}}) == IMAGENET
    old = recorded_normalization({"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]})
    assert (old.order, old.scale, old.mean) == ("rgb", 1 / 255, (0.5, 0.5, 0.5))
    assert recorded_normalization({}) == IMAGENET and recorded_normalization(None) == IMAGENET


def test_renormalizer_turns_a_students_input_into_its_teachers():
    from rdd_edge.distill.data import normalize_tensor, renormalizer

    img = torch.from_numpy(_image().transpose(2, 0, 1)).unsqueeze(0)
    x_student, x_teacher = normalize_tensor(img, IMAGENET), normalize_tensor(img, CAFFE)
    np.testing.assert_allclose(x_teacher[0].numpy(), CAFFE.apply(img[0].numpy()), atol=1e-4)  # float32 up to 152 (ulp 1.5e-5; seen 0)
    convert = renormalizer(IMAGENET, CAFFE)
    # ImageNet -> caffe multiplies the student tensor's float32 error (2.4e-7 at 2.6) by 255 * std (~58) and adds the
    # rounding of values up to 152 (ulp 1.5e-5): ~3e-5 (seen 3.1e-5 with AVX-512, AVX2 and scalar torch kernels)
    torch.testing.assert_close(convert(x_student), x_teacher, atol=2e-3, rtol=0)
    torch.testing.assert_close(renormalizer(CAFFE, IMAGENET)(x_teacher), x_student, atol=1e-4, rtol=0)  # back: /58 (seen 0)
    assert renormalizer(CAFFE, normalization_of(CAFFE.as_dict())) is None  # alike: the teacher takes the same tensor


def test_training_pipelines_normalise_as_recorded():
    """CPU transforms and the device augmentation give the same tensor for the caffe normalisation too."""
    from rdd_edge.distill.data import EvalPreset, gpu_augment

    img = _image(24, 32)
    label = np.zeros((24, 32), np.uint8)
    x, _ = EvalPreset(None, CAFFE)(img, label, None)
    np.testing.assert_allclose(x.numpy(), CAFFE.apply(img.transpose(2, 0, 1)), atol=1e-4)  # float32 up to 152 (seen 0)
    images = torch.from_numpy(img.transpose(2, 0, 1)).unsqueeze(0)
    xg, _ = gpu_augment(images, torch.from_numpy(label)[None], torch.tensor([[24, 32]]), None, [1.0], [(0, 0)], [False],
                        (24, 32), CAFFE)
    # grid_sample at pixel centres: float32 sample coordinates leave a neighbour's bilinear weight at ~1e-6, and a
    # neighbour is up to 255 away in caffe units (~2.6e-4; seen 1.1e-4 with AVX-512, AVX2 and scalar kernels)
    torch.testing.assert_close(xg[0], x, atol=1e-3, rtol=0)


def test_deploy_and_the_uint8_graph_apply_the_manifests_normalisation(tmp_path):
    """An export whose manifest records the caffe input: the runtime's preprocessing and the graph that embeds it
    both feed the network exactly what torch gets from the caffe formula (and not ImageNet's)."""
    from rdd_edge import deploy
    from rdd_edge.export.onnx_export import export_onnx
    from rdd_edge.export.parity import run_onnx

    class Tiny(torch.nn.Module):  # logits at 1/8, as our networks give them; small, so the two exports are quick
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, stride=8, padding=1)

        def forward(self, x):
            return {"out": self.conv(x)}

    torch.manual_seed(0)
    model = Tiny().eval()
    img = _image(32, 48, 3)
    with torch.no_grad():
        ref = torch.nn.functional.interpolate(model(torch.from_numpy(CAFFE.apply(img.transpose(2, 0, 1))[None]))["out"],
                                              size=(32, 48), mode="bilinear", align_corners=False).numpy()
    for embedded in (False, True):
        out = tmp_path / ("u8" if embedded else "f32")
        export_onnx(model, out / "model.onnx", (32, 48), output="logits", embed_preprocess=embedded, normalization=CAFFE)
        (out / "manifest.json").write_text(json.dumps({
            "format": "rdd-edge-export", "version": 1, "model_name": "tiny", "num_classes": 4,
            "classes": list("abcd"), "normalization": CAFFE.as_dict(),
            "input": {"name": "images", "shape": ["batch", 3, 32, 48], "size": [32, 48], "embedded_preprocess": embedded},
            "outputs": [{"name": "logits"}], "output": "logits"}))
        with deploy.load(out / "model.onnx") as seg:
            assert seg.info.normalization == CAFFE
            x = seg.preprocess(img)
            got = run_onnx(out / "model.onnx", x)["logits"]
        # logits ~50 from 27-term float32 dot products of inputs up to 152, summed in different orders by torch (oneDNN)
        # and ONNX Runtime (MLAS): typically sqrt(27) * 6e-8 * 50 = 1.5e-5; the largest seen over 6144 logits was
        # 1.5e-5 (AVX-512, AVX2 torch kernels) and 2.3e-5 (scalar): 1e-4 leaves 4x; the wrong normalisation is off by > 1e-2
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    wrong = run_onnx(tmp_path / "f32" / "model.onnx", IMAGENET.apply(img.transpose(2, 0, 1))[None])["logits"]
    assert np.abs(wrong - ref).max() > 1e-2
