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

from typing import Any, Mapping, Sequence

import numpy as np

from . import backend as B
from . import errors as E
from . import versions
from .eager import Node, as_array, backend_name, set_symbolic_builder
from .operators import ArrayOps
from .registry import Op
from .schedule import FeedError, Schedule
from .tensor import Tensor, no_grad


class Symbol(ArrayOps):
    """A node of a graph: an op applied to Symbols, Tensors and scalars. Computes on run."""

    __slots__ = ("op", "args", "params", "name", "site", "_schedules", "__weakref__")
    _gpugrad_symbolic = True

    def __init__(self, op: Op | None, args: tuple, params: dict, name: str | None = None):
        self.op = op
        self.args = args
        self.params = params
        self.name = name
        self.site = E.call_site()  # where the user built it, for error messages
        self._schedules: dict = {}

    def __getstate__(self) -> dict:  # pickle and deepcopy leave the compiled schedules
        from .serialize import symbol_state

        return symbol_state(self)

    def __setstate__(self, state: dict) -> None:
        from .serialize import set_symbol_state

        set_symbol_state(self, state)

    def eval(self, feed: Mapping | None = None) -> Any:
        """Run the graph forward and return this node's value as a backend array."""
        return self._schedule(())[0].run(feed or {}, False)[0]

    def _schedule(self, wrt: tuple) -> tuple["Schedule", Any]:
        xp = B.current().xp
        key = (wrt, xp)
        sched = self._schedules.get(key)
        if sched is None:
            sched = self._schedules[key] = Schedule(self, wrt)
        return sched, xp

    @property
    def shape(self) -> tuple:
        raise AttributeError(
            f"{self!r} has no shape until it runs; its shape depends on the feeds"
        )

    def __repr__(self) -> str:
        label = f" {self.name!r}" if self.name else ""
        return f"<Symbol{label} {self.op.name if self.op else '?'}>"

    def __bool__(self) -> bool:
        raise TypeError("a graph Symbol has no truth value until it runs; use .eval(feed)")


class Placeholder(Symbol):
    """A value fed in on each run and never moved (``x`` in the tutorial).

    ``shape`` may hold None for any size (``(None, 3)``: any batch of 3 features).
    ``dtype`` is a name such as ``"float32"`` or a backend dtype.
    """

    __slots__ = ("declared_shape", "dtype")

    def __init__(self, shape: Sequence[int | None], dtype: Any = "float32",
                 name: str | None = None):
        super().__init__(None, (), {}, name)
        self.declared_shape = tuple(shape)
        self.dtype = dtype

    @property
    def shape(self) -> tuple:
        return self.declared_shape

    def __repr__(self) -> str:
        return (f"Placeholder({self.declared_shape}, {B.dtype_name(self.dtype)!r}, "
                f"name={self.name!r})")

    def _label(self) -> str:
        return repr(self.name) if self.name else "(unnamed)"

    def check(self, value: Any, xp: Any, device: Any) -> Any:
        """The fed value as a backend array, checked against shape and dtype."""
        value = value.data if isinstance(value, Tensor) else value
        want = B.resolve_dtype(xp, self.dtype)
        if isinstance(value, (list, tuple, int, float)):
            value = np.asarray(value, dtype=B.dtype_name(want))
        if not B.is_backend_array(value):
            raise FeedError(E.at(f"Placeholder {self._label()}: feed is a "
                                 f"{type(value).__name__}, not an array"))
        shape = tuple(value.shape)
        ok = len(shape) == len(self.declared_shape) and all(
            d is None or d == s for d, s in zip(self.declared_shape, shape))
        if not ok:
            raise FeedError(E.at(
                f"Placeholder {self._label()}: fed shape {shape} does not match its declared "
                f"shape {_show_shape(self.declared_shape)}"))
        same = value.dtype is want or (xp is np and value.dtype == want)  # no str per feed
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
        raise B.BackendError(E.at(
            f"Placeholder {self._label()}: fed a {B.name_of(src)} array but the graph runs on "
            f"{backend_name(xp)}"))


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
        memo[cur] = Symbol(cur.op, args, cur.params)
    return memo[node]


def build(op: Op, args: tuple, params: dict) -> Symbol:
    """The symbolic dispatcher: an op applied to at least one Symbol."""
    _check_static_shapes(op, args, params)
    memo: dict = {}
    lifted = tuple(_lift(a._node, memo) if isinstance(a, Tensor) and a._node is not None else a
                   for a in args)
    return Symbol(op, lifted, params)


def _check_static_shapes(op: Op, args: tuple, params: dict) -> None:
    """Shapes known while building (Placeholders' declared shapes, where None matches any
    size; Tensors; scalars) are checked now, so a mismatch fails at the line that built it."""
    shapes = []
    for a in args:
        if isinstance(a, Placeholder):
            shapes.append(a.declared_shape)
        elif isinstance(a, Symbol):
            return  # an intermediate: its shape depends on the feeds
        elif isinstance(a, (int, float, bool)):
            shapes.append(())
        elif hasattr(a, "shape") and a is not None:
            shapes.append(tuple(a.shape))
    why = E.shape_problem(op.name, shapes, params)
    if why is not None:
        raise E.OpError(E.at(why))


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
    raise TypeError(f"{what}: expected a graph Symbol, got {type(loss).__name__}")


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
    return sched.run(feed or {}, True, grad)[1]


def value_and_gradients(loss: Any, wrt: Sequence[Any], feed: Mapping | None = None) -> tuple:
    """``(loss value, [d loss / d w, ...])`` from one forward and one backward sweep."""
    sym = _need_symbol(loss, "value_and_gradients")
    sched, _ = sym._schedule(_as_tuple(wrt))
    return sched.run(feed or {}, True)


def minimize(loss: Any, variables: Sequence[Tensor], lr: float,
             feed: Mapping | None = None) -> Any:
    """One gradient-descent step ``w := w - lr * dloss/dw``; returns the loss value (before
    the step) as a 0-d backend array. Everything stays on the device.

    >>> import numpy as np, gpugrad as gg
    >>> x = gg.Placeholder((1,), "float64", name="x")
    >>> w = gg.Variable(np.array([2.0]), name="w")
    >>> float(gg.minimize(gg.sum((w - x) ** 2), [w], lr=0.25, feed={x: np.zeros(1)}))
    4.0
    >>> gg.to_numpy(w.data)
    array([1.])
    """
    variables = _as_tuple(variables)
    value, grads = value_and_gradients(loss, variables, feed)
    lr = float(lr)
    with no_grad():
        for v, g in zip(variables, grads):
            v.data = as_array(v.xp, v.data - lr * g)
            versions.rebound(v)  # a new array: arrays saved earlier stay as they were
    return value
