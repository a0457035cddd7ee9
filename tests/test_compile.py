"""``gg.compile``: compiled calls equal eager ones (every op case, fuzzed programs, training
steps), on numpy and array_api_strict; the tape, the cache, the errors, staleness, aliasing and
memory.

The oracle for a compiled call is the same code run eagerly; the eager engine itself is checked
against finite differences and NumPy references in test_ops.py and test_fuzz.py.
"""

from __future__ import annotations

import gc
import sys
import threading
import tracemalloc

import numpy as np
import pytest
from helpers import assert_orders_agree

import gpugrad as gg
from gpugrad import nn, optim

from op_cases import CASES, params

TOL = {"rtol": 1e-12, "atol": 1e-12}


def _close(a, b):
    assert_orders_agree(gg.to_numpy(a), gg.to_numpy(b), **TOL)


def _args(case, bk, rng):
    hosts = case.hosts(rng, bk, float_dtype="float64")
    return [gg.Variable(h) if h.dtype.kind in "fc" else gg.asarray(h) for h in hosts]


def _grads_of(fn, args, seed):
    for a in args:
        a.grad = None
    out = fn(*args)
    if out.requires_grad:
        out.backward(grad=seed)
    return out, [None if a.grad is None else gg.to_numpy(a.grad) for a in args]


# --- compiled equals eager ------------------------------------------------------------------

@pytest.mark.parametrize("case", params(CASES))
def test_every_op_case_compiled_equals_eager(case, bk64, rng):
    args = _args(case, bk64, rng)
    step = gg.compile(case.fn)
    eager = case.fn(*args)
    if case.name == "getitem_mask":  # a data-dependent shape: refused with what to do
        with pytest.raises(TypeError, match=r"gg\.where\("):
            step(*args)
        return
    seed = gg.asarray(rng.standard_normal(tuple(eager.shape))) if eager.requires_grad else None
    if seed is not None:
        seed = seed.astype(eager.dtype)
    for _ in range(3):  # the first call traces (and runs checked), the later ones are compiled
        out, grads = _grads_of(step, args, seed)
        assert out.shape == eager.shape and out.dtype == eager.dtype
        assert out.requires_grad == eager.requires_grad
        _close(out, eager)
        _, want = _grads_of(case.fn, args, seed)
        for g, w in zip(grads, want):
            assert (g is None) == (w is None)
            if g is not None:
                assert_orders_agree(g, w, **TOL)
    assert step.cache_info().traces == 1 and step.cache_info().hits == 2


def test_fuzzed_programs_compiled_equal_eager():
    """Random programs from the fuzzer (tests/test_fuzz.py): value and every input's gradient."""
    hypothesis = pytest.importorskip("hypothesis")
    from test_fuzz import _loss, programs

    @hypothesis.settings(max_examples=150, derandomize=True, database=None, deadline=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(case=programs(), backend=hypothesis.strategies.sampled_from(
        ["numpy", "array_api_strict"]))
    def check(case, backend):
        prog, outputs, weights = case
        hypothesis.note(repr(prog))
        with gg.use_backend(backend):
            fn = _loss(prog, outputs, weights)
            xs = [gg.Variable(v) for v in prog.values[:prog.n_inputs]]
            step = gg.compile(fn)
            for _ in range(3):
                out, grads = _grads_of(step, xs, None)
                want_out, want = _grads_of(fn, xs, None)
                _close(out, want_out)
                for g, w in zip(grads, want):
                    assert (g is None) == (w is None)  # None: an input the loss ignores
                    if g is not None:
                        assert_orders_agree(g, w, **TOL)

    check()


def _mlp_run(compiled: bool, opt_name: str, steps: int = 5):
    rng = np.random.default_rng(0)
    model = nn.MLP([5, 7, 3], seed=1, dtype="float64")
    opt = optim.SGD(model.parameters(), lr=0.3, momentum=0.9) if opt_name == "sgd" else \
        optim.Adam(model.parameters(), lr=0.05)
    w = gg.Variable(rng.standard_normal(3), name="w")  # a closed-over Variable outside model
    opt.params.append(w)
    opt.state[w] = {}

    def loss_fn(xb, yb):
        return nn.cross_entropy(model(xb) * w, yb) + 0.01 * gg.sum(w * w)

    fn = gg.compile(loss_fn) if compiled else loss_fn
    losses = []
    for _ in range(steps):
        xb = gg.asarray(rng.standard_normal((4, 5)))
        yb = gg.asarray(rng.integers(0, 3, 4))
        loss = fn(xb, yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    return losses, [gg.to_numpy(p) for p in opt.params], fn


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_parameters_after_five_steps_equal_eager(opt_name, bk64):
    want_losses, want, _ = _mlp_run(False, opt_name)
    losses, got, fn = _mlp_run(True, opt_name)
    assert_orders_agree(losses, want_losses, **TOL)
    for g, w in zip(got, want):
        assert_orders_agree(g, w, **TOL)
    assert fn.cache_info().traces == 1 and fn.cache_info().hits == 4


def test_gradients_reach_tensor_arguments_and_closed_over_variables(bk64):
    W = gg.Variable(np.array([[1.0, -2.0], [0.5, 3.0]]))

    @gg.compile
    def f(x, c):
        return gg.sum(gg.tanh(x @ W) * c)

    x = gg.Variable(np.array([[0.3, -0.1], [2.0, 1.0], [0.0, 0.4]]))
    c = gg.asarray(np.array([1.0, -0.5]))
    f(x, c).backward()
    gx, gW = gg.to_numpy(x.grad), gg.to_numpy(W.grad)
    t = np.tanh(gg.to_numpy(x) @ gg.to_numpy(W))
    d = (1.0 - t**2) * gg.to_numpy(c)  # hand-derived: d/dz sum(tanh(z) c) = (1 - tanh^2) c
    np.testing.assert_allclose(gx, d @ gg.to_numpy(W).T, rtol=1e-12)
    np.testing.assert_allclose(gW, gg.to_numpy(x).T @ d, rtol=1e-12)
    gg.testing.check_grad(lambda x: f(x, c), gg.to_numpy(x))


def test_non_leaf_tensor_argument_chains_into_the_tape(bk64):
    a = gg.Variable(np.array([0.5, -1.0, 2.0]))
    f = gg.compile(lambda h: gg.sum(gg.exp(h)))
    f(a * 3.0).backward()
    np.testing.assert_allclose(gg.to_numpy(a.grad), 3.0 * np.exp(3.0 * gg.to_numpy(a)),
                               rtol=1e-12)


def test_pytree_arguments_and_outputs(bk64):
    W = gg.Variable(np.array([1.0, 2.0]))

    @gg.compile
    def f(batch, scale=2.0):
        h = batch["x"] * W * scale
        return {"loss": gg.sum(h * h), "h": h, "pair": (batch["y"], gg.sum(h))}

    batch = {"x": gg.asarray(np.array([[1.0, 0.0], [3.0, -1.0]])),
             "y": gg.asarray(np.array([7, 8]))}
    out = f(batch)
    assert set(out) == {"loss", "h", "pair"}
    assert out["pair"][0] is batch["y"]  # an argument returned as it is
    x = gg.to_numpy(batch["x"])
    h = x * np.array([1.0, 2.0]) * 2.0
    np.testing.assert_allclose(gg.to_numpy(out["h"]), h, rtol=1e-12)
    out["loss"].backward()
    np.testing.assert_allclose(gg.to_numpy(W.grad), (2 * h * x * 2.0).sum(0), rtol=1e-12)
    W.grad = None
    out["pair"][1].backward()  # a second output: its own sweep
    np.testing.assert_allclose(gg.to_numpy(W.grad), x.sum(0) * 2.0, rtol=1e-12)
    f(batch, scale=3.0)
    assert f.cache_info().traces == 2  # a static value is part of the signature


def test_compiled_functions_compose_and_build_graphs(numpy_backend):
    W = gg.Variable(np.array([1.0, -2.0]))
    inner = gg.compile(lambda x: gg.tanh(x * W))
    outer = gg.compile(lambda x: gg.sum(inner(x) * inner(2.0 * x)))  # traced through inner
    x = gg.asarray(np.array([0.3, 0.1]))
    loss = outer(x)
    loss.backward()
    h = np.array([0.3, 0.1])
    t1, t2 = np.tanh(h * [1.0, -2.0]), np.tanh(2 * h * [1.0, -2.0])
    np.testing.assert_allclose(float(loss), (t1 * t2).sum(), rtol=1e-12)
    np.testing.assert_allclose(gg.to_numpy(W.grad),
                               (1 - t1**2) * h * t2 + t1 * (1 - t2**2) * 2 * h, rtol=1e-12)
    assert inner.cache_info().misses == 0  # a Symbol argument builds the graph instead
    xs = gg.Placeholder((2,), "float64", name="x")
    np.testing.assert_allclose(gg.to_numpy(gg.sum(inner(xs)).eval({xs: h})), t1.sum(),
                               rtol=1e-12)


def test_no_grad_records_nothing(bk64):
    W = gg.Variable(np.array([1.0, 2.0]))
    f = gg.compile(lambda x: gg.sum(x * W))
    x = gg.asarray(np.array([3.0, 4.0]))
    with gg.no_grad():
        out = f(x)
    assert not out.requires_grad and out._node is None
    assert float(out) == 11.0
    assert f(x).requires_grad
    assert f.cache_info().traces == 2  # grad mode is part of the signature


def test_retain_graph_and_create_graph(bk64):
    W = gg.Variable(np.array([1.0, -1.0]))
    f = gg.compile(lambda x: gg.sum(gg.sin(x * W)))
    x = gg.asarray(np.array([0.5, 2.0]))
    for _ in range(3):  # the traced call, then whole runs
        W.grad = None
        loss = f(x)
        loss.backward(retain_graph=True)
        first = gg.to_numpy(W.grad)
        np.testing.assert_allclose(first, np.cos(gg.to_numpy(x) * [1.0, -1.0]) * [0.5, 2.0],
                                   rtol=1e-12)
        loss.backward()  # the second sweep gives the same again
        np.testing.assert_allclose(gg.to_numpy(W.grad), 2 * first, rtol=1e-12)
    with pytest.raises(gg.GradientError, match="compile"):
        f(x).backward(create_graph=True)


# --- the cache ------------------------------------------------------------------------------

def test_retraces_on_new_shape_or_dtype_not_on_new_values(numpy_backend):
    calls = []

    @gg.compile
    def f(x):
        calls.append(1)
        return gg.sum(x * x)

    rng = np.random.default_rng(0)
    for _ in range(3):
        f(gg.asarray(rng.standard_normal(3)))
    assert len(calls) == 1
    assert f.cache_info() == (2, 1, 1, 32, 0)
    f(gg.asarray(rng.standard_normal(4)))  # another batch size (leading dim): no new trace
    assert len(calls) == 1
    f(gg.asarray(rng.standard_normal((3, 2))))
    f(gg.asarray(rng.standard_normal(3).astype("float32")))
    f(gg.Variable(rng.standard_normal(3)))  # requires_grad is part of the signature
    assert len(calls) == 4
    info = f.cache_info()
    assert (info.hits, info.misses, info.traces) == (3, 4, 4)
    out = f(gg.asarray(np.array([1.0, 2.0, 3.0])))
    assert float(out) == 14.0 and len(calls) == 4


def test_cache_is_bounded(numpy_backend):
    f = gg.compile(lambda x: gg.sum(x), cache_size=3)
    for n in range(1, 7):
        assert float(f(gg.asarray(np.ones((2, n))))) == 2 * n
    assert f.cache_info().traces == 3 and f.cache_info().misses == 6
    f(gg.asarray(np.ones((2, 6))))  # still cached (most recent)
    f(gg.asarray(np.ones((2, 1))))  # dropped earlier: traces again
    assert f.cache_info().misses == 7 and f.cache_info().traces == 3
    f.cache_clear()
    assert f.cache_info().traces == 0
    with pytest.raises(ValueError, match="cache_size"):
        gg.compile(lambda x: x, cache_size=0)


def test_unhashable_static_argument_is_refused(numpy_backend):
    f = gg.compile(lambda x, opts: gg.sum(x))
    with pytest.raises(TypeError, match="hashable"):
        f(gg.asarray(np.ones(2)), {1, 2})


# --- errors ---------------------------------------------------------------------------------

def _branchy(x):
    if gg.sum(x) > 0:  # the line the error names
        return x * 2.0
    return x


@pytest.mark.parametrize("use", [
    lambda x: _branchy(x),
    lambda x: x * float(gg.sum(x)),
    lambda x: x * int(gg.max(x)),
])
def test_control_flow_on_a_traced_value_names_the_line(use, numpy_backend):
    f = gg.compile(use)
    with pytest.raises(TypeError) as info:
        f(gg.asarray(np.array([1.0, 2.0])))
    msg = str(info.value)
    assert "gg.compile" in msg and "gg.where" in msg and "outside the compiled" in msg
    assert "test_compile.py:" in msg
    if use.__code__.co_name == "<lambda>" and "_branchy" in str(use.__code__.co_names):
        assert f"test_compile.py:{_branchy.__code__.co_firstlineno + 1}" in msg


def test_boolean_mask_suggests_where(numpy_backend):
    f = gg.compile(lambda x: gg.sum(x[x > 0.0]))
    with pytest.raises(TypeError, match=r"g(g|pugrad)\.where\("):
        f(gg.asarray(np.array([1.0, -2.0])))
    g = gg.compile(lambda x, m: gg.sum(x[m]))
    with pytest.raises(TypeError, match=r"g(g|pugrad)\.where\("):
        g(gg.asarray(np.array([1.0, -2.0])), gg.asarray(np.array([True, False])))
    h = gg.compile(lambda x: gg.sum(gg.where(x > 0.0, x, 0.0)))  # what to do instead
    assert float(h(gg.asarray(np.array([1.0, -2.0, 3.0])))) == 4.0


def test_len_of_a_known_dimension_works(numpy_backend):
    f = gg.compile(lambda x: gg.sum(x) / float(len(x)))
    assert float(f(gg.asarray(np.array([1.0, 2.0, 6.0])))) == 3.0


def test_static_shapes_allow_len_and_iteration_of_intermediates(numpy_backend):
    """A trace has exact shapes (gpugrad.shapes), so len() and iteration unroll."""
    f = gg.compile(lambda x: [r for r in x * 2.0][1] + x[: len(x * 2.0)])
    out = f(gg.asarray(np.array([1.0, 2.0])))
    np.testing.assert_array_equal(gg.to_numpy(out), [5.0, 6.0])


# --- staleness, aliasing, memory, threads, backends ------------------------------------------

def test_writing_a_saved_input_before_backward_is_caught(bk64):
    W = gg.Variable(np.array([1.0, 2.0]))
    f = gg.compile(lambda x: gg.sum(x * W))
    x = gg.asarray(np.array([3.0, 4.0]))
    f(x).backward()  # the traced run
    loss = f(x)
    with gg.no_grad():
        W -= 1.0  # an in-place write into an array the multiply saved
    with pytest.raises(gg.GradientError, match="modified in place"):
        loss.backward()
    loss = f(x)
    x += 1.0  # the argument, written in place
    with pytest.raises(gg.GradientError, match="modified in place"):
        loss.backward()


def test_host_array_argument_edited_before_backward(numpy_backend):
    """A NumPy argument is the caller's memory: a recorded call copies it, so an edit after
    the call cannot reach the gradient (the eager engine checksums it instead)."""
    W = gg.Variable(np.array([1.0, 2.0]))
    f = gg.compile(lambda x: gg.sum(x * W))
    x = np.array([3.0, 4.0])
    for _ in range(2):
        W.grad = None
        loss = f(x)
        x[:] = [100.0, 100.0]
        loss.backward()
        np.testing.assert_array_equal(gg.to_numpy(W.grad), [3.0, 4.0])
        x[:] = [3.0, 4.0]


def test_a_returned_value_keeps_its_value_across_later_calls(bk64):
    W = gg.Variable(np.array([[1.0, 2.0], [3.0, 4.0]]))
    f = gg.compile(lambda x: gg.sigmoid(x @ W) * 2.0)
    kept = []
    for k in range(5):
        x = gg.asarray(np.full((2, 2), float(k)))
        out = f(x)
        kept.append((gg.to_numpy(out).copy(), out))
    for want, out in kept:
        np.testing.assert_array_equal(gg.to_numpy(out), want)


def test_memory_does_not_grow_over_2000_steps(numpy_backend):
    model = nn.MLP([8, 16, 4], seed=0, dtype="float64")
    opt = optim.SGD(model.parameters(), lr=0.01)
    step = gg.compile(lambda xb, yb: nn.cross_entropy(model(xb), yb))
    rng = np.random.default_rng(0)
    xb = gg.asarray(rng.standard_normal((16, 8)))
    yb = gg.asarray(rng.integers(0, 4, 16))

    def train(n):
        for _ in range(n):
            loss = step(xb, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()

    train(50)
    gc.collect()
    tracemalloc.start()
    try:
        train(200)
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        train(2000)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, f"memory grew by {grown} bytes over 2000 compiled steps"
    assert step.cache_info().traces == 1


@pytest.mark.parametrize("grad", [True, False])
def test_threads_share_one_compiled_function(grad, numpy_backend):
    """Threads switching often, inside the compiled runs too: every result is its own."""
    W = gg.Variable(np.array([0.5, -0.25]))
    f = gg.compile(lambda x: gg.sum(gg.tanh(gg.sigmoid(x * W) * x + W)))
    xs = [np.array([float(i), 1.0 - i]) for i in range(8)]
    bad: list = []

    def want(x):  # the value and d/dx, by hand
        w = np.array([0.5, -0.25])
        s = 1.0 / (1.0 + np.exp(-x * w))
        t = np.tanh(s * x + w)
        return t.sum(), (1.0 - t**2) * (s * (1.0 - s) * w * x + s)

    def work(i):
        try:
            run(i)
        except Exception as e:  # a thread that dies must fail the test, not only warn
            bad.append(("error", i, repr(e)))

    def run(i):
        with gg.use_backend("numpy"):
            value, dx = want(xs[i])
            for _ in range(200):
                x = gg.Variable(xs[i])
                if grad:
                    out = f(x)
                    out.backward()
                    if np.abs(gg.to_numpy(x.grad) - dx).max() > 1e-12:
                        bad.append(("grad", i))
                else:
                    with gg.no_grad():
                        out = f(x)
                if abs(float(out) - value) > 1e-12:
                    bad.append(("value", i))

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert not bad
    assert f.cache_info().traces == 1


def test_float32_backend_without_float64(bk):
    W = gg.Variable(np.array([1.0, -2.0], dtype=bk.float_dtype))
    f = gg.compile(lambda x: gg.sum(gg.sigmoid(x * W)))
    x = gg.asarray(np.array([0.5, 0.25], dtype=bk.float_dtype))
    out = f(x)
    out.backward()
    assert out.dtype == x.dtype and W.grad.dtype == W.dtype
    s = 1.0 / (1.0 + np.exp(-np.array([0.5, -0.5])))
    np.testing.assert_allclose(gg.to_numpy(W.grad), s * (1 - s) * [0.5, 0.25], rtol=1e-5)


def test_the_trace_runs_on_the_arguments_backend():
    """Arrays made on array_api_strict, called with numpy as the current backend: the trace
    and its schedules (the one for argument gradients too) use the arguments' backend."""
    import array_api_strict as strict

    with gg.use_backend("array_api_strict", strict.Device("device1")):
        x = gg.Variable(np.array([0.5, -1.5, 2.0]))
        c = gg.asarray(np.array([1.0, 2.0, 3.0]))
    f = gg.compile(lambda x, c: gg.sum(x * x * c))
    with gg.use_backend("numpy"):
        for _ in range(3):
            x.grad = None
            out = f(x, c)
            out.backward()
            assert out.xp is x.xp and x.grad.device == x.data.device
            np.testing.assert_allclose(gg.to_numpy(x.grad), 2 * np.array([0.5, -1.5, 2.0]) *
                                       [1.0, 2.0, 3.0], rtol=1e-12)
        with gg.no_grad():
            assert float(f(x, c)) == pytest.approx(0.25 + 4.5 + 12.0, rel=1e-12)
