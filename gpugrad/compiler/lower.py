"""Pass 3b, lower: NumPy code that writes into planned buffers (``out=``), derived from
the op declarations: an elementwise op's scalar formulas (``Op.defscalar``, turned into
``out=`` chains by gpugrad.compiler.formula), or a non-elementwise op's own lowering
(``Op.deflower``: matmul, linear, the full sum). Nothing here names an op.

Each lowering computes what the op's NumPy rule computes, in the same order, so it gives
the same numbers (tests/test_compiler_rewrites.py checks the lowerings against the
portable rules). An op, or a case of it, without one runs its registered rules as before.

:func:`forward` returns a :class:`Forward` or None. :func:`backward` returns ``(reads,
emit, alias, temps)`` for the gradient of one input, or None. A full float ``sum``'s
gradient is its 0-d incoming gradient, kept 0-d (``alias == "scalar"``): the program passes
it to the backward steps that :func:`takes_scalar_g`, which broadcast it in their product,
and broadcasts it for any other reader.
"""

from __future__ import annotations

import inspect
import re
import types
from typing import Any, Callable, NamedTuple

import numpy as np

from . import formula as F
from .formula import TYPED, const  # noqa: F401  (the names programs and lowerings use)

SCALAR = ((), "scalar")
"""The info of a Python scalar operand (weak: it takes the array operand's dtype)."""


class Forward(NamedTuple):
    """A lowered forward step: ``emit(o, dst, *temps) -> lines``, its scratch buffers
    ((shape, dtype) each), and the positions of the inputs whose buffer the output may take
    (each of their elements is read before it is written). With ``saved`` (the (shape,
    dtype) of planned values it also writes, for its backward: cross-entropy's ``logp``),
    ``emit(o, dst, saved names, their buffers, temps)``; the backward gets the names."""

    emit: Callable
    temps: list
    over: tuple
    saved: list = []
    scalar: tuple | None = None  # the step as one formula over value names (see resolve)
    epilogue: tuple | None = None  # (emit of the product alone, formula over "o" after it)
    native: Any = None  # the op's own kernel for the native tier (see NativeKernel)
    view: bool = False  # its value is a view of its input: left to ordinary allocation
    total: tuple | None = None  # (the value it sums whole, emit(o, s) of the rest from the
    # sum's name s, "mean" where the rest divides by the count): where a kernel makes that
    # value, it may add it up (native_fold)
    part: tuple | None = None  # (input, i): the view is that input's row i (compiler.stack)
    product: tuple | None = None  # ("nn", a, b): it is the matrix product a @ b


class Backward(NamedTuple):
    """A lowered gradient: ``emit(c, C, T) -> lines`` reading ``reads``; ``alias`` True
    when it is ``g`` itself, ``"scalar"`` when it is a 0-d ``g`` standing for its broadcast;
    ``temps``: its scratch buffers. ``scalar``: the gradient as one formula over value names
    (see :func:`resolve`) where it is elementwise at ``g``'s shape (fusion reads it)."""

    reads: list
    emit: Callable | None
    alias: Any
    temps: list
    scalar: tuple | None = None
    native: Any = None  # the op's own kernel for the native tier (see NativeKernel)
    rows: str | None = None  # it is this value summed over its leading axes (fusion)
    product: tuple | None = None  # ("tn", a, b): it is a.T @ b; ("nt", a, b): a @ b.T (2-D)


class NativeKernel(NamedTuple):
    """An op's own kernel for the native tier (gpugrad.compiler.native), declared by its
    lowering beside the NumPy code (as ``native=`` of :class:`Forward` or
    :class:`Backward`): ``source(name)``, the numba source of a function ``name`` returning
    True where its input is out of range; ``call(name, *names)``, its call with the names
    the step's NumPy code is given (``o, dst, saved, bufs`` forward, ``c, C`` backward).

    ``rows``: the kernel reads this input (a value name), a matrix, an element at a time,
    and writes its value a row at a time (forward), or writes its value, a matrix, an
    element at a time (backward, ``True``): then ``source`` takes ``fold=``, a
    ``gpugrad.compiler.native_fold.Fold`` (the elementwise step that made that input, read
    in its place; the sum of the value, or of its columns, written too), and ``call`` takes
    ``reads=`` (the text in place of the input's argument) and ``writes=`` (after the
    arguments).

    ``cuda``: the same kernel for a device program (gpugrad.compiler.cuda_program), where
    the op has one: ``cuda(name, fold)``, the CUDA source of ``extern "C" __global__ void
    gpugrad_<name>``, whose parameters are the numba function's (arrays as pointers, a
    number as a ``double``) and then the matrix's row and column counts; it runs as one
    block of :data:`gpugrad.compiler.cuda_program.OP_BLOCK` threads (a loss's rows are a
    batch of short rows). Called by the same lines as the numba function, it returns
    False: a device kernel reports nothing to the host (an out-of-range input gives NaN)."""

    source: Callable
    call: Callable
    rows: Any = None
    cuda: Callable | None = None


def resolve(node: tuple, names: dict, params: dict, negated: str | None = None) -> tuple:
    """``node`` with each name replaced by the value it reads (``("name", value name)``)
    and each static parameter by its number; ``negated``: that input holds minus its value,
    so the formula's ``-name`` reads it as it is. KeyError where a parameter is no number.

    >>> resolve(F.parse("g * (1 - out)"), {"g": "g1", "out": "v2"}, {})
    ('multiply', ('name', 'g1'), ('subtract', ('const', 1.0), ('name', 'v2')))
    """
    if negated is not None and node == ("negative", ("name", negated)):
        return ("name", names[negated])
    if node[0] == "name":
        if node[1] in names:
            return ("name", names[node[1]])
        value = params[node[1]]
        if type(value) not in (int, float):
            raise KeyError(node[1])
        return ("const", float(value))
    if node[0] == "const":
        return node
    return (node[0], *(resolve(a, names, params, negated) for a in node[1:]))


def column_sum(g: str, gshape: tuple, dtype: Any, c: str, C: str) -> list:
    """Lines writing ``sum(g, axis=0)`` of a 2-D float32 or float64 ``g`` into ``c``: the
    matrix-vector product ``ones @ g``, one BLAS call, where it applies (the bias gradient
    of a linear layer; 0.7 against 1.9 µs at 32x64, 12 against 25 µs at 256x512 float32,
    on 2026-12-02). The sum is the same up to rounding (BLAS adds in another order); other
    shapes and dtypes use ``add.reduce``. The vector of ones is named by its length and
    dtype (``ONES32_float32``) and made for each program's own env (:func:`vectors_in`), so
    what a program computes never depends on what the process compiled before."""
    if len(gshape) != 2 or getattr(dtype, "char", "") not in ("f", "d"):
        return [f"{c} = np.add.reduce({g}, axis=0, out={C})"]
    return [f"{c} = np.dot(ONES{gshape[0]}_{dtype.name}, {g}, {C})"]


SIZED = re.compile(r"\b(ONES|AR|INTP|NF|INV)(\d+)((?:_float(?:16|32|64))?)\b")
"""The names of values made from a size ``n`` (:func:`sized`): in a program independent of
the batch size (gpugrad.compiler.batch) they are made per batch size instead."""


def sized(prefix: str, n: int, suffix: str) -> Any:
    """The value a sized name stands for: ``ONES{n}_{dtype}`` a read-only vector of ones,
    ``AR{n}`` the row numbers ``arange(n)``, ``INTP{n}`` the count ``n`` as NumPy's intp,
    ``NF{n}`` it as a Python float, ``INV{n}_{dtype}`` its reciprocal in that dtype (as
    the dtype's 1 divided by the int ``n``)."""
    if prefix == "AR":
        return np.arange(n)
    if prefix == "INTP":
        return np.intp(n)
    if prefix == "NF":
        return float(n)
    dtype = np.dtype(suffix[1:])
    if prefix == "INV":
        return dtype.type(dtype.type(1.0) / n)
    ones = np.ones(n, dtype)
    ones.flags.writeable = False
    return ones


def vectors_in(source: str) -> dict:
    """The values of the sized names (:data:`SIZED`) that a program's ``source`` names, for
    its env: ones (``ONES3_float64``), row numbers (``AR3``, ``arange(3)``), counts as
    NumPy's ``intp`` (``INTP3``) and as floats (``NF3``), and reciprocals (``INV3_float32``).

    >>> vectors_in("c = np.dot(ONES3_float64, g, C); g[AR3, t]")["ONES3_float64"].tolist()
    [1.0, 1.0, 1.0]
    """
    return {m.group(0): sized(m.group(1), int(m.group(2)), m.group(3))
            for m in SIZED.finditer(source)}


def _same(info: list, dtype: Any) -> bool:
    return all(i is not None and (i[1] == dtype or i is SCALAR) for i in info) \
        and any(i is not SCALAR for i in info)


def argnames(op: Any) -> list:
    """The names of the op rule's array parameters (as its formulas name them)."""
    ps = list(inspect.signature(op.forward).parameters.values())[1:]
    return [p.name for p in ps if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _formula(text: str | None, dtype: Any) -> tuple | None:
    node = F.parse(text) if text else None
    if node is None or (getattr(dtype, "kind", "") != "f" and any(
            n[0] == "const" for n in _nodes(node))):
        return None  # a number in an integer formula would change its dtype
    return node


def stated(op: Any, node: tuple, params: dict) -> dict | None:
    """``params`` with the rule's defaults of the static parameters not given (the numbers
    ``op``'s formula ``node`` reads), or None where the formula does not state the op at
    ``params``: a static parameter it does not name is not at its default (gelu's formula
    is its ``approximate="none"`` form; the tanh form runs the rules).

    >>> import gpugrad as gg
    >>> gelu, softplus = gg.ops.registry["gelu"], gg.ops.registry["softplus"]
    >>> stated(gelu, F.parse(gelu.scalar[0]), {"approximate": "tanh"}) is None
    True
    >>> sorted(stated(softplus, F.parse(softplus.scalar[0]), {"beta": 2.0}).items())
    [('beta', 2.0), ('threshold', 20.0)]
    """
    named, sig = F.leaves(node), inspect.signature(op.forward).parameters
    if not all(k in named or (k in sig and sig[k].default == v) for k, v in params.items()):
        return None
    return {**{k: p.default for k, p in sig.items() if p.kind is p.KEYWORD_ONLY
               and p.default is not p.empty}, **params}


def _nodes(node: tuple):
    yield node
    if not F.is_leaf(node):
        for a in node[1:]:
            yield from _nodes(a)


def forward(op: Any, ins: list, info: list, out: tuple, params: dict,
            negated: bool = False) -> Forward | None:
    """The lowered forward of ``op`` into its planned buffer, or None. ``negated``: its
    single input holds minus its value (see :func:`starts_negated`)."""
    shape, dtype = out
    if op.lowering is not None:
        em = getattr(op.lowering, "forward", None)
        if negated and getattr(op.lowering, "reads_negated", False):
            em = em and em(ins, info, out, params, CTX, negated=True)
        else:
            em = em and em(ins, info, out, params, CTX)
        if em is None or isinstance(em, Forward):
            return em
        return Forward(lambda o, dst, *T: em(o, dst), [], ())
    if op.scalar is None or not shape or not _same(info, dtype):
        return None
    node = _formula(op.scalar[0], dtype)
    params = stated(op, node, params) if node is not None else None
    if params is None:
        return None
    names = dict(zip(argnames(op), ins))
    kw = {"negated": argnames(op)[0] if negated else None}
    try:
        n = F.count_temps(node, names, dtype, params, **kw)
        lines = F.emit(node, names, dtype, params, "o", "D", [f"T{j}_" for j in range(n)], **kw)
    except KeyError:
        return None
    # an input may share the output's buffer if nothing reads it after the first write
    head = next(j for j, line in enumerate(lines) if line.startswith("o = "))
    over = tuple(k for k, i in enumerate(ins) if i is not None and not any(
        re.search(rf"\b{i}\b", line) for line in lines[head + 1:]))
    return Forward(lambda o, dst, *T: F.emit(node, names, dtype, params, o, dst, list(T),
                                             **kw), [out] * n, over,
                   scalar=resolve(node, names, params, kw["negated"]))


def starts_negated(op: Any) -> bool:
    """Whether ``op``'s forward formula starts by negating its single input (``-x``, read
    nowhere else, nor by its gradient): a producer that can write minus its value
    (``lowering.negated``) then saves that pass."""
    node = F.parse(op.scalar[0]) if op.scalar is not None else None
    if node is None or len(argnames(op)) != 1:
        return False
    x = ("name", argnames(op)[0])
    backs = [F.parse(v or "") for v in op.scalar[1]]
    return node != ("negative", x) and ("negative", x) in _nodes(node) \
        and sum(n == x for n in _nodes(node)) == 1 \
        and all(b is not None and x[1] not in F.leaves(b) for b in backs)


def takes_scalar_g(op: Any) -> bool:
    """Whether ``op``'s lowered backward takes a 0-d ``g`` standing for its broadcast to the
    output's shape (a full sum's gradient): a one-input op whose gradient is ``g`` times
    something of the output's shape, which NumPy broadcasts ``g`` against (or a lowering
    that says so, ``scalar_g``)."""
    if getattr(op.lowering, "scalar_g", False):
        return True
    if op.scalar is None or len(op.scalar[1]) != 1:
        return False
    node = F.parse(op.scalar[1][0] or "")
    return node is not None and node[0] == "multiply" and F.G in node[1:] \
        and "g" not in F.leaves(node[2] if node[1] == F.G else node[1])


def _reduce_axes(gshape: tuple, shape: tuple) -> tuple | None:
    """Axes to sum ``g`` over to get ``shape`` in one reduce (leading axes only), () when
    the shapes match, None when one reduce cannot do it."""
    if gshape == shape:
        return ()
    lead = len(gshape) - len(shape)
    if lead > 0 and shape and gshape[lead:] == shape:
        return tuple(range(lead))
    if lead == 0 and shape:
        axes = tuple(i for i, (d, e) in enumerate(zip(shape, gshape)) if d == 1 and e != 1)
        if all(d == e for i, (d, e) in enumerate(zip(shape, gshape)) if i not in axes):
            return axes
    return None


def backward(op: Any, pos: int, g: str, ins: list, info: list, o: str,
             out: tuple, params: dict, one: bool = False, saved: tuple = (),
             scalar_g: bool = False) -> tuple | None:
    """``(reads, emit(c, C, T), alias, temps)`` for d/d(input ``pos``) given ``g``, or None.
    ``T`` is a list of temp expressions. ``alias`` is True when the gradient is ``g`` itself,
    and ``"scalar"`` when it is the 0-d ``g`` standing for its broadcast (a full sum).
    ``one``: ``g`` is exactly 1, so the last product by it is left out (exact). ``saved``:
    the names of the values the forward saved; ``scalar_g``: ``g`` is a 0-d stand-in."""
    gshape, dtype = out
    if op.lowering is not None:
        em = getattr(op.lowering, "backward", None)
        kw = {"saved": saved} if saved else {}
        text = em and em(pos, g, ins, info, o, out, params, CTX, one=one, scalar_g=scalar_g,
                         **kw)
        if not isinstance(text, str):
            return text if text is None or isinstance(text, Backward) else Backward(*text)
    elif op.scalar is not None and pos < len(op.scalar[1]):
        text = op.scalar[1][pos]
    else:
        return None
    node = _formula(text, dtype)
    if node is not None and op.lowering is None:
        params = stated(op, node, params)
        node = None if params is None else node
    shape = info[pos][0]
    axes = _reduce_axes(gshape, shape) if node is not None else None
    if axes is None:
        return None
    names = {"g": g, "out": o, **dict(zip(argnames(op), ins))}
    red = f"axis={axes}, keepdims={bool(axes) and len(shape) == len(gshape)}"
    neg = node == ("negative", F.G)
    if node == F.G or neg:
        if not axes:  # the gradient is g itself, or its negation
            if neg:
                return Backward([g], lambda c, C, T: [f"{c} = np.negative({g}, {C})"], False,
                                [], ("negative", ("name", g)))
            return Backward([g], lambda c, C, T: [f"{c} = {g}"], True, [])

        def total(c: str, C: str) -> list:
            if axes == (0,) and len(gshape) == 2 and len(shape) == 1:  # a bias: one BLAS call
                return column_sum(g, gshape, dtype, c, C)
            return [f"{c} = np.add.reduce({g}, {red}, out={C})"]
        # -(sum of g) is exactly the sum of -g (rounding is symmetric): negate once, after
        if neg:
            return Backward([g], lambda c, C, T: [*total(c, C), f"np.negative({c}, {c})"],
                            False, [])
        lead = len(gshape) - len(shape)
        rows = g if lead > 0 and axes == tuple(range(lead)) else None
        return Backward([g], lambda c, C, T: total(c, C), False, [], rows=rows)
    skip = one and F.G in node[1:] and node[0] == "multiply"
    try:
        n = F.count_temps(node, names, dtype, params, skip_g=skip)
        F.emit(node, names, dtype, params, "c", "C", [f"T{j}_" for j in range(n)], skip_g=skip)
    except KeyError:
        return None
    reads = [names[v] for v in sorted(F.leaves(node)) if v in names]
    if not axes:
        return Backward(reads, lambda c, C, T: F.emit(node, names, dtype, params, c, C,
                                                      list(T), skip_g=skip), False,
                        [out] * n, resolve(node, names, params))

    def reduced(c: str, C: str, T: list) -> list:  # at g's shape in T[0], then summed
        lines = F.emit(node, names, dtype, params, T[0], T[0], list(T[1:]), skip_g=skip)
        return lines + [f"{c} = np.add.reduce({T[0]}, {red}, out={C})"]
    return Backward(reads, reduced, False, [out] * (n + 1))


CTX = types.SimpleNamespace(const=const, column_sum=column_sum, SCALAR=SCALAR,
                            reduce_axes=_reduce_axes, Forward=Forward, Backward=Backward,
                            NativeKernel=NativeKernel)
"""What an op's own lowering (``Op.deflower``) is handed: the helpers it writes code with."""
