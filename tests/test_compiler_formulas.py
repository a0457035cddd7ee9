"""Lowerings derived from the ops' scalar formulas (gpugrad/compiler/formula.py, lower.py):
every op whose formula has NumPy ufuncs for all its parts runs lowered in a planned program,
and gives the portable rules' numbers (the first run of a schedule goes step by step through
the rules), in float64 to 1e-12 and in float32 to a few ulps."""

from __future__ import annotations

import re

import numpy as np
import pytest

import gpugrad as gg
from gpugrad.compiler import formula, lower

LOWERED = sorted(op.name for op in gg.registry.values()
                 if op.scalar is not None and formula.parse(op.scalar[0]) is not None)
INPUTS = {"log": "positive", "sqrt": "positive", "log1p": "positive", "divide": "nonzero"}


def test_the_elementwise_ops_have_formulas():
    assert {"exp", "log", "log1p", "sqrt", "square", "abs", "tanh", "sigmoid", "relu",
            "negative", "add", "subtract", "multiply", "divide", "maximum", "minimum",
            "silu", "erf", "gelu", "softplus"} <= set(LOWERED)
    assert formula.parse("hypot(x, 1)") is None and formula.parse("where(x, 1)") is None


def _data(rng, kind, shape, dtype):
    x = rng.standard_normal(shape)
    if kind == "positive":
        x = np.abs(x) + 0.5
    elif kind == "nonzero":
        x = np.where(x < 0, x - 0.3, x + 0.3)
    x[0, 0] = 0.0 if kind is None else x[0, 0]  # a kink value (relu, abs, maximum ties)
    return x.astype(dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", LOWERED)
def test_lowered_formula_equals_the_rules(name, dtype, numpy_backend):
    op = gg.registry[name]
    rng = np.random.default_rng(11)
    n = len(lower.argnames(op))
    a = gg.Placeholder((None, 3), dtype, name="a")
    bs = [gg.Variable(_data(rng, INPUTS.get(name), (4, 3), dtype)) for _ in range(n - 1)]
    w = gg.Variable(rng.standard_normal((4, 3)).astype(dtype))
    loss = gg.sum(op(a * 1.0, *bs) * w)  # a * 1.0: a computed input, so the op's own gradient
    if n == 2:  # and the tie between the inputs that maximum/minimum split
        loss = loss + gg.sum(op(bs[0], bs[0]) * w)
    A = _data(rng, INPUTS.get(name), (4, 3), dtype)
    wrt = [a, *bs, w]
    v0, g0 = gg.value_and_gradients(loss, wrt, feed={a: A})
    for _ in range(2):
        v1, g1 = gg.value_and_gradients(loss, wrt, feed={a: A})
        for x, e in zip([v1, *g1], [v0, *g0]):
            if dtype == "float64":
                np.testing.assert_allclose(x, e, rtol=1e-12, atol=1e-14)
            else:
                np.testing.assert_array_max_ulp(np.asarray(x), np.asarray(e), maxulp=8)
    src = next(iter(loss._schedules[(tuple(wrt), np)].programs.values())).source
    assert "F0(" not in src and "F1(" not in src and "R1" not in src  # the op is lowered


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name, kw, lowered", [
    ("softplus", {}, True), ("softplus", {"beta": 2.0, "threshold": 1.0}, True),
    ("gelu", {}, True), ("gelu", {"approximate": "tanh"}, False)])
def test_where_and_erf_formulas_give_the_rules_numbers(name, kw, lowered, dtype,
                                                        numpy_backend):
    """softplus's ``where`` on both sides of its threshold, gelu's erf form lowered and its
    tanh form (a static parameter its formula does not name) left to its rules: a planned
    program's value and gradient are the eager ones."""
    op = gg.registry[name]
    xs = np.linspace(-6.0, 25.0, 32).reshape(4, 8).astype(dtype)
    a = gg.Placeholder((None, 8), dtype, name="a")
    w = gg.Variable(np.cos(np.arange(32.0)).reshape(4, 8).astype(dtype))
    loss = gg.sum(op(a * 1.0, **kw) * w)
    for _ in range(3):  # the first run goes through the rules, the next ones lowered
        v, (ga,) = gg.value_and_gradients(loss, [a], feed={a: xs})
    t = gg.Variable(xs)
    want = gg.sum(op(t * 1.0, **kw) * w)
    want.backward()
    tol = {"rtol": 1e-12, "atol": 1e-14} if dtype == "float64" else {"rtol": 1e-6}
    np.testing.assert_allclose(v, gg.to_numpy(want.data), **tol)
    if dtype == "float64":
        np.testing.assert_allclose(ga, gg.to_numpy(t.grad), **tol)
    else:
        np.testing.assert_array_max_ulp(np.asarray(ga), gg.to_numpy(t.grad), maxulp=8)
    src = next(iter(loss._schedules[((a,), np)].programs.values())).source
    assert (re.search(r"\bF\d+\(", src) is None) == lowered  # Fk: an op's rule


def test_a_formula_with_a_parameter_uses_its_typed_value():
    node = formula.parse("x * beta")
    lines = formula.emit(node, {"x": "v1"}, np.dtype("float32"), {"beta": 0.5}, "o", "D", [])
    assert lines == ["o = np.multiply(v1, K_float32_3fe0000000000000, D)"]
    assert formula.constants_in(lines[0])["K_float32_3fe0000000000000"].dtype == np.float32


def test_the_negation_rule_applies_only_where_the_input_is_read_once():
    """A producer may hand its consumer minus its value only where the consumer's forward
    formula negates that input once and reads it nowhere else, gradients included."""
    @gg.ops.defop("_neg_exp_test")
    def neg_exp(xp, x):
        "exp(-x)"
        out = xp.exp(-x)
        return out, out

    try:
        neg_exp.defvjp(lambda xp, g, out: (-(g * out),))
        neg_exp.defscalar("exp(-x)", "-(g * out)")
        assert lower.starts_negated(neg_exp) and lower.starts_negated(gg.registry["sigmoid"])
        neg_exp.defscalar("exp(-x)", "-(g * exp(-x))")  # its gradient reads x
        assert not lower.starts_negated(neg_exp)
        neg_exp.defscalar("exp(-x) * x", "g")  # read twice
        assert not lower.starts_negated(neg_exp)
        assert not lower.starts_negated(gg.registry["negative"])  # nothing left to do
    finally:
        gg.ops.unregister("_neg_exp_test")
