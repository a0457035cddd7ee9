"""gpugrad.array_api.linalg's factorizations and solves: the registered ops, their
results unpacked into the standard's named tuples."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..ops import linalg_eig as G
from ..ops import linalg_solve as S
from ..ops import linalg_spectral as D
from ..ops.complexes import is_complex
from ..tensor import Tensor
from . import _wrap as W
from ._elementwise import conj, real
from ._manipulation import expand_dims, matrix_transpose, reshape, squeeze

LinAlgError = S.LinAlgError
GaugeError = D.GaugeError


class EighResult(NamedTuple):
    eigenvalues: Any
    eigenvectors: Any


class EigResult(NamedTuple):
    eigenvalues: Any
    eigenvectors: Any


class QRResult(NamedTuple):
    Q: Any
    R: Any


class SVDResult(NamedTuple):
    U: Any
    S: Any
    Vh: Any


class SlogdetResult(NamedTuple):
    sign: Any
    logabsdet: Any


def _t(x: Any) -> Tensor:
    return W.as_tensor(x)


def _part(p: Tensor, start: int, shape: tuple, batch: tuple) -> Tensor:
    size = int(np.prod(shape))
    return reshape(p[..., start:start + size], batch + tuple(shape))


def _mH(x: Tensor) -> Tensor:
    x = matrix_transpose(x)
    return conj(x) if is_complex(x) else x


# --- registered ops --------------------------------------------------------------------------

@W.mark("composite")
def inv(x: Any, /) -> Tensor:
    """The inverse of square matrices (..., N, N).

    >>> import numpy as np, gpugrad as gg
    >>> gg.to_numpy(gg.linalg.inv(gg.asarray(np.array([[2.0, 0.0], [0.0, 4.0]]))))
    array([[0.5 , 0.  ],
           [0.  , 0.25]])
    """
    return S.inv(_t(x))


@W.mark("composite")
def solve(x1: Any, x2: Any, /) -> Tensor:
    """X with x1 X = x2; x2 is (..., M, K), or (M,) for one right-hand side (batch dims
    broadcast)."""
    a, b = (_t(v) for v in W.promote(x1, x2))
    if b.ndim == 1:
        return squeeze(S.solve(a, expand_dims(b, axis=-1)), axis=-1)
    return S.solve(a, b)


@W.mark("composite")
def det(x: Any, /) -> Tensor:
    """Determinants of square matrices; the gradient of a singular matrix is its adjugate."""
    return S.det(_t(x))


@W.mark("composite")
def slogdet(x: Any, /) -> SlogdetResult:
    """(sign, log|det|) of square matrices; for complex input the sign has |sign| = 1 and
    logabsdet is real."""
    p = S.slogdet(_t(x))
    sign, logabs = p[..., 0], p[..., 1]
    return SlogdetResult(sign, real(logabs) if is_complex(logabs) else logabs)


@W.mark("composite")
def cholesky(x: Any, /, *, upper: bool = False) -> Tensor:
    """The Cholesky factor of Hermitian positive-definite matrices (lower; ``upper=True``:
    upper). Not positive definite: LinAlgError naming the batch index.

    >>> import numpy as np, gpugrad as gg
    >>> gg.to_numpy(gg.linalg.cholesky(gg.asarray(np.array([[4.0, 2.0], [2.0, 5.0]]))))
    array([[2., 0.],
           [1., 2.]])
    """
    return S.cholesky(_t(x), upper=bool(upper))


@W.mark("composite")
def eigh(x: Any, /) -> EighResult:
    """Eigenvalues (ascending, real) and eigenvectors (columns) of Hermitian matrices."""
    x = _t(x)
    n, batch = x.shape[-1], tuple(x.shape[:-2])
    p = D.eigh(x)
    w = p[..., :n]
    return EighResult(real(w) if is_complex(w) else w, _part(p, n, (n, n), batch))


@W.mark("composite")
def eigvalsh(x: Any, /) -> Tensor:
    """The eigenvalues of Hermitian matrices, ascending."""
    return eigh(x).eigenvalues


@W.mark("composite")
def eig(x: Any, /) -> EigResult:
    """Eigenvalues and eigenvectors (columns, unit norm) of general square matrices, complex
    even for real input. A loss that depends on the vectors' free phases raises GaugeError.

    >>> import numpy as np, gpugrad as gg
    >>> A = gg.Variable(np.array([[0.0, -2.0], [2.0, 0.0]]))
    >>> w, v = gg.linalg.eig(A)
    >>> gg.to_numpy(w)
    array([0.+2.j, 0.-2.j])
    >>> gg.sum(gg.imag(w) ** 2).backward()
    >>> gg.to_numpy(A.grad)
    array([[ 0., -4.],
           [ 4.,  0.]])
    """
    x = _t(x)
    n, batch = x.shape[-1], tuple(x.shape[:-2])
    p = G.eig(x)
    return EigResult(p[..., :n], _part(p, n, (n, n), batch))


@W.mark("composite")
def eigvals(x: Any, /) -> Tensor:
    """The eigenvalues of general square matrices, complex (in the order eig gives)."""
    return eig(x).eigenvalues


@W.mark("composite")
def svd(x: Any, /, *, full_matrices: bool = True) -> SVDResult:
    """x = U diag(S) Vh with S descending (``full_matrices=False``: the reduced form)."""
    x = _t(x)
    m, n, batch = x.shape[-2], x.shape[-1], tuple(x.shape[:-2])
    us, ss, vs = D.svd_sizes(m, n, bool(full_matrices))
    p = D.svd(x, full_matrices=bool(full_matrices))
    k = ss[0]
    start = us[0] * us[1]
    s = p[..., start:start + k]
    return SVDResult(_part(p, 0, us, batch), real(s) if is_complex(s) else s,
                     _part(p, start + k, vs, batch))


@W.mark("composite")
def svdvals(x: Any, /) -> Tensor:
    """The singular values, descending."""
    return svd(x, full_matrices=False).S


@W.mark("composite")
def qr(x: Any, /, *, mode: str = "reduced") -> QRResult:
    """x = Q R (``mode="reduced"`` or ``"complete"``); differentiable except for the extra
    columns of Q of a tall matrix in ``"complete"`` mode."""
    x = _t(x)
    m, n, batch = x.shape[-2], x.shape[-1], tuple(x.shape[:-2])
    qs, rs = D.qr_sizes(m, n, mode)
    p = D.qr(x, mode=mode)
    return QRResult(_part(p, 0, qs, batch), _part(p, qs[0] * qs[1], rs, batch))
