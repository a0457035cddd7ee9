"""The usual training step through ``gg.compile``'s short way (gpugrad.jit.whole.Quick: the
call runs whole in one function; ``loss.backward()`` hands the gradients over with
gpugrad.eager.hand_over; ``opt.step()`` records its writes as one event of the version log):
the same numbers as the general path, bit for bit, and the same semantics.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import eager, nn, optim, versions
from gpugrad.jit.whole import Quick
from gpugrad.sinks import grad_sinks

RNG = np.random.default_rng(0)
X = RNG.standard_normal((8, 5)).astype(np.float32)
Y = RNG.integers(0, 3, 8)


def _model():
    model = nn.MLP((5, 6, 3), activation="sigmoid", seed=1)
    step = gg.compile(lambda x, y: nn.cross_entropy(model(x), y))
    return model, step


def _train(steps: int, short: bool) -> list:
    """Parameters after ``steps`` SGD steps written as users write them; ``short=False``
    forgets the short way before each call (the signature is worked out: Entry.run)."""
    model, step = _model()
    opt = optim.SGD(model.parameters(), lr=0.1)
    x, y = gg.asarray(X), gg.asarray(Y)
    for _ in range(steps):
        if not short:
            step._fast = None
        opt.zero_grad()
        loss = step(x, y)
        loss.backward()
        opt.step()
    if short:
        assert isinstance(step._fast, Quick) and step._fast.entry.direct is not None
    return [gg.to_numpy(p.data).copy() for p in model.parameters()]


def _ready():
    """A model, its compiled loss and arguments, called until the short way runs whole."""
    model, step = _model()
    x, y = gg.asarray(X), gg.asarray(Y)
    for _ in range(3):
        step(x, y).backward()
    assert isinstance(step._fast, Quick) and step._fast.entry.direct is not None
    assert step._fast.entry.direct.fits
    for p in model.parameters():
        p.grad = None
    return model, step, x, y


def test_the_short_way_gives_the_general_paths_parameters_bit_for_bit(numpy_backend,
                                                                      monkeypatch):
    monkeypatch.setenv("GPUGRAD_JIT", "0")  # both on the NumPy tier (no switch part way)
    short, general = _train(6, True), _train(6, False)
    for a, b in zip(short, general):
        np.testing.assert_array_equal(a, b)


def test_gradients_accumulate_when_not_zeroed(numpy_backend):
    model, step, x, y = _ready()
    step(x, y).backward()
    once = [p.grad.copy() for p in model.parameters()]
    step(x, y).backward()
    for p, g in zip(model.parameters(), once):
        np.testing.assert_array_equal(p.grad, g + g)


def test_retain_graph_and_a_second_backward(numpy_backend):
    model, step, x, y = _ready()
    loss = step(x, y)
    loss.backward(retain_graph=True)
    once = [p.grad.copy() for p in model.parameters()]
    loss.backward()
    for p, g in zip(model.parameters(), once):
        np.testing.assert_array_equal(p.grad, g + g)
    with pytest.raises(gg.GradientError, match="already freed"):
        loss.backward()


def test_a_variable_rebound_before_backward_still_gets_its_gradient(numpy_backend):
    model, step, x, y = _ready()
    loss = step(x, y)
    want = [g.copy() for g in loss._node.res[0].grads]
    W = model.parameters()[0]
    W.data = W.data.copy()  # not the array of the call: the shapes are checked instead
    loss.backward()
    for p, g in zip(model.parameters(), want):
        np.testing.assert_array_equal(p.grad, g)


def test_a_gradient_sink_takes_the_general_sweep(numpy_backend):
    model, step, x, y = _ready()
    b = model.parameters()[-1]
    grad_sinks[b] = sink = np.zeros_like(b.data)
    try:
        loss = step(x, y)
        want = loss._node.res[0].grads[-1].copy()
        loss.backward()
    finally:
        grad_sinks.pop(b)
    assert b.grad is sink
    np.testing.assert_array_equal(sink, want)


def test_the_short_ways_hits_are_counted(numpy_backend):
    _, step, x, y = _ready()
    before = step.cache_info().hits
    for _ in range(5):
        step(x, y)
    assert step.cache_info().hits == before + 5
    assert step.cache_info().hits == before + 5  # (reading them counts nothing)


def test_a_write_into_a_saved_variable_after_the_call_is_refused(numpy_backend):
    model, step, x, y = _ready()
    loss = step(x, y)
    W = model.parameters()[-2]  # the last layer's weight: its gradient's sweep reads it
    opt = optim.SGD([W], lr=0.1)
    W.grad = np.ones_like(W.data)
    opt.step()  # (the eager step: in place)
    with pytest.raises(gg.GradientError, match=r"SGD step called at test_compile_quick\.py"):
        loss.backward()


def test_hand_over_adds_as_accumulate_does_to_a_create_graph_gradient(numpy_backend):
    a, b = gg.Variable(np.ones(2)), gg.Variable(np.ones(2))
    for w in (a, b):
        (w * w).sum().backward(create_graph=True)
        assert isinstance(w.grad, gg.Tensor) and w.grad.requires_grad
    with gg.no_grad():
        eager.accumulate(np, [(a, np.full(2, 3.0))])
    eager.hand_over(np, [b], [np.full(2, 3.0)])  # (under grad mode: it adds untaped)
    assert type(a.grad) is type(b.grad)
    np.testing.assert_array_equal(gg.to_numpy(b.grad), [5.0, 5.0])
    np.testing.assert_array_equal(gg.to_numpy(a.grad), gg.to_numpy(b.grad))


def test_one_steps_writes_are_one_event_and_name_each_line(numpy_backend):
    W = gg.Variable(np.ones(3))
    V = gg.Variable(np.ones(2))
    opt = optim.SGD([W, V], lr=0.5)
    for _ in range(4):  # until the step is planned
        W.grad, V.grad = np.ones(3), np.ones(2)
        opt.step()
    y = gg.sum(W * V.sum())
    W.grad, V.grad = np.ones(3), np.ones(2)
    counts = (W.version, V.version)
    opt.step()
    line = f"test_compile_quick.py:{_line() - 1}"
    seq, _, bumped, _ = versions._writes[-1]  # one event: both writes, one sequence number
    assert bumped == [(W._vlog, counts[0] + 1), (V._vlog, counts[1] + 1)]
    assert W._vlog.last == V._vlog.last == seq
    assert (W.version, V.version) == (counts[0] + 1, counts[1] + 1)
    with pytest.raises(gg.GradientError, match=f"SGD step called at {line}"):
        y.backward()
    y = gg.sum(W * V.sum())
    W.grad, V.grad = np.ones(3), np.ones(2)
    opt.step()
    here = _line() - 1
    with pytest.raises(gg.GradientError, match=f"SGD step called at test_compile_quick.py:{here}"):
        y.backward()


def _line() -> int:
    return sys._getframe(1).f_lineno


def test_the_log_holds_at_most_keep_writes_however_they_come(numpy_backend):
    ps = [gg.Variable(np.ones(2)) for _ in range(7)]
    opt = optim.SGD(ps, lr=0.1)
    for _ in range(versions.KEEP):  # events of 7 writes
        for p in ps:
            p.grad = np.ones(2)
        opt.step()
    held = sum(len(e[2]) for e in versions._writes)
    assert versions.KEEP - 7 < held <= versions.KEEP
    big = [gg.Variable(np.ones(1)) for _ in range(versions.KEEP + 5)]
    versions.wrote_many(big, "here")  # one event larger than the log: it alone stays
    assert len(versions._writes) == 1 and len(versions._writes[0][2]) == versions.KEEP + 5
