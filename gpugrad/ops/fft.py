"""Discrete Fourier transforms: the array-API standard's fft extension, differentiable.

Forward rules call ``xp.fft``; VJP rules call ``xp.fft`` too (and slicing, ``concat``,
``conj``), so on the differentiable namespace they record ops again: every transform here is
twice differentiable. Complex gradients follow PyTorch (see docs/complex.md and docs/fft.md):
for a real loss L of z = x + iy, ``z.grad`` = dL/dx + i dL/dy.

- A complex-to-complex transform A (``fft``, ``ifft``, ``fftn``, ``ifftn``) is linear, so its
  VJP is the adjoint A^H g: the inverse transform with the dual norm ("backward" <->
  "forward", "ortho" stays), then the adjoint of the padding or truncation that ``n``/``s``
  asked for (truncation where the forward padded, zeros where it truncated). A real input
  gets the real part (the engine's rule for real inputs of complex ops).
- ``rfft`` is the first n//2+1 bins of the full transform of a real signal, so its VJP is
  Re(A^H [g; 0]): computed as ``irfft`` of g with the bins that have a mirror image (all but
  DC and Nyquist) halved, because ``irfft`` counts each of those twice.
- ``irfft`` reads only the real part of its DC and Nyquist bins and uses each other bin
  twice (once for its mirror image), so its VJP is ``rfft(g)`` with those bins doubled; the
  imaginary parts of DC and Nyquist get 0 (in n dims: of the DC and Nyquist bins of the last
  axis, after the other axes' transform).
- ``hfft(a)`` is ``irfft(conj(a))`` and ``ihfft(x)`` is ``conj(rfft(x))`` with the dual norm,
  and their VJPs are composed that way.
"""

from __future__ import annotations

import operator

from .. import backend as B
from ..registry import defop
from .complexes import is_complex, real_only

NORMS = ("backward", "ortho", "forward")
DUAL = {"backward": "forward", "ortho": "ortho", "forward": "backward"}
COMPLEX_OF = {"float32": "complex64", "float64": "complex128"}
REAL_OF = {"complex64": "float32", "complex128": "float64"}


# --- plans: which axes, what lengths ---------------------------------------------------------

def _check_norm(name, norm):
    if norm not in NORMS:
        raise ValueError(f"{name}: norm must be one of {NORMS}, got {norm!r}")


def _plan(name, shape, s, axes, *, c2r=False):
    """The transform's (axes, lengths) for an input of ``shape``: the standard's rules (no
    ``axes``: the last len(s) axes, or every axis; no ``s`` or an entry -1: the input's
    length, and for a complex-to-real transform 2 (m - 1) along the last axis)."""
    ndim = len(shape)
    if axes is None:
        axes = tuple(range(ndim)) if s is None else tuple(range(ndim - len(s), ndim))
    axes = tuple(a % ndim if -ndim <= a < ndim else _bad_axis(name, a, ndim) for a in axes)
    if len(set(axes)) != len(axes):
        raise ValueError(f"{name}: repeated axes {axes}")
    if s is not None and len(s) != len(axes):
        raise ValueError(f"{name}: s {tuple(s)} and axes {axes} differ in length")
    sizes = []
    for i, a in enumerate(axes):
        n = -1 if s is None else s[i]
        if n is None or n == -1:
            n = shape[a]
            if c2r and i == len(axes) - 1:
                n = None if n is None else 2 * (n - 1)
        elif n < 1:
            raise ValueError(f"{name}: transform lengths must be >= 1, got {tuple(s)}")
        sizes.append(n)
    return axes, tuple(sizes)


def _bad_axis(name, axis, ndim):
    raise ValueError(f"{name}: axis {axis} is out of range for {ndim} dims")


def _plan1(name, shape, n, axis, *, c2r=False):
    return _plan(name, shape, None if n is None else (n,), (axis,), c2r=c2r)


# --- helpers the rules share (array-API calls only) -----------------------------------------

def _as_complex(xp, x):
    if is_complex(x):
        return x
    return xp.astype(x, B.resolve_dtype(xp, COMPLEX_OF.get(B.dtype_name(x.dtype), "complex128")))


def _along(ax, sl):
    return (slice(None),) * ax + (sl, ...)


def _resize(xp, a, axes, sizes):
    """``a`` truncated or zero-padded at the end of each axis to its size: the adjoint of the
    padding/truncation an ``n``/``s`` argument does."""
    for ax, m in zip(axes, sizes):
        cur = a.shape[ax]
        if m < cur:
            a = a[_along(ax, slice(0, m))]
        elif m > cur:
            pad = list(a.shape)
            pad[ax] = m - cur
            zero = xp.zeros_like(a[_along(ax, slice(0, 1))])
            a = xp.concat([a, xp.broadcast_to(zero, tuple(pad))], axis=ax)
    return a


def _scale_mirrored(xp, h, ax, n, k):
    """The half spectrum ``h`` (n//2 + 1 bins along ``ax`` for a length-n signal) with the
    bins that have a mirror image (1 .. (n-1)//2: all but DC and Nyquist) times ``k``."""
    c = (n - 1) // 2
    if c <= 0:
        return h
    return xp.concat([h[_along(ax, slice(0, 1))], h[_along(ax, slice(1, 1 + c))] * k,
                      h[_along(ax, slice(1 + c, None))]], axis=ax)


# --- complex to complex ----------------------------------------------------------------------

def _c2c(name, inverse, one_d):
    adjoint = "ifft" if not inverse else "fft"

    def forward(xp, x, **kw):
        _check_norm(name, kw["norm"])
        if one_d:
            return getattr(xp.fft, name)(_as_complex(xp, x), **kw), tuple(x.shape)
        axes, sizes = _plan(name, x.shape, kw["s"], kw["axes"])
        return getattr(xp.fft, name)(_as_complex(xp, x), s=sizes, axes=axes,
                                     norm=kw["norm"]), tuple(x.shape)

    def vjp(xp, g, in_shape, **kw):
        axes, _ = (_plan1(name, in_shape, kw["n"], kw["axis"]) if one_d
                   else _plan(name, in_shape, kw["s"], kw["axes"]))
        back = getattr(xp.fft, adjoint + "n")(g, axes=axes, norm=DUAL[kw["norm"]])
        return (_resize(xp, back, axes, [in_shape[a] for a in axes]),)

    return forward, vjp


def _statics(**kw):
    """The static parameters a call gave, in the rule's form: None left out (the rule's
    default), ``s`` a tuple and ``n`` an int (anything with ``__index__``), an int ``axes``
    (the shifts take one) a 1-tuple."""
    out = {}
    for k, v in kw.items():
        if v is None:
            continue
        if k == "s":
            v = tuple(operator.index(i) for i in v)
        elif k == "n":
            v = operator.index(v)
        elif k == "axes" and not isinstance(v, (tuple, list)):
            v = (v,)
        out[k] = v
    return out


def _declare(name, forward, vjp, one_d, doc, kind="c2c"):
    if one_d:
        def rule(xp, x, *, n=None, axis=-1, norm="backward"):
            return forward(xp, x, n=n, axis=axis, norm=norm)
    else:
        def rule(xp, x, *, s=None, axes=None, norm="backward"):
            return forward(xp, x, s=s, axes=axes, norm=norm)
    rule.__doc__ = doc
    rule.__name__ = rule.__qualname__ = name
    op = defop(name)(rule)
    if one_d:  # the engine passes only the parameters a call gave: the rule's defaults here
        def grad(xp, g, res, *, n=None, axis=-1, norm="backward"):
            return vjp(xp, g, res, n=n, axis=axis, norm=norm)
    else:
        def grad(xp, g, res, *, s=None, axes=None, norm="backward"):
            return vjp(xp, g, res, s=s, axes=axes, norm=norm)
    op.defvjp(grad)
    if one_d:
        @op.defsignature(direct=False)
        def front(x, /, n=None, axis=-1, norm="backward"):
            return op.run(x, **_statics(n=n, axis=axis, norm=norm))
    else:
        @op.defsignature(direct=False)
        def front(x, /, s=None, axes=None, norm="backward"):
            return op.run(x, **_statics(s=s, axes=axes, norm=norm))
    op.shape_rule = _shape_rule(name, kind, one_d)
    op.dtype_rule = _dtype_rule(kind)
    return op


def _shape_rule(name, kind, one_d):
    def rule(shapes, params):
        shape = shapes[0]
        kw = ({"n": params.get("n"), "axis": params.get("axis", -1)} if one_d
              else {"s": params.get("s"), "axes": params.get("axes")})
        axes, sizes = _plan_any(name, shape, kw, c2r=kind == "c2r")
        out = list(shape)
        for a, n in zip(axes, sizes):
            out[a] = n
        if kind == "r2c" and out[axes[-1]] is not None:
            out[axes[-1]] = out[axes[-1]] // 2 + 1
        return tuple(out)
    return rule


def _dtype_rule(kind):
    """(facts, params) -> the output dtype's name: complex for c2c and r2c, real for c2r."""
    table = REAL_OF if kind == "c2r" else COMPLEX_OF if kind != "same" else {}
    return lambda facts, params: (None if facts[0][1] is None
                                  else table.get(facts[0][1], facts[0][1]))


fft, ifft, fftn, ifftn = (_declare(name, *_c2c(name, inverse, one_d), one_d, doc) for
                          name, inverse, one_d, doc in [
    ("fft", False, True, "the 1-d discrete Fourier transform along axis (length n);  the "
     "gradient is ifft(g) with the dual norm"),
    ("ifft", True, True, "the 1-d inverse discrete Fourier transform;  the gradient is fft(g) "
     "with the dual norm"),
    ("fftn", False, False, "the n-d discrete Fourier transform over axes (lengths s);  the "
     "gradient is ifftn(g) with the dual norm"),
    ("ifftn", True, False, "the n-d inverse discrete Fourier transform;  the gradient is "
     "fftn(g) with the dual norm"),
])


# --- real to complex, complex to real --------------------------------------------------------

def _plan_any(name, shape, kw, c2r=False):
    if "axis" in kw:
        return _plan1(name, shape, kw["n"], kw["axis"], c2r=c2r)
    return _plan(name, shape, kw["s"], kw["axes"], c2r=c2r)


def _r2c(name, conj_out):
    """rfft, rfftn, and ihfft (conj_out: conj(rfft(x)) with the dual norm)."""

    def forward(xp, x, **kw):
        _check_norm(name, kw["norm"])
        real_only(name, x)
        axes, sizes = _plan_any(name, x.shape, kw)
        if "axis" in kw:
            out = getattr(xp.fft, name)(x, n=sizes[0], axis=axes[0], norm=kw["norm"])
        else:
            out = getattr(xp.fft, name)(x, s=sizes, axes=axes, norm=kw["norm"])
        return out, tuple(x.shape)

    def vjp(xp, g, in_shape, **kw):
        axes, sizes = _plan_any(name, in_shape, kw)
        norm = DUAL[kw["norm"]]
        if conj_out:  # through the conj, and rfft with the dual norm
            g, norm = xp.conj(g), kw["norm"]
        h = _scale_mirrored(xp, g, axes[-1], sizes[-1], 0.5)
        back = xp.fft.irfftn(h, s=sizes, axes=axes, norm=norm)
        return (_resize(xp, back, axes, [in_shape[a] for a in axes]),)

    return forward, vjp


def _c2r(name, conj_in):
    """irfft, irfftn, and hfft (conj_in: irfft(conj(a)) with the dual norm)."""

    def forward(xp, z, **kw):
        _check_norm(name, kw["norm"])
        axes, sizes = _plan_any(name, z.shape, kw, c2r=True)
        if "axis" in kw:
            out = getattr(xp.fft, name)(_as_complex(xp, z), n=sizes[0], axis=axes[0],
                                        norm=kw["norm"])
        else:
            out = getattr(xp.fft, name)(_as_complex(xp, z), s=sizes, axes=axes, norm=kw["norm"])
        return out, tuple(z.shape)

    def vjp(xp, g, in_shape, **kw):
        axes, sizes = _plan_any(name, in_shape, kw, c2r=True)
        norm = kw["norm"] if conj_in else DUAL[kw["norm"]]
        back = _scale_mirrored(xp, xp.fft.rfftn(g, axes=axes, norm=norm), axes[-1], sizes[-1], 2.0)
        if conj_in:
            back = xp.conj(back)
        return (_resize(xp, back, axes, [in_shape[a] for a in axes]),)

    return forward, vjp


_HALF_SPECTRUM = [  # name, kind, conj, 1-d, what it is (each gradient: the module docstring)
    ("rfft", "r2c", False, True, "the first n//2 + 1 bins of a real signal's transform"),
    ("rfftn", "r2c", False, False, "the n-d transform of a real signal, half the last axis"),
    ("ihfft", "r2c", True, True, "conj(rfft(x)) with the dual norm: n//2 + 1 bins"),
    ("irfft", "c2r", False, True, "the real signal of length n whose half spectrum is z"),
    ("irfftn", "c2r", False, False, "the n-d real signal whose half spectrum (last axis) is z"),
    ("hfft", "c2r", True, True, "irfft(conj(z)) with the dual norm: a Hermitian signal"),
]
_GRADIENT = {"r2c": "irfft(g) with the mirrored bins halved, the dual norm",
             "c2r": "rfft(g) with the mirrored bins doubled, the dual norm"}
rfft, rfftn, ihfft, irfft, irfftn, hfft = (
    _declare(name, *(_r2c if kind == "r2c" else _c2r)(name, conj), one_d,
             f"{what};  the gradient is {_GRADIENT[kind]}" if not conj else
             f"{what};  the gradient composes conj's with {kind == 'r2c' and 'r' or 'ir'}fft's",
             kind)
    for name, kind, conj, one_d, what in _HALF_SPECTRUM)


# --- shifts ----------------------------------------------------------------------------------

def _shift(name, other, doc):
    def rule(xp, x, *, axes=None):
        return getattr(xp.fft, name)(x, axes=axes), None

    rule.__doc__ = doc
    rule.__name__ = rule.__qualname__ = name
    op = defop(name)(rule)
    op.defvjp(lambda xp, g, res, *, axes=None: (getattr(xp.fft, other)(g, axes=axes),))
    op.shape_rule = lambda shapes, params: tuple(shapes[0])
    op.dtype_rule = _dtype_rule("same")

    @op.defsignature(direct=False)
    def front(x, /, axes=None):
        return op.run(x, **_statics(axes=axes))

    return op


fftshift = _shift("fftshift", "ifftshift", "x rolled by n//2 along axes (all by default): the "
                  "zero frequency to the middle;  the gradient is ifftshift(g)")
ifftshift = _shift("ifftshift", "fftshift", "the inverse of fftshift;  the gradient is "
                   "fftshift(g)")
