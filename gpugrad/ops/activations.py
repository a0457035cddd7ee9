"""Activations the standard lacks: erf, softplus, gelu, silu (PyTorch's definitions).

Each op is one declaration: its rules against ``xp``, its scalar formulas (from which the
planned program and kernel fusion derive code), and its signature. The shape follows the
input and the dtype is its floating one (``gpugrad.shapes`` gives an elementwise formula op
those rules).
"""

from __future__ import annotations

import math

from ..fpstate import quiet
from ..registry import defop
from .complexes import real_only

TWO_OVER_SQRT_PI = 1.1283791670955126  # 2 / sqrt(pi)
SQRT_PI = 1.7724538509055159
SQRT_HALF = 0.7071067811865476  # 1 / sqrt(2)
SQRT_TWO_OVER_PI = 0.7978845608028654  # sqrt(2 / pi): gelu's tanh form
INV_SQRT_TWO_PI = 0.3989422804014327  # 1 / sqrt(2 pi): the normal density at 0
KAPPA = 0.044715
_SPLIT = 2.5  # below: the series; above: the continued fraction
_SERIES_TERMS = 40
_FRACTION_TERMS = 30
_FLOAT32_TERMS = (30, 20)  # a float32 x, worked in float64: the float32 results of 200001
# points in [-6, 6] equal math.erf's rounded (40 and 30 terms: the same; 26 and 16: 1 ulp)


def erf_value(xp, x, terms=(_SERIES_TERMS, _FRACTION_TERMS)):
    """erf(x) in the dtype of ``x`` from array-API operations, to about 2e-15 relative in
    float64 (tests compare it with math.erf on 20001 points).

    For |x| <= 2.5, the everywhere-convergent series of positive terms (Abramowitz & Stegun,
    Handbook of Mathematical Functions, 1964, eq. 7.1.6)::

        erf(x) = 2/sqrt(pi) exp(-x^2) sum_n 2^n x^(2n+1) / (1 * 3 * ... * (2n+1))

    40 terms; no cancellation, as every term has the sign of x. Above, 1 - erfc(x) with
    erfc from the continued fraction (A&S eq. 7.1.14)::

        erfc(x) = exp(-x^2)/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + ...)))))

    30 levels, evaluated from the tail. erf(x) rounds to 1 for x >= 6 in float64, so larger
    |x| is taken as 6 there (no overflow of x^2). Odd: erf(-x) = -erf(x); NaN stays NaN.

    >>> import numpy as np, math
    >>> xs = np.array([-3.0, -0.5, 1e-300, 0.25, 2.0, 4.0, np.inf])
    >>> ref = np.array([math.erf(v) for v in xs])
    >>> bool(np.all(np.abs(erf_value(np, xs) - ref) <= 2e-15 * np.abs(ref)))
    True

    A float32 ``x`` is worked in float64 and rounded once, so the result is within an ulp of
    the true value, as the native tier's libm erf is (the series summed in float32 was up to
    63 ulps off in gelu's gradient), with fewer terms (``terms``: the series', the fraction's
    levels); on a device without float64 the series runs in float32.

    >>> x32 = np.linspace(-3, 3, 601, dtype=np.float32)
    >>> ref32 = np.array([math.erf(v) for v in x32.astype(np.float64)]).astype(np.float32)
    >>> got = erf_value(np, x32)
    >>> got.dtype == np.float32, int(np.max(np.abs(got.view(np.int32) - ref32.view(np.int32))))
    (True, 0)
    """
    if x.dtype == xp.float32:
        try:
            wide = xp.astype(x, xp.float64)
        except (TypeError, ValueError):  # a device without float64: the series in float32
            wide = None
        if wide is not None:
            return xp.astype(erf_value(xp, wide, _FLOAT32_TERMS), xp.float32)
    a = xp.abs(x)
    big = a > _SPLIT
    with quiet(xp):  # the series' terms of a tiny x underflow by design
        s_x = xp.where(big, 0.0, x)  # each branch on values it is accurate for
        x2 = s_x * s_x
        step = x2 * 2.0
        term = s_x
        total = s_x
        for n in range(1, terms[0]):
            term = term * (step / float(2 * n + 1))
            total = total + term
        series = xp.exp(-x2) * total * TWO_OVER_SQRT_PI
        c = xp.minimum(xp.where(big, a, 3.0), 6.0)
        f = c
        for k in range(terms[1], 0, -1):
            f = c + (k * 0.5) / f
        tail = 1.0 - xp.exp(-(c * c)) / (f * SQRT_PI)
    return xp.where(big, xp.where(x < 0, -tail, tail), series)


def _erf_of(xp, x):
    """erf of backend arrays by :func:`erf_value`; of Tensors (a rule replayed on
    gpugrad.array_api for higher-order gradients) by the erf op, so that it is recorded as
    one op with its exact gradient."""
    return erf(x) if hasattr(x, "backward") else erf_value(xp, x)


@defop("erf")
def erf(xp, x):
    """The error function 2/sqrt(pi) int_0^x exp(-t^2) dt (the standard has none; see
    :func:`erf_value`);  d/dx = 2/sqrt(pi) exp(-x^2)"""
    real_only("erf", x)
    return erf_value(xp, x), x


erf.defvjp(lambda xp, g, x: (g * (TWO_OVER_SQRT_PI * xp.exp(-(x * x))),))
erf.defscalar("erf(x)", f"g * ({TWO_OVER_SQRT_PI!r} * exp(-(x * x)))")


@defop("softplus")
def softplus(xp, x, *, beta=1.0, threshold=20.0):
    """log(1 + exp(beta x)) / beta, and x itself where beta x > threshold (PyTorch's
    Softplus);  d/dx = sigmoid(beta x), 1 above the threshold"""
    real_only("softplus", x)
    z = x * beta
    with quiet(xp):  # exp(beta x) underflows to 0 far below 0 (then the value is 0)
        soft = xp.log1p(xp.exp(xp.minimum(z, threshold))) / beta
    return xp.where(z > threshold, x, soft), x


def _softplus_vjp(xp, g, x, *, beta=1.0, threshold=20.0):
    z = x * beta
    with quiet(xp):
        e = xp.exp(xp.minimum(z, threshold))
    return (xp.where(z > threshold, g, g * e / (e + 1.0)),)


softplus.defvjp(_softplus_vjp)
softplus.defscalar("where(x * beta > threshold, x,"
                   " log1p(exp(minimum(x * beta, threshold))) / beta)",
                   "where(x * beta > threshold, g, g * exp(minimum(x * beta, threshold))"
                   " / (exp(minimum(x * beta, threshold)) + 1))")


@softplus.defsignature
def _softplus(x, /, beta=1.0, threshold=20.0):
    return softplus.run(x, beta=float(beta), threshold=float(threshold))


@defop("gelu")
def gelu(xp, x, *, approximate="none"):
    """x Phi(x), Phi the standard normal CDF: ``approximate="none"`` uses erf, x/2 (1 +
    erf(x/sqrt(2))); ``"tanh"`` uses x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), as
    PyTorch's GELU;  d/dx = Phi(x) + x phi(x) (and the tanh form's own derivative)"""
    real_only("gelu", x)
    if approximate == "tanh":
        inner = (x + x * x * x * KAPPA) * SQRT_TWO_OVER_PI
        return x * 0.5 * (xp.tanh(inner) + 1.0), x
    if approximate != "none":
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return x * 0.5 * (_erf_of(xp, x * SQRT_HALF) + 1.0), x


def _gelu_vjp(xp, g, x, *, approximate="none"):
    if approximate == "tanh":
        x2 = x * x
        t = xp.tanh((x + x2 * x * KAPPA) * SQRT_TWO_OVER_PI)
        inner_d = (x2 * (3.0 * KAPPA) + 1.0) * SQRT_TWO_OVER_PI
        return (g * ((t + 1.0) * 0.5 + x * 0.5 * (1.0 - t * t) * inner_d),)
    cdf = (_erf_of(xp, x * SQRT_HALF) + 1.0) * 0.5
    pdf = xp.exp(x * x * -0.5) * INV_SQRT_TWO_PI
    return (g * (cdf + x * pdf),)


gelu.defvjp(_gelu_vjp)
gelu.defscalar("x * 0.5 * (erf(x * 0.7071067811865476) + 1)",
               "g * ((erf(x * 0.7071067811865476) + 1) * 0.5"
               " + x * (exp(x * x * -0.5) * 0.3989422804014327))")


@gelu.defsignature
def _gelu(x, /, approximate="none"):
    return gelu.run(x, approximate=approximate)


def _sigmoid(xp, x):
    """1 / (1 + exp(-x)) without overflow, with the bits of silu's scalar formula
    (``reciprocal(exp(-x) + 1)``, what planned programs compute) wherever exp(-x) is finite,
    so eager and graph runs agree to the bit. Below -log(max) + 1, where exp(-x) would
    overflow, it is e / (1 + e) with e = exp(x), which keeps full relative precision.
    Every branch stays finite, so the selects' second derivatives carry no NaN."""
    with quiet(xp):
        edge = -math.log(float(xp.finfo(x.dtype).max)) + 1.0
        plain = x > edge
        e = xp.exp(-xp.where(plain, x, 0.0))
        low = xp.exp(xp.where(plain, edge, x))
        return xp.where(plain, 1.0 / (e + 1.0), low / (1.0 + low))


@defop("silu")
def silu(xp, x):
    """x sigmoid(x) (also called swish);  d/dx = s (1 + x (1 - s)), s = sigmoid(x)"""
    real_only("silu", x)
    return x * _sigmoid(xp, x), x


silu.defvjp(lambda xp, g, x: (g * _silu_d(xp, x),))
# sigmoid as reciprocal(exp(-x) + 1): where exp(-x) overflows, planned programs run the rule
silu.defscalar("x * reciprocal(exp(-x) + 1)", "g * (reciprocal(exp(-x) + 1)"
               " * (x * (1 - reciprocal(exp(-x) + 1)) + 1))")


def _silu_d(xp, x):
    s = _sigmoid(xp, x)
    return s * (x * (1.0 - s) + 1.0)
