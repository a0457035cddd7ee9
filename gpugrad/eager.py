"""The eager engine: run an op now and record it on the tape; sweep the tape backward.

The tape is made of Nodes. A Node keeps what its VJP needs (residuals, params), the output's
shape and dtype, and its inputs: the Node that made a non-leaf input, the leaf Tensor itself,
or a constant. It never keeps an intermediate Tensor, so an activation nobody names is freed
as soon as backward has used its residuals.
"""

from __future__ import annotations

import operator
import threading
from typing import Any, Callable, Sequence

import numpy as np

from . import backend as B
from . import errors as E
from . import diagnose as D
from . import hooks
from . import versions
from .eager_inputs import SCALARS as _SCALARS
from .eager_inputs import check_promotion as _check_promotion
from .eager_inputs import mix_error as _mix_error
from .eager_inputs import same_kind as _same_kind
from .eager_inputs import scalars_to_arrays as _scalars_to_arrays
from .registry import Op, set_dispatcher
from .tensor import GradientError, Tensor, _grad_enabled, made, no_grad
from .shaping import as_array, fit, seed_gradient
from .sinks import grad_sinks, into_sink, open_sinks  # grad_sinks: re-exported
from .versions import sequence as _sequence


class _Freed:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<freed>"


FREED = _Freed()


class Node:
    """One recorded op application: what backward and graph lifting need, and no more."""

    # "site" (where the op ran, kept in anomaly mode) and "sums" (checksums of saved host
    # arrays) are set only when needed; unset slots cost nothing
    __slots__ = ("op", "params", "inputs", "needs", "res", "backend", "shape", "dtype", "seq",
                 "site", "sums")

    def __init__(self, op: Op, params: dict, inputs: tuple, needs: tuple, res: Any,
                 backend: str, shape: tuple, dtype: Any) -> None:
        self.seq = next(_sequence)  # creation order: every input was made before its user
        self.op = op
        self.params = params
        self.inputs = inputs  # per argument: a Node, a leaf Tensor, or a constant
        self.needs = needs    # per argument: does a gradient flow into it
        self.res = res
        self.backend = backend
        self.shape = shape
        self.dtype = dtype

    def __repr__(self) -> str:
        return f"<Node {self.op.name} {self.shape}>"


_XP_NAMES: dict[Any, str] = {np: "numpy"}


def backend_name(xp: Any) -> str:
    name = _XP_NAMES.get(xp)
    if name is None:
        name = _XP_NAMES[xp] = B.name_of(xp)
    return name


_symbolic_builder: Callable[..., Any] | None = None


def set_symbolic_builder(fn: Callable[..., Any]) -> None:
    """Installed by the graph module: how an op applied to a Symbol builds a graph node."""
    global _symbolic_builder
    _symbolic_builder = fn


_describe = D.describe

_anomaly: Any = None
"""Set by gpugrad.anomaly while a ``detect_anomaly`` block is open anywhere; None otherwise,
so anomaly mode costs one check per op when it is off."""


def set_anomaly_hook(hook: Any) -> None:
    global _anomaly
    _anomaly = hook


def apply(op: Op, args: Sequence[Any], params: dict) -> Any:
    """Run ``op`` now on Tensors, backend arrays and scalars, recording it if needed.

    One or two arguments that are Tensors of one backend, device and dtype (or Python
    scalars the rule takes as they are) go the short way; anything else is sorted out by
    :func:`_apply_general`, which also raises the errors."""
    n = len(args)
    if n == 2:
        a, b = args
        if isinstance(a, Tensor):
            xp = a.xp
            x = a.data
            if isinstance(b, Tensor):
                y = b.data
                if b.xp is not xp or y.dtype is not x.dtype or (
                        xp is not np and y.device != x.device):
                    return _apply_general(op, args, params)
                gb = b.requires_grad
            elif type(b) in _SCALARS and 1 in op.scalar_ok:
                y = b
                gb = False
            else:
                return _apply_general(op, args, params)
            ga = a.requires_grad
        elif isinstance(b, Tensor) and type(a) in _SCALARS and 0 in op.scalar_ok:
            xp = b.xp
            x = a
            y = b.data
            ga = False
            gb = b.requires_grad
        else:
            return _apply_general(op, args, params)
        arrays: Any = (x, y)
        if ga or gb:
            inputs: Any = ((a if a._node is None else a._node) if ga else a,
                           (b if b._node is None else b._node) if gb else b)
            needs: Any = (ga, gb)
        else:
            inputs = None
    elif n == 1 and isinstance(args[0], Tensor):
        a = args[0]
        xp = a.xp
        arrays = (a.data,)
        inputs = (a if a._node is None else a._node,) if a.requires_grad else None
        needs = _NEED_ONE
    elif n == 3 and _same_kind(args):  # linear(x, W, b), where(...)
        a, b, c = args
        xp = a.xp
        arrays = (a.data, b.data, c.data)
        ga, gb, gc = a.requires_grad, b.requires_grad, c.requires_grad
        if ga or gb or gc:
            inputs = ((a if a._node is None else a._node) if ga else a,
                      (b if b._node is None else b._node) if gb else b,
                      (c if c._node is None else c._node) if gc else c)
            needs = (ga, gb, gc)
        else:
            inputs = None
    else:
        return _apply_general(op, args, params)
    if params or xp is not np or _anomaly is not None:
        return _run(op, xp, arrays, params, inputs, needs if inputs else (), None, False)
    # the commonest case of all (NumPy, no static parameters): _run's work, written out
    ff = op.fast_forward
    try:
        out, res = (ff.get("numpy", op.forward) if ff else op.forward)(xp, *arrays)
    except (ValueError, TypeError, IndexError) as exc:
        if isinstance(exc, (E.OpError, E.DtypeError, B.BackendError)):
            raise
        raise D.op_error(op.name, op.__signature__, arrays, params, exc) from exc
    if type(out) is not np.ndarray:
        out = np.asarray(out)
    dtype = out.dtype
    if inputs is not None and dtype.kind in "fc" and op.differentiable and _grad_enabled.get():
        return made(out, xp, Node(op, params, inputs, needs, res, "numpy", out.shape, dtype))
    return made(out, xp)


_NEED_ONE = (True,)


def _apply_general(op: Op, args: Sequence[Any], params: dict) -> Any:
    """:func:`apply` for any arguments: backend arrays, scalars that become arrays, None,
    mixed dtypes, graph Symbols (which build a graph node instead)."""
    # arrays: what the rule gets; inputs/needs: what the Node records, made only when some
    # input requires a gradient (copies of args, with each such Tensor replaced)
    arrays = list(args)
    inputs: list | None = None
    needs: list = []
    ref: Tensor | None = None
    xp: Any = None
    convert = False
    raw = None
    mixed = False  # two array inputs of different dtypes: check the result's dtype
    for i, a in enumerate(args):
        if isinstance(a, Tensor):
            if xp is None:
                xp, ref = a.xp, a
            elif a.xp is not xp or (xp is not np and a.data.device != ref.data.device):
                raise _mix_error(op, ref, a)
            elif a.data.dtype is not ref.data.dtype:
                mixed = True
            arrays[i] = a.data
            if a.requires_grad:
                if inputs is None:
                    inputs = list(args)
                    needs = [False] * len(args)
                node = a._node
                inputs[i] = a if node is None else node
                needs[i] = True
        elif type(a) in _SCALARS:
            if i not in op.scalar_ok:
                convert = True
        elif a is None:
            pass
        elif getattr(a, "_gpugrad_symbolic", False):
            return _symbolic_builder(op, args, params)
        elif B.is_backend_array(a):
            t = Tensor(a)
            if xp is None:
                xp, ref = t.xp, t
            elif t.xp is not xp or (xp is not np and a.device != ref.data.device):
                raise _mix_error(op, ref, a)
            elif a.dtype is not ref.data.dtype:
                mixed = True
            raw = [a] if raw is None else raw + [a]
        else:
            raise TypeError(E.at(B.refuse_argument(f"{op.name}: argument {i}", a)))
    if xp is None:
        b = B.current()
        xp = b.xp
        arrays = [B.to_backend(a, None, b) if type(a) in _SCALARS else a for a in arrays]
        convert = False
    if convert:
        _scalars_to_arrays(op, arrays, None if ref is None else ref.data, xp)
    return _run(op, xp, arrays, params, None if inputs is None else tuple(inputs),
                tuple(needs), raw, mixed)


def _run(op: Op, xp: Any, arrays: Sequence[Any], params: dict, inputs: tuple | None,
         needs: tuple, raw: list | None, mixed: bool) -> Tensor:
    """Run ``op``'s rule on ``arrays`` and wrap the result, recording a Node when ``inputs``
    (what the Node keeps per argument) is given and the result can carry a gradient."""
    name = _XP_NAMES.get(xp) or backend_name(xp)
    forward = op.fast_forward.get(name, op.forward) if op.fast_forward else op.forward
    try:
        out, res = forward(xp, *arrays, **params)
    except (ValueError, TypeError, IndexError) as exc:
        if isinstance(exc, (E.OpError, E.DtypeError, B.BackendError)):
            raise
        raise D.op_error(op.name, op.__signature__, arrays, params, exc) from exc
    if xp is np:
        if type(out) is not np.ndarray:
            out = np.asarray(out)
        dtype = out.dtype
        floating = dtype.kind in "fc"  # complex values carry gradients too
    else:
        dtype = out.dtype
        floating = B.is_inexact(xp, dtype)
    if mixed and floating:
        _check_promotion(op, arrays, dtype, xp)
    node = None
    if inputs is not None and floating and op.differentiable and _grad_enabled.get():
        node = Node(op, params, inputs, needs, res, name, out.shape, dtype)
        if raw is not None:
            versions.fingerprint(node, raw)
    if _anomaly is not None:
        _anomaly.forward(op, arrays, out, node)
    return made(out, xp, node)


set_dispatcher(apply)


# --- backward ------------------------------------------------------------------------------

def vjp(op: Op, xp: Any, g: Any, res: Any, needs: tuple, params: dict, name: str) -> Any:
    """The op's gradients for the inputs in ``needs``: its fast path for this backend if it
    has one, else the portable rule."""
    fast = op.fast_vjp.get(name) if op.fast_vjp else None
    if fast is not None:
        return fast(xp, g, res, **params)
    return op.grads(xp, g, res, needs, params)


def _reachable(start: Any, stop: Any = (), more: Any = ()) -> tuple[list, list]:
    """(Nodes, leaf Tensors) that gradients from ``start`` (and ``more`` starts) reach,
    found without recursion, not walking past anything in ``stop``. Nodes come back latest
    first: a Node's inputs were all created before it."""
    nodes, leaves = [], []
    stack = [start, *more]
    seen = set(stack)
    push, pop, add, keep, leaf = stack.append, stack.pop, seen.add, nodes.append, leaves.append
    while stack:
        v = pop()
        if stop and v in stop:
            continue
        if type(v) is not Node:
            leaf(v)
            continue
        keep(v)
        for p, need in zip(v.inputs, v.needs):
            if need and p not in seen:
                add(p)
                if type(p) is Node or (stop and p in stop):
                    push(p)
                else:  # a leaf Tensor: no need to go round the stack
                    leaf(p)
    nodes.sort(key=_by_seq, reverse=True)
    return nodes, leaves


_by_seq = operator.attrgetter("seq")


def backward(root: Tensor, grad: Any = None, retain_graph: bool = False) -> None:
    """Reverse-mode sweep from ``root``; see Tensor.backward (``create_graph=True`` takes
    gpugrad.higher's sweep instead)."""
    if not root.requires_grad:
        raise GradientError(E.at(
            "backward: this Tensor does not require gradients (no Variable led to it, or it "
            "was computed under no_grad)"))
    xp = root.xp
    start = root._node if root._node is not None else root
    grads = {start: seed_gradient(root.data, xp, grad, "backward")}
    nodes, leaves = _reachable(start)
    if nodes and versions.last_event >= nodes[-1].seq:  # something was written since
        versions.check(nodes, FREED)
    anomaly = _anomaly if _anomaly is not None and _anomaly.enabled() else None
    tick = _start_hooks(nodes, leaves, grads) if backward_hooks else None
    sinks = open_sinks(leaves) if grad_sinks else None
    is_np = xp is np
    ndarray = np.ndarray
    with no_grad():
        for v in nodes:
            if tick is not None:
                tick()
            g = grads.pop(v, None)
            if g is None:
                continue
            res = v.res
            if res is FREED:
                raise GradientError(E.at(
                    f"backward: the saved arrays of {v.op.name} were already freed by an "
                    "earlier backward; call backward(retain_graph=True) the first time if you "
                    "need to go backward through the graph twice"))
            op = v.op
            needs = v.needs
            params = v.params
            fast = op.fast_vjp.get(v.backend) if op.fast_vjp else None
            rules = False
            if fast is not None:
                gs = fast(xp, g, res, **params) if params else fast(xp, g, res)
            elif op.vjps is not None and anomaly is None:
                # one rule per input: only the needed ones run, in the loop below
                gs = op.fast_vjps.get(v.backend, op.vjps) if op.fast_vjps else op.vjps
                rules = True
            else:
                gs = op.grads(xp, g, res, needs, params)
            if anomaly is not None:
                anomaly.backward(op, v.needs, res, g, gs, getattr(v, "site", None))
            for p, need, gi in zip(v.inputs, needs, gs):
                if not need:
                    continue
                if sinks is not None and p in sinks:
                    into_sink(xp, p, gi, rules, g, res, params, grads, sinks[p])
                    continue
                if rules:
                    gi = gi(xp, g, res, **params) if params else gi(xp, g, res)
                if gi is None:
                    continue
                if type(p) is Node:
                    shape, dtype = p.shape, p.dtype
                else:
                    shape, dtype = p.data.shape, p.data.dtype
                if not (is_np and type(gi) is ndarray and gi.shape == shape
                        and (gi.dtype is dtype or gi.dtype == dtype)):
                    gi = fit(xp, gi, shape, dtype)
                    if gi is None:
                        continue
                prev = grads.get(p)
                grads[p] = gi if prev is None else as_array(xp, prev + gi)
            if not retain_graph:
                v.res = FREED
        if tick is not None:
            tick()
        accumulate(xp, [(leaf, grads.pop(leaf, None)) for leaf in leaves])


def accumulate(xp: Any, pairs: Any) -> None:
    """Add each (leaf, gradient) pair's gradient into the leaf's ``.grad``, out of place (a
    None gradient adds nothing), under one lock: two threads adding into one shared leaf
    both land. Callers run it under ``no_grad``."""
    with _accumulating:
        for leaf, g in pairs:
            if g is not None:
                leaf.grad = g if leaf.grad is None else as_array(xp, leaf.grad + g)


def hand_over(xp: Any, leaves: Sequence, grads: Sequence) -> None:
    """:func:`accumulate` of one gradient per leaf, each already of its leaf's shape and
    dtype (a compiled call's, computed with its forward): a leaf whose ``.grad`` is None
    takes its gradient as it is, the others add out of place (under ``no_grad`` where the
    ``.grad`` is a Tensor), in one loop under the same lock.

    >>> import numpy as np, gpugrad as gg
    >>> a, b = gg.Variable(np.ones(2)), gg.Variable(np.ones(2))
    >>> b.grad = np.ones(2)
    >>> hand_over(np, [a, b], [np.full(2, 2.0), np.full(2, 3.0)])
    >>> a.grad, b.grad
    (array([2., 2.]), array([4., 4.]))
    """
    with _accumulating:
        for leaf, g in zip(leaves, grads):
            prev = leaf.grad
            if prev is None:
                leaf.grad = g
            elif g is not None:
                if isinstance(prev, Tensor):  # (a create_graph backward's: adds untaped)
                    with no_grad():
                        leaf.grad = as_array(xp, prev + g)
                else:
                    leaf.grad = as_array(xp, prev + g)


_accumulating = threading.Lock()
hooks.sweep = backward


# --- backward hooks: gpugrad.distributed starts its allreduces while the sweep runs --------

backward_hooks: list = []
"""Callables ``hook(nodes, leaves, grads) -> tick or None``, run as a sweep starts. The
sweep calls ``tick()`` before each Node and once after the last: at each call, every Node
before the current one is done, and ``grads`` holds the leaf gradients they produced (not
yet added into ``.grad``). Empty by default: then a sweep checks one None per Node."""


def _start_hooks(nodes: list, leaves: list, grads: dict) -> Callable[[], None] | None:
    ticks = [t for t in (hook(nodes, leaves, grads) for hook in list(backward_hooks))
             if t is not None]
    if not ticks:
        return None
    if len(ticks) == 1:
        return ticks[0]
    return lambda: [t() for t in ticks] and None
