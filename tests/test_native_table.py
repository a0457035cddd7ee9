"""A fusion run longer than fuse.MAX_MEMBERS runs as one kernel over a table of data pointers
(gpugrad.compiler.native_table): same numbers as the NumPy tier (float64 1e-12, float32 4
ulps), whatever the batch size, with Variables rebound or strided, from two threads, and
never through the address of an array that is gone."""

from __future__ import annotations

import gc
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from helpers import assert_orders_agree, assert_ulp_close

import gpugrad as gg
from gpugrad.compiler import native_table

pytest.importorskip("numba")


@pytest.fixture
def cache(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("GPUGRAD_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "table"))
    with gg.use_backend("numpy"):
        yield monkeypatch


def _agree(a, b, dtype):
    """float64: 1e-12; float32: 16 ulps of the array's magnitude: a gradient through 20 to
    30 sigmoids is a product of as many factors, each with the kernels' exp (within 1.2 ulps)
    or NumPy's (2.3), and their errors add up (up to 9.5 ulps seen)."""
    if dtype == "float64":
        assert_orders_agree(a, b, rtol=1e-12, atol=1e-14)
    else:
        assert_ulp_close(a, b, ulps=16)


def _chain(dtype, links=30, n=5, seed=0):
    rng = np.random.default_rng(seed)
    ws = [gg.Variable(rng.uniform(0.5, 1.5, n).astype(dtype)) for _ in range(links)]
    y0 = gg.Placeholder((n,), dtype, name="y0")
    y = y0
    for w in ws:
        y = gg.sigmoid(y * w + 0.1)
    return ws, y0, gg.sum(y), rng.standard_normal(n).astype(dtype)


def _tables(sym):
    progs = [p for s in sym._schedules.values() for p in s.programs.values()]
    assert progs and all(p.tier == "native" for p in progs)
    return [k for p in progs for _, k in p.kernels if isinstance(k, native_table.Table)]


def _grads(monkeypatch, mode, loss, wrt, feed):
    monkeypatch.setenv("GPUGRAD_JIT", mode)
    for s in loss._schedules.values():
        s.forget()
    gg.gradients(loss, wrt, feed=feed)
    return [np.array(g) for g in gg.gradients(loss, wrt, feed=feed)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_long_chain_runs_as_two_table_kernels(cache, dtype):
    ws, y0, loss, Y = _chain(dtype)
    want = _grads(cache, "0", loss, ws, {y0: Y})
    got = _grads(cache, "now", loss, ws, {y0: Y})
    tables = _tables(loss)
    assert len(tables) == 2  # the forward sweep and the backward one
    assert all(len(t.group.members) > 24 for t in tables)
    for a, b in zip(got, want):
        _agree(a, b, dtype)
    Y2 = Y * 0.5  # another feed: a new address table, the same numbers as NumPy
    got2 = [np.array(g) for g in gg.gradients(loss, ws, feed={y0: Y2})]
    for a, b in zip(got2, _grads(cache, "0", loss, ws, {y0: Y2})):
        _agree(a, b, dtype)


def test_rebound_and_strided_variables_are_read_where_they_are_now(cache):
    ws, y0, loss, Y = _chain("float64", links=30)
    _grads(cache, "now", loss, ws, {y0: Y})
    rng = np.random.default_rng(1)
    for k in range(4):
        for j, w in enumerate(ws):
            if (j + k) % 3 == 0:  # a new array; the old one is dropped
                w.data = rng.uniform(0.5, 1.5, 5)
            elif (j + k) % 3 == 1:  # a strided view: read through a copy
                w.data = rng.uniform(0.5, 1.5, 10)[::2]
        ws[0].data *= 1.5  # changed in place: the same address, new numbers
        gc.collect()
        junk = [np.full(5, 1e300) for _ in range(200)]  # reuse freed memory
        got = [np.array(g) for g in gg.gradients(loss, ws, feed={y0: Y})]
        del junk
        for a, b in zip(got, _numpy_grads(ws, Y)):
            assert_orders_agree(a, b, rtol=1e-12, atol=1e-14)
    assert _tables(loss)


def _numpy_grads(ws, Y):
    """The chain's gradients in NumPy, by hand."""
    ys = [np.asarray(Y, np.float64)]
    for w in ws:
        ys.append(1.0 / (1.0 + np.exp(-(ys[-1] * np.asarray(w.data) + 0.1))))
    g = np.ones_like(ys[-1])
    out = []
    for j in range(len(ws) - 1, -1, -1):
        gp = g * ys[j + 1] * (1.0 - ys[j + 1])
        out.append(gp * ys[j])
        g = gp * np.asarray(ws[j].data)
    return out[::-1]


def test_the_address_table_holds_the_arrays_it_points_into(cache):
    ws, y0, loss, Y = _chain("float32", links=30)
    _grads(cache, "now", loss, ws, {y0: Y})
    assert _tables(loss)
    progs = [p for s in loss._schedules.values() for p in s.programs.values()]
    held = [e for p in progs for n, k in p.kernels if isinstance(k, native_table.Table)
            for e in p.fn.__globals__[f"TB_{n}"].entries.values()]
    assert held
    for *_, table, dyn, planned in held:
        arrays = dyn + planned
        assert [a.__array_interface__["data"][0] for a in arrays] == list(table[:-1])
    assert any(any(a is w.data for a in dyn) for *_, dyn, _ in held for w in ws)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_batch_symbolic_chain_runs_every_batch_size(cache, dtype):
    x = gg.Placeholder((None, 3), dtype, name="x")
    z = gg.Placeholder((None, 3), dtype, name="z")
    v = gg.Placeholder((), dtype, name="v")
    y = x
    for _ in range(20):
        y = gg.sigmoid(y * z + v)
    loss = gg.sum(y)
    rng = np.random.default_rng(2)
    feeds = {n: (rng.standard_normal((n, 3)).astype(dtype),
                 rng.uniform(0.5, 1.5, (n, 3)).astype(dtype)) for n in (3, 5, 1, 7)}
    want = {}
    for mode in ("0", "now"):
        cache.setenv("GPUGRAD_JIT", mode)
        for s in loss._schedules.values():
            s.forget()
        for n in (3, 5, 3, 1, 7, 5):
            X, Z = feeds[n]
            feed = {x: X, z: Z, v: np.asarray(0.1 * n, dtype)}
            got = [np.array(g) for g in gg.gradients(loss, [x, z], feed=feed)]
            if mode == "0":
                want[n] = got
            else:
                for a, b in zip(got, want[n]):
                    _agree(a, b, dtype)
    tables = _tables(loss)
    assert tables and any(k.scalars for k in tables)  # v, a single element: a scalar
    (sched,) = [s for s in loss._schedules.values() if s.programs]
    (prog,) = sched.programs.values()  # one program, for every batch size
    assert prog.frames is not None and prog.frames.made >= 4


def test_two_threads_share_a_table_kernel(cache):
    ws, y0, loss, Y = _chain("float64", links=40)
    Ys = [Y * (1 + k / 10) for k in range(6)]
    want = [_numpy_grads(ws, A) for A in Ys]
    _grads(cache, "now", loss, ws, {y0: Y})

    def work(k):
        return all(np.allclose(np.asarray(a), b, rtol=1e-12, atol=1e-14)
                   for _ in range(20) for A, w in zip(Ys, want)
                   for a, b in zip(gg.gradients(loss, ws, feed={y0: A}), w))
    with ThreadPoolExecutor(2) as pool:
        assert all(pool.map(work, range(2)))
    assert _tables(loss)
