"""KD losses (distill/losses.py) against NumPy references; teacher stays gradient-free."""

import numpy as np
import pytest
import torch

from distill.losses import at_loss, build_kd_loss, cwd_loss, kd_loss, kd_methods, method_names, register_kd
from rdd_edge.errors import ConfigError


def np_log_softmax(z, axis):
    m = z.max(axis=axis, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=axis, keepdims=True))


def np_kd(zs, zt, T):
    ls, lt = np_log_softmax(zs / T, 1), np_log_softmax(zt / T, 1)
    return (np.exp(lt) * (lt - ls)).sum(1).mean() * T * T


def np_cwd(zs, zt, tau):
    n, c = zs.shape[:2]
    ls = np_log_softmax(zs.reshape(n, c, -1) / tau, -1)
    lt = np_log_softmax(zt.reshape(n, c, -1) / tau, -1)
    return (np.exp(lt) * (lt - ls)).sum(-1).mean() * tau * tau


def np_at(fs, ft, p=2):
    def amap(f):
        a = (np.abs(f) ** p).mean(1).reshape(f.shape[0], -1)
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    return ((amap(fs) - amap(ft)) ** 2).mean()


def rand(*shape, seed=0, scale=2.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def t(a, grad=False):
    return torch.tensor(a, requires_grad=grad)


@pytest.mark.parametrize("T", [1.0, 2.0])
def test_kd_matches_numpy(T):
    zs, zt = rand(2, 5, 6, 8, seed=1), rand(2, 5, 6, 8, seed=2)
    got = kd_loss(t(zs), t(zt), T=T)
    np.testing.assert_allclose(float(got), np_kd(zs.astype(np.float64), zt.astype(np.float64), T), rtol=1e-5)


@pytest.mark.parametrize("tau", [1.0, 4.0])
def test_cwd_matches_numpy(tau):
    zs, zt = rand(2, 5, 6, 8, seed=3), rand(2, 5, 6, 8, seed=4)
    got = cwd_loss(t(zs), t(zt), tau=tau)
    np.testing.assert_allclose(float(got), np_cwd(zs.astype(np.float64), zt.astype(np.float64), tau), rtol=1e-5)


def test_at_matches_numpy_and_averages_stages():
    # different channel counts (student 8, teacher 16), same spatial size
    fs = [rand(2, 8, 6, 8, seed=5), rand(2, 4, 12, 16, seed=6)]
    ft = [rand(2, 16, 6, 8, seed=7), rand(2, 32, 12, 16, seed=8)]
    got = at_loss([t(a) for a in fs], [t(a) for a in ft])
    ref = np.mean([np_at(a.astype(np.float64), b.astype(np.float64)) for a, b in zip(fs, ft)])
    np.testing.assert_allclose(float(got), ref, rtol=1e-5)
    # a single tensor pair is one stage
    np.testing.assert_allclose(float(at_loss(t(fs[0]), t(ft[0]))), np_at(fs[0].astype(np.float64), ft[0]), rtol=1e-5)


def test_at_resizes_student_map_to_teacher_size():
    fs, ft = rand(2, 8, 12, 16, seed=9), rand(2, 16, 6, 8, seed=10)
    got = at_loss(t(fs, grad=True), t(ft))
    assert torch.isfinite(got) and float(got.detach()) > 0
    got.backward()
    # a student whose attention map is the teacher's, only upsampled 2x (nearest), is close to 0
    up = torch.tensor(ft).repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    assert float(at_loss(up, t(ft))) < 1e-9 < float(got.detach())


@pytest.mark.parametrize("name", ["kd", "cwd", "at"])
def test_zero_for_identical_positive_otherwise(name):
    z, other = rand(2, 5, 6, 8, seed=11), rand(2, 5, 6, 8, seed=12)
    fn = {"kd": kd_loss, "cwd": cwd_loss, "at": at_loss}[name]
    assert abs(float(fn(t(z), t(z)))) < 1e-6
    assert float(fn(t(other), t(z))) > 1e-3


@pytest.mark.parametrize("name", ["kd", "cwd", "at"])
def test_gradient_reaches_student_only_even_from_inference_teacher(name):
    zs, zt = rand(2, 5, 6, 8, seed=13), rand(2, 5, 6, 8, seed=14)
    fn = {"kd": kd_loss, "cwd": cwd_loss, "at": at_loss}[name]
    s, teacher = t(zs, grad=True), t(zt, grad=True)
    fn(s, teacher).backward()
    assert teacher.grad is None and s.grad is not None and float(s.grad.abs().sum()) > 0
    with torch.inference_mode():
        ti = t(zt) * 1.0
    s2 = t(zs, grad=True)
    fn(s2, ti).backward()
    assert torch.allclose(s2.grad, s.grad, atol=1e-6)


def test_half_inputs_computed_in_float32():
    zs, zt = rand(2, 5, 6, 8, seed=15), rand(2, 5, 6, 8, seed=16)
    got = kd_loss(torch.tensor(zs).half(), torch.tensor(zt).half())
    assert got.dtype == torch.float32
    ref = np_kd(zs.astype(np.float16).astype(np.float64), zt.astype(np.float16).astype(np.float64), 1.0)
    np.testing.assert_allclose(float(got), ref, rtol=1e-4)


KD_WEIGHTS = {k: m.weight for k, m in kd_methods().items()}


def test_build_kd_loss_registry_and_weights():
    assert method_names()[:4] == ("none", "kd", "cwd", "at")
    assert build_kd_loss("none") is None
    with pytest.raises(ConfigError) as e:
        build_kd_loss("fitnet")
    assert "fitnet" in str(e.value) and all(m in str(e.value) for m in method_names())
    assert KD_WEIGHTS["kd"] == 1.0 and KD_WEIGHTS["cwd"] == 3.0 and KD_WEIGHTS["at"] == 10000.0
    zs, zt = rand(2, 5, 6, 8, seed=17), rand(2, 5, 6, 8, seed=18)
    s_out, t_out = {"out": t(zs)}, {"out": t(zt)}
    f64 = lambda a: a.astype(np.float64)  # noqa: E731
    kd = build_kd_loss("kd")
    np.testing.assert_allclose(float(kd(s_out, t_out)), np_kd(f64(zs), f64(zt), 1.0), rtol=1e-5)
    cwd = build_kd_loss("cwd")
    assert cwd.weight == KD_WEIGHTS["cwd"]
    np.testing.assert_allclose(float(cwd(s_out, t_out)), KD_WEIGHTS["cwd"] * np_cwd(f64(zs), f64(zt), 4.0), rtol=1e-5)
    cwd2 = build_kd_loss("cwd", weight=0.5, options={"tau": 1.0})
    np.testing.assert_allclose(float(cwd2(s_out, t_out)), 0.5 * np_cwd(f64(zs), f64(zt), 1.0), rtol=1e-5)


def test_build_at_reads_last_stage_features():
    fs = [rand(2, 4, 12, 16, seed=19), rand(2, 8, 6, 8, seed=20)]
    ft = [rand(2, 16, 12, 16, seed=21), rand(2, 32, 6, 8, seed=22)]
    at = build_kd_loss("at")
    assert at.needs_features and at.weight == KD_WEIGHTS["at"]
    s_out = {"out": None, "features": [t(a) for a in fs]}
    t_out = {"out": None, "features": [t(a) for a in ft]}
    np.testing.assert_allclose(float(at(s_out, t_out)), KD_WEIGHTS["at"] * np_at(fs[-1], ft[-1]), rtol=1e-4)
    both = build_kd_loss("at", weight=1.0, options={"stages": (0, 1)})
    ref = (np_at(fs[0], ft[0]) + np_at(fs[1], ft[1])) / 2
    np.testing.assert_allclose(float(both(s_out, t_out)), ref, rtol=1e-4)
    with pytest.raises(ConfigError, match="features=True"):
        at({"out": t(fs[0])}, {"out": t(ft[0])})


def test_bad_shapes_and_options_name_the_problem():
    with pytest.raises(ConfigError, match="class count"):
        kd_loss(t(rand(2, 5, 6, 8)), t(rand(2, 7, 6, 8)))
    with pytest.raises(ConfigError, match="tau"):
        build_kd_loss("cwd", options={"tau": 0})
    with pytest.raises(ConfigError, match="no option.*T.*its options: tau=4.0"):
        build_kd_loss("cwd", options={"T": 2})
    with pytest.raises(ConfigError, match="stages"):
        at_loss([t(rand(2, 4, 6, 8))], [])


def test_a_registered_method_is_usable_everywhere(monkeypatch):
    """Adding a KD loss is one decorated factory: the config, the trainer and --method accept it at once."""
    from distill import losses
    from distill.config import make_config

    monkeypatch.setattr(losses, "_KD_REGISTRY", dict(losses._KD_REGISTRY))

    @register_kd("l2", weight=0.5, params={"scale": 2.0})
    def _make_l2(scale):
        """mean squared logit difference"""
        return lambda s, t: scale * (s["out"] - t["out"].detach()).pow(2).mean()

    assert "l2" in method_names() and kd_methods()["l2"].summary == "mean squared logit difference"
    cfg = make_config("distill", method="l2", kd_options={"scale": 3.0})
    term = build_kd_loss(cfg.method, cfg.kd_weight, cfg.kd_options)
    zs, zt = rand(2, 5, 6, 8, seed=31), rand(2, 5, 6, 8, seed=32)
    np.testing.assert_allclose(float(term({"out": t(zs)}, {"out": t(zt)})), 0.5 * 3.0 * ((zs - zt) ** 2).mean(), rtol=1e-5)
    with pytest.raises(ConfigError, match="scale"):
        make_config("distill", method="l2", kd_options={"bogus": 1})
