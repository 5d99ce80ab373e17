"""Export stage: ONNX / FP16 / INT8 artifacts of tiny students, checked against torch and ONNX Runtime.

Data: a tiny CamVid-compact folder written here (blocky scenes, labels 0..10). Sizes are small
(48x96, 96x144 for PSPNet) so the whole file stays well under a minute and a half on 2 cores.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from shared_folders import read_only

from rdd_edge.data import dataset_info
from rdd_edge.data.base import write_image, write_label
from rdd_edge.errors import CheckpointError, ConfigError, ExportError, MissingDependencyError

from rdd_edge.deploy.preprocess import preprocess
from rdd_edge.export.fp16 import export_fp16
from rdd_edge.export.int8 import export_int8, select_calibration
from rdd_edge.export.onnx_export import export_onnx
from rdd_edge.export.parity import run_onnx
from rdd_edge.export.pipeline import export_run
from rdd_edge.models import create_model, save_checkpoint
from rdd_edge.normalize import IMAGENET

SIZE = (48, 96)


def _scene(rng: np.random.Generator, h: int = 60, w: int = 120) -> tuple[np.ndarray, np.ndarray]:
    """Blocky image whose colour encodes the class, so labels and pixels correlate."""
    lbl = np.kron(rng.integers(0, 11, (h // 12, w // 12)), np.ones((12, 12), int)).astype(np.uint8)
    colors = np.asarray(dataset_info("camvid").palette, np.int16)
    img = colors[lbl] + rng.integers(-20, 20, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8), lbl


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("camvid")
    rng = np.random.default_rng(0)
    for split, n in (("train", 10), ("val", 3)):
        for i in range(n):
            img, lbl = _scene(rng)
            write_image(root / split / "images" / f"f{i:03d}.png", img)
            write_label(root / split / "labels" / f"f{i:03d}.png", lbl)
    return root


def _checkpoint(folder: Path, name: str, **kw) -> Path:
    torch.manual_seed(0)
    model = create_model(name, num_classes=11, **kw).eval()
    return save_checkpoint(folder / "best.pt", model, dataset=dataset_info("camvid"), config={"dataset": "camvid"})


@pytest.fixture(scope="module")
def mbv2_export(tmp_path_factory, data_root) -> Iterator[tuple[Path, dict]]:
    """One full export (ONNX, FP16, both INT8 files) that the tests here read; a test that changes files or
    exports again works on a copy (shared_folders.read_only fails at teardown otherwise)."""
    run = tmp_path_factory.mktemp("distill-mbv2")
    ckpt = _checkpoint(run, "mbv2", head_channels=32)
    man = export_run(source=run, size=SIZE, outputs="both", fp16=True, int8=True, calib=10, min_calib=4,
                     data=data_root, check_images=3)
    for _ in read_only(Path(man["export_dir"])):
        yield ckpt, man


def _val_batch(data_root: Path, embedded: bool = False) -> np.ndarray:
    from rdd_edge.data.base import read_image

    files = sorted((data_root / "val" / "images").glob("*.png"))
    return np.concatenate([preprocess(read_image(f), SIZE, IMAGENET, embedded=embedded) for f in files])


def test_manifest_and_fp32_parity(mbv2_export, data_root):
    ckpt, man = mbv2_export
    out = Path(man["export_dir"])
    assert out == ckpt.parent / "export"
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["format"] == "rdd-edge-export" and on_disk["model_name"] == "deeplabv3_mbv2"
    assert on_disk["input"]["shape"] == ["batch", 3, *SIZE] and on_disk["input"]["dtype"] == "float32"
    assert on_disk["classes"] == list(dataset_info("camvid").classes) and len(on_disk["palette"]) == 11
    assert set(on_disk["artifacts"]) == {"onnx", "fp16", "int8", "int8-cpu"}
    assert on_disk["artifacts"]["onnx"]["bytes"] == (out / "model.onnx").stat().st_size
    import hashlib

    assert on_disk["source_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert on_disk["artifacts"]["onnx"]["parity"]["label_agreement"] >= 0.999
    # independent check: torch logits (upsampled) vs ONNX Runtime on the val images, batch of 3
    from rdd_edge.models import model_from_checkpoint

    model, _ = model_from_checkpoint(ckpt, aux=False)
    x = _val_batch(data_root)
    with torch.no_grad():
        ref = torch.nn.functional.interpolate(model(torch.from_numpy(x))["out"], size=SIZE, mode="bilinear", align_corners=False).numpy()
    import onnxruntime as ort

    logits, labels = ort.InferenceSession(str(out / "model.onnx")).run(["logits", "labels"], {"images": x})
    assert logits.shape == (3, 11, *SIZE) and labels.shape == (3, *SIZE) and labels.dtype == np.int64
    # this untrained network's logits are ~0.3; torch and ONNX Runtime differ by float32 summation order, ~1e-6
    # (7.6e-7 with AVX-512, AVX2 and scalar torch kernels on a standard-normal batch): 1e-3 checks the graph
    assert np.abs(logits - ref).max() < 1e-3
    assert (labels == ref.argmax(1)).mean() >= 0.999
    assert not list(out.glob(".*"))  # no temporary files left behind


def test_fp16_and_int8_agree_with_fp32(mbv2_export, data_root):
    _, man = mbv2_export
    out = Path(man["export_dir"])
    x = _val_batch(data_root)
    ref = run_onnx(out / "model.onnx", x)["labels"]
    for name, floor in (("model.fp16.onnx", 0.99), ("model.int8.onnx", 0.8), ("model.int8-cpu.onnx", 0.8)):
        got = run_onnx(out / name, x)
        assert got["logits"].dtype == np.float32
        assert (got["labels"] == ref).mean() >= floor, name
    fp32 = (out / "model.onnx").stat().st_size
    for name in ("model.int8.onnx", "model.int8-cpu.onnx"):
        assert (out / name).stat().st_size < 0.3 * fp32, name
    assert man["artifacts"]["fp16"]["agreement"]["label_agreement"] >= 0.995


def _inits(m):
    return {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}


def test_int8_tensorrt_flavour_is_symmetric_per_channel(mbv2_export):
    out = Path(mbv2_export[1]["export_dir"])
    m = onnx.load(str(out / "model.int8.onnx"))
    inits = _inits(m)
    q = [n for n in m.graph.node if n.op_type == "QuantizeLinear"]
    dq = [n for n in m.graph.node if n.op_type == "DequantizeLinear"]
    assert q and len(dq) > len(q)
    for n in q + dq:  # every zero point 0 and int8
        zp = inits[n.input[2]]
        assert zp.dtype == np.int8 and not zp.any()
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    producer = {o: n for n in m.graph.node for o in n.output}
    for c in convs:
        wdq = producer[c.input[1]]
        assert wdq.op_type == "DequantizeLinear"
        w, scale = inits[wdq.input[0]], inits[wdq.input[1]]
        assert w.dtype == np.int8 and scale.shape == (w.shape[0],)
        axis = [a.i for a in wdq.attribute if a.name == "axis"]
        assert axis in ([], [0])
        if len(c.input) > 2:  # biases stay float (float16 in the default FP16-float TensorRT file): no int32 DQ
            assert c.input[2] in inits and inits[c.input[2]].dtype in (np.float32, np.float16)
    assert not any(inits[n.input[0]].dtype == np.int32 for n in dq if n.input[0] in inits)
    consumers = {}
    for n in m.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    assert all(len(consumers.get(n.output[0], [])) == 1 for n in q)  # dedicated pairs


def _skip_blocks(name: str) -> int:
    """The residual blocks of a student, counted on the torch network (timm's blocks with a skip connection)."""
    model = create_model(name, num_classes=11, head_channels=16)
    return sum(1 for m in model.modules() if getattr(m, "has_skip", False) or type(m).__name__ == "BasicBlock")


def _residual_adds_read_int8_on_both_sides(path: Path, blocks: int) -> None:
    """Every Add of two computed tensors reads a DequantizeLinear on one side (the residual) and, on the other,
    a Conv whose activation and weights come out of DequantizeLinear: TensorRT fuses Conv + Add in INT8."""
    m = onnx.load(str(path))
    consts = {t.name for t in m.graph.initializer}
    producer = {o: n for n in m.graph.node for o in n.output}
    consumers: dict[str, int] = {}
    for n in m.graph.node:
        for t in n.input:
            consumers[t] = consumers.get(t, 0) + 1
    adds = [n for n in m.graph.node if n.op_type == "Add" and not any(t in consts for t in n.input)]
    assert len(adds) == blocks > 0
    for add in adds:
        kinds = sorted(producer[t].op_type for t in add.input)
        assert kinds == ["Conv", "DequantizeLinear"], (add.name, kinds)
        conv = next(producer[t] for t in add.input if producer[t].op_type == "Conv")
        assert [producer[t].op_type for t in conv.input[:2]] == ["DequantizeLinear", "DequantizeLinear"], add.name
        dq = next(producer[t] for t in add.input if producer[t].op_type == "DequantizeLinear")
        assert producer[dq.input[0]].op_type == "QuantizeLinear"  # an activation pair, not a constant
        # a pair of its own (ONNX Runtime used to hand the Add the next Conv's DequantizeLinear: one DQ, two readers)
        assert consumers[dq.output[0]] == 1 and consumers[dq.input[0]] == 1, add.name
        assert all(producer[t].op_type != "QuantizeLinear" for t in add.output)  # the Add's output stays float


def test_tensorrt_int8_quantizes_the_residual_input_of_every_add_mbv2(mbv2_export):
    out = Path(mbv2_export[1]["export_dir"])
    _residual_adds_read_int8_on_both_sides(out / "model.int8.onnx", _skip_blocks("mbv2"))


def _int8_only(folder: Path, name: str, size: tuple[int, int]) -> Path:
    """``export_int8`` of an untrained student on 4 random images (graph tests: placement, not accuracy)."""
    torch.manual_seed(0)
    src = export_onnx(create_model(name, num_classes=11, head_channels=16).eval(), folder / "model.onnx", size)
    h, w = size
    items = [(f"r{i}", (lambda i=i: np.random.default_rng(i).integers(0, 256, (h + 8, w + 12, 3), dtype=np.uint8)))
             for i in range(4)]
    export_int8(src, folder, items, size=size)
    return folder / "model.int8.onnx"


@pytest.fixture(scope="module")
def r18_int8(tmp_path_factory) -> Path:
    return _int8_only(tmp_path_factory.mktemp("r18-int8"), "r18", (32, 48))


@pytest.fixture(scope="module")
def psp_int8(tmp_path_factory) -> Path:
    """PSPNet: its 1/8 feature map must divide by each bin (1, 2, 3, 6): 48x48 is the smallest input."""
    return _int8_only(tmp_path_factory.mktemp("psp-int8"), "pspnet_r18", (48, 48))


def test_tensorrt_int8_quantizes_the_residual_input_of_every_add_r18(r18_int8):
    """ResNet-18: four identity blocks and four with a 1x1 downsample (its output is the residual side; layer1.0's
    too: the deep stem gives 128 channels)."""
    _residual_adds_read_int8_on_both_sides(r18_int8, _skip_blocks("r18"))


def _graph(path: Path) -> tuple[list, dict, dict]:
    m = onnx.load(str(path))
    producer = {o: n for n in m.graph.node for o in n.output}
    readers: dict[str, list] = {}
    for n in m.graph.node:
        for t in n.input:
            readers.setdefault(t, []).append(n)
    return list(m.graph.node), producer, readers


def _fusion_placement(path: Path, pools: int, bin_resizes: int) -> None:
    """export.int8_placement, read off the TensorRT file: average pooling and the Resize of a pyramid bin read a
    Q/DQ pair of their own and write float; Concat and MaxPool read float and every reader of their output is a Q
    (TensorRT moves it backward through them); the logits' Resize reads the classifier's float output."""
    nodes, producer, readers = _graph(path)
    kind = lambda t: producer[t].op_type if t in producer else "input"  # noqa: E731

    def own_pair(t: str) -> bool:  # a Shape may read it too (ONNX Runtime hands a bin's Shape the DQ): shape only
        dq = producer[t]
        values = [r for r in readers[t] if r.op_type not in ("Shape", "Size")]
        return dq.op_type == "DequantizeLinear" and len(values) == 1 and kind(dq.input[0]) == "QuantizeLinear"

    pooling = [n for n in nodes if n.op_type in ("ReduceMean", "AveragePool", "GlobalAveragePool")]
    assert len(pooling) == pools and all(own_pair(n.input[0]) for n in pooling), [n.name for n in pooling]
    resizes = [n for n in nodes if n.op_type == "Resize"]
    binned = [n for n in resizes if all(r.op_type == "Concat" for r in readers[n.output[0]])]
    assert len(binned) == bin_resizes and all(own_pair(n.input[0]) for n in binned)
    (final,) = [n for n in resizes if n not in binned]
    after = {r.op_type for r in readers[final.output[0]]}  # ArgMax (and the FP16 file's Cast to float32 logits)
    assert kind(final.input[0]) == "Conv" and "ArgMax" in after and "QuantizeLinear" not in after
    for n in pooling:  # what reads a pool is the next Conv's own pair (no second Q/DQ for the pool's output)
        for q in readers[n.output[0]]:
            assert q.op_type == "QuantizeLinear" and [r.op_type for r in readers[readers[q.output[0]][0].output[0]]] == ["Conv"]
    (cat,) = [n for n in nodes if n.op_type == "Concat" and any(a.name == "axis" and a.i == 1 for a in n.attribute)]
    assert all(kind(t) != "DequantizeLinear" for t in cat.input), [kind(t) for t in cat.input]
    assert [r.op_type for r in readers[cat.output[0]]] == ["QuantizeLinear"]
    for mp in (n for n in nodes if n.op_type == "MaxPool"):
        assert kind(mp.input[0]) == "Relu" and {r.op_type for r in readers[mp.output[0]]} == {"QuantizeLinear"}


def test_tensorrt_int8_places_qdq_for_pooling_concat_and_resize_mbv2(mbv2_export):
    """DeepLabV3 (ASPP): the image pooling's ReduceMean, the five-branch Concat, the logits' Resize."""
    _fusion_placement(Path(mbv2_export[1]["export_dir"]) / "model.int8.onnx", pools=1, bin_resizes=0)


def test_tensorrt_int8_places_qdq_for_pooling_concat_and_maxpool_r18(r18_int8):
    nodes, _, _ = _graph(r18_int8)
    assert sum(n.op_type == "MaxPool" for n in nodes) == 1
    _fusion_placement(r18_int8, pools=1, bin_resizes=0)


def test_tensorrt_int8_places_qdq_for_the_pyramid_pooling_pspnet(psp_int8):
    """PSPNet: three AveragePool bins and the 1x1 bin's ReduceMean, their four Resizes into the Concat, the stem MaxPool."""
    _fusion_placement(psp_int8, pools=4, bin_resizes=4)
    _residual_adds_read_int8_on_both_sides(psp_int8, _skip_blocks("r18"))


def test_the_psp_qdq_file_builds_strongly_typed_on_the_tensorrt_double(monkeypatch, psp_int8, tmp_path):
    from trt_double import install

    from rdd_edge.deploy.engine_build import build_engine

    d, _ = install(monkeypatch, "10.13.0.35")
    build_engine(psp_int8, tmp_path / "model.int8.engine", max_batch=1, workspace_gb=1.0, timing_cache_dir=tmp_path)
    (net,) = d.calls("Builder", "create_network")
    assert net["flags"] == 1 << 1 and d.calls("IBuilderConfig", "set_flag") == []
    assert (tmp_path / "model.int8.engine").is_file()


def test_the_residual_qdq_file_builds_strongly_typed_on_the_tensorrt_double(monkeypatch, mbv2_export, tmp_path):
    from trt_double import install

    from rdd_edge.deploy.engine_build import build_engine

    d, _ = install(monkeypatch, "10.13.0.35")
    out = Path(mbv2_export[1]["export_dir"])
    build_engine(out / "model.int8.onnx", tmp_path / "model.int8.engine", max_batch=2, workspace_gb=1.0,
                 timing_cache_dir=tmp_path)
    (net,) = d.calls("Builder", "create_network")
    assert net["flags"] == 1 << 1  # STRONGLY_TYPED on 10.x
    assert d.calls("IBuilderConfig", "set_flag") == [] and d.sets("IBuilderConfig", "int8_calibrator") == []
    assert (tmp_path / "model.int8.engine").is_file()


def test_int8_cpu_flavour_uses_uint8_activations(mbv2_export):
    out = Path(mbv2_export[1]["export_dir"])
    m = onnx.load(str(out / "model.int8-cpu.onnx"))
    inits = _inits(m)
    q = [n for n in m.graph.node if n.op_type == "QuantizeLinear"]
    assert q and all(inits[n.input[2]].dtype == np.uint8 for n in q)
    assert any(inits[n.input[2]].any() for n in q)  # asymmetric: some zero points are not 0


def test_calibration_cache_is_reused(mbv2_export, data_root, tmp_path):
    from rdd_edge.data import get_dataset

    from rdd_edge.export.int8 import ImageFolderReader
    from rdd_edge.export.pipeline import _calib_items

    ckpt, man = mbv2_export
    out = Path(shutil.copytree(man["export_dir"], tmp_path / "export"))  # calibrates into the folder: a copy
    first = man["artifacts"]["int8"]["calibration"]
    assert first["cache_hit"] is False and first["reader_calls"] == 10 and (out / first["cache"]).is_file()
    readers = []

    def counting_reader(*a):
        readers.append(ImageFolderReader(*a))
        return readers[-1]

    # the same model file, images and method as the pipeline used: the ranges come from the cache
    items = select_calibration(_calib_items(get_dataset("camvid", data_root, split="train")), 10, 4)
    info = export_int8(out / "model.onnx", out, items, size=SIZE, normalization=IMAGENET, method="percentile",
                       reader_factory=counting_reader)
    assert info["calibration"]["cache_hit"] is True and readers[0].calls == 0 and info["calibration"]["cache"] == first["cache"]
    # another method is another key: it calibrates (and replaces the stale cache)
    info2 = export_int8(out / "model.onnx", out, items, size=SIZE, normalization=IMAGENET, method="minmax",
                        reader_factory=counting_reader)
    assert info2["calibration"]["cache_hit"] is False and readers[1].calls == 10
    assert not (out / first["cache"]).exists() and (out / info2["calibration"]["cache"]).is_file()


class _Tiny(torch.nn.Module):
    """A 4-conv stride-8 network: fast to export and quantize, enough for node-level checks."""

    def __init__(self, ch: int = 16) -> None:
        super().__init__()
        c = torch.nn.Conv2d
        self.body = torch.nn.Sequential(c(3, ch, 3, 2, 1), torch.nn.ReLU(), c(ch, ch, 3, 2, 1), torch.nn.ReLU(),
                                        c(ch, ch, 3, 2, 1), torch.nn.ReLU())
        self.cls = c(ch, 11, 1)

    def forward(self, x):
        return {"out": self.cls(self.body(x))}


def test_keep_float(data_root, tmp_path):
    """--keep-float: the named node stays float in both files (--int8-budget: tests/test_int8_budget.py)."""
    torch.manual_seed(0)
    src = export_onnx(_Tiny().eval(), tmp_path / "model.onnx", SIZE, output="both")
    items = sorted((data_root / "train" / "images").glob("*.png"))[:4]
    convs = [n.name for n in onnx.load(str(src)).graph.node if n.op_type == "Conv"]
    # --keep-float: the named Conv reads a float weight, the others an int8 weight through a DQ
    info = export_int8(src, tmp_path, items, keep_float=[convs[-1]])
    assert info["keep_float"] == {"int8": [convs[-1]], "int8-cpu": [convs[-1]]}
    q = onnx.load(str(tmp_path / "model.int8.onnx"))
    producer = {o: n for n in q.graph.node for o in n.output}
    for c in (n for n in q.graph.node if n.op_type == "Conv"):
        assert (c.input[1] in producer) == (c.name != convs[-1]), c.name
    with pytest.raises(ExportError, match="--keep-float no_such_conv"):
        export_int8(src, tmp_path / "x", items, keep_float=["no_such_conv"])
    with pytest.raises(TypeError):  # options by name only: a size, normalisation and method cannot swap places
        export_int8(src, tmp_path / "x", items, SIZE)
    assert not (tmp_path / "x" / "model.int8.onnx").exists()


@pytest.mark.parametrize("name,size,kw", [("r18", (48, 96), {"head_channels": 32}), ("psp18", (96, 144), {"head_channels": 16})])
def test_other_students_export_with_parity(tmp_path, data_root, name, size, kw):
    ckpt = _checkpoint(tmp_path, name, **kw)
    man = export_run(source=ckpt, size=size, data=data_root, check_images=2)
    out = Path(man["export_dir"])
    assert man["artifacts"]["onnx"]["parity"]["label_agreement"] >= 0.999
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out / "model.onnx"))
    assert [o.name for o in sess.get_outputs()] == ["labels"]
    assert sess.run(None, {"images": np.zeros((2, 3, *size), np.float32)})[0].shape == (2, *size)


def test_pspnet_size_and_dynamic_are_rejected_up_front(tmp_path):
    model = create_model("psp18", num_classes=11, head_channels=16).eval()
    with pytest.raises(ExportError, match="multiples of 48"):
        export_onnx(model, tmp_path / "model.onnx", size=(64, 96))
    with pytest.raises(ExportError, match="PSPNet"):
        export_onnx(model, tmp_path / "model.onnx", size=(96, 144), dynamic=True)
    with pytest.raises(ExportError, match="multiples of 8"):
        export_onnx(create_model("mbv2", num_classes=11), tmp_path / "model.onnx", size=(50, 96))
    assert not list(tmp_path.iterdir())


def test_embedded_preprocess_and_output_kinds(tmp_path, data_root):
    torch.manual_seed(0)
    model = _Tiny().eval()
    p_float = export_onnx(model, tmp_path / "f.onnx", SIZE, output="logits", normalization=IMAGENET)
    p_u8 = export_onnx(model, tmp_path / "u.onnx", SIZE, output="both", embed_preprocess=True, normalization=IMAGENET)
    import onnxruntime as ort

    s_f, s_u = ort.InferenceSession(str(p_float)), ort.InferenceSession(str(p_u8))
    assert [o.name for o in s_f.get_outputs()] == ["logits"]
    assert [o.name for o in s_u.get_outputs()] == ["logits", "labels"]
    assert s_u.get_inputs()[0].type == "tensor(uint8)" and s_f.get_inputs()[0].type == "tensor(float)"
    lf = s_f.run(None, {"images": _val_batch(data_root)})[0]
    lu, lab = s_u.run(None, {"images": _val_batch(data_root, embedded=True)})
    assert np.abs(lf - lu).max() < 1e-3 and (lab == lf.argmax(1)).mean() > 0.999


def _foreign_onnx(path: Path) -> Path:
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    onnx.save(helper.make_model(g), str(path))
    return path


def test_bad_onnx_inputs_name_the_file_and_leave_nothing(tmp_path):
    foreign = _foreign_onnx(tmp_path / "foreign.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x00not an onnx model at all")
    for src, msg in ((foreign, "expected one input 'images'"), (corrupt, "not a readable ONNX"), (tmp_path / "none.onnx", "not found")):
        with pytest.raises(ExportError, match=msg):
            export_fp16(src, tmp_path / "out" / "model.fp16.onnx")
        with pytest.raises(ExportError, match=msg):
            export_int8(src, tmp_path / "out", [tmp_path / "a.png"])
    from rdd_edge.export.tensorrt import build_engine

    with pytest.raises(ExportError, match="expected one input 'images'"):
        build_engine(foreign, tmp_path / "out" / "model.fp16.engine")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_bad_checkpoint_and_too_few_calibration_images(tmp_path, data_root):
    bad = tmp_path / "run" / "best.pt"
    bad.parent.mkdir()
    bad.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="best.pt"):
        export_run(source=bad, size=SIZE, data=data_root)
    torch.save({"format": "rdd-edge-checkpoint", "version": 1, "model_name": "segformer_b9",
                "model_kwargs": {"num_classes": 11}, "state_dict": {}}, bad)
    with pytest.raises(CheckpointError, match="segformer_b9"):
        export_run(source=bad, size=SIZE, data=data_root)
    ckpt = _checkpoint(tmp_path / "run", "mbv2", head_channels=16)
    with pytest.raises(ExportError, match="at least 32 images, found 10"):
        export_run(source=ckpt, size=SIZE, int8=True, data=data_root, check_images=1)
    out = ckpt.parent / "export"
    assert not out.exists() or not list(out.iterdir())  # checked before any file is written
    with pytest.raises(ConfigError, match="--keep-float"):
        export_run(source=ckpt, size=SIZE, keep_float=["x"], data=data_root)
    with pytest.raises(ExportError, match="multiples of 8"):
        export_run(source=ckpt, size=(50, 90), data=data_root)
    warnings = []
    assert len(select_calibration(list(range(40)), 300, 32, warn=warnings.append)) == 40 and "300" in warnings[0]


def test_cli_trt_without_tensorrt_fails_before_any_work(tmp_path, data_root):
    """No TensorRT here: `--trt` fails at once with the fix, and the export folder is left untouched."""
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is installed here: the missing-dependency path cannot be exercised")
    except ImportError:
        pass
    from typer.testing import CliRunner

    import rdd_edge.cli  # noqa: F401  (registers the commands)
    from rdd_edge.cli.app import app

    ckpt = _checkpoint(tmp_path / "run", "mbv2", head_channels=16)
    res = CliRunner().invoke(app, ["export", str(ckpt), "--size", "48x96", "--trt", "fp16", "--data", str(data_root),
                                   "--check-images", "2"])
    assert res.exit_code != 0
    assert isinstance(res.exception, MissingDependencyError) and "pip install -e '.[trt]'" in str(res.exception)
    assert "export without --trt" in str(res.exception)
    assert not (ckpt.parent / "export").exists()
    res = CliRunner().invoke(app, ["export", str(ckpt), "--trt", "fp61"])
    assert res.exit_code != 0 and "Did you mean 'fp16'" in str(res.exception)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_export_is_transactional(mbv2_export, tmp_path, data_root):
    """A failing re-export leaves the previous export exactly as it was; a successful one leaves no stale file."""
    ckpt, first = mbv2_export  # the previous export (ONNX, FP16, INT8), re-exported here as a copy of it
    out = Path(shutil.copytree(first["export_dir"], tmp_path / "run" / "export"))
    before = _snapshot(out)
    assert any(n.startswith("model.int8.calib-") for n in before)  # the calibration cache is part of the folder
    assert set(first["files"]) == set(before)  # the manifest lists exactly the files in the folder
    # fails after model.onnx (at the new size) was already built: nothing of it reaches the folder
    with pytest.raises(ExportError, match="--keep-float no_such_node"):
        export_run(source=ckpt, out=out, size=(96, 96), int8=True, calib=10, min_calib=4, keep_float=["no_such_node"],
                   data=data_root, check_images=2)
    assert _snapshot(out) == before
    # no staging folder left (the lock file beside the folder stays: removing it would race another export)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".export.") and p.name != ".export.lock"]
    # a successful re-export with fewer formats: no stale FP16/INT8 files beside a manifest that no longer lists them
    man = export_run(source=ckpt, out=out, size=SIZE, data=data_root, check_images=2)
    assert set(man["artifacts"]) == {"onnx"}
    assert {p.name for p in out.iterdir()} == set(man["files"]) == {"model.onnx", "manifest.json"}


def test_export_never_replaces_a_folder_that_is_not_an_export(tmp_path, data_root):
    ckpt = _checkpoint(tmp_path / "run", "mbv2", head_channels=16)
    mine = tmp_path / "my-folder"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not an rdd-edge export folder"):
        export_run(source=ckpt, size=SIZE, data=data_root, out=mine, check_images=1)
    assert (mine / "notes.txt").read_text() == "keep me"


def test_qat_rewrites_both_int8_files_from_the_ptq_calibration_and_keeps_the_residual_qdq(mbv2_export, tmp_path):
    """``rdd-edge qat`` (issue 28) on a copy of the MBV2 export: two QAD steps (no teacher recorded: the student's
    own FP32 copy), then both INT8 files are rewritten and re-scored; its "before" is the PTQ file itself (same
    calibration, same score), the TensorRT file passes the residual Q/DQ graph check of the PTQ one, the
    manifest lists what is on disk, and the checkpoint reads back with the safe loader."""
    from rdd_edge.deploy.integrity import verify_artifacts
    from rdd_edge.export.qad import QadSpec, run_qad
    from rdd_edge.models import load_checkpoint

    ckpt, man = mbv2_export
    run = tmp_path / "distill-mbv2"
    shutil.copytree(ckpt.parent, run)
    new = run_qad(QadSpec(run, iters=2, lr=1e-4, batch=2, device="cpu"))
    q = new["qad"]
    assert q["iterations"] == 2 and q["teacher"] == "self" and set(q["files"]) == {"int8", "int8-cpu"}
    for f in ("int8", "int8-cpu"):
        ptq = man["artifacts"][f]
        assert q["files"][f]["before"]["agreement"] == pytest.approx(100 * ptq["agreement"]["label_agreement"], abs=1e-3)
        rec = new["artifacts"][f]
        assert rec["sha256"] != ptq["sha256"] and rec["qad"]["after"] == q["files"][f]["after"]
        assert rec["agreement"]["label_agreement"] == pytest.approx(q["files"][f]["after"]["agreement"] / 100, abs=1e-5)
    out = run / "export"
    _residual_adds_read_int8_on_both_sides(out / "model.int8.onnx", _skip_blocks("mbv2"))
    assert sorted(json.loads((out / "manifest.json").read_text())["files"]) == sorted(p.name for p in out.iterdir())
    verify_artifacts(out, json.loads((out / "manifest.json").read_text()))  # every listed file as listed (sha256)
    saved = load_checkpoint(run / "qad.pt")
    assert saved["qad"]["iterations"] == 2 and saved["model_name"] == "deeplabv3_mbv2"
    again = run_qad(QadSpec(run, iters=1, lr=1e-4, batch=1, device="cpu"))  # a second QAD starts from PTQ again
    for f in ("int8", "int8-cpu"):
        assert again["qad"]["files"][f]["before"] == q["files"][f]["before"]
        assert again["artifacts"][f]["qad"] == again["qad"]["files"][f]
