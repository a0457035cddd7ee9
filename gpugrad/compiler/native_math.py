"""The native tier's written-out ``log1p`` and ``logaddexp`` (gpugrad.compiler.native's
prelude; logaddexp is :data:`LOGADDEXP`, NumPy's steps with this log1p): without
branches or a call, so that a loop with it runs on SIMD lanes as NumPy's own does (the C
library's ``log1p`` is a call per element: 40 against 2 µs for a softplus layer of 32x64
float32 on 2026-12-06, the whole loop kept off SIMD).

Both dtypes compute in float64: ``u = 1 + x = 2**k m`` with ``m`` in [sqrt(1/2), sqrt(2))
(``k`` and ``m`` from the bits of ``u``), ``log m = 2 atanh(s)`` with ``s = (m - 1) / (m +
1)`` by its series (``|s| <= 0.1716``: to ``s**21`` for float64, ``s**11`` for float32),
``k ln2`` in two parts, and ``(x - (u - 1)) / u`` for the rounding of ``u`` (so a tiny
``x`` gives ``x``). Within 3 ulps of NumPy's over the whole range in float64, 2 in float32;
-1 gives -inf, below it NaN (the machine's, as the C library's), inf inf, NaN NaN, and ±0
itself.

>>> print(LOG1P.splitlines()[2])
def log1p_float64(x):
"""

from __future__ import annotations

TERMS = {"float64": 11, "float32": 6}
"""The terms of the atanh series per dtype: the first left out is below 1e-18 (float64),
1e-10 (float32) of the sum."""


def _source(dtype: str, n: int) -> str:
    poly = " + z * (".join(f"{1.0 / (2 * j + 1)!r}" for j in range(n)) + ")" * (n - 1)
    return f'''
@njit(inline="always", error_model="numpy", cache=True)
def log1p_{dtype}(x):
    """log(1 + x) without branches (gpugrad.compiler.native_math), in float64."""
    d = np.float64(x)
    u = 1.0 + d
    c = (d - (u - 1.0)) / u
    b = bitcast(u)
    hu = np.int32(b >> 32) + np.int32(0x95f62)  # 0x3ff00000 - 0x3fe6a09e: m from sqrt(1/2)
    k = np.float64(np.int32(hu >> 20) - np.int32(1023))
    m = bitcast((np.int64((hu & np.int32(0xfffff)) + np.int32(0x3fe6a09e)) << 32)
                | (b & 0xffffffff))
    f = m - 1.0
    s = f / (2.0 + f)
    z = s * s
    p = {poly}
    r = k * 0.6931471803691238 + (k * 1.9082149292705877e-10 + (c + 2.0 * s * p))
    r = np.inf if d == np.inf else r
    r = -np.inf if u == 0.0 else r
    r = (u - u) * np.inf if u < 0.0 else r  # the machine's NaN of an invalid operation
    return x if (x == 0 or x != x) else np.{dtype}(r)
'''


LOG1P = "".join(_source(t, n) for t, n in TERMS.items())
"""The numba source of ``log1p_float64`` and ``log1p_float32`` (they use the prelude's
``bitcast``)."""


LOGADDEXP = "".join(f'''
@njit(inline="always", error_model="numpy", cache=True)
def logaddexp_{t}(a, b):
    """NumPy's logaddexp (gpugrad.compiler.native_math) without a branch: equal operands
    (two infinities of one sign too) give the operand plus log 2, a NaN difference gives
    itself, else the larger plus log1p(exp(-|a - b|)) (an exp that never overflows)."""
    d = a - b
    r = (a if d > 0 else b) + log1p_{t}(exp_{t}(-abs(d)))
    r = d if d != d else r
    return np.{t}(a + np.{t}(0.6931471805599453)) if a == b else np.{t}(r)
''' for t in ("float64", "float32"))
"""The numba source of ``logaddexp_float64`` and ``logaddexp_float32`` (they use the
prelude's ``exp`` and :data:`LOG1P`'s ``log1p``)."""
