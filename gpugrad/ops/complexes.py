"""Complex numbers: conj, real, imag, and the conjugate that VJP rules apply.

The gradient convention is PyTorch's: for a real loss L of z = x + iy, ``z.grad`` is
dL/dx + i dL/dy, so ``z -= lr * z.grad`` descends. With that convention the VJP of a
holomorphic f is ``g * conj(f'(z))``; rules call ``cj`` on the derivative, which is the
identity on real values (one dtype check, no extra pass). A real input that gets a complex
gradient keeps its real part (the engine does that in one place, gpugrad.shaping.fit).
"""

from ..registry import defop


def is_complex(a) -> bool:
    """Whether ``a`` (an array, a Tensor or a Python scalar) holds complex values."""
    dt = getattr(a, "dtype", None)
    if dt is None:
        return isinstance(a, complex)
    kind = getattr(dt, "kind", None)  # NumPy and CuPy dtypes
    if kind is not None:
        return kind == "c"
    return "complex" in str(dt)


def real_only(name, *arrays):
    """Raise for complex input to a function the standard defines for real values only
    (an ordering or a real logarithm is involved)."""
    for a in arrays:
        if is_complex(a):
            raise TypeError(
                f"{name} is defined for real values only (the array-API standard's rule), got "
                f"{a.dtype}; take real(z), imag(z) or abs(z) first")


def cj(xp, a):
    """conj(a) where a is complex; a itself otherwise."""
    kind = getattr(getattr(a, "dtype", None), "kind", None)  # NumPy and CuPy: one look
    if kind is not None and kind != "c":
        return a
    if not is_complex(a):
        return a
    return a.conjugate() if isinstance(a, complex) else xp.conj(a)


@defop("conj")
def conj(xp, z):
    """x - iy for z = x + iy (x itself for real input);  the gradient is conj(g)"""
    return (xp.conj(z) if is_complex(z) else z), None


conj.defvjp(lambda xp, g, res: (cj(xp, g),))


# real and imag of a complex array share its memory, but a write cannot go back exactly
_PART = "it is the real or imaginary part of a complex Tensor, which gpugrad cannot write through"


@defop("real")
def real(xp, z):
    """x for z = x + iy;  d/dx = 1, d/dy = 0, so z.grad = g (+ 0i)"""
    return (xp.real(z) if is_complex(z) else z), None


real.defvjp(lambda xp, g, res: (g,))
real.defview(_PART)


@defop("imag")
def imag(xp, z):
    """y for z = x + iy (zeros for real input);  d/dx = 0, d/dy = 1, so z.grad = i g"""
    if not is_complex(z):
        return xp.zeros_like(z), None
    return xp.imag(z), z.dtype


def _imag_vjp(xp, g, dtype):
    if dtype is None:  # real input: imag(x) = 0 whatever x is
        return (g * 0.0,)
    return (xp.astype(g, dtype) * 1j,)


imag.defvjp(_imag_vjp)
imag.defview(_PART)
