"""deploy/: torch-free import, ONNX == torch predictions, model info, bad inputs, TensorRT helpers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from deploy_utils import CLASSES, PALETTE, export_onnx, rand_image, tiny_net, torch_labels, write_manifest

from rdd_edge import deploy
from rdd_edge.deploy.backends.onnxruntime import choose_providers
from rdd_edge.deploy.backends.tensorrt import bind_shape
from rdd_edge.deploy.engine_meta import check_compatible, read_sidecar, runtime_identity, sidecar_path, write_sidecar
from rdd_edge.deploy.latency import sigma_clip, summarize
from rdd_edge.deploy.preprocess import preprocess
from rdd_edge.errors import DeployError
from rdd_edge.normalize import CAFFE, Normalization

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("deploy") / "export"
    net = tiny_net()
    export_onnx(net, d / "model.onnx")
    write_manifest(d)
    return net, d / "model.onnx"


def test_deploy_imports_and_predicts_without_torch(exported):
    _, onnx_path = exported
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None          # any `import torch` now raises ImportError
        sys.modules["rdd_edge.models"] = None
        import importlib, pkgutil
        import numpy as np
        import rdd_edge.deploy
        from rdd_edge import deploy
        for m in pkgutil.walk_packages(rdd_edge.deploy.__path__, "rdd_edge.deploy."):  # every deploy module
            importlib.import_module(m.name)
        seg = deploy.load({str(onnx_path)!r})
        lab = seg.predict(np.zeros((30, 40, 3), np.uint8))
        assert lab.shape == (30, 40), lab.shape
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules if sys.modules[m] is not None)
        print("OK", seg.info.classes)
    """)
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout and "sky" in r.stdout


def test_onnx_predictions_equal_torch(exported):
    net, onnx_path = exported
    seg = deploy.load(onnx_path, threads=1)
    for seed, (h, w) in enumerate([(48, 64), (60, 90), (37, 131)]):
        img = rand_image(h, w, seed)
        got = seg.predict(img)
        ref = torch_labels(net, img)
        assert got.shape == (h, w) and got.dtype == np.uint8
        assert (got == ref).mean() > 0.999
    # a batch gives the same as one by one
    imgs = [rand_image(60, 90, 5), rand_image(30, 40, 6)]
    for a, b in zip(seg.predict_batch(imgs), imgs):
        assert np.array_equal(a, seg.predict(b))


def test_info_from_manifest(exported):
    _, onnx_path = exported
    seg = deploy.load(onnx_path)
    assert seg.info.classes == CLASSES
    assert seg.info.palette.tolist() == PALETTE
    assert seg.info.input_size == (48, 64)
    assert seg.info.output == "logits" and seg.info.batch is None
    raw = seg.run(seg.preprocess(rand_image()))
    assert raw.shape == (1, 4, 48, 64) and raw.dtype == np.float32


def test_missing_manifest_is_inferred_with_a_warning(exported, tmp_path):
    _, onnx_path = exported
    p = tmp_path / "alone.onnx"
    p.write_bytes(onnx_path.read_bytes())
    with pytest.warns(deploy.DeployWarning, match="no manifest.json"):
        seg = deploy.load(p)
    assert seg.info.num_classes == 4 and seg.info.input_size == (48, 64)
    assert seg.info.notes and "ImageNet" in seg.info.notes[0]
    assert np.array_equal(seg.predict(rand_image()), deploy.load(onnx_path).predict(rand_image()))


def test_labels_output_and_embedded_preprocess(tmp_path):
    net = tiny_net(seed=3)
    d = tmp_path / "export"
    export_onnx(net, d / "model.onnx", output="labels", embedded=True)
    write_manifest(d, output="labels", embedded=True)
    seg = deploy.load(d / "model.onnx")
    assert seg.info.embedded_preprocess and seg.info.output == "labels"
    assert seg.preprocess(rand_image()).dtype == np.uint8
    img = rand_image(50, 70, 1)
    assert (seg.predict(img) == torch_labels(net, img)).mean() > 0.99


def test_preprocess_matches_formula():
    img = rand_image(48, 64, 2)
    x = preprocess(img, (48, 64), Normalization("test", mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0)))
    assert x.shape == (1, 3, 48, 64) and x.dtype == np.float32
    r, g, b = (img[..., c].astype(np.float64) / 255 for c in range(3))
    # deploy's preprocessing is NumPy float32 (no torch kernels): a few ulps of values up to 2 (seen 2.9e-7)
    np.testing.assert_allclose(x[0, 0], (r - 0.5) / 0.25, atol=1e-5)
    np.testing.assert_allclose(x[0, 2], (b - 0.5) / 1.0, atol=1e-5)
    # the released code's input: BGR, 0..255, minus the caffe mean, no std
    x = preprocess(img, (48, 64), CAFFE)
    # float32 values up to 151: ulp 1.5e-5 (seen 9.1e-6)
    np.testing.assert_allclose(x[0, 0], img[..., 2].astype(np.float64) - 104.00698793, atol=1e-4)
    np.testing.assert_allclose(x[0, 2], img[..., 0].astype(np.float64) - 122.67891434, atol=1e-4)
    assert preprocess(img, (24, 32), embedded=True).shape == (1, 3, 24, 32)


# --- bad inputs: one clear DeployError each ---------------------------------------------------

def test_missing_model(tmp_path):
    with pytest.raises(DeployError, match="model file not found"):
        deploy.load(tmp_path / "nope.onnx")


def test_not_an_onnx_file(tmp_path):
    p = tmp_path / "model.onnx"
    p.write_text("this is not a protobuf")
    with pytest.raises(DeployError, match=r"model\.onnx: not a loadable ONNX model"):
        deploy.load(p)


def test_unknown_suffix(tmp_path):
    p = tmp_path / "model.pt"
    p.write_bytes(b"x")
    with pytest.raises(DeployError, match=r"unknown model type '\.pt'"):
        deploy.load(p)


@pytest.mark.parametrize(
    "image, match",
    [
        (np.zeros((20, 30), np.uint8), "expected 3 channels"),
        (np.zeros((20, 30, 4), np.uint8), r"4 channels"),
        (np.zeros((20, 30, 3), np.float32), "expected dtype uint8"),
        ([[1, 2, 3]], "expected a numpy array"),
    ],
)
def test_bad_images(exported, image, match):
    seg = deploy.load(exported[1])
    with pytest.raises(DeployError, match=match):
        seg.predict(image)


def test_provider_choice():
    assert choose_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    full = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(list(reversed(full))) == full
    assert choose_providers(full, device="cpu") == ["CPUExecutionProvider"]
    with pytest.raises(DeployError, match="no GPU provider"):
        choose_providers(["CPUExecutionProvider"], device="cuda")
    with pytest.raises(DeployError, match="not available"):
        choose_providers(["CPUExecutionProvider"], requested=["CUDAExecutionProvider"])


# --- TensorRT engines: sidecar, compatibility, binding shapes (no GPU needed) ------------------

def test_engine_sidecar_for_another_gpu_gives_rebuild_message(tmp_path):
    eng = tmp_path / "model.int8.engine"
    eng.write_bytes(b"\x00" * 16)
    write_sidecar(eng, {"tensorrt": "10.3.0", "gpu": "Orin", "compute_capability": "8.7", "precision": "int8"})
    assert sidecar_path(eng).name == "model.int8.engine.json"
    meta = read_sidecar(eng)
    assert meta["format"] == "rdd-edge-engine" and meta["gpu"] == "Orin"
    here = {"tensorrt": "11.0.1", "gpu": "NVIDIA H100", "compute_capability": "9.0"}
    with pytest.raises(DeployError) as e:
        check_compatible(meta, here)
    msg = str(e.value)
    assert "engine built for Orin (sm_87) with TensorRT 10.3.0" in msg
    assert "this machine has NVIDIA H100 (sm_90) with TensorRT 11.0.1" in msg
    assert "rdd-edge engine EXPORT --trt int8" in msg
    # same TensorRT release and capability (other GPU model, other build number): fine
    check_compatible(meta, {"tensorrt": "10.3.0.30", "gpu": "Orin NX", "compute_capability": "8.7"})
    with pytest.raises(DeployError, match="no TensorRT"):
        check_compatible(meta, {"tensorrt": None, "gpu": None, "compute_capability": None})
    assert set(runtime_identity()) == {"tensorrt", "gpu", "compute_capability"}


def test_load_engine_here_fails_clearly(tmp_path):
    eng = tmp_path / "model.fp16.engine"
    eng.write_bytes(b"\x00" * 16)
    write_sidecar(eng, {"tensorrt": "10.3.0", "gpu": "Orin", "compute_capability": "8.7", "precision": "fp16"})
    with pytest.raises(DeployError, match=r"engine built for Orin \(sm_87\) with TensorRT 10.3.0; this machine has .*: rebuild it here with `rdd-edge engine \S+ --trt fp16`"):
        deploy.load(eng)  # no TensorRT / GPU here: the sidecar check says what to do
    with pytest.raises(DeployError, match="needs an NVIDIA GPU"):
        deploy.load(eng, device="cpu")


def test_bind_shape():
    assert bind_shape("images", (-1, 3, 48, 64), (4, 3, 48, 64), ((1, 3, 48, 64), (4, 3, 48, 64), (8, 3, 48, 64))) == (4, 3, 48, 64)
    with pytest.raises(DeployError, match="fixed at"):
        bind_shape("images", (1, 3, 48, 64), (2, 3, 48, 64))
    with pytest.raises(DeployError, match="outside the engine's profile"):
        bind_shape("images", (-1, 3, 48, 64), (16, 3, 48, 64), ((1, 3, 48, 64), (4, 3, 48, 64), (8, 3, 48, 64)))
    with pytest.raises(DeployError, match="dims"):
        bind_shape("images", (-1, 3, 48, 64), (3, 48, 64))


def test_latency_stats():
    t = np.r_[np.full(30, 0.010), np.full(30, 0.012), 0.5]  # one outlier
    lat = summarize(t, batch=4)
    assert lat.runs == 60 and abs(lat.mean_ms - 11.0) < 1e-9
    assert abs(lat.fps - 4000 / 11.0) < 1e-6
    assert abs(lat.p50_ms - 11.0) < 1e-9 and lat.p99_ms <= 12.0 + 1e-9
    assert sigma_clip(np.array([1.0, 1.0, 1.0])).size == 3
