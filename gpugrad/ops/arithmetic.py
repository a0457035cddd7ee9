"""Arithmetic: add, subtract, multiply, divide, negative, pow.

Rules use Python operators, so scalars pass straight through; the engine sums gradients back
over broadcast dimensions. Complex inputs get ``g * conj(derivative)`` (gpugrad.ops.complexes).
"""

from ..registry import defop
from .complexes import cj, is_complex


@defop("add", scalar_ok=(0, 1))
def add(xp, a, b):
    """a + b;  d/da = 1, d/db = 1"""
    return a + b, None


add.defvjp(lambda xp, g, res: g, lambda xp, g, res: g)
add.defscalar("a + b", "g", "g")


@defop("subtract", scalar_ok=(0, 1))
def subtract(xp, a, b):
    """a - b;  d/da = 1, d/db = -1"""
    return a - b, None


subtract.defvjp(lambda xp, g, res: g, lambda xp, g, res: -g)
subtract.defscalar("a - b", "g", "-g")


@defop("multiply", scalar_ok=(0, 1))
def multiply(xp, a, b):
    """a * b;  d/da = b, d/db = a"""
    return a * b, (a, b)


multiply.defvjp(lambda xp, g, res: g * cj(xp, res[1]), lambda xp, g, res: g * cj(xp, res[0]))
multiply.defscalar("a * b", "g * b", "g * a")


@defop("divide", scalar_ok=(0, 1))
def divide(xp, a, b):
    """a / b;  d/da = 1/b, d/db = -a/b**2"""
    return a / b, (a, b)


divide.defvjp(
    lambda xp, g, res: g / cj(xp, res[1]),
    # -(g (a / b)) / b: b * b or g * a would overflow where the gradient itself does not
    lambda xp, g, res: -(g * cj(xp, res[0] / res[1])) / cj(xp, res[1]),
)
divide.defscalar("a / b", "g / b", "-(g * (a / b)) / b")


@defop("negative")
def negative(xp, a):
    """-a;  d/da = -1"""
    return -a, None


negative.defvjp(lambda xp, g, res: (-g,))
negative.defscalar("-a", "-g")


@defop("pow", scalar_ok=(1,))
def pow(xp, a, b):
    """a ** b (b an array or a scalar);  d/da = b a**(b-1),  d/db = a**b log(a).

    Conventions: d/da is 0 where b == 0 (also at a == 0); d/db is 0 where a <= 0, where the
    real logarithm does not exist, and NaN where a is NaN (as torch).
    """
    out = a**b
    return out, (a, b, out)


def _pow_da(xp, g, res):
    a, b, out = res
    if is_complex(out):
        return _pow_da_complex(xp, g, a, b)
    if isinstance(b, (int, float)):
        if b == 0:
            return g * 0.0
        return g * (float(b) * a ** (b - 1))
    # exponent 1 where b == 0, so a == 0 there gives no spurious 0**-1 (divide-by-zero warning)
    safe_b = xp.where(b == 0, 1.0, b)
    return xp.where(b == 0, 0.0, g * b * a ** (safe_b - 1.0))


def _pow_db(xp, g, res):
    a, b, out = res
    if is_complex(out):
        return _pow_db_complex(xp, g, a, out)
    low = a <= 0  # (False at a NaN, whose gradient is then NaN)
    return xp.where(low, 0.0, g * out * xp.log(xp.where(low, 1.0, a)))


def _pow_da_complex(xp, g, a, b):
    """g conj(b a**(b-1)), 0 where b == 0 (complex powers are holomorphic in a)."""
    if isinstance(b, (int, float, complex)):
        return g * 0.0 if b == 0 else g * cj(xp, b * a ** (b - 1))
    safe_b = xp.where(b == 0, 1.0, b)
    return xp.where(b == 0, 0.0, g * cj(xp, b * a ** (safe_b - 1.0)))


def _pow_db_complex(xp, g, a, out):
    """g conj(a**b log a) with the principal complex logarithm; 0 where a == 0."""
    a = xp.astype(a, out.dtype) if not is_complex(a) else a  # log of a real a < 0 exists
    safe = xp.where(a == 0, 1.0, a)
    return xp.where(a == 0, 0.0, g * cj(xp, out * xp.log(safe)))


pow.defvjp(_pow_da, _pow_db)
