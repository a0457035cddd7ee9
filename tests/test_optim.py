"""gpugrad.optim: optimizers against hand-derived float64 updates, state, schedules, and
short training runs in the eager and graph styles.

The expected numbers come from the update formulas written out below in NumPy, never from
calling the optimizers.
"""

from __future__ import annotations

import math
import types

import numpy as np
import pytest

import gpugrad as gg
from helpers import assert_on_backend as on_backend
from helpers import host
from gpugrad import backend as B
from gpugrad import nn, optim
from gpugrad.data import Batches

# The problem: loss(w) = 0.5 * sum(c * (w - t)**2), so grad(w) = c * (w - t).
W0 = np.array([0.5, -1.5, 2.0, 0.25])
C = np.array([1.0, 2.0, 0.5, 3.0])
T = np.array([0.0, 1.0, -1.0, 0.5])


F64 = types.SimpleNamespace(float_dtype="float64", float64=True)  # a backend-case stand-in


def grad_np(w):
    return C * (w - T)


def tol(bk):
    return {"rtol": 1e-12, "atol": 1e-14} if bk.float64 else {"rtol": 2e-5, "atol": 2e-6}


def make_param(bk):
    return gg.Variable(W0.astype(bk.float_dtype), name="w")


def loss_of(w, bk):
    c = gg.asarray(C.astype(bk.float_dtype))
    t = gg.asarray(T.astype(bk.float_dtype))
    d = w - t
    return 0.5 * gg.sum(c * d * d)


def run_steps(opt, w, bk, n):
    out = []
    for _ in range(n):
        opt.zero_grad()
        loss_of(w, bk).backward()
        opt.step()
        out.append(host(w))
    return out


# --- hand-written references -----------------------------------------------------------------

def sgd_ref(n, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    w, buf, out = W0.copy(), None, []
    for _ in range(n):
        d = grad_np(w) + weight_decay * w
        if momentum:
            buf = d.copy() if buf is None else momentum * buf + d
            d = d + momentum * buf if nesterov else buf
        w = w - lr * d
        out.append(w.copy())
    return out


def adam_ref(n, lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, decoupled=False):
    w = W0.copy()
    m, v, out = np.zeros_like(w), np.zeros_like(w), []
    for t in range(1, n + 1):
        g = grad_np(w)
        if decoupled:
            w = w * (1.0 - lr * weight_decay)
        else:
            g = g + weight_decay * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1**t)
        v_hat = v / (1 - b2**t)
        w = w - lr * m_hat / (np.sqrt(v_hat) + eps)
        out.append(w.copy())
    return out


# --- single updates against the references ---------------------------------------------------

def test_sgd_one_step(bk):
    w = make_param(bk)
    opt = optim.SGD([w], lr=0.1)
    (got,) = run_steps(opt, w, bk, 1)
    np.testing.assert_allclose(got, W0 - 0.1 * C * (W0 - T), **tol(bk))
    on_backend(bk, w.data)
    assert B.dtype_name(w.dtype) == bk.float_dtype


def test_sgd_momentum_three_steps(bk):
    w = make_param(bk)
    got = run_steps(optim.SGD([w], lr=0.1, momentum=0.9), w, bk, 3)
    want = sgd_ref(3, 0.1, momentum=0.9)
    np.testing.assert_allclose(got, want, **tol(bk))
    # momentum really changes the trajectory
    assert not np.allclose(want[2], sgd_ref(3, 0.1)[2])


def test_sgd_nesterov_three_steps(bk):
    w = make_param(bk)
    got = run_steps(optim.SGD([w], lr=0.1, momentum=0.9, nesterov=True), w, bk, 3)
    want = sgd_ref(3, 0.1, momentum=0.9, nesterov=True)
    np.testing.assert_allclose(got, want, **tol(bk))
    assert not np.allclose(want[2], sgd_ref(3, 0.1, momentum=0.9)[2])


def test_sgd_weight_decay(bk):
    w = make_param(bk)
    got = run_steps(optim.SGD([w], lr=0.1, weight_decay=0.05), w, bk, 2)
    np.testing.assert_allclose(got, sgd_ref(2, 0.1, weight_decay=0.05), **tol(bk))
    w = make_param(bk)
    got = run_steps(optim.SGD([w], lr=0.1, momentum=0.5, weight_decay=0.05), w, bk, 3)
    np.testing.assert_allclose(got, sgd_ref(3, 0.1, momentum=0.5, weight_decay=0.05),
                               **tol(bk))


def test_sgd_nesterov_needs_momentum():
    with pytest.raises(ValueError, match="momentum"):
        optim.SGD([gg.Variable([1.0])], lr=0.1, nesterov=True)


def test_adam_bias_correction_three_steps(bk):
    w = make_param(bk)
    opt = optim.Adam([w], lr=0.01)
    assert opt.betas == (0.9, 0.999) and opt.eps == 1e-8 and opt.weight_decay == 0.0
    got = run_steps(opt, w, bk, 3)
    want = adam_ref(3, 0.01)
    np.testing.assert_allclose(got, want, **tol(bk))
    # bias correction makes the first step lr * sign(g) (up to eps)
    np.testing.assert_allclose(want[0], W0 - 0.01 * np.sign(grad_np(W0)), rtol=1e-6)


def test_adam_custom_betas_and_l2(bk):
    w = make_param(bk)
    got = run_steps(optim.Adam([w], lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
                    w, bk, 3)
    np.testing.assert_allclose(
        got, adam_ref(3, 0.05, b1=0.8, b2=0.99, eps=1e-6, weight_decay=0.1), **tol(bk))


def test_adamw_decoupled_decay_three_steps(bk):
    w = make_param(bk)
    opt = optim.AdamW([w], lr=0.05, weight_decay=0.5)
    got = run_steps(opt, w, bk, 3)
    want = adam_ref(3, 0.05, weight_decay=0.5, decoupled=True)
    np.testing.assert_allclose(got, want, **tol(bk))
    l2 = adam_ref(3, 0.05, weight_decay=0.5)
    assert np.abs(want[2] - l2[2]).max() > 1e-3  # decoupled decay is not Adam + L2
    w2 = make_param(bk)
    got_l2 = run_steps(optim.Adam([w2], lr=0.05, weight_decay=0.5), w2, bk, 3)
    np.testing.assert_allclose(got_l2, l2, **tol(bk))
    assert optim.AdamW([make_param(bk)]).weight_decay == 0.01


def test_step_skips_parameters_without_grad(bk):
    w = make_param(bk)
    u = gg.Variable(np.ones(2, bk.float_dtype), name="u")
    opt = optim.SGD([w, u], lr=0.1, momentum=0.9)
    run_steps(opt, w, bk, 1)
    np.testing.assert_array_equal(host(u), [1.0, 1.0])
    assert opt.state[u] == {}


def test_zero_grad():
    w = gg.Variable(W0.copy())
    opt = optim.SGD([w], lr=0.1)
    loss_of(w, F64).backward()
    assert w.grad is not None
    opt.zero_grad()
    assert w.grad is None


def test_bad_arguments():
    with pytest.raises(ValueError, match="empty"):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        optim.Adam([gg.Variable([1.0])], lr=0.0)
    with pytest.raises(TypeError, match="trainable"):
        optim.SGD([gg.asarray([1.0])], lr=0.1)


# --- state and in-place updates --------------------------------------------------------------

def test_state_keyed_by_parameter_object(bk):
    a, b = make_param(bk), gg.Variable(np.ones(3, bk.float_dtype), name="b")
    opt = optim.SGD([a, b], lr=0.1, momentum=0.9)
    opt.zero_grad()
    (loss_of(a, bk) + gg.sum(b * b)).backward()
    opt.step()
    keys = list(opt.state)
    assert keys[0] is a and keys[1] is b
    assert id(a) not in opt.state and id(b) not in opt.state
    assert set(opt.state[a]) == {"momentum"}
    np.testing.assert_allclose(host(opt.state[a]["momentum"]), grad_np(W0), **tol(bk))
    np.testing.assert_allclose(host(opt.state[b]["momentum"]), [2.0, 2.0, 2.0], **tol(bk))
    on_backend(bk, opt.state[a]["momentum"])
    adam = optim.Adam([a], lr=0.1)
    run_steps(adam, a, bk, 1)
    assert set(adam.state[a]) == {"m", "v"}
    on_backend(bk, adam.state[a]["v"])


@pytest.mark.parametrize("make", [
    lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    lambda ps: optim.Adam(ps, lr=0.1),
    lambda ps: optim.AdamW(ps, lr=0.1),
], ids=["sgd", "adam", "adamw"])
def test_update_in_place_on_device(bk, make):
    w = make_param(bk)
    before_obj = w.data if bk.name == "numpy" else None
    opt = make([w])
    run_steps(opt, w, bk, 2)
    assert not np.allclose(host(w), W0)
    on_backend(bk, w.data)
    assert B.dtype_name(w.dtype) == bk.float_dtype
    if before_obj is not None:
        assert w.data is before_obj  # NumPy: updated in place, not rebound
    for v in opt.state[w].values():
        on_backend(bk, v)
        assert v.shape == w.shape


def test_minimize_matches_eager_step(bk):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(16, 3)).astype(bk.float_dtype)
    Y = rng.normal(size=(16, 2)).astype(bk.float_dtype)
    eager = nn.MLP([3, 4, 2], seed=0, dtype=bk.float_dtype)
    graph = nn.MLP([3, 4, 2], seed=0, dtype=bk.float_dtype)
    opt_e = optim.Adam(eager.parameters(), lr=0.05)
    opt_g = optim.Adam(graph.parameters(), lr=0.05)
    x = gg.Placeholder((None, 3), bk.float_dtype, name="x")
    y = gg.Placeholder((None, 2), bk.float_dtype, name="y")
    loss = nn.mse_loss(graph(x), y)
    for _ in range(3):
        opt_e.zero_grad()
        le = nn.mse_loss(eager(gg.asarray(X)), gg.asarray(Y))
        le.backward()
        opt_e.step()
        lg = opt_g.minimize(loss, feed={x: X, y: Y})
        assert not isinstance(lg, (float, gg.Tensor))
        assert tuple(lg.shape) == ()
        on_backend(bk, lg)
        np.testing.assert_allclose(float(lg), float(le), rtol=1e-5)
    assert opt_g.steps == 3
    for pe, pg in zip(eager.parameters(), graph.parameters()):
        np.testing.assert_allclose(host(pg), host(pe), rtol=1e-5, atol=1e-6)
        on_backend(bk, pg.data)


# --- state_dict ------------------------------------------------------------------------------

def _batches(n_steps, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(8, 3)).astype("float32"),
             rng.integers(0, 3, size=8)) for _ in range(n_steps)]


def _train(model, opt, batches):
    for xb, yb in batches:
        opt.zero_grad()
        nn.cross_entropy(model(gg.asarray(xb)), gg.asarray(yb)).backward()
        opt.step()


@pytest.mark.parametrize("make", [
    lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
    lambda ps: optim.Adam(ps, lr=0.05),
    lambda ps: optim.AdamW(ps, lr=0.05, weight_decay=0.1),
], ids=["sgd", "adam", "adamw"])
def test_state_dict_resume_equals_uninterrupted(bk, make):
    batches = _batches(6)
    ref = nn.MLP([3, 5, 3], seed=0)
    ref_opt = make(ref.parameters())
    _train(ref, ref_opt, batches)

    first = nn.MLP([3, 5, 3], seed=0)
    first_opt = make(first.parameters())
    _train(first, first_opt, batches[:3])
    # a snapshot on the host, as if written to disk
    model_sd = {k: gg.to_numpy(v).copy() for k, v in first.state_dict().items()}
    osd = first_opt.state_dict()
    opt_sd = {**osd, "state": [{k: gg.to_numpy(v).copy() for k, v in st.items()}
                               for st in osd["state"]]}

    resumed = nn.MLP([3, 5, 3], seed=123)
    resumed.load_state_dict(model_sd)
    resumed_opt = make(resumed.parameters())
    resumed_opt.lr = 1.0  # overwritten by the loaded hyperparameters
    resumed_opt.load_state_dict(opt_sd)
    assert resumed_opt.lr == first_opt.lr and resumed_opt.steps == 3
    for st in resumed_opt.state.values():
        for v in st.values():
            on_backend(bk, v)
    _train(resumed, resumed_opt, batches[3:])
    for (name, pr), (_, pq) in zip(ref.named_parameters(), resumed.named_parameters()):
        np.testing.assert_allclose(host(pq), host(pr), rtol=1e-6, atol=1e-7, err_msg=name)


def test_state_dict_load_copies(bk):
    w = make_param(bk)
    opt = optim.SGD([w], lr=0.1, momentum=0.9)
    run_steps(opt, w, bk, 1)
    w2 = make_param(bk)
    opt2 = optim.SGD([w2], lr=0.1, momentum=0.9)
    opt2.load_state_dict(opt.state_dict())
    assert opt2.state[w2]["momentum"] is not opt.state[w]["momentum"]
    np.testing.assert_array_equal(host(opt2.state[w2]["momentum"]),
                                  host(opt.state[w]["momentum"]))
    assert w2 in opt2.state and w not in opt2.state


def test_load_state_dict_mismatch():
    w = gg.Variable(W0.copy())
    sgd = optim.SGD([w], lr=0.1, momentum=0.9)
    run_steps(sgd, w, F64, 1)
    adam = optim.Adam([gg.Variable(W0.copy())])
    with pytest.raises(nn.StateDictError, match="SGD"):
        adam.load_state_dict(sgd.state_dict())
    two = optim.SGD([gg.Variable(W0.copy()), gg.Variable(W0.copy())], lr=0.1, momentum=0.9)
    with pytest.raises(nn.StateDictError, match="1"):
        two.load_state_dict(sgd.state_dict())
    other_shape = optim.SGD([gg.Variable(np.zeros(3))], lr=0.1, momentum=0.9)
    with pytest.raises(nn.StateDictError, match="momentum"):
        other_shape.load_state_dict(sgd.state_dict())


# --- schedules -------------------------------------------------------------------------------

def test_step_lr():
    opt = optim.SGD([gg.Variable([1.0])], lr=0.1)
    sched = optim.StepLR(opt, step_size=2, gamma=0.5)
    got = [sched.step() for _ in range(5)]
    np.testing.assert_allclose(got, [0.1, 0.05, 0.05, 0.025, 0.025], rtol=1e-12)
    assert opt.lr == pytest.approx(0.025)


def test_cosine_lr():
    opt = optim.Adam([gg.Variable([1.0])], lr=0.1)
    sched = optim.CosineLR(opt, T_max=4, eta_min=0.01)
    got = [sched.step() for _ in range(4)]
    want = [0.01 + 0.09 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(1, 5)]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert got[-1] == pytest.approx(0.01)
    assert opt.lr == got[-1]


def test_schedule_changes_the_update(bk):
    w = make_param(bk)
    opt = optim.SGD([w], lr=0.1)
    optim.StepLR(opt, step_size=1, gamma=0.1).step()
    (got,) = run_steps(opt, w, bk, 1)
    np.testing.assert_allclose(got, W0 - 0.01 * grad_np(W0), **tol(bk))


# --- training runs ---------------------------------------------------------------------------

def separable_data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(4 * n, 2))
    margin = X @ np.array([1.0, -2.0]) + 0.3
    keep = np.abs(margin) > 0.5
    X, margin = X[keep][:n], margin[keep][:n]
    return X.astype("float32"), (margin > 0).astype(np.int64)


def _full_loss(model, X, y):
    with gg.no_grad():
        return float(nn.cross_entropy(model(gg.asarray(X)), gg.asarray(y)))


def test_training_cuts_loss(bk):
    X, y = separable_data()
    model = nn.MLP([2, 8, 2], seed=0)
    opt = optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    start = _full_loss(model, X, y)
    batches = Batches(X, y, batch_size=32, seed=0)
    for _ in range(5):
        for xb, yb in batches:
            opt.zero_grad()
            nn.cross_entropy(model(gg.asarray(xb)), yb).backward()
            opt.step()
    end = _full_loss(model, X, y)
    assert end <= 0.1 * start, (start, end)
    for p in model.parameters():
        on_backend(bk, p.data)


def test_eager_and_graph_reach_same_parameters(bk):
    X, y = separable_data(128, seed=1)
    eager = nn.MLP([2, 6, 2], seed=4)
    graph = nn.MLP([2, 6, 2], seed=4)
    opt_e = optim.SGD(eager.parameters(), lr=0.5, momentum=0.9)
    opt_g = optim.SGD(graph.parameters(), lr=0.5, momentum=0.9)
    x = gg.Placeholder((None, 2), "float32", name="x")
    t = gg.Placeholder((None,), "int64", name="t")
    loss = nn.cross_entropy(graph(x), t)
    start = _full_loss(graph, X, y)
    batches = Batches(X, y, batch_size=32, seed=7)
    for _ in range(6):
        for xb, yb in batches:
            opt_e.zero_grad()
            le = nn.cross_entropy(eager(gg.asarray(xb)), yb)
            le.backward()
            opt_e.step()
            opt_g.minimize(loss, feed={x: xb, t: yb})
    assert _full_loss(graph, X, y) < 0.5 * start
    for (name, pe), (_, pg) in zip(eager.named_parameters(), graph.named_parameters()):
        np.testing.assert_allclose(host(pg), host(pe), rtol=1e-5, atol=1e-6, err_msg=name)
        on_backend(bk, pg.data)
