"""Composites the standard lacks: logsumexp, softmax, log_softmax.

Each shifts by a finite max, so large inputs never overflow and -inf entries stay harmless.
A row whose max is not finite (a NaN or +inf in it) is shifted by 0 instead: its result is
NaN (or inf) whatever the shift, so an overflow in its exp is no news and stays quiet. A NaN
entry makes its row's result and gradient NaN, as in torch.
"""

from ..fpstate import quiet
from ..registry import defop
from ..scalar_formula import CTYPES
from .complexes import cj


def _finite_max(xp, x, axis):
    m = xp.max(x, axis=axis, keepdims=True)
    return xp.where(xp.isfinite(m), m, 0.0)


@defop("logsumexp")
def logsumexp(xp, x, *, axis=None, keepdims=False):
    """log(sum(exp(x))) over axis;  d/dx = softmax(x)"""
    m = _finite_max(xp, x, axis)
    with quiet(xp, over="ignore"):  # entries far below the max underflow to 0 by design
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
    with quiet(xp, over="ignore"):  # entries far below the max underflow to 0 by design
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
    with quiet(xp, over="ignore"):
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
    with quiet(xp, over="ignore"):  # entries far below the max underflow to 0 by design
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


class _CrossEntropyLowering:
    """The planned program's NumPy code for a matrix of float logits with one integer label
    per row (as the portable rule, written into planned buffers): ``logp = shifted -
    log(sum(exp(shifted)))`` kept for the backward, the loss ``-logp[row, target]``, and the
    gradient ``(exp(logp) - onehot) * g`` in one buffer. The shift is the row maximum,
    checked for being finite only when a row's loss is not (the rule's replacement of a
    non-finite maximum by 0 changes nothing otherwise)."""

    @staticmethod
    def applies(info, out, params):
        z, t = info
        return params.get("axis", -1) in (-1, 1) and z is not None and t is not None \
            and len(z[0]) == 2 and len(t[0]) == 1 and z[0][0] == t[0][0] \
            and getattr(t[1], "kind", "") in "iu" and getattr(z[1], "char", "") in "fd"

    ends_negated = True  # its last pass negates: ``negated`` leaves it out (a full sum or
    # mean reading the loss negates its scalar instead, see gpugrad.compiler.rewrite)

    @staticmethod
    def negated(ins, info, out, params, ctx):
        """The forward writing ``logp[row, target]``, minus the loss."""
        return _CrossEntropyLowering.forward(ins, info, out, params, ctx, True)

    @staticmethod
    def forward(ins, info, out, params, ctx, minus=False):
        if not _CrossEntropyLowering.applies(info, out, params):
            return None
        z, t = ins
        ar = f"AR{info[0][0][0]}"  # the row numbers (gpugrad.compiler.lower.vectors_in)

        def emit(o, dst, saved, bufs, temps):
            logp, LOGP, T = saved[0], bufs[0], temps[0]
            body = [f"{logp} = np.subtract({z}, m_, {LOGP})",
                    f"s_ = np.add.reduce(np.exp({logp}, out={T}), axis=-1, keepdims=True)",
                    f"np.subtract({logp}, np.log(s_, out=s_), {logp})"]
            return [f"m_ = np.maximum.reduce({z}, axis=-1, keepdims=True)", *body,
                    # a row maximum that is not finite makes its row nan: run again as the
                    # rule does, with such maxima 0
                    "if not isfinite(np.add.reduce(m_, axis=None)):",
                    "    m_ = np.where(np.isfinite(m_), m_, 0.0)",
                    *("    " + line for line in body),
                    f"{o} = {logp}[{ar}, {t}]" if minus else
                    f"{o} = np.negative({logp}[{ar}, {t}], {dst})"]
        dt = info[0][1].name
        native = None if minus else ctx.NativeKernel(
            lambda name, fold=None: _NATIVE_FORWARD.format(
                name=name, T=dt, **(fold.fields() if fold else _plain(dt))),
            lambda name, o, dst, saved, bufs, reads=None, writes="": [
                f"{o} = {dst}", f"if {name}({reads or f'np.ascontiguousarray({z})'}, "
                f"np.ascontiguousarray({t}, dtype=np.int64), {bufs[0]}, {dst}{writes}):",
                "    raise IndexError('softmax_cross_entropy: a label out of range')",
                f"{saved[0]} = {bufs[0]}"], rows=z,
            cuda=lambda name, fold=None: _CUDA_FORWARD.format(
                name=name, **(fold.cuda_fields() if fold else _cuda_plain(dt))))
        return ctx.Forward(emit, [info[0]], (), [info[0]], native=native)

    @staticmethod
    def backward(pos, g, ins, info, o, out, params, ctx, saved=(), one=False,
                 scalar_g=False):
        if pos != 0 or not saved or not _CrossEntropyLowering.applies(info, out, params):
            return None
        t, logp, n = ins[1], saved[0], info[0][0][0]
        unit = ctx.const(1.0, info[0][1])
        scale = [] if one else [f"np.multiply({{c}}, {g if scalar_g else g + '[:, None]'}, "
                                f"{{c}})"]
        dt = info[0][1].name
        gk = "one" if one else "number" if scalar_g else "rows"
        native = ctx.NativeKernel(
            lambda name, fold=None: _NATIVE_BACKWARD.format(
                name=name, T=dt, G=_G_TYPE[gk].format(T=dt), scale=_SCALE[gk].format(T=dt),
                **(fold.fields() if fold else _plain(dt))),
            lambda name, c, C, writes="": [
                f"{c} = {C}", f"{name}({logp}, np.ascontiguousarray({t}, dtype=np.int64), "
                f"{_G_ARG[gk].format(g=g)}, {C}{writes})"], rows=True,
            cuda=lambda name, fold=None: _CUDA_BACKWARD.format(
                name=name, G=_CUDA_G[gk].format(C=CTYPES[dt]), scale=_CUDA_SCALE[gk],
                **(fold.cuda_fields() if fold else _cuda_plain(dt))))
        return ctx.Backward([g, t, logp], lambda c, C, T: [
            f"{c} = np.exp({logp}, {C})", f"{c}[AR{n}, {t}] -= {unit}",
            *[s.format(c=c) for s in scale]], False, [], native=native)


# The native tier's kernels (gpugrad.compiler.native): the NumPy code above, a row at a
# time (the row's sum added in order in float64, where NumPy adds pairwise in the dtype).
# Where the logits are made by an elementwise step (a bias add) the forward reads that
# step's inputs instead, and may add up the losses (for their mean); the backward may add
# up its gradient's columns (a bias's gradient) as it writes them
# (gpugrad.compiler.native_fold; ``_plain``: none of these).
_NATIVE_FORWARD = """\
{consts}@njit(types.boolean({in_sig}, R("int64", 1), W("{T}", 2), W("{T}", 1){sum_sig}),
      nogil=True, error_model="numpy", cache=True)
def {name}({in_args}, t, logp, out{sum_args}):
    n, k = logp.shape
{sum_init}    for i in range(n):
        m = {read0}
        for j in range(1, k):
            v = {readj}
            m = v if (v > m or v != v) else m
        if not (m - m == 0):  # not finite: 0, as the rule does
            m = np.{T}(0.0)
        s = 0.0  # in float64: as accurate as NumPy's pairwise sum for any row length
        for j in range(k):
            d = np.{T}({readj} - m)
            logp[i, j] = d
            s += np.float64(exp_{T}(d))
        ls = np.{T}(math.log(s))
        for j in range(k):
            logp[i, j] = np.{T}(logp[i, j] - ls)
        c = t[i]
        if c < 0:
            c += k
        if c < 0 or c >= k:
            return True
        out[i] = -logp[i, c]
{sum_add}{sum_end}    return False
"""
_NATIVE_BACKWARD = """\
{consts}@njit(types.boolean(R("{T}", 2), R("int64", 1), {G}, W("{T}", 2){sum_sig}), nogil=True,
      error_model="numpy", cache=True)
def {name}(logp, t, g, c{sum_args}):
    n, k = logp.shape
{sum_init}    for i in range(n):
        for j in range(k):
            c[i, j] = exp_{T}(logp[i, j])
        r = t[i] + k if t[i] < 0 else t[i]
        c[i, r] = np.{T}(c[i, r] - np.{T}(1.0))
        for j in range(k):
            c[i, j] = {scale}
{sum_add}    return False
"""


def _plain(dt: str) -> dict:
    """The kernels' fields where nothing is folded in: the logits ``z`` read as they are."""
    return {"consts": "", "in_args": "z", "in_sig": f'R("{dt}", 2)', "read0": "z[i, 0]",
            "readj": "z[i, j]", "sum_args": "", "sum_sig": "", "sum_init": "", "sum_add": "",
            "sum_end": ""}


# A device program's kernels (gpugrad.compiler.cuda_program): the same, one block's
# threads taking a row each (a batch of short rows; ``{C}``: float or double). A label out
# of range gives NaN: the host is not told (it would have to wait for the device).
_CUDA_FORWARD = """\
extern "C" __global__ void gpugrad_{name}({in_params}, const long long* t, {C}* logp,
                                         {C}* out{sum_params}, long long n, long long k) {{
    typedef {C} T;
    {sum_init}
    for (long long i = threadIdx.x; i < n; i += blockDim.x) {{
        T m = {read0};
        for (long long j = 1; j < k; ++j) {{
            const T v = {readj};
            if (v > m || v != v) {{
                m = v;
            }}
        }}
        if (!(m - m == (T)0)) {{
            m = (T)0;
        }}
        double s = 0.0;
        for (long long j = 0; j < k; ++j) {{
            const T d = {readj} - m;
            logp[i * k + j] = d;
            s += (double)exp(d);
        }}
        const T ls = (T)log(s);
        for (long long j = 0; j < k; ++j) {{
            logp[i * k + j] = logp[i * k + j] - ls;
        }}
        long long c = t[i];
        if (c < 0) {{
            c += k;
        }}
        if (c < 0 || c >= k) {{
            out[i] = (T)nan("");
        }} else {{
            out[i] = -logp[i * k + c];
        }}
        {sum_add}
    }}
    {sum_end}
}}
"""
_CUDA_BACKWARD = """\
extern "C" __global__ void gpugrad_{name}(const {C}* logp, const long long* t, {G},
                                         {C}* c{sum_params}, long long n, long long k) {{
    typedef {C} T;
    for (long long i = threadIdx.x; i < n; i += blockDim.x) {{
        for (long long j = 0; j < k; ++j) {{
            c[i * k + j] = exp(logp[i * k + j]);
        }}
        long long r = t[i];
        if (r < 0) {{
            r += k;
        }}
        if (r >= 0 && r < k) {{
            c[i * k + r] = c[i * k + r] - (T)1;
        }} else {{
            for (long long j = 0; j < k; ++j) {{
                c[i * k + j] = (T)nan("");
            }}
        }}
        for (long long j = 0; j < k; ++j) {{
            c[i * k + j] = {scale};
        }}
    }}
    {sum_end}
}}
"""
_CUDA_G = {"one": "const double g", "number": "const double g", "rows": "const {C}* g"}
_CUDA_SCALE = {"one": "c[i * k + j]", "number": "c[i * k + j] * (T)g",
               "rows": "c[i * k + j] * g[i]"}


def _cuda_plain(dt: str) -> dict:
    """The device kernels' fields where nothing is folded in (as ``_plain``)."""
    c = CTYPES[dt]
    return {"C": c, "in_params": f"const {c}* z", "read0": "z[i * k]", "readj": "z[i * k + j]",
            "sum_params": "", "sum_init": "", "sum_add": "", "sum_end": ""}


_G_TYPE = {"one": "types.float64", "number": "types.float64", "rows": 'R("{T}", 1)'}
_G_ARG = {"one": "1.0", "number": "float({g})", "rows": "np.ascontiguousarray({g})"}
_SCALE = {"one": "c[i, j]", "number": "np.{T}(c[i, j] * np.{T}(g))",
          "rows": "np.{T}(c[i, j] * g[i])"}


_CrossEntropyLowering.scalar_g = True  # its gradient is g times rows: g may be 0-d
softmax_cross_entropy.deflower(_CrossEntropyLowering)
