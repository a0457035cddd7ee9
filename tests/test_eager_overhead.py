"""The eager dispatcher's short ways and the NumPy per-input VJP fast paths (issue 10, eager
overhead): each against the portable rule in float64, plus ``linear`` without a bias."""

from __future__ import annotations

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import nn
from gpugrad.ops import linalg
from gpugrad.shaping import fit


def _same(fast, portable):
    fast, portable = np.asarray(fast), np.asarray(portable)
    assert fast.shape == portable.shape and fast.dtype == portable.dtype
    np.testing.assert_allclose(fast, portable, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("name", ["matmul", "linear"])
@pytest.mark.parametrize("sa,sb", [((3, 4), (4, 2)), ((2, 3, 4), (4, 2)), ((3, 4), (2, 4, 5)),
                                   ((2, 3, 4), (2, 4, 5)), ((4,), (4, 2)), ((3, 4), (4,)),
                                   ((4,), (4,)), ((1, 3, 4), (2, 4, 5)),
                                   ((2, 5, 3, 4), (4, 2))], ids=str)
def test_matmul_vjp_fast_paths_equal_portable_rules(name, sa, sb, rng):
    op = gg.registry[name]
    a, b = rng.standard_normal(sa), rng.standard_normal(sb)
    before = (a.copy(), b.copy())
    out = np.matmul(a, b)
    g = rng.standard_normal(out.shape)
    g0 = g.copy()
    fast, portable = op.fast_vjps["numpy"], op.vjps
    assert len(fast) == len(portable)
    for f, p, x in zip(fast, portable, (a, b, out)):  # as the engine fits them to the input
        _same(fit(np, f(np, g, (a, b)), x.shape, x.dtype),
              fit(np, p(np, g, (a, b)), x.shape, x.dtype))
    for x, x0 in zip((a, b, g), before + (g0,)):  # nothing written into inputs or g
        np.testing.assert_array_equal(x, x0)


def test_matmul_vjp_fast_paths_complex_take_the_portable_rule(rng):
    a = rng.standard_normal((3, 4)) + 1j * rng.standard_normal((3, 4))
    b = rng.standard_normal((4, 2)) - 1j * rng.standard_normal((4, 2))
    g = rng.standard_normal((3, 2)) + 0.5j
    op = gg.registry["matmul"]
    _same(op.fast_vjps["numpy"][0](np, g, (a, b)), g @ np.conj(b).T)
    _same(op.fast_vjps["numpy"][1](np, g, (a, b)), np.conj(a).T @ g)


def test_sweep_runs_the_fast_per_input_rules_and_only_the_needed_ones(monkeypatch, rng):
    op = gg.registry["linear"]
    calls = []
    rules = op.fast_vjps["numpy"]

    def counting(i):
        def rule(xp, g, res):
            calls.append(i)
            return rules[i](xp, g, res)
        return rule

    monkeypatch.setitem(op.fast_vjps, "numpy", tuple(counting(i) for i in range(3)))
    with gg.use_backend("numpy"):
        x = gg.asarray(rng.standard_normal((5, 3)))  # data: no dx wanted
        W, b = gg.Variable(rng.standard_normal((3, 2))), gg.Variable(np.zeros(2))
        gg.sum(gg.linear(x, W, b)).backward()
    assert sorted(calls) == [1, 2]
    _same(W.grad.data if hasattr(W.grad, "data") else W.grad, x.data.T @ np.ones((5, 2)))
    _same(b.grad.data if hasattr(b.grad, "data") else b.grad, np.full(2, 5.0))


def test_fast_vjps_must_match_the_per_input_rules():
    with pytest.raises(TypeError, match="one rule per input"):
        linalg.matmul.def_fast_path("elsewhere", vjps=(linalg._matmul_da_numpy,))
    with pytest.raises(TypeError, match="one rule per input"):
        gg.registry["sigmoid"].def_fast_path("elsewhere", vjps=(lambda xp, g, s: g,))
    assert "elsewhere" not in linalg.matmul.fast_vjps


def test_linear_without_bias_check_grad(bk64):
    rng = np.random.default_rng(3)
    x, W = rng.standard_normal((4, 3)), rng.standard_normal((3, 2))
    gg.testing.check_grad(lambda a, w: gg.linear(a, w, None), x, W)
    y = gg.linear(gg.asarray(x), gg.asarray(W), None)
    np.testing.assert_allclose(gg.to_numpy(y), x @ W, rtol=1e-14)


def test_linear_without_bias_fast_forward_matches_portable(rng):
    x, W = rng.standard_normal((4, 3)), rng.standard_normal((3, 2))
    op = gg.registry["linear"]
    _same(op.fast_forward["numpy"](np, x, W, None)[0], op.forward(np, x, W, None)[0])


def test_linear_without_bias_in_a_graph(bk64):
    rng = np.random.default_rng(4)
    x, Wh = rng.standard_normal((4, 3)), rng.standard_normal((3, 2))
    W = gg.Variable(Wh)
    xs = gg.Placeholder((None, 3), "float64", name="x")
    loss = gg.sum(gg.linear(xs, W, None) * gg.linear(xs, W, None))
    for _ in range(3):  # the first run interprets, later ones run the planned program
        (gW,) = gg.gradients(loss, [W], feed={xs: gg.backend.to_backend(x)})
        # d/dW sum((xW)^2) = 2 x^T (x W), derived by hand
        np.testing.assert_allclose(gg.to_numpy(gW), 2 * x.T @ (x @ Wh), rtol=1e-12)
    opt = gg.optim.SGD([W], lr=0.1)
    for _ in range(3):  # the compiled whole step, with its update
        opt.minimize(loss, feed={xs: gg.backend.to_backend(x)})
        Wh = Wh - 0.1 * 2 * x.T @ (x @ Wh)
    np.testing.assert_allclose(gg.to_numpy(W), Wh, rtol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_three_tensor_short_way_records_what_backward_needs(bk, dtype):
    if dtype == "float64" and not bk.float64:
        pytest.skip("no float64 on this device")
    rng = np.random.default_rng(5)
    xh, wh, bh = (rng.standard_normal(s).astype(dtype) for s in ((5, 3), (3, 2), (2,)))
    x = gg.asarray(xh)
    W, b = gg.Variable(wh), gg.Variable(bh)
    y = gg.linear(x, W, b)
    assert y.requires_grad and not x.requires_grad
    gg.sum(y * y).backward()
    yh = xh.astype(np.float64) @ wh + bh
    tol = 1e-4 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(gg.to_numpy(W.grad), xh.T @ (2 * yh), rtol=tol, atol=tol)
    np.testing.assert_allclose(gg.to_numpy(b.grad), (2 * yh).sum(0), rtol=tol, atol=tol)
    with gg.no_grad():
        assert not gg.linear(x, W, b).requires_grad
    z = gg.linear(x, gg.asarray(wh), gg.asarray(bh))  # nothing requires a gradient
    assert not z.requires_grad


def test_three_tensors_of_mixed_dtypes_still_raise():
    x = gg.asarray(np.ones((2, 3), np.float32))
    W = gg.Variable(np.ones((3, 2), np.float64))
    b = gg.Variable(np.ones(2, np.float32))
    with pytest.raises(gg.errors.DtypeError, match="linear"):
        gg.linear(x, W, b)


def test_promotion_check_still_catches_an_upcast_beside_integer_inputs():
    # float32 logits with integer labels keep float32: no error, the one op on the tape
    logits = gg.Variable(np.zeros((3, 4), np.float32))
    loss = nn.cross_entropy(logits, gg.asarray(np.array([0, 1, 3])))
    assert loss.dtype == np.float32
    # an int64 array meeting float32 would give float64 under NumPy's rules: refused
    with pytest.raises(gg.errors.DtypeError, match="float32"):
        gg.add(gg.asarray(np.ones(3, np.float32)), gg.asarray(np.ones(3, np.int64)))


@pytest.mark.parametrize("dtype", ["float32", "float64", "complex128"])
@pytest.mark.parametrize("shape,axis,keepdims", [
    ((32,), None, False), ((5, 7), 1, True), ((5, 7), (0, 1), False), ((4, 3, 2), 0, False),
    ((4, 3, 2), -1, True), ((), None, False), ((0, 3), None, False), ((0, 3), 1, False)])
def test_mean_forward_fast_path_equals_portable_rule(shape, axis, keepdims, dtype, rng):
    op = gg.registry["mean"]
    x = rng.standard_normal(shape).astype(dtype)
    if dtype.startswith("complex"):
        x = x + 1j * rng.standard_normal(shape)
    with np.errstate(all="ignore"):
        fast, fres = op.fast_forward["numpy"](np, x, axis=axis, keepdims=keepdims)
        slow, sres = op.forward(np, x, axis=axis, keepdims=keepdims)
    fast, slow = np.asarray(fast), np.asarray(slow)
    assert fast.shape == slow.shape and fast.dtype == slow.dtype and fres == sres
    np.testing.assert_allclose(fast, slow, rtol=1e-6 if dtype == "float32" else 1e-14)


def test_mean_forward_fast_path_keeps_integer_and_half_inputs_on_the_portable_rule():
    op = gg.registry["mean"]
    ints = np.arange(6).reshape(2, 3)
    assert op.fast_forward["numpy"](np, ints, axis=1)[0].dtype == np.float64
    half = np.ones(3, np.float16)
    out = op.fast_forward["numpy"](np, half)[0]
    assert out.dtype == np.float16 and float(out) == 1.0


def test_cross_entropy_checks_host_targets_on_every_call():
    logits = gg.Variable(np.zeros((3, 4), np.float32))
    for bad in (np.array([0, 4, 1]), np.array([-1, 0, 1])):
        with pytest.raises(gg.errors.OpError, match=r"must lie in \[0, 3\]"):
            nn.cross_entropy(logits, bad)
    labels = np.array([0, 3, 1])
    loss = nn.cross_entropy(logits, labels)
    labels[1] = 2  # the tape keeps its own copy of host labels
    loss.backward()
    g = np.full((3, 4), 0.25 / 3, np.float32)
    g[[0, 1, 2], [0, 3, 1]] -= 1 / 3
    np.testing.assert_allclose(gg.to_numpy(logits.grad), g, rtol=1e-6)


@pytest.mark.parametrize("xshape", [(5, 3), (2, 4, 3), (2, 1, 4, 3)], ids=str)
def test_linear_and_matmul_check_grad_through_the_fast_rules(bk64, xshape):
    rng = np.random.default_rng(6)
    x, W, b = rng.standard_normal(xshape), rng.standard_normal((3, 2)), rng.standard_normal(2)
    gg.testing.check_grad(lambda a, w, c: gg.linear(a, w, c), x, W, b)
    gg.testing.check_grad(lambda a, w: a @ w, x, W)
    # a transposed stack: the saved input is a non-contiguous view
    xt = rng.standard_normal(xshape[:-2] + (3, xshape[-2]))
    gg.testing.check_grad(lambda a, w: gg.matrix_transpose(a) @ w, xt, W)
