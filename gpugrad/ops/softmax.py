"""Composites the standard lacks: logsumexp, softmax, log_softmax.

Each shifts by a finite max, so large inputs never overflow and -inf entries stay harmless.
"""

from ..fpstate import quiet
from ..registry import defop
from .complexes import cj


def _finite_max(xp, x, axis):
    m = xp.max(x, axis=axis, keepdims=True)
    return xp.where(xp.isfinite(m), m, 0.0)


@defop("logsumexp")
def logsumexp(xp, x, *, axis=None, keepdims=False):
    """log(sum(exp(x))) over axis;  d/dx = softmax(x)"""
    m = _finite_max(xp, x, axis)
    with quiet(xp):  # entries far below the max underflow to 0 by design
        e = xp.exp(x - m)
    total = xp.sum(e, axis=axis, keepdims=True)
    out_k = xp.log(total) + m
    out = out_k if keepdims else xp.reshape(out_k, _reduced_shape(x.shape, axis))
    # the gradient reuses the shifted exponentials: exp(x - out) would carry out's rounding
    # error (about 3e-5 relative in float32 at |x| ~ 1000)
    return out, (e, total)


def _reduced_shape(shape, axis):
    if axis is None:
        return ()
    axes = (axis,) if isinstance(axis, int) else axis
    axes = {a % len(shape) for a in axes}
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _logsumexp_vjp(xp, g, res, *, axis=None, keepdims=False):
    e, total = res
    g_k = xp.reshape(g, tuple(total.shape))
    return (cj(xp, e) * (g_k / cj(xp, total)),)


logsumexp.defvjp(_logsumexp_vjp)


@defop("softmax")
def softmax(xp, x, *, axis=-1):
    """exp(x) / sum(exp(x)) over axis;  d/dx: s * (g - sum(g * s))"""
    with quiet(xp):  # entries far below the max underflow to 0 by design
        e = xp.exp(x - _finite_max(xp, x, axis))
        out = e / xp.sum(e, axis=axis, keepdims=True)
    return out, out


softmax.defvjp(
    lambda xp, g, s, *, axis=-1: _softmax_vjp(xp, g, cj(xp, s), axis)
)


def _softmax_vjp(xp, g, s, axis):
    return (s * (g - xp.sum(g * s, axis=axis, keepdims=True)),)


@defop("log_softmax")
def log_softmax(xp, x, *, axis=-1):
    """x - logsumexp(x) over axis;  d/dx: g - exp(out) * sum(g)"""
    shifted = x - _finite_max(xp, x, axis)
    with quiet(xp):
        e = xp.exp(shifted)
    out = shifted - xp.log(xp.sum(e, axis=axis, keepdims=True))
    return out, out


log_softmax.defvjp(
    lambda xp, g, out, *, axis=-1: (g - cj(xp, xp.exp(out)) * xp.sum(g, axis=axis,
                                                                      keepdims=True),)
)
