"""Elementwise functions: exp, log, log1p, sqrt, square, abs, tanh, sigmoid, relu,
maximum, minimum, where, clip, astype.

Kinks follow PyTorch: relu'(0) = 0, abs'(0) = 0, maximum(a, a) gives half to each input,
clip passes the gradient on its closed interval [min, max].

A NaN input is never dropped from the gradient where its value reaches the output: relu and
clip pass g at a NaN (their output is that NaN), maximum and minimum give g to the NaN input
(the one their output is), and abs gives g * sign(NaN) = NaN.
"""

from ..fpstate import OVER_RAISED, enter, leave, quiet, state_with
from ..registry import defop
from .complexes import cj, is_complex, real_only


@defop("exp")
def exp(xp, x):
    """exp(x);  d/dx = exp(x)"""
    out = xp.exp(x)
    return out, out


exp.defvjp(lambda xp, g, out: (g * cj(xp, out),))
exp.defscalar("exp(x)", "g * out")


@defop("log")
def log(xp, x):
    """log(x);  d/dx = 1/x"""
    return xp.log(x), x


log.defvjp(lambda xp, g, x: (g / cj(xp, x),))
log.defscalar("log(x)", "g / x")


@defop("log1p")
def log1p(xp, x):
    """log(1 + x), accurate near 0;  d/dx = 1/(1 + x)"""
    return xp.log1p(x), x


log1p.defvjp(lambda xp, g, x: (g / cj(xp, x + 1.0),))
log1p.defscalar("log1p(x)", "g / (x + 1)")


@defop("sqrt")
def sqrt(xp, x):
    """sqrt(x);  d/dx = 1/(2 sqrt(x))  (inf at 0)"""
    out = xp.sqrt(x)
    return out, out


sqrt.defvjp(lambda xp, g, out: (g / cj(xp, out * 2.0),))
sqrt.defscalar("sqrt(x)", "g / (out * 2)")


@defop("square")
def square(xp, x):
    """x**2;  d/dx = 2x"""
    return x * x, x


square.defvjp(lambda xp, g, x: (g * cj(xp, x * 2.0),))
square.defscalar("x * x", "g * (x * 2)")


@defop("abs")
def abs(xp, x):
    """|x|;  d/dx = sign(x), with abs'(0) = 0  (complex z: z.grad = g z/|z|, which is
    sign(z) as the standard defines it)"""
    return xp.abs(x), x


abs.defvjp(lambda xp, g, x: (g * xp.sign(x),))
abs.defscalar("abs(x)", "g * sign(x)")


@defop("tanh")
def tanh(xp, x):
    """tanh(x);  d/dx = 1 - tanh(x)**2"""
    out = xp.tanh(x)
    return out, out


tanh.defvjp(lambda xp, g, out: (g * cj(xp, 1.0 - out * out),))
tanh.defscalar("tanh(x)", "g * (1 - out * out)")


@defop("sigmoid")
def sigmoid(xp, x):
    """1 / (1 + exp(-x)), computed without overflow;  d/dx = s (1 - s).

    exp(-|x|) never overflows; for x < 0, s = e / (1 + e) keeps full relative precision
    where 1 - 1/(1 + e) would cancel.
    """
    if is_complex(x):  # holomorphic; the stable form below needs an ordering
        out = 1.0 / (1.0 + xp.exp(-x))
        return out, out
    with quiet(xp):  # exp(-|x|) and e * r underflow by design for large |x|
        e = xp.exp(-xp.abs(x))
        r = 1.0 / (1.0 + e)
        out = xp.where(x >= 0, r, e * r)
    return out, out


sigmoid.defvjp(lambda xp, g, s: (g * cj(xp, s * (1.0 - s)),))
# the formula is the NumPy fast path's (a few ulps from the stable rule); planned programs
# run it where exp(-x) does not overflow, and the rule where it does
sigmoid.defscalar("reciprocal(exp(-x) + 1)", "g * (out * (1 - out))")


def _sigmoid_numpy(xp, x):
    """NumPy fast path: 1 / (1 + exp(-x)) in one buffer, four passes. It is accurate to a few
    ulps wherever exp(-x) is finite; where it would overflow (x below about -88.7 in float32)
    NumPy raises inside ``errstate`` and the exact portable rule runs instead, so no warning
    escapes and tiny results keep their subnormal values. (Three passes, exp(x) / (1 +
    exp(x)), would be a little faster but round differently in float32 from the compiled
    graph's sigmoid, which starts at exp(-x): eager and graph keep the same bits.)"""
    if x.ndim == 0:  # NumPy hands back scalars for 0-d work; the portable rule is as fast
        return sigmoid.forward(xp, x)
    token = enter(state_with(OVER_RAISED))  # np.errstate(over="raise"), at half its cost
    try:
        t = xp.negative(x)
        xp.exp(t, out=t)
    except FloatingPointError:
        t = None
    finally:
        leave(token)
    if t is None:  # (the exact rule runs under the caller's own flags)
        return sigmoid.forward(xp, x)
    t += 1.0
    xp.reciprocal(t, out=t)
    return t, t


def _sigmoid_vjp_numpy(xp, g, s):
    """NumPy fast path: g * s * (1 - s) in one buffer; a gradient that is a broadcast
    scalar (the backward of a sum) multiplies once as a scalar, or not at all if it is 1."""
    t = 1.0 - s
    t *= s
    if t.dtype.kind == "c":
        t = xp.conj(t)
    if g.ndim and not g.strides[-1] and not any(g.strides) and g.size:
        scale = g.flat[0]
        if scale != 1.0:
            t *= scale
    else:
        t *= g
    return (t,)


def _sigmoid_numpy_in_raising_errstate(xp, x):
    """Compiled schedules run NumPy steps inside errstate(over="raise") and rerun without
    this path if anything overflows, so the per-call errstate can go."""
    if x.ndim == 0:
        return sigmoid.forward(xp, x)
    t = xp.negative(x)
    xp.exp(t, out=t)
    t += 1.0
    xp.reciprocal(t, out=t)
    return t, t


sigmoid.def_fast_path("numpy", forward=_sigmoid_numpy, vjp=_sigmoid_vjp_numpy)
sigmoid.def_fast_path("numpy-overflow-raises", forward=_sigmoid_numpy_in_raising_errstate)


@defop("relu")
def relu(xp, x):
    """max(x, 0);  d/dx = 1 where x > 0, else 0 (relu'(0) = 0).  NaN stays NaN, and its
    gradient is g, as torch's (whose rule masks by the output: 0 where out <= 0): the mask
    is ``not (x <= 0)``.

    >>> import gpugrad as gg
    >>> x = gg.Variable([-1.0, 0.0, float("nan"), 2.0])
    >>> gg.sum(gg.relu(x)).backward(); gg.to_numpy(x.grad).tolist()
    [0.0, 0.0, 1.0, 1.0]
    """
    return xp.maximum(x, 0.0), x


relu.defvjp(lambda xp, g, x: (xp.where(x <= 0, 0.0, g),))
# the same 0/1 mask read from the output (0 exactly where x <= 0; NaN where x is): a planned
# program may then write the output over x's buffer. (Eager rules keep x: keeping the output
# alive instead costs NumPy a fresh allocation per step, several times the mask's cost.)
relu.defscalar("maximum(x, 0)", "g * (out != 0)")


def _relu_vjp_numpy(xp, g, x):
    """NumPy fast path: g times the 0/1 mask, no masked select (the mask negated in place:
    a pass over bytes, an eighth of one over float64)."""
    if x.ndim == 0:  # NumPy's 0-d comparison is a scalar, with no buffer to negate in
        return relu.vjp(xp, g, x)
    mask = xp.less_equal(x, 0.0)
    xp.logical_not(mask, out=mask)
    return (g * mask,)


relu.def_fast_path("numpy", vjp=_relu_vjp_numpy)


def _tie_split(xp, g, mine, other, loses):
    """g, but half of g on a tie and 0 where ``mine`` loses; a comparison with a NaN is
    false, so at a NaN (either input) both inputs get g, as PyTorch's rule gives them."""
    return xp.where(mine == other, g * 0.5, xp.where(loses, 0.0, g))


# _tie_split as a scalar formula: 1 - loses - tie / 2
_WINS = "g * (1 - ({l}) - ({m} == {o}) * 0.5)"


@defop("maximum")
def maximum(xp, a, b):
    """max(a, b) elementwise;  the larger input gets g, ties split g evenly.  NaN: the
    output is the NaN, and both inputs get g, as PyTorch gives them (the gradient carries
    the NaN wherever the loss does).

    >>> import gpugrad as gg
    >>> a, b = gg.Variable([float("nan"), 1.0]), gg.Variable([2.0, 1.0])
    >>> gg.sum(gg.maximum(a, b)).backward()
    >>> gg.to_numpy(a.grad).tolist(), gg.to_numpy(b.grad).tolist()
    ([1.0, 0.5], [1.0, 0.5])
    """
    real_only("maximum", a, b)
    return xp.maximum(a, b), (a, b)


maximum.defvjp(
    lambda xp, g, res: _tie_split(xp, g, res[0], res[1], res[0] < res[1]),
    lambda xp, g, res: _tie_split(xp, g, res[1], res[0], res[1] < res[0]),
)
maximum.defscalar("maximum(a, b)", _WINS.format(l="a < b", m="a", o="b"),
                  _WINS.format(l="b < a", m="b", o="a"))


@defop("minimum")
def minimum(xp, a, b):
    """min(a, b) elementwise;  the smaller input gets g, ties split g evenly.  NaN: as
    maximum, both inputs get g (PyTorch's rule)."""
    real_only("minimum", a, b)
    return xp.minimum(a, b), (a, b)


minimum.defvjp(
    lambda xp, g, res: _tie_split(xp, g, res[0], res[1], res[0] > res[1]),
    lambda xp, g, res: _tie_split(xp, g, res[1], res[0], res[1] > res[0]),
)
minimum.defscalar("minimum(a, b)", _WINS.format(l="a > b", m="a", o="b"),
                  _WINS.format(l="b > a", m="b", o="a"))


@defop("where")
def where(xp, condition, a, b):
    """a where condition else b;  d/da = condition, d/db = not condition"""
    return xp.where(condition, a, b), condition


where.defvjp(
    None,
    lambda xp, g, cond: xp.where(cond, g, 0.0),
    lambda xp, g, cond: xp.where(cond, 0.0, g),
)


@defop("clip")
def clip(xp, x, *, min=None, max=None):
    """x limited to [min, max];  d/dx = 1 on the closed interval, 0 outside.  NaN: the
    output is x's NaN and the gradient g, as relu's (torch.clamp gives 0 there, dropping
    the NaN from the gradient; gpugrad keeps clip(x, min=0) and relu alike). A NaN bound
    makes every output NaN, as NumPy's clip, and x's gradient 0.

    >>> import gpugrad as gg
    >>> x = gg.Variable([-1.0, float("nan"), 0.5, 3.0])
    >>> gg.sum(gg.clip(x, 0.0, 1.0)).backward(); gg.to_numpy(x.grad).tolist()
    [0.0, 1.0, 1.0, 0.0]
    """
    real_only("clip", x)
    return xp.clip(x, min, max), x


def _clip_vjp(xp, g, x, *, min=None, max=None):
    # g on the closed interval, as PyTorch: a NaN x, or a NaN bound, compares false: 0
    inside = None
    if min is not None:
        inside = x >= min
    if max is not None:
        inside = x <= max if inside is None else xp.logical_and(inside, x <= max)
    return (g if inside is None else xp.where(inside, g, 0.0),)


clip.defvjp(_clip_vjp)


@defop("astype")
def astype(xp, x, *, dtype):
    """x converted to dtype;  the gradient is converted back to x's dtype (its real part for
    a real x). Complex to real is refused, as the standard says: use real, imag or abs."""
    if is_complex(x) and not xp.isdtype(dtype, ("complex floating", "bool")):
        raise TypeError(
            f"astype: converting {x.dtype} to {dtype} would drop the imaginary part; take "
            "gpugrad.array_api.real(z), imag(z) or abs(z) instead")
    return xp.astype(x, dtype), x.dtype


def _astype_vjp(xp, g, src_dtype, *, dtype):
    if is_complex(g) and "complex" not in str(src_dtype):
        g = xp.real(g)
    return (xp.astype(g, src_dtype),)


astype.defvjp(_astype_vjp)


@defop("logaddexp")
def logaddexp(xp, a, b):
    """log(exp(a) + exp(b)), without overflow;  d/da = exp(a - out), d/db = exp(b - out)"""
    real_only("logaddexp", a, b)
    # logaddexp(-1000, 0) is exactly 0, but NumPy's exp inside underflows; and NumPy calls
    # a NaN input's NaN result invalid (other ufuncs pass NaN on quietly; no two numbers give
    # an invalid logaddexp)
    with quiet(xp, invalid="ignore"):
        out = xp.logaddexp(a, b)
    return out, (a, b, out)


def _logaddexp_share(xp, g, mine, out):
    # where out is -inf both inputs are -inf: no mass to share, gradient 0 instead of nan
    # (+inf likewise gives 0); where out is NaN (an input is), the gradients are NaN
    inf = xp.isinf(out)
    return xp.where(inf, 0.0, g * xp.exp(mine - xp.where(inf, 0.0, out)))


logaddexp.defvjp(
    lambda xp, g, res: _logaddexp_share(xp, g, res[0], res[2]),
    lambda xp, g, res: _logaddexp_share(xp, g, res[1], res[2]),
)
logaddexp.defscalar("logaddexp(a, b)",
                    "where(isinf(out), 0, g * exp(a - where(isinf(out), 0, out)))",
                    "where(isinf(out), 0, g * exp(b - where(isinf(out), 0, out)))")
