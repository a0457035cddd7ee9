"""A graph called again with the same arrays (the same feed objects, the same Variables'
arrays) skips the front door's shape and dtype checks and its kernels' address tables are
reused (gpugrad.compiler.schedule, gpugrad.compiler.native_table); anything else is checked
in full: a feed replaced (by another shape, another dtype), a feed or a Variable changed in
place, a Variable rebound. On both tiers, the numbers are the ones a first call gives."""

from __future__ import annotations

import numpy as np
import pytest

import gpugrad as gg
from gpugrad.compiler import native_table, plan

TIERS = ["0", "now"]


@pytest.fixture(params=TIERS)
def tier(request, monkeypatch, tmp_path_factory):
    if request.param == "now":
        pytest.importorskip("numba")
        monkeypatch.setenv("GPUGRAD_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "table"))
    monkeypatch.setenv("GPUGRAD_JIT", request.param)
    with gg.use_backend("numpy"):
        yield request.param


def _chain(links=30, n=5):
    rng = np.random.default_rng(0)
    ws = [gg.Variable(rng.uniform(0.5, 1.5, n)) for _ in range(links)]
    y0 = gg.Placeholder((n,), "float64", name="y0")  # (test_native_table's kernels)
    y = y0
    for w in ws:
        y = gg.sigmoid(y * w + 0.1)
    return ws, y0, gg.sum(y)


def _fresh(loss, ws, feed):
    """The gradients a first call gives (no program yet: the step-by-step run)."""
    for s in loss._schedules.values():
        s.forget()
        s.checked = False
    return [np.array(g) for g in gg.gradients(loss, ws, feed=feed)]


def _same(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-12, atol=1e-15)


def _warm(loss, ws, feed):
    for _ in range(3):
        got = gg.gradients(loss, ws, feed=feed)
    (sched,) = [s for s in loss._schedules.values() if s.programs]
    assert sched._last[6] and sched._last[6][0] is feed[next(iter(feed))]  # the fast path's
    return got


def test_a_feed_replaced_by_another_array_shape_or_dtype_is_checked(tier):
    ws, y0, loss = _chain()
    Y = np.random.default_rng(1).standard_normal(5)
    _warm(loss, ws, {y0: Y})
    Y2 = np.random.default_rng(2).standard_normal(5)  # another array
    _same(gg.gradients(loss, ws, feed={y0: Y2}), _fresh(loss, ws, {y0: Y2}))
    _warm(loss, ws, {y0: Y2})
    with pytest.raises(gg.FeedError, match=r"Placeholder 'y0'.*\(4,\).*\(5,\)"):
        gg.gradients(loss, ws, feed={y0: np.ones(4)})
    _warm(loss, ws, {y0: Y2})
    with pytest.raises(gg.FeedError, match=r"^Placeholder 'y0': fed dtype float32 \(5,\) "
                                           "but it was declared float64"):
        gg.gradients(loss, ws, feed={y0: Y2.astype(np.float32)})
    _same(gg.gradients(loss, ws, feed={y0: Y2}), _fresh(loss, ws, {y0: Y2}))


def test_a_feed_reshaped_or_retyped_in_place_is_checked(tier):
    """The same fed array object with its ``shape`` or ``dtype`` set in place since the last
    run: the full check names it (the program would read its memory as it was)."""
    ws, y0, loss = _chain()
    Y = np.random.default_rng(1).standard_normal(5)
    _warm(loss, ws, {y0: Y})
    Y.shape = (5, 1)
    with pytest.raises(gg.FeedError, match=r"Placeholder 'y0'.*\(5, 1\).*\(5,\)"):
        gg.gradients(loss, ws, feed={y0: Y})
    Y.shape = (5,)
    _warm(loss, ws, {y0: Y})
    Y.dtype = np.int64  # the same 8 bytes an element, read as integers
    with pytest.raises(gg.FeedError, match=r"Placeholder 'y0': fed dtype int64"):
        gg.gradients(loss, ws, feed={y0: Y})
    Y.dtype = np.float64
    _same(gg.gradients(loss, ws, feed={y0: Y}), _fresh(loss, ws, {y0: Y.copy()}))


def test_a_feed_changed_in_place_is_read_anew(tier):
    ws, y0, loss = _chain()
    Y = np.random.default_rng(1).standard_normal(5)
    before = [np.array(g) for g in _warm(loss, ws, {y0: Y})]
    Y *= 3.0  # the same array object, new numbers
    got = gg.gradients(loss, ws, feed={y0: Y})
    _same(got, _fresh(loss, ws, {y0: Y.copy()}))
    assert not np.allclose(np.asarray(got[0]), before[0], rtol=1e-6, atol=0)  # (tiny: 30 links)


def test_a_variable_rebound_or_changed_in_place_is_read_anew(tier):
    ws, y0, loss = _chain()
    Y = np.random.default_rng(1).standard_normal(5)
    _warm(loss, ws, {y0: Y})
    ws[3].data = ws[3].data * 0.5  # rebound: a new array of the same shape
    _same(gg.gradients(loss, ws, feed={y0: Y}), _fresh(loss, ws, {y0: Y}))
    _warm(loss, ws, {y0: Y})
    ws[7].data *= 1.5  # in place: the same array
    _same(gg.gradients(loss, ws, feed={y0: Y}), _fresh(loss, ws, {y0: Y}))


def test_a_variable_rebound_to_another_shape_fails_as_on_a_first_call(tier):
    ws, y0, loss = _chain()
    Y = np.random.default_rng(1).standard_normal(5)
    _warm(loss, ws, {y0: Y})
    ws[2].data = np.ones(4)
    with pytest.raises(gg.OpError, match=r"multiply: shapes \(5,\) and \(4,\) cannot be "
                                         "broadcast"):
        gg.gradients(loss, ws, feed={y0: Y})


def _table_entries(loss):
    progs = [p for s in loss._schedules.values() for p in s.programs.values()]
    return {n: p.fn.__globals__[f"TB_{n}"] for p in progs for n, k in p.kernels
            if isinstance(k, native_table.Table)}


def test_an_address_table_outlives_a_rebound_array_it_does_not_read(monkeypatch,
                                                                     tmp_path_factory):
    pytest.importorskip("numba")
    monkeypatch.setenv("GPUGRAD_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "table"))
    monkeypatch.setenv("GPUGRAD_JIT", "now")
    ws, y0, loss = _chain(links=30)
    extra = gg.Variable(np.ones(5))  # read by a step that is not in a table kernel
    loss2 = loss + gg.sum(gg.matmul(gg.reshape(extra, (1, 5)), gg.reshape(extra, (5, 1))))
    Y = np.random.default_rng(1).standard_normal(5)
    _warm(loss2, ws + [extra], {y0: Y})
    tables = _table_entries(loss2)
    assert tables
    made = {n: tb.last[4] for n, tb in tables.items()}
    extra.data = np.full(5, 2.0)  # the tables' arrays are the same: they are kept
    got = gg.gradients(loss2, ws + [extra], feed={y0: Y})
    assert all(tables[n].last[4] is t for n, t in made.items())
    np.testing.assert_allclose(np.asarray(got[-1]), np.full(5, 4.0))
    ws[0].data = ws[0].data.copy()  # an array a table reads: a new table
    gg.gradients(loss2, ws + [extra], feed={y0: Y})
    assert any(tables[n].last[4] is not t for n, t in made.items())


def test_a_table_step_writes_below_the_scratch_rows_it_reads(monkeypatch, tmp_path_factory):
    pytest.importorskip("numba")
    monkeypatch.setenv("GPUGRAD_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "table"))
    monkeypatch.setenv("GPUGRAD_JIT", "now")
    ws, y0, loss = _chain(links=30)
    _warm(loss, ws, {y0: np.ones(5)})
    progs = [p for s in loss._schedules.values() for p in s.programs.values()]
    checked = 0
    for p in progs:
        for n, k in p.kernels:
            if not isinstance(k, native_table.Table):
                continue
            steps = p.fn.__globals__[f"ST_{n}"]
            env = p.fn.__globals__
            fresh = env.get(f"S_{n}_all", (0,))[0]  # rows of the block handed back
            first = env[f"TB_{n}"].last[4].shape[0] - 1 + fresh  # the first scratch row
            for (_, stored, reads, _), row in zip(k.steps, steps[1:]):
                refs = [int(r) for r in row[1:1 + len(stored) + len(reads)]]
                out, into = refs[:len(stored)], refs[len(stored):]
                rows = [r for r in into if r >= first]
                assert all(o < r for o in out if o >= first for r in rows)
                checked += bool(rows)
    assert checked  # the backward sweep's running gradient goes through scratch rows


def test_small_planned_buffers_are_aligned_and_spaced_apart():
    bufs = [plan.empty(np, (16,), "float32") for _ in range(50)]
    starts = sorted(b.ctypes.data for b in bufs)
    assert min(np.diff(starts)) >= plan.SPACED
    assert all(b.shape == (16,) and b.flags.c_contiguous and b.flags.writeable for b in bufs)
    assert all(b.ctypes.data % plan.ALIGN == 0 for b in bufs)
    big = plan.empty(np, (100, 3), "float64")  # large enough already: a plain array
    assert big.base is None and big.shape == (100, 3) and big.dtype == np.float64
    assert plan.empty(np, (), "float64").shape == ()
