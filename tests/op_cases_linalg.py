"""Op case rows for the linalg extension (gpugrad.array_api.linalg's ops), added to
tests/op_cases.py's table.

Well-conditioned inputs: a small random part plus 2 I (inv, solve, det, slogdet, qr), SPD
and symmetric matrices built inside the call (cholesky, eigh: the finite differences then
see the symmetric convention), and the vectors squared (eigh, svd: their signs are free).
"""

from __future__ import annotations

from functools import partial

import numpy as np

import gpugrad as gg
from op_cases import OpCase, normal

LINALG_CASES: list = []



def well(r, s):
    return normal(r, s) * 0.3 + 2.0 * np.eye(s[-2], s[-1])


def _linalg(name):
    return gg.registry["linalg_" + name]


def spd(r, s):  # symmetric positive definite, eigenvalues >= 3
    a = normal(r, s)
    return a @ np.swapaxes(a, -1, -2) + 3.0 * np.eye(s[-1])


def _half_sym(x):
    return (x + gg.matrix_transpose(x)) * 0.5


def _sym(x):
    return x + gg.matrix_transpose(x)


def _half_sym_ref(x):
    return (x + np.swapaxes(x, -1, -2)) * x.dtype.type(0.5)


def _flat(*parts):
    batch = parts[0].shape[:-2]
    return np.concatenate([p.reshape(batch + (-1,)) for p in parts], axis=-1)


def _eigh_ref(x):
    w, v = np.linalg.eigh(x + np.swapaxes(x, -1, -2))
    return _flat(w[..., None], v) ** 2


def _svd_ref(x, full_matrices):
    u, s, vh = np.linalg.svd(x, full_matrices=full_matrices)
    return _flat(u, s[..., None], vh) ** 2


def _slogdet_ref(x):
    sign, logabs = np.linalg.slogdet(x)
    return np.stack([sign, logabs], axis=-1)


LINALG_CASES += [
    OpCase("linalg_inv", _linalg("inv"), np.linalg.inv, (well,), ((2, 3, 3),)),
    OpCase("linalg_solve", _linalg("solve"), np.linalg.solve, (well, normal),
           ((2, 3, 3), (3, 2))),
    OpCase("linalg_det", _linalg("det"), np.linalg.det, (well,), ((2, 3, 3),)),
    OpCase("linalg_slogdet", _linalg("slogdet"), _slogdet_ref, (well,), ((2, 3, 3),)),
    OpCase("linalg_cholesky", lambda x: _linalg("cholesky")(_half_sym(x)),
           lambda x: np.linalg.cholesky(_half_sym_ref(x)), (spd,), ((2, 3, 3),)),
    OpCase("linalg_cholesky", lambda x: _linalg("cholesky")(_half_sym(x), upper=True),
           lambda x: np.swapaxes(np.linalg.cholesky(_half_sym_ref(x)), -1, -2), (spd,),
           ((3, 3),), variant="upper"),
    OpCase("linalg_eigh", lambda x: gg.square(_linalg("eigh")(_sym(x))), _eigh_ref, (normal,),
           ((2, 3, 3),)),
    OpCase("linalg_svd", lambda x: gg.square(_linalg("svd")(x, full_matrices=False)),
           partial(_svd_ref, full_matrices=False), (normal,), ((2, 4, 3),), variant="tall"),
    OpCase("linalg_svd", lambda x: gg.square(_linalg("svd")(x, full_matrices=False)),
           partial(_svd_ref, full_matrices=False), (normal,), ((2, 4),), variant="wide"),
    OpCase("linalg_svd", lambda x: gg.square(_linalg("svd")(x)),
           partial(_svd_ref, full_matrices=True), (normal,), ((3, 3),), variant="full_square"),
    OpCase("linalg_qr", _linalg("qr"), lambda x: _flat(*np.linalg.qr(x)), (well,),
           ((2, 4, 3),)),
    OpCase("linalg_qr", _linalg("qr"), lambda x: _flat(*np.linalg.qr(x)), (well,), ((2, 4),),
           variant="wide"),
    OpCase("linalg_qr", lambda x: _linalg("qr")(x, mode="complete"),
           lambda x: _flat(*np.linalg.qr(x, mode="complete")), (well,), ((3, 3),),
           variant="complete_square"),
]


# eig (general matrices, complex results): distinct eigenvalues, real ones and a complex pair;
# the loss reads Re/Im of the eigenvalues and |v|^2 of the vectors (invariant to their phases).


def _eig_real(r, s):
    return normal(r, s) * 0.3 + np.diag(np.arange(1.0, s[-1] + 1.0))


def _eig_pair(r, s):  # eigenvalues near 1 and +-2i
    return normal(r, s) * 0.2 + np.array([[0.0, -2.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


def _eig_complex(r, s):
    return (normal(r, s) + 1j * normal(r, s)) * 0.3 + np.diag(np.arange(1.0, s[-1] + 1.0))


def _eig_loss(x):
    p = _linalg("eig")(x)
    n = x.shape[-1]
    w = p[..., :n]
    return gg.concat([gg.real(w), gg.imag(w), gg.real(p * gg.conj(p))[..., n:]], axis=-1)


def _eig_ref(x):
    w, v = np.linalg.eig(x)
    vv = np.abs(v) ** 2
    return np.concatenate([w.real, w.imag, vv.reshape(vv.shape[:-2] + (-1,))], axis=-1)


LINALG_CASES += [
    OpCase("linalg_eig", _eig_loss, _eig_ref, (_eig_real,), ((2, 3, 3),)),
    OpCase("linalg_eig", _eig_loss, _eig_ref, (_eig_pair,), ((3, 3),), variant="complex_pair"),
    OpCase("linalg_eig", _eig_loss, _eig_ref, (_eig_complex,), ((2, 3, 3),),
           variant="complex_input"),
]
