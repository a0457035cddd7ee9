"""Every model in every front end: one small model trained through each route gives the same
parameters and losses.

The model is a 2-layer MLP, ``loss(act(x @ W1 + b1) @ W2 + b2, t)``, on a tiny fixed batch,
trained for a few steps. Each case of the grid (loss x activation x optimizer x dtype) runs it
through every route on NumPy:

- ``eager``: Tensors, ``loss.backward()``, ``opt.step()`` (NumPy's in-place update,
  gpugrad.optim_in_place, planned from the second step on);
- ``eager-portable``: the same with the optimizer's portable ``update()``;
- ``graph``: Placeholders and ``opt.minimize(loss, feed)``, one compiled program that
  updates in place;
- ``graph-uncompiled``: ``opt.minimize(loss, feed, compiled=False)``: gradients, then the
  optimizer's own update;
- ``compile``: ``gg.compile``d eager code, ``loss.backward()``, ``opt.step()``;
- ``gg.minimize``: the tutorial's ``gg.minimize(loss, variables, lr, feed)``, for plain SGD.

Every route must agree with ``eager``: the parameters and the loss at every step, to 1e-12
relative in float64 and to :data:`ULPS` units in the last place in float32. A slice of
the grid runs on every backend, and ``nn.MLP`` runs it by activation name.

Activations and optimizers are one entry each in :data:`ACTIVATIONS` and :data:`OPTIMIZERS`
(an optimizer's other options: :data:`OPTIMIZER_OPTIONS`); every entry must run.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import nn, optim


ACTIVATIONS = [
    ("sigmoid", lambda h: gg.sigmoid(h)),
    ("tanh", lambda h: gg.tanh(h)),
    ("relu", lambda h: gg.relu(h)),
    ("softplus", lambda h: gg.softplus(h)),
    ("softplus-beta", lambda h: gg.softplus(h, beta=2.0, threshold=1.0)),
    ("gelu", lambda h: gg.gelu(h)),
    ("gelu-tanh", lambda h: gg.gelu(h, approximate="tanh")),
    ("silu", lambda h: gg.silu(h)),
]

OPTIMIZERS = [
    ("sgd", lambda ps: optim.SGD(ps, lr=0.1)),
    ("sgd-momentum", lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9)),
    ("adam", lambda ps: optim.Adam(ps, lr=0.01)),
    ("adamw", lambda ps: optim.AdamW(ps, lr=0.01, weight_decay=0.1)),
    ("rmsprop", lambda ps: optim.RMSprop(ps, lr=0.01)),
    ("adagrad", lambda ps: optim.Adagrad(ps, lr=0.1)),
]

OPTIMIZER_OPTIONS = [
    ("sgd-nesterov-decay", lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True,
                                                weight_decay=0.01)),
    ("adam-l2", lambda ps: optim.Adam(ps, lr=0.01, betas=(0.8, 0.99), weight_decay=0.1)),
    ("rmsprop-centered", lambda ps: optim.RMSprop(ps, lr=0.01, alpha=0.9, momentum=0.5,
                                                  centered=True, weight_decay=0.01)),
    ("adagrad-options", lambda ps: optim.Adagrad(ps, lr=0.1, lr_decay=0.01, weight_decay=0.01,
                                                 initial_accumulator_value=0.1, eps=1e-9)),
]
"""The optimizers' other options: in the grid on every backend, with tanh."""

LOSSES = [
    ("mse", lambda y, t: nn.mse_loss(y, t)),
    ("bce-logits", lambda y, t: nn.binary_cross_entropy_with_logits(y, t)),
    ("cross-entropy", lambda y, t: nn.cross_entropy(y, t)),
]

DTYPES = ["float64", "float32"]

N, D, H, K = 6, 4, 5, 3  # batch, inputs, hidden units, outputs (classes)
STEPS = 3

ULPS = 32 if os.environ.get("GPUGRAD_JIT", "0") == "0" else 96
"""The float32 bound, in units in the last place of the array's largest magnitude (see
:func:`ulp_distance`); 96 where the suite runs the native tier from the first planned step
(``GPUGRAD_JIT=now pytest``), whose fused kernels write ``exp`` and ``log1p`` out (within
1.2 and 0.5 ulps, gpugrad.compiler.native_math) where the routes that stay on NumPy call
NumPy's own: since logaddexp fuses (2026-12-07), AdamW on the ``bce-logits-silu`` float32
case magnifies those ulps to 63.5 (every other case of the grid: at most 17).

The routes do the same arithmetic but not always in the same order: BLAS dot products
against NumPy's pairwise sums (a bias gradient as ``ones @ g`` or as a sum), the eager
fused cross-entropy op against the graph's composite, one fused expression against its
steps. One reordered sum is off by about 1 ulp; each step feeds its rounding into the next
forward (two layers deep) and into the optimizer's state, so STEPS steps may reach a few
ulps. Measured over this grid (with stand-ins for the activations and optimizers not merged
yet): 0 ulps in 92% of the comparisons, at most 4 with OpenBLAS's default kernel here. The
BLAS kernel changes the order of the dot products (OpenBLAS picks it by CPU; CI runs on
whatever machine it gets), and the adaptive optimizers divide by the root of a running mean
of squared gradients, which magnifies a few ulps where the mean is small: with
``OPENBLAS_CORETYPE=Haswell`` or ``SandyBridge`` (Adam, silu and softplus) the worst case
was 13 ulps. 32 ulps (about 2e-6 relative) leaves room for that and still fails on a dropped
term or a stale value, which move values by thousands of ulps (a float64 result fails the
dtype check first)."""

RTOL64 = 1e-12


def _data() -> dict:
    rng = np.random.default_rng(18)
    return {
        "x": rng.standard_normal((N, D)),
        "mse": rng.standard_normal((N, K)),
        "bce-logits": (rng.random((N, K)) > 0.5).astype("float64"),
        "cross-entropy": rng.integers(0, K, N).astype("int64"),
        "params": [rng.standard_normal((D, H)) * 0.7, rng.standard_normal(H) * 0.1,
                   rng.standard_normal((H, K)) * 0.7, rng.standard_normal(K) * 0.1],
    }


DATA = _data()




def _feed(loss: str, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    t = DATA[loss]
    return DATA["x"].astype(dtype), t if t.dtype.kind == "i" else t.astype(dtype)


def variables_mlp(act):
    """The model as the tutorial writes it: ``act(x @ W1 + b1) @ W2 + b2`` over Variables."""
    def make(dtype: str) -> tuple[list, object]:
        W1, b1, W2, b2 = params = [gg.Variable(p.astype(dtype), name=f"p{i}")
                                   for i, p in enumerate(DATA["params"])]
        return params, lambda x: act(x @ W1 + b1) @ W2 + b2
    return make


def layers_mlp(activation: str):
    """The same shape of model from ``nn.MLP``'s layers, by activation name."""
    def make(dtype: str) -> tuple[list, object]:
        model = nn.MLP([D, H, K], activation=activation, seed=3, dtype=dtype)
        return model.parameters(), model
    return make


def _eager(case: tuple, portable: bool = False, compiled: bool = False) -> tuple[list, list]:
    """Eager steps: ``loss.backward()`` and ``opt.step()``, ``portable``: through the
    optimizer's ``update()``; ``compiled``: the loss from a ``gg.compile``d function."""
    model, loss_fn, make_opt, loss, dtype = case
    params, net = model(dtype)
    opt = make_opt(params)
    if portable:
        opt.update = opt.update  # an instance-level update(): update_in_place cannot run it
    f = gg.compile(lambda x, t: loss_fn(net(x), t)) if compiled else \
        (lambda x, t: loss_fn(net(x), t))
    xb, tb = _feed(loss, dtype)
    x, t = gg.asarray(xb), gg.asarray(tb)
    losses = []
    for _ in range(STEPS):
        opt.zero_grad()
        value = f(x, t)
        value.backward()
        opt.step()
        losses.append(gg.to_numpy(value.data))
    if compiled:
        assert f.cache_info().traces == 1
    return losses, [gg.to_numpy(p.data) for p in params]


def _graph(case: tuple, compiled: bool = True) -> tuple[list, list]:
    """Placeholders and ``opt.minimize(loss, feed, compiled=compiled)``."""
    model, loss_fn, make_opt, loss, dtype = case
    params, net = model(dtype)
    opt = make_opt(params)
    xb, tb = _feed(loss, dtype)
    x = gg.Placeholder((None, D), dtype, name="x")
    t = gg.Placeholder((None, K)[:tb.ndim], str(tb.dtype), name="t")
    value = loss_fn(net(x), t)
    losses = [gg.to_numpy(opt.minimize(value, feed={x: xb, t: tb}, compiled=compiled))
              for _ in range(STEPS)]
    return losses, [gg.to_numpy(p.data) for p in params]


def _tutorial(case: tuple) -> tuple[list, list] | None:
    """``gg.minimize(loss, variables, lr, feed)``, the tutorial's gradient descent: a route
    for plain SGD only (None for other optimizers)."""
    model, loss_fn, make_opt, loss, dtype = case
    params, net = model(dtype)
    opt = make_opt(params)
    if type(opt) is not optim.SGD or getattr(opt, "momentum", 1) or getattr(
            opt, "weight_decay", 1):
        return None
    xb, tb = _feed(loss, dtype)
    x = gg.Placeholder((None, D), dtype, name="x")
    t = gg.Placeholder((None, K)[:tb.ndim], str(tb.dtype), name="t")
    value = loss_fn(net(x), t)
    losses = [gg.to_numpy(gg.minimize(value, params, lr=opt.lr, feed={x: xb, t: tb}))
              for _ in range(STEPS)]
    return losses, [gg.to_numpy(p.data) for p in params]


ROUTES = {
    "eager-portable": functools.partial(_eager, portable=True),
    "graph": _graph,
    "graph-uncompiled": functools.partial(_graph, compiled=False),
    "compile": functools.partial(_eager, compiled=True),
    "gg.minimize": _tutorial,
}


def ulp_distance(a: np.ndarray, b: np.ndarray, scale: np.ndarray | float = 0.0) -> np.ndarray:
    """|a - b| in units in the last place of the largest magnitude of ``a``, ``b`` and
    ``scale``, elementwise, in ``a``'s dtype (float64 holds float32 differences exactly).

    ``scale`` is the size of the terms that made the values. Pass the array's largest
    magnitude for a parameter: every element of it is updated by terms of that size, so an
    element that they brought near zero (0.3 - 0.297) carries their rounding, ulps of 0.3,
    not ulps of its own small value."""
    a, b = np.asarray(a), np.asarray(b)
    big = np.maximum(np.maximum(np.abs(a), np.abs(b)), np.abs(scale)).astype(a.dtype)
    return np.abs(a.astype("float64") - b.astype("float64")) / np.spacing(big).astype("float64")


def _agree(got, want, dtype: str, what: str) -> None:
    """``got`` is ``want`` to RTOL64 (float64) or ULPS (float32) of its largest magnitude
    (elementwise, where the element itself is larger)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype == np.dtype(dtype), (what, got.dtype, want.dtype)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    assert np.all(np.isfinite(got)), what
    scale = float(np.max(np.abs(want), initial=0.0))
    if dtype == "float64":
        np.testing.assert_allclose(got, want, rtol=RTOL64, atol=RTOL64 * scale, err_msg=what)
    else:
        worst = float(np.max(ulp_distance(got, want, scale), initial=0.0))
        assert worst <= ULPS, f"{what}: {worst} ulps apart (bound {ULPS})"


def _check_routes(case: tuple, dtype: str) -> None:
    """Every route of :data:`ROUTES` trains as ``eager`` does."""
    want_losses, want_params = _eager(case)
    start = [gg.to_numpy(p.data) for p in case[0](dtype)[0]]
    assert all(not np.array_equal(p, q) for p, q in zip(want_params, start))  # it trained
    ran = 0
    for route, run in ROUTES.items():
        got = run(case)
        if got is None:
            continue
        ran += 1
        losses, params = got
        assert len(losses) == STEPS
        for k, (got, want) in enumerate(zip(losses, want_losses)):
            _agree(got, want, dtype, f"{route}: loss at step {k}")
        for i, (got, want) in enumerate(zip(params, want_params)):
            _agree(got, want, dtype, f"{route}: parameter p{i} after {STEPS} steps")
    assert ran >= 4


def _ids(entries: list) -> list:
    return [name for name, _ in entries]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opt_name, make_opt", OPTIMIZERS, ids=_ids(OPTIMIZERS))
@pytest.mark.parametrize("act_name, act", ACTIVATIONS, ids=_ids(ACTIVATIONS))
@pytest.mark.parametrize("loss, loss_fn", LOSSES, ids=_ids(LOSSES))
def test_every_front_end_trains_the_same(loss, loss_fn, act_name, act, opt_name, make_opt,
                                         dtype, numpy_backend):
    _check_routes((variables_mlp(act), loss_fn, make_opt, loss, dtype), dtype)


TANH = next(a for a in ACTIVATIONS if a[0] == "tanh")
MOMENTUM = next(o for o in OPTIMIZERS if o[0] == "sgd-momentum")
ON_EACH_BACKEND = ([(*TANH, *o) for o in OPTIMIZERS + OPTIMIZER_OPTIONS]
                   + [(*a, *MOMENTUM) for a in ACTIVATIONS if a is not TANH])
"""Each optimizer (and its options) with tanh, and each activation with SGD and momentum."""


@pytest.mark.parametrize("act_name, act, opt_name, make_opt", ON_EACH_BACKEND,
                         ids=[f"{c[0]}-{c[2]}" for c in ON_EACH_BACKEND])
@pytest.mark.parametrize("loss, loss_fn", LOSSES, ids=_ids(LOSSES))
def test_every_front_end_trains_the_same_on_each_backend(loss, loss_fn, act_name, act,
                                                         opt_name, make_opt, bk):
    """array_api_strict runs the portable rules and updates, and its no_float64 device
    refuses any float64 that a float32 route would make; CuPy runs the GPU's."""
    _check_routes((variables_mlp(act), loss_fn, make_opt, loss, bk.float_dtype),
                  bk.float_dtype)


LAYER_ACTIVATIONS = ["sigmoid", "tanh", "relu", "softplus", "gelu", "silu"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", LAYER_ACTIVATIONS)
@pytest.mark.parametrize("loss, loss_fn", LOSSES, ids=_ids(LOSSES))
def test_every_front_end_trains_the_same_layers(loss, loss_fn, activation, dtype,
                                                numpy_backend):
    """``nn.MLP`` (its Linear layers and activation layers) with Adam, by activation name."""
    _check_routes((layers_mlp(activation), loss_fn, dict(OPTIMIZERS)["adam"], loss, dtype), dtype)


def test_ulp_distance():
    one = np.float32(1.0)
    assert ulp_distance(one, np.nextafter(one, np.float32(2))) == 1.0
    assert ulp_distance(np.float32(-3.0), np.float32(-3.0)) == 0.0
    big = np.float32(1e30)
    assert ulp_distance(big, big * np.float32(1 + 2e-7)) >= 1.0
    assert ulp_distance(np.float32(1.0), np.float32(1.001)) > ULPS  # 1e-3 relative: far off
    small = np.float32(1e-3)
    assert ulp_distance(small, np.nextafter(small, one)) == 1.0
    assert ulp_distance(small, np.nextafter(small, one), scale=1.0) == np.spacing(small) / \
        np.spacing(one)  # a small fraction of an ulp of the scale


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_with_logits_keeps_float32_in_every_front_end(dtype, numpy_backend):
    """The loss of a float32 model is float32 whatever the route (the graph once lifted the
    0.0 of ``logaddexp(z, 0.0)`` to a float64 array and refused the mix)."""
    W = gg.Variable(np.ones((D, K), dtype))
    xb, tb = _feed("bce-logits", dtype)
    x, t = gg.Placeholder((None, D), dtype), gg.Placeholder((None, K), dtype)
    graph = gg.to_numpy(nn.binary_cross_entropy_with_logits(x @ W, t).eval({x: xb, t: tb}))
    f = gg.compile(lambda a, b: nn.binary_cross_entropy_with_logits(a @ W, b))
    compiled = gg.to_numpy(f(gg.asarray(xb), gg.asarray(tb)).data)
    eager = gg.to_numpy(nn.binary_cross_entropy_with_logits(gg.asarray(xb) @ W,
                                                            gg.asarray(tb)).data)
    z = xb @ np.ones((D, K))
    by_hand = np.mean(np.logaddexp(z, 0.0) - tb * z)
    for got in (graph, compiled, eager):
        assert got.dtype == np.dtype(dtype)
        np.testing.assert_allclose(got, by_hand, rtol=1e-6 if dtype == "float32" else 1e-14)


SCALAR_OPS = {
    "maximum": lambda h: gg.maximum(h, 0.5),
    "minimum": lambda h: gg.minimum(0.5, h),
    "logaddexp": lambda h: gg.logaddexp(h, 0.0),
    "where": lambda h: gg.where(h > 0.5, h, 0.0),
    "pow": lambda h: 2.0 ** h,
    "atan2": lambda h: gg.atan2(h, 1.0),
}
"""Ops whose rules need their Python scalars as arrays, each given one beside a value that
an earlier step makes."""


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(SCALAR_OPS))
def test_a_scalar_beside_a_computed_value_takes_its_dtype(name, dtype, bk):
    """A graph or ``gg.compile`` turns such a scalar into a 0-d array of the dtype of the
    value beside it, as eager does, also where that value is an earlier step's output (it
    was made before the run, without that value, so it became float64 and float32 raised
    DtypeError)."""
    if dtype == "float64" and not bk.float64:
        pytest.skip("this device has no float64")
    f = SCALAR_OPS[name]
    xb = np.linspace(0.1, 0.9, 6).reshape(2, 3).astype(dtype)
    W = gg.Variable(np.eye(3, dtype=dtype))
    eager = f(gg.asarray(xb) @ W)
    eager.sum().backward()
    want, want_grad = gg.to_numpy(eager.data), gg.to_numpy(W.grad)
    x = gg.Placeholder((None, 3), dtype)
    y = f(x @ W)
    graph = gg.to_numpy(y.eval({x: xb}))
    graph_grad = gg.to_numpy(gg.gradients(gg.sum(y), [W], feed={x: xb})[0])
    W.grad = None
    compiled = gg.compile(lambda a: f(a @ W))(gg.asarray(xb))
    compiled.sum().backward()
    for got in (graph, gg.to_numpy(compiled.data)):
        assert got.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(got, want)
    for got in (graph_grad, gg.to_numpy(W.grad)):
        assert got.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(got, want_grad)
