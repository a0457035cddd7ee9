"""Graph front end: the tutorial's Placeholders and Variables, compiled once, run per feed.

An expression that involves a Placeholder builds a Symbol and computes nothing. The first
run compiles the graph into a flat schedule (forward steps in topological order, VJP steps
in reverse); later runs reuse it.

>>> import numpy as np, gpugrad as gg
>>> x = gg.Placeholder((None, 2), "float64", name="x")
>>> W = gg.Variable(np.ones((2, 1)), name="W")
>>> y = gg.sum(x @ W)
>>> float(y.eval(feed={x: np.array([[1.0, 2.0]])}))
3.0
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import sys
from typing import Any, Mapping, Sequence

import numpy as np

from . import backend as B
from . import errors as E
from . import shapes
from .compiler.listing import listing
from .compiler.schedule import FeedError, Schedule
from .binding import static_problem
from .eager import Node, backend_name, set_symbolic_builder
from .operators import ArrayOps
from .registry import Op
from .serialize import set_symbol_state, symbol_state
from .tensor import Tensor
from .views import refuse_symbol


class Symbol(ArrayOps):
    """A node of a graph: an op applied to Symbols, Tensors and scalars. Computes on run.

    Its ``shape`` is inferred when it is built (gpugrad.shapes): None for a dim known only
    once the graph runs. ``dtype`` is the dtype's name where the inputs determine it, else None.
    """

    __slots__ = ("op", "args", "params", "name", "site", "_schedules", "_shape", "_dtype",
                 "__weakref__")
    _gpugrad_symbolic = True

    def __init__(self, op: Op | None, args: tuple, params: dict, name: str | None = None,
                 shape: tuple | None = None, dtype: str | None = None):
        self.op = op
        self.args = args
        self.params = params
        self.name = name
        self.site = E.call_site()  # where the user built it, for error messages
        self._schedules: dict = {}
        self._shape = shape
        self._dtype = dtype

    def __getstate__(self) -> dict:  # pickle and deepcopy leave the compiled schedules
        return symbol_state(self)

    def __setstate__(self, state: dict) -> None:
        set_symbol_state(self, state)

    # ``s += u`` builds ``s + u``; where ``s`` is a view or has views, eager code would write
    # through to them, so that is refused (see gpugrad.views.refuse_symbol)
    def __iadd__(self, other: Any) -> Any:
        return refuse_symbol(self, "+=").__add__(other)

    def __isub__(self, other: Any) -> Any:
        return refuse_symbol(self, "-=").__sub__(other)

    def __imul__(self, other: Any) -> Any:
        return refuse_symbol(self, "*=").__mul__(other)

    def __itruediv__(self, other: Any) -> Any:
        return refuse_symbol(self, "/=").__truediv__(other)

    def eval(self, feed: Mapping | None = None) -> Any:
        """Run the graph forward and return this node's value as a backend array."""
        return self._schedule(())[0].run(feed or {}, False)[0]

    def source(self, feed: Mapping | None = None, wrt: Sequence[Any] | None = None,
               opt: Any = None) -> str:
        """The Python that runs this graph for ``feed``'s shapes and dtypes, each line
        tagged with its op and the line of your code that built it (docs/debugging.md): what
        ``.eval(feed)`` runs, with ``wrt`` what ``gg.value_and_gradients(self, wrt, feed)``
        runs, with ``opt`` what ``opt.minimize(self, feed)`` runs (the update's kernel
        follows). It runs the forward sweep once for the shapes; nothing is updated.

        >>> import numpy as np, gpugrad as gg
        >>> x = gg.Placeholder((None, 2), "float64", name="x")
        >>> W = gg.Variable(np.ones((2, 1)), name="W")
        >>> loss = gg.sum(gg.sigmoid(x @ W))
        >>> src = loss.source({x: np.zeros((3, 2))}, opt=gg.optim.SGD([W], lr=0.1))
        >>> [line.split("# ")[1] for line in src.splitlines() if "np.exp" in line]
        ['sigmoid  <doctest gpugrad.graph.Symbol.source[3]>:1']
        >>> "# SGD update" in src
        True
        """
        if opt is not None:
            wrt = opt.params
        sched = self._schedule(_as_tuple(wrt) if wrt is not None else ())[0]
        return listing(sched.program_for(feed or {}, wrt is not None, opt))

    def _schedule(self, wrt: tuple) -> tuple["Schedule", Any]:
        xp = B.current().xp
        key = (wrt, xp)
        sched = self._schedules.get(key)
        if sched is None:
            sched = self._schedules[key] = Schedule(self, wrt)
        return sched, xp

    @property
    def shape(self) -> tuple:
        if shape_reads.get() is not None:  # gg.compile: a shape read into Python
            _read(self)
        if self._shape is None:
            op = self.op.name if self.op is not None else "?"
            raise AttributeError(
                f"{self!r} has no shape until it runs: op {op!r} (or an input of it) has no "
                "shape rule, so its shape depends on the feeds; declare one with "
                "gpugrad.shapes.defshape")
        return self._shape

    @property
    def dtype(self) -> Any:
        return self._dtype

    @property
    def ndim(self) -> int:
        return len(self._shape) if self._shape is not None else len(self.shape)

    def __repr__(self) -> str:
        label = f" {self.name!r}" if self.name else ""
        return f"<Symbol{label} {self.op.name if self.op else '?'}>"

    def __bool__(self) -> bool:
        raise no_value("bool() (an if, while, and/or or assert on it)",
                       "a graph Symbol has no truth value until it runs; use .eval(feed)")

    def __float__(self) -> float:
        raise no_value("float()", "a graph Symbol has no value until it runs; use .eval(feed)")

    def __int__(self) -> int:
        raise no_value("int()", "a graph Symbol has no value until it runs; use .eval(feed)")

    def __index__(self) -> int:
        raise no_value("use as an index or size",
                       "a graph Symbol has no value until it runs; use .eval(feed)")

    def __complex__(self) -> complex:
        raise no_value("complex()", "a graph Symbol has no value until it runs; use .eval(feed)")

    def __array__(self, dtype=None, copy=None):
        raise no_value(
            "gg.to_numpy() (or np.asarray)",
            f"np.asarray: a graph {type(self).__name__} has no value until the graph runs; "
            "call gg.to_numpy(sym.eval(feed)) for its value, or use gg functions on it",
            "return it from the compiled function and call gg.to_numpy on the result, or "
            "compute it outside the compiled function")

    def backward(self, *args: Any, **kwargs: Any) -> None:
        """Refused: a graph is differentiated by gg.gradients or opt.minimize (an eager
        Tensor has ``.backward()``)."""
        name = compile_trace.get()
        if name is not None:
            raise TracedValueError(E.at(
                f"gg.compile({name}): .backward() on a traced value inside the compiled "
                "function; return the loss from the function and call .backward() on the "
                "result outside it (the compiled call records its gradients)"))
        raise TypeError(E.at(
            f"{self!r} is a graph Symbol, which has no .backward(); differentiate a graph "
            "with gg.gradients(loss, [variables], feed=...) or gg.value_and_gradients, or "
            "train it with opt.minimize(loss, feed=...) (eager Tensors, from gg.asarray or "
            "gg.Variable without Placeholders, have .backward())"))

    def __len__(self) -> int:
        shape = self._shape
        if shape_reads.get() is not None:
            _read(self)
        if shape == ():
            raise TypeError(f"len() of a 0-d graph Symbol {self!r}")
        if shape is None or shape[0] is None:
            raise no_value(
                "len() of a dimension not known until it runs",
                f"len() of {self!r}: its shape {E.show(shape) if shape else '(unknown)'} has "
                "a leading None, a size known only when the graph runs; use .shape, or "
                "evaluate it first")
        return shape[0]

    def __iter__(self):
        if shape_reads.get() is not None:
            _read(self)
        for i in range(len(self)):
            yield self[i]


compile_trace: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "gpugrad_compile_trace", default=None)
"""The name of the function that ``gg.compile`` is tracing here, or None."""

shape_reads: contextvars.ContextVar[list | None] = contextvars.ContextVar(
    "gpugrad_shape_reads", default=None)
"""While ``gg.compile`` traces: the Symbols whose shape the traced Python read (``.shape``,
``len``), so a trace that read the batch size is specialised on it (gpugrad.jit). Reads by
gpugrad's own code (shape checks) are not listed."""


def _read(sym: Symbol) -> None:
    """Note that the code calling a shape property (two frames up) read ``sym``'s shape,
    unless that code is gpugrad's own."""
    if not sys._getframe(2).f_globals.get("__name__", "").startswith("gpugrad."):
        shape_reads.get().append(sym)


class TracedValueError(TypeError):
    """Python needed the value of a graph value (a Symbol) that is not computed yet."""


def no_value(what: str, otherwise: str, advice: str | None = None) -> TracedValueError:
    """The error for ``what`` needing a Symbol's value: under ``gg.compile`` it names the
    user's line and says what to do (``advice``, else how to keep Python control flow off
    it); elsewhere ``otherwise``."""
    name = compile_trace.get()
    if name is None:
        return TracedValueError(E.at(otherwise))
    return TracedValueError(E.at(
        f"gg.compile({name}): {what} needs the value of a traced array, which is not known "
        "while the function is traced" + ("; " + advice if advice else
        ", so Python control flow cannot depend on it; use gg.where(condition, a, b) to "
        "choose elementwise, or compute this value outside the compiled function and pass it "
        "in as an argument")))


class Placeholder(Symbol):
    """A value fed in on each run and never moved (``x`` in the tutorial).

    ``shape`` may hold None for any size (``(None, 3)``: any batch of 3 features).
    ``dtype`` is a name such as ``"float32"`` or a backend dtype.

    A feed is keyed by the Placeholder object, never by its name (two Placeholders may share
    a name, and a name is only a label for messages): a feed keyed by the name is refused,
    naming the Placeholder.

    >>> import numpy as np, gpugrad as gg
    >>> x = gg.Placeholder((2,), "float64", name="x")
    >>> gg.to_numpy((x * 2.0).eval({x: np.ones(2)}))
    array([2., 2.])
    >>> try:
    ...     (x * 2.0).eval({"x": np.ones(2)})
    ... except gg.FeedError as e:
    ...     print(str(e)[:62])
    Placeholder 'x' was not fed: the feed is keyed by its name 'x'
    """

    __slots__ = ("declared_shape", "dtype")

    def __init__(self, shape: Sequence[int | None], dtype: Any = "float32",
                 name: str | None = None):
        super().__init__(None, (), {}, name)
        self.declared_shape = tuple(shape)
        self.dtype = dtype
        self._shape = self.declared_shape
        self._dtype = B.dtype_name(dtype)

    @property
    def shape(self) -> tuple:
        if shape_reads.get() is not None:
            _read(self)
        return self.declared_shape

    def __repr__(self) -> str:
        return (f"Placeholder({self.declared_shape}, {B.dtype_name(self.dtype)!r}, "
                f"name={self.name!r})")

    def _label(self) -> str:
        return repr(self.name) if self.name else "(unnamed)"

    def not_fed(self, feed: Mapping) -> str:
        """The message for a feed without this Placeholder (a feed keyed by its name said so)."""
        if self.name is not None and any(type(k) is str and k == self.name for k in feed):
            return (f"Placeholder {self._label()} was not fed: the feed is keyed by its name "
                    f"{self.name!r}, but feeds are keyed by the Placeholder object itself; pass "
                    f"feed={{placeholder: array}} with the object that gg.Placeholder(..., "
                    f"name={self.name!r}) returned")
        names = [k for k in feed if type(k) is str]
        return (f"Placeholder {self._label()} was not fed; pass feed={{placeholder: array}} "
                "for every Placeholder the graph uses" + (
                    f" (keyed by the Placeholder objects, not by names such as {names[0]!r})"
                    if names else ""))

    def check(self, value: Any, xp: Any, device: Any) -> Any:
        """The fed value as a backend array, checked against shape and dtype."""
        value = value.data if isinstance(value, Tensor) else value
        want = B.resolve_dtype(xp, self.dtype)
        if isinstance(value, (list, tuple, int, float)):
            value = np.asarray(value, dtype=B.dtype_name(want))
        if not B.is_backend_array(value):
            value = self._from_dlpack(value, xp)
        shape = tuple(value.shape)
        ok = len(shape) == len(self.declared_shape) and all(
            d is None or d == s for d, s in zip(self.declared_shape, shape))
        if not ok:
            raise FeedError(E.at(
                f"Placeholder {self._label()}: fed shape {shape} does not match its declared "
                f"shape {_show_shape(self.declared_shape)}"))
        same = value.dtype is want or (  # no str per feed
            xp is np and isinstance(value, np.ndarray) and value.dtype == want)
        if not same and B.dtype_name(value.dtype) != B.dtype_name(want):
            raise FeedError(E.at(
                f"Placeholder {self._label()}: fed dtype {B.dtype_name(value.dtype)} {shape} but "
                f"it was declared {B.dtype_name(want)}; convert the data first, e.g. "
                f"x.astype({B.dtype_name(want)!r})"))
        src = B.namespace_of(value)
        if src is xp or B.name_of(src) == backend_name(xp):
            if device is not None and xp is not np and B.device_of(value) != device:
                raise B.BackendError(E.at(
                    f"Placeholder {self._label()}: fed on device {B.device_of(value)} but the "
                    f"graph's Variables live on {device}"))
            return value
        if src is np:  # host data crosses to the device here, once per feed
            return xp.asarray(value, device=device) if device is not None else xp.asarray(value)
        if hasattr(value, "__dlpack__"):  # a JAX (or other array-API library's) array
            with contextlib.suppress(B.BackendError):
                return self.check(self._from_dlpack(value, xp), xp, device)
        raise B.BackendError(E.at(
            f"Placeholder {self._label()}: fed a {B.name_of(src)} array but the graph runs on "
            f"{backend_name(xp)}; move it to {backend_name(xp)} first"))


    def _from_dlpack(self, value: Any, xp: Any) -> Any:
        """A PyTorch, JAX or other DLPack producer's array, brought to the backend once per
        feed (shared where the devices allow); anything else is refused by name."""
        if not hasattr(value, "__dlpack__"):
            kind = f"{type(value).__module__.split('.')[0]}.{type(value).__name__}"
            raise FeedError(E.at(
                f"Placeholder {self._label()}: feed is a {kind.removeprefix('builtins.')}, "
                "not an array; feed a NumPy or backend array, a list of numbers, or any "
                "DLPack producer (PyTorch, JAX, CuPy)"))
        current = B.current()
        if current.xp is xp:
            return B.import_array(value, current)
        return np.from_dlpack(value, device="cpu", copy=True)


def _show_shape(shape: tuple) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + \
        ("," if len(shape) == 1 else "") + ")"


def _lift(node: Node, memo: dict) -> Symbol:
    """An eager Tensor's recorded history becomes Symbols, so the graph recomputes it each
    run from the current Variable values (``loss = mse + 0.01 * gg.sum(W ** 2)`` just works)."""
    stack = [node]
    while stack:
        cur = stack[-1]
        if cur in memo:
            stack.pop()
            continue
        pending = [a for a in cur.inputs if type(a) is Node and a not in memo]
        if pending:
            stack.extend(pending)
            continue
        stack.pop()
        args = tuple(memo[a] if type(a) is Node else a for a in cur.inputs)
        memo[cur] = Symbol(cur.op, args, cur.params, shape=tuple(cur.shape),
                           dtype=B.dtype_name(cur.dtype))
    return memo[node]


def build(op: Op, args: tuple, params: dict) -> Symbol:
    """The symbolic dispatcher: an op applied to at least one Symbol."""
    why = params and static_problem(op.name, op.__signature__, params)  # named where the graph is built
    if why:
        raise TypeError(E.at(why))
    shape, dtype = _check_static_shapes(op, args, params)
    memo: dict = {}
    lifted = tuple(_lift(a._node, memo) if isinstance(a, Tensor) and a._node is not None else a
                   for a in args)
    return Symbol(op, lifted, params, shape=shape, dtype=dtype)


def _check_static_shapes(op: Op, args: tuple, params: dict) -> tuple:
    """The new node's ``(shape, dtype name)`` from its inputs' (gpugrad.shapes), where None
    dims match any size; a mismatch raises here, so it fails at the line that built it."""
    facts = []
    for a in args:
        if isinstance(a, Symbol):
            facts.append((a._shape, a._dtype, False))
        elif isinstance(a, (int, float, bool)):
            facts.append(((), a, True))
        elif a is not None and hasattr(a, "shape"):
            facts.append((tuple(a.shape), _dtype_name(a.dtype), False))
    return shapes.infer(op, facts, params)


def _dtype_name(dtype: Any) -> str:
    try:  # keyed by type first: dtypes of two libraries are never compared with each other
        return _cached_dtype_name(type(dtype), dtype)
    except TypeError:  # an unhashable dtype object
        return B.dtype_name(dtype)


@functools.lru_cache(maxsize=64)
def _cached_dtype_name(kind: type, dtype: Any) -> str:
    return B.dtype_name(dtype)


set_symbolic_builder(build)


def _as_tuple(wrt: Any) -> tuple:
    return tuple(wrt) if isinstance(wrt, (list, tuple)) else (wrt,)


def _need_symbol(loss: Any, what: str) -> Symbol:
    if isinstance(loss, Symbol):
        return loss
    if isinstance(loss, Tensor):
        raise TypeError(
            f"{what}: {loss!r} is an eager Tensor (no Placeholder in it), so there is no graph "
            "to run; call loss.backward() and read .grad, or build the loss from Placeholders"
        )
    kind = type(loss)
    kind = kind.__qualname__ if kind.__module__ == "builtins" else \
        f"{kind.__module__.split('.')[0]}.{kind.__qualname__}"
    raise TypeError(
        f"{what}: expected a graph Symbol (the loss built from Placeholders and Variables), "
        f"got a {kind}, a value with no graph behind it, likely made from the loss by float(), "
        ".item() or gg.to_numpy() (of its value, sym.eval(feed)); pass the loss Symbol itself")


def gradients(loss: Any, wrt: Sequence[Any], feed: Mapping | None = None,
              grad: Any = None) -> list:
    """d loss / d w for each ``w`` in ``wrt``, as backend arrays, for one feed.

    >>> import numpy as np, gpugrad as gg
    >>> x = gg.Placeholder((2,), "float64", name="x")
    >>> w = gg.Variable(np.array([1.0, 3.0]), name="w")
    >>> [gg.to_numpy(d) for d in gg.gradients(gg.sum(x * w), [w], feed={x: np.ones(2)})]
    [array([1., 1.])]
    """
    sym = _need_symbol(loss, "gradients")
    sched, _ = sym._schedule(_as_tuple(wrt))
    return sched.run(feed or {}, True, grad, value=False)[1]


def value_and_gradients(loss: Any, wrt: Sequence[Any], feed: Mapping | None = None) -> tuple:
    """``(loss value, [d loss / d w, ...])`` from one forward and one backward sweep."""
    sym = _need_symbol(loss, "value_and_gradients")
    sched, _ = sym._schedule(_as_tuple(wrt))
    return sched.run(feed or {}, True)


def train_step(loss: Any, opt: Any, feed: Mapping | None = None) -> Any:
    """Forward, backward and ``opt``'s update of ``opt.params`` as one compiled program per
    input signature (``Optimizer.minimize`` calls this); returns the loss value.

    >>> import numpy as np, gpugrad as gg
    >>> x = gg.Placeholder((1,), "float64", name="x")
    >>> w = gg.Variable(np.array([2.0]), name="w")
    >>> opt = gg.optim.SGD([w], lr=0.25)
    >>> [float(gg.graph.train_step(gg.sum((w - x) ** 2), opt, {x: np.zeros(1)}))
    ...  for _ in range(2)]
    [4.0, 1.0]
    """
    sym = _need_symbol(loss, "minimize")
    sched, _ = sym._schedule(tuple(opt.params))
    return sched.train_step(opt, feed or {})
