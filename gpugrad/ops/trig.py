"""Trigonometric and hyperbolic functions, and expm1.

Derivatives of the inverse functions are written with factored differences, (1 - x)(1 + x)
rather than 1 - x**2, which keeps their precision near |x| = 1. atan2's gradient is 0 at the
origin, where the angle has no derivative. Complex inputs get ``g * conj(f'(z))``
(gpugrad.ops.complexes); atan2 is real only, as the standard defines it.
"""

from ..registry import defop
from .complexes import cj, is_complex, real_only


@defop("sin")
def sin(xp, x):
    """sin(x);  d/dx = cos(x)"""
    return xp.sin(x), x


sin.defvjp(lambda xp, g, x: (g * cj(xp, xp.cos(x)),))


@defop("cos")
def cos(xp, x):
    """cos(x);  d/dx = -sin(x)"""
    return xp.cos(x), x


cos.defvjp(lambda xp, g, x: (-(g * cj(xp, xp.sin(x))),))


@defop("tan")
def tan(xp, x):
    """tan(x);  d/dx = 1 + tan(x)**2"""
    out = xp.tan(x)
    return out, out


tan.defvjp(lambda xp, g, out: (g * cj(xp, 1.0 + out * out),))


@defop("asin")
def asin(xp, x):
    """arcsin(x);  d/dx = 1 / sqrt(1 - x**2)"""
    return xp.asin(x), x


asin.defvjp(lambda xp, g, x: (g / cj(xp, xp.sqrt((1.0 - x) * (1.0 + x))),))


@defop("acos")
def acos(xp, x):
    """arccos(x);  d/dx = -1 / sqrt(1 - x**2)"""
    return xp.acos(x), x


acos.defvjp(lambda xp, g, x: (-(g / cj(xp, xp.sqrt((1.0 - x) * (1.0 + x)))),))


@defop("atan")
def atan(xp, x):
    """arctan(x);  d/dx = 1 / (1 + x**2)"""
    return xp.atan(x), x


def _atan_vjp(xp, g, x):
    if is_complex(x):
        return (g / cj(xp, 1.0 + x * x),)
    r = 1.0 / xp.hypot(x, 1.0)  # 1 + x * x overflows for |x| > 1e154; the gradient does not
    return (g * r * r,)


atan.defvjp(_atan_vjp)


@defop("atan2")
def atan2(xp, y, x):
    """the angle of the point (x, y);  d/dy = x / (x**2 + y**2), d/dx = -y / (x**2 + y**2),
    both 0 at the origin"""
    real_only("atan2", y, x)
    return xp.atan2(y, x), (y, x)


def _radius(xp, y, x):
    # hypot, not x * x + y * y, which overflows for |x| > 1e154; at the origin the
    # numerators are 0 too
    r = xp.hypot(x, y)
    return xp.where(r == 0.0, 1.0, r)


def _atan2_dy(xp, g, res):
    y, x = res
    r = _radius(xp, y, x)
    return g * (x / r) / r


def _atan2_dx(xp, g, res):
    y, x = res
    r = _radius(xp, y, x)
    return -(g * (y / r)) / r


atan2.defvjp(_atan2_dy, _atan2_dx)


@defop("sinh")
def sinh(xp, x):
    """sinh(x);  d/dx = cosh(x)"""
    return xp.sinh(x), x


sinh.defvjp(lambda xp, g, x: (g * cj(xp, xp.cosh(x)),))


@defop("cosh")
def cosh(xp, x):
    """cosh(x);  d/dx = sinh(x)"""
    return xp.cosh(x), x


cosh.defvjp(lambda xp, g, x: (g * cj(xp, xp.sinh(x)),))


@defop("asinh")
def asinh(xp, x):
    """arcsinh(x);  d/dx = 1 / sqrt(x**2 + 1)"""
    return xp.asinh(x), x


def _asinh_vjp(xp, g, x):
    if is_complex(x):
        return (g / cj(xp, xp.sqrt(x * x + 1.0)),)
    return (g / xp.hypot(x, 1.0),)  # x * x + 1 overflows for |x| > 1e154


asinh.defvjp(_asinh_vjp)


@defop("acosh")
def acosh(xp, x):
    """arccosh(x), x >= 1;  d/dx = 1 / sqrt(x**2 - 1)"""
    return xp.acosh(x), x


# sqrt(x - 1) sqrt(x + 1): no x**2 to overflow, and the principal branch for complex x
acosh.defvjp(lambda xp, g, x: (g / cj(xp, xp.sqrt(x - 1.0) * xp.sqrt(x + 1.0)),))


@defop("atanh")
def atanh(xp, x):
    """arctanh(x), |x| < 1;  d/dx = 1 / (1 - x**2)"""
    return xp.atanh(x), x


atanh.defvjp(lambda xp, g, x: (g / cj(xp, (1.0 - x) * (1.0 + x)),))


@defop("expm1")
def expm1(xp, x):
    """exp(x) - 1, accurate near 0;  d/dx = exp(x) = expm1(x) + 1"""
    out = xp.expm1(x)
    return out, out


expm1.defvjp(lambda xp, g, out: (g * cj(xp, out + 1.0),))
