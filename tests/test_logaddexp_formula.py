"""logaddexp's scalar formulas (gpugrad/ops/elementwise.py): its value is NumPy's
``logaddexp``, and its gradients the rule's (0 where the value is infinite, NaN where an
input is NaN), on every tier that derives code from them: the planned NumPy program (NumPy's
own ufunc, quiet of a NaN input as the rule is), the native tier's fused kernel
(gpugrad.compiler.native_math's written-out steps) and the CUDA kernel of the same group
read back as Python. The values include equal operands, infinities of each sign, NaN,
differences past exp's range, and ties at zero of either sign."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import gpugrad as gg
from gpugrad.compiler import cuda_group, native

sys.path.insert(0, str(Path(__file__).parent))
from helpers import assert_orders_agree  # noqa: E402
from test_cuda_groups import _programs, _run, host_kernel  # noqa: E402

INF, NAN = np.inf, np.nan
PAIRS = [(0.0, 0.0), (0.0, -0.0), (1.5, 1.5), (INF, INF), (-INF, -INF), (INF, -INF),
         (-INF, INF), (INF, 3.0), (2.0, -INF), (NAN, 1.0), (1.0, NAN), (NAN, INF),
         (1000.0, -1000.0), (-1000.0, 0.0), (30.0, -80.0), (-3.0, 2.5), (1e-30, -1e-30),
         (88.0, 87.0), (-745.0, -746.0)]


def _graph(dtype: str):
    """``sum(logaddexp(a * w, b) * v)``: its value and the gradients of ``a`` and ``b``
    planned (the product by ``w``, with w all ones, and by ``v`` make the fusion group)."""
    a, b = (np.array(c, dtype) for c in zip(*PAIRS))
    pa, pb = gg.Placeholder(a.shape, dtype), gg.Placeholder(b.shape, dtype)
    w = gg.Variable(np.ones(a.shape, dtype))
    v = np.linspace(0.5, 1.5, a.size).astype(dtype)
    loss = gg.sum(gg.logaddexp(pa * w, pb) * v)
    feed = {pa: a, pb: b}
    with np.errstate(invalid="ignore"):  # (the sum of inf and -inf terms is NaN)
        gg.value_and_gradients(loss, [pa, pb], feed=feed)
    return loss, feed, (a, b, v)


def _want(a, b, v):
    """The rule's numbers, by NumPy: the value's terms and both gradients."""
    with np.errstate(all="ignore"):
        out = np.logaddexp(a, b)
        inf = np.isinf(out)
        base = np.where(inf, 0, out)
        return out, np.where(inf, 0, v * np.exp(a - base)), np.where(inf, 0, v * np.exp(b - base))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_tier_gives_the_rules_numbers(numpy_backend, monkeypatch, dtype):
    monkeypatch.setenv("GPUGRAD_JIT", "0")  # (the planned NumPy program is the first tier)
    loss, feed, (a, b, v) = _graph(dtype)
    (prog,) = _programs(loss)
    (sched,) = [s for s in loss._schedules.values() if s.programs]
    out, ga, gb = _want(a, b, v)
    assert "LOGADDEXP_INTO(" in prog.source  # (its formula's NumPy line, not its rule)
    fused, read_back = _native(prog), _read_back(prog)
    calls = {fn for _, g in cuda_group.groups_of(fused.kernels) for _, node in g.members
             for fn in _calls(node)}
    assert {"logaddexp", "isinf", "exp"} <= calls  # the value and both gradients fused
    for tier in (prog, fused, read_back):
        with np.errstate(invalid="ignore"):
            value, got_a, got_b = _run(tier, sched, feed, None)[:3]
        np.testing.assert_array_equal(np.isnan(got_a), np.isnan(ga))
        np.testing.assert_array_equal(np.isnan(got_b), np.isnan(gb))
        ok = ~np.isnan(ga) & ~np.isnan(gb)
        assert_orders_agree(got_a[ok], ga[ok], ulps=4)
        assert_orders_agree(got_b[ok], gb[ok], ulps=4)
        with np.errstate(invalid="ignore"):
            assert np.isnan(value) == np.isnan(np.sum(out * v))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_value_is_numpys_at_every_pair(numpy_backend, monkeypatch, dtype):
    """The value alone (``logaddexp(a, b) * v`` stored): NumPy's bits in the planned
    program; the native kernel and the CUDA read-back within 2 ulps (their log1p and exp
    are written out), NaN and infinities exactly where NumPy has them."""
    monkeypatch.setenv("GPUGRAD_JIT", "0")
    a, b = (np.array(c, dtype) for c in zip(*PAIRS))
    pa, pb = gg.Placeholder(a.shape, dtype), gg.Placeholder(b.shape, dtype)
    y = gg.logaddexp(pa, pb) * 2.0 + 0.0
    feed = {pa: a, pb: b}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (no warning where an input is NaN, as the rule)
        y.eval(feed=feed)
        (prog,) = _programs(y)
        (sched,) = [s for s in y._schedules.values() if s.programs]
        got = _run(prog, sched, feed, None)[0]
    assert "LOGADDEXP_INTO(" in prog.source
    with np.errstate(all="ignore"):
        want = np.logaddexp(a, b) * dtype_type(dtype)(2.0)
    np.testing.assert_array_equal(got, want)
    for tier in (_native(prog), _read_back(prog)):
        got = _run(tier, sched, feed, None)[0]
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_array_equal(np.isinf(got) * np.sign(got),
                                      np.isinf(want) * np.sign(want))
        ok = np.isfinite(want)
        assert_orders_agree(got[ok], want[ok], ulps=2)


def dtype_type(dtype: str):
    return np.dtype(dtype).type


def _native(prog):
    """``prog``'s fused program, its kernels compiled by numba (the native tier's)."""
    pytest.importorskip("numba")
    made = prog.fused()
    module = native.load(native.module_source(made.kernels))
    made.fn.__globals__.update({n: getattr(module, n) for n, _ in made.kernels})
    return made


def _read_back(prog):
    """``prog``'s fused program with each group's CUDA kernel read back as Python."""
    made = prog.fused()
    groups = cuda_group.groups_of(made.kernels)
    assert groups
    made.fn.__globals__.update({n: host_kernel(cuda_group.raw_source(g, n)) for n, g in groups})
    return made


def _calls(node: tuple):
    if node[0] not in ("name", "const"):
        yield node[0]
        for a in node[1:]:
            yield from _calls(a)
