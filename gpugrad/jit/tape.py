"""A ``gg.compile`` trace and its calls, each recorded on the eager tape as one op.

An :class:`Entry` is one signature's trace: the Placeholders that stand for the array
arguments, the outputs (Symbols, arguments returned as they are, constants) and the schedules
built from them. :meth:`Entry.run` feeds a call's arrays and records the tape node:

- a scalar output (a loss) runs forward and backward at once, as the schedule's planned
  program seeded with ones; the node's VJP scales those gradients by its seed, and
  ``loss.backward()`` with the seed one hands them to the leaves' ``.grad`` without the
  general sweep (``whole.whole_sweep``, through ``Tensor.backward``'s hook);
- other outputs run the forward sweep now and keep what it saved; the VJP runs the backward
  sweep (output 0) or a schedule of that output's own (the others).

Several outputs share one forward sweep: the first is the schedule's root and the others are
gradient targets too, slots a schedule never drops. The node keeps the arrays backward reads,
so version counters still refuse one written in place before backward.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from .. import backend as B
from .. import eager as _eager
from .. import versions
from .. import errors as E
from ..eager import Node, backend_name
from ..graph import Placeholder, Symbol, _lift, compile_trace, shape_reads
from ..pytree import tree_flatten, tree_unflatten
from ..registry import Op
from ..tensor import Tensor, _grad_enabled, made
from ..compiler import batch
from ..compiler.listing import listing
from ..compiler.schedule import Schedule
from ..compiler.trace import trace
from .whole import ALL, NO_PARAMS, CompiledCall, Direct, Done, anomaly_on, done_node, never


class Entry:
    """One trace: its schedule(s), the argument Placeholders and how outputs are rebuilt."""

    guard: Any = None
    """The check that what the trace read from outside its arguments is unchanged
    (gpugrad.jit.guards; None: it read nothing to guard). ``gg.compile`` sets it."""

    direct: Direct | None = None  # a recorded loss's whole run, called directly once learnt
    quick = False  # a loss whose node :meth:`run` makes itself (see _plan_gradients)

    symbolic: bool = False
    """Whether the trace serves every batch size: its arguments' batch dims (:func:`marks`)
    are None in its Placeholders, as the traced Python never read one."""

    def __init__(self, fn: Callable, leaves: list, structure: Any, arrays: list,
                 has_kwargs: bool) -> None:
        self.name = getattr(fn, "__name__", "fn")
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
            reads = shape_reads.set([])
            try:
                out = _call_traced(fn, args, kwargs)
                read = shape_reads.get()
            finally:
                shape_reads.reset(reads)
            self._batch(marks(leaves, arrays), read, out)
            self._plan_outputs(out)
        if self.syms:
            self._plan_gradients(leaves)

    def _batch(self, marked: tuple, read: list, out: Any) -> None:
        """Make the trace serve every batch size (the batch dims of its Placeholders None),
        unless the traced Python read a shape that depends on the batch size or the graph's
        shapes do not follow the batch (gpugrad.compiler.batch.follows)."""
        batched = {id(ph) for ph, m in zip(self.placeholders, marked) if m}
        if not batched or batch.read_batch(read, batched) or not all(
                batch.follows(*batch.probe_input(o, batched)) for o in tree_flatten(out)[0]
                if isinstance(o, Symbol) and o.op is not None):
            return
        for ph, m in zip(self.placeholders, marked):
            if m:
                ph.declared_shape = ph._shape = (None, *ph.declared_shape[1:])
        self.symbolic = True

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
        self.loss = self.out_structure is None and self.out_plan[0][0] == "sym"
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
        self.op = CompiledCall(f"compile({self.name})", never, twice_differentiable=False)
        self.op.vjp = _vjp
        self.xp = self.schedule(()).xp
        self.backend_name = backend_name(self.xp)
        # the tape calls it as a fast VJP, without the per-call check of the gradient tuple
        # (_vjp returns one gradient per input)
        self.op.fast_vjp[self.backend_name] = _vjp

    def _plan_gradients(self, leaves: list) -> None:
        """What the signature fixes (grad mode and which arguments require gradients are part
        of it): the arguments whose gradients the call computes, whether it is recorded on
        the tape, and its schedule."""
        self.grad_args: tuple = ()
        self.record = False
        if _grad_enabled.get():
            self.grad_args = tuple(
                j for j, i in enumerate(self.arrays) if j not in self.unused
                and isinstance(leaves[i], Tensor) and leaves[i].requires_grad)
            self.record = bool(self.variables or self.grad_args)
        self.sched = self.schedule(self.grad_args)
        # a recorded scalar: None until its first call, then what a whole run keeps for the
        # version check (forward and backward at once from then on), or False (not a
        # floating scalar: forward now, backward later); False for anything else
        self.whole: tuple | bool | None = None if self.record and len(self.syms) == 1 else False
        self.direct = None  # the whole run's NumPy program, called directly
        # a loss whose only gradient targets are Variables: its whole run's node is made in
        # :meth:`run` itself (its inputs and their needs are fixed)
        self.quick = self.loss and not self.grad_args
        self.needs = ALL[len(self.variables)] if len(self.variables) < len(ALL) else (
            (True,) * len(self.variables))

    def schedule(self, args: tuple, k: int = 0) -> Schedule:
        """The schedule of output ``k`` (0: all outputs, one sweep) whose gradient targets
        are the Variables and the Placeholders of arguments ``args``."""
        sched = self.schedules.get((args, k))
        if sched is None:
            targets = (*self.variables, *(self.placeholders[j] for j in args))
            with B.use_backend(self.backend):
                if k == 0:
                    sched = Schedule(self.root, (*targets, *self.syms[1:]))
                else:
                    sched = Schedule(self.syms[k], targets)
            self.schedules[(args, k)] = sched
        return sched

    def run(self, leaves: Sequence) -> Any:
        """The one way a call runs, given its arguments' leaves (whose shapes and dtypes the
        signature matched). A recorded scalar whose whole run is known goes forward and
        backward at once, as its planned program, called directly once learnt (any surprise
        there: a rebound Variable, anomaly mode, a failed run, goes through the schedule);
        the first recorded call, and every call with several outputs, runs forward now and
        backward later; an unrecorded call runs forward only."""
        direct = self.direct
        if self.quick and direct is not None and (_eager._anomaly is None or not anomaly_on()):
            got = direct.call(leaves)  # the usual loss: its node made here, in one go
            if got is not None:  # (whole.Quick.call does the same for NumPy Tensors)
                value, grads, kept, datas = got
                return made(value, self.xp, Node(
                    self.op, NO_PARAMS, self.variables, self.needs,
                    (Done(tuple(grads), datas if direct.fits else None), kept),
                    self.backend_name, value.shape, value.dtype))
        if not self.syms:
            return self._outputs(leaves, [], None, None)
        inputs = self.variables if self.record else ()
        if self.grad_args:
            inputs += tuple(_node_of(leaves[self.arrays[j]]) for j in self.grad_args)
        got = None if direct is None or anomaly_on() else direct.call(leaves)
        if got is None:
            feed = self._feed(leaves, inputs)
            whole = self.whole
            if not whole:
                return self._sweeps(leaves, feed, inputs, whole)
            got = self._whole_by_schedule(feed, whole)
        # a whole run: the node holds the gradients, already computed (backward later only
        # scales them by its seed, exact for the usual seed 1), and keeps the inputs backward
        # would have read, so a write into one of them before backward is still refused
        value, grads, kept = got[:3]
        node = done_node(self.op, self.backend_name, value, grads, inputs, kept)
        if self.loss:
            return made(value, self.xp, node)
        return self._outputs(leaves, [value], [node], self.xp)

    def source(self, leaves: Sequence) -> str:
        """The readable code a call with ``leaves`` runs (gpugrad.compiler.listing): a
        single output's planned program (forward and backward at once where the call is
        recorded and its output a floating scalar), else the schedule's generic sweeps."""
        if not self.syms:
            return f"# gg.compile({self.name}): the function computes nothing to compile"
        root, whole = self.root, self.whole
        if whole is None:  # not called yet: a floating scalar, as far as the trace knows
            dtype = root._dtype
            whole = root._shape is None or _size(root._shape) == 1 and (
                dtype is None or B.is_floating(self.xp, B.resolve_dtype(self.xp, dtype)))
        if len(self.syms) == 1 and (not self.record or whole):
            return listing(self.sched.program_for(self._feed(leaves, ()), self.record))
        return listing(self.sched)

    def _feed(self, leaves: Sequence, inputs: tuple) -> dict:
        """The schedule's feed: the arrays themselves (the signature already matched their
        shapes and dtypes); a recorded call copies host arrays, the caller's memory, so that
        later edits to them cannot reach backward."""
        feed = {}
        for ph, i in zip(self.placeholders, self.arrays):
            a = leaves[i]
            if type(a) is Tensor or isinstance(a, Tensor):
                a = a.data
            elif inputs and type(a) is np.ndarray:
                a = np.array(a)
            feed[ph] = a
        return feed

    def _whole_by_schedule(self, feed: dict, whole: tuple) -> tuple:
        """A scalar output, forward and backward at once through the schedule (one run at a
        time: see :meth:`_sweeps`): (value, gradients, the arrays the node keeps). Its
        NumPy program is learnt for :class:`Direct` here."""
        sched = self.sched
        value, grads = sched.run(feed, True)
        self._learn_direct(feed, whole, sched, grads)
        variables, phs = whole
        kept = [t.data for t in variables]
        if phs:  # (the feed holds arrays: each Tensor's data)
            kept += [feed[ph] for ph in phs]
        return value, grads, kept

    def _sweeps(self, leaves: Sequence, feed: dict, inputs: tuple, whole: Any) -> Any:
        """The forward sweep now, and (when recorded) a node whose VJP runs the backward
        sweep later; the first recorded call of a scalar also finds what a whole run keeps."""
        sched = self.sched
        single = len(self.syms) == 1
        if single and not inputs:
            # a planned program's buffers serve one run at a time: while another thread runs
            # it, sched.run takes the generic path (gpugrad.compiler.program.Program)
            value = sched.run(feed, False)[0]
            return self._outputs(leaves, [value], None, self.xp)
        value, saved = sched.forward(feed, bool(inputs))
        values = [value]
        if not single:
            vals = saved.vals
            values += [vals[s] for s in sched.wrt[len(sched.wrt) - len(self.syms) + 1:]]
        if not inputs:
            return self._outputs(leaves, values, None, self.xp)
        xp = self.xp
        if whole is None:  # the first recorded call of a scalar: can later ones go whole?
            self.whole = self._saved_inputs(saved, feed) if (
                _size(value.shape) == 1 and B.is_floating(xp, value.dtype)) else False
        needs = (True,) * len(inputs)
        nodes = []
        for k, v in enumerate(values):
            if not B.is_inexact(xp, v.dtype):
                nodes.append(None)
                continue
            state = _State(self, sched, saved, feed, self.grad_args, k, len(inputs))
            node = Node(self.op, {}, inputs, needs, (state, saved.res), self.backend_name,
                        tuple(v.shape), v.dtype)
            nodes.append(node)
        return self._outputs(leaves, values, nodes, xp)

    def _saved_inputs(self, saved: Any, feed: dict) -> tuple:
        """Which Variables and arguments the backward sweep reads (their arrays are among
        the residuals): the arrays a whole-run call must keep for the version check."""
        res = versions.saved_arrays(saved.res)
        variables = tuple(t for t in self.variables
                          if any(versions.overlap(t.data, r) for r in res))
        phs = tuple(ph for ph in self.placeholders
                    if any(versions.overlap(_data(feed[ph]), r) for r in res))
        return (variables, phs)

    def _learn_direct(self, feed: dict, whole: tuple, sched: Schedule, grads: list) -> None:
        """After a whole run through ``sched.run``: the NumPy program it used, called directly
        from then on (found under the key ``Schedule._run_program`` files it; none found,
        none learnt)."""
        if sched.xp is not np or self.direct is not None or not sched.checked:
            return
        feeds = [feed[ph] for _, ph in sched.placeholders]
        tensors = [t for _, t in sched.tensors]
        datas = [t.data for t in tensors]
        if not all(type(a) is np.ndarray for a in (*feeds, *datas)):
            return
        prog = sched.numpy_program(feeds, datas, True, None)
        # (a trace for every batch size whose program is built per size: none to learn)
        if prog is not None and (prog.frames is not None or not self.symbolic):
            self.direct = Direct(sched, prog, tensors, self.placeholders, self.arrays, whole,
                                 self.variables, grads)

    def _outputs(self, leaves: list, values: list, nodes: list | None, xp: Any) -> Any:
        outs = []
        for kind, k in self.out_plan:
            if kind == "arg":
                outs.append(leaves[self.arrays[k]])
            elif kind == "const":
                outs.append(k)
            else:
                outs.append(made(values[k], xp, nodes[k] if nodes else None))
        if self.out_structure is None:  # a single output
            return outs[0]
        return tree_unflatten(self.out_structure, outs)


def marks(leaves: Sequence, arrays: list) -> tuple:
    """Per array argument, whether its leading dim is the batch: the first argument with a
    dim gives the batch size ``n`` (at least 1), and every argument whose leading dim is
    ``n`` is batched with it (``gg.compile``'s signature masks the same dims)."""
    n = 0
    out = []
    for i in arrays:
        shape = _data(leaves[i]).shape
        if shape and not n:
            n = shape[0] or -1
        out.append(bool(shape) and n > 0 and shape[0] == n)
    return tuple(out)


def _find(items: list, x: Any) -> int:
    """The position of ``x`` in ``items`` by identity (``==`` on a Symbol builds a graph)."""
    return next((k for k, it in enumerate(items) if it is x), -1)


class _State:
    """What a compiled call's tape node needs for its VJP."""

    __slots__ = ("entry", "sched", "saved", "feed", "args", "k", "n")

    def __init__(self, entry: Entry, sched: Schedule, saved: Any, feed: dict, args: tuple,
                 k: int, n: int) -> None:
        self.entry, self.sched, self.saved, self.feed = entry, sched, saved, feed
        self.args, self.k, self.n = args, k, n


def _data(a: Any) -> Any:
    return a.data if isinstance(a, Tensor) else a


def _node_of(t: Tensor) -> Any:
    """What a tape node keeps of an input Tensor: the node that made it, or the leaf."""
    return t if t._node is None else t._node


def _size(shape: tuple) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _vjp(xp: Any, g: Any, res: tuple) -> tuple:
    """The tape's VJP of a compiled call: the schedule's backward sweep, seeded with ``g``.
    Output 0 uses what its forward saved (once); the other outputs, and a second backward
    (``retain_graph=True``), sweep a schedule of their own again from the same inputs."""
    state = res[0]
    if type(state) is Done:
        if type(g) is np.ndarray and g.size == 1 and g.item() == 1.0:  # the usual seed
            return state.grads
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


def _call_traced(fn: Callable, args: tuple, kwargs: dict) -> Any:
    """``fn`` on Placeholders, with grad mode on (eager work on Variables must leave a
    history to lift) and the trace flag set (for the control-flow errors)."""
    token = compile_trace.set(getattr(fn, "__name__", "fn"))
    grad = _grad_enabled.set(True)
    try:
        return fn(*args, **kwargs)
    finally:
        _grad_enabled.reset(grad)
        compile_trace.reset(token)


