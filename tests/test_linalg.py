"""gpugrad.array_api.linalg (gg.linalg): every function against numpy.linalg, float64 finite
differences through the namespace (real and complex), second derivatives of solve, inv, det,
slogdet, cholesky and eigvalsh, and the hard cases docs/linalg.md describes."""

from __future__ import annotations

import numpy as np
import pytest

import gpugrad as gg
from gpugrad.testing import check_grad, check_grad_complex, check_gradgrad

L = gg.linalg


def well(rng, *shape):
    return rng.standard_normal(shape) * 0.3 + 2.0 * np.eye(shape[-2], shape[-1])


def spd(rng, *shape):
    a = rng.standard_normal(shape)
    return a @ np.swapaxes(a, -1, -2) + 3.0 * np.eye(shape[-1])


def cwell(rng, *shape):
    return well(rng, *shape) + 0.3j * rng.standard_normal(shape)


def hpd(rng, n):
    a = rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n))
    return a @ a.conj().T + 3.0 * np.eye(n)


def herm(t):
    return (t + gg.conj(gg.matrix_transpose(t))) * 0.5


def out(t):
    return np.asarray(gg.to_numpy(t))


# --- forwards against numpy.linalg, on every backend -----------------------------------------

def _forwards(rng):
    a, s, v = well(rng, 2, 3, 3), spd(rng, 2, 3, 3), rng.standard_normal((4, 3))
    b, x3 = rng.standard_normal((2, 3, 2)), rng.standard_normal((2, 3))
    L = _OnBackend()
    return [
        ("cholesky", lambda: L.cholesky(s), np.linalg.cholesky(s)),
        ("cross", lambda: L.cross(x3, x3[::-1]), np.cross(x3, x3[::-1])),
        ("det", lambda: L.det(a), np.linalg.det(a)),
        ("diagonal", lambda: L.diagonal(v, offset=1), np.diagonal(v, 1, -2, -1)),
        ("diagonal_neg", lambda: L.diagonal(v, offset=-2), np.diagonal(v, -2, -2, -1)),
        ("eigvalsh", lambda: L.eigvalsh(s), np.linalg.eigvalsh(s)),
        ("inv", lambda: L.inv(a), np.linalg.inv(a)),
        ("matmul", lambda: L.matmul(a, b), a @ b),
        ("matrix_norm_fro", lambda: L.matrix_norm(v), np.linalg.norm(v)),
        ("matrix_norm_nuc", lambda: L.matrix_norm(v, ord="nuc"), np.linalg.norm(v, "nuc")),
        ("matrix_norm_2", lambda: L.matrix_norm(v, ord=2), np.linalg.norm(v, 2)),
        ("matrix_norm_-1", lambda: L.matrix_norm(v, ord=-1), np.linalg.norm(v, -1)),
        ("matrix_norm_inf", lambda: L.matrix_norm(v, ord=np.inf, keepdims=True),
         np.linalg.norm(v, np.inf, keepdims=True)),
        ("matrix_power_3", lambda: L.matrix_power(a, 3), np.linalg.matrix_power(a, 3)),
        ("matrix_power_-2", lambda: L.matrix_power(a, -2), np.linalg.matrix_power(a, -2)),
        ("matrix_power_0", lambda: L.matrix_power(a, 0), np.linalg.matrix_power(a, 0)),
        ("matrix_rank", lambda: L.matrix_rank(v @ v.T), np.linalg.matrix_rank(v @ v.T)),
        ("matrix_transpose", lambda: L.matrix_transpose(b), np.swapaxes(b, -1, -2)),
        ("outer", lambda: L.outer(x3[0], x3[1]), np.outer(x3[0], x3[1])),
        ("pinv", lambda: L.pinv(v), np.linalg.pinv(v)),
        ("qr", lambda: L.qr(v).R, np.linalg.qr(v).R),
        ("slogdet", lambda: L.slogdet(a).logabsdet, np.linalg.slogdet(a).logabsdet),
        ("solve", lambda: L.solve(a, b), np.linalg.solve(a, b)),
        ("solve_vector", lambda: L.solve(a, x3[0]), np.linalg.solve(a, x3[0][:, None])[..., 0]),
        ("svd", lambda: L.svd(v, full_matrices=False).S, np.linalg.svd(v).S),
        ("svdvals", lambda: L.svdvals(a), np.linalg.svd(a).S),
        ("tensordot", lambda: L.tensordot(a, b, axes=([2], [1])),
         np.tensordot(a, b, axes=([2], [1]))),
        ("trace", lambda: L.trace(v, offset=-1), np.trace(v, -1, -2, -1)),
        ("vecdot", lambda: L.vecdot(x3, x3), np.sum(x3 * x3, axis=-1)),
        ("vector_norm", lambda: L.vector_norm(v, axis=0), np.linalg.norm(v, axis=0)),
        ("vector_norm_3", lambda: L.vector_norm(v, ord=3), np.sum(np.abs(v) ** 3) ** (1 / 3)),
        ("vector_norm_inf", lambda: L.vector_norm(v, ord=-np.inf), np.min(np.abs(v))),
        ("solve_triangular", lambda: L.solve_triangular(a, b),
         np.linalg.solve(np.tril(a), b)),
        ("cho_solve", lambda: L.cho_solve(np.linalg.cholesky(s), b), np.linalg.solve(s, b)),
    ]


class _OnBackend:
    """gg.linalg with host arrays moved to the backend under test first."""

    def __getattr__(self, name):
        fn = getattr(gg.linalg, name)
        return lambda *args, **kw: fn(*[gg.asarray(np.ascontiguousarray(a))
                                        if isinstance(a, np.ndarray) else a for a in args], **kw)


def test_every_standard_function_is_there():
    names = ["cholesky", "cross", "det", "diagonal", "eig", "eigh", "eigvals", "eigvalsh", "inv",
             "matmul",
             "matrix_norm", "matrix_power", "matrix_rank", "matrix_transpose", "outer", "pinv",
             "qr", "slogdet", "solve", "svd", "svdvals", "tensordot", "trace", "vecdot",
             "vector_norm"]
    assert [n for n in names if not callable(getattr(L, n, None))] == []
    assert gg.linalg is gg.array_api.linalg


def test_forwards_match_numpy(bk64, rng):
    for name, call, ref in _forwards(rng):
        np.testing.assert_allclose(out(call()), ref, rtol=1e-10, atol=1e-12, err_msg=name)


def test_named_tuples_and_reconstructions(bk64, rng):
    a = rng.standard_normal((2, 4, 3))
    u, s, vh = L.svd(a, full_matrices=False)
    assert L.svd(a).U.shape == (2, 4, 4) and L.svd(a).Vh.shape == (2, 3, 3)
    np.testing.assert_allclose(out(u) * out(s)[..., None, :] @ out(vh), a, atol=1e-12)
    q, r = L.qr(a, mode="complete")
    assert q.shape == (2, 4, 4) and r.shape == (2, 4, 3)
    np.testing.assert_allclose(out(q) @ out(r), a, atol=1e-12)
    h = spd(rng, 3, 3)
    w, v = L.eigh(h)
    np.testing.assert_allclose(out(v) @ np.diag(out(w)) @ out(v).T, h, atol=1e-12)
    sign, logabs = L.slogdet(-np.eye(3))
    assert float(sign) == -1.0 and float(logabs) == 0.0


# --- gradients through the namespace (float64 finite differences) -------------------------

REAL_GRADS = {
    "solve_vector": (lambda a, b: L.solve(a, b), lambda r: (well(r, 3, 3), r.standard_normal(3))),
    "solve_broadcast": (lambda a, b: L.solve(a, b),
                        lambda r: (well(r, 3, 3), r.standard_normal((2, 3, 1)))),
    "eigh_invariant": (lambda a: L.eigh(herm(a)).eigenvectors ** 2 + L.eigvalsh(herm(a))[0],
                       lambda r: (r.standard_normal((3, 3)),)),
    "svd_projector": (lambda a: (lambda u: u @ gg.matrix_transpose(u))(
        L.svd(a, full_matrices=False).U), lambda r: (r.standard_normal((4, 2)),)),
    "svdvals_wide": (L.svdvals, lambda r: (r.standard_normal((2, 2, 3)),)),
    "pinv": (L.pinv, lambda r: (r.standard_normal((3, 2)),)),
    "matrix_norm_2": (lambda a: L.matrix_norm(a, ord=2), lambda r: (r.standard_normal((3, 2)),)),
    "matrix_norm_nuc": (lambda a: L.matrix_norm(a, ord="nuc"),
                        lambda r: (r.standard_normal((2, 3)),)),
    "matrix_norm_1": (lambda a: L.matrix_norm(a, ord=1), lambda r: (r.standard_normal((3, 3)),)),
    "vector_norm_3": (lambda a: L.vector_norm(a, ord=3, axis=-1),
                      lambda r: (r.standard_normal((2, 3)),)),
    "matrix_power_-3": (lambda a: L.matrix_power(a, -3), lambda r: (well(r, 2, 2),)),
    "qr_wide": (lambda a: (lambda f: gg.concat([f.Q, f.R], axis=-1))(L.qr(a)),
                lambda r: (well(r, 2, 2, 4),)),
    "qr_complete_square": (lambda a: L.qr(a, mode="complete").Q, lambda r: (well(r, 3, 3),)),
    "cross": (lambda a, b: L.cross(a, b, axis=0), lambda r: (r.standard_normal((3, 2)),
                                                            r.standard_normal((3, 1)))),
    "trace_diagonal": (lambda a: L.trace(a, offset=1)[..., None] * L.diagonal(a), lambda r: (
        r.standard_normal((2, 3, 3)),)),
    "outer": (L.outer, lambda r: (r.standard_normal(3), r.standard_normal(2))),
    "solve_triangular_upper_right": (
        lambda a, b: L.solve_triangular(a, b, upper=True, left=False),
        lambda r: (well(r, 3, 3), r.standard_normal((2, 3)))),
    "solve_triangular_unit": (lambda a, b: L.solve_triangular(a, b, unitriangular=True),
                              lambda r: (well(r, 3, 3), r.standard_normal((3, 2)))),
    "cho_solve": (lambda c, b: L.cho_solve(c, b), lambda r: (
        np.linalg.cholesky(spd(r, 3, 3)), r.standard_normal((3, 2)))),
    "cho_solve_upper": (lambda c, b: L.cho_solve(c, b, upper=True), lambda r: (
        np.linalg.cholesky(spd(r, 3, 3)).T, r.standard_normal((3, 1)))),
}


@pytest.mark.parametrize("name", sorted(REAL_GRADS))
def test_real_gradients(name, rng):
    fn, make = REAL_GRADS[name]
    check_grad(fn, *make(rng))


COMPLEX_GRADS = {
    "inv": (L.inv, lambda r: (cwell(r, 2, 2),)),
    "solve": (L.solve, lambda r: (cwell(r, 3, 3), cwell(r, 3, 1))),
    "det": (L.det, lambda r: (cwell(r, 3, 3),)),
    "slogdet_sign": (lambda a: L.slogdet(a).sign, lambda r: (cwell(r, 3, 3),)),
    "slogdet_logabsdet": (lambda a: L.slogdet(a).logabsdet, lambda r: (cwell(r, 2, 3, 3),)),
    "cholesky": (lambda a: L.cholesky(herm(a)), lambda r: (hpd(r, 3),)),
    "eigh": (lambda a: (lambda e: e.eigenvalues + gg.abs(e.eigenvectors[0]) ** 2)(L.eigh(
        herm(a))), lambda r: (hpd(r, 3),)),
    "svd": (lambda a: (lambda s: gg.abs(s.U) + s.S[0])(L.svd(a, full_matrices=False)),
            lambda r: (cwell(r, 3, 2),)),
    "svd_projector_wide": (lambda a: (lambda v: gg.matmul(gg.conj(gg.matrix_transpose(v)), v))(
        L.svd(a, full_matrices=False).Vh), lambda r: (cwell(r, 2, 3),)),
    "qr": (lambda a: L.qr(a).R + L.qr(a).Q[0, 0], lambda r: (cwell(r, 3, 2),)),
    "qr_wide": (lambda a: (lambda f: gg.concat([f.Q, f.R], axis=-1))(L.qr(a)),
                lambda r: (cwell(r, 2, 3),)),
    "pinv": (L.pinv, lambda r: (cwell(r, 3, 2),)),
    "vector_norm": (lambda a: L.vector_norm(a, axis=-1), lambda r: (cwell(r, 2, 3),)),
    "matrix_norm_2": (lambda a: L.matrix_norm(a, ord=2), lambda r: (cwell(r, 2, 2),)),
    "cho_solve": (lambda a, b: L.cho_solve(L.cholesky(herm(a)), b),
                  lambda r: (hpd(r, 2), cwell(r, 2, 1))),
    "solve_triangular_right": (lambda a, b: L.solve_triangular(a, b, left=False),
                               lambda r: (cwell(r, 2, 2), cwell(r, 1, 2))),
}


@pytest.mark.parametrize("name", sorted(COMPLEX_GRADS))
def test_complex_gradients(name, rng):
    fn, make = COMPLEX_GRADS[name]
    check_grad_complex(fn, *make(rng))


# --- twice differentiable -------------------------------------------------------------------

GRADGRAD = {
    "solve": (L.solve, lambda r: (well(r, 3, 3), r.standard_normal((3, 2)))),
    "inv": (L.inv, lambda r: (well(r, 2, 3, 3),)),
    "det": (L.det, lambda r: (well(r, 3, 3),)),
    "slogdet": (lambda a: L.slogdet(a).logabsdet, lambda r: (well(r, 3, 3),)),
    "cholesky": (lambda a: L.cholesky(herm(a)), lambda r: (spd(r, 3, 3),)),
    "eigvalsh": (lambda a: L.eigvalsh(herm(a)), lambda r: (r.standard_normal((3, 3)),)),
    "cho_solve": (lambda a, b: L.cho_solve(L.cholesky(herm(a)), b),
                  lambda r: (spd(r, 3, 3), r.standard_normal(3)[:, None])),
}


@pytest.mark.parametrize("name", sorted(GRADGRAD))
def test_second_derivatives(name, bk64, rng):
    fn, make = GRADGRAD[name]
    check_gradgrad(fn, *make(rng))


def test_hessian_of_logdet_is_known():
    """d2 log det A [E, F] = -tr(A^-1 E A^-1 F): the Hessian-vector product in direction E."""
    rng = np.random.default_rng(0)
    a, e = spd(rng, 3, 3), rng.standard_normal((3, 3))
    x = gg.Variable(a)
    L.slogdet(x).logabsdet.backward(create_graph=True)
    g = x.grad
    x.grad = None
    gg.sum(g * gg.asarray(e)).backward()
    ai = np.linalg.inv(a)
    np.testing.assert_allclose(out(x.grad), -(ai @ e @ ai).T, rtol=1e-10)


# --- the hard cases (docs/linalg.md) ----------------------------------------------------------

def test_cholesky_not_positive_definite_names_the_batch_index(bk64):
    a = np.stack([np.eye(2), np.eye(2), np.eye(2)])[None].repeat(2, axis=0)
    a[1, 2] = [[1.0, 2.0], [2.0, 1.0]]
    with pytest.raises(L.LinAlgError, match=r"batch index \(1, 2\).*not positive definite"):
        L.cholesky(a)
    with pytest.raises(ValueError, match="not positive definite"):
        L.cholesky(np.array([[0.0, 1.0], [1.0, 0.0]]))


def test_det_of_a_singular_matrix_has_the_adjugate_gradient():
    a = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [1.0, 0.0, 1.0]])  # rank 2
    x = gg.Variable(a)
    L.det(x).backward()
    adj_t = np.array([[np.linalg.det(np.delete(np.delete(a, i, 0), j, 1)) * (-1) ** (i + j)
                       for j in range(3)] for i in range(3)])  # cofactors
    np.testing.assert_allclose(out(x.grad), adj_t, atol=1e-12)
    check_grad(L.det, a)
    y = gg.Variable(np.ones((3, 3)))  # rank 1: the adjugate is 0
    L.det(y).backward()
    np.testing.assert_allclose(out(y.grad), 0.0, atol=1e-12)


def test_repeated_eigenvalues():
    """Eigenvalue losses stay finite; a loss through the vectors of a repeated eigenvalue
    gets inf/NaN (PyTorch's result: the vectors are not unique there)."""
    x = gg.Variable(np.diag([1.0, 1.0, 2.0]))
    gg.sum(L.eigvalsh(x) ** 2).backward()
    np.testing.assert_allclose(out(x.grad), np.diag([2.0, 2.0, 4.0]), atol=1e-12)
    y = gg.Variable(np.diag([1.0, 1.0, 2.0]))
    gg.sum(L.eigh(y).eigenvectors[0] * gg.asarray(np.array([1.0, 2.0, 3.0]))).backward()
    assert not np.all(np.isfinite(out(y.grad)))
    s = gg.Variable(np.eye(2))
    gg.sum(L.svdvals(s)).backward()
    np.testing.assert_allclose(out(s.grad), np.eye(2), atol=1e-12)


def test_phase_dependent_losses_raise(rng):
    z = gg.Variable(hpd(rng, 3))
    with pytest.raises(L.GaugeError, match="phase"):
        gg.sum(gg.real(L.eigh(z).eigenvectors)).backward()
    w = gg.Variable(cwell(rng, 3, 2))
    with pytest.raises(L.GaugeError, match="phase"):
        gg.sum(gg.real(L.svd(w, full_matrices=False).U)).backward()


def test_unsupported_gradients_say_why(rng):
    a = gg.Variable(rng.standard_normal((3, 2)))
    with pytest.raises(ValueError, match="full_matrices=False"):
        gg.sum(L.svd(a).U).backward()
    b = gg.Variable(rng.standard_normal((3, 2)))
    with pytest.raises(ValueError, match="mode='reduced'"):
        gg.sum(L.qr(b, mode="complete").Q).backward()
    with pytest.raises(ValueError, match="square"):
        L.inv(rng.standard_normal((2, 3)))


def test_norm_of_a_zero_vector_has_gradient_zero():
    x = gg.Variable(np.zeros((2, 3)))
    gg.sum(L.vector_norm(x, axis=-1) + L.matrix_norm(x)).backward()
    np.testing.assert_array_equal(out(x.grad), 0.0)
    check_grad(lambda t: L.vector_norm(t, axis=0, keepdims=True), np.array([[0.5], [-2.0]]))


def test_cholesky_and_eigh_gradients_are_hermitian(rng):
    """PyTorch's convention: the gradient of a non-symmetric input is the Hermitian one."""
    a = spd(rng, 3, 3) + 0.5 * np.triu(rng.standard_normal((3, 3)), 1)  # lower triangle SPD
    weights = gg.asarray(rng.standard_normal((3, 3)))
    for f in (lambda t: L.cholesky(t), lambda t: L.eigh(t).eigenvectors ** 2):
        x = gg.Variable(a)
        gg.sum(f(x) * weights).backward()
        np.testing.assert_allclose(out(x.grad), out(x.grad).T, atol=1e-12)


# --- what the official suite found (ci/array-api-suite) ---------------------------------------

@pytest.mark.parametrize("dtype", ["float64", "complex128"])
def test_empty_batches_factorize_and_differentiate(dtype):
    for f in (L.eigvalsh, lambda x: L.eigh(x).eigenvectors, lambda x: L.svd(x).U, L.svdvals,
              lambda x: L.qr(x).R, L.pinv, lambda x: gg.abs(L.eig(x).eigenvectors)):
        x = gg.Variable(np.zeros((0, 2, 2), dtype=dtype))
        y = f(x)
        assert y.shape[0] == 0
        gg.sum(gg.real(y) if "complex" in str(y.dtype) else y).backward()
        assert x.grad.shape == (0, 2, 2) and x.grad.dtype == x.dtype


def test_vecdot_keeps_integer_dtypes_and_checks_lengths():
    a = np.array([200, 100], dtype=np.uint8)
    r = L.vecdot(gg.asarray(a), gg.asarray(a))
    assert str(r.dtype) == "uint8" and int(r) == int(np.vecdot(a, a))
    with pytest.raises(ValueError, match="lengths 3 and 1"):
        L.vecdot(gg.asarray(np.ones((2, 3))), gg.asarray(np.ones((1,))))


def test_pinv_takes_an_rtol_array_of_another_precision():
    x = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    p = L.pinv(gg.asarray(x), rtol=gg.asarray(np.array(1e-3)))
    assert str(p.dtype) == "float32"
    np.testing.assert_allclose(gg.to_numpy(p), np.linalg.pinv(x), rtol=1e-5)
