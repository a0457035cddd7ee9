"""Errors that say what happened: the gpugrad op, both shapes (or dtypes, or devices), and the
user's own call site, for the eager and the graph front end alike.

Each failing call is a one-line lambda, so the expected call site is that lambda's line.
"""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import nn


def fails_at(exc_type, fn):
    """Run ``fn`` (a one-line lambda), expect ``exc_type``, check the message ends with the
    lambda's line as the call site; return the message."""
    with pytest.raises(exc_type) as info:
        fn()
    msg = str(info.value)
    assert msg.endswith(f"; called at test_errors.py:{fn.__code__.co_firstlineno}"), msg
    return msg


def const(bk, shape, dtype=None):
    return gg.asarray(np.ones(shape, dtype or bk.float_dtype))


def var(bk, shape, dtype=None):
    return gg.Variable(np.ones(shape, dtype or bk.float_dtype))


# --- shapes ---------------------------------------------------------------------------------

def test_matmul_message_is_the_issue_example(bk):
    a, b = var(bk, (2, 3)), var(bk, (4, 5))
    msg = fails_at(gg.OpError, lambda: a @ b)
    assert msg.startswith("matmul: shapes (2, 3) and (4, 5) are not aligned: 3 (dim -1 of the "
                          "first) != 4 (dim -2 of the second); called at test_errors.py:")


@pytest.mark.parametrize("sa, sb, expect", [
    ((3,), (4,), (r"matmul: shapes \(3,\) and \(4,\) are not aligned: 3 \(dim -1 of the "
                  r"first\) != 4 \(dim 0 of the second\)")),
    ((2, 3), (4,), r"3 \(dim -1 of the first\) != 4 \(dim 0 of the second\)"),
    ((2, 3, 4), (5, 4, 2), (r"matmul: shapes \(2, 3, 4\) and \(5, 4, 2\) have batch "
                            r"dimensions that do not broadcast: 2 \(dim -1 of the first\) != 5")),
])
def test_matmul_messages(bk, sa, sb, expect):
    a, b = var(bk, sa), const(bk, sb)
    assert re.search(expect, fails_at(gg.OpError, lambda: gg.matmul(a, b)))


@pytest.mark.parametrize("fn, expect", [
    (lambda a, b, c: a + b, (r"^add: shapes \(2, 3\) and \(4, 5\) cannot be broadcast "
                             r"together: 3 \(dim -1 of the first\) != 5 \(dim -1 of the second\)")),
    (lambda a, b, c: gg.maximum(c, a), (r"^maximum: shapes \(3, 1, 4\) and \(2, 3\) cannot be "
                                        r"broadcast together: 4 \(dim -1 of the first\) != 3")),
    (lambda a, b, c: gg.where(a > 0.0, b, c), (r"^where: shapes \(2, 3\), \(4, 5\) and "
                                               r"\(3, 1, 4\) cannot be broadcast")),
])
def test_broadcasting_messages(bk, fn, expect):
    a, b, c = var(bk, (2, 3)), const(bk, (4, 5)), const(bk, (3, 1, 4))
    with pytest.raises(gg.OpError, match=expect) as info:
        fn(a, b, c)
    assert "; called at test_errors.py:" in str(info.value)


def test_concat_stack_reshape_messages(bk):
    a, b, c = var(bk, (2, 3)), var(bk, (2, 4)), var(bk, (3,))
    assert fails_at(gg.OpError, lambda: gg.concat([a, b], axis=0)).startswith(
        "concat: shapes (2, 3), (2, 4): arrays must match except along axis 0, but input 0 "
        "has 3 and input 1 has 4 in dim 1")
    assert "input 0 has 2 and input 1 has 1" in fails_at(
        gg.OpError, lambda: gg.concat([a, c]))
    assert "axis 2 is out of range" in fails_at(gg.OpError, lambda: gg.concat([a, a], axis=2))
    assert fails_at(gg.OpError, lambda: gg.stack([a, b])).startswith(
        "stack: shapes (2, 3), (2, 4): arrays must all have the same shape, but input 0 is "
        "(2, 3) and input 1 is (2, 4)")
    assert fails_at(gg.OpError, lambda: a.reshape(7)).startswith(
        "reshape: cannot reshape (2, 3) (6 elements) into (7,) (7 elements)")
    assert fails_at(gg.OpError, lambda: a.reshape(4, -1)).startswith(
        "reshape: cannot reshape (2, 3) (6 elements) into (4, -1): 6 is not a multiple of 4")


def test_loss_and_layer_messages(bk):
    pred, target = var(bk, (4, 3)), const(bk, (4,))
    assert fails_at(gg.OpError, lambda: nn.mse_loss(pred, target)).startswith(
        "mse_loss: prediction has shape (4, 3) but target has shape (4,)")
    assert fails_at(gg.OpError, lambda: nn.binary_cross_entropy_with_logits(
        pred, target)).startswith("binary_cross_entropy_with_logits: prediction has shape (4, 3)")
    labels = gg.asarray(np.array([0, 1, 2]))
    assert fails_at(gg.OpError, lambda: nn.cross_entropy(pred, labels)).startswith(
        "cross_entropy: logits have shape (4, 3), so targets need shape (4,)")
    layer = nn.Linear(5, 2)
    assert "input has shape (4, 3)" in fails_at(gg.OpError, lambda: layer(pred))


def test_graph_shapes_fail_at_build_when_declared_and_at_run_otherwise(bk):
    dt = bk.float_dtype
    x = gg.Placeholder((None, 3), dt, name="x")
    W = gg.Variable(np.ones((4, 5), dt))
    assert fails_at(gg.OpError, lambda: x @ W).startswith(
        "matmul: shapes (None, 3) and (4, 5) are not aligned: 3 (dim -1 of the first) != 4")
    assert fails_at(gg.OpError, lambda: gg.concat([x, W], axis=0)).startswith("concat:")
    fails_at(gg.OpError, lambda: nn.mse_loss(x, gg.Placeholder((None, 4), dt)))
    free = gg.Placeholder((None, None), dt)
    h = gg.tanh(free)
    y = gg.sum(h @ W)  # the matmul is built on this line; the error is raised when run
    built_at = _this_line() - 1
    with pytest.raises(gg.OpError) as info:
        y.eval({free: np.ones((2, 3), dt)})
    msg = str(info.value)
    assert msg.startswith("matmul: shapes (2, 3) and (4, 5) are not aligned"), msg
    assert msg.endswith(f"called at test_errors.py:{built_at}")


def _this_line():
    """The caller's line number, from its running frame (not from the file on disk)."""
    return sys._getframe(1).f_lineno


# --- dtypes ---------------------------------------------------------------------------------

def test_integer_value_cannot_require_gradients(bk):
    msg = fails_at(gg.DtypeError, lambda: gg.Variable(np.arange(3), name="W"))
    assert msg.startswith(
        "Variable 'W': only floating or complex dtypes can require gradients, got int64")
    assert isinstance(gg.DtypeError("x"), TypeError)


def test_float32_meeting_float64_raises_and_says_which_way(bk64):
    x32, x64 = var(bk64, (3,), "float32"), const(bk64, (3,), "float64")
    msg = fails_at(gg.DtypeError, lambda: x32 * x64)
    assert msg.startswith("multiply: float32 and float64 inputs give a float64 result, so the "
                          "float32 input (3,) would be silently upcast to float64")
    msg = fails_at(gg.DtypeError, lambda: gg.matmul(x64, x32))
    assert "float64 and float32 inputs" in msg and "upcast to float64" in msg


def test_integer_array_that_would_upcast_float32_raises():
    with gg.use_backend("numpy"):
        x32 = gg.Variable(np.ones(3, "float32"))
        idx = gg.asarray(np.arange(3))  # int64: NumPy would make int64 * float32 float64
        assert "int64 and float32 inputs give a float64 result" in fails_at(
            gg.DtypeError, lambda: idx * x32)


def test_python_scalars_are_weak_and_never_trigger_the_check(bk):
    x = var(bk, (2, 3), "float32")
    mask = const(bk, (2, 3)) > 0.5
    results = [x * 0.5, 0.5 - x, x / 3, x ** 2, 2.0 ** x, gg.maximum(x, 0.0),
               gg.where(mask, 0.5, x), gg.clip(x, min=0.0), gg.logaddexp(x, 0.0), x - 1]
    assert all(gg.backend.dtype_name(r.dtype) == "float32" for r in results)
    gg.sum(results[0] + results[6]).backward()
    assert gg.backend.dtype_name(x.grad.dtype) == "float32"


def test_graph_float32_meeting_float64_raises_on_first_run():
    with gg.use_backend("numpy"):
        x = gg.Placeholder((None, 2), "float32", name="x")
        W = gg.Variable(np.ones((2, 2)))  # float64
        y = gg.sum(gg.tanh(x @ W))  # the op's build line is in the message
        built_at = _this_line() - 1
        for _ in range(2):
            with pytest.raises(gg.DtypeError) as info:
                y.eval({x: np.ones((3, 2), "float32")})
            msg = str(info.value)
            assert msg.startswith("matmul: float32 and float64 inputs give a float64 result")
            assert msg.endswith(f"called at test_errors.py:{built_at}")


def test_int_labels_fed_where_float_declared():
    with gg.use_backend("numpy"):
        t = gg.Placeholder((None,), "float32", name="t")
        y = gg.sum(t * 2.0)
        msg = fails_at(gg.FeedError, lambda: y.eval({t: np.array([0, 1, 2])}))
        assert msg.startswith("Placeholder 't': fed dtype int64 (3,) but it was declared "
                              "float32; convert the data first, e.g. x.astype('float32')")


# --- devices and backends -------------------------------------------------------------------

def _strict(device):
    strict = pytest.importorskip("array_api_strict")
    return gg.use_backend("array_api_strict", strict.Device(device))


def test_device_mixing_messages_are_one_error_naming_both():
    with _strict("device1"):
        a = gg.Variable([1.0, 2.0])
        c = gg.asarray([1.0, 2.0])
    with _strict("device2"):
        b = gg.Variable([1.0, 2.0])
    with gg.use_backend("numpy"):
        n = gg.asarray([1.0, 2.0])
    for fn, who in [(lambda: a * b, "multiply"), (lambda: n - a, "subtract"),
                    (lambda: gg.concat([a, b]), "concat")]:
        msg = fails_at(gg.BackendError, fn)
        assert msg.startswith(f"{who}: inputs live on different backends or devices ("), msg
        assert ("device1" in msg and "device2" in msg) or ("numpy" in msg and "strict" in msg)

    d = b.detach()
    msg = fails_at(gg.BackendError, lambda: c.__iadd__(d))
    assert re.match(r"add \(in place, \+=\): inputs live on different backends or devices "
                    r".*device1.*device2", msg), msg
    assert fails_at(gg.BackendError, lambda: c.__iadd__(b)).startswith("add: inputs live on")
    # the graph front end says it the same way
    with _strict("device1"):
        x = gg.Placeholder((2,), "float64", name="x")
        y = gg.sum(x * a + b)
        with pytest.raises(gg.BackendError, match=r"^graph: Variables live on different "
                                                  r"backends or devices .*device1.*device2"):
            y.eval({x: np.ones(2)})
