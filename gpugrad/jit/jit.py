"""``gg.compile(fn)``: eager code traced once per signature into the graph compiler.

The first call with a given signature calls ``fn`` on Placeholders (one per array argument,
with that argument's exact shape and dtype), so the ops build a graph of Symbols instead of
computing; eager history that ``fn`` mixes in (``0.01 * gg.sum(W ** 2)`` on a closed-over
Variable) is lifted into the graph, and Variables stay Variables. The graph becomes a
:class:`~gpugrad.compiler.schedule.Schedule`, the same compiled form the Placeholder front end
uses. Later calls with that signature feed the arguments to the schedule.

A compiled call that needs gradients is recorded on the eager tape as one op
(``gpugrad.jit.tape``), so ``loss = step(xb, yb); loss.backward(); opt.step()`` works and
gradients reach the closed-over Variables and the Tensor arguments that require them.

The signature is the pytree structure of the arguments, and per array argument its kind,
shape, dtype, backend, device and ``requires_grad``; other arguments (ints, strings, ...)
are part of it by value, so they must be hashable. Grad mode is part of it too. The traces of
one compiled function live in an LRU cache of ``cache_size`` entries (32 by default).

The batch size is not part of the signature: the leading dim of the first array argument
that has one, and of every array argument whose leading dim is that size, is the batch,
None in the trace's Placeholders, so one trace (and one planned program,
gpugrad.compiler.batch) serves every batch size. A trace whose Python read a shape that
depends on the batch (``x.shape[0]``, ``len(x)``), or whose graph's shapes do not follow
the batch (a reshape to the first batch's size), is specialised on the batch size instead
(gpugrad.jit.tape.Entry.symbolic).

Each trace also keeps guards (gpugrad.jit.guards): what ``fn`` read from outside its
arguments (closed-over and global numbers, strings and Tensors, module attributes, ...). A
call whose signature has a trace whose guards fail traces again, in its place, and
``cache_info().retraces`` counts it.
"""

from __future__ import annotations

import functools
import itertools
import threading
from collections import OrderedDict, namedtuple
from typing import Any, Callable

import numpy as np

from .. import backend as B
from .. import errors as E
from ..graph import Symbol
from ..pytree import tree_flatten
from ..tensor import Tensor, _grad_enabled
from .guards import guard_of
from .tape import Entry
from .whole import MISS, Quick

CacheInfo = namedtuple("CacheInfo", "hits misses traces maxsize retraces")
"""``hits``: calls that reused a trace; ``misses``: calls that traced; ``traces``: how many
traces the cache holds now; ``maxsize``: the bound; ``retraces``: the misses whose signature
had a trace, traced again because a value it read from outside its arguments changed (its
guards, gpugrad.jit.guards)."""

_SCALARS = (int, float, bool, complex, str, bytes, type(None))
_NESTED = (tuple, list, dict)


def compile(fn: Callable | None = None, *, cache_size: int = 32) -> Any:  # noqa: A001
    """Trace ``fn`` once per argument signature and run the compiled schedule after that.

    Use it as ``step = gg.compile(fn)`` or as a decorator (``@gg.compile`` or
    ``@gg.compile(cache_size=8)``). ``fn`` takes arrays (Tensors or backend arrays), pytrees
    of them (tuples, lists, dicts) and other hashable values, and returns a Tensor or a pytree
    of them. Python control flow on a traced value (``if t > 0:``, ``float(t)``) raises an
    error naming the line; use ``gg.where`` instead, or compute that value outside ``fn``.
    A value ``fn`` reads from outside its arguments (a closed-over or global number, string,
    Tensor; gpugrad.jit.guards lists what is guarded) that changes makes the next call trace
    again (``cache_info().retraces``); Variables are read fresh on every call instead.

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
    CacheInfo(hits=0, misses=1, traces=1, maxsize=32, retraces=0)
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
        self._hits = 0
        # the hits of the short way (whole.Quick), counted without the lock: each takes one
        # number, as does each read of them (``_reads``: how many reads took one)
        self._quick = itertools.count()
        self._reads = 0
        self.misses = 0
        self.retraces = 0
        self._last: tuple = ((), 0, None)  # the last key and batch size, and their entry
        self._fast: Quick | None = None  # its signature, where it was NumPy Tensors only

    @property
    def hits(self) -> int:
        """How many calls reused a trace."""
        with self._lock:
            quick = next(self._quick) - self._reads
            self._reads += 1
            return self._hits + quick

    def cache_info(self) -> CacheInfo:
        """How many calls reused a trace, how many traced, and how many traces are kept."""
        return CacheInfo(self.hits, self.misses, len(self._cache), self.maxsize, self.retraces)

    def cache_clear(self) -> None:
        """Drop every trace (the next call traces again)."""
        with self._lock:
            self._cache.clear()
            self._last = ((), 0, None)
            self._fast = None

    def __repr__(self) -> str:
        return f"<gg.compile of {getattr(self.fn, '__qualname__', self.fn)!r}>"

    def source(self, *args: Any, **kwargs: Any) -> str:
        """The Python a call with arguments like these runs (docs/debugging.md), each line
        tagged with its op and the line of ``fn`` that made it; the kernels it calls follow.
        It traces ``fn`` if that signature has no trace yet (counted in
        :meth:`cache_info`, as a call would be) and runs the forward sweep once, step by
        step, for the shapes: no gradient is stored and nothing is updated.

        >>> import numpy as np, gpugrad as gg
        >>> W = gg.Variable(np.ones((2, 1)), name="W")
        >>> f = gg.compile(lambda x: gg.sum(gg.sigmoid(x @ W)))
        >>> src = f.source(gg.asarray(np.zeros((3, 2))))
        >>> for line in src.splitlines():
        ...     if "np.dot" in line:
        ...         print(line.split("# ")[1])
        matmul  <doctest gpugrad.jit.jit.Compiled.source[2]>:1
        matmul (vjp)  <doctest gpugrad.jit.jit.Compiled.source[2]>:1
        """
        sig = self._signature(args, kwargs)
        if sig is None:
            raise TypeError(f"{self!r}.source: pass example arrays (a graph Symbol runs "
                            "fn's graph code itself; use the graph's .source)")
        key, leaves, structure, arrays, n = sig
        return self._entry(key, n, leaves, structure, arrays, bool(kwargs)).source(leaves)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        quick = self._fast
        if quick is not None and not kwargs and len(args) == quick.n \
                and _grad_enabled.get() is quick.grad:
            out = quick.call(args)  # the last call's signature, NumPy Tensors only
            if out is not MISS:
                return out
        sig = self._signature(args, kwargs)
        if sig is None:  # inside another trace, or graph code: build the graph
            return self.fn(*args, **kwargs)
        key, leaves, structure, arrays, n = sig
        last, last_n, entry = self._last
        if key == last and (n == last_n or entry.symbolic) and (
                entry.guard is None or entry.guard()):
            with self._lock:  # the usual case: no hashing (NumPy hashes a dtype slowly),
                self._hits += 1  # and it is the most recent entry already
        else:
            entry = self._entry(key, n, leaves, structure, arrays, bool(kwargs))
        self._fast = Quick(entry, key[1], args, self._quick) if structure is None and all(
            isinstance(a, Tensor) and a.xp is np and type(a.data) is np.ndarray
            for a in args) else None
        return entry.run(leaves)

    def _signature(self, args: tuple, kwargs: dict, nested: bool = False) -> tuple | None:
        """(key, leaves, structure, positions of the array leaves, batch size) of a call, or
        None when an argument is a graph Symbol. ``structure`` is None for flat positional
        arguments (the common case, without the pytree walk). The batch size is the leading
        dim of the first array with one (0: none); in the key, the leading dims of the
        arrays whose leading dim it is (gpugrad.jit.tape.marks) read None."""
        structure = None
        if nested or kwargs:
            leaves, structure = tree_flatten((args, kwargs) if kwargs else args)
            key: Any = [_hashable(structure), _grad_enabled.get()]
        else:
            leaves = args
            key = [len(args), _grad_enabled.get()]
        arrays = []
        n = 0
        for i, a in enumerate(leaves):
            if isinstance(a, Tensor):
                data, xp, grad = a.data, a.xp, a.requires_grad
            elif isinstance(a, np.ndarray):
                data, xp, grad = a, np, False
            elif isinstance(a, Symbol):
                return None
            elif structure is None and isinstance(a, _NESTED):  # a pytree: walk it
                return self._signature(args, kwargs, True)
            elif not isinstance(a, _SCALARS) and B.is_backend_array(a):
                data, xp, grad = a, B.namespace_of(a), False
            else:
                try:
                    hash(a)
                except TypeError:
                    raise TypeError(E.at(
                        f"{self!r}: argument {i} is a {type(a).__name__}, which is neither an "
                        "array nor hashable; pass arrays (or pytrees of them) and hashable "
                        "static values")) from None
                key.append((type(a), a))
                continue
            shape = tuple(data.shape)
            if shape:
                if not n:
                    n = shape[0] or -1
                if shape[0] == n:
                    shape = (None, *shape[1:])
            key.append((xp, shape, data.dtype, grad, None if xp is np else data.device))
            arrays.append(i)
        return tuple(key), leaves, structure, arrays, max(n, 0)

    def _entry(self, key: tuple, n: int, leaves: Any, structure: Any, arrays: list,
               has_kwargs: bool) -> Entry:
        """The trace of signature ``key`` at batch size ``n``: from the cache (filed under
        ``key`` where it serves every batch size, else under ``(*key, n)``), else traced."""
        filed = key
        with self._lock:
            entry = self._cache.get(key)
            if entry is None and n:
                filed = (*key, n)
                entry = self._cache.get(filed)
            if entry is not None and (entry.guard is None or entry.guard()):
                self._cache.move_to_end(filed)
                self._hits += 1
            else:
                self.misses += 1
                if entry is not None:  # a value the trace read has changed: trace again
                    self.retraces += 1
                    del self._cache[filed]
                    entry = None
        if entry is None:
            if structure is None:
                structure = (tuple, None, [None] * len(leaves))
            guard = guard_of(self.fn, Compiled)  # the values the trace is about to read
            entry = Entry(self.fn, list(leaves), structure, arrays, has_kwargs)
            entry.guard = guard
            filed = key if entry.symbolic or not n else (*key, n)
            with self._lock:
                self._cache[filed] = entry
                while len(self._cache) > self.maxsize:
                    self._cache.popitem(last=False)
        with self._lock:
            self._last = (key, n, entry)
        return entry


def _hashable(structure: Any) -> Any:
    if structure is None:
        return None
    kind, keys, children = structure
    return (kind, None if keys is None else tuple(keys),
            tuple(_hashable(c) for c in children))
