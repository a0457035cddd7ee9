"""CuPy fast paths generated from the ops' scalar formulas (``Op.defscalar``).

Every elementwise op whose forward and VJP formulas parse (gpugrad.scalar_formula) gets a
"cupy" fast path: one ``ElementwiseKernel`` for the forward and one per input's VJP, their
bodies written from the formulas (:func:`generated`). Nothing here imports CuPy until a CuPy
array arrives; each kernel compiles on first use. An op that has a hand-written "cupy" fast
path keeps it. Kernels compile with ``--fmad=false``: each ``*`` and ``+`` rounds on its own,
as NumPy's steps do.

The kernels run on float32 and float64 arrays of one dtype; anything else (complex, float16,
integers, Python scalars, mixed dtypes, static parameters) runs the portable rule. On its
first use an op's portable rule runs once on one-element arrays, and shows which of its
inputs and output it saves for the backward (:func:`saved_names`): the fast forward saves
the same (a compiled program may pair it with the portable VJP), and the fast VJP reads them
by name. A VJP formula naming ``out`` where the rule saves only the inputs computes it from
the forward formula. Every call on the user's data, the first included, runs the kernel, so
results never depend on what ran before.

>>> src = generated(registry["sigmoid"]).forward
>>> src.operation
'v_out = ((T)1.0 / (exp((-v_x)) + (T)1.0));'
>>> print(raw_source(src, "float").splitlines()[2])
extern "C" __global__ void gpugrad_sigmoid_fwd(const T* p_x, T* p_out, unsigned long long n) {
>>> generated(registry["softplus"]) is None  # it names static parameters: the rule runs
True
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, NamedTuple

from .. import hooks
from ..registry import Op, registry
from ..scalar_formula import c_name, cuda, is_leaf, leaves, parse, substitute

OPTIONS = ("--fmad=false",)
"""NVRTC options of every generated kernel."""


class Source(NamedTuple):
    """An ElementwiseKernel's arguments: ``ElementwiseKernel(*source, options=OPTIONS)``."""

    in_params: str
    out_params: str
    operation: str
    name: str


class Generated(NamedTuple):
    """An op's parsed formulas: its input names, the forward tree and each input's VJP tree
    (None where the input has no gradient)."""

    op: str
    inputs: tuple
    tree: tuple
    vjps: tuple

    @property
    def forward(self) -> Source:
        ins = ", ".join(f"T {c_name(n)}" for n in self.inputs)
        return Source(ins, "T v_out", f"v_out = {cuda(self.tree)};", f"gpugrad_{self.op}_fwd")

    def vjp(self, k: int, saved: frozenset) -> Source | str | None:
        """Input ``k``'s VJP from ``g`` and the ``saved`` names: its kernel's source, the
        name it is equal to (``g`` for add), or None if it needs a name that is not saved."""
        tree = self.vjps[k]
        if tree is None:
            return None
        if "out" in leaves(tree) and "out" not in saved:
            tree = substitute(tree, "out", self.tree)
        names = leaves(tree)
        if not names <= saved | {"g"}:
            return None
        if tree[0] == "name":
            return tree[1]
        if is_leaf(tree):
            return None
        ordered = ["g", *sorted(names - {"g"})] if "g" in names else sorted(names)
        ins = ", ".join(f"T {c_name(n)}" for n in ordered)
        return Source(ins, "T v_r", f"v_r = {cuda(tree)};", f"gpugrad_{self.op}_vjp{k}")


def arg_names(params: str) -> list:
    """The formula names of an ElementwiseKernel's parameter list (``"T v_g, T v_x"``)."""
    return [p.split()[1][2:] for p in params.split(", ")]


def raw_source(source: Source, ctype: str) -> str:
    """The complete CUDA source of ``source``'s kernel for ``T`` = ``ctype`` (``float`` or
    ``double``), one element per thread: what CuPy builds around the same operation, for
    compiling without CuPy or a device (NVRTC in the tests)."""
    ins, outs = arg_names(source.in_params), arg_names(source.out_params)
    params = [*(f"const T* p_{n}" for n in ins), *(f"T* p_{n}" for n in outs)]
    return "\n".join([
        f"typedef {ctype} T;",
        "",
        f'extern "C" __global__ void {source.name}({", ".join(params)}, unsigned long long n) {{',
        "    unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x;",
        "    if (i >= n) return;",
        *(f"    const T {c_name(n)} = p_{n}[i];" for n in ins),
        *(f"    T {c_name(n)};" for n in outs),
        f"    {source.operation}",
        *(f"    p_{n}[i] = {c_name(n)};" for n in outs),
        "}",
        ""])


def generated(op: Op) -> Generated | None:
    """The op's formulas as kernel sources, or None where they do not all parse (or name
    something other than the inputs, ``g`` and ``out``)."""
    if op.scalar is None or op.variadic or not op.differentiable:
        return None
    params = list(inspect.signature(op.forward).parameters.values())[1:]
    inputs = tuple(p.name for p in params if p.kind in (p.POSITIONAL_ONLY,
                                                        p.POSITIONAL_OR_KEYWORD))
    forward, vjps = op.scalar
    tree = parse(forward)
    if tree is None or not leaves(tree) <= set(inputs) or len(vjps) != len(inputs):
        return None
    trees = tuple(None if f is None else parse(f) for f in vjps)
    for f, t in zip(vjps, trees):
        if f is not None and (t is None or not leaves(t) <= {*inputs, "g", "out"}):
            return None
    return Generated(op.name, inputs, tree, trees)


def saved_names(gen: Generated, arrays: tuple, out: Any, res: Any) -> Any:
    """What the portable forward saved, by name: None, a name, or a tuple of names (each an
    input's or ``"out"``); False if it saved anything else, None also where two arguments
    are one array (the names cannot be told apart there: ask again on another call)."""
    objs = (*arrays, out)
    if len({id(o) for o in objs}) < len(objs):
        return None
    names = (*gen.inputs, "out")

    def name(r: Any) -> str:
        for o, n in zip(objs, names):
            if r is o:
                return n
        raise LookupError

    try:
        if res is None:
            return ()
        if isinstance(res, (tuple, list)):
            return tuple(name(r) for r in res)
        return name(res)
    except LookupError:
        return False


def _rebuild(layout: Any, env: dict) -> Any:
    if layout == ():
        return None
    if isinstance(layout, str):
        return env[layout]
    return tuple(env[n] for n in layout)


def _read(layout: Any, res: Any) -> dict:
    if layout == ():
        return {}
    if isinstance(layout, str):
        return {layout: res}
    return dict(zip(layout, res))


def is_cupy_array(a: Any) -> bool:
    module = type(a).__module__
    return module == "cupy" or module.startswith("cupy.")


def _dtype(arrays: Any) -> Any:
    """The one float32/float64 dtype of ``arrays`` if all are CuPy arrays, else None."""
    dt = None
    for a in arrays:
        if not is_cupy_array(a) or (dt is not None and a.dtype != dt):
            return None
        dt = a.dtype
    return dt if dt is not None and dt.kind == "f" and dt.itemsize in (4, 8) else None


@functools.cache
def kernel(source: Source) -> Any:
    """The compiled kernel of ``source`` (CuPy imported here, on first use)."""
    import cupy

    return cupy.ElementwiseKernel(*source, options=OPTIONS)


class _FastPath:
    """One op's generated "cupy" fast path (forward, and its VJP or per-input VJPs)."""

    def __init__(self, op: Op, gen: Generated) -> None:
        self.op, self.gen = op, gen
        self.layout: Any = None  # saved_names, once learned
        self.vjp_sources: tuple = ()

    def forward(self, xp: Any, *arrays: Any, **params: Any) -> tuple:
        layout = self.layout
        if params or layout is False or _dtype(arrays) is None:
            return self.op.forward(xp, *arrays, **params)
        if layout is None:
            layout = self.learn(self.probe(xp, arrays[0].dtype))
            if layout is False:
                return self.op.forward(xp, *arrays)
        out = kernel(self.gen.forward)(*arrays)
        return out, _rebuild(layout, dict(zip(self.gen.inputs, arrays), out=out))

    def probe(self, xp: Any, dtype: Any) -> Any:
        """What the portable forward saves (:func:`saved_names`), read from one run on
        one-element arrays, so that every call on the user's data runs the kernel."""
        arrays = tuple(xp.full((1,), 0.5, dtype=dtype) for _ in self.gen.inputs)
        out, res = self.op.forward(xp, *arrays)
        return saved_names(self.gen, arrays, out, res)

    def learn(self, layout: Any) -> Any:
        if layout is not None and layout is not False:
            saved = frozenset(layout if isinstance(layout, tuple) else (layout,))
            self.vjp_sources = tuple(self.gen.vjp(k, saved)
                                     for k in range(len(self.gen.inputs)))
        self.layout = layout
        return layout

    def grad(self, k: int, xp: Any, g: Any, res: Any, params: dict) -> Any:
        """Input ``k``'s gradient by its kernel, or NotImplemented where it has none here."""
        if params or self.layout is None or self.layout is False:
            return NotImplemented
        src = self.vjp_sources[k]
        if src is None:
            return NotImplemented
        env = _read(self.layout, res)
        env["g"] = g
        if isinstance(src, str):
            return env[src] if _dtype((g, env[src])) is not None else NotImplemented
        args = [env[n] for n in arg_names(src.in_params)]
        if _dtype(args) is None:
            return NotImplemented
        return kernel(src)(*args)

    def vjp(self, xp: Any, g: Any, res: Any, **params: Any) -> tuple:
        grads = [self.grad(k, xp, g, res, params) for k in range(len(self.gen.inputs))]
        if any(gi is NotImplemented for gi in grads):
            return self.op.vjp(xp, g, res, **params)
        return tuple(grads)

    def vjp_rule(self, k: int) -> Any:
        rule = self.op.vjps[k]

        def vjp_k(xp: Any, g: Any, res: Any, **params: Any) -> Any:
            gi = self.grad(k, xp, g, res, params)
            return rule(xp, g, res, **params) if gi is NotImplemented else gi

        return vjp_k


def install(op: Op) -> bool:
    """Register the op's generated "cupy" fast path, if its formulas give one and it has no
    hand-written one. Returns whether it did."""
    mine = getattr(op.fast_forward.get("cupy"), "__self__", None)
    if isinstance(mine, _FastPath):  # formulas declared again: derive again
        op.fast_forward.pop("cupy")
        op.fast_vjp.pop("cupy", None)
        op.fast_vjps.pop("cupy", None)
    if "cupy" in op.fast_forward or "cupy" in op.fast_vjp or "cupy" in op.fast_vjps:
        return False
    gen = generated(op)
    if gen is None:
        return False
    fast = _FastPath(op, gen)
    if op.vjps is not None:
        rules = tuple(None if r is None else fast.vjp_rule(k) for k, r in enumerate(op.vjps))
        op.def_fast_path("cupy", forward=fast.forward, vjps=rules)
    elif op.vjp is not None:
        op.def_fast_path("cupy", forward=fast.forward, vjp=fast.vjp)
    else:
        return False
    return True


for _op in list(registry.values()):
    install(_op)
hooks.scalar_declared = install
