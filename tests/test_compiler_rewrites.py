"""The compiler's planning, lowering and rewrites (gpugrad/compiler/plan.py, lower.py,
rewrite.py), each checked against the portable definition: a schedule's first run at an
input signature goes step by step through the checked interpreter, later runs through the
planned program, so a rewrite is tested by comparing the two (float64 to 1e-12, float32 in
ulps: helpers.assert_orders_agree), and
the planner by its buffer assignment. Whole training steps: tests/test_compiler.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_orders_agree

import gpugrad as gg
from gpugrad import nn
from gpugrad.compiler import plan

TOL = {"rtol": 1e-12, "atol": 1e-14}


@pytest.fixture(autouse=True)
def numpy_tier(monkeypatch):
    """These tests read the NumPy tier's code: it stays the tier under GPUGRAD_JIT=now."""
    monkeypatch.setenv("GPUGRAD_JIT", "0")



def _np(a):
    return gg.to_numpy(a)


def test_cross_entropy_is_one_op_lowered_as_it_is(numpy_backend):
    """A graph's cross-entropy is the fused softmax_cross_entropy op, as eager's (no chain to
    recover), and its lowering (forward, and (p - onehot) * g in place) gives the numbers of
    its rules (the first, step-by-step run), with mean and sum reductions."""
    z = gg.Placeholder((None, 5), "float64", name="z")
    t = gg.Placeholder((None,), "int64", name="t")
    w = gg.Variable(np.linspace(-1, 1, 5))
    rng = np.random.default_rng(0)
    for red in ("mean", "sum", "none"):
        loss = nn.cross_entropy(z * w, t, reduction=red) * 3.0
        if red == "none":
            loss = gg.sum(loss * gg.asarray(np.arange(6.0)))
        Z, T = rng.standard_normal((6, 5)) * 4, rng.integers(0, 5, 6)
        first = gg.value_and_gradients(loss, [z, w], feed={z: Z, t: T})
        for _ in range(2):
            later = gg.value_and_gradients(loss, [z, w], feed={z: Z, t: T})
            assert_orders_agree(later[0], first[0], **TOL)
            for g, h in zip(later[1], first[1]):
                assert_orders_agree(g, h, **TOL)
        sched = loss._schedules[((z, w), np)]
        names = [op.name for op, *_ in sched.steps]
        assert "softmax_cross_entropy" in names and "log_softmax" not in names
        src = next(iter(sched.programs.values())).source
        k = names.index("softmax_cross_entropy")
        assert "np.exp(s" in src and "] -= ONE_float64" in src and f"F{k}(" not in src


def _ce_forward_lines(z, n):
    from gpugrad.compiler import lower

    op = gg.registry["softmax_cross_entropy"]
    info = [((n, z.shape[1]), z.dtype), ((n,), np.dtype("int64"))]
    low = lower.forward(op, ["z", "t"], info, ((n,), z.dtype), {"axis": -1})
    return low.emit("o", "None", ["lp"], ["LP"], ["TMP"])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cross_entropy_forward_lines_with_nonfinite_row_maxima(dtype):
    """The lowered forward's lines: a row whose maximum is +inf, -inf or nan is shifted by 0
    instead, as the rule does; finite rows are untouched. Checked against the formula
    written out here."""
    import math

    z = np.array([[1.0, 2.0, 3.0], [-np.inf, -np.inf, -np.inf], [0.5, np.inf, 1.0],
                  [np.nan, 1.0, 2.0], [-3.0, 0.0, 40.0]], dtype)
    t = np.array([2, 0, 1, 1, 0])
    ar = np.arange(5)
    env = {"np": np, "asarray": np.asarray, "isfinite": math.isfinite, "z": z, "t": t,
           "AR5": ar, "LP": np.empty_like(z), "TMP": np.empty_like(z)}
    lines = _ce_forward_lines(z, 5)
    with np.errstate(all="ignore"):
        exec("\n".join(lines), env)  # noqa: S102 - the generated lines under test
        m = z.max(axis=-1, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0)
        want = (z - m) - np.log(np.sum(np.exp(z - m), axis=-1, keepdims=True))
    np.testing.assert_array_equal(env["lp"], want)
    assert env["lp"].dtype == z.dtype
    np.testing.assert_array_equal(env["o"], -want[ar, t])
    finite = z[[0, 4]]  # finite maxima only: the shift is the maximum itself
    env.update(z=finite, t=t[[0, 4]], AR2=np.arange(2), LP=np.empty_like(finite),
               TMP=np.empty_like(finite))
    exec("\n".join(_ce_forward_lines(finite, 2)), env)  # noqa: S102
    np.testing.assert_array_equal(env["m_"], finite.max(axis=-1, keepdims=True))


def test_plan_reuses_buffers_only_after_the_last_reader():
    f8 = np.dtype("float64")
    prog = [plan.Instr(["x"], [("a", (3,), f8)], None, True),
            plan.Instr(["a"], [("b", (3,), f8)], None, True),
            plan.Instr(["a", "b"], [("c", (3,), f8)], None, True),
            plan.Instr(["c"], [("d", (3,), f8)], None, True),
            plan.Instr(["d"], [("e", (3,), f8)], None, True)]
    where, shapes = plan.assign(prog, escapes={"e"})
    assert where["a"] != where["b"] and where["c"] not in (where["a"], where["b"])
    assert where["d"] in (where["a"], where["b"])  # a and b are dead once c is made
    assert "e" not in where  # returned: never a planned buffer
    assert len(shapes) == 3


def test_plan_writes_in_place_only_over_a_dying_input_of_the_same_shape():
    f8, f4 = np.dtype("float64"), np.dtype("float32")
    prog = [plan.Instr(["x"], [("a", (3,), f8)], None, True),
            plan.Instr(["a"], [("b", (3,), f8)], None, True, inplace={"b": ["a"]}),
            plan.Instr(["b"], [("c", (3,), f8)], None, True, inplace={"c": ["b"]}),
            plan.Instr(["b", "c"], [("d", (3,), f8)], None, True),
            plan.Instr(["d"], [("e", (3,), f4)], None, True, inplace={"e": ["d"]}),
            plan.Instr(["e"], [("f", (3,), f4)], None, True)]
    where, shapes = plan.assign(prog, escapes={"f"})
    assert where["b"] == where["a"]  # a's last reader: b takes its buffer
    assert where["c"] != where["b"]  # b is read again later: never overwritten
    assert where["e"] != where["d"] and shapes[where["e"]][1] == f4  # another dtype
    # a returned value (unplanned) never lends its buffer, and is never taken
    where, _ = plan.assign(prog[:2], escapes={"b"})
    assert "b" not in where


def test_plan_never_plans_what_a_generic_step_reads_or_what_is_returned():
    f8 = np.dtype("float64")
    prog = [plan.Instr(["x"], [("a", (3,), f8)], None, True),
            plan.Instr(["a"], [("b", (3,), f8)], None, False),
            plan.Instr(["x"], [("c", (3,), f8)], None, True),
            plan.Instr(["c"], [("d", (3,), f8)], None, True, alias={"d": "c"})]
    where, _ = plan.assign(prog, escapes={"d"})
    assert "a" not in where and "b" not in where
    assert "c" not in where and "d" not in where  # d aliases c and is returned


def test_lowered_elementwise_broadcasts_and_fan_out(numpy_backend):
    """Lowered add/subtract/multiply/negative/tanh/sigmoid/matmul/linear with leading and
    size-1 broadcasting, fan-out and a 1-D bias, against the first (portable) run."""
    rng = np.random.default_rng(3)
    x = gg.Placeholder((None, 3), "float64", name="x")
    b = gg.Variable(rng.standard_normal(3))
    c = gg.Variable(rng.standard_normal((1, 3)))
    d = gg.Variable(rng.standard_normal((4, 1)))
    W = gg.Variable(rng.standard_normal((3, 3)))
    h = gg.sigmoid(x * b + c) - d
    h = gg.tanh(h @ W) * h + (-h)
    h = gg.ops.linalg.linear(h, W, b)
    loss = gg.sum(h * h)
    X = rng.standard_normal((4, 3))
    wrt = [x, b, c, d, W]
    v0, g0 = gg.value_and_gradients(loss, wrt, feed={x: X})
    for _ in range(2):
        v1, g1 = gg.value_and_gradients(loss, wrt, feed={x: X})
        assert_orders_agree(v1, v0, **TOL)
        for a, e in zip(g1, g0):
            assert_orders_agree(a, e, **TOL)
    src = next(iter(loss._schedules[(tuple(wrt), np)].programs.values())).source
    assert "np.add.reduce" in src and "np.dot(ONES4_float64" in src and "np.reciprocal" in src


def test_overflow_in_a_planned_forward_falls_back_to_the_exact_rule(numpy_backend):
    """The planned sigmoid runs under errstate(over="raise"); an input that overflows
    exp(-x) reruns generically, which gives the exact tiny values (and no warning)."""
    x = gg.Placeholder((3,), "float32", name="x")
    w = gg.Variable(np.ones(3, "float32"))
    loss = gg.sum(gg.sigmoid(x * w))
    ok = np.array([0.5, -1.0, 2.0], "float32")
    far = np.array([-100.0, -1.0, 2.0], "float32")
    gg.gradients(loss, [w], feed={x: ok})
    gg.gradients(loss, [w], feed={x: ok})  # planned from here on
    sched = loss._schedules[((w,), np)]
    (prog,) = sched.programs.values()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (g,) = gg.gradients(loss, [w], feed={x: far})
    value, saved = sched.forward({x: far}, True)  # the generic code, on its own
    np.testing.assert_array_equal(g, sched.backward(saved)[0])
    s = 1.0 / (1.0 + np.exp(-far.astype(np.float64)))
    np.testing.assert_allclose(g[1:], (far * s * (1 - s))[1:], rtol=1e-5)
    assert 0.0 < -g[0] < 1e-40
    assert list(sched.programs.values()) == [prog]  # not rebuilt


def _first_and_planned(loss, wrt, feed, value=True):
    """The first (step-by-step, unrewritten) run and two planned runs, compared; returns the
    planned program's source."""
    run = gg.value_and_gradients if value else (lambda *a, **k: (None, gg.gradients(*a, **k)))
    v0, g0 = run(loss, wrt, feed=feed)
    for _ in range(2):
        v1, g1 = run(loss, wrt, feed=feed)
        if value:
            assert_orders_agree(_np(v1), _np(v0), **TOL)
        for a, e in zip(g1, g0):
            assert a.shape == e.shape
            assert_orders_agree(_np(a), _np(e), **TOL)
    (prog,) = loss._schedules[(tuple(wrt), np)].programs.values()
    return prog.source


@pytest.mark.parametrize("act", ["sigmoid", "tanh", "relu"])
def test_batched_matmul_and_full_sum_rewrite(act, numpy_backend):
    """sum(act(A @ B)) batched: the matmuls are lowered into planned buffers, and the sum's
    gradient reaches the activation's backward as the 0-d seed (no array of ones; for the
    exact seed 1 the product by it is left out). Against the unrewritten first run."""
    rng = np.random.default_rng(5)
    A = gg.Placeholder((3, 4, 5), "float64", name="A")
    B = gg.Placeholder((3, 5, 2), "float64", name="B")
    loss = gg.sum(getattr(gg, act)(A @ B))
    feed = {A: rng.standard_normal((3, 4, 5)), B: rng.standard_normal((3, 5, 2))}
    src = _first_and_planned(loss, [A, B], feed)
    assert "np.matmul(" in src and "F0(" not in src and "broadcast_to" not in src
    assert "np.add.reduce(" in src  # the value, wanted here
    if act == "sigmoid":
        assert src.count("np.multiply(") == 1  # (1 - s) * s, and no "* 1"
    # scaled: the seed is no longer 1, so it multiplies (0-d, broadcast by NumPy)
    scaled = gg.sum(gg.sigmoid(A @ B)) * 3.0
    src = _first_and_planned(scaled, [A, B], feed)
    assert src.count("np.multiply(") >= 2 and "broadcast_to" not in src


def test_full_sum_gradient_materialised_where_needed(numpy_backend):
    """A full sum's 0-d gradient is broadcast for a consumer that needs the full array (a
    matmul, a sum with other contributions, a returned gradient), with the same numbers."""
    rng = np.random.default_rng(6)
    x = gg.Placeholder((4, 3), "float64", name="x")
    w = gg.Variable(rng.standard_normal((3, 3)))
    h = x @ w
    loss = gg.sum(h) + gg.sum(gg.sigmoid(h)) + gg.sum(x)
    feed = {x: rng.standard_normal((4, 3))}
    src = _first_and_planned(loss, [x, w], feed)
    assert "broadcast_to" in src
    # the gradient of a plain sum, returned to the caller
    s = gg.sum(x)
    _first_and_planned(s, [x], feed)
    got = gg.gradients(s, [x], feed=feed)[0]
    np.testing.assert_array_equal(_np(got), np.ones((4, 3)))


def test_gradients_only_leaves_out_the_value(numpy_backend):
    """``gg.gradients`` plans a program without the steps only the loss value needs (here
    the final sum); its gradients equal those of the full program and of the first run."""
    rng = np.random.default_rng(7)
    A = gg.Placeholder((2, 3, 3), "float64", name="A")
    B = gg.Variable(rng.standard_normal((2, 3, 3)))
    loss = gg.sum(gg.sigmoid(A @ B))
    feed = {A: rng.standard_normal((2, 3, 3))}
    src = _first_and_planned(loss, [A, B], feed, value=False)
    assert "np.add.reduce(" not in src and "return None" in src
    full = gg.value_and_gradients(loss, [A, B], feed=feed)[1]
    for a, e in zip(gg.gradients(loss, [A, B], feed=feed), full):
        np.testing.assert_array_equal(_np(a), _np(e))
    # the gradients handed back are fresh arrays on every run, never planned buffers
    held = [(g, _np(g).copy()) for g in gg.gradients(loss, [A, B], feed=feed)]
    again = gg.gradients(loss, [A, B], feed={A: 2.0 * feed[A]})
    for (g, copy), h in zip(held, again):
        assert g is not h and not np.shares_memory(g, h)
        np.testing.assert_array_equal(_np(g), copy)
    # a caller's seed still runs the generic sweep, scaled
    seeded = gg.gradients(loss, [A, B], feed=feed, grad=np.array(2.0))
    for a, e in zip(seeded, full):
        assert_orders_agree(_np(a), 2.0 * _np(e), **TOL)


def test_linear_then_sigmoid_rewrite_equals_the_chain(numpy_backend):
    """A linear read only by a sigmoid writes ``(-b) - x @ W`` and the sigmoid starts at its
    exp; against the unrewritten first run, with pre-activations that cancel to zero and
    ones large enough that exp overflows in float32 (the planned run then falls back)."""
    from gpugrad.ops.linalg import linear

    rng = np.random.default_rng(8)
    for dtype in ("float64", "float32"):
        x = gg.Placeholder((None, 3), dtype, name="x")
        W = gg.Variable(rng.standard_normal((3, 4)).astype(dtype))
        b = gg.Variable(np.array([0.0, 1.0, -2.0, 0.5], dtype))
        loss = gg.sum(gg.sigmoid(linear(x, W, b)) * gg.asarray(np.arange(4.0).astype(dtype)))
        X = rng.standard_normal((5, 3)).astype(dtype)
        X[0] = 0.0  # x @ W + b == b: with b[0] == 0, a zero pre-activation
        src = _first_and_planned(loss, [x, W, b], {x: X})
        assert "np.negative(v" in src and "= np.exp(v" in src
        if dtype == "float32":  # exp(-z) overflows: the planned run falls back, same numbers
            big = X * 40.0
            v0, g0 = gg.value_and_gradients(loss, [x, W, b], feed={x: big})
            v1, g1 = gg.value_and_gradients(loss, [x, W, b], feed={x: big})
            np.testing.assert_array_equal(_np(v1), _np(v0))
            for a, e in zip(g1, g0):
                np.testing.assert_array_equal(_np(a), _np(e))
    # the linear's output read by something else too: no rewrite
    h = linear(x, W, b)
    loss = gg.sum(gg.sigmoid(h) * h)
    src = _first_and_planned(loss, [x, W, b], {x: X})
    assert "np.add(v" in src and "np.negative(v" in src


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_bias_gradient_is_one_matrix_vector_product(dtype, numpy_backend):
    """A bias added (or subtracted) over a 2-D batch gets its gradient as ``ones @ g`` (one
    BLAS call, negated for a subtracted bias), equal to the first (portable) run."""
    rng = np.random.default_rng(5)
    x = gg.Placeholder((None, 3), dtype, name="x")
    b = gg.Variable(rng.standard_normal(3).astype(dtype))
    c = gg.Variable(rng.standard_normal(3).astype(dtype))
    loss = gg.sum(gg.tanh(x + b) * gg.sigmoid(x - c))
    X = rng.standard_normal((5, 3)).astype(dtype)
    tol = TOL if dtype == "float64" else {"rtol": 1e-5, "atol": 1e-6}
    v0, g0 = gg.value_and_gradients(loss, [b, c], feed={x: X})
    for _ in range(2):
        v1, g1 = gg.value_and_gradients(loss, [b, c], feed={x: X})
        np.testing.assert_allclose(v1, v0, **tol)
        for a, e in zip(g1, g0):
            np.testing.assert_allclose(a, e, **tol)
    src = next(iter(loss._schedules[((b, c), np)].programs.values())).source
    assert src.count(f"np.dot(ONESn_{dtype}") == 2 and "np.negative(c" in src


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("red", ["mean", "sum"])
def test_cross_entropy_read_by_a_full_reduction_leaves_its_negation_to_it(red, dtype,
                                                                          numpy_backend):
    """A cross-entropy read only by a full mean or sum writes ``logp[row, target]`` and the
    reduction negates its scalar: the loss has the same bits as the first (unrewritten) run.
    Read by anything else too, it negates its rows itself."""
    rng = np.random.default_rng(3)
    z = gg.Placeholder((None, 4), dtype, name="z")
    t = gg.Placeholder((None,), "int64", name="t")
    w = gg.Variable(rng.standard_normal(4).astype(dtype))
    feed = {z: (rng.standard_normal((7, 4)) * 3).astype(dtype), t: rng.integers(0, 4, 7)}
    loss = nn.cross_entropy(z * w, t, reduction=red)
    v0, g0 = gg.value_and_gradients(loss, [w], feed=feed)
    v1, g1 = gg.value_and_gradients(loss, [w], feed=feed)
    np.testing.assert_array_equal(_np(v1), _np(v0))  # the loss: the same bits
    assert_orders_agree(_np(g1[0]), _np(g0[0]), **TOL)  # (its backward adds in its order)
    (prog,) = loss._schedules[((w,), np)].programs.values()
    assert "-np.add.reduce(v" in prog.source or "np.negative(v" in prog.source
    assert "np.negative(s" not in prog.source
    rows = nn.cross_entropy(z * w, t, reduction="none")
    both = gg.sum(rows) + gg.sum(rows * rows)
    src = _first_and_planned(both, [w], feed)
    assert "np.negative(s" in src
