"""The eager ``opt.step()`` on NumPy parameters (gpugrad.optim_in_place): the in-place code
generated from each optimizer's declared formula gives exactly the numbers of its portable
``update()``, writes into the parameter's own array, bumps each version once, and hands
back to ``update()`` whatever it cannot take (another subclass's rule, complex values, a
gradient of another dtype, a second thread)."""

from __future__ import annotations

import copy
import pickle
import threading

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import optim
from gpugrad.optim_in_place import Scratch

CONFIGS = {
    "sgd": lambda ps: optim.SGD(ps, lr=0.1),
    "sgd-momentum": lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
    "sgd-nesterov-decay": lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True,
                                               weight_decay=0.01),
    "sgd-decay": lambda ps: optim.SGD(ps, lr=0.05, weight_decay=0.1),
    "adam": lambda ps: optim.Adam(ps, lr=0.01),
    "adam-l2": lambda ps: optim.Adam(ps, lr=0.01, betas=(0.8, 0.99), weight_decay=0.1),
    "adamw": lambda ps: optim.AdamW(ps, lr=0.01),
    "rmsprop": lambda ps: optim.RMSprop(ps, lr=0.01),
    "rmsprop-all": lambda ps: optim.RMSprop(ps, lr=0.01, alpha=0.9, weight_decay=0.1,
                                            momentum=0.5, centered=True),
    "adagrad": lambda ps: optim.Adagrad(ps, lr=0.1),
    "adagrad-all": lambda ps: optim.Adagrad(ps, lr=0.1, lr_decay=0.1, weight_decay=0.1,
                                            initial_accumulator_value=0.5),
}

SHAPES = [(4, 3), (3,), (2, 2, 2), ()]


def _params(dtype: str) -> list:
    rng = np.random.default_rng(0)
    return [gg.Variable(rng.standard_normal(s).astype(dtype), name=f"p{i}")
            for i, s in enumerate(SHAPES)]


def _grads(step: int, dtype: str) -> list:
    rng = np.random.default_rng(100 + step)
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


def _portable(opt: optim.Optimizer) -> optim.Optimizer:
    """The same optimizer, stepping with ``update()`` (an instance-level ``update`` is one
    that the declared formula cannot stand for)."""
    opt.update = opt.update
    return opt


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_in_place_step_equals_the_portable_update(name, dtype, numpy_backend):
    a, b = _params(dtype), _params(dtype)
    oa, ob = CONFIGS[name](a), _portable(CONFIGS[name](b))
    sa, sb = optim.StepLR(oa, 2, gamma=0.5), optim.StepLR(ob, 2, gamma=0.5)
    arrays = [p.data for p in a]
    for step in range(6):
        for p, q, g in zip(a, b, _grads(step, dtype)):
            p.grad, q.grad = g.copy(), g.copy()
        oa.step()
        ob.step()
        sa.step()  # lr changes every other step: the in-place form reads it every step
        sb.step()
    assert "_scratch" in vars(oa) and "_scratch" not in vars(ob)  # two different paths
    for p, q, arr in zip(a, b, arrays):
        assert p.data is arr  # written into the parameter's own array
        assert p.data.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(p.data, q.data)
        assert p.version == q.version == 6
        assert set(oa.state[p]) == set(ob.state[q])
        for k in oa.state[p]:
            np.testing.assert_array_equal(oa.state[p][k], ob.state[q][k])
        assert oa.param_steps.get(p) == ob.param_steps.get(q)
    assert not np.array_equal(a[0].data, _params(dtype)[0].data)


def test_sgd_step_by_hand(numpy_backend):
    """Plain SGD, momentum and weight decay against the formulas written out."""
    w = gg.Variable(np.array([1.0, -2.0, 0.5]))
    g = np.array([0.5, 0.25, -1.0])
    opt = optim.SGD([w], lr=0.1, momentum=0.5, weight_decay=0.2)
    buf = None
    want = np.array([1.0, -2.0, 0.5])
    for _ in range(3):
        w.grad = g.copy()
        opt.step()
        d = g + 0.2 * want
        buf = d.copy() if buf is None else 0.5 * buf + d
        want = want - 0.1 * buf
        np.testing.assert_allclose(w.data, want, rtol=1e-15, atol=0)


def test_a_subclass_that_overrides_update_runs_its_own(numpy_backend):
    class Clipped(optim.SGD):
        def update(self, p, g, state):
            super().update(p, np.clip(g, -0.1, 0.1), state)

    w = gg.Variable(np.array([1.0, 1.0]))
    opt = Clipped([w], lr=1.0)
    w.grad = np.array([5.0, -0.05])
    opt.step()
    np.testing.assert_array_equal(w.data, [0.9, 1.05])
    assert w.version == 1

    class Mine(optim.SGD):  # a formula of its own: its generated in-place code runs
        @staticmethod
        def formula(x, o, c, p, g, s):
            return {"p": p - c.lr * (g + g)}

    v = gg.Variable(np.array([1.0, 2.0]))
    before = v.data
    mine = Mine([v], lr=1.0)
    v.grad = np.array([0.5, 0.5])
    mine.step()
    assert v.data is before and "_scratch" in vars(mine)
    np.testing.assert_array_equal(v.data, [0.0, 1.0])


def test_pairs_it_cannot_take_go_through_update(numpy_backend):
    """Complex parameters and a gradient of another dtype than its parameter's use the
    portable update; the real ones beside them still update in place."""
    r = gg.Variable(np.array([1.0, 2.0]))
    c = gg.Variable(np.array([1.0 + 1.0j, -1.0j]))
    f = gg.Variable(np.array([1.0, 1.0]))
    opt = optim.SGD([r, c, f], lr=0.5)
    before = r.data
    r.grad = np.array([1.0, 1.0])
    c.grad = np.array([2.0 - 2.0j, 1.0j])
    f.grad = np.array([0.25, 0.5], dtype=np.float32)
    opt.step()
    assert r.data is before
    np.testing.assert_array_equal(r.data, [0.5, 1.5])
    np.testing.assert_array_equal(c.data, [0.0 + 2.0j, -1.5j])
    np.testing.assert_array_equal(f.data, [0.875, 0.75])
    assert f.data.dtype == np.float64
    assert r.version == c.version == f.version == 1


def test_a_busy_scratch_falls_back_to_update(numpy_backend):
    """While another thread holds the optimizer's scratch, a step runs update() instead."""
    w = gg.Variable(np.array([1.0, 2.0]))
    opt = optim.SGD([w], lr=0.5)
    w.grad = np.array([1.0, 1.0])
    opt.step()
    scratch = opt._scratch
    held = next(iter(scratch.views.values()))[1][0].copy()
    assert scratch.busy.acquire(False)
    try:
        w.grad = np.array([2.0, -2.0])
        opt.step()
    finally:
        scratch.busy.release()
    np.testing.assert_array_equal(w.data, [-0.5, 2.5])
    np.testing.assert_array_equal(next(iter(scratch.views.values()))[1][0], held)  # untouched
    assert w.version == 2


def test_threads_stepping_one_optimizer_lose_no_update(numpy_backend):
    w = gg.Variable(np.zeros(16))
    opt = optim.SGD([w], lr=0.25)
    g = np.full(16, 1.0)
    n, k = 4, 200

    def work():
        for _ in range(k):
            opt._apply([(w, g)])

    threads = [threading.Thread(target=work) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    np.testing.assert_array_equal(w.data, np.full(16, -0.25 * n * k))
    assert w.version == n * k


def test_pickle_and_copies_start_with_an_empty_scratch(numpy_backend):
    w = gg.Variable(np.array([1.0, 2.0, 3.0]))
    opt = optim.Adam([w], lr=0.1)
    w.grad = np.array([1.0, -1.0, 0.5])
    opt.step()
    for other in (pickle.loads(pickle.dumps(opt)), copy.deepcopy(opt)):
        assert isinstance(other._scratch, Scratch) and not other._scratch.bases
        q = other.params[0]
        np.testing.assert_array_equal(q.data, w.data)
        q.grad = np.array([0.5, 0.5, 0.5])
        other.step()
        assert other.param_steps[q] == 2
    assert opt._scratch.bases  # the original keeps its own


def test_scratch_grows_with_a_larger_parameter(numpy_backend):
    """A parameter rebound to a larger array gets a scratch of its new size."""
    w = gg.Variable(np.ones(2))
    opt = optim.SGD([w], lr=1.0)
    w.grad = np.ones(2)
    opt.step()
    w.data = np.ones((3, 4))
    w.grad = np.full((3, 4), 0.5)
    opt.step()
    np.testing.assert_array_equal(w.data, np.full((3, 4), 0.5))
    assert opt._scratch.bases[np.dtype("float64")].size == 12


def test_a_graph_saved_before_the_step_refuses_to_backward(numpy_backend):
    w = gg.Variable(np.array([1.0, 2.0]))
    opt = optim.SGD([w], lr=0.1)
    y = gg.sum(w * w)
    z = gg.sum(w ** 3)
    y.backward()
    opt.step()
    with pytest.raises(gg.GradientError, match="SGD step called at test_optim_in_place.py"):
        z.backward()


def test_distributed_optimizer_steps_in_place(numpy_backend):
    w = gg.Variable(np.array([1.0, 2.0]))
    before = w.data
    opt = gg.distributed.DistributedOptimizer(optim.SGD([w], lr=0.5))
    w.grad = np.array([2.0, 2.0])
    opt.step()
    assert w.data is before
    np.testing.assert_array_equal(w.data, [0.0, 1.0])
    assert w.version == 1


def test_under_an_error_state_that_raises_on_underflow(numpy_backend):
    """Tiny Adam moments underflow quietly even inside np.errstate(under="raise"), and the
    next step outside it still runs."""
    w = gg.Variable(np.array([1.0, 1.0]))
    opt = optim.Adam([w], lr=0.1)
    with np.errstate(under="raise"):
        w.grad = np.array([1e-300, 1.0])
        opt.step()
        w.grad = np.array([1e-300, 1.0])
        opt.step()
    w.grad = np.array([1e-300, 1.0])
    opt.step()
    assert np.all(np.isfinite(w.data)) and opt.param_steps[w] == 3


def _reference_step(ref: optim.Optimizer, grads: list) -> None:
    for q, g in zip(ref.params, grads):
        q.grad = None if g is None else g.copy()
    ref.step()


def test_each_step_follows_every_change(numpy_backend):
    """A missing gradient, a rebound array or a gradient of another dtype: each step takes
    the path that fits each parameter, and gives the portable update's numbers."""
    a, b = _params("float64"), _params("float64")
    opt, ref = optim.SGD(a, lr=0.1, momentum=0.9), _portable(optim.SGD(b, lr=0.1, momentum=0.9))
    for step in range(8):
        grads = _grads(step, "float64")
        if step == 2:  # a parameter without a gradient is skipped
            grads[1] = None
        if step == 4:  # a rebound parameter array
            a[0].data = a[0].data.copy()
            b[0].data = b[0].data.copy()
        for p, g in zip(a, grads):
            p.grad = None if g is None else g.copy()
        if step == 5:  # a float32 gradient of a float64 parameter: the portable update
            a[2].grad = a[2].grad.astype("float32")
            grads[2] = a[2].grad
        opt.step()
        _reference_step(ref, grads)
        for p, q in zip(a, b):
            np.testing.assert_array_equal(p.data, q.data)
            np.testing.assert_array_equal(opt.state[p]["momentum"], ref.state[q]["momentum"])
    assert opt.steps == ref.steps == 8
    assert [p.version for p in a] == [q.version for q in b] == [8, 7, 8, 8]


def test_a_graph_saved_before_a_second_step_refuses_to_backward(numpy_backend):
    w = gg.Variable(np.array([1.0, 2.0]))
    opt = optim.SGD([w], lr=0.1)
    w.grad = np.array([1.0, 1.0])
    opt.step()
    z = gg.sum(w ** 3)
    w.grad = np.array([1.0, 1.0])
    opt.step()
    assert w.version == 2
    with pytest.raises(gg.GradientError, match="SGD step called at test_optim_in_place.py"):
        z.backward()


@pytest.mark.parametrize("planned", [False, True])
def test_a_step_that_fails_part_way_records_the_writes_it_made(planned, numpy_backend,
                                                             monkeypatch):
    """An overflow that np.errstate turns into an error stops the step at the second
    parameter, planned or not: the first one was updated and its version says so. (The
    native tier's kernel writes every parameter first: tests/test_native_step.py.)"""
    monkeypatch.setenv("GPUGRAD_JIT", "0")
    w, u = gg.Variable(np.array([1.0])), gg.Variable(np.array([1.0]))
    opt = optim.SGD([w, u], lr=10.0)
    if planned:
        w.grad, u.grad = np.array([1.0]), np.array([1.0])
        opt.step()
    before = (w.version, u.version)
    w.grad, u.grad = np.array([1.0]), np.array([1e308])
    with np.errstate(over="raise"), pytest.raises(FloatingPointError):
        opt.step()
    assert (w.version, u.version) == (before[0] + 1, before[1])
    np.testing.assert_array_equal(w.data, [-9.0 - 10.0 * planned])


def test_a_repeated_step_redoes_the_last_plan_and_sees_what_changed(numpy_backend, monkeypatch):
    """From the second step on, opt.step() takes the short way (the last step's plan); a new
    lr, a missing gradient or a rebound array sends it back to the general loop, with the
    same numbers as an optimizer that never had a plan."""
    from gpugrad import optim_in_place

    taken = []
    real = optim_in_place.step_planned

    def spy(opt):
        taken.append(real(opt))
        return taken[-1]

    monkeypatch.setattr(optim, "step_planned", spy)
    a, b = gg.Variable(np.array([1.0, 2.0])), gg.Variable(np.array([3.0]))
    ref_a, ref_b = gg.Variable(a.data.copy()), gg.Variable(b.data.copy())
    opt, ref = optim.Adam([a, b], lr=0.1), optim.Adam([ref_a, ref_b], lr=0.1)
    grads = [np.array([0.5, -1.0]), np.array([2.0])]

    def both(ga, gb):
        a.grad, b.grad, ref_a.grad, ref_b.grad = ga, gb, ga, gb
        opt.step()
        ref._apply([(p, q.grad) for p, q in ((ref_a, a), (ref_b, b)) if q.grad is not None])

    both(*grads)
    both(*grads)
    opt.lr = ref.lr = 0.01  # a schedule's change is read on the short way too
    both(*grads)
    both(grads[0], None)  # b has no gradient: the general loop
    both(*grads)
    assert taken == [False, True, True, False, False]
    both(*grads)
    assert taken[-1] is True
    for p, q in ((a, ref_a), (b, ref_b)):
        np.testing.assert_array_equal(p.data, q.data)
        assert p.version == q.version


def test_an_error_in_a_graph_step_s_update_is_not_stepped_twice(numpy_backend):
    """An overflow that np.errstate turns into an error in a planned graph step's update
    (not its forward): the error reaches the user, the parameters written before it stay
    written once (no second, generic run of the step) and the writes are recorded."""
    w, u = gg.Variable(np.array([1.0])), gg.Variable(np.array([1e-300]))
    opt = optim.SGD([w, u], lr=1e10, momentum=0.5)
    x, y = gg.Placeholder((1,), "float64"), gg.Placeholder((1,), "float64")
    loss = gg.sum(w * x) + gg.sum(u * y)
    for _ in range(3):  # the program is planned; u's gradient is 0
        opt.minimize(loss, feed={x: np.ones(1), y: np.zeros(1)})
    before, w_before = (w.version, u.version), float(w.data[0])
    with np.errstate(over="raise"), pytest.raises(FloatingPointError):
        opt.minimize(loss, feed={x: np.ones(1), y: np.array([1e300])})  # 1e10 * 1e300
    assert w_before - float(w.data[0]) == 1e10 * 1.875  # one step (velocity 1.875)
    assert w.version == before[0] + 1 and u.version == before[1] + 1


@pytest.mark.parametrize("jit", ["0", "now"])
@pytest.mark.parametrize("change", [{"momentum": 0.9}, {"weight_decay": 0.1},
                                    {"momentum": 0.9, "nesterov": True}])
def test_a_planned_sgd_step_follows_options_turned_on_between_steps(jit, change, numpy_backend,
                                                                    monkeypatch, tmp_path):
    """Plain SGD's planned step folds the learning rate into its backward (``p - g``, the
    backward seeded with ``lr``); momentum or a weight decay turned on later must not be
    ignored: the step is planned again, and the parameters are the eager steps' (they
    differed by up to 0.01 after six steps before)."""
    if jit == "now":
        pytest.importorskip("numba")
        monkeypatch.setenv("GPUGRAD_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("GPUGRAD_JIT", jit)
    X = np.array([1.0, 0.5, 2.0])
    ws = [gg.Variable(np.array([1.0, 2.0, 3.0])) for _ in range(2)]
    x = gg.Placeholder((3,), "float64", name="x")
    loss = gg.sum(ws[0] * ws[0] * x)
    opts = [optim.SGD([w], lr=0.1) for w in ws]
    for step in range(7):
        if step == 3:
            for o in opts:
                for k, v in change.items():
                    setattr(o, k, v)
        opts[0].minimize(loss, feed={x: X})  # planned from the second step on
        opts[1].zero_grad()
        gg.sum(ws[1] * ws[1] * gg.asarray(X)).backward()
        opts[1].step()
        np.testing.assert_allclose(ws[0].data, ws[1].data, rtol=1e-14, atol=1e-15)
