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


@defop("softmax_cross_entropy")
def softmax_cross_entropy(xp, logits, targets, *, axis=-1):
    """-log softmax(logits)[target] along axis, one integer class target per row (targets
    has logits' shape without that axis);  d/dlogits = g (softmax(logits) - onehot(target)),
    no gradient for the targets"""
    shifted = logits - _finite_max(xp, logits, axis)
    with quiet(xp):  # entries far below the max underflow to 0 by design
        logp = shifted - xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))
    picked = xp.take_along_axis(logp, xp.expand_dims(targets, axis=axis), axis=axis)
    return -xp.squeeze(picked, axis=axis), (logp, targets)


def _softmax_cross_entropy_vjp(xp, g, res, *, axis=-1):
    logp, targets = res
    ax = axis % logp.ndim
    n = logp.shape[ax]
    ones = [1] * logp.ndim
    ones[ax] = n
    positions = xp.reshape(xp.arange(n, dtype=targets.dtype, device=targets.device),
                           tuple(ones))
    wrapped = xp.where(targets < 0, targets + n, targets)
    onehot = xp.astype(positions == xp.expand_dims(wrapped, axis=ax), logp.dtype)
    return xp.expand_dims(g, axis=ax) * (xp.exp(logp) - onehot), None


softmax_cross_entropy.defvjp(_softmax_cross_entropy_vjp)


def _labels_on_last_axis(logits, targets, axis):
    return (logits.ndim == 2 and axis in (1, -1) and targets.ndim == 1
            and targets.shape[0] == logits.shape[0] and targets.dtype.kind in "iu")


def _softmax_cross_entropy_numpy(xp, logits, targets, *, axis=-1):
    """NumPy fast path for a matrix of logits with one label per row: in-place passes, the
    pick by direct indexing, and the softmax kept for backward (the portable rule's where
    and take_along_axis cost more than the arithmetic at small sizes)."""
    if not _labels_on_last_axis(logits, targets, axis):
        return softmax_cross_entropy.forward(xp, logits, targets, axis=axis)
    # the ufuncs' own reduce: the array methods' Python layers cost more at small sizes
    m = xp.maximum.reduce(logits, axis=1, keepdims=True)
    if not xp.logical_and.reduce(xp.isfinite(m), axis=None):
        return softmax_cross_entropy.forward(xp, logits, targets, axis=axis)
    p = logits - m
    with quiet(xp):  # entries far below the max underflow to 0 by design
        xp.exp(p, out=p)
    total = xp.add.reduce(p, axis=1, keepdims=True)
    rows = xp.arange(logits.shape[0])
    # -logp[target] = log(total) + m - logits[target], with logp = logits - m - log(total)
    out = xp.log(total[:, 0])
    out += m[:, 0]
    out -= logits[rows, targets]
    p /= total
    return out, (p, targets, rows)


def _softmax_cross_entropy_vjp_numpy(xp, g, res, *, axis=-1):
    """NumPy fast path: (softmax - onehot) scaled per row by g, in one buffer."""
    if len(res) == 2:  # the forward took the portable rule
        return _softmax_cross_entropy_vjp(xp, g, res, axis=axis)
    p, targets, rows = res
    d = p.copy()
    d[rows, targets] -= 1.0
    if g.ndim and not any(g.strides) and g.size:  # a broadcast scalar (from a mean or sum)
        scale = g.flat[0]
        if scale != 1.0:
            d *= scale
    else:
        d *= g[:, None]
    return d, None


softmax_cross_entropy.def_fast_path("numpy", forward=_softmax_cross_entropy_numpy,
                                    vjp=_softmax_cross_entropy_vjp_numpy)
