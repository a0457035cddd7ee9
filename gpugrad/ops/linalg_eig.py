"""The general (non-symmetric) eigendecomposition: eig, complex results for real or complex
input.

Like eigh (linalg_spectral.py), the op has one output: the N eigenvalues, then the N x N
eigenvectors (columns, unit norm as LAPACK returns them), packed flat on one last axis,
always complex; gpugrad.array_api.linalg unpacks them into ``EigResult``.

The VJP is PyTorch's linalg_eig_backward: with E_ij = conj(w_j - w_i) off the diagonal,

    gA = V^-H (diag(g_w) + (V^H g_V - V^H V Re(diag(V^H g_V))) / E) V^H

(the real part of it for a real input). A loss that depends on the free phase of the
eigenvectors (Im(diag(V^H g_V)) != 0) raises GaugeError; repeated eigenvalues give inf/NaN
where the loss depends on their vectors (docs/linalg.md).
"""

from __future__ import annotations

from ..fpstate import quiet
from ..registry import defop
from .complexes import is_complex
from .fft import COMPLEX_OF, _as_complex
from .linalg_solve import diag_embed, diagonal_of, eye_like, mH
from .linalg_spectral import _batch, _check_gauge, _flat, _gaps, _over_gaps, _part


@defop("linalg_eig")
def eig(xp, a):
    """Eigenvalues and eigenvectors of square matrices, complex, packed as (..., N + N*N);
    d/dA = V^-H (diag(g_w) + (V^H g_V - V^H V Re(diag(V^H g_V))) / conj(E)) V^H,
    E_ij = w_j - w_i (PyTorch's linalg_eig_backward; real part for a real input)"""
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"eig: needs square matrices (..., N, N), got {tuple(a.shape)}")
    w, v = xp.linalg.eig(a)
    w, v = _as_complex(xp, w), _as_complex(xp, v)  # NumPy gives real results when it can
    out = xp.concat([w, _flat(xp, v, _batch(a))], axis=-1)
    return out, (w, v, is_complex(a))


def _eig_vjp(xp, g, res):
    w, v, complex_in = res
    n = w.shape[-1]
    gw = g[..., :n]
    gv = _part(xp, g, n, (n, n), tuple(w.shape[:-1]))
    vh = mH(xp, v)
    vhgv = xp.matmul(vh, gv)
    d = diagonal_of(xp, vhgv)
    _check_gauge(xp, d, "eig")
    inner = vhgv - xp.matmul(vh, v * xp.expand_dims(xp.astype(xp.real(d), v.dtype), axis=-2))
    with quiet(xp, divide="ignore", invalid="ignore"):  # inf/NaN: see _over_gaps
        inner = _over_gaps(xp, inner, _gaps(xp, xp.conj(w)))
        inner = inner * (1.0 - eye_like(xp, inner)) + diag_embed(xp, gw)
        ga = xp.linalg.solve(vh, xp.matmul(inner, vh))
    return (ga if complex_in else xp.real(ga),)


eig.defvjp(_eig_vjp)
eig.shape_rule = lambda shapes, params: tuple(shapes[0][:-2]) + (
    None if shapes[0][-1] is None else shapes[0][-1] * (shapes[0][-1] + 1),)
eig.dtype_rule = lambda facts, params: (None if facts[0][1] is None
                                        else COMPLEX_OF.get(facts[0][1], facts[0][1]))
