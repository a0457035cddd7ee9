"""An optimizer's update, declared once as an elementwise formula, and what derives from it.

An optimizer class with an elementwise update (gg.optim's SGD, Adam, AdamW, RMSprop,
Adagrad) declares, in its own class body and nowhere else:

- ``options(self) -> dict``: the switches that change the formula's shape (booleans);
- ``scalars(self, t) -> dict``: the scalar hyperparameters of a parameter's ``t``-th update;
- ``formula(x, o, c, p, g, s) -> dict`` (a staticmethod): the new ``"p"`` and the new value
  of each state array, from the parameter ``p``, its gradient ``g``, its state ``s.<name>``
  and the scalars ``c.<name>``, with ``x.sqrt``; ``o`` holds the options and ``o.first``
  (the parameter has no state yet);
- optionally ``initial(self) -> dict`` (a state's first value; 0 otherwise) and
  ``counts_steps`` (``t`` counts each parameter's own updates).

From the formula, :func:`form` derives by tracing: the state names, the in-place NumPy code
(through as few scratch buffers as the formula needs), the CuPy ElementwiseKernel source and
whether the update is plain ``p - lr * g``; :func:`portable` evaluates it on any array-API
namespace (complex values as two real parameters, as PyTorch does). Scalar-only parts of the
formula are computed once per call in Python floats, on every path alike.

>>> import gpugrad as gg
>>> f = form(gg.optim.SGD.formula, (("decay", True), ("momentum", False),
...                                 ("nesterov", False)), False)
>>> f.names, f.temps, f.fold
((), 1, False)
>>> f.prologue({"weight_decay": 0.5, "lr": 0.1})
(0.5, 0.1)
>>> print(f.source)
def update(P, G, S, T, h):
    h2, h5, = h
    T0 = T[0]
    np.multiply(h2, P, T0)
    np.add(G, T0, T0)
    np.multiply(h5, T0, T0)
    np.subtract(P, T0, P)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from . import backend as B
from .compiler.codegen import build

_UFUNC = {"add": "add", "sub": "subtract", "mul": "multiply", "div": "divide",
          "neg": "negative", "sqrt": "sqrt"}
_PY = {"add": "+", "sub": "-", "mul": "*", "div": "/"}


class Sym:
    """A traced value: a leaf (``"p"``, ``"g"``, a state, a scalar ``c``, a constant) or an
    operation on others. ``array``: it depends on an array."""

    __slots__ = ("args", "array", "index", "nodes", "op")

    def __init__(self, nodes: list, op: str, args: tuple, array: bool) -> None:
        self.nodes, self.op, self.args, self.array = nodes, op, args, array
        self.index = len(nodes)
        nodes.append(self)

    def _lift(self, v: Any) -> Sym:
        return v if isinstance(v, Sym) else Sym(self.nodes, "k", (float(v),), False)

    def _bin(self, op: str, a: Any, b: Any) -> Sym:
        a, b = self._lift(a), self._lift(b)
        return Sym(self.nodes, op, (a, b), a.array or b.array)

    def __neg__(self) -> Sym:
        return Sym(self.nodes, "neg", (self,), self.array)


def _binary(op: str, flipped: bool) -> Callable:
    def method(self: Sym, o: Any) -> Sym:
        return self._bin(op, o, self) if flipped else self._bin(op, self, o)
    return method


for _name, _op in (("add", "add"), ("sub", "sub"), ("mul", "mul"), ("truediv", "div")):
    setattr(Sym, f"__{_name}__", _binary(_op, False))
    setattr(Sym, f"__r{_name}__", _binary(_op, True))


class _Names:
    """Attribute access for the formula: ``c.lr``, ``s.m``, ``o.momentum``."""

    def __init__(self, get: Callable) -> None:
        object.__setattr__(self, "_get", get)

    def __getattr__(self, name: str) -> Any:
        return self._get(name)


class _SymMath:
    @staticmethod
    def sqrt(a: Sym) -> Sym:
        return Sym(a.nodes, "sqrt", (a,), a.array)


class _XpMath:
    def __init__(self, xp: Any) -> None:
        self.xp = xp

    def sqrt(self, a: Any) -> Any:
        return math.sqrt(a) if isinstance(a, float) else self.xp.sqrt(a)


class Form:
    """One traced shape of a formula: ``names`` (the state arrays, in order), ``prologue``
    (``prologue(c)``: the scalars the array code reads, computed from the hyperparameters
    ``c``), ``fn`` (the in-place NumPy update ``fn(P, G, S, T, prologue(c))`` with ``temps``
    scratch arrays), ``source`` (its text), ``kernel`` (CuPy: in/out parameter lists and
    body) and ``fold`` (the update is ``p - lr * g`` with no state, so a compiled program
    may start backward from ``lr``)."""

    __slots__ = ("first", "fn", "fold", "kernel", "names", "prologue", "scalars", "source",
                 "temps")

    def element(self) -> tuple[str, list, int]:
        """The element update as the compiled kernels take it (gpugrad.compiler's
        native_update and cuda_update): ``kernel``'s body (lines ``T n4 = (h2 * S0);``,
        ``P = n25;``), the per-step scalars it reads (``h2``, ...: ``kernel``'s in
        parameters after ``G``) and the number of state arrays (its out parameters after
        ``P``)."""
        ins, outs, body = self.kernel[:3]
        return body, [x.split()[-1] for x in ins.split(",")[1:]], len(outs.split(",")) - 1


@functools.cache
def form(formula: Callable, options: tuple, first: bool) -> Form:
    """Trace ``formula`` under ``options`` ((name, value) pairs) and derive its code."""
    nodes: list = []
    p = Sym(nodes, "p", (), True)
    g = Sym(nodes, "g", (), True)
    states: dict = {}

    def state(name: str) -> Sym:
        if name not in states:
            states[name] = Sym(nodes, "s", (name,), True)
        return states[name]

    consts: dict = {}

    def scalar(name: str) -> Sym:
        if name not in consts:
            consts[name] = Sym(nodes, "c", (name,), False)
        return consts[name]

    opts = dict(options, first=first)
    out = formula(_SymMath, _Names(opts.__getitem__), _Names(scalar), p, g, _Names(state))
    names = tuple(k for k in out if k != "p")
    unknown = set(states) - set(names)
    if unknown or "p" not in out:
        raise ValueError(f"{formula.__qualname__}: returns no new value for "
                         f"{sorted(unknown) or ['p']}")
    f = Form()
    f.names, f.first = names, first
    targets = {"P": out["p"], **{f"S{i}": out[k] for i, k in enumerate(names)}}
    leaf = {id(p): "P", id(g): "G", **{id(states[k]): f"S{i}" for i, k in enumerate(names)
                                      if k in states}}
    f.source, f.temps, f.scalars, f.kernel = _emit(nodes, targets, leaf)
    f.prologue = f.kernel[3]
    f.fn = _compile(f.source)
    lr_g = out["p"].args[1] if out["p"].op == "sub" else None
    f.fold = not names and out["p"].args[0] is p and lr_g is not None and lr_g.op == "mul" \
        and {id(a) for a in lr_g.args} == {id(g), id(consts.get("lr"))}
    return f


def _compile(source: str) -> Callable:
    """The ``update`` function of ``source`` (its lines shown by tracebacks and pdb, as
    every generated module's are: gpugrad.compiler.listing)."""
    return build(source, {"np": np, "math": math}, "update")


def _emit(nodes: list, targets: dict, leaf: dict) -> tuple:
    """The in-place NumPy source, its scratch count, the hoisted scalars' prologue and the
    CuPy kernel parts (in params, out params, body)."""
    scal, body, cuda = [], [], []
    ref: dict = {}  # node index -> how later code names it (NumPy)
    cref: dict = {}  # the same for the kernel
    used = {a.index for n in nodes for a in n.args if isinstance(a, Sym)}
    last = {}  # node index -> the last node reading it
    for n in nodes:
        for a in n.args:
            if isinstance(a, Sym):
                last[a.index] = n.index
    final = {}  # node index -> targets it is the new value of
    for t, n in targets.items():
        final.setdefault(n.index, []).append(t)
        last[n.index] = len(nodes)  # kept to the end
    holds = {leaf[id(n)]: n.index for n in nodes if leaf.get(id(n), "G") != "G"}
    written: set = set()  # targets holding their new value
    copies = []
    hoisted = []
    ntemps = 0
    for n in nodes:
        i = n.index
        if n.op in ("p", "g", "s"):
            ref[i] = cref[i] = leaf.get(id(n), "G")
            continue
        if not n.array:
            name = f"h{i}"
            if n.op == "c":
                scal.append(f'{name} = c["{n.args[0]}"]')
            elif n.op == "k":
                scal.append(f"{name} = {n.args[0]!r}")
            elif n.op == "neg":
                scal.append(f"{name} = -{ref[n.args[0].index]}")
            elif n.op == "sqrt":
                scal.append(f"{name} = math.sqrt({ref[n.args[0].index]})")
            else:
                a, b = (ref[x.index] for x in n.args)
                scal.append(f"{name} = {a} {_PY[n.op]} {b}")
            ref[i] = name
            if i in used and any(m.array and any(a is n for a in m.args) for m in nodes):
                hoisted.append(name)
            cref[i] = name
            continue

        def free(buf: str, i: int = i) -> bool:
            held = holds.get(buf)
            return held is None or last.get(held, -1) <= i

        dst = None
        for t in final.get(i, []):
            if t not in written and free(t):
                dst = t
                break
        if dst is None:
            goal = last.get(i, -1)
            mine = [t for t in targets if t not in written and free(t)
                    and goal <= targets[t].index]
            temps = [f"T{k}" for k in range(ntemps) if free(f"T{k}")]
            dst = (mine or temps or [None])[0]
            if dst is None:
                dst = f"T{ntemps}"
                ntemps += 1
        args = [ref[a.index] for a in n.args]
        body.append(f"np.{_UFUNC[n.op]}({', '.join(args)}, {dst})")
        cargs = [cref[a.index] for a in n.args]
        expr = (f"sqrt({cargs[0]})" if n.op == "sqrt" else f"(-{cargs[0]})" if n.op == "neg"
                else f"({cargs[0]} {_PY[n.op]} {cargs[1]})")
        cuda.append(f"T n{i} = {expr};")
        ref[i], cref[i] = dst, f"n{i}"
        holds[dst] = i
        for t in final.get(i, []):
            if t == dst:
                written.add(t)
            else:
                copies.append((t, i))
    for t, n in targets.items():
        if t not in written and (t, n.index) not in copies:
            copies.append((t, n.index))
    for t, i in copies:
        if ref[i] != t:
            body.append(f"np.copyto({t}, {ref[i]})")
    nstates = sum(1 for t in targets if t != "P")
    lines = ["def update(P, G, S, T, h):"]
    if hoisted:
        lines.append(f"    {''.join(h + ', ' for h in hoisted)}= h")
    if nstates:
        lines.append(f"    {''.join(f'S{k}, ' for k in range(nstates))}= S")
    if ntemps:
        lines += [f"    T{k} = T[{k}]" for k in range(ntemps)]  # (more may be given)
    lines += ["    " + s for s in body]
    pro = ["def scalars(c):", *("    " + s for s in scal),
           f"    return ({''.join(h + ', ' for h in hoisted)})"]
    outs = ", ".join(f"T {t}" for t in targets)
    ins = ", ".join(["T G", *(f"T {h}" for h in hoisted)])
    assign = [f"{t} = {cref[n.index]};" for t, n in targets.items()]
    kernel = (ins, outs, "\n".join(cuda + assign), _compile_named(pro, "scalars"))
    return "\n".join(lines), ntemps, hoisted, kernel


def _compile_named(lines: list, name: str) -> Callable:
    return build("\n".join(lines), {"math": math}, name)


def portable(formula: Callable, options: tuple, first: bool, xp: Any, P: Any, g: Any,
             state: dict, names: tuple, c: dict) -> dict:
    """The formula on arrays of namespace ``xp``: the new values by name (``"p"`` and each
    of ``names``). Complex values are two real parameters (their real and imaginary parts),
    as in PyTorch's optimizers."""
    o = _Names(dict(options, first=first).__getitem__)
    cs = _Names(c.__getitem__)
    x = _XpMath(xp)
    if not B.is_complex(xp, P.dtype):
        return formula(x, o, cs, P, g, _Names(state.__getitem__))
    parts = []
    for part in (xp.real, xp.imag):
        st = {k: part(state[k]) for k in names}
        parts.append(formula(x, o, cs, part(P), part(g), _Names(st.__getitem__)))
    dt = P.dtype
    return {k: xp.astype(parts[0][k], dt) + xp.astype(parts[1][k], dt) * 1j
            for k in parts[0]}


def cupy_kernel(f: Form) -> Any:
    """The CuPy ElementwiseKernel of a form (compiled on first use)."""
    return _kernel(*f.kernel[:3])


@functools.cache
def _kernel(ins: str, outs: str, body: str) -> Any:
    import cupy

    return cupy.ElementwiseKernel(ins, outs, body, "gpugrad_optimizer_update")
