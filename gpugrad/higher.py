"""Gradients of chosen Tensors, and gradients that are Tensors with graphs of their own.

The normal ``backward`` (gpugrad.eager) runs VJP rules on backend arrays, fast paths
included, and is untouched by this module. Here a ``Tape`` is the recorded graph between some
outputs and some targets, swept backward in one of two ways:

- ``create_graph=False``: the rules run on the backend arrays the forward saved, exactly as
  in ``backward``, but the gradients are returned for the targets (any Tensors, leaves or
  not) instead of accumulating into ``.grad``.
- ``create_graph=True``: the recorded forward is first replayed, in creation order, with
  ``gpugrad.array_api`` as ``xp``, so the residuals become Tensors connected to the
  leaves. Then each op's portable VJP rule runs with the same ``xp``, on a Tensor ``g``, and
  records ops as it goes: the gradients are Tensors that can be differentiated again. Fast
  paths are never used here; ops registered with ``twice_differentiable=False`` raise.

>>> import numpy as np, gpugrad as gg
>>> x = gg.Variable(np.array(0.5))
>>> gg.tanh(x).backward(create_graph=True)
>>> dx = x.grad                         # 1 - tanh(x)**2, a Tensor with a graph
>>> x.grad = None
>>> dx.backward()
>>> round(float(x.grad), 4)            # tanh''(0.5)
-0.7269
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from . import array_api as ns
from . import backend as B
from . import hooks, versions
from .eager import FREED, Node, _reachable, seed_gradient
from .fpstate import quiet
from .shaping import as_array, cast_gradient, unbroadcast
from .tensor import GradientError, Tensor, _grad_enabled


@contextlib.contextmanager
def recording(enabled: bool = True) -> Iterator[None]:
    """Ops record a tape inside (or do not, with ``enabled=False``), whatever ``no_grad``
    says outside: a transform that was asked for a gradient needs its tape."""
    token = _grad_enabled.set(enabled)
    try:
        yield
    finally:
        _grad_enabled.reset(token)


def key(t: Tensor) -> Any:
    """A Tensor's place on the tape: the Node that made it, or the leaf itself."""
    return t if t._node is None else t._node


def _shape_dtype(p: Any) -> tuple:
    if type(p) is Node:
        return tuple(p.shape), p.dtype
    return tuple(p.data.shape), p.data.dtype


class Tape:
    """The recorded graph from ``outputs`` back to ``targets``, ready to sweep.

    ``targets`` are Tensors (leaves or not); the sweep stops there. With ``targets=None``
    every leaf that requires a gradient is a target (what ``backward`` does).
    """

    def __init__(self, outputs: Sequence[Any], targets: Sequence[Tensor] | None,
                 create_graph: bool) -> None:
        self.outputs = [o for o in outputs]
        self.create_graph = create_graph
        self.stop = {} if targets is None else {key(t): t for t in targets}
        self.targets = targets
        starts = [key(o) for o in outputs if isinstance(o, Tensor) and o.requires_grad]
        self.nodes, self.leaves = self._collect(starts)
        if targets is None:
            self.targets = self.leaves
            self.stop = {t: t for t in self.leaves}
        self.useful = self._useful()
        self.xp = next((o.xp for o in outputs if isinstance(o, Tensor)), None)
        self.values: dict = {}
        self.residuals: dict = {}
        if create_graph and self.useful:
            self._replay()

    def _collect(self, starts: list) -> tuple[list, list]:
        if not starts:
            return [], []
        nodes, leaves = _reachable(starts[0], self.stop, starts[1:])
        nodes.reverse()  # creation order: inputs before their users
        return nodes, leaves

    def _useful(self) -> set:
        """The Nodes on a path to a target: only their VJPs need to run."""
        useful: set = set()
        for v in self.nodes:
            if any(need and (p in self.stop or p in useful)
                   for p, need in zip(v.inputs, v.needs)):
                useful.add(v)
        return useful

    def _replay(self) -> None:
        for v in self.nodes:
            if v in self.useful and not v.op.twice_differentiable:
                raise GradientError(
                    f"backward(create_graph=True): op {v.op.name!r} cannot be differentiated "
                    "twice (it is registered with twice_differentiable=False: its VJP rule is "
                    "not array-API code that gpugrad can record)"
                )
        with recording(), B.use_backend(self.xp, None if self.xp is np else self._device()):
            for v in self.nodes:
                args = _constants_as_tensors(v.op, [self._value(p) for p in v.inputs])
                try:
                    out, res = v.op.forward(ns, *args, **v.params)
                except (AttributeError, NotImplementedError) as exc:
                    raise GradientError(
                        f"backward(create_graph=True): op {v.op.name!r}'s forward rule could "
                        f"not run on gpugrad.array_api ({exc}); register the op with "
                        "twice_differentiable=False if its rules are not array-API code"
                    ) from exc
                self.values[v] = out
                self.residuals[v] = res

    def _device(self) -> Any:
        return next(B.device_of(o.data) for o in self.outputs if isinstance(o, Tensor))

    def _value(self, p: Any) -> Any:
        if type(p) is Node:
            t = self.stop.get(p)
            return self.values[p] if t is None else t
        if isinstance(p, Tensor) or not B.is_backend_array(p):
            return p
        return Tensor(p)

    SKIP = object()
    """A seed that leaves its output out of the sweep."""

    def sweep(self, seeds: Sequence[Any] | None = None) -> list:
        """Gradients for each target (None where no gradient reaches it), given one seed per
        output (None: ones, for a one-element output; ``Tape.SKIP``: leave it out).

        A target's gradient counts the paths that reach it without passing through another
        target."""
        if seeds is None:
            seeds = [None] * len(self.outputs)
        grads: dict = {}
        for out, seed in zip(self.outputs, seeds):
            if seed is Tape.SKIP or not (isinstance(out, Tensor) and out.requires_grad):
                continue
            g = self._seed(out, seed)
            k = key(out)
            grads[k] = g if k not in grads else grads[k] + g
        if self.create_graph:
            with recording(), B.use_backend(self.xp, None if self.xp is np else
                                            self._device()), quiet(self.xp):
                self._run(grads, ns, self.residuals)
        else:
            with recording(False), quiet(self.xp):  # a tiny gradient is not an error
                self._run(grads, self.xp, None)
        return [grads.get(key(t)) for t in self.targets]

    def _seed(self, out: Tensor, seed: Any) -> Any:
        if self.create_graph:
            if isinstance(seed, Tensor) and seed.requires_grad:
                if tuple(seed.shape) != tuple(out.shape):
                    raise GradientError(f"seed gradient has shape {seed.shape} but the output "
                                        f"has shape {out.shape}; they must match")
                return seed if seed.dtype == out.dtype else ns.astype(seed, out.dtype)
            return Tensor(seed_gradient(out.data, out.xp, seed, "backward"))
        if isinstance(seed, Tensor):
            seed = seed.data
        return seed_gradient(out.data, out.xp, seed, "backward")

    def _run(self, grads: dict, xp: Any, residuals: dict | None) -> None:
        backend = self.xp
        for v in reversed(self.nodes):
            g = grads.pop(v, None)
            if g is None or v not in self.useful:
                continue
            op = v.op
            if residuals is None:
                res = v.res
                if res is FREED:
                    raise GradientError(
                        f"gradient: the saved arrays of {op.name} were already freed by an "
                        "earlier backward; call backward(retain_graph=True) the first time if "
                        "you need to go backward through the graph again"
                    )
                fast = op.fast_vjp.get(v.backend) if op.fast_vjp else None
                gs = (fast(xp, g, res, **v.params) if fast is not None
                      else op.grads(xp, g, res, v.needs, v.params))
            else:
                gs = [gi if gi is None or isinstance(gi, Tensor) else Tensor(gi)
                      for gi in op.grads(xp, g, residuals[v], v.needs, v.params)]
            for p, need, gi in zip(v.inputs, v.needs, gs):
                if not need or gi is None:
                    continue
                shape, dtype = _shape_dtype(p)
                gi = _fit(xp, backend, gi, shape, dtype)
                if gi is None:
                    continue
                prev = grads.get(p)
                grads[p] = gi if prev is None else as_array(xp, prev + gi)


def _fit(xp: Any, backend: Any, g: Any, shape: tuple, dtype: Any) -> Any:
    """``g`` summed back over broadcast axes to ``shape``, in ``dtype``; None for an integer
    or boolean input, which has no gradient. ``xp`` may be the differentiable namespace;
    ``backend`` is the namespace the dtypes belong to."""
    g = as_array(xp, g)
    if tuple(g.shape) != shape:
        g = unbroadcast(xp, g, shape)
    if g.dtype != dtype:
        g = cast_gradient(xp, backend, g, dtype)
    return g


def _constants_as_tensors(op: Any, args: list) -> list:
    """Python scalars where the op's rule needs arrays become 0-d constants of the floating
    input's dtype, as the eager engine does on the first run."""
    if all(type(a) not in (bool, int, float) or i in op.scalar_ok for i, a in enumerate(args)):
        return args
    ref = next((a for a in args if isinstance(a, Tensor)
                and B.is_floating(a.xp, a.dtype)), None)
    if ref is None:
        ref = next(a for a in args if isinstance(a, Tensor))
    out = []
    for i, a in enumerate(args):
        if type(a) in (bool, int, float) and i not in op.scalar_ok:
            floating = B.is_floating(ref.xp, ref.dtype) and type(a) is not bool
            a = ns.asarray(a, dtype=ref.dtype if floating else None, device=ref.device)
        out.append(a)
    return out


def backward(root: Tensor, grad: Any = None) -> None:
    """``root.backward(grad, create_graph=True)``: each leaf's ``.grad`` becomes (or has added
    to it) a Tensor with a graph. Saved arrays are kept, as with ``retain_graph=True``."""
    if root._node is not None:  # the replay reads its inputs' current values
        nodes, _ = _reachable(root._node)
        if versions.last_event >= nodes[-1].seq:
            versions.check(nodes, FREED, replayed=True)
    if not root.requires_grad:
        raise GradientError(
            "backward: this Tensor does not require gradients (no Variable led to it, or it "
            "was computed under no_grad)"
        )
    tape = Tape([root], None, create_graph=True)
    for leaf, g in zip(tape.targets, tape.sweep([grad])):
        if g is None:
            continue
        if leaf.grad is None:
            leaf.grad = g
        else:
            prev = leaf.grad if isinstance(leaf.grad, Tensor) else Tensor(leaf.grad)
            leaf.grad = prev + g


hooks.sweep_with_graph = backward
