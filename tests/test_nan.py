"""A NaN input is not dropped from the gradient (issue 21, item 5).

Where an op's output is a NaN input's value (the max of a slice holding a NaN, maximum of a
NaN and a number, relu or clip of a NaN), the gradient goes to that NaN, as PyTorch's does;
where the output's derivative in an input is NaN (logaddexp, pow's exponent at a NaN base),
the gradient is NaN. Every expectation is derived by hand (the rule in each op's docstring),
and every case runs in the three front ends: eager Tensors, a Placeholder graph and
``gg.compile``, which must give the same numbers.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import host

import gpugrad as gg

NAN = math.nan

# (name, f(*tensors) -> tensor, inputs, expected gradient of sum(f) per input)
CASES = [
    ("max-full-ties-between-nans", lambda x: gg.max(x),
     [[1.0, NAN, 3.0, NAN]], [[0.0, 0.5, 0.0, 0.5]]),
    ("max-axis", lambda x: gg.max(x, axis=1),
     [[[1.0, NAN, 3.0], [2.0, 5.0, 5.0]]], [[[0.0, 1.0, 0.0], [0.0, 0.5, 0.5]]]),
    ("min-full", lambda x: gg.min(x), [[1.0, NAN, -3.0]], [[0.0, 1.0, 0.0]]),
    ("min-axis0-keepdims", lambda x: gg.min(x, axis=0, keepdims=True),
     [[[NAN, 1.0], [NAN, 0.0]]], [[[0.5, 0.0], [0.5, 1.0]]]),
    ("maximum", lambda a, b: gg.maximum(a, b),
     [[NAN, 1.0, NAN, 3.0], [2.0, NAN, NAN, 1.0]],
     [[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0]]),
    ("minimum", lambda a, b: gg.minimum(a, b),
     [[NAN, 1.0, NAN, 3.0], [2.0, NAN, NAN, 1.0]],
     [[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]]),
    ("clip", lambda x: gg.clip(x, 0.0, 1.0), [[-1.0, NAN, 0.5, 3.0]], [[0.0, 0.0, 1.0, 0.0]]),
    ("clip-min", lambda x: gg.clip(x, min=0.0), [[-1.0, NAN, 2.0]], [[0.0, 0.0, 1.0]]),
    ("clip-max", lambda x: gg.clip(x, max=1.0), [[-1.0, NAN, 2.0]], [[1.0, 0.0, 0.0]]),
    ("relu", lambda x: gg.relu(x), [[-1.0, 0.0, NAN, 2.0]], [[0.0, 0.0, 1.0, 1.0]]),
    ("relu-0d", lambda x: gg.relu(x), [NAN], [1.0]),
    # d/da = exp(a - out): NaN where out is; 1/2 each at logaddexp(0, 0)
    ("logaddexp", lambda a, b: gg.logaddexp(a, b),
     [[NAN, 0.0], [1.0, 0.0]], [[NAN, 0.5], [NAN, 0.5]]),
    # d/da = b a**(b-1), d/db = a**b log(a): 3 * 2**2 = 12, 2**3 log 2 = 8 log 2
    ("pow", lambda a, b: a ** b,
     [[NAN, 2.0], [2.0, 3.0]], [[NAN, 12.0], [NAN, 8.0 * math.log(2.0)]]),
    # logaddexp(z, 0) - y z, mean of 2: d/dz = (sigmoid(z) - y) / 2, NaN at z = NaN;
    # d/dy = -z / 2
    ("bce-with-logits", lambda z, y: gg.nn.binary_cross_entropy_with_logits(z, y),
     [[NAN, 0.0], [1.0, 0.0]], [[NAN, 0.25], [NAN, 0.0]]),
    # array bounds: a NaN x passes g; a NaN bound is the output, and takes g
    ("clip-array-bound", lambda x, lo: gg.clip(x, lo, 4.0),
     [[NAN, 1.0, 1.0, 5.0], [0.0, NAN, 2.0, 0.0]],
     [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 0.0]]),
    ("clip-nan-scalar-bound", lambda x, hi: gg.clip(x, NAN, hi),
     [[1.0, 2.0], [0.5, 3.0]], [[0.0, 0.0], [0.0, 0.0]]),
    # a NaN entry makes its row NaN, and its row's gradient; quiet though exp(1000)
    # overflows once the NaN row is shifted by 0
    ("logsumexp-rows", lambda x: gg.logsumexp(x, axis=1),
     [[[1000.0, NAN], [0.0, 0.0]]], [[[NAN, NAN], [0.5, 0.5]]]),
    # d/dx of softmax(x)[:, 0] = s (e0 - s0): [1/4, -1/4] at s = [1/2, 1/2]
    ("softmax-rows", lambda x: gg.softmax(x, axis=1)[:, 0],
     [[[1000.0, NAN], [0.0, 0.0]]], [[[NAN, NAN], [0.25, -0.25]]]),
    ("log-softmax-rows", lambda x: gg.log_softmax(x, axis=1),
     [[[1000.0, NAN], [0.0, 0.0]]], [[[NAN, NAN], [0.0, 0.0]]]),
    # d/dz = softmax - onehot: [1/2 - 1, 1/2] for the row without NaN
    ("cross-entropy-rows", lambda z: gg.softmax_cross_entropy(
        z, gg.asarray(np.array([1, 0]))), [[[1000.0, NAN], [0.0, 0.0]]],
     [[[NAN, NAN], [-0.5, 0.5]]]),
]
IDS = [c[0] for c in CASES]


def _check(grads, expected, dtype):
    tol = 1e-6 if dtype == "float32" else 1e-14
    for got, want in zip(grads, expected):
        np.testing.assert_allclose(host(got), np.array(want, dtype), rtol=tol, atol=0.0,
                                   equal_nan=True)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_eager(bk, case):
    _, f, inputs, expected = case
    dt = bk.float_dtype
    xs = [gg.Variable(np.array(v, dt)) for v in inputs]
    gg.sum(f(*xs)).backward()
    _check([x.grad for x in xs], expected, dt)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_placeholder_graph(bk, case):
    """The NaNs are fed; each gradient is read at a zero Variable added to its input. On
    NumPy the planned program computes elementwise gradients by the ops' scalar formulas."""
    _, f, inputs, expected = case
    dt = bk.float_dtype
    data = [np.array(v, dt) for v in inputs]
    ps = [gg.Placeholder(d.shape, dt, name=f"x{i}") for i, d in enumerate(data)]
    zs = [gg.Variable(np.zeros(d.shape, dt), name=f"z{i}") for i, d in enumerate(data)]
    loss = gg.sum(f(*[p + z for p, z in zip(ps, zs)]))
    feed = dict(zip(ps, data))
    for _ in range(3):  # the first run of a mode runs the rules, the next ones its program
        _check(gg.gradients(loss, zs, feed), expected, dt)
        _check(gg.value_and_gradients(loss, zs, feed)[1], expected, dt)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_compile(bk, case):
    """gg.compile: the first call traces, the next ones run the compiled program."""
    _, f, inputs, expected = case
    dt = bk.float_dtype
    compiled = gg.compile(lambda *xs: gg.sum(f(*xs)))
    for _ in range(3):
        xs = [gg.Variable(np.array(v, dt)) for v in inputs]
        compiled(*xs).backward()
        _check([x.grad for x in xs], expected, dt)


def test_compile_through_a_chain(bk):
    """A NaN met inside a fused elementwise chain: relu and maximum pass g to it, clip stops
    it (PyTorch's rules); w's gradient x * 0 is then NaN there."""
    dt = bk.float_dtype
    compiled = gg.compile(lambda x, w: gg.sum(gg.maximum(gg.clip(gg.relu(x * w), max=5.0),
                                                         1.0)))
    for _ in range(3):
        x = gg.Variable(np.array([NAN, 2.0, -1.0, 9.0], dt))
        w = gg.Variable(np.ones(4, dt))
        compiled(x, w).backward()
        # d/dx = w where the chain passes (nan: clip stops it; 2: relu, clip, maximum
        # pass; -1: relu stops it; 9: clip stops it); d/dw = x times that
        _check([x.grad, w.grad], [[0.0, 1.0, 0.0, 0.0], [NAN, 2.0, 0.0, 0.0]], dt)


def test_sort_gradient_follows_the_nan(bk):
    """sort puts a NaN last (first when descending), and its gradient goes back to it."""
    dt = bk.float_dtype
    for descending, expected in ((False, [2.0, 3.0, 1.0]), (True, [2.0, 1.0, 3.0])):
        x = gg.Variable(np.array([3.0, NAN, 1.0], dt))
        weights = gg.asarray(np.array([1.0, 2.0, 3.0], dt))
        gg.sum(gg.array_api.sort(x, descending=descending) * weights).backward()
        _check([x.grad], [expected], dt)


def test_no_nan_no_change(bk):
    """Without a NaN the rules are the old ones: ties split, the winner takes g."""
    dt = bk.float_dtype
    a, b = gg.Variable(np.array([1.0, 2.0, 3.0], dt)), gg.Variable(np.array([1.0, 5.0, 0.0], dt))
    gg.sum(gg.maximum(a, b) + gg.minimum(a, b) * 2.0 + gg.relu(a - 2.0)).backward()
    _check([a.grad, b.grad], [[1.5, 2.0, 2.0], [1.5, 1.0, 2.0]], dt)


@pytest.mark.filterwarnings("ignore:invalid value encountered in remainder")
def test_remainder_divisor_gradient_is_nan_at_a_nan(bk):
    """d/dx2 = -floor(x1 / x2): NaN where an input is NaN (it was 0), as torch's."""
    dt = bk.float_dtype
    a = gg.Variable(np.array([NAN, 5.0, 7.0], dt))
    b = gg.Variable(np.array([2.0, NAN, 2.0], dt))
    gg.sum(gg.array_api.remainder(a, b)).backward()
    _check([a.grad, b.grad], [[1.0, 1.0, 1.0], [NAN, NAN, -3.0]], dt)
