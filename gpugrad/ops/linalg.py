"""Linear algebra: matmul (batched, broadcast batch dims, 1-D operands), matrix_transpose,
permute_dims."""

from ..registry import defop
from .complexes import cj


@defop("matmul")
def matmul(xp, a, b):
    """a @ b, batched over leading dims;  d/da = g @ b^T,  d/db = a^T @ g.

    A 1-D ``a`` is a row vector and a 1-D ``b`` a column vector, and the added dimension is
    removed again, as the array-API standard defines. Broadcast batch dimensions are summed
    back by the engine.
    """
    return xp.matmul(a, b), (a, b)


def _matmul_da(xp, g, res):
    a, b = res
    b = cj(xp, b)  # complex: d/da = g @ conj(b)^T
    if b.ndim == 1:
        if a.ndim == 1:
            return g * b
        # out[..., i] = sum_k a[..., i, k] b[k]
        return xp.expand_dims(g, axis=-1) * b
    if a.ndim == 1:
        # out[..., j] = sum_k a[k] b[..., k, j]
        return xp.squeeze(xp.matmul(xp.expand_dims(g, axis=-2), xp.matrix_transpose(b)), axis=-2)
    return xp.matmul(g, xp.matrix_transpose(b))


def _matmul_db(xp, g, res):
    a, b = res
    a = cj(xp, a)  # complex: d/db = conj(a)^T @ g
    if a.ndim == 1:
        if b.ndim == 1:
            return g * a
        # db[..., k, j] = a[k] g[..., j]
        return xp.expand_dims(a, axis=-1) * xp.expand_dims(g, axis=-2)
    if b.ndim == 1:
        # db[..., k] = sum_i a[..., i, k] g[..., i]
        return xp.squeeze(xp.matmul(xp.matrix_transpose(a), xp.expand_dims(g, axis=-1)), axis=-1)
    return xp.matmul(xp.matrix_transpose(a), g)


matmul.defvjp(_matmul_da, _matmul_db)


@defop("matrix_transpose")
def matrix_transpose(xp, x):
    """x with its last two axes swapped;  the gradient is swapped back"""
    return xp.matrix_transpose(x), None


matrix_transpose.defvjp(lambda xp, g, res: (xp.matrix_transpose(g),))
# a view: a write into it goes back transposed again
matrix_transpose.defview(lambda src, value: (matrix_transpose, (value,), {}))


@defop("permute_dims")
def permute_dims(xp, x, *, axes):
    """x with its axes reordered;  the gradient takes the inverse permutation"""
    return xp.permute_dims(x, tuple(axes)), None


def _inverse(axes):
    n = len(axes)
    inverse = [0] * n
    for i, a in enumerate(axes):
        inverse[a % n] = i
    return tuple(inverse)


def _permute_vjp(xp, g, res, *, axes):
    return (xp.permute_dims(g, _inverse(axes)),)


permute_dims.defvjp(_permute_vjp)
# a view: a write into it goes back through the inverse permutation
permute_dims.defview(lambda src, value, *, axes: (permute_dims, (value,), {"axes": _inverse(axes)}))


@defop("linear")
def linear(xp, x, weight, bias):
    """x @ weight + bias, a Linear layer in one op (``bias=None``: no bias);  d/dx = g @
    weight^T, d/dweight = x^T @ g, d/dbias = g (summed back to bias's shape by the engine)"""
    out = xp.matmul(x, weight)
    return (out if bias is None else out + bias), (x, weight)


def _linear_forward_numpy(xp, x, weight, bias):
    """NumPy fast path: the bias is added in place into the fresh matmul output (one pass and
    one allocation fewer than ``x @ W + b``), where that cannot change shape or dtype."""
    out = xp.matmul(x, weight)
    if bias is None:
        return out, (x, weight)
    if (out.ndim and out.dtype == bias.dtype and bias.ndim <= out.ndim
            and bias.shape == out.shape[out.ndim - bias.ndim:]):
        out += bias
        return out, (x, weight)
    return linear.forward(xp, x, weight, bias)


def _matmul_da_numpy(xp, g, res):
    """NumPy fast path: g @ b^T through the transposed view, for real matrices (BLAS reads
    the view as it is: no transposed copy, no Python layers of matrix_transpose)."""
    a, b = res
    if a.ndim < 2 or b.ndim < 2 or b.dtype.kind == "c":
        return _matmul_da(xp, g, res)
    return xp.matmul(g, b.T if b.ndim == 2 else b.swapaxes(-1, -2))


def _matmul_db_numpy(xp, g, res):
    """NumPy fast path: a^T @ g through the transposed view, for real matrices. A stack of
    ``a`` against one matrix ``b`` (a Linear layer on (batch, time, features)) is one
    product of the stacked rows, which sums over the stack as it goes: no stack of
    per-matrix gradients for the engine to sum afterwards."""
    a, b = res
    if a.ndim < 2 or b.ndim < 2 or a.dtype.kind == "c":
        return _matmul_db(xp, g, res)
    if a.ndim == 2:
        return xp.matmul(a.T, g)
    if b.ndim == 2 and g.ndim == a.ndim:
        return xp.matmul(a.reshape(-1, a.shape[-1]).T, g.reshape(-1, g.shape[-1]))
    return xp.matmul(a.swapaxes(-1, -2), g)


def _matmul_db_into(xp, g, res, out):
    """:func:`_matmul_db_numpy` computed into ``out`` (a C-contiguous array of the result's
    shape and dtype: the same BLAS product, written in place), or None where it cannot be
    (then the rule itself runs). The sweep uses it for a gradient sink (see
    gpugrad.eager.grad_sinks)."""
    a, b = res
    if a.ndim < 2 or b.ndim != 2 or g.ndim != a.ndim or a.dtype.kind == "c":
        return None
    a2 = a if a.ndim == 2 else a.reshape(-1, a.shape[-1])
    g2 = g if g.ndim == 2 else g.reshape(-1, g.shape[-1])
    if (out.shape != (a2.shape[1], g2.shape[1]) or not out.flags.c_contiguous
            or not (a2.dtype == g2.dtype == out.dtype)):
        return None
    return xp.matmul(a2.T, g2, out=out)


_matmul_db_numpy.into = _matmul_db_into


def _linear_dbias(xp, g, res):
    return g


matmul.def_fast_path("numpy", vjps=(_matmul_da_numpy, _matmul_db_numpy))
linear.defvjp(_matmul_da, _matmul_db, _linear_dbias)
linear.def_fast_path("numpy", forward=_linear_forward_numpy,
                     vjps=(_matmul_da_numpy, _matmul_db_numpy, _linear_dbias))


def _batched(info):
    """Two operands of 3 or more dimensions with the same batch shape (no broadcasting)."""
    a, b = info[0][0], info[1][0]
    return len(a) >= 3 and len(b) == len(a) and a[:-2] == b[:-2]


def _matrices(info, n):
    return all(i is not None and i[0] is not None and len(i[0]) == 2 for i in info[:n])


class _MatmulLowering:
    """The planned program's NumPy code for 2-D and same-batch matmuls (and linear's
    matrix part): one BLAS call into the planned buffer, forward and backward, as the rule
    computes them (g @ b^T and a^T @ g, through transposed views)."""

    @staticmethod
    def forward(ins, info, out, params, ctx):
        a, b = ins[0], ins[1]
        if _matrices(info, 2):
            return ctx.Forward(lambda o, dst: [f"{o} = np.dot({a}, {b}, {dst})"], [], (),
                               product=("nn", a, b))
        if _batched(info):
            return lambda o, dst: [f"{o} = np.matmul({a}, {b}, out={dst})"]
        return None

    @staticmethod
    def backward(pos, g, ins, info, o, out, params, ctx, **kw):
        a, b = ins[0], ins[1]
        if _batched(info):
            if pos == 0:
                return ([g, b], lambda c, C, T: [
                    f"{c} = np.matmul({g}, np.swapaxes({b}, -1, -2), out={C})"], False, [])
            return ([g, a], lambda c, C, T: [
                f"{c} = np.matmul(np.swapaxes({a}, -1, -2), {g}, out={C})"], False, [])
        if pos == 0:  # (the products are told to the rewrites: gpugrad.compiler.stack)
            return ctx.Backward([g, b], lambda c, C, T: [f"{c} = np.dot({g}, {b}.T, {C})"],
                                False, [], product=("nt", g, b))
        if pos == 1:
            return ctx.Backward([g, a], lambda c, C, T: [f"{c} = np.dot({a}.T, {g}, {C})"],
                                False, [], product=("tn", a, g))
        return "g"  # linear's bias: g summed down to its shape


class _LinearLowering(_MatmulLowering):
    """linear on matrices and a vector bias: the product, then the bias added in place (no
    broadcast temporary). ``negated`` writes ``-(x @ W + b)`` as ``(-b) - x @ W``, exactly
    (rounding to nearest is symmetric), for a consumer whose formula starts with ``-x``."""

    @staticmethod
    def applies(info):
        return _matrices(info, 2) and info[2] is not None and len(info[2][0]) == 1

    @staticmethod
    def forward(ins, info, out, params, ctx):
        if not _LinearLowering.applies(info):
            return None
        a, w, b = ins
        product = (lambda o, dst: [f"{o} = np.dot({a}, {w}, {dst})"])  # noqa: E731
        return ctx.Forward(lambda o, dst: [*product(o, dst), f"np.add({o}, {b}, {o})"], [], (),
                           epilogue=(product, ("add", ("name", "o"), ("name", b))))

    @staticmethod
    def negated(ins, info, out, params, ctx):
        """``(emit(o, dst, T), temps)``: minus the forward (``T``: a buffer of b's shape)."""
        if not _LinearLowering.applies(info):
            return None
        x, w, b = ins
        return (lambda o, dst, T: [f"{o} = np.dot({x}, {w}, {dst})", f"np.negative({b}, {T})",
                                   f"np.subtract({T}, {o}, {o})"]), [info[2]]


matmul.deflower(_MatmulLowering)
linear.deflower(_LinearLowering)
