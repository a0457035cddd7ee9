"""Indexing: getitem (basic slicing; one integer array goes through take), take, and setitem
(the out-of-place form of ``x[key] = value`` that Tensor item assignment records).

The backward of a gather is a scatter-add, which the standard lacks. The portable rule sorts
the indices, takes a cumulative sum of the sorted gradient and reads each position's segment
with searchsorted: only gathers, so it is correct for repeated indices and needs no in-place
write. NumPy and CuPy get a fast path with ``add.at``.
"""

from ..registry import defop


def _scatter_add(xp, g, idx, n, axis):
    """out[j] = sum of g[i] over idx[i] == j along ``axis`` (length n), by gathers only."""
    idx = xp.where(idx < 0, idx + n, idx)
    order = xp.argsort(idx, stable=True)
    sorted_idx = xp.take(idx, order)
    cs = xp.cumulative_sum(xp.take(g, order, axis=axis), axis=axis, include_initial=True)
    positions = xp.arange(n, dtype=idx.dtype, device=idx.device)
    lo = xp.searchsorted(sorted_idx, positions, side="left")
    hi = xp.searchsorted(sorted_idx, positions, side="right")
    return xp.take(cs, hi, axis=axis) - xp.take(cs, lo, axis=axis)


@defop("take")
def take(xp, x, indices, *, axis=None):
    """x[..., indices, ...] along axis (axis=None flattens x first); indices of any shape
    replace that axis.  d/dx: scatter-add of g, summing repeated indices"""
    in_shape = tuple(x.shape)
    if axis is None:
        x, ax = xp.reshape(x, (-1,)), 0
    else:
        ax = axis % x.ndim if x.ndim else 0
    shape = tuple(x.shape)
    if indices.ndim == 1:
        return xp.take(x, indices, axis=ax), (shape, indices, in_shape)
    flat = xp.reshape(indices, (-1,))
    out = xp.take(x, flat, axis=ax)
    out_shape = shape[:ax] + tuple(indices.shape) + shape[ax + 1:]
    return xp.reshape(out, out_shape), (shape, flat, in_shape)


def _flat_g(xp, g, shape, idx, axis):
    ax = 0 if axis is None else axis % len(shape)
    want = shape[:ax] + (idx.shape[0],) + shape[ax + 1:]
    return (g if tuple(g.shape) == want else xp.reshape(g, want)), ax


def _take_vjp(xp, g, res, *, axis=None):
    shape, idx, in_shape = res  # shape is x's shape, flattened when axis is None
    g, ax = _flat_g(xp, g, shape, idx, axis)
    return (xp.reshape(_scatter_add(xp, g, idx, shape[ax], ax), in_shape), None)


def _native(xp, array):
    """The library module itself (numpy or cupy), whose ufuncs have ``.at``."""
    if hasattr(getattr(xp, "add", None), "at"):
        return xp
    import importlib

    return importlib.import_module(type(array).__module__.split(".")[0])


def _take_vjp_add_at(xp, g, res, *, axis=None):
    shape, idx, in_shape = res
    g, ax = _flat_g(xp, g, shape, idx, axis)
    lib = _native(xp, g)
    out = lib.zeros(shape, dtype=g.dtype)
    lib.add.at(lib.moveaxis(out, ax, 0), idx, lib.moveaxis(g, ax, 0))
    return (lib.reshape(out, in_shape), None)


take.defvjp(_take_vjp)
take.def_fast_path("numpy", vjp=_take_vjp_add_at)
take.def_fast_path("cupy", vjp=_take_vjp_add_at)


def _is_basic(k):
    return k is None or k is Ellipsis or isinstance(k, (int, slice))


def normalize_key(key, ndim):
    """A basic index key as a tuple with Ellipsis expanded; raises for anything else."""
    if not isinstance(key, tuple):
        key = (key,)
    if not all(_is_basic(k) for k in key):
        raise TypeError(
            f"getitem: index {key!r} mixes integer arrays with other indices; gpugrad "
            "differentiates basic indices (ints, slices, None, ...) and a single integer array "
            "(x[idx] or x[:, idx]); use gpugrad.take(x, idx, axis=...) for other gathers"
        )
    n_ellipsis = sum(1 for k in key if k is Ellipsis)
    if n_ellipsis > 1:
        raise IndexError("getitem: an index can only have a single ellipsis ('...')")
    used = sum(1 for k in key if k is not None and k is not Ellipsis)
    if used > ndim:
        raise IndexError(f"getitem: too many indices ({used}) for an array with {ndim} dims")
    if n_ellipsis:
        i = key.index(Ellipsis)
        key = key[:i] + (slice(None),) * (ndim - used) + key[i + 1:]
    else:
        key = key + (slice(None),) * (ndim - used)
    return key


@defop("getitem")
def getitem(xp, x, *, key):
    """x[key] for a basic key (ints, slices, None, Ellipsis);
    d/dx: g placed back at the selected positions, zeros elsewhere"""
    key = normalize_key(key, x.ndim)
    return x[key], tuple(x.shape)


def _getitem_vjp(xp, g, in_shape, *, key):
    """Undo the index one axis at a time with gathers and concats (no in-place write)."""
    key = normalize_key(key, len(in_shape))
    # Bring g back to one axis per input axis: re-insert axes removed by integer indices
    # and drop the axes that None added.
    axis = 0
    for k in key:
        if k is None:
            g = xp.squeeze(g, axis=axis)
        elif isinstance(k, int):
            g = xp.expand_dims(g, axis=axis)
            axis += 1
        else:
            axis += 1
    dims = [k for k in key if k is not None]
    for ax, k in enumerate(dims):
        n = in_shape[ax]
        if isinstance(k, int):
            k = k % n
            g = _pad(xp, g, ax, k, n - k - 1)
            continue
        start, stop, step = k.indices(n)
        if (start, stop, step) == (0, n, 1):
            continue
        picked = range(start, stop, step)
        if len(picked) == 0:
            shape = list(g.shape)
            shape[ax] = n
            g = xp.zeros(tuple(shape), dtype=g.dtype, device=g.device)
        elif step == 1:
            g = _pad(xp, g, ax, start, n - stop)
        else:
            g = _spread(xp, g, ax, picked, n)
    return (g,)


def _pad(xp, g, axis, before, after):
    parts = []
    for width in (before, None, after):
        if width is None:
            parts.append(g)
        elif width > 0:
            shape = list(g.shape)
            shape[axis] = width
            parts.append(xp.zeros(tuple(shape), dtype=g.dtype, device=g.device))
    return parts[0] if len(parts) == 1 else xp.concat(parts, axis=axis)


def _spread(xp, g, axis, picked, n):
    """Place g's entries along ``axis`` at the distinct positions ``picked``, zeros elsewhere."""
    position_of = {p: i for i, p in enumerate(picked)}
    source = [position_of.get(j, len(picked)) for j in range(n)]
    shape = list(g.shape)
    shape[axis] = 1
    padded = xp.concat([g, xp.zeros(tuple(shape), dtype=g.dtype, device=g.device)], axis=axis)
    idx = xp.asarray(source, device=g.device)
    return xp.take(padded, idx, axis=axis)


def _getitem_vjp_setitem(xp, g, in_shape, *, key):
    out = _native(xp, g).zeros(in_shape, dtype=g.dtype)
    out[key] = g
    return (out,)


getitem.defvjp(_getitem_vjp)
getitem.def_fast_path("numpy", vjp=_getitem_vjp_setitem)
getitem.def_fast_path("cupy", vjp=_getitem_vjp_setitem)


def _spelled(key) -> str | None:
    """A normalized basic key as Python index syntax (``3, 1:, ::2``; ``1, 2, ...`` where
    it picks one element, so that it gives a 0-d view), or None where a part of it is not an
    int, a slice of ints or None."""
    parts = []
    for k in key:
        if k is None or type(k) is int:
            parts.append(repr(k))
        elif type(k) is slice and all(v is None or type(v) is int
                                      for v in (k.start, k.stop, k.step)):
            a, b, c = ("" if v is None else str(v) for v in (k.start, k.stop, k.step))
            parts.append(f"{a}:{b}" + (f":{c}" if c else ""))
        else:
            return None
    while parts and parts[-1] == ":":
        parts.pop()  # trailing full slices select what they leave out
    if all(p.lstrip("-").isdigit() for p in parts):  # ints only: "..." keeps it a view,
        parts.append("...")  # where NumPy would give a scalar
    return ", ".join(parts)


class _GetitemLowering:
    """The planned program's code for a basic index: NumPy's own indexing, inline, giving
    the view the rule gives (``view=True``: left to ordinary allocation, as the rule's
    value is); its gradient, ``g`` written into zeros of the input's shape (the buffer kept
    across runs), as the NumPy rule writes it."""

    @staticmethod
    def _key(info, params):
        if info[0] is None or info[0][0] is None:
            return None
        try:
            key = normalize_key(params["key"], len(info[0][0]))
        except (TypeError, IndexError):
            return None
        return _spelled(key)

    @staticmethod
    def forward(ins, info, out, params, ctx):
        text = _GetitemLowering._key(info, params)
        if text is None:
            return None
        row = text[:-5] if text.endswith(", ...") else ""
        return ctx.Forward(lambda o, dst: [f"{o} = {ins[0]}[{text}]"], [], (), view=True,
                           part=(ins[0], int(row)) if row.isdigit() else None)

    @staticmethod
    def backward(pos, g, ins, info, o, out, params, ctx, **kw):
        text = _GetitemLowering._key(info, params)
        if text is None or kw.get("scalar_g"):
            return None

        def emit(c, C, T):
            if C == "None":  # not planned: a new array, as the rule makes
                return [f"{c} = np.zeros({info[0][0]!r}, {g}.dtype)", f"{c}[{text}] = {g}"]
            return [f"{C}.fill(0)", f"{C}[{text}] = {g}", f"{c} = {C}"]
        return [g], emit, False, []


getitem.deflower(_GetitemLowering)


@defop("setitem", scalar_ok=(1,))
def setitem(xp, x, value, *, key):
    """x with x[key] replaced by value, for a basic key (a new array: x is not written);
    d/dx = g with zeros at key, d/dvalue = g[key] (summed back to value's shape)"""
    key = normalize_key(key, x.ndim)
    out = xp.asarray(x, copy=True)
    out[key] = value
    return out, tuple(x.shape)


def _setitem_dx(xp, g, in_shape, *, key):
    key = normalize_key(key, len(in_shape))
    (covered,) = _getitem_vjp(xp, xp.ones_like(g[key]), in_shape, key=key)
    return xp.where(covered == 0.0, g, 0.0)


def _setitem_dvalue(xp, g, in_shape, *, key):
    return g[normalize_key(key, len(in_shape))]


setitem.defvjp(_setitem_dx, _setitem_dvalue)
# a basic slice is a view: a write into it goes back as x with x[key] replaced
getitem.defview(lambda src, value, *, key: (setitem, (src, value), {"key": key}))


@defop("take_along_axis")
def take_along_axis(xp, x, indices, *, axis=-1):
    """out[..., j, ...] = x[..., indices[..., j, ...], ...] along axis;
    d/dx: g added back at the picked positions (repeats accumulate)"""
    return xp.take_along_axis(x, indices, axis=axis), (tuple(x.shape), indices)


def _take_along_axis_vjp(xp, g, res, *, axis=-1):
    shape, idx = res
    ax = axis % len(shape)
    n = shape[ax]
    ones = [1] * len(shape)
    ones[ax] = n
    positions = xp.reshape(xp.arange(n, dtype=idx.dtype, device=idx.device), tuple(ones))
    idx = xp.where(idx < 0, idx + n, idx)
    lead = (slice(None),) * ax
    total = None
    for k in range(idx.shape[ax]):  # usually 1 (a class label per row)
        pick = lead + (slice(k, k + 1), ...)  # the standard needs every axis indexed
        term = xp.where(positions == idx[pick], g[pick], 0.0)
        total = term if total is None else total + term
    if total is None:
        total = xp.zeros(shape, dtype=g.dtype, device=g.device)
    return (total, None)


take_along_axis.defvjp(_take_along_axis_vjp)


def _one_per_row(x_ndim, idx, axis):
    """One index per row of a matrix along its last axis (class labels): the case the NumPy
    fast paths below take."""
    return (x_ndim == 2 and idx.ndim == 2 and axis in (1, -1) and idx.shape[1] == 1
            and idx.dtype.kind in "iu")


def _take_along_axis_numpy(xp, x, indices, *, axis=-1):
    """NumPy fast path: out[i, 0] = x[i, indices[i, 0]] by direct indexing (NumPy's
    take_along_axis builds its index arrays in Python)."""
    if _one_per_row(x.ndim, indices, axis) and indices.shape[0] == x.shape[0]:
        rows = xp.arange(x.shape[0]).reshape(-1, 1)
        return x[rows, indices], (tuple(x.shape), indices)
    return take_along_axis.forward(xp, x, indices, axis=axis)


def _take_along_axis_vjp_numpy(xp, g, res, *, axis=-1):
    """NumPy fast path: zeros with g written at the picked positions (one per row, so no
    position repeats and assignment equals accumulation)."""
    shape, idx = res
    if _one_per_row(len(shape), idx, axis) and idx.shape[0] == shape[0]:
        out = xp.zeros(shape, dtype=g.dtype)
        out[xp.arange(shape[0]).reshape(-1, 1), idx] = g
        return (out, None)
    return _take_along_axis_vjp(xp, g, res, axis=axis)


take_along_axis.def_fast_path("numpy", forward=_take_along_axis_numpy,
                              vjp=_take_along_axis_vjp_numpy)
