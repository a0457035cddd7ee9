"""The compiler's planned programs (gpugrad/compiler/): whole training steps, every op and
random graphs, memory and threads, each checked against the portable definition (planning,
lowering and rewrites: tests/test_compiler_rewrites.py).

A schedule's first run at an input signature goes step by step through the checked
interpreter (the definition); later runs go through one planned program. So "compiled equals
uncompiled" compares a first run with later runs, and ``minimize(compiled=False)`` with
``minimize()``.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_orders_agree

import gpugrad as gg
from gpugrad import nn, optim

from op_cases import CASES

TOL = {"rtol": 1e-12, "atol": 1e-14}

OPTIMIZERS = {
    "sgd": lambda ps: optim.SGD(ps, lr=0.3),
    "sgd-momentum": lambda ps: optim.SGD(ps, lr=0.3, momentum=0.9, nesterov=True,
                                         weight_decay=0.01),
    "adam": lambda ps: optim.Adam(ps, lr=0.01, weight_decay=0.1),
    "adamw": lambda ps: optim.AdamW(ps, lr=0.01),
}


def _np(a):
    return gg.to_numpy(a)


def _mlp_problem(opt_name, activation="sigmoid", seed=0):
    model = nn.MLP([8, 6, 5, 4], activation=activation, seed=seed, dtype="float64")
    opt = OPTIMIZERS[opt_name](model.parameters())
    xs = gg.Placeholder((None, 8), "float64", name="x")
    ys = gg.Placeholder((None,), "int64", name="y")
    return model, opt, nn.cross_entropy(model(xs), ys), xs, ys


def _data(n=7, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 8)), rng.integers(0, 4, n)


@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
def test_compiled_step_equals_uncompiled_over_5_steps(opt_name, activation, bk64):
    """Losses and parameters after each of 5 steps, with the feeds changing every step and a
    second batch size in the middle (a second signature)."""
    a = _mlp_problem(opt_name, activation)
    b = _mlp_problem(opt_name, activation)
    for step in range(5):
        X, Y = _data(5 if step == 2 else 7, seed=step)
        la = a[1].minimize(a[2], feed={a[3]: X, a[4]: Y})
        lb = b[1].minimize(b[2], feed={b[3]: X, b[4]: Y}, compiled=False)
        assert_orders_agree(_np(la), _np(lb), **TOL)
        for p, q in zip(a[0].parameters(), b[0].parameters()):
            assert_orders_agree(_np(p.data), _np(q.data), **TOL)
    sched = next(iter(a[2]._schedules.values()))
    (prog,) = sched.programs.values()  # one for both batch sizes (7 and 5), planned once,
    assert sched.builds == 1 and prog.frames.made == 2  # with buffers for each size
    if bk64.name == "numpy":
        assert a[1].state_dict()["steps"] == 5
        src = prog.source
        if prog.tier == "numpy":  # (under GPUGRAD_JIT=now: the native tier's program)
            assert "out=B" in src and "] -= ONE_" in src  # planned, cross-entropy lowered


def test_lr_schedule_is_honoured_by_the_compiled_step(numpy_backend):
    """The compiled step reads lr on every call: a StepLR that changes it changes the step."""
    a, b = _mlp_problem("sgd"), _mlp_problem("sgd")
    sa, sb = optim.StepLR(a[1], 1, gamma=0.5), optim.StepLR(b[1], 1, gamma=0.5)
    X, Y = _data()
    for _ in range(4):
        a[1].minimize(a[2], feed={a[3]: X, a[4]: Y})
        b[1].minimize(b[2], feed={b[3]: X, b[4]: Y}, compiled=False)
        sa.step()
        sb.step()
    for p, q in zip(a[0].parameters(), b[0].parameters()):
        assert_orders_agree(p.data, q.data, **TOL)


def test_optimizer_state_dict_round_trip_with_compiled_steps(numpy_backend):
    """Adam's state lives in the optimizer, so save/load between compiled steps works, and a
    loaded state (new arrays) is what the next compiled step updates."""
    a, b = _mlp_problem("adam"), _mlp_problem("adam")
    X, Y = _data()
    for _ in range(3):
        a[1].minimize(a[2], feed={a[3]: X, a[4]: Y})
    sd = a[1].state_dict()
    b[0].load_state_dict(a[0].state_dict())
    b[1].load_state_dict({**sd, "state": [{k: v.copy() for k, v in st.items()}
                                          for st in sd["state"]]})
    for _ in range(2):
        a[1].minimize(a[2], feed={a[3]: X, a[4]: Y})
        b[1].minimize(b[2], feed={b[3]: X, b[4]: Y})
    for p, q in zip(a[0].parameters(), b[0].parameters()):
        assert_orders_agree(p.data, q.data, **TOL)
    assert b[1].state_dict()["steps"] == 5


def test_compiled_step_updates_in_place_and_bumps_versions(numpy_backend):
    model, opt, loss, xs, ys = _mlp_problem("sgd")
    X, Y = _data()
    w = model.parameters()[0]
    before = w.data
    for _ in range(3):
        opt.minimize(loss, feed={xs: X, ys: Y})
    assert w.data is before  # written in place
    assert w.version == 3


def test_staleness_is_still_caught(numpy_backend):
    """An eager graph that saved a parameter before a compiled step refuses to backward."""
    model, opt, loss, xs, ys = _mlp_problem("sgd")
    X, Y = _data()
    opt.minimize(loss, feed={xs: X, ys: Y})
    opt.minimize(loss, feed={xs: X, ys: Y})  # compiled from here on
    eager = gg.sum(model(gg.asarray(X)) ** 2)
    opt.minimize(loss, feed={xs: X, ys: Y})
    with pytest.raises(gg.GradientError, match="modified|version|written"):
        eager.backward()


def test_gg_minimize_is_compiled_and_honours_a_new_lr(numpy_backend):
    x = gg.Placeholder((None, 2), "float64", name="x")
    w = gg.Variable(np.array([1.0, -2.0]))
    v = np.array([1.0, -2.0])
    loss = gg.sum((x * w) ** 2)
    X = np.array([[1.0, 2.0], [0.5, -1.0]])
    for lr in (0.1, 0.1, 0.05, 0.2):
        value = gg.minimize(loss, [w], lr=lr, feed={x: X})
        expect = np.sum((X * v) ** 2)
        v = v - lr * np.sum(2 * X * X * v, axis=0)
        assert float(value) == pytest.approx(expect, rel=1e-12)
        assert_orders_agree(w.data, v, **TOL)


def test_returned_values_are_never_overwritten(bk64):
    """A loss, gradients and eval results held across later runs keep their values."""
    model, opt, loss, xs, ys = _mlp_problem("adam")
    params = model.parameters()
    held = []
    for step in range(4):
        X, Y = _data(seed=step)
        value, grads = gg.value_and_gradients(loss, params, feed={xs: X, ys: Y})
        ev = loss.eval(feed={xs: X, ys: Y})
        held.append((value, grads, ev, _np(value).copy(), [_np(g).copy() for g in grads],
                     _np(ev).copy()))
        opt.minimize(loss, feed={xs: X, ys: Y})
    for value, grads, ev, v0, g0, e0 in held:
        np.testing.assert_array_equal(_np(value), v0)
        np.testing.assert_array_equal(_np(ev), e0)
        for g, g_ in zip(grads, g0):
            np.testing.assert_array_equal(_np(g), g_)
    a, b = held[0][1], held[1][1]
    assert all(x is not y for x, y in zip(a, b))


def _graph_of(case, rng, bk):
    hosts = case.hosts(rng, bk)
    phs = [gg.Placeholder(h.shape, "float64" if h.dtype.kind == "f" else h.dtype)
           for h in hosts]
    try:
        out = case.fn(*phs)
    except (TypeError, AttributeError, ValueError):  # an op that needs concrete inputs
        return None
    feed = dict(zip(phs, hosts))
    floats = [p for p, h in zip(phs, hosts) if h.dtype.kind == "f"]
    return out, feed, floats


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_every_op_planned_equals_portable(case, bk64, rng):
    """For every op of the case table: value and gradients of ``sum(out * out)`` from the
    planned program equal the first, step-by-step run, and repeat runs agree."""
    built = _graph_of(case, rng, bk64)
    if built is None:
        pytest.skip("the case's call needs concrete inputs")
    out, feed, floats = built
    try:
        first = _np(out.eval(feed=feed))
    except (TypeError, AttributeError, ValueError) as exc:
        # the graph front end's own first run (the interpreter) refused it: nothing planned
        assert not any(s.programs for s in out._schedules.values())
        pytest.skip(f"the graph front end does not run this case: {exc}")
    for _ in range(2):
        assert_orders_agree(_np(out.eval(feed=feed)), first, **TOL)
    if not (case.differentiable and floats and first.dtype.kind == "f"):
        return
    loss = gg.sum(out * out)
    v0, g0 = gg.value_and_gradients(loss, floats, feed=feed)
    for _ in range(2):
        v1, g1 = gg.value_and_gradients(loss, floats, feed=feed)
        assert_orders_agree(_np(v1), _np(v0), **TOL)
        for a, b in zip(g1, g0):
            assert_orders_agree(_np(a), _np(b), **TOL)


def test_no_growth_over_2000_compiled_steps(numpy_backend):
    from test_memory import _grown

    model, opt, loss, xs, ys = _mlp_problem("adam")
    X, Y = _data()
    feed = {xs: X, ys: Y}
    grown = _grown(lambda: opt.minimize(loss, feed=feed), 200, 2_000)
    assert grown < 32_768, f"compiled steps grew by {grown} bytes over 2,000 steps"


def _fuzz_test():
    pytest.importorskip("hypothesis")
    from hypothesis import HealthCheck, assume, given, note, settings
    from hypothesis import strategies as st
    from test_fuzz import _loss, programs

    @settings(max_examples=120, derandomize=True, database=None, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                     HealthCheck.data_too_large])
    @given(case=programs(), backend=st.sampled_from(["numpy", "numpy", "array_api_strict"]))
    def test(case, backend):
        prog, outputs, weights = case
        note(repr(prog))
        hosts = prog.values[:prog.n_inputs]
        with gg.use_backend(backend):
            phs = [gg.Placeholder(h.shape, "float64") for h in hosts]
            try:
                loss = _loss(prog, outputs, weights)(*phs)
            except (TypeError, AttributeError, ValueError, IndexError):
                assume(False)  # an op the graph front end cannot build from Placeholders
            feed = dict(zip(phs, hosts))
            try:
                v0, g0 = gg.value_and_gradients(loss, phs, feed=feed)
            except (TypeError, AttributeError, ValueError, IndexError):
                assert not any(s.programs for s in loss._schedules.values())
                assume(False)
            for _ in range(2):  # the planned program, twice (its buffers are reused)
                v1, g1 = gg.value_and_gradients(loss, phs, feed=feed)
                assert_orders_agree(_np(v1), _np(v0), **TOL)
                for a, b in zip(g1, g0):
                    assert_orders_agree(_np(a), _np(b), **TOL)
            assert any(s.programs for s in loss._schedules.values())
    return test


test_random_graphs_planned_equal_portable = _fuzz_test()


def test_a_busy_program_lets_another_thread_run_generically(numpy_backend):
    import threading

    x = gg.Placeholder((None, 4), "float64", name="x")
    W = gg.Variable(np.random.default_rng(0).standard_normal((4, 4)))
    loss = gg.sum(gg.sigmoid(x @ W) * (x @ W))
    X = np.random.default_rng(1).standard_normal((5, 4))
    want = gg.gradients(loss, [W], feed={x: X})[0]
    sched = loss._schedules[((W,), np)]
    gg.gradients(loss, [W], feed={x: X})
    (prog,) = sched.programs.values()
    with prog.busy:  # as if another thread were inside it
        got = gg.gradients(loss, [W], feed={x: X})[0]
    assert_orders_agree(got, want, **TOL)
    results = []

    def worker():
        for _ in range(50):
            results.append(gg.gradients(loss, [W], feed={x: X})[0])
    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        assert_orders_agree(r, want, **TOL)


def test_a_replaced_apply_is_honoured_by_the_compiled_step(numpy_backend):
    """A wrapper that replaces an optimizer's ``_apply`` (to average gradients, say) still
    sees every compiled step's gradients, equal to the uncompiled ones."""
    seen = {"compiled": [], "plain": []}
    probs = {}
    for mode in seen:
        model, opt, loss, xs, ys = probs[mode] = _mlp_problem("sgd")
        inner = opt._apply

        def wrapped(pairs, inner=inner, mode=mode):
            seen[mode].append([np.array(g) for _, g in pairs])
            inner(pairs)
        opt._apply = wrapped
    X, Y = _data()
    for _ in range(3):
        a, b = probs["compiled"], probs["plain"]
        a[1].minimize(a[2], feed={a[3]: X, a[4]: Y})
        b[1].minimize(b[2], feed={b[3]: X, b[4]: Y}, compiled=False)
    assert len(seen["compiled"]) == 3
    for ga, gb in zip(seen["compiled"], seen["plain"]):
        for x, y in zip(ga, gb):
            assert_orders_agree(x, y, **TOL)
