"""Our KD, CWD, AT, TSE and TFE losses against the released loss code's outputs (tests/data/released_losses)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rdd_edge.distill.losses import at_loss, cwd_loss, kd_loss
from rdd_edge.distill.rdd import CLASS_WEIGHTS, RDDWeighting, tse_mask, weighted_ce

DATA = np.load(Path(__file__).parent / "data" / "released_losses" / "released_losses.npz")
ATOL = 1e-5


def t(name: str) -> torch.Tensor:
    return torch.from_numpy(DATA[name].astype(np.float32))


def label() -> torch.Tensor:
    lab = torch.from_numpy(DATA["label"].astype(np.int64))
    return torch.where(lab == -1, torch.full_like(lab, 255), lab)  # the release's ignore label -1 is our 255


def close(got: torch.Tensor, name: str) -> None:
    np.testing.assert_allclose(got.detach().numpy(), DATA[name], rtol=0, atol=ATOL, err_msg=name)


@pytest.mark.parametrize("T", [1.0, 4.0])
def test_kd(T):
    close(kd_loss(t("s_out"), t("t_out"), T=T), f"kd_T{T:g}")


def test_cwd_features_through_the_connector_and_logits():
    conv = torch.nn.Conv2d(128, 256, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(((torch.arange(256 * 128) % 97 - 48) / 480.0).reshape(256, 128, 1, 1))
    close(cwd_loss(t("fs"), t("ft"), tau=4.0, connector=conv), "cwd_feature")
    close(cwd_loss(t("s_out"), t("t_out"), tau=4.0), "cwd_logit")


def test_at():
    close(at_loss(t("fs"), t("ft"), p=2.0), "at")


@pytest.mark.parametrize("mode", ["xor", "or", "and"])
@pytest.mark.parametrize("min_kept", [0, 1250])
@pytest.mark.parametrize("weighted", [False, True])
def test_tse(mode, min_kept, weighted):
    target = label()
    mask = tse_mask(t("s_out"), t("t_out"), target, 0.7, mode, "gt", 255, min_kept, align_corners=True)
    cw = torch.tensor(CLASS_WEIGHTS["cityscapes"]) if weighted else None
    got = weighted_ce(t("s_out"), target, mask, 255, "selected", cw, align_corners=True)
    close(got, f"tse_{mode}_k{min_kept}_w{int(weighted)}")


@pytest.mark.parametrize("direction", ["aux_main", "main_aux"])
@pytest.mark.parametrize("average", ["all", "batch"])
def test_tfe(direction, average):
    rdd = RDDWeighting(tfe_fraction=1.0, tfe_kl=direction, tfe_average=average, align_corners=True)
    loss, _ = rdd.task_loss({"out": t("s_out"), "aux": t("s_aux")}, {"out": t("t_out"), "aux": t("t_aux")}, label(),
                            stage="tfe")
    close(loss, f"tfe_{average}_{direction}")
    from rdd_edge.distill.rdd import tfe_weights

    close(tfe_weights(t("t_out"), t("t_aux"), (24, 32), kl=direction, align_corners=True), f"tfe_w_{direction}")
