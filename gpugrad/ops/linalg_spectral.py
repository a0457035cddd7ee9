"""Decompositions with several results: eigh, svd, qr.

An op has one output, so each packs its results flat on one last axis (eigh: the N
eigenvalues, then the N x N eigenvectors; svd: U, S, Vh; qr: Q, R);
gpugrad.array_api.linalg unpacks them into the standard's named tuples with slices and
reshapes, which differentiate like any op. A loss that uses only some results gives zeros for
the others, and each rule is linear in them.

VJPs follow PyTorch (docs/linalg.md has the hard cases): a gap 1/(lambda_j - lambda_i) of
repeated eigen- or singular values is infinite where the loss depends on those vectors (and
only there: a zero numerator gives 0), and a complex loss that depends on the free phase of
a vector raises GaugeError.
"""

from __future__ import annotations

from .. import errors as E
from ..fpstate import quiet
from ..registry import defop
from .complexes import is_complex
from .linalg_solve import diag_embed, diagonal_of, eye_like, mH


class GaugeError(E.OpError):
    """The loss depends on the arbitrary phase of complex eigen- or singular vectors."""


def _batch(a):
    return tuple(a.shape[:-2])


def _flat(xp, a, batch):
    """The last two axes as one (explicit size: -1 is ambiguous for an empty batch)."""
    return xp.reshape(a, batch + (a.shape[-2] * a.shape[-1],))


def _part(xp, p, start, shape, batch):
    size = 1
    for s in shape:
        size *= s
    return xp.reshape(p[..., start:start + size], batch + tuple(shape))


def _gaps(xp, w):
    """E[i, j] = w[j] - w[i], with ones on the diagonal (never divided there)."""
    e = xp.expand_dims(w, axis=-2) - xp.expand_dims(w, axis=-1)
    return e + eye_like(xp, e)


def _over_gaps(xp, num, gaps):
    """num / gaps, 0 where num is 0 (a repeated value no loss looks through), inf/NaN where
    a loss depends on the vectors of repeated values (PyTorch's result)."""
    with quiet(xp, divide="ignore", invalid="ignore"):
        return xp.where(num == 0.0, xp.zeros_like(num), num / xp.astype(gaps, num.dtype))


def _check_gauge(xp, diag, name):
    if not is_complex(diag) or 0 in diag.shape:
        return
    im = xp.abs(xp.imag(diag))
    tol = 1e-3 if "complex64" in str(diag.dtype) else 1e-6
    if bool(xp.any(im > tol * (1.0 + xp.max(xp.abs(diag))))):
        raise GaugeError(
            f"{name} backward: complex vectors are defined only up to a phase e^(i phi) each, "
            "and this loss depends on that phase (Im(diag(V^H gV)) is not 0), so its "
            "gradient is not defined; use a loss invariant to the phase (abs(v), v v^H, ...)")


@defop("linalg_eigh")
def eigh(xp, a):
    """Eigenvalues (ascending) and eigenvectors of Hermitian matrices (the lower triangle
    is read), packed as (..., N + N*N);  d/dA = V (diag(g_w) + F o skew(V^H g_V)) V^H,
    F_ij = 1/(w_j - w_i) off the diagonal, skew(M) = (M - M^H)/2 (PyTorch's; Hermitian)"""
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"eigh: needs square matrices (..., N, N), got {tuple(a.shape)}")
    w, v = xp.linalg.eigh(a)
    batch = _batch(a)
    flat_w = xp.astype(w, v.dtype) if is_complex(v) else w
    return xp.concat([flat_w, _flat(xp, v, batch)], axis=-1), (w, v)


def _eigh_vjp(xp, g, res):
    w, v = res
    n = w.shape[-1]
    batch = tuple(w.shape[:-1])
    gw = g[..., :n]
    gv = _part(xp, g, n, (n, n), batch)
    vhgv = xp.matmul(mH(xp, v), gv)
    _check_gauge(xp, diagonal_of(xp, vhgv), "eigh")
    vhgv = (vhgv - mH(xp, vhgv)) * 0.5  # the skew-Hermitian part: a Hermitian gradient
    with quiet(xp, divide="ignore", invalid="ignore"):  # inf/NaN: see _over_gaps
        inner = _over_gaps(xp, vhgv, _gaps(xp, w))
        inner = inner * (1.0 - eye_like(xp, inner)) + diag_embed(
            xp, xp.real(gw) if is_complex(gw) else gw)
        return (xp.matmul(v, xp.matmul(inner, mH(xp, v))),)


eigh.defvjp(_eigh_vjp)
eigh.shape_rule = lambda shapes, params: tuple(shapes[0][:-2]) + (
    None if shapes[0][-1] is None else shapes[0][-1] * (shapes[0][-1] + 1),)


def svd_sizes(m, n, full_matrices):
    """The shapes of U, S and Vh for an m x n matrix."""
    k = min(m, n)
    if full_matrices:
        return (m, m), (k,), (n, n)
    return (m, k), (k,), (k, n)


@defop("linalg_svd")
def svd(xp, a, *, full_matrices=True):
    """A = U diag(S) Vh, S descending, packed as U, S, Vh on one axis;  d/dA: PyTorch's
    svd_backward (the gauge-invariant part; the extra columns of ``full_matrices=True`` must
    get no gradient)"""
    u, s, vh = xp.linalg.svd(a, full_matrices=full_matrices)
    batch = _batch(a)
    flat_s = xp.astype(s, u.dtype) if is_complex(u) else s
    packed = xp.concat([_flat(xp, u, batch), flat_s, _flat(xp, vh, batch)], axis=-1)
    return packed, (u, s, vh)


def _svd_vjp(xp, g, res, *, full_matrices=True):
    u, s, vh = res
    m, n = u.shape[-2], vh.shape[-1]
    k = s.shape[-1]
    batch = tuple(s.shape[:-1])
    us, ss, vs = svd_sizes(m, n, full_matrices)
    gu = _part(xp, g, 0, us, batch)
    gs = g[..., us[0] * us[1]:us[0] * us[1] + k]
    gvh = _part(xp, g, us[0] * us[1] + k, vs, batch)
    if full_matrices:
        extra = [gu[..., :, k:], gvh[..., k:, :]]
        if any(e.shape[-1] * e.shape[-2] and bool(xp.any(e != 0.0)) for e in extra):
            raise ValueError("svd backward: with full_matrices=True the loss depends on the "
                             "extra singular vectors, which are not unique; use "
                             "full_matrices=False")
        u, gu, vh, gvh = u[..., :, :k], gu[..., :, :k], vh[..., :k, :], gvh[..., :k, :]
    if is_complex(gs):
        gs = xp.real(gs)
    v, gv = mH(xp, vh), mH(xp, gvh)
    uhgu = xp.matmul(mH(xp, u), gu)
    vhgv = xp.matmul(vh, gv)
    if is_complex(u):
        _check_gauge(xp, diagonal_of(xp, uhgu) + diagonal_of(xp, vhgv), "svd")
    uhgu = uhgu - mH(xp, uhgu)
    vhgv = vhgv - mH(xp, vhgv)
    s_c = xp.astype(s, u.dtype) if is_complex(u) else s
    num = uhgu * xp.expand_dims(s_c, axis=-2) + xp.expand_dims(s_c, axis=-1) * vhgv
    mid = _over_gaps(xp, num, _gaps(xp, s * s))
    mid = mid * (1.0 - eye_like(xp, mid)) + diag_embed(xp, xp.astype(gs, u.dtype))
    if is_complex(u):
        mid = mid + diag_embed(xp, diagonal_of(xp, uhgu) / (s_c * 2.0))
    with quiet(xp, divide="ignore", invalid="ignore"):
        if m > k:
            gus = gu / xp.expand_dims(s_c, axis=-2)
            out = xp.matmul(u, mid) + gus - xp.matmul(u, xp.matmul(mH(xp, u), gus))
            return (xp.matmul(out, vh),)
        if n > k:
            sgv = gvh / xp.expand_dims(s_c, axis=-1)
            out = xp.matmul(mid, vh) + sgv - xp.matmul(xp.matmul(sgv, v), vh)
            return (xp.matmul(u, out),)
    return (xp.matmul(u, xp.matmul(mid, vh)),)


svd.defvjp(_svd_vjp)


def _packed_shape(sizes, param, default):
    """The shape rule of an op whose results, of ``sizes(m, n, params[param])``, are packed
    on one last axis."""

    def rule(shapes, params):
        shape = shapes[0]
        m, n = shape[-2], shape[-1]
        if m is None or n is None:
            return tuple(shape[:-2]) + (None,)
        total = 0
        for part in sizes(m, n, params.get(param, default)):
            size = 1
            for d in part:
                size *= d
            total += size
        return tuple(shape[:-2]) + (total,)

    return rule


svd.shape_rule = _packed_shape(svd_sizes, "full_matrices", True)


def qr_sizes(m, n, mode):
    k = m if mode == "complete" else min(m, n)
    return (m, k), (k, n)


@defop("linalg_qr")
def qr(xp, a, *, mode="reduced"):
    """A = Q R, packed as Q then R on one axis;  d/dA (M >= N, PyTorch's formula) =
    (g_Q + Q syminvadj(triu(g_R R^H - Q^H g_Q))) R^-H; M < N: the same for the leading
    square block, and Q g_R2 for the rest"""
    if mode not in ("reduced", "complete"):
        raise ValueError(f"qr: mode must be 'reduced' or 'complete', got {mode!r}")
    q, r = xp.linalg.qr(a, mode=mode)
    batch = _batch(a)
    return xp.concat([_flat(xp, q, batch), _flat(xp, r, batch)], axis=-1), (q, r)


def _qr_vjp(xp, g, res, *, mode="reduced"):
    q, r = res
    m, n = q.shape[-2], r.shape[-1]
    if mode == "complete" and m > n:
        raise ValueError(f"qr backward: the extra columns of Q of mode='complete' are not "
                         f"unique, so a {m} x {n} matrix has no gradient there; use "
                         "mode='reduced'")
    batch = tuple(q.shape[:-2])
    qs, rs = qr_sizes(m, n, mode)
    gq = _part(xp, g, 0, qs, batch)
    gr = _part(xp, g, qs[0] * qs[1], rs, batch)
    if m >= n:
        return (_qr_tall(xp, q, r, gq, gr),)
    # wide: A = [X | Y] with X = Q R1 square and Y = Q R2 (PyTorch's split)
    r1, r2, gr1, gr2 = r[..., :, :m], r[..., :, m:], gr[..., :, :m], gr[..., :, m:]
    y = xp.matmul(q, r2)
    gx = _qr_tall(xp, q, r1, gq + xp.matmul(y, mH(xp, gr2)), gr1)
    return (xp.concat([gx, xp.matmul(q, gr2)], axis=-1),)


def _qr_tall(xp, q, r, gq, gr):
    """(g_Q + Q syminvadj(triu(g_R R^H - Q^H g_Q))) R^-H, for M >= N."""
    x = xp.triu(xp.matmul(gr, mH(xp, r)) - xp.matmul(mH(xp, q), gq))
    sym = x + mH(xp, x)
    sym = sym - diag_embed(xp, xp.astype(xp.real(diagonal_of(xp, x)), x.dtype)
                           if is_complex(x) else diagonal_of(xp, x))
    y = gq + xp.matmul(q, sym)
    return mH(xp, xp.linalg.solve(r, mH(xp, y)))  # Y R^-H


qr.defvjp(_qr_vjp)


qr.shape_rule = _packed_shape(qr_sizes, "mode", "reduced")

