"""Functional transforms: ``grad``, ``value_and_grad``, ``vjp``, ``jacobian``, ``hvp``,
``hessian``.

Each takes a function of arrays and gives a function of arrays. Arguments may be backend
arrays, host data, Python floats or Tensors, or nested tuples, lists and dicts of them
(pytrees); gradients come back in the same structure.

- Given plain arrays, results are backend arrays: the caller never sees a Tensor. The
  function itself gets Tensors for all array arguments (constants where not differentiated),
  so array-API code in it sees one namespace, ``gpugrad.array_api``.
- Given Tensors, or called inside another transform, results are Tensors carrying graphs
  (built by ``backward(create_graph=True)``'s machinery, gpugrad.higher), so transforms
  compose: ``grad(grad(f))``, ``jacobian(grad(f))``.
- Each differentiated argument gets a fresh identity on the tape, so an outer transform's
  variable used inside an inner one is not confused with the inner one's own.
- A function that closes over Variables is differentiated only in its arguments; pass a
  Tensor argument to keep the result differentiable in them too.
- The function must return Tensors computed with gpugrad ops. A Python number, a NumPy
  scalar or array, or any other non-Tensor result has left the graph (``float()``,
  ``.item()`` or ``gg.to_numpy`` on a traced value): a TypeError says so, where silent zeros
  would mislead. A Tensor result with no path to the differentiated arguments (a constant,
  or a value that does not depend on them) is differentiated as JAX does: its gradient is
  zeros.
- A list or tuple argument is a pytree, as in JAX: ``grad(f)([1.0, 2.0])`` calls ``f`` with
  a list of two scalar Tensors and gives a list of two gradients. To differentiate one
  array, pass an array (``np.array([1.0, 2.0])``); a function that fails on the list is
  told so.

>>> import numpy as np, gpugrad as gg
>>> f = lambda x: gg.sum(x ** 3)
>>> gg.grad(f)(np.array([1.0, 2.0]))                  # 3 x**2
array([ 3., 12.])
>>> gg.grad(lambda x: gg.sum(gg.grad(f)(x)))(np.array([1.0, 2.0]))   # 6 x
array([ 6., 12.])
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import array_api as ns
from . import backend as B
from .higher import Tape, recording
from .ops import shape as shape_ops
from .pytree import tree_flatten, tree_map, tree_unflatten
from .tensor import Tensor, is_grad_enabled, transform_depth



# --- one call of a transformed function ---------------------------------------------------

class _Call:
    """The arguments of one call, with the differentiated ones replaced by targets."""

    def __init__(self, args: tuple, argnums: int | Sequence[int], *extra: Any) -> None:
        self.single = isinstance(argnums, int)
        self.argnums = (argnums,) if self.single else tuple(argnums)
        self.given = args
        everything = tree_flatten((args, extra))[0]
        self.keep = transform_depth.get() > 0 or any(isinstance(v, Tensor) for v in everything)
        self.create = self.keep and is_grad_enabled()
        # arrays that are not differentiated become constant Tensors too, so array-API code
        # sees one namespace (gpugrad.array_api) for all of its arguments
        self.args = [a if i in self.argnums else tree_map(_constant, a)
                     for i, a in enumerate(args)]
        self.targets: list[Tensor] = []
        self.structures = []
        for i in self.argnums:
            leaves, structure = tree_flatten(args[i])
            made = [_target(v, i) for v in leaves]
            self.targets += made
            self.structures.append((structure, len(made)))
            self.args[i] = tree_unflatten(structure, made)

    def run(self, f: Callable, kwargs: dict, what: str) -> Any:
        token = transform_depth.set(transform_depth.get() + 1)
        try:
            with recording():
                return f(*self.args, **kwargs)
        except TypeError as exc:
            i = self._sequence_of_numbers()
            if i is None:
                raise
            raise TypeError(
                f"{what}: argument {i} is a {type(self.given[i]).__name__} of numbers, which "
                f"{what} treats as a pytree (as JAX does), so the function got a "
                f"{type(self.given[i]).__name__} of scalar Tensors, and failed: {exc}. To "
                "differentiate one array, pass an array: np.array(...) or gg.asarray(...)"
            ) from exc
        finally:
            transform_depth.reset(token)

    def _sequence_of_numbers(self) -> int | None:
        """The first differentiated argument that is a list or tuple of Python numbers."""
        for i in self.argnums:
            a = self.given[i] if i < len(self.given) else None
            if isinstance(a, (list, tuple)) and a and all(
                    isinstance(v, (int, float)) for v in a):
                return i
        return None

    def export(self, tree: Any) -> Any:
        """Tensors in ``tree`` as backend arrays, unless results stay Tensors here."""
        if self.keep:
            return tree
        return tree_map(lambda v: v.data if isinstance(v, Tensor) else v, tree)

    def gradients(self, grads: list, keep: bool | None = None) -> Any:
        """Per-target gradients (None: zeros) in the arguments' structure, as Tensors if
        ``keep`` (default: if results stay Tensors here) else as backend arrays."""
        keep = self.keep if keep is None else keep
        out, start = [], 0
        full = [_zeros(t, keep) if g is None else g for g, t in zip(grads, self.targets)]
        if keep:  # under no_grad the sweep gave backend arrays: constant Tensors then
            full = [g if isinstance(g, Tensor) else Tensor(g) for g in full]
        else:
            full = [g.data if isinstance(g, Tensor) else g for g in full]
        for structure, n in self.structures:
            out.append(tree_unflatten(structure, full[start:start + n]))
            start += n
        return out[0] if self.single else tuple(out)


def _constant(value: Any) -> Any:
    if B.is_backend_array(value) and not isinstance(value, Tensor):
        return Tensor(value)
    return value


def _target(value: Any, argnum: int) -> Tensor:
    """A fresh Tensor to differentiate against, equal to ``value``: a leaf for plain data, a
    recorded identity (``reshape``) for a Tensor that requires a gradient, so that gradients
    also flow on into it."""
    if isinstance(value, Tensor):
        data = value.data
    elif B.is_backend_array(value) and not isinstance(value, np.ndarray):
        data = value  # already on a backend: it stays there
    else:
        data = B.to_backend(value)
    if not B.is_inexact(B.namespace_of(data), data.dtype):
        raise TypeError(f"argument {argnum}: only floating or complex arrays can be "
                        f"differentiated, got "
                        f"{B.dtype_name(data.dtype)}; convert it first or leave it out of "
                        "argnums")
    if isinstance(value, Tensor) and value.requires_grad:
        with recording():
            return shape_ops.reshape(value, shape=value.shape)
    return Tensor(data, requires_grad=True)


def _zeros(t: Tensor, keep: bool) -> Any:
    z = t.xp.zeros_like(t.data)
    return Tensor(z) if keep else z


def _traced(out: Any, what: str) -> Any:
    """``out`` if it is a Tensor; a TypeError naming the likely cause if it left the graph."""
    if isinstance(out, Tensor):
        return out
    kind = type(out).__name__
    if isinstance(out, np.ndarray) or B.is_backend_array(out):
        kind = f"{type(out).__module__.split('.')[0]}.{kind}"
    raise TypeError(
        f"{what}: the function returned a {kind} ({out!r:.40}), not a gpugrad Tensor, so the "
        "result has no path back to the arguments and its gradient would be zeros. The "
        "likely cause is float(), .item(), gg.to_numpy() or a NumPy function applied to a "
        "value computed from the arguments; keep the computation in gpugrad ops (gg.sum, "
        "gg.exp, ...) up to the returned value. To differentiate a constant on purpose, "
        "return gg.asarray(value)")


def _scalar(out: Any, what: str) -> Any:
    out = _traced(out, what)
    if (isinstance(out, Tensor) or B.is_backend_array(out)) and tuple(out.shape) not in (
            (), (1,)):
        raise TypeError(f"{what}: the function must return a scalar (a 0-d or one-element "
                        f"array), got shape {tuple(out.shape)}; use jacobian or vjp for array "
                        "outputs")
    return out


def _split_aux(out: Any, has_aux: bool, what: str) -> tuple:
    if not has_aux:
        return out, None
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise TypeError(f"{what}(has_aux=True): the function must return a pair "
                        "(output, auxiliary data)")
    return out[0], out[1]


def value_and_grad(f: Callable, argnums: int | Sequence[int] = 0,
                   has_aux: bool = False) -> Callable:
    """``f`` turned into a function returning ``(f(*args), gradient)``.

    The gradient is taken with respect to the argument(s) ``argnums`` (an int, or a tuple
    giving a tuple of gradients), each in its argument's structure. ``f`` must return a
    scalar, or ``(scalar, aux)`` with ``has_aux=True``, and then ``((value, aux), grad)``
    comes back.

    >>> import numpy as np, gpugrad as gg
    >>> value, g = gg.value_and_grad(lambda w, x: gg.sum((x @ w) ** 2))(
    ...     np.array([1.0, -1.0]), np.array([[1.0, 2.0]]))
    >>> float(value), g
    (1.0, array([-2., -4.]))

    A result with no path to the arguments has zero gradient (JAX's rule); a result that is
    not a Tensor at all (``float()``, ``.item()``, ``gg.to_numpy`` on a traced value) is an
    error, since its zeros would be wrong (and the ``float()`` itself warns first, with a
    ``gg.TracedValueWarning`` at its line):

    >>> gg.value_and_grad(lambda x: gg.asarray(2.0))(np.array([1.0]))
    (array(2.), array([0.]))
    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore", gg.TracedValueWarning)
    ...     gg.value_and_grad(lambda x: float(gg.sum(x * x)))(np.array([1.0]))
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    TypeError: value_and_grad: the function returned a float (1.0), not a gpugrad Tensor, ...
    """
    return _value_and_grad(f, argnums, has_aux, "value_and_grad")


def _value_and_grad(f: Callable, argnums: int | Sequence[int], has_aux: bool,
                    what: str) -> Callable:
    @functools.wraps(f)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        call = _Call(args, argnums)
        out, aux = _split_aux(call.run(f, kwargs, what), has_aux, what)
        out = _scalar(out, what)
        grads = call.gradients(Tape([out], call.targets, call.create).sweep())
        value = call.export(out)
        return ((value, call.export(aux)) if has_aux else value), grads

    return wrapped


def grad(f: Callable, argnums: int | Sequence[int] = 0, has_aux: bool = False) -> Callable:
    """``f`` turned into a function returning its gradient (see ``value_and_grad``).

    >>> import numpy as np, gpugrad as gg
    >>> gg.grad(lambda p: gg.sum(p["w"] * p["b"]))({"w": np.array([2.0]), "b": np.array([3.0])})
    {'w': array([3.]), 'b': array([2.])}
    """
    both = _value_and_grad(f, argnums, has_aux, "grad")

    @functools.wraps(f)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        value, g = both(*args, **kwargs)
        return (g, value[1]) if has_aux else g

    return wrapped


def vjp(f: Callable, *primals: Any, has_aux: bool = False) -> tuple:
    """``(f(*primals), vjp_fn)``: ``vjp_fn(cotangent)`` gives the tuple of vector-Jacobian
    products ``cotangent @ J``, one per primal, each in its primal's structure.

    The cotangent has the output's structure and shapes. ``vjp_fn`` may be called many
    times; a cotangent given as a Tensor that requires a gradient is differentiated too.

    >>> import numpy as np, gpugrad as gg
    >>> out, vjp_fn = gg.vjp(lambda x: x * x, np.array([1.0, 3.0]))
    >>> vjp_fn(np.array([1.0, 10.0]))
    (array([ 2., 60.]),)
    """
    call = _Call(primals, tuple(range(len(primals))))
    out, aux = _split_aux(call.run(f, {}, "vjp"), has_aux, "vjp")
    leaves, structure = tree_flatten(out)
    leaves = [_traced(o, "vjp") for o in leaves]
    tapes: dict = {}

    def vjp_fn(cotangent: Any) -> tuple:
        seeds, seed_structure = tree_flatten(cotangent)
        if seed_structure != structure:
            raise TypeError("vjp_fn: the cotangent must have the output's structure")
        create = call.create or any(isinstance(s, Tensor) and s.requires_grad for s in seeds)
        tape = tapes.get(create)
        if tape is None:
            tape = tapes[create] = Tape(leaves, call.targets, create)
        return call.gradients(tape.sweep(seeds), keep=call.keep or create)

    result = call.export(out)
    return (result, vjp_fn, call.export(aux)) if has_aux else (result, vjp_fn)


def jacobian(f: Callable, argnums: int | Sequence[int] = 0) -> Callable:
    """``f`` turned into a function returning its Jacobian, one VJP per output element.

    For an output of shape ``S`` and an argument of shape ``A`` the block has shape
    ``S + A``; pytree outputs and arguments give nested results (output structure outside).

    >>> import numpy as np, gpugrad as gg
    >>> gg.jacobian(lambda x: x[::-1] * 2.0)(np.array([1.0, 2.0]))
    array([[0., 2.],
           [2., 0.]])
    """

    @functools.wraps(f)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        call = _Call(args, argnums)
        outs, structure = tree_flatten(call.run(f, kwargs, "jacobian"))
        outs = [_traced(o, "jacobian") for o in outs]
        tape = Tape(outs, call.targets, call.create)
        blocks = [_jacobian_block(tape, k, out, call) for k, out in enumerate(outs)]
        return tree_unflatten(structure, blocks)

    return wrapped


def _jacobian_block(tape: Tape, k: int, out: Tensor, call: _Call) -> Any:
    m = 1
    for d in out.shape:
        m *= d
    xp = out.xp
    eye = xp.eye(m, dtype=out.dtype, **({} if xp is np else {"device": out.device}))
    rows = []
    for i in range(m):
        seeds = [Tape.SKIP] * len(tape.outputs)
        seeds[k] = xp.reshape(eye[i, :], tuple(out.shape))
        rows.append(tape.sweep(seeds))
    per_target = []
    for j, t in enumerate(call.targets):
        col = [r[j] if r[j] is not None else _zeros(t, call.keep) for r in rows]
        shape = tuple(out.shape) + tuple(t.shape)
        if not col:
            block = _zeros_shaped(t, shape, call.keep)
        elif call.keep:
            block = ns.reshape(ns.stack(col), shape)
        else:
            block = xp.reshape(xp.stack(col), shape)
        per_target.append(block)
    return call.gradients(per_target)


def _zeros_shaped(t: Tensor, shape: tuple, keep: bool) -> Any:
    z = t.xp.zeros(shape, dtype=t.dtype, **({} if t.xp is np else {"device": t.device}))
    return Tensor(z) if keep else z


def hvp(f: Callable, x: Any, v: Any) -> Any:
    """The Hessian of scalar ``f`` at ``x`` times ``v`` (``x``'s structure and shapes), by
    differentiating ``<grad f(x), v>`` once more: no Hessian is formed.

    >>> import numpy as np, gpugrad as gg
    >>> gg.hvp(lambda x: gg.sum(x ** 3), np.array([1.0, 2.0]), np.array([1.0, 1.0]))
    array([ 6., 12.])
    """
    call = _Call((x,), 0, v)
    out = _scalar(call.run(f, {}, "hvp"), "hvp")
    first = Tape([out], call.targets, create_graph=True).sweep()
    directions = tree_flatten(v)[0]
    if len(directions) != len(call.targets):
        raise TypeError("hvp: v must have x's structure")
    with recording():
        total = None
        for g, t, d in zip(first, call.targets, directions):
            if g is None:
                continue
            d = d if isinstance(d, Tensor) else Tensor(B.to_backend(d, t.dtype))
            term = ns.sum(g * d)
            total = term if total is None else total + term
    grads = Tape([total], call.targets, call.create).sweep() if total is not None else \
        [None] * len(call.targets)
    return call.gradients(grads)


def hessian(f: Callable, argnums: int | Sequence[int] = 0) -> Callable:
    """``f`` turned into a function returning its Hessian, ``jacobian(grad(f))``: shape
    ``A + A`` for an argument of shape ``A`` (nested blocks for pytrees). For small inputs.

    >>> import numpy as np, gpugrad as gg
    >>> gg.hessian(lambda x: x[0] * x[1] ** 2)(np.array([1.0, 2.0]))
    array([[0., 4.],
           [4., 2.]])
    """
    return jacobian(grad(f, argnums), argnums)
