"""Higher-order gradients: ``backward(create_graph=True)`` and gpugrad.higher.

- Every op of the case table in tests/op_cases.py gets a float64 second-derivative check
  (gradgrad: its VJP ``(x, g) -> g @ J(x)`` against finite differences, in x and in g).
- Known values: tanh''(0.5), sigmoid'', the Hessian of logsumexp and of a quadratic form,
  all hand-derived.
- Fast paths stay out of create_graph; ops flagged ``twice_differentiable=False`` raise.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from op_cases import BINARY_CASES, BROADCAST_PAIRS, GRAD_CASES, params

import gpugrad as gg
from helpers import host
from gpugrad.testing import GradCheckError, check_gradgrad


# --- gradgrad over the op table --------------------------------------------------------------

def test_every_builtin_op_is_twice_differentiable():
    """No built-in rule needs the flag: each is array-API code (the checks below prove it)."""
    flagged = [name for name, op in gg.registry.items()
               if op.differentiable and not op.twice_differentiable
               and op.forward.__module__.startswith("gpugrad.ops")]
    assert flagged == []


@pytest.mark.parametrize("case", params(GRAD_CASES))
def test_gradgrad(case, bk64, rng):
    hosts = case.hosts(rng, bk64)
    check_gradgrad(case.fn, *[gg.asarray(h) for h in hosts], **case.grad_kw)


@pytest.mark.parametrize("shapes", BROADCAST_PAIRS, ids=str)
@pytest.mark.parametrize("case", params(c for c in BINARY_CASES if c.differentiable))
def test_gradgrad_broadcast(case, shapes, rng):
    hosts = case.hosts(rng, None, shapes, float_dtype="float64")
    check_gradgrad(case.fn, *[gg.asarray(h) for h in hosts])


def test_check_gradgrad_catches_a_wrong_second_derivative():
    """A rule that is right to 1e-8 but piecewise constant (rounded) has the wrong second
    derivative: check_grad passes it, check_gradgrad must not."""

    @gg.ops.defop("_test_rounded_cube")
    def cube(xp, x):
        "x**3"
        return x * x * x, x

    cube.defvjp(lambda xp, g, x: (g * 3.0 * (xp.round(x * x * 1e8) / 1e8),))
    try:
        x = np.array([0.7, -1.3])
        gg.testing.check_grad(lambda t: cube(t), x)
        with pytest.raises(GradCheckError):
            check_gradgrad(lambda t: cube(t), x)
    finally:
        gg.ops.unregister("_test_rounded_cube")


# --- known values ------------------------------------------------------------------------------

def second_derivative(f, x0, bk):
    """f''(x0) by backward(create_graph=True) and a second backward, elementwise."""
    x = gg.Variable(np.asarray(x0, dtype=bk.float_dtype))
    gg.sum(f(x)).backward(create_graph=True)
    first = x.grad
    assert isinstance(first, gg.Tensor) and first.requires_grad
    x.grad = None
    gg.sum(first).backward()
    return host(first), host(x.grad)


def test_tanh_second_derivative_at_half(bk64):
    first, second = second_derivative(gg.tanh, 0.5, bk64)
    t = math.tanh(0.5)
    assert first == pytest.approx(1 - t * t, rel=1e-12)
    assert second == pytest.approx(-0.7268619813835873, rel=1e-12)  # -2 t (1 - t**2)


def test_tanh_second_derivative_float32(bk):
    _, second = second_derivative(gg.tanh, 0.5, bk)
    assert second.dtype == np.float64 and second == pytest.approx(-0.72686198, rel=1e-5)


def test_sigmoid_second_derivative(bk64):
    xs = np.array([-30.0, -2.0, -0.5, 0.0, 0.5, 3.0, 30.0])
    first, second = second_derivative(gg.sigmoid, xs, bk64)
    # s' = s (1 - s) and s'' = s (1 - s)(1 - 2s), written with e = exp(-|x|) so that 1 - s
    # does not cancel at large x: s (1 - s) = e / (1 + e)**2, 1 - 2s = -sign(x)(1 - e)/(1 + e)
    e = np.exp(-np.abs(xs))
    slope = e / (1 + e) ** 2
    # (the op's first-order rule computes 1 - s itself: ~1e-16 absolute error at x = 30)
    np.testing.assert_allclose(first, slope, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(second, slope * -np.sign(xs) * (1 - e) / (1 + e), rtol=1e-10,
                               atol=1e-15)
    assert second[3] == 0.0  # the inflection point


def test_hessian_of_logsumexp(bk64, rng):
    x0 = rng.standard_normal(5)
    H = gg.to_numpy(gg.hessian(gg.logsumexp)(gg.to_numpy(gg.asarray(x0))))
    p = np.exp(x0 - x0.max())
    p /= p.sum()
    np.testing.assert_allclose(H, np.diag(p) - np.outer(p, p), atol=1e-12)
    np.testing.assert_allclose(H.sum(axis=1), 0.0, atol=1e-12)  # shifting x changes nothing


def test_hessian_of_quadratic_form(bk64, rng):
    A = rng.standard_normal((4, 4))  # not symmetric: the Hessian is its symmetric part
    b = rng.standard_normal(4)
    A_t, b_t = gg.asarray(A), gg.asarray(b)

    def f(x):
        return 0.5 * gg.sum(x * (A_t @ x)) + gg.sum(b_t * x)

    x0 = rng.standard_normal(4)
    H = gg.to_numpy(gg.hessian(f)(x0))
    np.testing.assert_allclose(H, 0.5 * (A + A.T), rtol=1e-12, atol=1e-12)
    # the same rows from backward(create_graph=True), one Hessian row per second backward
    x = gg.Variable(x0)
    f(x).backward(create_graph=True)
    grad = x.grad
    for i in range(4):
        x.grad = None
        grad[i].backward(retain_graph=True)
        np.testing.assert_allclose(host(x.grad), 0.5 * (A + A.T)[i], rtol=1e-12, atol=1e-12)


def test_third_derivative():
    def f(x):
        return x ** 4
    d3 = gg.grad(gg.grad(gg.grad(f)))(np.array(1.5))
    assert float(d3) == pytest.approx(24 * 1.5)


# --- backward(create_graph=True) semantics ---------------------------------------------------

def test_create_graph_grads_accumulate_as_tensors(bk64):
    x = gg.Variable(np.array([1.0, 2.0], dtype=bk64.float_dtype))
    gg.sum(x ** 3).backward(create_graph=True)
    gg.sum(x ** 2).backward(create_graph=True)
    assert isinstance(x.grad, gg.Tensor)
    np.testing.assert_allclose(host(x.grad), 3 * host(x) ** 2 + 2 * host(x))
    g = x.grad
    x.grad = None
    gg.sum(g).backward()
    np.testing.assert_allclose(host(x.grad), 6 * host(x) + 2)


def test_create_graph_adds_to_an_array_grad(bk64):
    x = gg.Variable(np.array([1.0, 2.0], dtype=bk64.float_dtype))
    gg.sum(x * x).backward()
    gg.sum(x * x).backward(create_graph=True)
    np.testing.assert_allclose(host(x.grad), 4 * host(x))
    assert x.grad.requires_grad


def test_create_graph_keeps_the_graph_and_works_after_a_freeing_backward(bk64):
    x = gg.Variable(np.array([0.3, -0.4], dtype=bk64.float_dtype))
    y = gg.sum(gg.sigmoid(x) * x)
    y.backward()  # frees the saved arrays
    first = host(x.grad)
    x.grad = None
    y.backward(create_graph=True)  # replays the forward: needs no saved arrays
    np.testing.assert_allclose(host(x.grad), first, rtol=1e-12)
    x.grad = None
    y.backward(create_graph=True)  # and keeps them: a second time works too
    np.testing.assert_allclose(host(x.grad), first, rtol=1e-12)


def test_create_graph_of_a_constant_raises():
    with pytest.raises(gg.GradientError, match="does not require gradients"):
        gg.asarray([1.0]).backward(create_graph=True)


def test_create_graph_never_uses_fast_paths(monkeypatch, numpy_backend):
    def refuse(*args, **kwargs):
        raise AssertionError("a fast path ran under create_graph")

    for name in ("sigmoid", "relu", "take", "getitem"):
        monkeypatch.setitem(gg.registry[name].fast_vjp, "numpy", refuse)
    x = gg.Variable(np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]]))
    y = gg.sum(gg.sigmoid(x) * gg.relu(x)[:, ::2].sum() + x[:, np.array([0, 0, 2])].sum())
    y.backward(create_graph=True)
    assert isinstance(x.grad, gg.Tensor)
    with pytest.raises(AssertionError, match="fast path"):
        y.backward()  # the normal backward does use them


def test_ops_flagged_not_twice_differentiable_raise():
    @gg.ops.defop("_test_inplace_double", twice_differentiable=False)
    def double(xp, x):
        "2x, with a VJP that writes in place"
        return x * 2.0, None

    def inplace_vjp(xp, g, res):
        out = xp.asarray(g, copy=True)
        out *= 2.0
        return (out,)

    double.defvjp(inplace_vjp)
    try:
        x = gg.Variable(np.array([1.0, 2.0]))
        gg.sum(double(x)).backward()
        np.testing.assert_allclose(host(x.grad), [2.0, 2.0])
        with pytest.raises(gg.GradientError, match="_test_inplace_double.*twice"):
            gg.sum(double(x)).backward(create_graph=True)
        with pytest.raises(gg.GradientError, match="_test_inplace_double"):
            gg.hessian(lambda t: gg.sum(double(t) ** 2))(np.array([1.0]))
    finally:
        gg.ops.unregister("_test_inplace_double")


def test_a_user_op_written_with_xp_is_twice_differentiable():
    @gg.ops.defop("_test_softplus")
    def softplus(xp, x):
        "log(1 + exp(x));  d/dx = sigmoid(x)"
        return xp.logaddexp(x, 0.0), x

    softplus.defvjp(lambda xp, g, x: (g / (1.0 + xp.exp(-x)),))
    try:
        x = np.array([-1.0, 0.0, 2.0])
        check_gradgrad(lambda t: softplus(t), x)
        s = 1.0 / (1.0 + np.exp(-x))
        np.testing.assert_allclose(gg.hvp(lambda t: gg.sum(softplus(t)), x, np.ones(3)),
                                   s * (1 - s), rtol=1e-12)
    finally:
        gg.ops.unregister("_test_softplus")
