"""Reductions: sum, mean, max, min over an int or tuple axis, with keepdims.

max/min split the gradient evenly between tied maxima, so a full reduction's gradient
always sums to g. A NaN is the selected element, as in PyTorch: the max (and min) of a
slice holding a NaN is NaN, and the slice's gradient goes to its NaN entries, split evenly
between them as between ties.
"""

import math

from ..registry import defop
from .complexes import real_only


def _axes(ndim, axis):
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, int):
        return (axis % ndim if ndim else 0,)
    return tuple(a % ndim for a in axis)


def _keep_shape(in_shape, axis):
    axes = _axes(len(in_shape), axis)
    return tuple(1 if i in axes else d for i, d in enumerate(in_shape))


def _expand(xp, g, in_shape, axis):
    """g (reduced, keepdims or not) reshaped and broadcast back to in_shape."""
    return xp.broadcast_to(xp.reshape(g, _keep_shape(in_shape, axis)), in_shape)


@defop("sum")
def sum(xp, x, *, axis=None, keepdims=False):
    """sum of x over axis;  d/dx = 1 (g broadcast back)"""
    return xp.sum(x, axis=axis, keepdims=keepdims), tuple(x.shape)


sum.defvjp(
    lambda xp, g, in_shape, *, axis=None, keepdims=False: (_expand(xp, g, in_shape, axis),)
)


@defop("mean")
def mean(xp, x, *, axis=None, keepdims=False):
    """mean of x over axis;  d/dx = 1/n (g broadcast back).  The mean of no elements is NaN,
    as the standard says, without NumPy's "Mean of empty slice" warning."""
    if x.size == 0 and 0 in [x.shape[a] for a in _axes(x.ndim, axis)]:
        return xp.sum(x, axis=axis, keepdims=keepdims) * float("nan"), tuple(x.shape)
    return xp.mean(x, axis=axis, keepdims=keepdims), tuple(x.shape)


def _mean_vjp(xp, g, in_shape, *, axis=None, keepdims=False):
    n = 1
    for a in _axes(len(in_shape), axis):
        n *= in_shape[a]
    return (_expand(xp, g / float(n if n > 0 else 1), in_shape, axis),)


mean.defvjp(_mean_vjp)


def _expand_numpy(xp, g, in_shape, axis):
    """NumPy fast path for a full reduction: g as the read-only stride-0 view that
    broadcast_to makes, built directly (broadcast_to's Python layers cost more than the
    rest of a small backward step)."""
    if in_shape and g.ndim == 0 and type(g) is xp.ndarray:
        out = xp.ndarray(in_shape, g.dtype, g, 0, (0,) * len(in_shape))
        out.flags.writeable = False
        return out
    return _expand(xp, g, in_shape, axis)


def _sum_vjp_numpy(xp, g, in_shape, *, axis=None, keepdims=False):
    return (_expand_numpy(xp, g, in_shape, axis),)


def _mean_vjp_numpy(xp, g, in_shape, *, axis=None, keepdims=False):
    n = 1
    for a in _axes(len(in_shape), axis):
        n *= in_shape[a]
    return (_expand_numpy(xp, xp.asarray(g / float(n if n > 0 else 1)), in_shape, axis),)


def _mean_numpy(xp, x, *, axis=None, keepdims=False):
    """NumPy fast path for a floating mean: the sum by the ufunc itself, then one division,
    as ``np.mean`` does it (same accumulation, same rounding) without its Python layers."""
    kind = x.dtype.kind
    if not ((kind == "f" and x.dtype.itemsize >= 4) or kind == "c") or x.size == 0:
        return mean.forward(xp, x, axis=axis, keepdims=keepdims)
    n = 1
    for a in _axes(x.ndim, axis):
        n *= x.shape[a]
    total = xp.add.reduce(x, axis=axis, keepdims=keepdims)
    count = xp.float64(n)  # divided in double and rounded once, as np.mean divides
    if type(total) is xp.ndarray:
        xp.true_divide(total, count, out=total, casting="unsafe")
        return total, tuple(x.shape)
    return xp.asarray(total.dtype.type(total / count)), tuple(x.shape)


sum.def_fast_path("numpy", vjp=_sum_vjp_numpy)
mean.def_fast_path("numpy", forward=_mean_numpy, vjp=_mean_vjp_numpy)


def _extremum_vjp(xp, g, res, *, axis=None, keepdims=False):
    x, out = res
    shape = tuple(x.shape)
    # a slice's result is NaN exactly where the slice holds a NaN: its NaNs are its hits
    hit = xp.logical_or(x == xp.reshape(out, _keep_shape(shape, axis)), xp.isnan(x))
    count = xp.sum(xp.astype(hit, x.dtype), axis=axis, keepdims=True)
    share = xp.reshape(g, _keep_shape(shape, axis)) / count
    return (xp.where(hit, share, 0.0),)


@defop("max")
def max(xp, x, *, axis=None, keepdims=False):
    """largest element over axis;  g goes to the maxima, split evenly between ties.  NaN:
    a slice holding a NaN has the max NaN, and its g goes to its NaNs, split evenly (torch's
    full max: ``max([1, nan, 3])`` gives the gradient ``[0, 1, 0]``)

    >>> import gpugrad as gg
    >>> x = gg.Variable([1.0, float("nan"), 3.0, float("nan")])
    >>> gg.max(x).backward(); gg.to_numpy(x.grad).tolist()
    [0.0, 0.5, 0.0, 0.5]
    """
    real_only("max", x)
    out = xp.max(x, axis=axis, keepdims=keepdims)
    return out, (x, out)


max.defvjp(_extremum_vjp)


@defop("min")
def min(xp, x, *, axis=None, keepdims=False):
    """smallest element over axis;  g goes to the minima, split evenly between ties.  NaN:
    a slice holding a NaN has the min NaN, and its g goes to its NaNs, split evenly (as max)
    """
    real_only("min", x)
    out = xp.min(x, axis=axis, keepdims=keepdims)
    return out, (x, out)


min.defvjp(_extremum_vjp)


class _FullSumLowering:
    """The planned program's NumPy code for a float sum over every axis to a 0-d value of
    the input's dtype: NumPy's own pairwise reduce, without np.sum's Python layers. Its
    gradient is the 0-d ``g`` standing for its broadcast (see gpugrad.compiler.lower)."""

    @staticmethod
    def applies(info, out, params, ctx):
        x = info[0]
        return params.get("axis") is None and not params.get("keepdims") and x is not None \
            and x is not ctx.SCALAR and bool(x[0]) and x[1] == out[1] and out[0] == () \
            and getattr(out[1], "kind", "") == "f"

    reads_negated = True  # its input may hold minus its value (gpugrad.compiler.rewrite)

    @staticmethod
    def forward(ins, info, out, params, ctx, negated=False):
        if not _FullSumLowering.applies(info, out, params, ctx):
            return None
        a = ins[0]
        if negated:  # -(sum of -a): exact, rounding to nearest is symmetric
            return lambda o, dst: [f"{o} = np.add.reduce({a}, axis=None, out={dst})",
                                   f"np.negative({o}, {o})"] if dst != "None" else \
                [f"{o} = asarray(-np.add.reduce({a}, axis=None))"]
        return lambda o, dst: [f"{o} = np.add.reduce({a}, axis=None, out={dst})"] \
            if dst != "None" else [f"{o} = asarray(np.add.reduce({a}, axis=None))"]

    @staticmethod
    def backward(pos, g, ins, info, o, out, params, ctx, **kw):
        if not _FullSumLowering.applies(info, out, params, ctx):
            return None
        return [g], None, "scalar", []


sum.deflower(_FullSumLowering)


class _FullMeanLowering(_FullSumLowering):
    """A float mean over every axis: NumPy's own arithmetic (np.mean's pairwise reduce, then
    the sum divided by the count in float64, as NumPy divides by an intp, here as Python
    floats (``NF{n}``, see gpugrad.compiler.lower: the same bits, a fifth of the time), and
    cast back), without its Python layers. Its
    gradient is the 0-d ``g / n`` standing for its broadcast. Not for an empty input: the
    rules run there, quiet as in eager (the mean of nothing is NaN, its gradient empty)."""

    @staticmethod
    def applies(info, out, params, ctx):
        return _FullSumLowering.applies(info, out, params, ctx) and math.prod(info[0][0]) > 0

    @staticmethod
    def forward(ins, info, out, params, ctx, negated=False):
        if not _FullMeanLowering.applies(info, out, params, ctx):
            return None
        a, n = ins[0], math.prod(info[0][0])
        minus = "-" if negated else ""  # (see _FullSumLowering)
        dt = getattr(out[1], "name", "")  # (a 0-d array of the value, made at once)
        cast = f"np.array(float({{s}}) / NF{n}, np.{dt})" if dt.startswith("float") else \
            f"asarray({{s}}.dtype.type(float({{s}}) / NF{n}))"
        # a kernel that makes ``a`` may add it up itself (gpugrad.compiler.native_fold)
        total = None if negated else (a, lambda o, s: [f"{o} = {cast.format(s=s)}"], "mean")
        return ctx.Forward(lambda o, dst, *T: [f"s_ = {minus}np.add.reduce({a}, axis=None)",
                                               f"{o} = {cast.format(s='s_')}"], [], (),
                           total=total)

    @staticmethod
    def backward(pos, g, ins, info, o, out, params, ctx, one=False, **kw):
        if not _FullMeanLowering.applies(info, out, params, ctx):
            return None
        n = math.prod(info[0][0])
        # as the rule: g / n in g's dtype (1 / n in it, where g is exactly 1: ``INV{n}``,
        # made in that dtype); both named by the count (gpugrad.compiler.lower.sized), so a
        # program independent of the batch size makes them per size
        if one and getattr(out[1], "name", "") in ("float16", "float32", "float64"):
            return [], lambda c, C, T: [f"{c} = INV{n}_{out[1].name}"], "scalar", []
        if one and getattr(out[1], "kind", "") == "f":
            k = ctx.const(float(out[1].type(1.0) / float(n)), out[1])
            return [], lambda c, C, T: [f"{c} = {k}"], "scalar", []
        src = ctx.const(1.0, out[1]) if one else f"{g}[()]"  # (a 0-d array as its scalar:
        # the same division, without an array's)
        return [] if one else [g], lambda c, C, T: [f"{c} = {src} / NF{n}"], "scalar", []


mean.deflower(_FullMeanLowering)
