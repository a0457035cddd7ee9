"""Steps folded into an op's own native kernel (gpugrad.compiler.native_fold): the logits'
bias add into the cross-entropy's forward, the last bias's gradient into its backward."""

from __future__ import annotations

import numpy as np
import pytest
from native_helpers import agree, programs_of

import gpugrad as gg
from gpugrad import nn
from gpugrad.compiler import native_fold

pytest.importorskip("numba")


def _run(dtype, extra=False, n=9):
    """Value and gradients of a 12-16-5 sigmoid MLP's cross-entropy (``extra``: plus the
    sum of its logits, which then are read twice), twice (planned from the second run);
    returns them and the programs' kernels."""
    model = nn.MLP([12, 16, 5], activation="sigmoid", seed=0, dtype=dtype)
    xs = gg.Placeholder((None, 12), dtype, name="x")
    ys = gg.Placeholder((None,), "int64", name="y")
    logits = model(xs)
    loss = nn.cross_entropy(logits, ys)
    if extra:
        loss = loss + gg.sum(logits) * 0.25
    rng = np.random.default_rng(3)
    feed = {xs: (rng.standard_normal((n, 12)) * 3).astype(dtype), ys: rng.integers(0, 5, n)}
    for _ in range(2):
        v, gs = gg.value_and_gradients(loss, model.parameters(), feed=feed)
    return np.asarray(v), [np.asarray(g) for g in gs], \
        [k for p in programs_of(loss) for _, k in p.kernels]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_folded_steps_give_the_unfolded_kernels_numbers(dtype, native, monkeypatch):
    """The bias add read inside the loss's kernel gives every gradient but the folded bias
    sum's bit for bit; the loss (its mean added up in the kernel, in float64, where NumPy
    adds pairwise in the dtype) and that sum (added row after row, where the unfolded
    program makes a BLAS call) agree in ulps (float32) or to 1e-12 (float64)."""
    v, gs, kernels = _run(dtype)
    folds = [k.fold for k in kernels if isinstance(k, native_fold.Folded)]
    assert len(folds) == 2 and any(f.inputs and f.total for f in folds) \
        and any(f.sums for f in folds)
    monkeypatch.setattr(native_fold, "fold", lambda prog, n, *rest: (prog, n))
    v0, gs0, kernels0 = _run(dtype)
    assert not any(isinstance(k, native_fold.Folded) for k in kernels0)
    agree(v, v0, dtype)
    for g, g0 in zip(gs[:-1], gs0[:-1]):
        np.testing.assert_array_equal(g, g0)
    agree(gs[-1], gs0[-1], dtype)


@pytest.mark.parametrize("n", [1, 7, 300])
def test_a_folded_mean_agrees_with_numpys(n, native, monkeypatch):
    """The losses' mean added up in the kernel, at batch sizes 1, 7 and 300 (NumPy's
    pairwise sum changes its order past 8 and 128): within a few ulps of the NumPy tier."""
    v, _, kernels = _run("float32", n=n)
    assert any(isinstance(k, native_fold.Folded) and k.fold.total for k in kernels)
    monkeypatch.setenv("GPUGRAD_JIT", "0")
    v0, _, _ = _run("float32", n=n)
    agree(v, v0, "float32")


def test_logits_read_elsewhere_are_not_folded(native, monkeypatch):
    """Logits that another step reads too stay stored, and the numbers are the NumPy
    tier's."""
    v, gs, kernels = _run("float64", extra=True)
    assert any(type(k).__name__ == "NativeKernel" for k in kernels)  # the loss's own
    assert not any(isinstance(k, native_fold.Folded) and k.fold.inputs for k in kernels)
    monkeypatch.setenv("GPUGRAD_JIT", "0")
    v0, gs0, _ = _run("float64", extra=True)
    agree(v, v0, "float64")
    for g, g0 in zip(gs, gs0):
        agree(g, g0, "float64")


def test_a_folded_kernel_lists_its_fold(native):
    """The source of a folded kernel reads the bias add's inputs and sums the columns."""
    model = nn.MLP([4, 3], activation="sigmoid", seed=0, dtype="float32")
    xs = gg.Placeholder((None, 4), "float32", name="x")
    ys = gg.Placeholder((None,), "int64", name="y")
    loss = nn.cross_entropy(model(xs), ys)
    feed = {xs: np.ones((2, 4), "float32"), ys: np.array([0, 2])}
    opt = gg.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        opt.minimize(loss, feed=feed)
    text = loss.source(feed, opt=opt)
    assert "np.float32(f0[i, j] + f1[j])" in text and "r0[j] = np.float32(r0[j] + c[i, j])" \
        in text and "its input's elementwise step" in text
