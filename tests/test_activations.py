"""erf, softplus, gelu and silu (gpugrad/ops/activations.py) beyond the op-case table:
erf's accuracy against math.erf, hand-derived values and gradients at the kinks and
thresholds, the same numbers in every front end (eager, graph, gg.compile, the planned
program) and second derivatives (gg.grad of gg.grad)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import nn

TOL = {"rtol": 1e-12, "atol": 1e-14}


def _np(a):
    return np.asarray(gg.to_numpy(a))


def test_erf_float64_within_1e_14_of_math_erf(numpy_backend):
    xs = np.concatenate([np.linspace(-7.0, 7.0, 20001), np.geomspace(1e-300, 1e-3, 200),
                         -np.geomspace(1e-300, 1e-3, 200), [2.5, np.nextafter(2.5, 3.0)]])
    xs = xs[xs != 0.0]  # (erf(0) = 0: the special values test)
    got = _np(gg.erf(gg.asarray(xs)))
    ref = np.array([math.erf(v) for v in xs])
    rel = np.abs(got - ref) / np.abs(ref)
    assert rel.max() < 1e-14, (rel.max(), xs[rel.argmax()])


def test_erf_special_values(bk):
    xs = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 40.0, -1e30], dtype=bk.float_dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow or invalid-value warning escapes
        got = _np(gg.erf(gg.asarray(xs)))
    np.testing.assert_array_equal(got[:4], [0.0, 0.0, 1.0, -1.0])
    assert np.signbit(got[1]) and np.isnan(got[4]) and got[5] == 1.0 and got[6] == -1.0


def test_erf_float32_within_a_few_ulps(bk):
    xs = np.linspace(-5.0, 5.0, 2001).astype(np.float32)
    got = _np(gg.erf(gg.asarray(xs)))
    assert got.dtype == np.float32
    ref = np.array([math.erf(float(v)) for v in xs])
    ulps = np.abs(got - ref) / np.spacing(np.abs(ref).astype(np.float32))
    # exp(-x^2) carries x^2's rounding times x^2 (about 3 ulps at |x| = 2.5) in float32
    assert ulps.max() <= 8


def test_erf_gradient_is_the_gaussian(bk64):
    x = gg.Variable(np.array([-2.0, 0.0, 0.5, 3.0]))
    gg.sum(gg.erf(x)).backward()
    expect = 2.0 / math.sqrt(math.pi) * np.exp(-np.array([-2.0, 0.0, 0.5, 3.0]) ** 2)
    np.testing.assert_allclose(_np(x.grad), expect, rtol=1e-15)


def test_softplus_threshold_and_beta(bk64):
    """beta x above the threshold: x itself, gradient exactly 1 (PyTorch's rule); at or
    below it: log1p(exp(beta x)) / beta, gradient sigmoid(beta x)."""
    v = np.array([-800.0, -1.0, 0.0, 0.5, 0.51, 30.0])
    x = gg.Variable(v)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = gg.softplus(x, beta=2.0, threshold=1.0)
        gg.sum(y).backward()
    z = 2.0 * v
    soft = np.log1p(np.exp(np.minimum(z, 1.0))) / 2.0
    np.testing.assert_allclose(_np(y), np.where(z > 1.0, v, soft), rtol=1e-15)
    assert _np(y)[4] == 0.51 and _np(y)[5] == 30.0 and _np(y)[0] == 0.0
    with np.errstate(over="ignore"):
        sig = 1.0 / (1.0 + np.exp(-z))
    np.testing.assert_allclose(_np(x.grad), np.where(z > 1.0, 1.0, sig), rtol=1e-15)
    assert _np(x.grad)[3] < 1.0 and _np(x.grad)[4] == 1.0
    # the defaults: beta 1, threshold 20; positional as PyTorch's F.softplus
    assert float(gg.softplus(gg.asarray(20.5))) == 20.5
    assert float(gg.softplus(gg.asarray(3.0), 2.0, 5.0)) == 3.0


def test_gelu_and_silu_hand_values(bk64):
    x = gg.Variable(np.array([0.0, 1.0, -1.0]))
    gg.sum(gg.gelu(x)).backward()
    phi = 0.5 * (1.0 + math.erf(1.0 / math.sqrt(2.0)))
    pdf = math.exp(-0.5) / math.sqrt(2.0 * math.pi)
    np.testing.assert_allclose(_np(x.grad), [0.5, phi + pdf, (1.0 - phi) - pdf], rtol=1e-14)
    t = gg.Variable(np.array([0.0, 2.0]))
    gg.sum(gg.gelu(t, approximate="tanh")).backward()
    u = math.sqrt(2.0 / math.pi) * (2.0 + 0.044715 * 8.0)
    d = 0.5 * (1.0 + math.tanh(u)) + 0.5 * 2.0 * (1.0 - math.tanh(u) ** 2) * math.sqrt(
        2.0 / math.pi) * (1.0 + 3.0 * 0.044715 * 4.0)
    np.testing.assert_allclose(_np(t.grad), [0.5, d], rtol=1e-14)
    s = gg.Variable(np.array([0.0, 3.0, -800.0]))
    gg.sum(gg.silu(s)).backward()
    sig = 1.0 / (1.0 + math.exp(-3.0))
    np.testing.assert_allclose(_np(s.grad), [0.5, sig * (1.0 + 3.0 * (1.0 - sig)), 0.0],
                               rtol=1e-14)
    with pytest.raises(ValueError, match="approximate"):
        gg.gelu(gg.asarray(1.0), approximate="erf")


ACTS = {
    "softplus": lambda h: gg.softplus(h),
    "softplus_beta": lambda h: gg.softplus(h, beta=3.0, threshold=2.0),
    "gelu": lambda h: gg.gelu(h),
    "gelu_tanh": lambda h: gg.gelu(h, approximate="tanh"),
    "silu": lambda h: gg.silu(h),
    "erf": lambda h: gg.erf(h),
}


@pytest.mark.parametrize("name", sorted(ACTS))
def test_every_front_end_gives_the_same_numbers(name, numpy_backend):
    """eager, a Placeholder graph (first run, then the planned program) and gg.compile."""
    act = ACTS[name]
    rng = np.random.default_rng(3)
    X = rng.standard_normal((6, 4)) * 2.0
    W0 = rng.standard_normal((4, 4))

    def loss_of(x, w):
        return gg.sum(act(x @ w) * act(x))

    w = gg.Variable(W0)
    eager = loss_of(gg.asarray(X), w)
    eager.backward()
    ge = _np(w.grad)
    x = gg.Placeholder((None, 4), "float64", name="x")
    wg = gg.Variable(W0)
    loss = loss_of(x, wg)
    for _ in range(3):  # the first run is step by step, the next ones the planned program
        v, (g,) = gg.value_and_gradients(loss, [wg], feed={x: X})
        np.testing.assert_allclose(_np(v), _np(eager), **TOL)
        np.testing.assert_allclose(_np(g), ge, **TOL)
    wc = gg.Variable(W0)
    step = gg.compile(lambda xb: loss_of(xb, wc))
    for _ in range(3):
        wc.grad = None
        v = step(gg.asarray(X))
        v.backward()
        np.testing.assert_allclose(_np(v), _np(eager), **TOL)
        np.testing.assert_allclose(_np(wc.grad), ge, **TOL)


@pytest.mark.parametrize("name", sorted(ACTS))
def test_second_derivative_matches_finite_differences(name, bk64):
    act = ACTS[name]
    v = np.array([-2.3, -0.4, 0.0, 0.3, 0.7, 1.9])
    d1 = gg.grad(lambda t: gg.sum(act(t)))
    d2 = gg.grad(lambda t: gg.sum(d1(t)))
    got = _np(d2(gg.asarray(v)))
    eps = 1e-5
    up, down = (_np(d1(gg.asarray(v + s))) for s in (eps, -eps))
    np.testing.assert_allclose(got, (up - down) / (2 * eps), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("layer,fn", [(nn.Softplus(), gg.softplus), (nn.GELU(), gg.gelu),
                                      (nn.SiLU(), gg.silu)])
def test_layers_and_mlp_activations(layer, fn, bk):
    x = gg.asarray(np.linspace(-3, 3, 7).astype(bk.float_dtype))
    np.testing.assert_array_equal(_np(layer(x)), _np(fn(x)))
    name = type(layer).__name__.lower()
    model = nn.MLP([3, 4, 2], activation=name, seed=0)
    out = model(gg.asarray(np.ones((2, 3), "float32")))  # (MLP parameters are float32)
    assert tuple(out.shape) == (2, 2)
    with pytest.raises(ValueError, match="approximate"):
        nn.GELU("exact")
