"""Basic indexing in planned programs (getitem's lowering, gpugrad/ops/indexing.py): the
forward is NumPy's own view, inline, and the gradient writes ``g`` into a zeros buffer kept
across runs. Each is checked against the generic code, which a schedule's first run at an
input signature goes through (float64 to 1e-12: helpers.assert_orders_agree), and the fusion
pass's handling of gradients passed on unchanged (gpugrad/compiler/fuse.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_orders_agree

import gpugrad as gg
from gpugrad.compiler import fuse, plan

TOL = {"rtol": 1e-12, "atol": 1e-14}

KEYS = [0, -1, (slice(1, 3),), (Ellipsis, 1), (None, 2), (1, slice(None, None, -2)), (),
        (slice(None), None, slice(2, None)), (slice(0, 4, 2), 3), (1, 2, 0)]


def _source(sym):
    return "\n".join(p.source for s in sym._schedules.values() for p in s.programs.values())


@pytest.mark.parametrize("key", KEYS, ids=repr)
def test_a_basic_index_is_inline_and_its_gradient_equals_the_rules(key, numpy_backend):
    """Value and gradients of ``sum(sin(x[key] * w))``: the planned runs (fresh feeds each
    time, so a stale zeros buffer would show) equal the generic first run's."""
    rng = np.random.default_rng(3)
    x = gg.Placeholder((4, 5, 3), "float64", name="x")
    w = gg.Variable(rng.standard_normal((4, 5, 3)))
    v = gg.Variable(rng.standard_normal((4, 5, 3)))
    part = (x * v)[key]
    loss = gg.sum(gg.sin(part * w[key]))
    for _ in range(3):
        feed = {x: rng.standard_normal((4, 5, 3))}
        got = gg.value_and_gradients(loss, [v, w], feed=feed)
        for s in loss._schedules.values():
            s.forget()
        want = gg.value_and_gradients(loss, [v, w], feed=feed)  # a first run: the rules
        assert_orders_agree(np.asarray(got[0]), np.asarray(want[0]), **TOL)
        for a, b in zip(got[1], want[1]):
            assert_orders_agree(np.asarray(a), np.asarray(b), **TOL)
        gg.value_and_gradients(loss, [v, w], feed=feed)  # planned from here on
    forward = [line.split("#")[0] for line in _source(loss).splitlines()
               if "# getitem" in line and "(vjp)" not in line]
    assert forward and not any("o_, " in line for line in forward)  # no call of the rule


def test_the_slices_of_a_sequence_sum_their_gradients(numpy_backend):
    """An Elman step over the slices ``x[t]`` of a weight: each slice's gradient is written
    into zeros (planned) and the slices' gradients add up as the rules' do."""
    rng = np.random.default_rng(0)
    xs = gg.Variable(rng.standard_normal((5, 4, 3)))
    Wx = gg.Variable(rng.standard_normal((3, 6)))
    Wh = gg.Variable(rng.standard_normal((6, 6)) * 0.3)
    y = gg.Placeholder((4, 6), "float64", name="y")
    h = gg.tanh(xs[0] @ Wx)
    for t in range(1, 5):
        h = gg.tanh(xs[t] @ Wx + h @ Wh)
    loss = gg.sum((h - y) * (h - y))
    feed = {y: rng.standard_normal((4, 6))}
    first = gg.value_and_gradients(loss, [xs, Wx, Wh], feed=feed)
    for _ in range(2):
        later = gg.value_and_gradients(loss, [xs, Wx, Wh], feed=feed)
        for a, b in zip(later[1], first[1]):
            assert_orders_agree(np.asarray(a), np.asarray(b), **TOL)
    src = _source(loss)
    assert ".fill(0)" in src and "[4, ...] = " in src


def test_a_0d_index_gives_an_array(numpy_backend):
    """``x[1, 2]`` and an index of a 0-d value (``s[...]``, ``s[()]``) in a planned program
    are 0-d arrays, as the rule's values are, with the rule's numbers."""
    x = gg.Placeholder((3, 4), "float64", name="x")
    s = gg.sum(x * x)
    loss = x[1, 2] * 2.0 + gg.sum(x[1:]) + s[...] + s[()]
    X = np.arange(12.0).reshape(3, 4)
    want = 2.0 * X[1, 2] + X[1:].sum() + 2 * (X * X).sum()
    for _ in range(3):
        (value, (g,)) = gg.value_and_gradients(loss, [x], feed={x: X})
        assert float(value) == want
        assert g[1, 2] == 2.0 + 1.0 + 4 * X[1, 2]
    assert "[1, 2, ...]" in _source(loss)


@pytest.mark.parametrize("key", KEYS + [(slice(-3, None, 2), Ellipsis), (slice(None, -1),),
                                 (slice(3, 0, -1), None, 1)], ids=repr)
def test_a_spelled_key_selects_what_the_key_selects(key):
    """The index text the lowering writes (gpugrad.ops.indexing._spelled) selects the same
    elements as the key, in the same shape."""
    from gpugrad.ops.indexing import _spelled, normalize_key

    x = np.arange(60.0).reshape(4, 5, 3)
    text = _spelled(normalize_key(key, x.ndim))
    assert text is not None and _spelled(normalize_key((True,), x.ndim)) is None  # a mask
    got = eval(f"x[{text}]", {"x": x})  # the text is the lowering's
    np.testing.assert_array_equal(got, x[key])
    assert type(got) is np.ndarray and got.shape == np.asarray(x[key]).shape


def test_a_gradient_passed_on_unchanged_does_not_start_a_fusion_run():
    """Renames (``c = g``: an add's gradient) are left as names: a run of them would store a
    copy of g, a kernel call for nothing; an elementwise run after them still fuses."""
    f8 = "float64"
    prog = [plan.Instr(["g"], [("c0", (4,), f8)], None, True, alias={"c0": "g"},
                       scalar=("name", "g")),
            plan.Instr(["g"], [("c1", (4,), f8)], None, True, alias={"c1": "g"},
                       scalar=("name", "g")),
            plan.Instr(["c0"], [("a", (4,), f8)], None, True, scalar=("exp", ("name", "c0"))),
            plan.Instr(["a", "c1"], [("b", (4,), f8)], None, True,
                       scalar=("multiply", ("name", "a"), ("name", "c1")))]
    (start, stop, g, _), = fuse.runs(prog, {"g": ((4,), f8)}, keep={"b", "c1"})
    assert (start, stop) == (2, 4)
    assert [m for m, _ in g.members] == ["a", "b"] and g.outputs == ["b"]
    assert not fuse.runs(prog[:2], {"g": ((4,), f8)}, keep={"c0", "c1"})


def test_views_feed_fused_kernels_natively(monkeypatch, tmp_path):
    """The native tier of an Elman step over the slices of a feed, with a strided slice
    read by a fused group (the kernel gets a contiguous copy): its value and gradients equal
    the NumPy tier's, and no kernel only passes a gradient on (an add's)."""
    pytest.importorskip("numba")
    monkeypatch.setenv("GPUGRAD_CACHE_DIR", str(tmp_path))
    rng = np.random.default_rng(1)
    xs = gg.Placeholder((4, None, 6), "float64", name="xs")
    Wx = gg.Variable(rng.standard_normal((3, 5)))
    Wh = gg.Variable(rng.standard_normal((5, 5)) * 0.3)
    b = gg.Variable(rng.standard_normal(5))
    h = gg.tanh(xs[0, :, ::2] @ Wx + b)
    for t in range(1, 4):
        h = gg.tanh(xs[t, :, ::2] @ Wx + h @ Wh + b) * gg.sigmoid(xs[t, :, 1:2])
    loss = gg.sum(h * h)
    feed = {xs: rng.standard_normal((4, 7, 6))}
    results = {}
    with gg.use_backend("numpy"):
        for jit in ("0", "now"):
            monkeypatch.setenv("GPUGRAD_JIT", jit)
            for s in loss._schedules.values():
                s.forget()
            gg.value_and_gradients(loss, [Wx, Wh, b], feed=feed)
            results[jit] = gg.value_and_gradients(loss, [Wx, Wh, b], feed=feed)
    (v0, g0), (v1, g1) = results["0"], results["now"]
    assert_orders_agree(np.asarray(v1), np.asarray(v0), **TOL)
    for a, c in zip(g1, g0):
        assert_orders_agree(np.asarray(a), np.asarray(c), **TOL)
    src = _source(loss)
    assert "# fused" in src and not any(
        line.split("# fused")[1].split(":", 1)[1].strip().startswith("add (vjp)")
        and "|" not in line for line in src.splitlines() if "# fused" in line)
