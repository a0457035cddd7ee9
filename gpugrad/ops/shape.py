"""Shape ops: reshape, expand_dims, squeeze, broadcast_to, concat, stack. Their gradients
only move data around. reshape (where the backend gives a view), expand_dims and squeeze
return views of their input; a write into one goes back as its reshape to the input's shape."""

from ..registry import defop


@defop("reshape")
def reshape(xp, x, *, shape):
    """x with a new shape;  the gradient is reshaped back"""
    return xp.reshape(x, tuple(shape)), tuple(x.shape)


reshape.defvjp(lambda xp, g, in_shape, *, shape: (xp.reshape(g, in_shape),))


def _reshape_back(src, value, **params):
    """A view written into goes back to its input as the new value reshaped to src's shape."""
    return reshape, (value,), {"shape": tuple(src.shape)}


reshape.defview(_reshape_back)


@defop("expand_dims")
def expand_dims(xp, x, *, axis=0):
    """x with a new axis of length 1;  the gradient drops it again"""
    return xp.expand_dims(x, axis=axis), tuple(x.shape)


expand_dims.defvjp(lambda xp, g, in_shape, *, axis=0: (xp.reshape(g, in_shape),))
expand_dims.defview(_reshape_back)


@defop("squeeze")
def squeeze(xp, x, *, axis):
    """x without the given length-1 axes;  the gradient gets them back"""
    return xp.squeeze(x, axis=axis), tuple(x.shape)


squeeze.defvjp(lambda xp, g, in_shape, *, axis: (xp.reshape(g, in_shape),))
squeeze.defview(_reshape_back)


@defop("broadcast_to")
def broadcast_to(xp, x, *, shape):
    """x broadcast to shape;  the engine sums the gradient back to x's shape"""
    return xp.broadcast_to(x, tuple(shape)), None


broadcast_to.defvjp(lambda xp, g, res, *, shape: (g,))
broadcast_to.defview("several of its elements are one element of its input")


def _split(g, sizes, axis):
    out, start = [], 0
    lead = (slice(None),) * axis
    for n in sizes:
        out.append(g[lead + (slice(start, start + n), ...)])
        start += n
    return out


@defop("concat", variadic=True)
def concat(xp, *arrays, axis=0):
    """arrays joined along an existing axis (axis=None flattens first);  g is split back"""
    if axis is None:
        shapes = [tuple(a.shape) for a in arrays]
        flat = [xp.reshape(a, (-1,)) for a in arrays]
        return xp.concat(flat, axis=0), (shapes, None)
    return xp.concat(arrays, axis=axis), ([tuple(a.shape) for a in arrays], axis)


def _concat_vjp(xp, g, res, *, axis=0):
    shapes, ax = res
    if ax is None:
        sizes = [_numel(s) for s in shapes]
        return [xp.reshape(p, s) for p, s in zip(_split(g, sizes, 0), shapes)]
    ax = ax % g.ndim
    return _split(g, [s[ax] for s in shapes], ax)


def _numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


concat.defvjp(_concat_vjp)


@defop("stack", variadic=True)
def stack(xp, *arrays, axis=0):
    """arrays joined along a new axis;  g is sliced back along that axis"""
    return xp.stack(arrays, axis=axis), len(arrays)


def _stack_vjp(xp, g, n, *, axis=0):
    ax = axis % g.ndim
    lead = (slice(None),) * ax
    return [g[lead + (i, ...)] for i in range(n)]


stack.defvjp(_stack_vjp)
