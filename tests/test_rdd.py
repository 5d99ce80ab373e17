"""RDD core (distill/rdd.py) against an independent NumPy computation of METHOD.md."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rdd_edge.distill.rdd import RDDWeighting, tfe_weights, tse_mask, weighted_ce
from rdd_edge.errors import ConfigError

IGNORE = 255
# Tolerances (issue 33). torch computes in float32, the NumPy references in float64, so the gap is float32 rounding,
# whose size depends on the order torch sums in, and so on the CPU's vector width. A mean over n pixels of terms of
# order 1 is off by about sqrt(n) * 6e-8 relative (~2e-6 for the ~1e3 pixels here). Largest relative gap seen with
# torch's AVX-512, AVX2 and scalar kernels (ATEN_CPU_CAPABILITY=avx2 / default): 1.8e-7.
F32 = 1e-5  # a wrong weight, mask or normaliser moves a loss by percent
# per-pixel TFE weights in (0, 1]: float32 softmaxes of resized logits and an exp, a few ulps of 1 (seen 3.6e-7)
W_ATOL = 1e-5


# ---------------------------------------------------------------- numpy reference
def np_resize(x: np.ndarray, size) -> np.ndarray:
    """Bilinear resize of (..., h, w) to size, align_corners=False (half-pixel centres, edge clamp)."""
    H, W = size
    h, w = x.shape[-2:]

    def axis(n_out, n_in):
        src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0

    y0, y1, ly = axis(H, h)
    x0, x1, lx = axis(W, w)
    rows = x[..., y0, :] * (1 - ly)[:, None] + x[..., y1, :] * ly[:, None]
    return rows[..., x0] * (1 - lx) + rows[..., x1] * lx


def np_softmax(z: np.ndarray, axis=1) -> np.ndarray:
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def np_tfe(zt, za, size):
    pt, pa = np_softmax(zt), np_softmax(za)
    kl = (pt * (np.log(pt) - np.log(pa))).sum(1)
    return np_resize(np.exp(-kl), size)


def np_conf(z, y, confidence):
    p = np_softmax(np_resize(z, y.shape[-2:]))
    if confidence == "max":
        return p.max(1)
    safe = np.where(y == IGNORE, 0, y)
    return np.take_along_axis(p, safe[:, None], 1)[:, 0]


def np_hard(conf, valid, t, min_kept=0):
    if min_kept > 0:
        v = np.sort(conf[valid])
        k = min(min_kept, v.size)
        if k > 0:
            t = max(t, v[k - 1])
    return valid & (conf <= t)


def np_tse(zs, zt, y, t=0.7, mode="xor", confidence="gt", min_kept=0):
    valid = y != IGNORE
    hs = np_hard(np_conf(zs, y, confidence), valid, t, min_kept)
    ht = np_hard(np_conf(zt, y, confidence), valid, t, min_kept)
    return {"xor": hs ^ ht, "or": hs | ht, "and": hs & ht}[mode] & valid


def np_ce(z, y):
    """Per-pixel CE at label size, 0 on ignored pixels."""
    logp = np.log(np_softmax(np_resize(z, y.shape[-2:])))
    safe = np.where(y == IGNORE, 0, y)
    ce = -np.take_along_axis(logp, safe[:, None], 1)[:, 0]
    return np.where(y == IGNORE, 0.0, ce)


def np_wce(z, y, w, normalize="valid", class_weight=None):
    """Weighted CE; "selected" averages over pixels that are weighted *and* valid. With class weights
    each counted pixel counts class_weight[y] (torch's CrossEntropyLoss(weight=...) mean)."""
    w = w.astype(np.float64)
    valid = y != IGNORE
    counted = np.ones(y.shape, bool) if normalize == "all" else (valid if normalize == "valid" else valid & (w != 0))
    cw = np.ones(y.shape) if class_weight is None else np.asarray(class_weight, np.float64)[np.where(valid, y, 0)]
    denom = (cw * counted).sum()
    return (np_ce(z, y) * w * cw).sum() / (denom if denom > 0 else 1.0)


# ---------------------------------------------------------------- fixtures
def make(n=2, c=5, h=6, w=8, H=48, W=64, seed=0, scale=2.5, ignore_frac=0.15):
    g = np.random.default_rng(seed)
    zs = (g.standard_normal((n, c, h, w)) * scale).astype(np.float32)
    zt = (g.standard_normal((n, c, h, w)) * scale).astype(np.float32)
    za = (zt + g.standard_normal((n, c, h, w)) * 1.5).astype(np.float32)
    y = g.integers(0, c, (n, H, W)).astype(np.int64)
    y[g.random((n, H, W)) < ignore_frac] = IGNORE
    return zs, zt, za, y


def t(a, grad=False):
    return torch.tensor(a, requires_grad=grad)


def test_numpy_resize_reference_is_sane():
    # the reference itself: a constant stays constant and it agrees with torch on a ramp
    x = np.arange(6 * 8, dtype=np.float64).reshape(1, 1, 6, 8)
    ref = np_resize(x, (50, 70))
    got = F.interpolate(torch.tensor(x), size=(50, 70), mode="bilinear", align_corners=False).numpy()
    np.testing.assert_allclose(ref, got, rtol=0, atol=1e-9)  # float64 on both sides (seen 1.4e-14)
    np.testing.assert_allclose(np_resize(np.full((1, 1, 3, 5), 2.0), (9, 11)), 2.0)


# ---------------------------------------------------------------- TFE
@pytest.mark.parametrize("size", [(48, 64), (50, 70), (6, 8)])
def test_tfe_weights_match_numpy(size):
    _, zt, za, _ = make()
    got = tfe_weights(t(zt), t(za), size)
    assert got.shape == (2, *size) and got.dtype == torch.float32 and not got.requires_grad
    np.testing.assert_allclose(got.numpy(), np_tfe(zt.astype(np.float64), za.astype(np.float64), size), atol=W_ATOL)
    assert float(got.min()) > 0 and float(got.max()) <= 1 + 1e-6
    # heads that agree give weight 1 everywhere
    np.testing.assert_allclose(tfe_weights(t(zt), t(zt), size).numpy(), 1.0, atol=1e-6)  # exp of a float32 ~0: 1 +- ulps (seen 5.4e-8)


def test_tfe_weights_half_input_computed_in_float32():
    _, zt, za, _ = make()
    zt16, za16 = zt.astype(np.float16), za.astype(np.float16)
    got = tfe_weights(torch.tensor(zt16), torch.tensor(za16), (48, 64))
    assert got.dtype == torch.float32
    ref = np_tfe(zt16.astype(np.float64), za16.astype(np.float64), (48, 64))
    np.testing.assert_allclose(got.numpy(), ref, atol=W_ATOL)


# ---------------------------------------------------------------- TSE
@pytest.mark.parametrize("mode", ["xor", "or", "and"])
@pytest.mark.parametrize("confidence", ["gt", "max"])
def test_tse_mask_matches_numpy(mode, confidence):
    zs, zt, _, y = make(seed=1)
    thr = 0.7 if confidence == "gt" else 0.8
    got = tse_mask(t(zs), t(zt), t(y), threshold=thr, mode=mode, confidence=confidence).numpy()
    ref = np_tse(zs.astype(np.float64), zt.astype(np.float64), y, thr, mode, confidence)
    assert got.dtype == np.bool_ and got.shape == y.shape
    assert (got != ref).sum() == 0
    assert not got[y == IGNORE].any()
    assert 0 < got.sum() < (y != IGNORE).sum()  # a real, partial selection


def test_tse_modes_relate_as_sets():
    zs, zt, _, y = make(seed=2)
    m = {k: tse_mask(t(zs), t(zt), t(y), mode=k) for k in ("xor", "or", "and")}
    assert torch.equal(m["xor"], m["or"] & ~m["and"])
    # identical student and teacher: no pixel differs in difficulty
    assert not tse_mask(t(zt), t(zt), t(y)).any()


def test_tse_min_kept_floor():
    zs, zt, _, y = make(seed=3, scale=0.7)
    valid = y != IGNORE
    # very low threshold: almost nothing is hard without the floor
    thr, k = 0.06, 300
    for conf_name, z in (("student", zs), ("teacher", zt)):
        conf = np_conf(z.astype(np.float64), y, "gt")
        assert (valid & (conf <= thr)).sum() < k, conf_name
        assert np_hard(conf, valid, thr, k).sum() >= k
    for mode in ("xor", "or", "and"):
        got = tse_mask(t(zs), t(zt), t(y), threshold=thr, mode=mode, min_kept=k).numpy()
        ref = np_tse(zs.astype(np.float64), zt.astype(np.float64), y, thr, mode, "gt", min_kept=k)
        assert (got != ref).sum() == 0, mode
    # "or" holds at least min_kept pixels (each side keeps >= min_kept)
    assert tse_mask(t(zs), t(zt), t(y), threshold=thr, mode="or", min_kept=k).sum() >= k
    # a floor above the valid count keeps every valid pixel hard: xor empty, or = all valid
    big = int(valid.sum()) + 10
    assert torch.equal(tse_mask(t(zs), t(zt), t(y), threshold=thr, mode="or", min_kept=big), torch.tensor(valid))
    assert not tse_mask(t(zs), t(zt), t(y), threshold=thr, mode="xor", min_kept=big).any()


def test_tse_all_ignored_selects_nothing():
    zs, zt, _, y = make(seed=4)
    y[:] = IGNORE
    for mode in ("xor", "or", "and"):
        assert not tse_mask(t(zs), t(zt), t(y), mode=mode, min_kept=50).any()


# ---------------------------------------------------------------- weighted CE
@pytest.mark.parametrize("normalize", ["valid", "selected", "all"])
def test_weighted_ce_matches_numpy(normalize):
    zs, _, _, y = make(seed=5)
    g = np.random.default_rng(5)
    w = g.random(y.shape).astype(np.float32)
    w[g.random(y.shape) < 0.3] = 0
    got = weighted_ce(t(zs), t(y), t(w), normalize=normalize)
    np.testing.assert_allclose(float(got), np_wce(zs.astype(np.float64), y, w, normalize), rtol=F32)
    # a bool mask is a 0/1 weight
    m = w > 0.5
    got_m = weighted_ce(t(zs), t(y), torch.tensor(m), normalize=normalize)
    np.testing.assert_allclose(float(got_m), np_wce(zs.astype(np.float64), y, m, normalize), rtol=F32)


def test_weighted_ce_selected_counts_only_weighted_valid_pixels():
    """TSE's mean: weights that are non-zero on ignored pixels add nothing, and are not counted either."""
    zs, _, _, y = make(seed=16, ignore_frac=0.4)
    g = np.random.default_rng(16)
    w = (g.random(y.shape) < 0.5).astype(np.float32)  # a selection that also covers many ignored pixels
    ignored = y == IGNORE
    assert (w[ignored] != 0).sum() > 100
    got = weighted_ce(t(zs), t(y), t(w), normalize="selected")
    # independent count: CE summed over selected valid pixels, divided by their number
    ce = np_ce(zs.astype(np.float64), y)
    keep = (w != 0) & ~ignored
    np.testing.assert_allclose(float(got), ce[keep].sum() / keep.sum(), rtol=F32)
    assert abs(ce[keep].sum() / (w != 0).sum() - float(got)) > 0.1 * float(got)  # the old count is far off
    # the weight on ignored pixels changes nothing at all
    w_valid_only = np.where(ignored, 0, w)
    # the same float32 sums, with exact zeros where the ignored pixels' weights were
    assert float(weighted_ce(t(zs), t(y), t(w_valid_only), normalize="selected")) == pytest.approx(float(got), rel=1e-6)


def test_weighted_ce_class_weights_are_the_released_weighted_mean():
    """With class weights, TSE is torch's CrossEntropyLoss(weight=cw) over the selected pixels, as in the
    released OhemCrossEntropy2d (labels outside the selection set to ignore)."""
    from rdd_edge.distill.rdd import CLASS_WEIGHTS

    zs, _, _, y = make(seed=17)
    g = np.random.default_rng(17)
    cw = g.uniform(0.5, 2.0, 5).astype(np.float32)
    sel = g.random(y.shape) < 0.4
    got = weighted_ce(t(zs), t(y), torch.tensor(sel), normalize="selected", class_weight=torch.tensor(cw))
    np.testing.assert_allclose(float(got), np_wce(zs.astype(np.float64), y, sel, "selected", cw), rtol=F32)
    up = F.interpolate(t(zs), size=y.shape[-2:], mode="bilinear", align_corners=False)
    masked = torch.where(torch.tensor(sel), t(y), torch.full_like(t(y), IGNORE))
    ref = F.cross_entropy(up, masked, weight=torch.tensor(cw), ignore_index=IGNORE)
    np.testing.assert_allclose(float(got), float(ref), rtol=F32)
    unweighted = weighted_ce(t(zs), t(y), torch.tensor(sel), normalize="selected")
    assert abs(float(unweighted) - float(got)) > 1e-3  # the weights matter here
    assert len(CLASS_WEIGHTS["cityscapes"]) == 19 and CLASS_WEIGHTS["cityscapes"][0] == 0.8373
    with pytest.raises(ConfigError, match="one weight per class"):
        weighted_ce(t(zs), t(y), torch.tensor(sel), normalize="selected", class_weight=torch.ones(4))


def test_weighted_ce_all_ones_is_plain_ce():
    zs, _, _, y = make(seed=6)
    up = F.interpolate(t(zs), size=y.shape[-2:], mode="bilinear", align_corners=False)
    ref = F.cross_entropy(up, t(y), ignore_index=IGNORE)
    got = weighted_ce(t(zs), t(y), torch.ones(y.shape))
    assert torch.allclose(got, ref, rtol=F32)  # two float32 computations of the same mean (seen equal)


@pytest.mark.parametrize("normalize", ["valid", "selected"])
def test_weighted_ce_empty_selection_is_zero_and_backprops(normalize):
    zs, _, _, y = make(seed=7)
    s = t(zs, grad=True)
    loss = weighted_ce(s, t(y), torch.zeros(y.shape, dtype=torch.bool), normalize=normalize)
    assert float(loss.detach()) == 0.0 and loss.requires_grad
    loss.backward()
    assert s.grad is not None and torch.isfinite(s.grad).all() and float(s.grad.abs().sum()) == 0.0
    # every pixel ignored: still 0, never NaN
    y[:] = IGNORE
    loss2 = weighted_ce(t(zs, grad=True), t(y), torch.ones(y.shape), normalize=normalize)
    assert float(loss2.detach()) == 0.0


def test_weighted_ce_weight_is_detached():
    zs, _, _, y = make(seed=8)
    s = t(zs, grad=True)
    w = torch.rand(y.shape, requires_grad=True)
    weighted_ce(s, t(y), w).backward()
    assert w.grad is None and s.grad is not None and float(s.grad.abs().sum()) > 0


def test_weighted_ce_bad_weight_shape_names_problem():
    zs, _, _, y = make()
    with pytest.raises(ConfigError, match="weight shape"):
        weighted_ce(t(zs), t(y), torch.ones(2, 6, 8))
    with pytest.raises(ConfigError, match="normalize"):
        weighted_ce(t(zs), t(y), torch.ones(y.shape), normalize="mean")


# ---------------------------------------------------------------- RDDWeighting
def test_stage_schedule():
    r = RDDWeighting(tfe_fraction=0.1)
    stages = [r.stage(i, 100) for i in range(100)]
    assert stages == ["tfe"] * 10 + ["tse"] * 90
    assert r.current == "tse"
    assert [RDDWeighting(tfe_fraction=0.0).stage(i, 100) for i in (0, 50, 99)] == ["tse"] * 3
    assert [RDDWeighting(tfe_fraction=1.0).stage(i, 10) for i in (0, 9)] == ["tfe"] * 2
    assert RDDWeighting(enabled=False).stage(0, 100) is None


def _outs(seed, aux=True, grad=False):
    zs, zt, za, y = make(seed=seed)
    g = np.random.default_rng(seed + 100)
    zsa = (g.standard_normal(zs.shape) * 2.5).astype(np.float32)
    s = {"out": t(zs, grad), **({"aux": t(zsa, grad)} if aux else {})}
    tt = {"out": t(zt, grad), "aux": t(za, grad)}
    return s, tt, y, (zs, zsa, zt, za)


def test_task_loss_tfe_matches_numpy():
    s, tt, y, (zs, zsa, zt, za) = _outs(9)
    r = RDDWeighting(tfe_fraction=0.1)
    r.stage(0, 100)
    loss, stats = r.task_loss(s, tt, t(y))
    f = lambda a: a.astype(np.float64)  # noqa: E731
    w = np_tfe(f(zt), f(za), y.shape[-2:])
    ref = np_wce(f(zs), y, w, "valid") + 0.4 * np_wce(f(zsa), y, w, "valid")
    np.testing.assert_allclose(float(loss), ref, rtol=F32)
    valid = y != IGNORE
    assert stats["stage"] == "tfe"
    np.testing.assert_allclose(stats["weight"], w[valid].mean(), rtol=1e-4)  # a logged float32 mean (seen 7.5e-9)
    assert stats["selected"] == pytest.approx(1.0)


def test_task_loss_tfe_over_all_pixels_is_the_released_main_scripts_mean():
    """--set tfe_average=all: torch.mean((CE + 0.4 CE_aux) * w) over every pixel, ignored ones (CE 0) included,
    as train_onlykd_two_stage_diff.py computes it."""
    s, tt, y, (zs, zsa, zt, za) = _outs(11)
    r = RDDWeighting(tfe_fraction=0.1, tfe_average="all")
    r.stage(0, 100)
    loss, _ = r.task_loss(s, tt, t(y))
    f = lambda a: a.astype(np.float64)  # noqa: E731
    w = np_tfe(f(zt), f(za), y.shape[-2:])
    released = ((np_ce(f(zs), y) + 0.4 * np_ce(f(zsa), y)) * w).mean()
    np.testing.assert_allclose(float(loss), released, rtol=F32)
    valid_only, _ = RDDWeighting(tfe_fraction=0.1).task_loss(s, tt, t(y), stage="tfe")
    np.testing.assert_allclose(float(valid_only) * (y != IGNORE).mean(), released, rtol=F32)  # the two differ by valid/all
    with pytest.raises(ConfigError, match="tfe_average"):
        RDDWeighting(tfe_average="selected")


def test_task_loss_tse_uses_teacher_aux_for_student_aux():
    s, tt, y, (zs, zsa, zt, za) = _outs(10)
    r = RDDWeighting(tfe_fraction=0.1)
    r.stage(50, 100)
    loss, stats = r.task_loss(s, tt, t(y))
    f = lambda a: a.astype(np.float64)  # noqa: E731
    m_main = np_tse(f(zs), f(zt), y)
    m_aux = np_tse(f(zsa), f(za), y)
    assert (m_main != m_aux).any()  # the aux pairing actually matters here
    ref = np_wce(f(zs), y, m_main, "selected") + 0.4 * np_wce(f(zsa), y, m_aux, "selected")
    np.testing.assert_allclose(float(loss), ref, rtol=F32)
    assert stats["stage"] == "tse"
    np.testing.assert_allclose(stats["selected"], m_main.sum() / (y != IGNORE).sum(), rtol=F32)


def test_task_loss_tse_min_kept_and_class_weights_match_numpy():
    """The released TSE options: OHEM floor (per batch) and class-weighted CE on both heads; TFE stays unweighted."""
    s, tt, y, (zs, zsa, zt, za) = _outs(18)
    f = lambda a: a.astype(np.float64)  # noqa: E731
    cw = [0.5, 1.0, 1.5, 2.0, 0.8]
    k = int(0.95 * (y != IGNORE).sum())  # ~92% of valid pixels are below t: a floor of 95% raises both thresholds
    r = RDDWeighting(tfe_fraction=0.1, min_kept=k, class_weights=cw)
    r.stage(50, 100)
    loss, _ = r.task_loss(s, tt, t(y))
    m_main, m_aux = np_tse(f(zs), f(zt), y, min_kept=k), np_tse(f(zsa), f(za), y, min_kept=k)
    assert (m_main != np_tse(f(zs), f(zt), y)).any()  # the floor changed the selection
    ref = np_wce(f(zs), y, m_main, "selected", cw) + 0.4 * np_wce(f(zsa), y, m_aux, "selected", cw)
    np.testing.assert_allclose(float(loss), ref, rtol=F32)
    r.stage(0, 100)  # TFE: no class weights, no floor
    loss_tfe, _ = r.task_loss(s, tt, t(y))
    w = np_tfe(f(zt), f(za), y.shape[-2:])
    np.testing.assert_allclose(float(loss_tfe), np_wce(f(zs), y, w) + 0.4 * np_wce(f(zsa), y, w), rtol=F32)


def test_class_weights_option_parsing():
    from rdd_edge.distill.rdd import parse_class_weights, resolve_class_weights

    assert parse_class_weights(None) is None and parse_class_weights("None") == "none"
    assert resolve_class_weights("none", 19) is None and resolve_class_weights(None, 19) is None
    assert parse_class_weights("Cityscapes") == "cityscapes" and len(resolve_class_weights("cityscapes", 19)) == 19
    assert parse_class_weights("1, 2.5,3") == [1.0, 2.5, 3.0] == list(resolve_class_weights([1, 2.5, 3], 3))
    with pytest.raises(ConfigError, match="19 class weights.*11 classes"):
        resolve_class_weights("cityscapes", 11)
    for bad in ("heavy", "1,-2", [0.0, 1.0], "1,x"):
        with pytest.raises(ConfigError, match="--rdd-class-weights"):
            parse_class_weights(bad)


def test_task_loss_without_rdd_is_plain_ce_plus_aux():
    s, tt, y, (zs, zsa, _, _) = _outs(11)
    f = lambda a: a.astype(np.float64)  # noqa: E731
    ones = np.ones(y.shape)
    ref = np_wce(f(zs), y, ones) + 0.4 * np_wce(f(zsa), y, ones)
    for r, teacher in ((RDDWeighting(enabled=False), tt), (RDDWeighting(), None)):
        loss, stats = r.task_loss(s, teacher, t(y))
        np.testing.assert_allclose(float(loss), ref, rtol=F32)
        assert stats["stage"] is None
    # no student aux head: main CE only
    s_noaux, _, _, _ = _outs(11, aux=False)
    loss, _ = RDDWeighting(enabled=False).task_loss(s_noaux, None, t(y))
    np.testing.assert_allclose(float(loss), np_wce(f(zs), y, ones), rtol=F32)


@pytest.mark.parametrize("it", [0, 50])
def test_gradients_reach_only_the_student(it):
    s, tt, y, _ = _outs(12, grad=True)
    r = RDDWeighting(tfe_fraction=0.1)
    r.stage(it, 100)
    loss, _ = r.task_loss(s, tt, t(y))
    loss.backward()
    assert s["out"].grad is not None and float(s["out"].grad.abs().sum()) > 0
    assert s["aux"].grad is not None and float(s["aux"].grad.abs().sum()) > 0
    assert tt["out"].grad is None and tt["aux"].grad is None


def test_teacher_inference_tensors_work_in_the_graph():
    s, _, y, (_, _, zt, za) = _outs(13, grad=True)
    with torch.inference_mode():
        tt = {"out": t(zt) * 1.0, "aux": t(za) * 1.0}
    assert tt["out"].is_inference()
    r = RDDWeighting(tfe_fraction=0.1)
    for it in (0, 50):
        r.stage(it, 100)
        loss, _ = r.task_loss(s, tt, t(y))
        loss.backward()
    assert float(s["out"].grad.abs().sum()) > 0


def test_errors_name_the_problem():
    with pytest.raises(ConfigError, match="mode"):
        RDDWeighting(mode="nand")
    with pytest.raises(ConfigError, match="confidence"):
        RDDWeighting(confidence="entropy")
    with pytest.raises(ConfigError, match="tfe_fraction"):
        RDDWeighting(tfe_fraction=1.5)
    zs, zt, _, y = make()
    with pytest.raises(ConfigError, match="mode"):
        tse_mask(t(zs), t(zt), t(y), mode="nand")
    s, tt, y, _ = _outs(14)
    r = RDDWeighting()
    r.stage(0, 100)
    with pytest.raises(ConfigError, match="aux"):
        r.task_loss(s, {"out": tt["out"]}, t(y))


def test_task_loss_under_cpu_autocast_bf16():
    # mixed precision: bf16 logits from a layer under autocast still give a float32 loss close to fp32
    s, tt, y, (zs, _, zt, za) = _outs(15)
    conv = torch.nn.Conv2d(5, 5, 1)
    torch.nn.init.eye_(conv.weight.view(5, 5))
    torch.nn.init.zeros_(conv.bias)
    r = RDDWeighting(tfe_fraction=0.1)
    for it in (0, 50):
        r.stage(it, 100)
        ref, _ = r.task_loss({"out": t(zs)}, tt, t(y))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = conv(t(zs))
            t_half = {"out": t(zt).bfloat16(), "aux": t(za).bfloat16()}
            loss, _ = r.task_loss({"out": out}, t_half, t(y))
        assert out.dtype == torch.bfloat16 and loss.dtype == torch.float32
        loss.backward()
        assert conv.weight.grad is not None and torch.isfinite(conv.weight.grad).all()
        assert abs(float(loss.detach()) - float(ref)) < 0.1 * float(ref)
