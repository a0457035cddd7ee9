"""``gg.compile``'s guards: a value the trace read from outside its arguments (a closed-over
or global number, bool, string, Tensor, array, a module attribute) that changes makes the next
call trace again (``cache_info().retraces``), and a Variable is read fresh without a new trace.

Each test's oracle is the same function run eagerly (``fn.fn``), on the current values.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import optim

X = np.array([1.0, 2.0, 3.0])
SCALE = 2.0
SETTINGS = types.ModuleType("settings")  # a module whose attribute the function reads
SETTINGS.shift = 1.0
COUNTER = 0


@pytest.fixture(autouse=True)
def _numpy(numpy_backend):
    yield


def _agrees(f, *args):
    """``f``'s compiled call equals its eager call on the current values; the compiled value."""
    got = float(f(*args))
    assert got == float(f.fn(*args))
    return got


def _x():
    return gg.asarray(X)


def test_a_closed_over_number_rebound_traces_again():
    scale = 2.0
    f = gg.compile(lambda x: gg.sum(x * scale))
    assert _agrees(f, _x()) == 12.0
    scale = 10.0
    assert _agrees(f, _x()) == 60.0
    assert f.cache_info() == (0, 2, 1, 32, 1)
    assert scale == 10.0


def test_a_bool_flag_rebound_traces_again():
    flag = True

    def f(x):
        return gg.sum(x * 2.0) if flag else gg.sum(x)

    f = gg.compile(f)
    assert _agrees(f, _x()) == 12.0
    flag = False
    assert _agrees(f, _x()) == 6.0
    flag = 1  # equal to True, but another type: traced again
    assert _agrees(f, _x()) == 12.0
    assert f.cache_info().retraces == 2 and not isinstance(flag, bool)


def test_a_string_mode_rebound_traces_again():
    mode = "sum"

    def f(x):
        return gg.sum(x) if mode == "sum" else gg.max(x)

    f = gg.compile(f)
    assert _agrees(f, _x()) == 6.0
    mode = "max"
    assert _agrees(f, _x()) == 3.0
    assert f.cache_info().retraces == 1 and mode == "max"


def test_a_closed_over_tensor_rebound_traces_again():
    c = gg.asarray([1.0, 1.0, 1.0])
    f = gg.compile(lambda x: gg.sum(x * c))
    assert _agrees(f, _x()) == 6.0
    c = gg.asarray([3.0, 3.0, 3.0])
    assert _agrees(f, _x()) == 18.0
    assert f.cache_info().retraces == 1


def test_a_closed_over_tensor_written_in_place_traces_again():
    c = gg.asarray([2.0])
    f = gg.compile(lambda x: gg.sum(x) * float(c[0]))  # read on the host during the trace
    assert _agrees(f, _x()) == 12.0
    c[...] = 5.0  # bumps its version
    assert _agrees(f, _x()) == 30.0
    c += 1.0
    assert _agrees(f, _x()) == 36.0
    assert f.cache_info().retraces == 2


def test_a_global_rebound_traces_again():
    global SCALE
    f = gg.compile(_by_global)
    try:
        assert _agrees(f, _x()) == 12.0
        SCALE = 3.0
        assert _agrees(f, _x()) == 18.0
        SETTINGS.shift = 2.0  # a module attribute read by a helper of the same module
        assert _agrees(f, _x()) == 18.0 + 6.0
        assert f.cache_info().retraces == 2
    finally:
        SCALE, SETTINGS.shift = 2.0, 1.0


def _by_global(x):
    return gg.sum(x * SCALE) + _helper(x)


def _helper(x):
    return gg.sum(x * (SETTINGS.shift - 1.0))


def test_a_global_the_function_assigns_is_not_guarded():
    f = gg.compile(_counts)
    for _ in range(3):
        assert float(f(_x())) == 6.0
    assert f.cache_info() == (2, 1, 1, 32, 0) and COUNTER == 1


def _counts(x):
    global COUNTER
    COUNTER += 1
    return gg.sum(x)


def test_a_closed_over_numpy_array_by_identity_its_contents_read_per_call():
    a = np.array([1.0, 1.0, 1.0])
    f = gg.compile(lambda x: gg.sum(x * a))
    assert _agrees(f, _x()) == 6.0
    a[...] = 5.0  # in place: read by the next call, no new trace
    assert _agrees(f, _x()) == 30.0
    assert f.cache_info().retraces == 0
    a = np.array([2.0, 2.0, 2.0])  # rebound: traced again
    assert _agrees(f, _x()) == 12.0
    assert f.cache_info().retraces == 1


def test_a_variable_is_read_fresh_without_a_new_trace():
    W = gg.Variable([1.0, 1.0, 1.0])
    f = gg.compile(lambda x: gg.sum(x * W))
    opt = optim.SGD([W], lr=0.5)
    for k in range(3):
        loss = f(_x())
        assert float(loss) == float(gg.sum(_x() * W))
        opt.zero_grad()
        loss.backward()
        np.testing.assert_array_equal(gg.to_numpy(W.grad), X)
        opt.step()  # W moves in place
    with gg.no_grad():
        W[...] = 4.0
    assert float(f(_x())) == 24.0
    assert f.cache_info() == (3, 1, 1, 32, 0)
    W = gg.Variable([2.0, 2.0, 2.0])  # another Variable: traced again, and differentiated
    loss = f(_x())
    assert float(loss) == 12.0 and f.cache_info().retraces == 1
    loss.backward()
    np.testing.assert_array_equal(gg.to_numpy(W.grad), X)


def test_unchanged_values_keep_hitting():
    scale, mode, c = 2.0, "sum", gg.asarray([1.0, 2.0, 3.0])
    a = np.ones(3)
    f = gg.compile(lambda x: gg.sum(x * scale * c * a) if mode == "sum" else x)
    for _ in range(4):
        assert _agrees(f, _x()) == 28.0
    scale = float("2.0")  # another float object, the same value: still the trace
    mode = "".join(["s", "um"])
    assert _agrees(f, _x()) == 28.0
    assert f.cache_info() == (4, 1, 1, 32, 0)
    assert f.cache_info().retraces == 0 and scale == 2.0 and mode == "sum"


def test_cache_info_counts_retraces_per_signature():
    scale = 1.0
    f = gg.compile(lambda x: gg.sum(x) * scale, cache_size=4)
    f(_x())
    f(gg.asarray(np.ones((2, 1))))  # a new signature: a miss, not a retrace
    scale = 2.0
    assert float(f(_x())) == 12.0  # its trace is stale: traced again, in its place
    assert float(f(gg.asarray(np.ones((2, 1))))) == 4.0  # the other one too
    assert float(f(_x())) == 12.0
    info = f.cache_info()
    assert (info.hits, info.misses, info.traces, info.retraces) == (1, 4, 2, 2)


def test_guards_name_what_they_read():
    from gpugrad.jit.guards import guard_of
    from gpugrad.jit.jit import Compiled

    scale = 2.0
    check = guard_of(lambda x: gg.sum(x * scale) + _helper(x), Compiled)
    assert check() and scale == 2.0
    assert set(check.reads) == {"closure variable scale", "global gg",
                                "module attribute sum", "global _helper", "global SETTINGS",
                                "module attribute shift"}
    assert guard_of(lambda x: x, Compiled) is None


def test_a_repeated_call_of_the_same_signature_still_sees_what_changed(numpy_backend):
    """The short way for a call like the last (NumPy Tensors of the same shapes, dtypes and
    requires_grad) gives way to the full signature when grad mode, the argument kinds or
    a value the trace read change."""
    calls = []
    scale = 2.0

    @gg.compile
    def f(x, y):
        calls.append(1)
        return gg.sum(x * y) * scale

    x, y = gg.asarray(np.array([1.0, 2.0])), gg.asarray(np.array([3.0, 4.0]))
    assert float(f(x, y)) == float(f(x, y)) == 22.0 and len(calls) == 1
    with gg.no_grad():
        assert float(f(x, y)) == 22.0
    assert len(calls) == 2
    y.data[...] = [5.0, 6.0]
    assert float(f(x, y)) == 34.0 and len(calls) == 2  # (the first trace, from the cache)
    assert float(f(x, np.array([3.0, 4.0]))) == 22.0 and len(calls) == 2  # an ndarray
    x32, y32 = (gg.asarray(np.array(v, "float32")) for v in ([1.0, 2.0], [3.0, 4.0]))
    assert float(f(x32, y32)) == 22.0
    assert len(calls) == 3
    assert float(f(x, y)) == float(f(x, y)) == 34.0 and len(calls) == 3
    scale = 3.0  # a value the trace read: the guard sends it to trace again
    assert float(f(x, y)) == 51.0 and len(calls) == 4
    f.cache_clear()
    assert float(f(x, y)) == 51.0 and len(calls) == 5
