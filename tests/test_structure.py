"""Knowledge in one place (issue 20): a data set's recipe is its own, names are checked with the config, the
CLI's lists come from the registries, one checkpoint lookup."""

from __future__ import annotations

import dataclasses

import pytest

from rdd_edge.data import registry
from rdd_edge.data.base import TrainRecipe
from rdd_edge.distill.config import make_config
from rdd_edge.errors import CheckpointError, ModelError


def test_a_new_data_set_trains_at_its_own_crop_and_schedule(monkeypatch):
    """Registering a data set is the one place: its declared crop and recipe reach the config."""
    fmt = registry.get_format("camvid")
    small = dataclasses.replace(fmt.info, name="tiny", crop_size=(64, 64),
                                recipe=TrainRecipe(iters=500, batch=4, val_every=50, log_every=5, lr=0.01))
    monkeypatch.setitem(registry._FORMATS, "tiny", fmt.with_info(small, summary="like camvid"))
    monkeypatch.setitem(registry.DATASETS, "tiny", registry._reader("tiny"))
    cfg = make_config("teacher", "tiny")
    assert (cfg.crop, cfg.iters, cfg.batch, cfg.val_every, cfg.log_every, cfg.lr) == ((64, 64), 500, 4, 50, 5, 0.01)
    assert make_config("teacher", "tiny", crop=(32, 32)).crop == (32, 32)  # an option still wins


@pytest.mark.parametrize("name", list(registry.DATASETS))
def test_every_registered_data_set_states_its_crop_recipe_and_layout(name):
    fmt = registry.get_format(name)
    assert fmt.info.crop_size and fmt.info.recipe.iters > 0 and fmt.summary
    assert make_config("teacher", name).crop == tuple(fmt.info.crop_size)


def test_an_unknown_student_fails_with_the_config_before_any_data_or_teacher(tmp_path):
    from typer.testing import CliRunner

    from rdd_edge.cli import app

    with pytest.raises(ModelError, match=r"unknown model 'mbv9'. Did you mean 'mbv\d'"):  # any close name
        make_config("distill", model="mbv9")
    res = CliRunner().invoke(app, ["distill", "--student", "mbv9", "--runs", str(tmp_path / "runs"),
                                   "--teacher", str(tmp_path / "missing.pt")])
    assert res.exit_code != 0 and "unknown model 'mbv9'" in str(res.exception)  # not "missing.pt: not found"
    assert not (tmp_path / "runs").exists()


def test_one_checkpoint_lookup_for_training_eval_and_export(tmp_path):
    from rdd_edge.export.pipeline import find_checkpoint
    from rdd_edge.models.checkpoint import resolve_checkpoint

    run = tmp_path / "runs" / "distill-a"
    run.mkdir(parents=True)
    with pytest.raises(CheckpointError, match="folder holds no best.pt / last.pt;"):
        find_checkpoint(run)
    (run / "last.pt").write_bytes(b"x")
    assert find_checkpoint(run) == resolve_checkpoint(run) == run / "last.pt"
    (run / "best.pt").write_bytes(b"x")
    assert find_checkpoint(run) == run / "best.pt" and resolve_checkpoint(run, prefer="last.pt") == run / "last.pt"
    assert find_checkpoint(None, tmp_path / "runs") == run / "best.pt"  # the latest distill run


# --- import direction and the formats table (issue 20, item 1) ----------------------------------

import ast  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("distill", "export", "deploy", "models", "cli")


def _imports(path: Path, package: str) -> list[tuple[int, str]]:
    """Every module ``path`` imports, anywhere in it (function-local imports included), as absolute
    names: ``from rdd_edge import export`` counts as ``rdd_edge.export``, relative imports are resolved
    against ``package``, and ``importlib.import_module("...")`` with a literal name counts too."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            found += [(node.lineno, base)] + [(node.lineno, f"{base}.{a.name}") for a in node.names]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.append((node.lineno, node.args[0].value))
    return found


def _package(path: Path, top: Path, name: str) -> str:
    """The package a module file sits in: ``deploy/backends/x.py`` -> ``rdd_edge.deploy.backends``."""
    return ".".join([name, *path.parent.relative_to(top).parts])


def _is(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_deploy_never_imports_export_or_torch():
    """deploy runs on a device without torch, and export -> deploy is the only direction between them
    (a cycle would make either impossible to load or test alone)."""
    files = sorted((ROOT / "deploy").rglob("*.py"))
    assert len(files) > 10
    bad = [f"{p.relative_to(ROOT)}:{line}: {mod}" for p in files
           for line, mod in _imports(p, _package(p, ROOT / "deploy", "rdd_edge.deploy"))
           if _is(mod, "rdd_edge.export") or _is(mod, "torch") or _is(mod, "torchvision")]
    assert bad == []


# rdd_edge/__main__.py is `python -m rdd_edge`: the CLI's entry point, so it imports the CLI (nothing else does)
ENTRY_POINTS = {"rdd_edge/__main__.py": {"rdd_edge.cli", "rdd_edge.cli.main"}}


def test_core_modules_import_no_stage():
    """The core (rdd_edge/*.py, rdd_edge/data/) is what every stage builds on: it imports none of them."""
    top = ROOT / "rdd_edge"
    files = sorted([*top.glob("*.py"), *(top / "data").rglob("*.py")])
    assert (top / "formats.py") in files and len(files) > 10
    bad = []
    for p in files:
        allowed = ENTRY_POINTS.get(str(p.relative_to(ROOT)), set())
        for line, mod in _imports(p, _package(p, top, "rdd_edge")):
            if any(_is(mod, f"rdd_edge.{s}") for s in STAGES) and mod not in allowed:
                bad.append(f"{p.relative_to(ROOT)}:{line}: {mod}")
    assert bad == []


def test_every_table_flag_is_an_export_option_and_a_spec_field():
    """A row's flag is what `rdd-edge export` takes and what ExportSpec carries, so the table, the CLI
    and the spec cannot drift apart."""
    import dataclasses

    import typer

    from rdd_edge import formats
    from rdd_edge.cli import app
    from rdd_edge.export.formats import ExportSpec, asks_for, requested, spec_for

    export = typer.main.get_command(app).commands["export"]  # type: ignore[attr-defined]
    options = {o for p in export.params for o in getattr(p, "opts", [])}
    fields = {f.name for f in dataclasses.fields(ExportSpec)}
    for row in formats.FORMATS:
        if row.flag is None:
            continue
        option, value = formats.split_flag(row.flag)
        assert option in options and option.lstrip("-").replace("-", "_") in fields, row
        spec = spec_for([row.flag]).normalised()
        assert asks_for(spec, row.flag) and row in requested(spec), row
        if value is not None:
            assert formats.flag_choices(option)[value] == (row.flag,)


def test_the_pipeline_asks_for_every_format_this_machine_can_build():
    from rdd_edge import formats
    from rdd_edge.cli.pipeline import every_format_spec
    from rdd_edge.export.formats import requested

    assert requested(every_format_spec(True).normalised()) == list(formats.FORMATS)
    without = requested(every_format_spec(False, calib=64).normalised())
    assert without == [f for f in formats.FORMATS if f.runtime != "tensorrt"] and without
    assert every_format_spec(False, calib=64).calib == 64


def test_a_new_onnx_row_is_read_by_deploy_from_the_table_and_never_given_to_tensorrt(monkeypatch, tmp_path, add_format_rows):
    """A row appended to the table (and nothing else edited): deploy takes its precision from the table,
    by the manifest's key or the exact file name, and a row with trt_ep False never reaches TensorRT:
    not ONNX Runtime's TensorRT execution provider, not an engine build; check orders its row."""
    import json

    from rdd_edge import formats
    from rdd_edge.deploy.backends.onnxruntime import artifact_format, artifact_precision, provider_options
    from rdd_edge.deploy.check import manifest_candidates
    from rdd_edge.deploy.check_rows import row_order
    from rdd_edge.deploy.engine_build import build_engine
    from rdd_edge.deploy.engine_plan import engine_precision
    from rdd_edge.errors import ConfigError

    # a made-up row (no real format has this key or file, so the table's own rows cannot answer for it)
    row = formats.ExportFormat("int8-madeup", "ONNX INT8 (made up)", "model.int8-madeup.onnx", "onnxruntime",
                               "int8", "--int8-madeup", "rdd_edge.export.builders:build_int8_madeup", source="onnx",
                               trt_ep=False)
    add_format_rows(row)
    ALL = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]

    # no manifest: the table's exact file name
    f = tmp_path / row.file
    assert artifact_format(f) is row and artifact_precision(f) == "int8"
    assert provider_options(f, ALL) == (["CUDAExecutionProvider", "CPUExecutionProvider"], [{"device_id": 0}, {}])
    # listed in a manifest under its key, in a file named otherwise (an INT8-looking name, no precision given)
    export = tmp_path / "export"
    export.mkdir()
    for name in ("model.onnx", "student.int8.onnx"):
        (export / name).write_bytes(b"onnx")
    (export / "manifest.json").write_text(json.dumps({"format": "rdd-edge-export", "version": 1, "artifacts": {
        row.key: {"file": "student.int8.onnx", "sha256": "0" * 64},
        "onnx": {"file": "model.onnx", "precision": "fp32", "sha256": "0" * 64}}}))
    listed = export / "student.int8.onnx"
    assert artifact_format(listed) is row and artifact_precision(listed) == "int8"
    providers, opts = provider_options(listed, ALL)
    assert "TensorrtExecutionProvider" not in providers and not any(o.get("trt_int8_enable") for o in opts)
    # an engine build refuses it before TensorRT is touched (no tensorrt module is needed to say so)
    for name, m in ((row.file, None), ("student.int8.onnx", json.loads((export / "manifest.json").read_text()))):
        with pytest.raises(ConfigError, match=r"ONNX INT8 \(made up\) \(int8-madeup\) is not for TensorRT"):
            engine_precision(name, "", m)
    with pytest.raises(ConfigError, match="is not for TensorRT"):
        build_engine(listed, export / "student.engine")
    # check: its row comes after the table's others, with the table's precision
    assert row_order()[-1] == row.key
    manifest = json.loads((export / "manifest.json").read_text())
    cands = manifest_candidates(export, manifest)
    assert [c.name for c in cands] == ["onnx", row.key] and cands[1].precision == "int8"


# --- every module imports on its own (issue 20, item 6) -----------------------------------------

import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402

# one subprocess per package; inside it each module is imported with every rdd_edge module forgotten
# first, so a module that only imports after a sibling (an import cycle, a missing import) fails by name.
# Third-party modules (torch) stay loaded between modules, which keeps this fast. TORCH_FREE: the
# packages deploy, the core and `rdd-edge --help` import, which must never load torch.
PACKAGES = {"rdd_edge": False, "rdd_edge.data": False, "rdd_edge.cli": False, "rdd_edge.deploy": False,
            "rdd_edge.models": True, "rdd_edge.distill": True, "rdd_edge.export": True}
_IMPORT_EACH = textwrap.dedent("""
    import importlib, pkgutil, sys, traceback
    package, torch_ok = sys.argv[1], sys.argv[2] == "1"
    pkg = importlib.import_module(package)
    if package == "rdd_edge":  # the core: its own modules, not the stage packages inside it
        names = [f"rdd_edge.{m.name}" for m in pkgutil.iter_modules(pkg.__path__) if not m.ispkg]
    else:
        names = [package] + [m.name for m in pkgutil.walk_packages(pkg.__path__, package + ".")]
    bad = []
    for name in names:
        for m in [m for m in sys.modules if m == "rdd_edge" or m.startswith("rdd_edge.")]:
            del sys.modules[m]
        try:
            importlib.import_module(name)
        except BaseException:
            bad.append(f"{name}: " + traceback.format_exc(limit=-3))
            continue
        if not torch_ok and "torch" in sys.modules:
            bad.append(f"{name}: imports torch")
            break
    print(len(names), "modules")
    print("\\n".join(bad))
    sys.exit(1 if bad else 0)
""")


@pytest.mark.parametrize("package", list(PACKAGES))
def test_every_module_imports_on_its_own(package):
    """Each module of the package imports in an interpreter that has loaded no other rdd_edge module
    (function-local imports are kept only for a reason; a hoisted one must not close a cycle), and the
    torch-free packages (core, data, CLI, deploy) never load torch doing so."""
    r = subprocess.run([sys.executable, "-c", _IMPORT_EACH, package, "1" if PACKAGES[package] else "0"],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert int(r.stdout.split()[0]) > 1


def test_engine_builds_and_the_check_reference_import_without_torch():
    """`rdd-edge engine` runs on a device without torch (export.pipeline.engine_run, the builders, the
    TensorRT wrapper), and deploy's check loads the torch reference row's module by entry point there:
    the torch-side imports of these modules stay inside their functions."""
    code = ("import sys\n"
            "for m in ('torch', 'torchvision', 'timm', 'tensorboard', 'onnxscript', 'onnxslim'):\n"
            "    sys.modules[m] = None\n"
            "import rdd_edge.export.pipeline, rdd_edge.export.builders, rdd_edge.export.tensorrt\n"
            "import rdd_edge.export.reference, rdd_edge.cli.pipeline\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
