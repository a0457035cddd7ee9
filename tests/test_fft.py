"""The fft extension (gg.fft = gpugrad.array_api.fft) beyond the op case table: the namespace,
fftfreq/rfftfreq values, hand-derived gradients of the one-sided transforms (the conventions
of docs/fft.md), second derivatives, graphs and errors.

The op case rows (tests/op_cases_fft.py) check every transform's forward against numpy.fft and
its gradients against finite differences, with n/s, axes, batches and every norm.
"""

from __future__ import annotations

import array_api_compat
import numpy as np
import pytest

import gpugrad as gg
from gpugrad.testing import check_gradgrad

from helpers import assert_on_backend

STANDARD = {"fft", "ifft", "fftn", "ifftn", "rfft", "irfft", "rfftn", "irfftn", "hfft", "ihfft",
            "fftfreq", "rfftfreq", "fftshift", "ifftshift"}


def test_the_namespace_has_the_standards_functions():
    assert gg.fft is gg.array_api.fft
    assert set(gg.fft.__all__) == STANDARD
    assert all(callable(getattr(gg.fft, name)) for name in STANDARD)
    x = gg.Variable(np.arange(4.0))
    assert array_api_compat.array_namespace(x).fft.rfft is gg.fft.rfft


@pytest.mark.parametrize("n,d", [(1, 1.0), (4, 1.0), (5, 0.1), (8, 2.5)])
def test_fftfreq_and_rfftfreq_values(n, d, bk):
    f, rf = gg.fft.fftfreq(n, d=d), gg.fft.rfftfreq(n, d=d)
    tol = 1e-6 if bk.float_dtype == "float32" else 1e-15
    np.testing.assert_allclose(gg.to_numpy(f), np.fft.fftfreq(n, d), rtol=tol, atol=tol)
    np.testing.assert_allclose(gg.to_numpy(rf), np.fft.rfftfreq(n, d), rtol=tol, atol=tol)
    assert_on_backend(bk, f.data)
    assert not f.requires_grad
    f32 = gg.fft.fftfreq(n, d=d, dtype=gg.array_api.float32)
    assert gg.to_numpy(f32).dtype == np.float32


def test_fftfreq_refuses_no_samples():
    with pytest.raises(ValueError, match="fftfreq: n must be >= 1"):
        gg.fft.fftfreq(0)


def _one_sided_power(x):
    X = gg.fft.rfft(x)
    return gg.sum(gg.real(X * gg.conj(X)))


@pytest.mark.parametrize("n", [6, 7])
def test_rfft_gradient_counts_each_bin_once(n, bk64, rng):
    """P = sum over the n//2+1 bins of |X_k|^2. By Parseval, the full spectrum's sum is
    n sum x^2 and pairs every bin but DC (and Nyquist, n even) with its mirror image, so
    P = (n sum x^2 + |X_0|^2 + |X_n/2|^2) / 2 and dP/dx_j = n x_j + X_0 + (-1)^j X_n/2."""
    host = rng.standard_normal(n)
    x = gg.Variable(host)
    _one_sided_power(x).backward()
    alt = (-1.0) ** np.arange(n)
    expect = n * host + host.sum() + (alt * (alt @ host) if n % 2 == 0 else 0.0)
    np.testing.assert_allclose(gg.to_numpy(x.grad), expect, rtol=1e-12)
    # twice: the Hessian is n I + 1 1^T (+ s s^T, s = (-1)^j, n even)
    H = gg.hessian(_one_sided_power)(host)
    expect_h = n * np.eye(n) + 1.0 + (np.outer(alt, alt) if n % 2 == 0 else 0.0)
    np.testing.assert_allclose(gg.to_numpy(H), expect_h, rtol=1e-12, atol=1e-12)


def test_irfft_gradient_doubles_mirrored_bins_and_drops_dc_nyquist_imag(bk64, rng):
    """y_j = (Re z_0 + 2 Re sum_{0<k<n/2} z_k e^{2 pi i jk/n} + Re z_{n/2} (-1)^j) / n, so for
    L = sum_j w_j y_j: z.grad_k = c_k/n sum_j w_j e^{-2 pi i jk/n}, c = 2 for the mirrored bins,
    1 for DC and Nyquist, whose imaginary parts get exactly 0."""
    n = 6
    z = gg.Variable(rng.standard_normal((2, 4)) + 1j * rng.standard_normal((2, 4)))
    w = rng.standard_normal((2, n))
    gg.sum(gg.fft.irfft(z) * gg.asarray(w)).backward()
    j, k = np.arange(n)[:, None], np.arange(4)[None, :]
    c = np.array([1.0, 2.0, 2.0, 1.0])
    expect = c / n * (w @ np.exp(-2j * np.pi * j * k / n))
    got = gg.to_numpy(z.grad)
    np.testing.assert_allclose(got, expect, rtol=1e-12, atol=1e-14)
    assert np.all(got[:, [0, 3]].imag == 0.0)


def test_hfft_and_ihfft_are_conjugate_forms_of_irfft_and_rfft(bk64, rng):
    z = gg.Variable(rng.standard_normal(4) + 1j * rng.standard_normal(4))
    x = gg.Variable(rng.standard_normal(6))
    w = gg.asarray(rng.standard_normal(6))
    for norm, dual in [("backward", "forward"), ("ortho", "ortho"), ("forward", "backward")]:
        a = gg.grad(lambda t: gg.sum(gg.fft.hfft(t, norm=norm) * w))(z)
        b = gg.grad(lambda t: gg.sum(gg.fft.irfft(gg.conj(t), norm=dual) * w))(z)
        np.testing.assert_allclose(gg.to_numpy(a), gg.to_numpy(b), rtol=1e-12)
        a = gg.grad(lambda t: gg.sum(gg.real(gg.fft.ihfft(t, norm=norm) * 1j)))(x)
        b = gg.grad(lambda t: gg.sum(gg.real(gg.conj(gg.fft.rfft(t, norm=dual)) * 1j)))(x)
        np.testing.assert_allclose(gg.to_numpy(a), gg.to_numpy(b), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name,kw", [
    ("fftn", {"s": (3, 5)}), ("ifft", {"n": 4, "norm": "ortho"}), ("rfftn", {"axes": (0, 1)}),
    ("irfftn", {"s": (2, 5), "norm": "forward"}), ("hfft", {"axis": 0}), ("ihfft", {"n": 5}),
])
def test_second_derivatives_of_a_nonlinear_loss(name, kw, bk64, rng):
    fn = getattr(gg.fft, name)
    shape = (2, 3)
    host = rng.standard_normal(shape)
    if name in ("ifft", "irfftn", "hfft", "fftn"):
        host = host + 1j * rng.standard_normal(shape)

    def loss(t):
        y = fn(t, **kw)
        return gg.sum(gg.real(y * gg.conj(y)) * gg.real(y))

    check_gradgrad(loss, host)


def test_shape_rules_in_a_graph():
    x = gg.Placeholder((None, 8), "float64", name="x")
    X = gg.fft.rfft(x)
    assert X.shape == (None, 5) and X.dtype == "complex128"
    assert gg.fft.irfft(X).shape == (None, 8)
    assert gg.fft.fftn(x, s=(3, 4)).shape == (3, 4)
    assert gg.fft.fftshift(x, axes=1).shape == (None, 8)


def test_refusals_name_the_function():
    x = gg.asarray(np.ones((2, 4)))
    with pytest.raises(ValueError, match="fft: norm must be one of"):
        gg.fft.fft(x, norm="unitary")
    with pytest.raises((TypeError, gg.OpError), match="rfft is defined for real values only"):
        gg.fft.rfft(gg.asarray(np.ones(4, np.complex128)))
    with pytest.raises(ValueError, match=r"fftn: s \(3,\) and axes \(0, 1\) differ"):
        gg.fft.fftn(x, s=(3,), axes=(0, 1))
    with pytest.raises(ValueError, match="irfft: transform lengths must be >= 1"):
        gg.fft.irfft(x, n=0)
