"""The array-API standard's ``linalg`` extension on Tensors, differentiable (also ``gg.linalg``).

Every function of the extension, batched over leading dims (..., M, N), real and complex
where the standard allows, plus ``solve_triangular`` and ``cho_solve``, which the standard
lacks. The factorizations and solves are registered ops (gpugrad/ops/linalg_solve.py,
linalg_spectral.py and linalg_eig.py, VJPs as PyTorch's), unpacked into the standard's named
tuples (_linalg_core.py); the rest is written from ops (_linalg_more.py). solve, inv, det (of
invertible matrices), slogdet, cholesky, eig/eigvals, eigh/eigvalsh, svd, qr and everything
built on them are twice differentiable. The hard cases (repeated eigenvalues, phases of
complex vectors, singular matrices, matrices that are not positive definite) are in
docs/linalg.md.

>>> import numpy as np, gpugrad as gg
>>> A = gg.Variable(np.array([[4.0, 1.0], [1.0, 3.0]]))
>>> b = gg.asarray(np.array([1.0, 2.0]))
>>> np.round(gg.to_numpy(gg.linalg.solve(A, b)), 4)
array([0.0909, 0.6364])
>>> gg.linalg.slogdet(A).logabsdet.backward()
>>> np.round(gg.to_numpy(A.grad), 4)                # A^-T
array([[ 0.2727, -0.0909],
       [-0.0909,  0.3636]])
"""

from __future__ import annotations

from ._linalg_core import (EighResult, EigResult, GaugeError, LinAlgError, QRResult,
                           SlogdetResult, SVDResult, cholesky, det, eig, eigh, eigvals, eigvalsh,
                           inv, qr, slogdet, solve, svd, svdvals)
from ._linalg_more import (cho_solve, cross, diagonal, matrix_norm, matrix_power, matrix_rank,
                           outer, pinv, solve_triangular, trace, vector_norm)
from ._manipulation import matmul, matrix_transpose, tensordot, vecdot

__all__ = [
    "cholesky", "cross", "det", "diagonal", "eig", "eigh", "eigvals", "eigvalsh", "inv",
    "matmul", "matrix_norm", "matrix_power", "matrix_rank", "matrix_transpose", "outer", "pinv",
    "qr", "slogdet", "solve", "svd", "svdvals", "tensordot", "trace", "vecdot", "vector_norm",
    "solve_triangular", "cho_solve", "EigResult", "EighResult", "QRResult", "SVDResult",
    "SlogdetResult",
    "LinAlgError", "GaugeError",
]
