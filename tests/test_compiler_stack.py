"""The stack rewrite (gpugrad/compiler/stack.py): a gradient summed over products
``a_k.T @ b_k`` whose rows line up is one product of stacked rows. It adds in another order
than the sum of products, so the planned program's gradients are compared with the first,
step-by-step run: float64 to 1e-12, float32 in ulps (helpers.assert_orders_agree)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_orders_agree

import gpugrad as gg
from gpugrad import optim
from gpugrad.compiler import plan, products, stack


@pytest.fixture(autouse=True)
def numpy_tier(monkeypatch):
    """These tests read the NumPy tier's code unless they ask for the native one."""
    monkeypatch.setenv("GPUGRAD_JIT", "0")


def _rnn(dtype, steps=6, n=5, n_in=3, hidden=4, seed=1):
    """An Elman net's loss graph, its parameters and a feed (the benchmark's ``rnn``)."""
    rng = np.random.default_rng(seed)
    Wx = gg.Variable((rng.standard_normal((n_in, hidden)) * 0.5).astype(dtype), name="Wx")
    Wh = gg.Variable((rng.standard_normal((hidden, hidden)) * 0.5).astype(dtype), name="Wh")
    b = gg.Variable(rng.standard_normal(hidden).astype(dtype), name="b")
    x = gg.Placeholder((steps, n, n_in), dtype, name="x")
    h = gg.tanh(x[0] @ Wx + b)
    for t in range(1, steps):
        h = gg.tanh(x[t] @ Wx + h @ Wh + b)
    loss = gg.sum(h * h)
    feed = {x: rng.standard_normal((steps, n, n_in)).astype(dtype)}
    return loss, [Wx, Wh, b], feed


def _stacked_lines(loss, wrt):
    (prog,) = loss._schedule(tuple(wrt))[0].programs.values()
    lines = [line.split("  #")[0].strip() for line in prog.source.splitlines()]
    return [line for line in lines if ".reshape(-1, " in line and ".T, " in line], lines


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_rnn_weight_gradients_are_one_product_each(numpy_backend, dtype):
    """Both weights' gradients (the input weight over the rows of x, the recurrent one over
    the states) are one product each, and equal the step-by-step sums of products."""
    loss, wrt, feed = _rnn(dtype)
    first = gg.gradients(loss, wrt, feed=feed)  # the checked interpreter
    for _ in range(2):
        got = gg.gradients(loss, wrt, feed=feed)  # the planned program
    for a, e in zip(got, first):
        assert a.dtype == e.dtype
        assert_orders_agree(a, e)
    stacked, lines = _stacked_lines(loss, wrt)
    assert len(stacked) == 2
    assert stacked[0].startswith("g") and "v0[0:6].reshape(-1, 3).T" in stacked[0]
    assert "[0:5].reshape(-1, 4).T" in stacked[1] and "[1:6].reshape(-1, 4)" in stacked[1]
    assert not any(".T, c" in line for line in lines)  # no product per step is left
    # the forward's x[t] @ Wx: one product of x's rows, written into the rows of a buffer
    assert "sx_ = v0[0:6].reshape(-1, 3)" in lines
    assert sum(line.startswith("np.dot(sx_[") for line in lines) == 1
    # the 5 products g @ Wh.T read one transposed copy of Wh
    assert sum(line.startswith("np.copyto(") and "v7.T)" in line for line in lines) == 1
    assert not any(".T, B" in line and line.startswith("c") for line in lines)


def test_training_steps_match_eager_training(numpy_backend):
    """Ten SGD steps of the graph (planned, stacked, from its second step) follow ten eager
    steps of the same net (float64, 1e-12)."""
    params = []
    for graph in (True, False):
        loss, wrt, feed = _rnn("float64", steps=5, seed=3)
        (xs,) = feed.values()
        opt = optim.SGD(wrt, lr=0.1)
        Wx, Wh, b = wrt
        for _ in range(10):
            if graph:
                opt.minimize(loss, feed=feed)
                continue
            h = gg.tanh(gg.asarray(xs[0]) @ Wx + b)
            for t in range(1, 5):
                h = gg.tanh(gg.asarray(xs[t]) @ Wx + h @ Wh + b)
            opt.zero_grad()
            gg.sum(h * h).backward()
            opt.step()
        params.append([gg.to_numpy(p.data).copy() for p in wrt])
    for a, e in zip(*params):
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-14)
    assert not np.allclose(params[0][1], _rnn("float64", steps=5, seed=3)[1][1].data)


def test_rows_that_do_not_line_up_stay_products(numpy_backend):
    """One row of x read twice (two values at one row) cannot be one product of rows: the
    sum stays as it was, and is right."""
    x = gg.Placeholder((3, 4, 2), "float64", name="x")
    W = gg.Variable(np.linspace(-1, 1, 6).reshape(2, 3), name="W")
    loss = gg.sum(gg.tanh(x[0] @ W) * gg.tanh(x[0] @ W + 1.0) + gg.tanh(x[2] @ W))
    feed = {x: np.linspace(-2, 2, 24).reshape(3, 4, 2)}
    first = gg.gradients(loss, [W], feed=feed)
    got = gg.gradients(loss, [W], feed=feed)
    np.testing.assert_allclose(got[0], first[0], rtol=1e-12, atol=1e-14)
    stacked, lines = _stacked_lines(loss, [W])
    assert stacked == []
    assert sum(".T, " in line for line in lines) == 3


def test_native_tier_reads_the_same_rows(numpy_backend, native):
    """The native tier's program (its fused kernels write the rows of the stacks) gives the
    gradients of the step-by-step run."""
    loss, wrt, feed = _rnn("float64")
    first = gg.gradients(loss, wrt, feed=feed)
    for _ in range(2):
        got = gg.gradients(loss, wrt, feed=feed)
    for a, e in zip(got, first):
        assert_orders_agree(a, e)
    stacked, _ = _stacked_lines(loss, wrt)
    assert len(stacked) == 2


def test_compiled_rnn_matches_eager(numpy_backend):
    """gg.compile of the same net gives eager's gradients (float64, 1e-12)."""
    loss, wrt, feed = _rnn("float64")
    (xs,) = feed.values()
    Wx, Wh, b = wrt

    def f(x):
        h = gg.tanh(x[0] @ Wx + b)
        for t in range(1, x.shape[0]):
            h = gg.tanh(x[t] @ Wx + h @ Wh + b)
        return gg.sum(h * h)
    step = gg.compile(f)
    for _ in range(3):
        for p in wrt:
            p.grad = None
        step(gg.asarray(xs)).backward()
    got = [gg.to_numpy(p.grad) for p in wrt]
    for p in wrt:
        p.grad = None
    f(gg.asarray(xs)).backward()
    for a, p in zip(got, wrt):
        np.testing.assert_allclose(a, gg.to_numpy(p.grad), rtol=1e-12, atol=1e-14)


def test_plan_places_a_stack_or_gives_it_up():
    """The members of a Stack get the rows of one buffer held for the whole program (no
    later value takes it); a member handed back cannot, and the stack gets no buffer."""
    def prog_with(st):
        return [plan.Instr([], [("a", (2,), "f8")], None, True),
                plan.Instr(["a"], [("b", (2,), "f8")], None, True),
                plan.Instr(["a", "b"], [("s", (2,), "f8")], None, True, stacks=[st]),
                plan.Instr(["s"], [("t", (2,), "f8")], None, True)]
    st = plan.Stack(["b", "a"], (2,), "f8")
    where, shapes = plan.assign(prog_with(st), escapes={"t"})
    assert (where["a"], where["b"]) == (f"{st.buffer}[1]", f"{st.buffer}[0]")
    assert shapes[st.buffer] == ((2, 2), "f8")
    assert where["s"] != st.buffer
    st = plan.Stack(["b", "a"], (2,), "f8")
    where, _ = plan.assign(prog_with(st), escapes={"t", "a"})
    assert st.buffer is None and "a" not in where and where["b"] != where.get("s")


def test_summands_reads_only_additions():
    assert stack.summands(("add", ("name", "a"), ("name", "b"))) == ["a", "b"]
    assert stack.summands(("multiply", ("name", "a"), ("name", "b"))) is None
    assert stack.summands(("add", ("name", "a"), ("const", 1.0))) is None


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_long_stacks_are_cut_into_pieces_below_the_threading_size(numpy_backend, dtype):
    """The benchmark's shapes (16 steps, batch 32, 16 inputs, 64 hidden): every product of
    stacked rows stays at or below MAX_WORK multiply-adds (pieces added in order), and the
    gradients agree with the step-by-step run."""
    loss, wrt, feed = _rnn(dtype, steps=16, n=32, n_in=16, hidden=64, seed=4)
    first = gg.gradients(loss, wrt, feed=feed)
    for _ in range(2):
        got = gg.gradients(loss, wrt, feed=feed)
    for a, e in zip(got, first):  # float32: sums over 512 rows, in another order
        assert_orders_agree(a, e, ulps=16)
    _, lines = _stacked_lines(loss, wrt)
    assert sum(line.startswith("np.dot(sx_[") for line in lines) == 2  # 512 rows by 16: 2
    assert sum("np.dot(sa_[" in line for line in lines) == 2 + 8  # 512 by 16, 480 by 64
    assert "np.dot(sa_[420:480].T, sb_[420:480]" in "\n".join(lines)
    assert products.pieces(480, 64 * 64) * 64 * 64 <= products.MAX_WORK


def test_a_matrix_read_transposed_once_or_twice_is_not_copied(numpy_backend):
    """Two products g @ W.T (fewer than NT_USES) read W through its transposed view."""
    loss, wrt, feed = _rnn("float64", steps=3)
    for _ in range(3):
        gg.gradients(loss, wrt, feed=feed)
    _, lines = _stacked_lines(loss, wrt)
    assert products.NT_USES == 3
    assert not any(line.startswith("np.copyto(") for line in lines)
    assert sum(".T, B" in line and line.startswith("c") for line in lines) == 2


def test_rows_in_another_order_are_one_product_in_their_order(numpy_backend):
    """Products of W by x's rows 2, 0, 1 (in that order) are one product of rows 0 to 2,
    each step reading its own row; rows with a gap (0 and 2) stay two products."""
    x = gg.Placeholder((4, 3, 2), "float64", name="x")
    W = gg.Variable(np.linspace(-1, 1, 10).reshape(2, 5), name="W")
    feed = {x: np.linspace(-3, 3, 24).reshape(4, 3, 2)}
    for rows, merged in (((2, 0, 1), True), ((0, 2), False)):
        total = None
        for j, t in enumerate(rows):
            term = gg.tanh(x[t] @ W) * float(j + 1)
            total = term if total is None else total + term
        loss = gg.sum(total)
        first = gg.gradients(loss, [W], feed=feed)
        got = gg.gradients(loss, [W], feed=feed)
        np.testing.assert_allclose(got[0], first[0], rtol=1e-12, atol=1e-14)
        _, lines = _stacked_lines(loss, [W])
        assert ("sx_ = v0[0:3].reshape(-1, 2)" in lines) is merged


def test_a_batch_first_rnn_serves_every_batch_size(numpy_backend):
    """Batch-first steps (``x[:, t]``, not rows of x): the states and the dz are stacked
    with the batch symbolic (gpugrad.compiler.batch), and one program gives the
    step-by-step gradients at batch sizes 4 and 7."""
    rng = np.random.default_rng(5)
    Wx = gg.Variable(rng.standard_normal((3, 4)) * 0.5, name="Wx")
    Wh = gg.Variable(rng.standard_normal((4, 4)) * 0.5, name="Wh")
    x = gg.Placeholder((None, 5, 3), "float64", name="x")
    h = gg.tanh(x[:, 0] @ Wx)
    for t in range(1, 5):
        h = gg.tanh(x[:, t] @ Wx + h @ Wh)
    loss = gg.sum(h * h)
    for n in (4, 7, 4):
        feed = {x: rng.standard_normal((n, 5, 3))}
        first = [gg.to_numpy(g).copy() for g in gg.gradients(loss, [Wx, Wh], feed=feed)]
        sched = loss._schedule((Wx, Wh))[0]
        for _ in range(2):
            got = gg.gradients(loss, [Wx, Wh], feed=feed)
        for a, e in zip(got, first):
            np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-14)
    (prog,) = sched.programs.values()
    assert prog.frames is not None  # one program for every batch size
    lines = [line.split("  #")[0].strip() for line in prog.source.splitlines()]
    assert "for r_ in range(16384, sa_.shape[0], 16384):" in lines  # pieces at run time
    assert sum(".T, c" in line for line in lines) == 5  # x[:, t] are views: per product


def test_layout_lines_rows_up_across_sums():
    """Rows of an array keep their rows and the other side follows; a value shared with a
    later sum keeps its row there; rows that do not line up, or a value on both sides of
    a sum, leave the sum as it was (None)."""
    lay = stack.Layout({"x0": ("part", "x", 0), "x1": ("part", "x", 1),
                        "x2": ("part", "x", 2)}, unplanned={"view"})
    (kx, sx), (kd, sd) = lay.place(["x2", "x1", "x0"], ["d2", "d1", "d0"])
    assert (kx, sx, sd) == (("part", "x"), 0, 0)
    assert [lay.pos[d] for d in ("d0", "d1", "d2")] == [(kd, 0), (kd, 1), (kd, 2)]
    (kh, sh), (kd2, sd2) = lay.place(["h0", "h1"], ["d1", "d2"])  # h[t-1] with d[t]
    assert (kd2, sd2, sh) == (kd, 1, 0) and lay.pos["h1"] == (kh, 1)
    assert lay.place(["h0", "h1"], ["d2", "d1"]) is None  # another order
    assert lay.place(["x0", "x2"], ["e0", "e1"]) is None  # a gap in x's rows
    assert lay.place(["p", "q"], ["q", "r"]) is None  # q on both sides
    assert lay.place(["view", "v2"], ["f0", "f1"]) is None  # a view cannot be planned
    assert lay.place(["d0", "h0"], ["g0", "g1"]) is None  # rows of two arrays
