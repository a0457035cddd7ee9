"""Element-wise functions of gpugrad.array_api.

Registered ops are used as they are (``exp = elementwise.exp``); the rest are written from
them here, or are passthroughs with no gradient (see ``_wrap``).
"""

from __future__ import annotations

import math
from typing import Any

from .. import backend as B
from ..fpstate import quiet
from ..ops import arithmetic, compare, complexes, elementwise, trig
from ..tensor import Tensor
from . import _wrap as W
from ._creation import full_like, zeros_like
from ._wrap import mark, passthrough

# --- registered ops ----------------------------------------------------------------------
abs = elementwise.abs
acos = trig.acos
acosh = trig.acosh
asin = trig.asin
asinh = trig.asinh
atan = trig.atan
atanh = trig.atanh
cos = trig.cos
cosh = trig.cosh
exp = elementwise.exp
expm1 = trig.expm1
log = elementwise.log
log1p = elementwise.log1p
negative = arithmetic.negative
sin = trig.sin
sinh = trig.sinh
sqrt = elementwise.sqrt
square = elementwise.square
tan = trig.tan
tanh = elementwise.tanh


_promoting = W.promoting


add = _promoting(arithmetic.add)
atan2 = _promoting(trig.atan2)
divide = _promoting(arithmetic.divide)
logaddexp = _promoting(elementwise.logaddexp)
maximum = _promoting(elementwise.maximum)
minimum = _promoting(elementwise.minimum)
multiply = _promoting(arithmetic.multiply)
pow = _promoting(arithmetic.pow)
subtract = _promoting(arithmetic.subtract)


where = _promoting(elementwise.where)


equal = compare.equal
not_equal = compare.not_equal
less = compare.less
less_equal = compare.less_equal
greater = compare.greater
greater_equal = compare.greater_equal


# array bounds are differentiable too (see gpugrad.ops.signatures)
clip = elementwise.clip


# --- composites ---------------------------------------------------------------------------

@mark("composite")
def positive(x: Any, /) -> Tensor:
    """+x (the identity)."""
    return W.as_tensor(x)


@mark("composite")
def reciprocal(x: Any, /) -> Tensor:
    """1 / x;  d/dx = -1/x**2."""
    return divide(1.0, x)


@mark("composite")
def log2(x: Any, /) -> Tensor:
    """log(x) / log(2);  d/dx = 1/(x log 2)."""
    return divide(log(x), math.log(2.0))


@mark("composite")
def log10(x: Any, /) -> Tensor:
    """log(x) / log(10);  d/dx = 1/(x log 10)."""
    return divide(log(x), math.log(10.0))


def _scalar_as_array(x1: Any, x2: Any) -> tuple:
    """A Python scalar beside an array becomes an array of the array's dtype and shape."""
    if not hasattr(x2, "shape"):
        return x1, full_like(W.as_tensor(x1), float(x2))
    if not hasattr(x1, "shape"):
        return full_like(W.as_tensor(x2), float(x1)), x2
    return x1, x2


@mark("composite")
def hypot(x1: Any, x2: Any, /) -> Tensor:
    """sqrt(x1**2 + x2**2) without overflow: the larger magnitude m is factored out,
    m sqrt((x1/m)**2 + (x2/m)**2). The result does not depend on m, so neither does its
    gradient (x1/h, x2/h); an infinite input gives inf."""
    x1, x2 = _scalar_as_array(x1, x2)
    a, b = (abs(v) for v in W.promote(x1, x2))
    m = maximum(a, b)
    safe = where(equal(m, 0.0), 1.0, m)
    out = safe * sqrt(square(a / safe) + square(b / safe))
    infinite = logical_or(isinf(a), isinf(b))
    return where(infinite, math.inf, out)


@mark("composite")
def copysign(x1: Any, x2: Any, /) -> Tensor:
    """|x1| with the sign bit of x2;  d/dx1 = ±sign(x1), no gradient to x2."""
    x1, x2 = W.promote(*_scalar_as_array(x1, x2))
    magnitude = abs(W.as_tensor(x1))
    return where(signbit(W.as_tensor(x2)), negative(magnitude), magnitude)


@mark("composite")
def remainder(x1: Any, x2: Any, /) -> Tensor:
    """x1 - x2 floor(x1 / x2), with the sign of x2;  d/dx1 = 1, d/dx2 = -floor(x1/x2).

    The value is the backend's (exact); the gradient terms are added as exact zeros. Where
    floor(x1/x2) is infinite (x2 = 0) d/dx2 is 0; where it is NaN (a NaN input, or x1
    infinite: the value is NaN there too) d/dx2 is NaN, as torch's."""
    x1, x2 = W.promote(x1, x2)
    out = _remainder(x1, x2)
    if not W.requires_grad(x1, x2):
        return out
    q = _floor_divide(x1, x2)
    q = where(isinf(q), 0.0, q)
    for x, scale in ((x1, 1.0), (x2, -q)):
        if isinstance(x, Tensor) and x.requires_grad:
            out = out + (x - x.detach()) * scale
    return out


@mark("op")
def real(x: Any, /) -> Tensor:
    """The real part x of z = x + iy (op ``real``; x itself for real input);
    z.grad = g + 0i."""
    x = x if _symbolic(x) else W.as_tensor(x)
    return complexes.real(x) if complexes.is_complex(x) else x


@mark("op")
def conj(x: Any, /) -> Tensor:
    """The complex conjugate x - iy (op ``conj``; x itself for real input); z.grad = conj(g)."""
    x = x if _symbolic(x) else W.as_tensor(x)
    return complexes.conj(x) if complexes.is_complex(x) else x


@mark("op")
def imag(x: Any, /) -> Tensor:
    """The imaginary part y of z = x + iy (op ``imag``); z.grad = i g. Zeros (a constant)
    for real input."""
    if _symbolic(x):  # a graph node: its dtype is inferred when it is built
        return complexes.imag(x) if complexes.is_complex(x) else x * 0.0
    x = W.as_tensor(x)
    return complexes.imag(x) if complexes.is_complex(x) else zeros_like(x)


def _symbolic(x: Any) -> bool:
    """A graph node (gpugrad.graph.Symbol), which the ops take as it is."""
    return getattr(x, "_gpugrad_symbolic", False)


_remainder = passthrough("remainder", "none")
_floor_divide = passthrough("floor_divide", "zero")


@mark("zero")
def floor_divide(x1: Any, x2: Any, /) -> Tensor:
    """floor(x1 / x2), piecewise constant (a constant result, gradient 0). Where exactly one
    input is infinite the standard's special cases hold: ±inf // finite is ±inf, finite //
    ±inf is a signed zero (NumPy gives NaN and -1 there); both are ``x1 / x2``.

    >>> import gpugrad as gg
    >>> gg.to_numpy(gg.floor_divide(gg.asarray([7.0, float("inf"), -1.0]), -2.0))
    array([ -4., -inf,   0.])
    """
    x1, x2 = W.promote(x1, x2)
    with quiet(W.namespace_for(x1, x2), invalid="ignore"):  # NumPy's NaN at ±inf, fixed below
        out = _floor_divide(x1, x2)
    xp = out.xp
    if not B.is_floating(xp, out.dtype):
        return out
    a, b = (v if B.is_backend_array(v) else xp.full_like(out.data, v)
            for v in (W.unwrap(x1), W.unwrap(x2)))
    with quiet(xp, divide="ignore", invalid="ignore"):  # a / b kept where it is ±inf or ±0
        one_infinite = xp.isinf(a) != xp.isinf(b)
        return Tensor(xp.where(one_infinite, a / b, out.data), xp=xp)

# --- piecewise constant: gradient 0 ------------------------------------------------------
ceil = passthrough("ceil", "zero", ("x",))
floor = passthrough("floor", "zero", ("x",))
round = passthrough("round", "zero", ("x",))
_sign = passthrough("sign", "zero")


@mark("zero")
def sign(x: Any, /) -> Tensor:
    """x/|x| (0 at 0). Piecewise constant for real x: a constant result (gradient 0). For
    complex z it is differentiable away from 0 and is written from ops: z / |z|."""
    x = W.as_tensor(x)
    if not complexes.is_complex(x):
        return _sign(x)
    if x.requires_grad:
        zero = equal(x, 0.0)
        return where(zero, 0.0, divide(x, where(zero, 1.0, abs(x))))
    with quiet(x.xp, invalid="ignore"):  # array-api-compat's z/|z| divides 0 by 0 at z = 0
        return _sign(x)
trunc = passthrough("trunc", "zero", ("x",))

# --- boolean and integer results: no gradient -----------------------------------------------
bitwise_and = passthrough("bitwise_and", "none", ("x1", "x2"))
bitwise_invert = passthrough("bitwise_invert", "none", ("x",))
bitwise_left_shift = passthrough("bitwise_left_shift", "none", ("x1", "x2"))
bitwise_or = passthrough("bitwise_or", "none", ("x1", "x2"))
bitwise_right_shift = passthrough("bitwise_right_shift", "none", ("x1", "x2"))
bitwise_xor = passthrough("bitwise_xor", "none", ("x1", "x2"))
isfinite = passthrough("isfinite", "none", ("x",))
isinf = passthrough("isinf", "none", ("x",))
isnan = passthrough("isnan", "none", ("x",))
logical_and = passthrough("logical_and", "none", ("x1", "x2"))
logical_not = passthrough("logical_not", "none", ("x",))
logical_or = passthrough("logical_or", "none", ("x1", "x2"))
logical_xor = passthrough("logical_xor", "none", ("x1", "x2"))
signbit = passthrough("signbit", "none", ("x",))

# --- no gradient rule yet: constants only -------------------------------------------------
nextafter = passthrough("nextafter", "constants", ("x1", "x2"))
