"""gg.linalg.eig and eigvals (general matrices, complex results): forwards against
numpy.linalg on every backend, float64 finite differences of phase-free losses (real and
complex input), the gauge error and the repeated-eigenvalue convention of docs/linalg.md.
The op case table (tests/op_cases.py) checks the registered op linalg_eig as every op."""

from __future__ import annotations

import numpy as np
import pytest

import gpugrad as gg
from gpugrad.testing import check_grad

L = gg.linalg


def distinct(rng, *shape):
    """Real matrices with eigenvalues near 1 and +-2i (a complex pair), batched."""
    base = np.array([[0.0, -2.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    return rng.standard_normal(shape) * 0.2 + base


def _sorted(w):
    return np.sort_complex(np.asarray(w))


def test_forwards_match_numpy(bk, rng):
    for a in (distinct(rng, 2, 3, 3), distinct(rng, 3, 3) + 0.2j * rng.standard_normal((3, 3))):
        host = a.astype(bk.float_dtype) if a.dtype.kind == "f" else a.astype(
            {"float32": np.complex64}.get(bk.float_dtype, np.complex128))
        w, v = L.eig(gg.asarray(host))
        wn, vn = np.linalg.eig(host)
        assert str(w.dtype).split(".")[-1] == str(np.result_type(wn.dtype, np.complex64))
        tol = 1e-4 if bk.float_dtype == "float32" else 1e-10
        np.testing.assert_allclose(_sorted(gg.to_numpy(L.eigvals(gg.asarray(host)))),
                                   _sorted(wn), rtol=tol, atol=tol)
        np.testing.assert_allclose(gg.to_numpy(w), wn, rtol=tol, atol=tol)
        np.testing.assert_allclose(np.abs(gg.to_numpy(v)), np.abs(vn), rtol=tol, atol=tol)
        av, vw = host @ gg.to_numpy(v), gg.to_numpy(v) * gg.to_numpy(w)[..., None, :]
        np.testing.assert_allclose(av, vw, rtol=10 * tol, atol=10 * tol)


def test_phase_free_losses_match_finite_differences(rng):
    weights = gg.asarray(rng.standard_normal((3, 3)))

    def loss(x):
        w, v = L.eig(x)
        return gg.sum(gg.real(w) * gg.imag(w)) + gg.sum(gg.abs(v) ** 2 * weights)

    check_grad(loss, distinct(rng, 3, 3))
    check_grad(lambda x: gg.real(L.eigvals(x)) ** 2, distinct(rng, 2, 3, 3))


def test_eigenvalue_sum_has_the_trace_gradient(rng):
    a = gg.Variable(distinct(rng, 3, 3))
    gg.sum(gg.real(L.eigvals(a))).backward()  # sum(w) = trace(A)
    assert a.grad.dtype == a.dtype
    np.testing.assert_allclose(gg.to_numpy(a.grad), np.eye(3), atol=1e-12)


def test_phase_dependent_losses_raise(rng):
    a = gg.Variable(distinct(rng, 3, 3))
    with pytest.raises(L.GaugeError, match="phase"):
        gg.sum(gg.real(L.eig(a).eigenvectors)).backward()
    z = gg.Variable(distinct(rng, 3, 3) + 0.3j * rng.standard_normal((3, 3)))
    with pytest.raises(L.GaugeError, match="phase"):
        gg.sum(gg.imag(L.eig(z).eigenvectors)).backward()


def test_repeated_eigenvalues_follow_pytorch():
    a = gg.Variable(np.diag([1.0, 1.0, 2.0]))
    gg.sum(gg.real(L.eigvals(a))).backward()  # eigenvalues only: finite
    np.testing.assert_allclose(gg.to_numpy(a.grad), np.eye(3))
    b = gg.Variable(np.diag([1.0, 1.0, 2.0]))
    v = L.eig(b).eigenvectors
    gg.sum(gg.real(v[..., :2]) * gg.asarray(np.ones((3, 2)))).backward()
    assert not np.all(np.isfinite(gg.to_numpy(b.grad)))  # their vectors: inf/NaN


def test_needs_square_matrices():
    with pytest.raises(ValueError, match="square"):
        L.eig(np.ones((2, 3)))
