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
from .operators import ArrayOps
from .registry import Op
from .eager import (
    Node,
    _describe,
    _scalars_to_arrays,
    as_array,
    backend_name,
    fit,
    seed_gradient,
    set_symbolic_builder,
    vjp,
)
from .tensor import OpError, Tensor, no_grad


class FeedError(ValueError):
    """A feed is missing, or does not match its Placeholder's shape or dtype."""


class Symbol(ArrayOps):
    """A node of a graph: an op applied to Symbols, Tensors and scalars. Computes on run."""

    __slots__ = ("op", "args", "params", "name", "_schedules", "__weakref__")
    _gpugrad_symbolic = True

    def __init__(self, op: Op | None, args: tuple, params: dict, name: str | None = None):
        self.op = op
        self.args = args
        self.params = params
        self.name = name
        self._schedules: dict = {}

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
            raise FeedError(f"Placeholder {self._label()}: feed is a {type(value).__name__}, "
                            "not an array")
        shape = tuple(value.shape)
        ok = len(shape) == len(self.declared_shape) and all(
            d is None or d == s for d, s in zip(self.declared_shape, shape))
        if not ok:
            raise FeedError(
                f"Placeholder {self._label()}: fed shape {shape} does not match its declared "
                f"shape {_show_shape(self.declared_shape)}"
            )
        if B.dtype_name(value.dtype) != B.dtype_name(want):
            raise FeedError(
                f"Placeholder {self._label()}: fed dtype {B.dtype_name(value.dtype)} but it "
                f"was declared {B.dtype_name(want)}; convert the data first, e.g. "
                f"x.astype({B.dtype_name(want)!r})"
            )
        src = B.namespace_of(value)
        if src is xp or B.name_of(src) == backend_name(xp):
            if device is not None and xp is not np and B.device_of(value) != device:
                raise B.BackendError(
                    f"Placeholder {self._label()}: fed on device {B.device_of(value)} but the "
                    f"graph's Variables live on {device}"
                )
            return value
        if src is np:  # host data crosses to the device here, once per feed
            return xp.asarray(value, device=device) if device is not None else xp.asarray(value)
        raise B.BackendError(
            f"Placeholder {self._label()}: fed a {B.name_of(src)} array but the graph runs on "
            f"{backend_name(xp)}"
        )


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
    memo: dict = {}
    lifted = tuple(_lift(a._node, memo) if isinstance(a, Tensor) and a._node is not None else a
                   for a in args)
    return Symbol(op, lifted, params)


set_symbolic_builder(build)


class Schedule:
    """A graph compiled for one output and one list of gradient targets.

    Slots hold every value; steps are ``(op, input slots, params, output slot)`` in
    topological order; the backward steps are the ones on a path to a target, reversed.
    """

    def __init__(self, root: Symbol, wrt: tuple) -> None:
        slot_of: dict = {}
        template: list = []
        self.placeholders: list[tuple[int, Placeholder]] = []
        self.tensors: list[tuple[int, Tensor]] = []
        steps: list = []

        def leaf_slot(a: Any) -> int:
            if isinstance(a, (Symbol, Tensor)):
                s = slot_of.get(a)
                if s is not None:
                    return s
                s = slot_of[a] = len(template)
                template.append(None)
                if isinstance(a, Tensor):
                    self.tensors.append((s, a))
                else:
                    self.placeholders.append((s, a))
                return s
            template.append(a)  # a Python scalar or None: a constant slot
            return len(template) - 1

        stack: list[tuple[Symbol, bool]] = [(root, False)]
        while stack:
            sym, expanded = stack.pop()
            if sym in slot_of:
                continue
            if sym.op is None:
                leaf_slot(sym)
                continue
            if not expanded:
                stack.append((sym, True))
                for a in sym.args:
                    if isinstance(a, Symbol) and a not in slot_of:
                        stack.append((a, False))
                continue
            ins = tuple(slot_of[a] if isinstance(a, Symbol) else leaf_slot(a)
                        for a in sym.args)
            out = slot_of[sym] = len(template)
            template.append(None)
            has_scalar = any(isinstance(a, (int, float)) for a in sym.args)
            steps.append((sym.op, ins, sym.params, out, has_scalar))
        if isinstance(root, Placeholder):
            raise ValueError("a Placeholder on its own is not a graph to run")
        self.template = template
        self.steps = steps
        self.out = slot_of[root]

        wanted = []
        for w in wrt:
            s = slot_of.get(w)
            if s is None:
                raise ValueError(f"gradients: {w!r} is not used by the graph of {root!r}")
            if isinstance(w, Tensor) and not w.requires_grad:
                raise ValueError(f"gradients: {w!r} does not require gradients")
            wanted.append(s)
        self.wrt = wanted
        needs_grad = [False] * len(template)
        for s in wanted:
            needs_grad[s] = True
        back = []
        for k, (op, ins, params, out, _) in enumerate(steps):
            needs = tuple(needs_grad[i] for i in ins)
            if op.differentiable and any(needs):
                needs_grad[out] = True
                back.append((k, op, ins, params, out, needs))
        back.reverse()
        keep = set(wanted)
        self.back = [(k, op, ins, params, out, needs, out not in keep)
                     for k, op, ins, params, out, needs in back]
        self.keep_res = {k for k, *_ in back}

        leaf = self.tensors[0][1] if self.tensors else None
        b = B.current()
        self.xp = leaf.xp if leaf is not None else b.xp
        self.device = leaf.device if leaf is not None else b.device
        self.backend = backend_name(self.xp)
        for _, t in self.tensors:
            if t.xp is not self.xp or (self.xp is not np and t.device != self.device):
                raise B.BackendError(
                    f"graph: Variables live on different backends or devices "
                    f"({B.describe_device(self.xp, self.device)} and "
                    f"{B.describe_device(t.xp, t.device)})"
                )
        self.forwards = [op.fast_forward.get(self.backend, op.forward) for op, *_ in steps]

    def run(self, feed: Mapping, grads: bool, seed: Any = None) -> tuple[Any, list]:
        xp = self.xp
        vals = list(self.template)
        for s, ph in self.placeholders:
            try:
                value = feed[ph]
            except KeyError:
                raise FeedError(
                    f"Placeholder {ph._label()} was not fed; pass feed={{placeholder: array}} "
                    "for every Placeholder the graph uses"
                ) from None
            vals[s] = ph.check(value, xp, self.device)
        for s, t in self.tensors:
            vals[s] = t.data
        res: list = [None] * len(self.steps)
        keep = self.keep_res if grads else ()
        is_np = xp is np
        k = 0
        try:
            for k, (op, ins, params, out, has_scalar) in enumerate(self.steps):
                args = [vals[i] for i in ins]
                if has_scalar:
                    ref = next((a for a in args if hasattr(a, "dtype")), None)
                    _scalars_to_arrays(op, args, ref, xp)
                o, r = self.forwards[k](xp, *args, **params)
                if is_np and type(o) is not np.ndarray:
                    o = np.asarray(o)
                vals[out] = o
                if k in keep:
                    res[k] = r
        except (ValueError, TypeError, IndexError) as exc:
            op, ins = self.steps[k][0], self.steps[k][1]
            shapes = ", ".join(_describe(vals[i]) for i in ins)
            raise OpError(f"{op.name}: {exc} (inputs: {shapes})") from exc
        value = vals[self.out]
        if not grads:
            return value, []
        gv: list = [None] * len(vals)
        gv[self.out] = seed_gradient(value, xp, seed, "gradients")
        with no_grad():
            for k, op, ins, params, out, needs, drop in self.back:
                g = gv[out]
                if g is None:
                    continue
                if drop:
                    gv[out] = None
                gs = vjp(op, xp, g, res[k], needs, params, self.backend)
                res[k] = None
                for i, need, gi in zip(ins, needs, gs):
                    if not need or gi is None:
                        continue
                    like = vals[i]
                    gi = fit(xp, gi, like.shape, like.dtype)
                    if gi is None:
                        continue
                    prev = gv[i]
                    gv[i] = gi if prev is None else as_array(xp, prev + gi)
        out_grads = [gv[s] if gv[s] is not None else xp.zeros_like(vals[s]) for s in self.wrt]
        return value, out_grads




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
    return value
