"""DeepStream and Triton files (issue 27): ``--embed-preprocess float255`` exports, ``bundle --deepstream`` and
``bundle --triton``. No DeepStream or Triton here: the files are checked by parsing them (configparser; protobuf
text format into Triton's own ModelConfig when tritonclient is installed, else a schema check written here) and
by running the ONNX files they name in ONNX Runtime."""

from __future__ import annotations

import configparser
import importlib.util
import re
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from console_width import wide_runner
from rdd_edge import deploy
from rdd_edge.cli import app
from rdd_edge.data import DataSpec, open_split
from rdd_edge.data.registry import dataset_info
from rdd_edge.deploy.deepstream import nvinfer_preprocess, write_deepstream
from rdd_edge.deploy.info import read_manifest
from rdd_edge.deploy.triton import write_triton
from rdd_edge.errors import ConfigError
from rdd_edge.export.manifest import add_artifact, new_manifest, save_manifest
from rdd_edge.export.onnx_export import export_onnx
from rdd_edge.export.onnx_io import graph_io, load_export_onnx
from rdd_edge.export.parity import run_onnx
from rdd_edge.normalize import CAFFE, IMAGENET, Normalization
from rdd_edge.runs import sha256_file

SIZE = (32, 48)
CHECK = DataSpec(name="synthetic", val_images=4, size=SIZE)  # the check images: synthetic val scenes
ORT_TYPES = {"tensor(float)": "TYPE_FP32", "tensor(int64)": "TYPE_INT64", "tensor(uint8)": "TYPE_UINT8"}


class Tiny(torch.nn.Module):
    """Logits at 1/8 like our networks; 11 classes (the synthetic scenes'), small so each export is quick."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Conv2d(3, 8, 3, stride=4, padding=1)
        self.b = torch.nn.Conv2d(8, 11, 3, stride=2, padding=1)

    def forward(self, x):  # noqa: ANN001, ANN201
        return {"out": self.b(torch.relu(self.a(x)))}


def _export(folder: Path, normalization: Normalization, output: str, embed: str) -> Path:
    """An export folder as `rdd-edge export` writes it (graph, manifest with checksums and files list)."""
    torch.manual_seed(0)
    p = export_onnx(Tiny().eval(), folder / "model.onnx", SIZE, output=output, embed_preprocess=embed,
                    normalization=normalization, metadata={"rdd_edge.embedded_preprocess": embed or "false"})  # as export_run
    m = new_manifest("tiny", dataset_info("synthetic").as_dict(), CHECK, SIZE, output, embed, False, 18, p,
                     sha256_file(p), graph_io(load_export_onnx(p)), normalization)
    add_artifact(m, "onnx", p, "fp32", "onnxruntime", checked_images=CHECK.val_images)
    m["files"] = ["model.onnx", "manifest.json"]
    save_manifest(m, folder)
    return folder


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    """The default file (normalised float input) and the float255 file of the same weights (two torch exports:
    the module's cost; the BGR mode's math is checked on the export wrapper itself, without a third)."""
    root = tmp_path_factory.mktemp("ds-exports")
    return {"default": _export(root / "default" / "export", IMAGENET, "both", ""),
            "float255": _export(root / "f255" / "export", IMAGENET, "both", "float255")}


def _check_images() -> list[np.ndarray]:
    val = open_split(CHECK, "val")
    return [val[i][0] for i in range(len(val))]


def test_float255_gives_the_default_files_labels_on_the_check_images(exports):
    images = _check_images()
    with deploy.load(exports["default"] / "model.onnx") as seg:
        want = seg.predict_batch(images)
    with deploy.load(exports["float255"] / "model.onnx") as seg:
        x = seg.preprocess(images[0])
        got = seg.predict_batch(images)
    # the manifest tells deploy to feed float 0-255 RGB, untouched: the graph normalises
    assert x.dtype == np.float32 and x.max() > 1.5 and np.array_equal(x[0], images[0].transpose(2, 0, 1).astype(np.float32))
    man = read_manifest(exports["float255"] / "model.onnx")[0]
    assert man["input"] == {**man["input"], "dtype": "float32", "embedded_preprocess": True, "embed": "float255",
                            "channel_order": "rgb"}
    same = np.mean([np.mean(a == b) for a, b in zip(want, got)])
    assert same >= 0.999 and len(np.unique(np.concatenate([w.ravel() for w in want]))) > 1  # not a constant map


@pytest.mark.parametrize("norm", [IMAGENET, CAFFE], ids=["imagenet", "caffe"])
@pytest.mark.parametrize("mode", ["uint8", "float255", "float255-bgr"])
def test_each_embed_mode_feeds_its_pixels_and_the_graph_normalises_them(norm, mode):
    from rdd_edge.deploy.preprocess import preprocess
    from rdd_edge.export.onnx_export import _wrapper

    image = _check_images()[1]
    x = preprocess(image, SIZE, norm, embedded=mode)  # what deploy feeds such a file
    rgb = image.transpose(2, 0, 1)[None]
    want = rgb[:, ::-1] if mode.endswith("bgr") else rgb  # B, G, R planes for -bgr
    assert x.dtype == (np.uint8 if mode == "uint8" else np.float32) and np.array_equal(x, want)
    torch.manual_seed(0)
    net = Tiny().eval()
    with torch.no_grad():  # the export's wrapper (the graph's torch side) vs the network on independently normalised input
        got = _wrapper(net, SIZE, "logits", mode, norm)(torch.from_numpy(x.copy())).numpy()
        ref = net(torch.from_numpy(_independent(image, norm)))["out"]
        ref = torch.nn.functional.interpolate(ref, size=SIZE, mode="bilinear", align_corners=False).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)


def _independent(image: np.ndarray, norm: Normalization) -> np.ndarray:
    """ImageNet: RGB / 255, minus mean, over std; caffe: BGR 0-255 minus its BGR mean (the released code's)."""
    if norm is CAFFE:
        x = image[:, :, ::-1].astype(np.float32) - np.asarray(CAFFE.mean, np.float32)
    else:
        x = (image.astype(np.float32) / 255 - np.asarray(IMAGENET.mean, np.float32)) / np.asarray(IMAGENET.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))[None].astype(np.float32)


def test_export_checks_feed_a_float255_file_its_pixels(exports):
    """The export stage's own checks (torch/ONNX parity, the check-image scorer) on a float255 file."""
    from rdd_edge.export.parity import check_parity, make_batch
    from rdd_edge.export.scoring import CheckScorer

    val = open_split(CHECK, "val")
    images, labels = [val[i][0] for i in range(len(val))], [val[i][1] for i in range(len(val))]
    batch = make_batch(images, SIZE, IMAGENET, "float255")
    assert batch.dtype == np.float32 and batch.max() > 1.5
    torch.manual_seed(0)
    res = check_parity(Tiny().eval(), exports["float255"] / "model.onnx", batch, IMAGENET, embedded="float255")
    assert res["label_agreement"] >= 0.999 and res["max_abs_logit_diff"] < 1e-3
    got = CheckScorer(images, labels, SIZE, IMAGENET, 11, embedded="float255")(exports["float255"] / "model.onnx")
    want = CheckScorer(images, labels, SIZE, IMAGENET, 11)(exports["default"] / "model.onnx")
    assert got["miou"] == pytest.approx(want["miou"], abs=1e-3)


def test_int8_calibrates_a_float255_file_on_its_raw_pixels(exports, tmp_path):
    from rdd_edge.export.int8 import export_int8
    from rdd_edge.export.scoring import CheckScorer

    src = shutil.copy(exports["float255"] / "model.onnx", tmp_path / "model.onnx")
    scenes = open_split(DataSpec(name="synthetic", val_images=16, size=SIZE, seed=7), "val")
    items = [(f"s{i}", (lambda i=i: scenes[i][0])) for i in range(len(scenes))]
    export_int8(src, tmp_path, items, size=SIZE, normalization=IMAGENET)
    scorer = CheckScorer(_check_images(), None, SIZE, IMAGENET, 11, embedded="float255")
    scorer(src)  # the FP32 reference
    # measured: 0.988 and 0.979; calibrated on normalised input instead (no metadata), the CPU file agreed on 0.227
    for name in ("model.int8.onnx", "model.int8-cpu.onnx"):
        assert scorer(tmp_path / name)["label_agreement"] > 0.9, name


def test_check_passes_on_a_float255_export(exports, tmp_path):
    folder = shutil.copytree(exports["float255"], tmp_path / "export")
    res = wide_runner().invoke(app, ["check", str(folder), "--no-torch", "--device", "cpu", "--min-time", "0.01"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "passed" in res.output


def test_embed_preprocess_names_its_modes(tmp_path):
    from rdd_edge.normalize import embed_mode

    assert (embed_mode(True), embed_mode(False), embed_mode(None), embed_mode("Float255")) == ("uint8", "", "", "float255")
    # the option takes a value now: a bare `--embed-preprocess --runs X` reads "--runs" and is told the modes, before any work
    res = wide_runner().invoke(app, ["export", "--embed-preprocess", "--runs", str(tmp_path)])
    assert isinstance(res.exception, ConfigError) and "float255-bgr" in str(res.exception) and "'--runs'" in str(res.exception)
    assert not any(tmp_path.iterdir())


# -- DeepStream ---------------------------------------------------------------------------------------------------

def _ini(path: Path) -> configparser.SectionProxy:
    cp = configparser.ConfigParser(inline_comment_prefixes=None, interpolation=None)
    cp.read_string(path.read_text())
    return cp["property"]


@pytest.mark.parametrize("mode, color", [("float255", "0"), ("float255-bgr", "1")])
def test_deepstream_config_matches_the_graph_it_names(exports, tmp_path, mode, color):
    key = "float255"
    man = read_manifest(exports[key] / "model.onnx")[0]
    man["input"]["embed"] = mode  # the colour format follows the recorded channel order
    write_deepstream(exports[key], man, tmp_path / "deepstream")
    (cfg,) = (tmp_path / "deepstream").glob("config_infer_primary_*.txt")
    p = _ini(cfg)
    model = tmp_path / "deepstream" / p["onnx-file"]
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    c, h, w = out.shape[1], *inp.shape[2:]
    assert p["output-blob-names"] == out.name == "probs" and p["infer-dims"] == f"3;{h};{w}" and (h, w) == SIZE
    assert p["num-detected-classes"] == str(c) == "11" and inp.type == "tensor(float)" and inp.name == "images"
    assert p["network-type"] == "2" and p["model-color-format"] == color and float(p["net-scale-factor"]) == 1.0
    assert "offsets" not in p and p["segmentation-threshold"] == "0.0" and p["network-mode"] == "2"
    assert p["model-engine-file"] == "model.probs.onnx_b1_gpu0_fp16.engine"
    assert (tmp_path / "deepstream" / "labels.txt").read_text().split("\n")[:11] == man["classes"]
    # the probabilities' argmax is the export's labels, and every pixel clears threshold 0
    with deploy.load(exports[key] / "model.onnx") as seg:
        batch = np.concatenate([seg.preprocess(im) for im in _check_images()])
    logits = run_onnx(exports[key] / "model.onnx", batch)["logits"]
    probs = sess.run(None, {"images": batch})[0]
    assert probs.shape == logits.shape and np.allclose(probs.sum(1), 1, atol=1e-5) and probs.max(1).min() > 0
    assert np.mean(probs.argmax(1) == logits.argmax(1)) >= 0.999
    script = (tmp_path / "deepstream" / "pipeline.sh").read_text()
    for element in ("nvstreammux", f"nvinfer config-file-path={cfg.name}", f"nvsegvisual width={w} height={h}"):
        assert element in script


def test_deepstream_refuses_what_nvinfer_cannot_feed_in_one_line(exports, synthetic_export_src, tmp_path):
    man = read_manifest(synthetic_export_src / "model.onnx")[0]  # ImageNet mean/std on float input
    with pytest.raises(ConfigError, match=r"one net-scale-factor.*--outputs logits --embed-preprocess float255"):
        write_deepstream(synthetic_export_src, man, tmp_path / "a")
    uint8 = {**man, "input": {**man["input"], "embedded_preprocess": True, "embed": "uint8"}}
    with pytest.raises(ConfigError, match="uint8 pixels"):
        nvinfer_preprocess(uint8)
    labels_only = shutil.copytree(exports["default"], tmp_path / "labels")
    import onnx

    m = onnx.load(str(labels_only / "model.onnx"))
    keep = [o for o in m.graph.output if o.name == "labels"]
    del m.graph.output[:]
    m.graph.output.extend(keep)
    onnx.save(m, str(labels_only / "model.onnx"))
    caffe = {**man, "normalization": CAFFE.as_dict()}
    with pytest.raises(ConfigError, match="outputs only labels.*--outputs logits"):
        write_deepstream(labels_only, caffe, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_nvinfer_offsets_reproduce_a_normalisation_with_one_std():
    pixels = np.random.default_rng(0).integers(0, 256, (3, 4, 5)).astype(np.float32)
    for norm in (CAFFE, Normalization("half", scale=1 / 255, mean=(0.5, 0.4, 0.3), std=(0.25, 0.25, 0.25))):
        m = {"normalization": norm.as_dict(), "input": {"embedded_preprocess": False}}
        p = nvinfer_preprocess(m)
        offsets = np.asarray([float(v) for v in p["offsets"].split(";")], np.float32).reshape(3, 1, 1)
        fed = pixels[list(norm.perm)]  # nvinfer's planes in model-color-format order
        nv = float(p["net-scale-factor"]) * (fed - offsets)  # y = net-scale-factor * (x - offsets[c]) (Gst-nvinfer)
        np.testing.assert_allclose(nv, norm.apply(pixels), atol=1e-4)
        assert p["model-color-format"] == {"rgb": "0", "bgr": "1"}[norm.order]


# -- Triton -------------------------------------------------------------------------------------------------------

def _pbtxt(text: str) -> dict:
    """A schema reader for the protobuf text format config.pbtxt uses: ``key: value``, ``key { ... }``,
    ``key [ ... ]``; repeated keys collect into lists. Enough to check fields, names, types and dims."""
    tokens = re.findall(r'"(?:[^"\\]|\\.)*"|[{}\[\]:,]|[^\s{}\[\]:,"]+', text)
    pos = 0

    def value() -> object:
        nonlocal pos
        t = tokens[pos]
        pos += 1
        if t == "{":
            return block("}")
        if t == "[":
            items = []
            while tokens[pos] != "]":
                items.append(value())
                pos += tokens[pos] == ","
            pos += 1
            return items
        if t.startswith('"'):
            return t[1:-1]
        return int(t) if re.fullmatch(r"-?\d+", t) else t

    def block(end: str | None) -> dict:
        nonlocal pos
        out: dict = {}
        while pos < len(tokens) and tokens[pos] != end:
            key = tokens[pos]
            pos += 1
            pos += tokens[pos] == ":"
            v = value()
            if key in out:
                out[key] = (out[key] if isinstance(out[key], list) and key == "parameters" else [out[key]]) + [v]
            else:
                out[key] = [v] if key == "parameters" else v
        pos += 1
        return out

    return block(None)


def _model_config_proto():
    """tritonclient's compiled model_config proto, read from its file (tritonclient.grpc's package needs grpcio)."""
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "grpc" / "model_config_pb2.py"
    mod_spec = importlib.util.spec_from_file_location("_triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("key", ["float255", "synthetic"])
def test_triton_repository_declares_the_onnx_files_io(exports, synthetic_export_src, tmp_path, key):
    src = exports["float255"] if key == "float255" else synthetic_export_src
    man = read_manifest(src / "model.onnx")[0]
    batch = 8  # rdd-edge export's default --max-batch; else the largest its engines were built for
    if key == "synthetic":
        man["artifacts"]["trt-fp16"] = {"file": "model.fp16.engine", "max_batch": 4}
        batch = 4
    write_triton(src, man, tmp_path / "triton")
    (cfg_path,) = (tmp_path / "triton").glob("*/config.pbtxt")
    model = cfg_path.parent / "1" / "model.onnx"
    assert sha256_file(model) == man["artifacts"]["onnx"]["sha256"]  # the export's file, byte for byte
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    for text in (cfg_path.read_text(), (tmp_path / "triton-plan" / f"{cfg_path.parent.name}_trt" / "config.pbtxt").read_text()):
        cfg = _pbtxt(text)
        assert cfg["max_batch_size"] == batch and "dynamic_batching" in cfg
        assert cfg["instance_group"][0]["kind"] == "KIND_GPU"
        declared = {t["name"]: t for t in cfg["input"] + cfg["output"]}
        for t in sess.get_inputs() + sess.get_outputs():  # every graph tensor, name, type and per-item dims
            assert declared[t.name]["data_type"] == ORT_TYPES[t.type] and declared[t.name]["dims"] == t.shape[1:]
        assert set(declared) == {t.name for t in sess.get_inputs() + sess.get_outputs()}
        assert isinstance(sess.get_inputs()[0].shape[0], str)  # the batch dimension Triton fills is dynamic
    onnx_cfg, plan_cfg = _pbtxt(cfg_path.read_text()), _pbtxt(text)
    assert onnx_cfg["backend"] == "onnxruntime" and plan_cfg["backend"] == "tensorrt"
    (acc,) = onnx_cfg["optimization"]["execution_accelerators"]["gpu_execution_accelerator"]
    assert acc["name"] == "tensorrt" and {"key": "precision_mode", "value": "FP16"} in acc["parameters"]
    assert plan_cfg["default_model_filename"] == "model.plan" and plan_cfg["name"] == onnx_cfg["name"] + "_trt"
    plan_dir = tmp_path / "triton-plan" / plan_cfg["name"]
    onnx_arg = re.search(r"--onnx=(\S+)", (plan_dir / "README.txt").read_text()).group(1)
    assert (plan_dir / onnx_arg).resolve() == model.resolve()  # the trtexec line builds the plan from the served file


def test_triton_configs_parse_into_tritons_own_model_config(exports, tmp_path):
    pb = _model_config_proto()
    if pb is None:
        pytest.skip("tritonclient not installed (pip install tritonclient): the schema reader above checked the files")
    from google.protobuf import text_format

    man = read_manifest(exports["float255"] / "model.onnx")[0]
    write_triton(exports["float255"], man, tmp_path / "triton")
    sess = ort.InferenceSession(str(exports["float255"] / "model.onnx"), providers=["CPUExecutionProvider"])
    for cfg_path in (tmp_path / "triton" / "tiny" / "config.pbtxt", tmp_path / "triton-plan" / "tiny_trt" / "config.pbtxt"):
        parsed = text_format.Parse(cfg_path.read_text(), pb.ModelConfig())  # unknown fields or enum names fail here
        assert parsed.max_batch_size == 8 and [i.name for i in parsed.input] == ["images"]
        assert [(o.name, pb.DataType.Name(o.data_type), list(o.dims)) for o in parsed.output] == [
            (o.name, ORT_TYPES[o.type], o.shape[1:]) for o in sess.get_outputs()]
        assert parsed.dynamic_batching.max_queue_delay_microseconds == 100
    parsed = text_format.Parse((tmp_path / "triton" / "tiny" / "config.pbtxt").read_text(), pb.ModelConfig())
    acc = parsed.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert parsed.backend == "onnxruntime" and acc.name == "tensorrt" and acc.parameters["precision_mode"] == "FP16"


def test_bundle_writes_deepstream_and_triton_folders(exports, tmp_path, monkeypatch):
    from rdd_edge.deploy import bundle

    def fake_wheel(folder: Path) -> Path:  # the real wheel build (test_bundle.py) takes most of a minute here
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "rdd_edge-0-py3-none-any.whl").write_bytes(b"")
        return folder / "rdd_edge-0-py3-none-any.whl"

    monkeypatch.setattr(bundle, "build_wheel", fake_wheel)
    monkeypatch.setattr(bundle, "wheel_top_level", lambda wheel: ["rdd_edge"])
    run = shutil.copytree(exports["float255"].parent, tmp_path / "runs" / "distill-f")
    man = read_manifest(run / "export" / "model.onnx")[0]  # an engine built for batches up to 4 (left out of bundles)
    (run / "export" / "model.fp16.engine").write_bytes(b"plan")
    add_artifact(man, "trt-fp16", run / "export" / "model.fp16.engine", "fp16", "tensorrt", max_batch=4)
    man["files"].append("model.fp16.engine")
    save_manifest(man, run / "export")
    out = tmp_path / "B"
    res = wide_runner().invoke(app, ["bundle", str(run), "--out", str(out), "--no-check-images", "--deepstream", "--triton"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "max_batch_size: 4" in (out / "triton" / "tiny" / "config.pbtxt").read_text()
    assert not (out / "export" / "model.fp16.engine").exists()
    assert (out / "deepstream" / "config_infer_primary_tiny.txt").is_file()
    assert (out / "triton" / "tiny" / "1" / "model.onnx").is_file() and (out / "triton-plan" / "tiny_trt" / "README.txt").is_file()
    res = wide_runner().invoke(app, ["bundle", str(run), "--out", str(tmp_path / "C"), "--no-check-images", "--deepstream"])
    assert res.exit_code == 0  # the float255 export is fine; the default one is refused in one line, nothing written
    run2 = shutil.copytree(exports["default"].parent, tmp_path / "runs" / "distill-d")
    res = wide_runner().invoke(app, ["bundle", str(run2), "--out", str(tmp_path / "D"), "--no-check-images", "--deepstream"])
    assert isinstance(res.exception, ConfigError) and "--embed-preprocess float255" in str(res.exception)
    assert "\n" not in str(res.exception)  # one line (the CLI prints it alone)
    assert not (tmp_path / "D").exists()
