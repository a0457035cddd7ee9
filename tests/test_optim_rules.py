"""Every optimizer, each option combination, in every front end, against its update written
out by hand (float64, a few steps): the eager step (in place on NumPy, the generated kernel
on CuPy, the portable formula on array_api_strict), the portable ``update`` on NumPy, graph
``opt.minimize`` (compiled and not), ``gg.compile`` + backward + step, and
DistributedOptimizer in a group of one. The hand formulas follow the algorithms in
PyTorch's documentation (RMSprop: eps after the square root, centered uses v - g_avg**2;
Adagrad: clr = lr / (1 + (t - 1) * lr_decay))."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import optim
from gpugrad.optim_rule import form

SHAPES = [(3, 4), (5,)]
STEPS = 4


def _sgd(lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0):
    def step(p, g, st, t):
        d = g + weight_decay * p
        if momentum:
            st["b"] = d if t == 1 else momentum * st["b"] + d
            d = d + momentum * st["b"] if nesterov else st["b"]
        return p - lr * d
    return step


def _adam(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
    b1, b2 = betas

    def step(p, g, st, t):
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        st["m"] = b1 * st.get("m", 0.0) + (1 - b1) * g
        st["v"] = b2 * st.get("v", 0.0) + (1 - b2) * g * g
        m_hat = st["m"] / (1 - b1**t)
        v_hat = st["v"] / (1 - b2**t)
        return p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return step


def _rmsprop(lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
             centered=False):
    def step(p, g, st, t):
        g = g + weight_decay * p
        st["v"] = alpha * st.get("v", 0.0) + (1 - alpha) * g * g
        v = st["v"]
        if centered:
            st["ga"] = alpha * st.get("ga", 0.0) + (1 - alpha) * g
            v = v - st["ga"] ** 2
        if momentum > 0:
            st["b"] = momentum * st.get("b", 0.0) + g / (np.sqrt(v) + eps)
            return p - lr * st["b"]
        return p - lr * g / (np.sqrt(v) + eps)
    return step


def _adagrad(lr=0.01, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
             eps=1e-10):
    def step(p, g, st, t):
        clr = lr / (1 + (t - 1) * lr_decay)
        g = g + weight_decay * p
        st["sum"] = st.get("sum", initial_accumulator_value) + g * g
        return p - clr * g / (np.sqrt(st["sum"]) + eps)
    return step


def _cases() -> dict:
    cases = {
        "sgd": {"lr": 0.1},
        "sgd-decay": {"lr": 0.1, "weight_decay": 0.1},
        "sgd-momentum": {"lr": 0.1, "momentum": 0.9},
        "sgd-nesterov-decay": {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.1},
        "adam": {"lr": 0.05},
        "adam-decay": {"lr": 0.05, "betas": (0.8, 0.99), "weight_decay": 0.1},
        "adamw": {"lr": 0.05},
    }
    cases = {k: (k.split("-")[0], kw) for k, kw in cases.items()}
    for wd in (0.0, 0.1):
        for mom in (0.0, 0.5):
            for centered in (False, True):
                kw = {"lr": 0.01, "weight_decay": wd, "momentum": mom, "centered": centered}
                cases[f"rmsprop-wd{wd}-mom{mom}-c{int(centered)}"] = ("rmsprop", kw)
    cases["rmsprop-defaults"] = ("rmsprop", {})
    cases["rmsprop-alpha-eps"] = ("rmsprop", {"lr": 0.02, "alpha": 0.5, "eps": 0.1})
    for decay in (0.0, 0.1):
        for wd in (0.0, 0.1):
            for init in (0.0, 0.5):
                kw = {"lr": 0.1, "lr_decay": decay, "weight_decay": wd,
                          "initial_accumulator_value": init}
                cases[f"adagrad-d{decay}-wd{wd}-i{init}"] = ("adagrad", kw)
    cases["adagrad-defaults"] = ("adagrad", {})
    cases["adagrad-eps"] = ("adagrad", {"lr": 0.1, "eps": 0.5})
    return cases


CASES = _cases()
MAKE = {"sgd": optim.SGD, "adam": optim.Adam, "adamw": optim.AdamW,
        "rmsprop": optim.RMSprop, "adagrad": optim.Adagrad}
HAND = {"sgd": _sgd, "adam": _adam, "adamw": lambda **kw: _adam(
    **{"weight_decay": 1e-2, **kw}, decoupled=True), "rmsprop": _rmsprop, "adagrad": _adagrad}


def _start() -> list:
    rng = np.random.default_rng(0)
    return [rng.standard_normal(s) for s in SHAPES]


def _grads(step: int) -> list:
    rng = np.random.default_rng(100 + step)
    return [rng.standard_normal(s) for s in SHAPES]


def _by_hand(name: str) -> list:
    kind, kw = CASES[name]
    ps = _start()
    states = [{} for _ in ps]
    for t in range(1, STEPS + 1):
        step = HAND[kind](**kw)
        ps = [step(p, g, st, t) for p, g, st in zip(ps, _grads(t - 1), states)]
    return ps


def _check(name: str, params: list) -> None:
    for got, want in zip(params, _by_hand(name)):
        got = gg.to_numpy(got.data if isinstance(got, gg.Tensor) else got)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
        assert not np.allclose(got, _start()[0] if got.shape == SHAPES[0] else _start()[1])


def _make(name: str, ps: list) -> optim.Optimizer:
    kind, kw = CASES[name]
    return MAKE[kind](ps, **kw)


@pytest.mark.parametrize("name", list(CASES))
def test_eager_step(name, bk64):
    """In place on NumPy, the generated kernel on CuPy, the portable formula elsewhere."""
    ps = [gg.Variable(gg.asarray(a)) for a in _start()]
    opt = _make(name, ps)
    for t in range(STEPS):
        for p, g in zip(ps, _grads(t)):
            p.grad = gg.asarray(g).data
        opt.step()
    _check(name, ps)
    assert all(p.version == STEPS for p in ps)


@pytest.mark.parametrize("name", list(CASES))
def test_portable_update_equals_the_in_place_step_bit_for_bit(name, numpy_backend):
    a = [gg.Variable(x) for x in _start()]
    b = [gg.Variable(x) for x in _start()]
    fast, slow = _make(name, a), _make(name, b)
    slow.update = slow.update  # an instance-level update: the generic path
    arrays = [p.data for p in a]
    for t in range(STEPS):
        for p, q, g in zip(a, b, _grads(t)):
            p.grad, q.grad = g.copy(), g.copy()
        fast.step()
        slow.step()
    assert "_scratch" in vars(fast) and "_scratch" not in vars(slow)
    for p, q, arr in zip(a, b, arrays):
        assert p.data is arr
        np.testing.assert_array_equal(p.data, q.data)
        assert set(fast.state[p]) == set(slow.state[q])
        for k in fast.state[p]:
            np.testing.assert_array_equal(fast.state[p][k], slow.state[q][k])
    _check(name, a)


def _graph_loss(ps: list) -> tuple:
    cs = [gg.Placeholder(s, "float64", name=f"c{i}") for i, s in enumerate(SHAPES)]
    loss = gg.sum(ps[0] * cs[0]) + gg.sum(ps[1] * cs[1])  # gradient: the fed c
    return cs, loss


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "uncompiled"])
@pytest.mark.parametrize("name", list(CASES))
def test_graph_minimize(name, compiled, numpy_backend):
    ps = [gg.Variable(x) for x in _start()]
    opt = _make(name, ps)
    cs, loss = _graph_loss(ps)
    for t in range(STEPS):
        opt.minimize(loss, feed=dict(zip(cs, _grads(t))), compiled=compiled)
    _check(name, ps)
    assert opt.steps == STEPS


@pytest.mark.parametrize("name", list(CASES))
def test_compile_backward_step(name, numpy_backend):
    ps = [gg.Variable(x) for x in _start()]
    opt = _make(name, ps)
    f = gg.compile(lambda c0, c1: gg.sum(ps[0] * c0) + gg.sum(ps[1] * c1))
    for t in range(STEPS):
        opt.zero_grad()
        f(*(gg.asarray(g) for g in _grads(t))).backward()
        opt.step()
    _check(name, ps)


@pytest.mark.parametrize("name", list(CASES))
def test_distributed_optimizer_of_one(name, numpy_backend):
    ps = [gg.Variable(x) for x in _start()]
    opt = gg.distributed.DistributedOptimizer(_make(name, ps))
    cs, loss = _graph_loss(ps)
    for t in range(STEPS):
        if t % 2:
            opt.minimize(loss, feed=dict(zip(cs, _grads(t))))
        else:
            for p, g in zip(ps, _grads(t)):
                p.grad = g
            opt.step()
    _check(name, ps)


@pytest.mark.parametrize("name", ["adam-decay", "rmsprop-wd0.1-mom0.5-c1",
                                  "adagrad-d0.1-wd0.1-i0.5", "sgd-nesterov-decay"])
def test_complex_parameters_are_two_real_ones(name, bk64):
    """A complex parameter updates as its real and imaginary parts would, each as a real
    parameter (PyTorch's view_as_real); the initial accumulator fills the real part only
    (PyTorch's full_like of a complex parameter)."""
    kind, kw = CASES[name]
    rng = np.random.default_rng(3)
    z0 = rng.standard_normal(6) + 1j * rng.standard_normal(6)
    gs = [rng.standard_normal(6) + 1j * rng.standard_normal(6) for _ in range(STEPS)]
    w = gg.Variable(gg.asarray(z0))
    opt = MAKE[kind]([w], **kw)
    for g in gs:
        w.grad = gg.asarray(g).data
        opt.step()
    re, im = z0.real, z0.imag
    st_re, st_im = {}, {}
    if kind == "adagrad":
        st_im["sum"] = 0.0
    for t, g in enumerate(gs, 1):
        step = HAND[kind](**kw)
        re, im = step(re, g.real, st_re, t), step(im, g.imag, st_im, t)
    np.testing.assert_allclose(gg.to_numpy(w.data), re + 1j * im, rtol=1e-12, atol=1e-14)


def test_each_derived_form_names_its_state_and_scratch():
    """The traced formula gives the state names (PyTorch's), the scratch count of the
    in-place code, and which update may fold ``lr`` into backward's seed."""
    def names(cls, **opts):
        return form(cls.formula, tuple(sorted(opts.items())), False).names

    assert names(optim.RMSprop, decay=False, momentum=False, centered=False) == ("square_avg",)
    assert names(optim.RMSprop, decay=True, momentum=True, centered=True) == (
        "square_avg", "grad_avg", "momentum_buffer")
    assert names(optim.Adagrad, decay=False) == ("sum",)
    w = gg.Variable(np.zeros(2))
    assert optim.SGD([w], lr=0.1).lowering().fold_lr
    assert not optim.SGD([w], lr=0.1, weight_decay=0.1).lowering().fold_lr
    assert not optim.Adagrad([w]).lowering().fold_lr
    assert optim.Adagrad([w]).lowering().temps == 1


def test_defaults_follow_pytorch():
    w = gg.Variable(np.zeros(2))
    r = optim.RMSprop([w])
    assert (r.lr, r.alpha, r.eps, r.weight_decay, r.momentum, r.centered) == (
        0.01, 0.99, 1e-8, 0.0, 0.0, False)
    a = optim.Adagrad([w])
    assert (a.lr, a.lr_decay, a.weight_decay, a.initial_accumulator_value, a.eps) == (
        0.01, 0.0, 0.0, 0.0, 1e-10)
    assert optim.OPTIMIZERS["rmsprop"] is optim.RMSprop is gg.optim.RMSprop
    assert optim.OPTIMIZERS["adagrad"] is optim.Adagrad is gg.optim.Adagrad
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        optim.RMSprop([w], alpha=-1.0)
    with pytest.raises(ValueError, match="lr_decay must be >= 0"):
        optim.Adagrad([w], lr_decay=-0.5)


def test_state_dict_round_trip_continues_the_same_numbers(numpy_backend):
    """Adagrad's per-parameter step count and sum survive state_dict/load_state_dict."""
    a = [gg.Variable(x) for x in _start()]
    b = [gg.Variable(x) for x in _start()]
    name = "adagrad-d0.1-wd0.1-i0.5"
    first = _make(name, a)
    for t in range(2):
        for p, g in zip(a, _grads(t)):
            p.grad = g
        first.step()
    second = _make(name, b)
    for p, q in zip(a, b):
        q.data = p.data.copy()
    second.load_state_dict(first.state_dict())
    for t in range(2, STEPS):
        for p, g in zip(b, _grads(t)):
            p.grad = g
        second.step()
    _check(name, b)


def test_a_subclass_that_overrides_update_takes_the_generic_path(numpy_backend):
    class Halved(optim.RMSprop):
        def update(self, p, g, state):
            super().update(p, g * 0.5, state)

    w = gg.Variable(np.array([1.0, -1.0]))
    opt = Halved([w], lr=0.1, alpha=0.5, eps=0.0)
    assert opt.lowering() is None
    w.grad = np.array([2.0, 4.0])
    opt.step()  # g = [1, 2]; v = g**2 / 2; p -= 0.1 * g / sqrt(v) = 0.1 * sqrt(2)
    np.testing.assert_allclose(w.data, [1.0 - 0.1 * math.sqrt(2), -1.0 - 0.1 * math.sqrt(2)],
                               rtol=1e-15)
    assert "_scratch" not in vars(opt)


@pytest.mark.parametrize("first", [True, False])
@pytest.mark.parametrize("name", list(CASES))
def test_the_cupy_kernel_source_computes_the_in_place_numbers(name, first, numpy_backend):
    """The generated ElementwiseKernel's body (run here as scalar code, element by element,
    in float64 as the kernel would for float64 arrays) gives the in-place NumPy update's
    numbers; on a GPU, test_eager_step runs the kernel itself."""
    w = gg.Variable(np.zeros(1))
    opt = _make(name, [w])
    options = tuple(sorted(opt.options().items()))
    f = form(type(opt).formula, options, first)
    c = opt.scalars(3)
    ins, outs, body, hoist = f.kernel
    rng = np.random.default_rng(1)
    n = 5
    P, G = rng.standard_normal(n), rng.standard_normal(n)
    S = [rng.random(n) + 0.5 for _ in f.names]
    P2, S2 = P.copy(), [s.copy() for s in S]
    f.fn(P2, G, tuple(S2), tuple(np.empty(n) for _ in range(f.temps)), f.prologue(c))
    py = "\n".join(line.removeprefix("T ").rstrip(";") for line in body.split("\n"))
    code = compile(py.replace("sqrt(", "math.sqrt("), "<kernel body>", "exec")
    hoisted = dict(zip([a.split()[1] for a in ins.split(", ")[1:]], hoist(c)))
    outs = [a.split()[1] for a in outs.split(", ")]
    for j in range(n):
        scope = {"math": math, "G": G[j], **hoisted,
                 **dict(zip(outs, [P[j], *(s[j] for s in S)]))}
        exec(code, scope)  # noqa: S102
        assert [scope[o] for o in outs] == [P2[j], *(s[j] for s in S2)]


@pytest.mark.parametrize("name", ["rmsprop-wd0.1-mom0.5-c1", "adagrad-d0.1-wd0.1-i0.5",
                                  "adam-decay", "sgd-nesterov-decay"])
def test_the_compiled_step_reads_the_hyperparameters_each_step(name, numpy_backend):
    """An LR schedule between compiled steps: each step uses the lr of its time."""
    kind, kw = CASES[name]
    ps = [gg.Variable(x) for x in _start()]
    opt = _make(name, ps)
    cs, loss = _graph_loss(ps)
    want, states = _start(), [{}, {}]
    for t in range(1, STEPS + 1):
        lr = kw["lr"] * 0.5 ** t
        opt.lr = lr
        opt.minimize(loss, feed=dict(zip(cs, _grads(t - 1))))
        step = HAND[kind](**{**kw, "lr": lr})
        want = [step(p, g, st, t) for p, g, st in zip(want, _grads(t - 1), states)]
    for p, w in zip(ps, want):
        np.testing.assert_allclose(p.data, w, rtol=1e-12, atol=1e-14)
