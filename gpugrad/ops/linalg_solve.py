"""Linear systems and determinants: inv, solve, det, slogdet, cholesky (batched over (..., M, N)).

Forwards call ``xp.linalg``; each VJP is written with array-API functions of ``xp`` (its
``linalg`` included), so a rule replayed on gpugrad.array_api records differentiable ops:
all five are twice differentiable. Complex gradients follow PyTorch (see docs/linalg.md):
``A^-H`` where the real case has ``A^-T``.
"""

from __future__ import annotations

from .. import errors as E
from ..registry import defop
from .complexes import cj, is_complex


class LinAlgError(E.OpError):
    """A matrix that the requested factorization or solve cannot take (which batch element
    and why is in the message)."""


def mH(xp, a):
    """The conjugate transpose of the last two axes (the transpose for real ``a``)."""
    return cj(xp, xp.matrix_transpose(a))


def eye_like(xp, a, n=None):
    """The n x n identity (n: ``a``'s last size) in ``a``'s dtype, on its device."""
    n = a.shape[-1] if n is None else n
    return xp.eye(n, dtype=a.dtype, device=a.device)


def diagonal_of(xp, a):
    """The main diagonal of square matrices (..., N, N) -> (..., N) (a masked sum: no
    indexing, so it records as differentiable ops)."""
    return xp.sum(a * eye_like(xp, a), axis=-1)


def diag_embed(xp, v):
    """Vectors (..., N) -> diagonal matrices (..., N, N)."""
    return xp.expand_dims(v, axis=-2) * eye_like(xp, v)


def _shape_same(shapes, params):
    return tuple(shapes[0])


def _shape_batch(shapes, params):
    return tuple(shapes[0][:-2])


def _square(name, a):
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"{name}: needs square matrices (..., N, N), got shape {tuple(a.shape)}")


@defop("linalg_inv")
def inv(xp, a):
    """The inverse of square matrices;  d/dA = -A^-H g A^-H"""
    _square("inv", a)
    out = xp.linalg.inv(a)
    return out, out


inv.defvjp(lambda xp, g, out: (-xp.matmul(mH(xp, out), xp.matmul(g, mH(xp, out))),))
inv.shape_rule = _shape_same


@defop("linalg_solve")
def solve(xp, a, b):
    """X with A X = B, A (..., M, M), B (..., M, K), batch dims broadcast;  d/dB = A^-H g,
    d/dA = -(A^-H g) X^H"""
    _square("solve", a)
    x = xp.linalg.solve(a, b)
    return x, (a, x)


def _solve_db(xp, g, res):
    a, _ = res
    return xp.linalg.solve(mH(xp, a), g)


def _solve_da(xp, g, res):
    a, x = res
    return -xp.matmul(xp.linalg.solve(mH(xp, a), g), mH(xp, x))


solve.defvjp(_solve_da, _solve_db)


def _solve_shape(shapes, params):
    a, b = shapes
    batch_a, batch_b = list(a[:-2]), list(b[:-2])
    n = max(len(batch_a), len(batch_b))
    batch_a = [1] * (n - len(batch_a)) + batch_a
    batch_b = [1] * (n - len(batch_b)) + batch_b
    batch = tuple(q if p == 1 else p if q == 1 or q is None else p
                  for p, q in zip(batch_a, batch_b))
    return batch + tuple(b[-2:])


solve.shape_rule = _solve_shape


@defop("linalg_det")
def det(xp, a):
    """The determinant of square matrices;  d/dA = g conj(det A) A^-H, which is the adjugate
    (conjugated) and stays right for singular A: there it is taken from the SVD (as PyTorch
    does; see docs/linalg.md)"""
    _square("det", a)
    d = xp.linalg.det(a)
    return d, (a, d)


def _det_vjp(xp, g, res):
    a, d = res
    if bool(xp.any(d == 0.0)):
        return (_adjugate_h(xp, a) * xp.expand_dims(xp.expand_dims(g, axis=-1), axis=-1),)
    scale = xp.expand_dims(xp.expand_dims(g * cj(xp, d), axis=-1), axis=-1)
    return (mH(xp, xp.linalg.inv(a)) * scale,)


def _adjugate_h(xp, a):
    """adj(A)^H from A = U S V^H: conj(det U det V^H) U diag(prod_{j != i} s_j) V^H, finite
    for every A (rank n-1 gives the one nonzero term). Products without division: the rows
    of a matrix of s with ones on the diagonal, multiplied out column by column."""
    u, s, vh = xp.linalg.svd(a, full_matrices=False)
    n = s.shape[-1]
    eye = eye_like(xp, s, n)
    table = xp.expand_dims(s, axis=-2) * (1.0 - eye) + eye
    others = table[..., 0]
    for j in range(1, n):  # multiplies, not prod: twice differentiable as recorded ops
        others = others * table[..., j]
    phase = cj(xp, xp.linalg.det(u) * xp.linalg.det(vh))
    middle = diag_embed(xp, xp.astype(others, u.dtype))
    return xp.matmul(xp.matmul(u, middle), vh) * xp.expand_dims(
        xp.expand_dims(phase, axis=-1), axis=-1)


det.defvjp(_det_vjp)
det.shape_rule = _shape_batch


@defop("linalg_slogdet")
def slogdet(xp, a):
    """sign and log|det| of square matrices, packed on a last axis of 2 (gpugrad.array_api
    .linalg.slogdet unpacks them);  d/dA = (g_logabsdet + i c) A^-H with c = -Im(conj(g_sign)
    sign) (0 for real A: the sign is piecewise constant)"""
    _square("slogdet", a)
    sign, logabs = xp.linalg.slogdet(a)
    if is_complex(sign):
        logabs = xp.astype(logabs, sign.dtype)
    return xp.stack([sign, logabs], axis=-1), (a, sign)


def _slogdet_vjp(xp, g, res):
    a, sign = res
    g_sign, g_log = g[..., 0], g[..., 1]
    if is_complex(sign):
        c = -xp.imag(cj(xp, g_sign) * sign)
        coef = xp.astype(xp.real(g_log), sign.dtype) + xp.astype(c, sign.dtype) * 1j
    else:
        coef = g_log
    coef = xp.expand_dims(xp.expand_dims(coef, axis=-1), axis=-1)
    return (mH(xp, xp.linalg.inv(a)) * coef,)


slogdet.defvjp(_slogdet_vjp)
slogdet.shape_rule = lambda shapes, params: tuple(shapes[0][:-2]) + (2,)


@defop("linalg_cholesky")
def cholesky(xp, a, *, upper=False):
    """L with A = L L^H (``upper=True``: U with A = U^H U) for Hermitian positive-definite A;
    only the lower triangle of A is read. A matrix that is not positive definite raises
    LinAlgError naming its batch index.  d/dA (Murray 2016, PyTorch's Hermitian form) =
    L^-H Phi(L^H g) L^-1 with Phi(P) = (tril(P) + tril(P, -1)^H) / 2"""
    _square("cholesky", a)
    try:
        out = xp.linalg.cholesky(a)
    except ValueError:  # NumPy's LinAlgError (array_api_strict too): find the culprit
        out = None
    if out is None or _has_new_nan(xp, a, out):
        raise LinAlgError(_not_pd_message(xp, a))
    return (mH(xp, out) if upper else out), (out,)


def _has_new_nan(xp, a, out):
    """CuPy returns NaN for a matrix that is not positive definite instead of raising."""
    if hasattr(out, "backward"):  # replayed on Tensors: the forward already checked
        return False
    return bool(xp.any(xp.isnan(out))) and not bool(xp.any(xp.isnan(a)))


def _not_pd_message(xp, a):
    batch = tuple(a.shape[:-2])
    flat = xp.reshape(a, (-1,) + tuple(a.shape[-2:]))
    for i in range(flat.shape[0]):
        try:
            part = xp.linalg.cholesky(flat[i, ...])
        except ValueError:
            part = None
        if part is None or bool(xp.any(xp.isnan(part))):
            where, rest = [], i
            for size in reversed(batch):
                where.insert(0, rest % size)
                rest //= size
            at = f" at batch index {tuple(where)}" if batch else ""
            return (f"cholesky: the matrix{at} is not positive definite (input shape "
                    f"{tuple(a.shape)}); add a multiple of the identity (jitter) or check "
                    "that it is Hermitian")
    return f"cholesky: a matrix of the input (shape {tuple(a.shape)}) is not positive definite"


def _cholesky_vjp(xp, g, res, *, upper=False):
    (low,) = res
    gl = mH(xp, g) if upper else g
    p = xp.tril(xp.matmul(mH(xp, low), gl))
    phi = (p + mH(xp, xp.tril(p, k=-1))) * 0.5
    lh = mH(xp, low)
    left = xp.linalg.solve(lh, phi)  # L^-H Phi
    return (mH(xp, xp.linalg.solve(lh, mH(xp, left))),)  # (L^-H Phi) L^-1


cholesky.defvjp(_cholesky_vjp)
cholesky.shape_rule = _shape_same
