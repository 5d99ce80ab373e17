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

    with pytest.raises(ModelError, match="unknown model 'mbv9'. Did you mean 'mbv2'"):
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
