"""Generic checks over the op case table (tests/op_cases.py: one row per op or variant).

Every case gets, on every backend of ``tests/conftest.py``:

- a forward check against a NumPy reference computed on host copies of the inputs;
- a float64 finite-difference gradient check (``gg.testing.check_grad``, float64 backends only);
- a backward run that checks the gradient's dtype, shape and device and that no input (nor the
  seed gradient) was mutated;
- the broadcasting pairs for binary elementwise ops, and the shapes (), (0,), (1, 0, 3) for
  elementwise unary ops and reductions.

Kink values, the indexing fast paths, sigmoid's float32 accuracy and the softmax family's
behaviour on large and infinite inputs have their own tests in tests/test_op_rules.py.
No framework is used as an oracle: references are NumPy forward formulas, finite differences
and hand-derived gradients.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import backend as B

from helpers import assert_on_backend
from op_cases import (
    BINARY_CASES,
    BROADCAST_PAIRS,
    BY_ID,
    CASES,
    GRAD_CASES,
    SHAPE_CASES,
    params,
)


# --- helpers --------------------------------------------------------------------------------

FORWARD_TOL = {"float32": (1e-5, 1e-6), "float64": (1e-11, 1e-13),
               "complex64": (1e-5, 1e-5), "complex128": (1e-11, 1e-12)}


def assert_matches(out: gg.Tensor, expect: Any, bk) -> None:
    """``out`` equals the NumPy result: shape, dtype, values, and it is on the backend's device."""
    got = gg.to_numpy(out)
    expect = np.asarray(expect)
    assert got.shape == expect.shape
    assert got.dtype == expect.dtype, f"got {got.dtype}, NumPy gives {expect.dtype}"
    if got.dtype.kind in "fc":
        rtol, atol = FORWARD_TOL[got.dtype.name]
        np.testing.assert_allclose(got, expect, rtol=rtol, atol=atol, equal_nan=True)
    else:
        np.testing.assert_array_equal(got, expect)
    assert_on_backend(bk, out.data)


def copy_host(t) -> np.ndarray:
    return np.array(gg.to_numpy(t), copy=True)


def spy_forward(monkeypatch, name) -> list:
    """Record calls of op ``name``'s forward rule (so a row cannot silently test another op)."""
    op = gg.registry[name]
    calls: list = []

    def wrap(rule):
        def counted(*args, **kw):
            calls.append(name)
            return rule(*args, **kw)
        return counted

    monkeypatch.setattr(op, "forward", wrap(op.forward))
    for backend_name, rule in list(op.fast_forward.items()):
        monkeypatch.setitem(op.fast_forward, backend_name, wrap(rule))
    return calls


def run_backward(case, hosts, bk, rng):
    """Forward + backward with Variables for the floating inputs; checks each gradient's dtype,
    shape and device, and that neither the inputs nor the seed were mutated. Returns the grads.
    """
    args = [gg.Variable(h) if h.dtype.kind in "fc" else gg.asarray(h) for h in hosts]
    before = [copy_host(a) for a in args]
    out = case.fn(*args)
    floating = B.is_inexact(out.xp, out.dtype)
    if not (gg.registry[case.name].differentiable and floating):
        assert not out.requires_grad
        with pytest.raises(gg.GradientError):
            out.backward(grad=gg.asarray(np.ones(out.shape, dtype=bk.float_dtype)))
        return None
    seed = rng.standard_normal(out.shape)
    if B.is_complex(out.xp, out.dtype):  # a complex output gets a complex seed (fft)
        seed = seed + 1j * rng.standard_normal(out.shape)
    seed = gg.asarray(seed.astype(gg.to_numpy(out).dtype))
    seed_before = copy_host(seed)
    out.backward(grad=seed)
    grads = []
    for a, h in zip(args, hosts):
        if not a.requires_grad:
            assert a.grad is None
            continue
        assert a.grad is not None
        assert tuple(a.grad.shape) == h.shape
        assert a.grad.dtype == a.dtype
        assert B.device_of(a.grad) == a.device
        assert_on_backend(bk, a.grad)
        grads.append(gg.to_numpy(a.grad))
    for a, b in zip(args, before):
        np.testing.assert_array_equal(gg.to_numpy(a), b)
    np.testing.assert_array_equal(gg.to_numpy(seed), seed_before)
    return grads


# --- the guard ------------------------------------------------------------------------------

def test_every_registered_op_has_a_case():
    builtin = {name for name, op in gg.registry.items()
               if op.forward.__module__.startswith("gpugrad.ops")}
    assert len(builtin) >= 44
    covered = {c.name for c in CASES}
    assert not builtin - covered, f"ops without a case in tests/op_cases.py: {builtin - covered}"
    assert not covered - set(gg.registry), "cases for ops that are not registered"
    assert len(BY_ID) == len(CASES), "case ids must be unique"


def test_guard_ignores_user_ops():
    @gg.ops.defop("_test_ops_user_square")
    def user_square(xp, x):
        "x**2"
        return x * x, x

    try:
        builtin = {n for n, op in gg.registry.items()
                   if op.forward.__module__.startswith("gpugrad.ops")}
        assert "_test_ops_user_square" in gg.registry
        assert "_test_ops_user_square" not in builtin
    finally:
        gg.ops.unregister("_test_ops_user_square")


# --- generic checks over the table ----------------------------------------------------------

@pytest.mark.parametrize("case", params(CASES))
def test_forward(case, bk, rng, monkeypatch):
    hosts = case.hosts(rng, bk)
    calls = spy_forward(monkeypatch, case.name)
    out = case.fn(*[gg.asarray(h) for h in hosts])
    assert calls, f"case {case.id} never called op {case.name}"
    assert_matches(out, case.ref(*[h.copy() for h in hosts]), bk)


@pytest.mark.parametrize("case", params(GRAD_CASES))
def test_grad(case, bk64, rng):
    hosts = case.hosts(rng, bk64)
    gg.testing.check_grad(case.fn, *[gg.asarray(h) for h in hosts], **case.grad_kw)


@pytest.mark.parametrize("case", params(CASES))
def test_backward_meta_and_no_mutation(case, bk, rng):
    run_backward(case, case.hosts(rng, bk), bk, rng)


@pytest.mark.parametrize("case", params(CASES))
def test_float32_stays_float32(case, bk64, rng):
    """float32 inputs give float32 outputs and gradients where float64 exists too (NumPy
    included): no Python scalar, constant or rule may upcast them to float64. (On no_float64
    the generic tests above already run in float32.)"""
    hosts = case.hosts(rng, bk64, float_dtype="float32")
    out = case.fn(*[gg.asarray(h) for h in hosts])
    assert_matches(out, case.ref(*hosts), bk64)
    run_backward(case, hosts, bk64, rng)


@pytest.mark.parametrize("shapes", BROADCAST_PAIRS, ids=str)
@pytest.mark.parametrize("case", params(BINARY_CASES))
def test_broadcast_forward_backward(case, shapes, bk, rng):
    hosts = case.hosts(rng, bk, shapes)
    out = case.fn(*[gg.asarray(h) for h in hosts])
    assert_matches(out, case.ref(*hosts), bk)
    run_backward(case, hosts, bk, rng)


@pytest.mark.parametrize("shapes", BROADCAST_PAIRS, ids=str)
@pytest.mark.parametrize("case", params(c for c in BINARY_CASES if c.differentiable))
def test_broadcast_grad(case, shapes, bk64, rng):
    hosts = case.hosts(rng, bk64, shapes)
    gg.testing.check_grad(case.fn, *[gg.asarray(h) for h in hosts])


@pytest.mark.parametrize("case,shape",
                         [pytest.param(c, s, id=f"{c.id}-{s}") for c, s in SHAPE_CASES])
def test_special_shapes(case, shape, bk, rng):
    hosts = case.hosts(rng, bk, (shape,))
    with warnings.catch_warnings():
        if case.name == "mean" and 0 in shape:  # 0/0: nan, and NumPy warns about it
            warnings.simplefilter("ignore", RuntimeWarning)
        out = case.fn(*[gg.asarray(h) for h in hosts])
        assert_matches(out, case.ref(*hosts), bk)
        (grad,) = run_backward(case, hosts, bk, rng)
    assert grad.shape == shape
    if bk.float64 and shape == ():
        gg.testing.check_grad(case.fn, *[gg.asarray(h) for h in hosts], **case.grad_kw)


# Reductions with no identity cannot reduce an empty axis: they raise an OpError naming the op
# (NumPy raises as well). Reducing only non-empty axes of an empty array works.
@pytest.mark.parametrize("name", ["max", "min", "logsumexp"])
@pytest.mark.parametrize("shape", [(0,), (1, 0, 3)], ids=str)
def test_empty_reduction_without_identity_raises(name, shape, bk):
    x = gg.Variable(np.zeros(shape, dtype=bk.float_dtype))
    with pytest.raises(gg.OpError, match=name):
        gg.registry[name](x)


@pytest.mark.parametrize("name", ["max", "min", "logsumexp", "softmax", "log_softmax"])
def test_reduction_over_nonempty_axis_of_empty_array(name, bk, rng):
    x = gg.Variable(np.zeros((1, 0, 3), dtype=bk.float_dtype))
    out = gg.registry[name](x, axis=-1)
    expected_shape = (1, 0, 3) if "softmax" in name else (1, 0)
    assert out.shape == expected_shape
    out.backward(grad=gg.asarray(np.zeros(expected_shape, dtype=bk.float_dtype)))
    assert x.grad.shape == (1, 0, 3) and x.grad.dtype == x.dtype
