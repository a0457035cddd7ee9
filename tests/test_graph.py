"""The tutorial's graph front end: Placeholders and Variables, compiled once, run per feed."""

from __future__ import annotations

import itertools
import sys  # for this test file's own line numbers

import numpy as np
import pytest

import gpugrad as gg
from helpers import host
from helpers import is_on_backend as on_backend
from gpugrad import backend as B


@pytest.fixture
def spy():
    """A user op that records the arrays it is run on (identity forward and backward)."""
    seen = []

    @gg.ops.defop("test_graph_spy")
    def op(xp, x):
        "x;  d/dx = 1 (records its input)"
        seen.append(x)
        return x, None

    op.defvjp(lambda xp, g, res: (g,))
    op.seen = seen
    try:
        yield op
    finally:
        gg.ops.unregister("test_graph_spy")


def tutorial(bk, rng, n=8):
    """y = sigmoid(x @ W + b), loss = mean((y - t)**2), with host data for one batch."""
    dt = bk.float_dtype
    x = gg.Placeholder((None, 3), dt, name="x")
    t = gg.Placeholder((None, 2), dt, name="t")
    W0 = (rng.standard_normal((3, 2)) * 0.5).astype(dt)
    b0 = np.zeros(2, dt)
    W = gg.Variable(W0, name="W")
    b = gg.Variable(b0, name="b")
    y = gg.sigmoid(x @ W + b)
    loss = gg.mean((y - t) ** 2)
    xb = rng.standard_normal((n, 3)).astype(dt)
    tb = (rng.uniform(size=(n, 2)) > 0.5).astype(dt)
    return dict(x=x, t=t, W=W, b=b, y=y, loss=loss, xb=xb, tb=tb, W0=W0, b0=b0,
                feed={x: xb, t: tb})


def eager_loss(W, b, xb, tb):
    x, t = gg.asarray(xb), gg.asarray(tb)
    return gg.mean((gg.sigmoid(x @ W + b) - t) ** 2)


def test_placeholder_facts():
    x = gg.Placeholder((None, 3), name="x")
    assert x.shape == (None, 3)
    assert x.name == "x"
    assert B.dtype_name(x.dtype) == "float32"
    assert "x" in repr(x) and "None" in repr(x)
    with pytest.raises(TypeError, match="truth value"):
        bool(x)


def test_building_computes_nothing(bk, spy):
    dt = bk.float_dtype
    x = gg.Placeholder((None, 3), dt, name="x")
    W = gg.Variable(np.ones((3, 2), dt), name="W")
    y = spy(x @ W)
    out = gg.sum(y * 2.0)
    assert isinstance(y, gg.Symbol) and isinstance(out, gg.Symbol)
    assert spy.seen == []
    with pytest.raises(AttributeError, match="feeds"):
        _ = out.shape
    value = out.eval({x: np.ones((4, 3), dt)})
    assert float(value) == 4 * 2 * 3 * 2.0
    assert len(spy.seen) == 1


def test_declared_shapes_that_cannot_fit_fail_where_the_graph_is_built(bk):
    dt = bk.float_dtype
    x = gg.Placeholder((None, 3), dt, name="x")
    W = gg.Variable(np.ones((4, 5), dt), name="W")
    built_at = _this_line() + 2
    with pytest.raises(gg.OpError) as info:
        x @ W
    msg = str(info.value)
    assert msg.startswith("matmul: shapes (None, 3) and (4, 5) are not aligned"), msg
    assert msg.endswith(f"called at test_graph.py:{built_at}"), msg
    with pytest.raises(gg.OpError, match=r"add: shapes \(None, 3\) and \(4, 5\)"):
        x + W


def _this_line():
    """The caller's line number, from its running frame (not from the file on disk)."""
    return sys._getframe(1).f_lineno


def test_failing_op_fails_only_when_run(bk):
    dt = bk.float_dtype
    x = gg.Placeholder((None, None), dt, name="x")
    W = gg.Variable(np.ones((4, 5), dt), name="W")
    y = x @ W  # may not fit: nothing runs yet
    built_at = f"called at test_graph.py:{_this_line() - 1}"
    assert isinstance(y, gg.Symbol)
    for _ in range(2):  # the first run (checked step by step) and later ones say the same
        with pytest.raises(gg.OpError) as info:
            y.eval({x: np.ones((2, 3), dt)})
        msg = str(info.value)
        assert msg.startswith("matmul: shapes (2, 3) and (4, 5) are not aligned"), msg
        assert msg.endswith(built_at), msg


def test_schedule_compiled_once_and_reused(bk, rng, spy):
    d = tutorial(bk, rng)
    loss, W, b, feed = d["loss"], d["W"], d["b"], d["feed"]
    for _ in range(3):
        loss.eval(feed)
    assert len(loss._schedules) == 1
    (sched,) = loss._schedules.values()
    loss.eval(feed)
    assert next(iter(loss._schedules.values())) is sched

    for _ in range(5):
        gg.minimize(loss, [W, b], lr=0.1, feed=feed)
    assert len(loss._schedules) == 2  # one for eval, one for the gradients wrt (W, b)
    grad_sched = [s for s in loss._schedules.values() if s is not sched]
    for _ in range(3):
        gg.gradients(loss, [W, b], feed)
    assert len(loss._schedules) == 2
    assert [s for s in loss._schedules.values() if s is not sched] == grad_sched
    assert isinstance(sched, gg.graph.Schedule)

    # the forward sweep runs each op once per run
    z = spy(d["x"]) * 2.0
    for k in range(1, 4):
        z.eval(feed)
        assert len(spy.seen) == k
    assert len(z._schedules) == 1


def test_feed_shape_errors_name_placeholder_and_shapes(bk):
    dt = bk.float_dtype
    x = gg.Placeholder((None, 3), dt, name="x")
    W = gg.Variable(np.ones((3, 1), dt), name="W")
    y = gg.sum(x @ W)
    with pytest.raises(gg.FeedError) as info:
        y.eval({x: np.ones((2, 4), dt)})
    msg = str(info.value)
    assert "'x'" in msg and "(2, 4)" in msg and "(None, 3)" in msg
    with pytest.raises(gg.FeedError, match=r"'x'.*\(5,\).*\(None, 3\)"):
        y.eval({x: np.ones(5, dt)})
    # None matches any size
    assert float(y.eval({x: np.ones((7, 3), dt)})) == 21.0


def test_feed_dtype_errors_name_placeholder_and_dtypes(bk):
    x = gg.Placeholder((2,), "float32", name="inputs")
    y = gg.sum(x * 2.0)
    with pytest.raises(gg.FeedError) as info:
        y.eval({x: np.ones(2, np.int64)})
    msg = str(info.value)
    assert "'inputs'" in msg and "int64" in msg and "float32" in msg
    assert float(y.eval({x: np.ones(2, np.float32)})) == 4.0
    # Python lists are converted to the declared dtype
    assert float(y.eval({x: [1.0, 2.0]})) == 6.0


def test_feed_dtype_float64_into_float32(bk64):
    x = gg.Placeholder((2,), "float32", name="x")
    with pytest.raises(gg.FeedError, match=r"'x'.*float64.*float32"):
        (x * 1.0).eval({x: np.ones(2, np.float64)})


def test_unfed_placeholder_is_named(bk, rng):
    d = tutorial(bk, rng)
    with pytest.raises(gg.FeedError, match="'t'"):
        d["loss"].eval({d["x"]: d["xb"]})
    with pytest.raises(gg.FeedError, match="'x'"):
        d["loss"].eval({d["t"]: d["tb"]})
    with pytest.raises(gg.FeedError, match="not fed"):
        gg.gradients(d["loss"], [d["W"]], {})


def test_host_feed_crosses_to_the_backend_device(bk, spy):
    dt = bk.float_dtype
    x = gg.Placeholder((2,), dt, name="x")
    W = gg.Variable(np.ones(2, dt), name="W")
    y = spy(x) * W
    host_value = np.array([1.0, 2.0], dt)
    out = y.eval({x: host_value})
    (inside,) = spy.seen
    assert on_backend(bk, inside), inside
    assert on_backend(bk, out)
    np.testing.assert_array_equal(host(out), [1.0, 2.0])
    # a graph with no Variable runs on the current backend too
    z = spy(x) + 1.0
    z.eval({x: host_value})
    assert on_backend(bk, spy.seen[-1])


def test_backend_feed_used_as_is(bk, spy):
    dt = bk.float_dtype
    x = gg.Placeholder((2,), dt, name="x")
    W = gg.Variable(np.ones(2, dt), name="W")
    y = spy(x) * W
    arr = gg.asarray(np.array([1.0, 2.0], dt)).data
    y.eval({x: arr})
    assert spy.seen[-1] is arr
    # a Tensor feed gives its data (asarray would copy a NumPy array unless told not to)
    t = gg.asarray(arr, copy=False)
    y.eval({x: t})
    assert spy.seen[-1] is arr


def test_feed_from_another_device_is_refused():
    array_api_strict = pytest.importorskip("array_api_strict")
    with gg.use_backend("array_api_strict", array_api_strict.Device("device1")):
        x = gg.Placeholder((2,), "float64", name="x")
        W = gg.Variable([1.0, 1.0], name="W")
        y = x * W
    with gg.use_backend("array_api_strict", array_api_strict.Device("device2")):
        other = gg.asarray([1.0, 2.0], dtype="float64").data
    with gg.use_backend("array_api_strict", array_api_strict.Device("device1")):
        with pytest.raises(gg.BackendError, match=r"'x'.*device2.*device1"):
            y.eval({x: other})


def test_minimize_lowers_the_loss_on_device(bk, rng):
    d = tutorial(bk, rng)
    loss, W, b, feed = d["loss"], d["W"], d["b"], d["feed"]
    first = float(loss.eval(feed))
    values = [float(gg.minimize(loss, [W, b], lr=0.5, feed=feed)) for _ in range(100)]
    last = float(loss.eval(feed))
    assert values[0] == pytest.approx(first, rel=1e-6)
    assert last < 0.9 * first
    assert all(b2 <= a2 + 1e-7 for a2, b2 in itertools.pairwise(values))
    for v in (W, b):
        assert on_backend(bk, v.data)
        assert B.dtype_name(v.dtype) == bk.float_dtype
        assert v.requires_grad and v._node is None
    assert not np.allclose(host(W), d["W0"])


def test_minimize_returns_loss_before_the_step(bk):
    dt = bk.float_dtype
    x = gg.Placeholder((1,), dt, name="x")
    w = gg.Variable(np.array([2.0], dt), name="w")
    loss = gg.sum((w - x) ** 2)
    assert float(gg.minimize(loss, [w], lr=0.25, feed={x: np.zeros(1, dt)})) == 4.0
    np.testing.assert_array_equal(host(w), [1.0])  # 2 - 0.25 * 4


def test_graph_and_eager_agree_on_the_tutorial(bk, rng):
    d = tutorial(bk, rng)
    loss, W, b, xb, tb, feed = d["loss"], d["W"], d["b"], d["xb"], d["tb"], d["feed"]
    gW, gb = gg.gradients(loss, [W, b], feed)
    assert on_backend(bk, gW) and tuple(gW.shape) == (3, 2)
    assert B.dtype_name(gW.dtype) == bk.float_dtype

    We, be = gg.Variable(d["W0"], name="W"), gg.Variable(d["b0"], name="b")
    el = eager_loss(We, be, xb, tb)
    el.backward()
    rtol = 1e-12 if bk.float64 else 1e-5
    np.testing.assert_allclose(host(loss.eval(feed)), host(el), rtol=rtol)
    np.testing.assert_allclose(host(gW), host(We.grad), rtol=rtol, atol=1e-7)
    np.testing.assert_allclose(host(gb), host(be.grad), rtol=rtol, atol=1e-7)

    # hand-derived gradient of the tutorial's loss: dL/dz = 2 (y - t) y (1 - y) / N
    X, T = xb.astype(float), tb.astype(float)
    Y = 1 / (1 + np.exp(-(X @ d["W0"].astype(float) + d["b0"].astype(float))))
    dz = 2 * (Y - T) * Y * (1 - Y) / Y.size
    np.testing.assert_allclose(host(gW), X.T @ dz, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(host(gb), dz.sum(0), rtol=1e-4, atol=1e-7)

    # both front ends train: eager loop with the tutorial's update rule
    lr = 0.5
    We.grad = be.grad = None
    losses = []
    for _ in range(100):
        el = eager_loss(We, be, xb, tb)
        losses.append(float(el))
        el.backward()
        for v in (We, be):
            v.data = v.data - lr * v.grad
            v.grad = None
    graph_losses = [float(gg.minimize(loss, [W, b], lr=lr, feed=feed)) for _ in range(100)]
    assert losses[-1] < 0.9 * losses[0]
    assert graph_losses[-1] < 0.9 * graph_losses[0]
    np.testing.assert_allclose(graph_losses, losses, rtol=1e-4 if not bk.float64 else 1e-10)
    np.testing.assert_allclose(host(W), host(We), rtol=1e-4 if not bk.float64 else 1e-10,
                               atol=1e-6)


def test_value_and_gradients(bk, rng):
    d = tutorial(bk, rng)
    value, (gW,) = gg.value_and_gradients(d["loss"], [d["W"]], d["feed"])
    assert float(value) == pytest.approx(float(d["loss"].eval(d["feed"])), rel=1e-6)
    (gW2,) = gg.gradients(d["loss"], [d["W"]], d["feed"])
    np.testing.assert_array_equal(host(gW), host(gW2))


def test_eager_regularizer_is_lifted_into_the_graph(bk, rng):
    d = tutorial(bk, rng)
    W, b, feed = d["W"], d["b"], d["feed"]
    reg = 0.01 * gg.sum(W ** 2)  # runs now, eagerly, on W's current value
    assert isinstance(reg, gg.Tensor) and reg.requires_grad
    loss = d["loss"] + reg
    assert isinstance(loss, gg.Symbol)

    gW, gb = gg.gradients(loss, [W, b], feed)
    mse_gW, mse_gb = gg.gradients(d["loss"], [W, b], feed)
    rtol = 1e-10 if bk.float64 else 1e-5
    np.testing.assert_allclose(host(gW), host(mse_gW) + 0.02 * d["W0"], rtol=rtol, atol=1e-7)
    np.testing.assert_allclose(host(gb), host(mse_gb), rtol=rtol, atol=1e-7)

    # the lifted term is recomputed from W's value on each run, not frozen at build time
    W.data = W.data * 2.0
    want = float(d["loss"].eval(feed)) + 0.01 * float(np.sum((2 * d["W0"].astype(float)) ** 2))
    assert float(loss.eval(feed)) == pytest.approx(want, rel=1e-5)

    # and the eager value of the regularizer was not disturbed
    assert float(reg) == pytest.approx(0.01 * float(np.sum(d["W0"].astype(float) ** 2)),
                                       rel=1e-5)


def test_gradients_wrt_variable_not_in_graph(bk, rng):
    d = tutorial(bk, rng)
    stranger = gg.Variable(np.ones(2, bk.float_dtype), name="stranger")
    with pytest.raises(ValueError, match="stranger"):
        gg.gradients(d["loss"], [d["W"], stranger], d["feed"])


def test_gradients_of_an_eager_tensor_is_a_type_error(bk):
    W = gg.Variable(np.ones(2, bk.float_dtype))
    with pytest.raises(TypeError, match="backward"):
        gg.gradients(gg.sum(W), [W])


def test_graph_seed_gradient_checks_shape(bk):
    dt = bk.float_dtype
    x = gg.Placeholder((None, 2), dt, name="x")
    W = gg.Variable(np.ones(2, dt), name="W")
    y = x * W
    feed = {x: np.ones((3, 2), dt)}
    with pytest.raises(gg.GradientError, match=r"\(3, 2\)"):
        gg.gradients(y, [W], feed)
    (gW,) = gg.gradients(y, [W], feed, grad=np.full((3, 2), 2.0, dt))
    np.testing.assert_array_equal(host(gW), [6.0, 6.0])


def test_placeholder_used_twice_and_broadcast(bk):
    dt = bk.float_dtype
    x = gg.Placeholder((None, 2), dt, name="x")
    w = gg.Variable(np.array([1.0, 3.0], dt), name="w")
    loss = gg.sum(x * w * x + w)
    xb = np.array([[1.0, 2.0], [3.0, 4.0]], dt)
    (gw,) = gg.gradients(loss, [w], {x: xb})
    # d/dw sum(x**2 w + w) = sum over rows of x**2 + number of rows
    np.testing.assert_allclose(host(gw), (xb.astype(float) ** 2).sum(0) + 2.0)


def test_zero_d_variables_stay_arrays(bk):
    dt = bk.float_dtype
    x = gg.Placeholder((), dt, name="x")
    c = gg.Variable(np.array(2.0, dt), name="c")
    loss = x * c * c  # c used twice: its gradients are summed
    feed = {x: np.array(3.0, dt)}
    (gc,) = gg.gradients(loss, [c], feed)
    assert type(gc) is type(c.data) and gc.shape == ()
    assert float(gc) == 12.0
    gg.minimize(loss, [c], lr=0.1, feed=feed)
    assert type(c.data) is type(gc) and c.shape == ()
    assert float(c.data) == pytest.approx(2.0 - 1.2)


def test_gradients_wrt_a_placeholder(bk):
    dt = bk.float_dtype
    x = gg.Placeholder((None, 2), dt, name="x")
    W = gg.Variable(np.array([[1.0], [2.0]], dt), name="W")
    loss = gg.sum((x @ W) ** 2)
    gx, gW = gg.gradients(loss, [x, W], {x: np.array([[1.0, 1.0]], dt)})
    np.testing.assert_array_equal(host(gx), [[6.0, 12.0]])
    np.testing.assert_array_equal(host(gW), [[6.0], [6.0]])


def test_numpy_schedule_overflow_in_another_op_keeps_numpys_warning():
    """Only sigmoid's overflow guard is compiled away (its exact fallback is tested in
    tests/test_fp_hygiene.py); another op's overflow keeps NumPy's own behaviour: inf plus
    the usual warning."""
    with gg.use_backend("numpy"):
        x = gg.Placeholder((None,), "float32", name="x")
        z = gg.sum(gg.exp(x))
        with pytest.warns(RuntimeWarning, match="overflow"):
            assert np.isinf(z.eval(feed={x: np.array([100.0], np.float32)}))


def test_guarded_sigmoid_fast_path_matches_portable_rule(rng):
    op = gg.registry["sigmoid"]
    x = (rng.standard_normal(1000) * 20).astype(np.float32)
    x = np.clip(x, -88.0, None)
    with np.errstate(over="raise"):
        fast, _ = op.fast_forward["numpy-overflow-raises"](np, x)
    slow, _ = op.forward(np, x)
    np.testing.assert_allclose(fast, slow, rtol=4e-7, atol=0)


def test_a_later_compiled_run_that_fails_names_the_op_and_where_it_was_built():
    with gg.use_backend("numpy"):
        x = gg.Placeholder((None, None), "float64", name="x")
        W = gg.Variable(np.ones((3, 2)))
        y = gg.sum(x @ W)  # built on this line
        line = sys._getframe().f_lineno - 1
        assert float(y.eval(feed={x: np.ones((2, 3))})) == 12.0  # the checked first run
        with pytest.raises(gg.OpError, match=rf"matmul: shapes \(2, 4\) and \(3, 2\).*"
                                             rf"test_graph.py:{line}"):
            y.eval(feed={x: np.ones((2, 4))})  # the compiled code fails; it names the op
