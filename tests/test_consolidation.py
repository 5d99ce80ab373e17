"""One source of truth per concept: the tables that drive code, one split opener, one vocabulary, import safety."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from console_width import wide_env
from rdd_edge.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_python_m_finds_our_packages_before_a_users_folders(tmp_path):
    """`python -m rdd_edge` (what torchrun runs) inside a project with its own models/ and export/: our
    stages are rdd_edge.models, rdd_edge.export ..., so the user's folders are never imported."""
    for name in ("models", "export", "deploy", "distill"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise ImportError('the user project {name} was imported')\n")
    r = subprocess.run([sys.executable, "-m", "rdd_edge", "models", "--filter", "mbv2", "--size", "64x64"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300, env=wide_env())  # names unfolded
    assert r.returncode == 0, r.stderr[-2000:]
    assert "deeplabv3_mbv2" in r.stdout and "user project" not in r.stderr


def test_one_namespace_nothing_but_rdd_edge_is_installed_and_no_path_is_patched():
    """The stages install as rdd_edge.models / .distill / .export / .deploy; no module edits sys.path."""
    import importlib.metadata as md
    import re

    import rdd_edge.deploy
    import rdd_edge.models

    dist = md.distribution("rdd-edge")
    assert (dist.read_text("top_level.txt") or "").split() == ["rdd_edge"]
    assert Path(rdd_edge.models.__file__).parent == ROOT / "models"  # the repository keeps its layout
    assert Path(rdd_edge.deploy.__file__).parent == ROOT / "deploy"
    patched = [str(p.relative_to(ROOT)) for d in ("rdd_edge", "models", "distill", "export", "deploy", "benchmarks")
               for p in (ROOT / d).rglob("*.py") if re.search(r"sys\.path\.(insert|append)", p.read_text())]
    assert patched == []


def test_formats_table_drives_requests_and_option_checks():
    from rdd_edge.export.formats import ExportSpec, check_options, requested
    from rdd_edge.formats import FORMATS, ORDER

    keys = lambda spec: [f.key for f in requested(spec.normalised())]  # noqa: E731
    assert keys(ExportSpec()) == ["onnx"]
    assert keys(ExportSpec(fp16=True)) == ["onnx", "fp16"]
    assert keys(ExportSpec(int8=True)) == ["onnx", "int8-cpu", "int8"]  # one calibration, both flavours
    assert keys(ExportSpec(trt="fp16")) == ["onnx", "fp16", "engine-fp16"]  # sources come along
    # --trt all: every engine row and, through their sources, every row one of them needs, in table order
    engines = [f for f in FORMATS if f.runtime == "tensorrt"]
    assert set(keys(ExportSpec(trt="all"))) >= {f.key for f in engines} | {f.source for f in engines}
    assert keys(ExportSpec(trt="all")) == [k for k in ORDER if k in keys(ExportSpec(trt="all"))]
    assert ORDER == tuple(f.key for f in FORMATS)
    for spec, flag in ((ExportSpec(calib=100), "--calib"), (ExportSpec(int8_max_drop=1.0), "--int8-max-drop"),
                       (ExportSpec(int8_budget=1.0), "--int8-budget"), (ExportSpec(int8_report=True), "--int8-report"),
                       (ExportSpec(fp16=True, max_batch=4), "--max-batch"), (ExportSpec(dla_core=0), "--dla-core")):
        with pytest.raises(ConfigError, match=flag):
            check_options(spec.normalised())
    check_options(ExportSpec(int8=True, calib=100).normalised())
    check_options(ExportSpec(trt="fp16", max_batch=4).normalised())
    with pytest.raises(ConfigError, match="Did you mean 'fp16'"):
        ExportSpec(trt="fp61").normalised()
    with pytest.raises(ConfigError, match="--profile"):
        ExportSpec(profile="256x512,512x1024,1024x2048").normalised()  # without --dynamic
    p = ExportSpec(dynamic=True, trt="fp16", profile="256x512,512x1024,1024x2048").normalised().profile
    assert p == ((256, 512), (512, 1024), (1024, 2048))


def test_a_new_format_row_is_built_scored_and_listed(tmp_path, monkeypatch, add_format_rows):
    """Adding an export format is a row + a builder: export_run builds, scores and lists it, check orders it;
    one with a flag of its own and one asked for by key (`--format twin`), both through the CLI."""
    import json

    import torch
    from typer.testing import CliRunner

    from rdd_edge.cli import app
    from rdd_edge.deploy.check_rows import row_order
    from rdd_edge.export import builders
    from rdd_edge.formats import ExportFormat
    from rdd_edge.models import create_model, save_checkpoint
    from rdd_edge.data import DataSpec, dataset_info

    def build_copy(ctx, keys=()):
        import shutil

        dst = ctx.out / "model.copy.onnx"
        shutil.copy(ctx.path("onnx"), dst)
        return {"copy": {"path": dst}}

    def build_twin(ctx, keys=()):
        import shutil

        dst = ctx.out / "model.twin.onnx"
        shutil.copy(ctx.path("onnx"), dst)
        return {"twin": {"path": dst}}

    monkeypatch.setattr(builders, "build_copy", build_copy, raising=False)
    monkeypatch.setattr(builders, "build_twin", build_twin, raising=False)
    row = ExportFormat("copy", "ONNX copy", "model.copy.onnx", "onnxruntime", "fp32", "--fp16", "rdd_edge.export.builders:build_copy",
                       source="onnx", min_agreement=0.999)
    # a row without a flag of its own: `rdd-edge export --format twin` asks for it
    twin = ExportFormat("twin", "ONNX twin", "model.twin.onnx", "onnxruntime", "fp32", "--format twin",
                        "rdd_edge.export.builders:build_twin", source="onnx")
    add_format_rows(row, twin)
    assert row_order()[-2:] == ("copy", "twin")  # check orders the rows after the others
    torch.manual_seed(0)
    run = tmp_path / "distill-x"
    model = create_model("mbv2", num_classes=11, head_channels=8).eval()
    data = DataSpec("synthetic", train_images=4, val_images=3, size=(48, 64), seed=5)
    save_checkpoint(run / "best.pt", model, dataset=dataset_info("synthetic"), data=data.as_dict(), config={})
    res = CliRunner().invoke(app, ["export", str(run), "--fp16", "--format", "twin"])
    assert res.exit_code == 0, res.output
    man = json.loads((run / "export" / "manifest.json").read_text())
    assert set(man["artifacts"]) == {"onnx", "fp16", "copy", "twin"}
    assert man["artifacts"]["copy"]["agreement"]["label_agreement"] == 1.0
    assert man["artifacts"]["twin"]["agreement"]["label_agreement"] == 1.0
    assert man["artifacts"]["copy"]["checked_images"] == 3  # the checkpoint's whole val split
    assert set(man["files"]) == {p.name for p in (run / "export").iterdir()}



def test_format_by_key_is_the_same_as_its_flag_and_names_a_wrong_key():
    from rdd_edge.export.formats import ExportSpec, requested

    keys = lambda spec: [f.key for f in requested(spec.normalised())]  # noqa: E731
    assert keys(ExportSpec(format=["fp16"])) == keys(ExportSpec(fp16=True)) == ["onnx", "fp16"]
    # a key stands for its flag, so one calibration's two files come together as with --int8
    assert keys(ExportSpec(format=["INT8-CPU"])) == keys(ExportSpec(int8=True))
    assert keys(ExportSpec(format=["engine-int8"])) == keys(ExportSpec(trt="int8"))
    assert ExportSpec(format=["fp16", "fp16"]).normalised().format == ("fp16",)
    with pytest.raises(ConfigError, match=r"--format: unknown value 'fp61'\. Did you mean 'fp16'"):
        ExportSpec(format=["fp61"]).normalised()


def test_a_format_row_without_a_flag_of_its_own_needs_no_spec_field_and_no_option(add_format_rows):
    """A row whose flag is "--format KEY" needs no ExportSpec field and no CLI option: a spec asks for it by
    key (with its source), the pipeline's every-format spec asks for it, and an option that only it takes is
    refused without it, naming the flag to add. (The CLI builds one: test_a_new_format_row_is_built_scored_and_listed.)"""
    from rdd_edge.cli.pipeline import every_format_spec
    from rdd_edge.export.formats import ExportSpec, check_options, requested
    from rdd_edge.formats import ExportFormat

    row = ExportFormat("twin", "ONNX twin", "model.twin.onnx", "onnxruntime", "fp32", "--format twin",
                       "rdd_edge.export.builders:build_twin", source="onnx", options=frozenset({"opt_batch"}))
    add_format_rows(row)

    assert row in requested(every_format_spec(False, calib=64).normalised())
    assert [f.key for f in requested(ExportSpec(format=["twin"]).normalised())] == ["onnx", "twin"]
    with pytest.raises(ConfigError, match="--opt-batch applies only to .*twin.*add .*--format twin"):
        check_options(ExportSpec(fp16=True, opt_batch=2).normalised())

def test_one_split_opener_gives_training_export_and_check_the_same_images(tmp_path):
    from rdd_edge.deploy.check import load_eval_data
    from rdd_edge.distill.config import make_config
    from rdd_edge.distill.evaluate import checkpoint_split
    from rdd_edge.distill.train import build_data
    from rdd_edge.data import open_split, spec_of_checkpoint

    cfg = make_config("distill", synthetic_train=3, synthetic_val=4, eval_size=(48, 64), seed=7)
    data = build_data(cfg)
    ckpt = {"data": cfg.data_spec().as_dict(), "model_kwargs": {"num_classes": 11}, "config": cfg.as_dict()}
    _, evaluated, _ = checkpoint_split(ckpt)
    export_val = open_split(spec_of_checkpoint(ckpt), "val")  # what export_run scores on
    _, check_imgs, _ = load_eval_data({"data": ckpt["data"]}, None, None, None)
    assert len(data.val) == len(evaluated) == len(export_val) == len(check_imgs) == 4
    for i in range(4):
        ref = data.val[i][0]
        assert np.array_equal(ref, evaluated[i][0]) and np.array_equal(ref, export_val[i][0])
        assert np.array_equal(ref, check_imgs[i])


def test_detect_dataset_reads_the_layout(tmp_path):
    import re

    from rdd_edge.data import DATASETS
    from rdd_edge.data.registry import detect_dataset
    from rdd_edge.errors import DataError

    (tmp_path / "cv" / "train" / "images").mkdir(parents=True)
    (tmp_path / "cv" / "train" / "labels").mkdir(parents=True)
    assert detect_dataset(tmp_path / "cv") == "camvid"
    (tmp_path / "ade" / "ADEChallengeData2016" / "images" / "training").mkdir(parents=True)
    (tmp_path / "ade" / "ADEChallengeData2016" / "annotations" / "training").mkdir(parents=True)
    assert detect_dataset(tmp_path / "ade") == "ade20k"
    (tmp_path / "junk").mkdir()
    folder_formats = [n for n in DATASETS if n != "synthetic"]  # every data set with an on-disk layout of its own
    with pytest.raises(DataError, match=re.escape(f"pass --dataset with one of {', '.join(folder_formats)}")):
        detect_dataset(tmp_path / "junk")


def test_one_device_spelling_everywhere():
    from rdd_edge.devices import cuda_index, parse_device

    assert parse_device(None) == "auto" and parse_device(" CUDA:1 ") == "cuda:1" and cuda_index("cuda:1") == 1
    with pytest.raises(ConfigError, match="auto, cpu, cuda, cuda:N"):
        parse_device("gpu")


def test_commands_share_one_vocabulary():
    """--dataset is a name, --data a folder, --runs the run parent, --device the same choices, everywhere they appear."""
    import typer

    from rdd_edge.cli import app

    cmd = typer.main.get_command(app)
    seen: dict[str, set[str]] = {}

    def walk(c, name):
        if hasattr(c, "commands"):  # a group
            for sub_name, sub in c.commands.items():
                walk(sub, f"{name} {sub_name}")
            return
        for p in c.params:
            for opt in getattr(p, "opts", []):
                if opt in ("--dataset", "--data", "--runs", "--device", "--data-root", "--output", "--model"):
                    seen.setdefault(opt, set()).add(name.strip())
                    if opt in ("--data", "--runs", "--device", "--dataset"):
                        seen.setdefault(f"{opt} help", set()).add(p.help)

    walk(cmd, "")
    assert "--data-root" not in seen and "--output" not in seen
    assert seen["--model"] == {"train-teacher", "import"}  # a model *name*; artifacts are positional arguments
    for opt in ("--data", "--runs", "--device", "--dataset"):
        assert len(seen[f"{opt} help"]) == 1, (opt, seen[f"{opt} help"])  # written once
    assert {"check", "export", "demo", "eval", "distill", "train-teacher", "pipeline", "difficulty"} <= seen["--data"] | seen["--runs"]
    assert {"check", "export", "demo", "difficulty", "distill", "train-teacher", "pipeline"} <= seen["--runs"]
