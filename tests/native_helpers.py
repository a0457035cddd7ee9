"""Shared by the native tier's tests (tests/test_native*.py): comparing the native tier
with the NumPy tier, and a small problem to run through both."""

from __future__ import annotations

import numpy as np
from helpers import assert_orders_agree, assert_ulp_close

import gpugrad as gg

TOL = {"rtol": 1e-12, "atol": 1e-14}


def agree(a, b, dtype):
    """Native against NumPy tier: 1e-12 in float64, 4 ulps of the array's magnitude in
    float32."""
    if dtype == "float64":
        assert_orders_agree(a, b, **TOL)
    else:
        assert_ulp_close(a, b, ulps=4)


def programs_of(sym):
    return [p for s in sym._schedules.values() for p in s.programs.values()]


def both_tiers(monkeypatch, run, sym):
    """``run()`` with the NumPy tier (twice: the second run is the planned program), then
    the same with the native tier (its programs made anew); returns both results."""
    monkeypatch.setenv("GPUGRAD_JIT", "0")
    run()
    want = run()
    for s in sym._schedules.values():
        s.forget()
    monkeypatch.setenv("GPUGRAD_JIT", "now")
    run()
    got = run()
    return want, got


def sigmoid_problem(n=64):
    x = gg.Placeholder((None, 8), "float64", name="x")
    W = gg.Variable(np.random.default_rng(0).standard_normal((8, 8)) / 3, name="W")
    loss = gg.sum(gg.tanh(gg.sigmoid(x @ W) * 2.0 - 1.0))
    X = np.random.default_rng(1).standard_normal((n, 8))
    return x, W, loss, X
