"""``gg.compile(fn)``: eager code traced once per signature into the graph compiler.

The first call with a given signature calls ``fn`` on Placeholders (one per array argument,
with that argument's exact shape and dtype), so the ops build a graph of Symbols instead of
computing; eager history that ``fn`` mixes in (``0.01 * gg.sum(W ** 2)`` on a closed-over
Variable) is lifted into the graph, and Variables stay Variables. The graph becomes a
:class:`~gpugrad.compiler.schedule.Schedule`, the same compiled form the Placeholder front end
uses. Later calls with that signature feed the arguments to the schedule.

A compiled call that needs gradients is recorded on the eager tape as one op whose VJP gives
the gradients of the closed-over Variables and of the Tensor arguments that require them. So
``loss = step(xb, yb); loss.backward(); opt.step()`` works. For a scalar output (a loss) the
call runs forward and backward at once, as the schedule's one planned program, and the VJP
scales those gradients by its seed (exact for the usual seed of one); other outputs keep what
the forward sweep saved and run the backward sweep when asked. Either way the tape node holds
the arrays backward reads, so version counters still catch one written in place too early.
NumPy host arrays passed in are copied on a recorded call.

The signature is the pytree structure of the arguments, and per array argument its kind,
shape, dtype, backend, device and ``requires_grad``; other arguments (ints, strings, ...)
are part of it by value, so they must be hashable. Grad mode is part of it too. The traces of
one compiled function live in an LRU cache of ``cache_size`` entries (32 by default).
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict, namedtuple
from typing import Any, Callable

import numpy as np

from .. import backend as B
from .. import errors as E
from .. import versions
from ..eager import Node, backend_name
from ..graph import Placeholder, Symbol, _lift, compile_trace
from ..pytree import tree_flatten, tree_unflatten
from ..registry import Op
from ..tensor import Tensor, _grad_enabled
from .schedule import Schedule
from .trace import trace

CacheInfo = namedtuple("CacheInfo", "hits misses traces maxsize")
"""``hits``: calls that reused a trace; ``misses``: calls that traced; ``traces``: how many
traces the cache holds now; ``maxsize``: the bound."""

_SCALARS = (int, float, bool, complex, str, bytes, type(None))
_NESTED = (tuple, list, dict)


def compile(fn: Callable | None = None, *, cache_size: int = 32) -> Any:  # noqa: A001
    """Trace ``fn`` once per argument signature and run the compiled schedule after that.

    Use it as ``step = gg.compile(fn)`` or as a decorator (``@gg.compile`` or
    ``@gg.compile(cache_size=8)``). ``fn`` takes arrays (Tensors or backend arrays), pytrees
    of them (tuples, lists, dicts) and other hashable values, and returns a Tensor or a pytree
    of them. Python control flow on a traced value (``if t > 0:``, ``float(t)``) raises an
    error naming the line; use ``gg.where`` instead, or compute that value outside ``fn``.

    Parameters
    ----------
    fn : callable
        The eager function to compile.
    cache_size : int
        How many signatures keep their trace (least recently used ones are dropped).

    Returns
    -------
    Compiled
        A callable with ``cache_info()`` and ``cache_clear()``.

    Examples
    --------
    >>> import numpy as np, gpugrad as gg
    >>> W = gg.Variable(np.ones((2, 1)), name="W")
    >>> step = gg.compile(lambda x: gg.sum(gg.sigmoid(x @ W)))
    >>> loss = step(gg.asarray(np.zeros((3, 2))))
    >>> float(loss)
    1.5
    >>> loss.backward()
    >>> gg.to_numpy(W.grad).ravel()
    array([0., 0.])
    >>> step.cache_info()
    CacheInfo(hits=0, misses=1, traces=1, maxsize=32)
    """
    if fn is None:
        return lambda f: Compiled(f, cache_size)
    return Compiled(fn, cache_size)


class Compiled:
    """A function compiled by :func:`compile`; call it like the function itself."""

    def __init__(self, fn: Callable, cache_size: int = 32) -> None:
        if not callable(fn):
            raise TypeError(f"gg.compile: expected a function, got {type(fn).__name__}")
        if int(cache_size) < 1:
            raise ValueError(f"gg.compile: cache_size must be at least 1, got {cache_size}")
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.maxsize = int(cache_size)
        self._cache: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def cache_info(self) -> CacheInfo:
        """How many calls reused a trace, how many traced, and how many traces are kept."""
        return CacheInfo(self.hits, self.misses, len(self._cache), self.maxsize)

    def cache_clear(self) -> None:
        """Drop every trace (the next call traces again)."""
        with self._lock:
            self._cache.clear()

    def __repr__(self) -> str:
        return f"<gg.compile of {getattr(self.fn, '__qualname__', self.fn)!r}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs or any(isinstance(a, _NESTED) for a in args):
            leaves, structure = tree_flatten((args, kwargs) if kwargs else args)
            key = [_hashable(structure), _grad_enabled.get()]
        else:  # flat positional arguments: the common case, without the pytree walk
            leaves, structure = list(args), (tuple, None, [None] * len(args))
            key = [len(args), _grad_enabled.get()]
        arrays = []
        for i, a in enumerate(leaves):
            if isinstance(a, Tensor):
                data = a.data
                xp = a.xp
                key.append((xp, data.shape, data.dtype, a.requires_grad,
                            None if xp is np else data.device))
                arrays.append(i)
            elif isinstance(a, np.ndarray) or (not isinstance(a, _SCALARS)
                                              and B.is_backend_array(a)):
                if isinstance(a, Symbol):
                    raise TypeError(E.at(
                        f"{self!r}: argument {i} is a graph Symbol; a compiled function takes "
                        "arrays, and graph code runs through Placeholders without gg.compile"))
                key.append((B.namespace_of(a), a.shape, a.dtype, False,
                            None if isinstance(a, np.ndarray) else a.device))
                arrays.append(i)
            else:
                try:
                    hash(a)
                except TypeError:
                    raise TypeError(E.at(
                        f"{self!r}: argument {i} is a {type(a).__name__}, which is neither an "
                        "array nor hashable; pass arrays (or pytrees of them) and hashable "
                        "static values")) from None
                key.append((type(a), a))
        key = tuple(key)
        with self._lock:
            entry = self._cache.get(key)
            if entry is not None:
                self._cache.move_to_end(key)
                self.hits += 1
            else:
                self.misses += 1
        if entry is None:
            entry = _Entry(self, leaves, structure, arrays, bool(kwargs))
            with self._lock:
                self._cache[key] = entry
                while len(self._cache) > self.maxsize:
                    self._cache.popitem(last=False)
        return entry.run(leaves)


def _hashable(structure: Any) -> Any:
    if structure is None:
        return None
    kind, keys, children = structure
    return (kind, None if keys is None else tuple(keys),
            tuple(_hashable(c) for c in children))


class _Entry:
    """One trace: its schedule(s), the argument Placeholders and how outputs are rebuilt."""

    def __init__(self, owner: Compiled, leaves: list, structure: Any, arrays: list,
                 has_kwargs: bool) -> None:
        self.name = getattr(owner.fn, "__name__", "fn")
        self.arrays = arrays
        first = leaves[arrays[0]] if arrays else None
        self.backend = _backend_of(first)
        traced = list(leaves)
        self.placeholders = []
        for i in arrays:
            a = leaves[i]
            data = a.data if isinstance(a, Tensor) else a
            ph = Placeholder(tuple(data.shape), data.dtype, name=f"argument {i}")
            self.placeholders.append(ph)
            traced[i] = ph
        rebuilt = tree_unflatten(structure, traced)
        args, kwargs = rebuilt if has_kwargs else (rebuilt, {})
        with B.use_backend(self.backend):
            out = _call_traced(owner, args, kwargs)
            self._plan_outputs(out)

    def _plan_outputs(self, out: Any) -> None:
        outs, self.out_structure = tree_flatten(out)
        self.out_plan = []  # per output: ("sym", k), ("arg", j) or ("const", Tensor)
        syms: list = []
        memo: dict = {}
        for o in outs:
            if isinstance(o, Placeholder):
                self.out_plan.append(("arg", _find(self.placeholders, o)))
                continue
            if isinstance(o, Tensor) and o._node is not None:
                o = _lift(o._node, memo)  # computed from Variables alone: recomputed per call
            if isinstance(o, Symbol):
                k = _find(syms, o)
                if k < 0:
                    k = len(syms)
                    syms.append(o)
                self.out_plan.append(("sym", k))
            elif isinstance(o, Tensor):
                self.out_plan.append(("const", o))
            else:
                raise TypeError(E.at(
                    f"gg.compile({self.name}): the function returned a {type(o).__name__}; "
                    "return Tensors (or tuples, lists and dicts of them)"))
        self.syms = syms
        self.schedules: dict = {}  # (arguments needing gradients, output) -> Schedule
        # per schedule: None until its first recorded call, then False (several outputs or
        # not a scalar: forward now, backward later) or what _run_whole keeps
        self.whole: dict = {}
        if not syms:
            return
        # several outputs: the first is the root, the others ride along as gradient targets
        # (slots a schedule keeps), so one forward sweep computes them all
        self.root = syms[0] if len(syms) == 1 else Symbol(_OUTPUTS, tuple(syms),
                                                          {"n": len(syms)})
        graph = trace(self.root, ())
        self.variables = tuple(t for _, t in graph.tensors if t.requires_grad)
        used = {id(ph) for _, ph in graph.placeholders}
        self.unused = {j for j, ph in enumerate(self.placeholders) if id(ph) not in used}
        self.op = Op(f"compile({self.name})", _never, twice_differentiable=False)
        self.op.vjp = _vjp
        self.schedule(())

    def schedule(self, args: tuple, k: int = 0) -> Schedule:
        """The schedule of output ``k`` (0: all outputs, one sweep) whose gradient targets
        are the Variables and the Placeholders of arguments ``args``."""
        sched = self.schedules.get((args, k))
        if sched is None:
            targets = (*self.variables, *(self.placeholders[j] for j in args))
            if k == 0:
                sched = Schedule(self.root, (*targets, *self.syms[1:]))
            else:
                sched = Schedule(self.syms[k], targets)
            self.schedules[(args, k)] = sched
        return sched

    def run(self, leaves: list) -> Any:
        if not self.syms:
            return self._outputs(leaves, [], None)
        inputs: list = []
        args: list = []
        if _grad_enabled.get():
            inputs = list(self.variables)
            for j, i in enumerate(self.arrays):
                a = leaves[i]
                if isinstance(a, Tensor) and a.requires_grad and j not in self.unused:
                    args.append(j)
                    inputs.append(a if a._node is None else a._node)
        record = bool(inputs)
        key = tuple(args)
        sched = self.schedules.get((key, 0)) or self.schedule(key)
        # the arrays themselves (the signature already matched their shapes and dtypes); a
        # recorded call copies host arrays, the caller's memory, so that later edits to them
        # cannot reach backward
        feed = {}
        for ph, i in zip(self.placeholders, self.arrays):
            a = leaves[i]
            if type(a) is Tensor or isinstance(a, Tensor):
                a = a.data
            elif record and type(a) is np.ndarray:
                a = np.array(a)
            feed[ph] = a
        single = len(self.syms) == 1
        if single and not record:
            return self._outputs(leaves, [sched.run(feed, False)[0]], None)
        whole = self.whole.get(sched) if single else False
        if whole:
            return self._run_whole(sched, feed, inputs, whole, leaves)
        value, saved = sched.forward(feed, record)
        values = [value]
        if not single:
            vals = saved.vals
            values += [vals[s] for s in sched.wrt[len(sched.wrt) - len(self.syms) + 1:]]
        if not record:
            return self._outputs(leaves, values, None)
        xp = sched.xp
        if whole is None:  # the first recorded call of this schedule: can later ones go whole?
            self.whole[sched] = self._saved_inputs(sched, saved, feed, args) if (
                _size(value.shape) == 1 and B.is_floating(xp, value.dtype)) else False
        name = backend_name(xp)
        needs = (True,) * len(inputs)
        nodes = []
        for k, v in enumerate(values):
            if not B.is_floating(xp, v.dtype):
                nodes.append(None)
                continue
            state = _State(self, sched, saved, feed, key, k, len(inputs))
            node = Node(self.op, {}, tuple(inputs), needs, (state, saved.res), name,
                        tuple(v.shape), v.dtype)
            nodes.append(node)
        return self._outputs(leaves, values, nodes)

    def _saved_inputs(self, sched: Schedule, saved: Any, feed: dict, args: list) -> tuple:
        """Which Variables and arguments the backward sweep reads (their arrays are among
        the residuals): the arrays a whole-run call must keep for the version check."""
        res = versions.saved_arrays(saved.res)
        variables = tuple(t for t in self.variables
                          if any(versions.overlap(t.data, r) for r in res))
        phs = tuple(ph for ph in self.placeholders
                    if any(versions.overlap(_data(feed[ph]), r) for r in res))
        return (variables, phs)

    def _run_whole(self, sched: Schedule, feed: dict, inputs: list, whole: tuple,
                   leaves: list) -> Any:
        """A scalar output: forward and backward now, as the schedule's one planned program
        (seeded with ones); backward later only scales the gradients by its seed (exact for
        the usual seed 1). The node keeps the inputs backward would have read, so a write
        into one of them before backward is still refused."""
        value, grads = sched.run(feed, True)
        variables, phs = whole
        kept = [t.data for t in variables] + [_data(feed[ph]) for ph in phs]
        xp = sched.xp
        node = Node(self.op, {}, tuple(inputs), (True,) * len(inputs),
                    (_Done(grads[:len(inputs)]), kept), backend_name(xp), tuple(value.shape),
                    value.dtype)
        return self._outputs(leaves, [value], [node])

    def _outputs(self, leaves: list, values: list, nodes: list | None) -> Any:
        outs = []
        for kind, k in self.out_plan:
            if kind == "arg":
                outs.append(leaves[self.arrays[k]])
            elif kind == "const":
                outs.append(k)
            else:
                data = values[k]
                t = Tensor.__new__(Tensor)
                t.data = data
                t.xp = B.namespace_of(data)
                t.grad = t.name = None
                node = nodes[k] if nodes else None
                t._node = node
                t.requires_grad = node is not None
                outs.append(t)
        return tree_unflatten(self.out_structure, outs)


def _find(items: list, x: Any) -> int:
    """The position of ``x`` in ``items`` by identity (``==`` on a Symbol builds a graph)."""
    return next((k for k, it in enumerate(items) if it is x), -1)


class _State:
    """What a compiled call's tape node needs for its VJP."""

    __slots__ = ("entry", "sched", "saved", "feed", "args", "k", "n")

    def __init__(self, entry: _Entry, sched: Schedule, saved: Any, feed: dict, args: tuple,
                 k: int, n: int) -> None:
        self.entry, self.sched, self.saved, self.feed = entry, sched, saved, feed
        self.args, self.k, self.n = args, k, n


class _Done:
    """Gradients computed with the forward sweep, for a seed of one."""

    __slots__ = ("grads",)

    def __init__(self, grads: list) -> None:
        self.grads = grads


def _data(a: Any) -> Any:
    return a.data if isinstance(a, Tensor) else a


def _size(shape: tuple) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _never(xp: Any, *args: Any, **params: Any) -> Any:
    raise RuntimeError("a compiled call runs through its schedule, not through apply")


def _vjp(xp: Any, g: Any, res: tuple) -> tuple:
    """The tape's VJP of a compiled call: the schedule's backward sweep, seeded with ``g``.
    Output 0 uses what its forward saved (once); the other outputs, and a second backward
    (``retain_graph=True``), sweep a schedule of their own again from the same inputs."""
    state = res[0]
    if type(state) is _Done:
        if type(g) is np.ndarray and g.size == 1 and g.reshape(()) == 1.0:
            return tuple(state.grads)
        g = xp.reshape(g, ())
        return tuple(gr * g for gr in state.grads)
    saved = state.saved
    if state.k == 0 and saved.vals is not None:
        grads = state.sched.backward(saved, g)
    else:
        own = state.sched if state.k == 0 else state.entry.schedule(state.args, state.k)
        _, grads = own.run(state.feed, True, g)
    return tuple(grads[:state.n])


def _outputs_forward(xp: Any, first: Any, *rest: Any, n: int) -> tuple:
    """Several outputs: the first one is the schedule's root; the others are kept as
    gradient targets (slots a schedule never drops)."""
    return first, None


_OUTPUTS = Op("outputs", _outputs_forward)
_OUTPUTS.vjp = lambda xp, g, res, *, n: (g,) + (None,) * (n - 1)


def _backend_of(first: Any) -> B.Backend:
    """The backend the trace runs under: the first array argument's, else the current one."""
    if first is None:
        return B.current()
    data = first.data if isinstance(first, Tensor) else first
    xp = B.namespace_of(data)
    if xp is np:
        return B.make_backend("numpy")
    return B.make_backend(xp, B.device_of(data))


def _call_traced(owner: Compiled, args: tuple, kwargs: dict) -> Any:
    """``fn`` on Placeholders, with grad mode on (eager work on Variables must leave a
    history to lift) and the trace flag set (for the control-flow errors)."""
    token = compile_trace.set(getattr(owner.fn, "__name__", "fn"))
    grad = _grad_enabled.set(True)
    try:
        return owner.fn(*args, **kwargs)
    finally:
        _grad_enabled.reset(grad)
        compile_trace.reset(token)


