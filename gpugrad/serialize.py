"""Pickling and copying: Tensors, Variables, graphs, modules and optimizers.

A Tensor pickles as its class, its backend's *name* and device, a host copy of its array, and
``requires_grad``, ``name``, ``grad`` and its version count. It never pickles a module object,
so a pickle can be read by another process. A CuPy Tensor crosses through host bytes and is
rebuilt on the current GPU; where there is none, unpickling raises a BackendError that points
to checkpoints (``gg.save`` / ``gg.load(path, backend="numpy")``), which load anywhere.

The tape is not pickled: a Tensor that an op computed (``t._node`` set) comes back as a
constant with its value. Graph Symbols drop their compiled schedules, which are rebuilt on the
first run. Pickle keeps identity within one pickle, and ``copy.deepcopy`` within one call, so
a parameter shared by two layers, or an optimizer's state keyed by its parameter, stays one
object.

>>> import copy, pickle, gpugrad as gg
>>> w = gg.Variable([1.0, 2.0], name="w")
>>> w2 = pickle.loads(pickle.dumps(w))
>>> type(w2).__name__, w2.name, w2.requires_grad, gg.to_numpy(w2)
('Variable', 'w', True, array([1., 2.]))
>>> a, b = copy.deepcopy([w, w])
>>> a is b, a is w
(True, False)
"""

from __future__ import annotations

import copy
import weakref
from typing import Any

import numpy as np

from . import backend as B
from .errors import at


def device_name(xp: Any, array: Any) -> str | None:
    """The device of ``array`` as a plain string a pickle can hold (None for NumPy)."""
    name = B.name_of(xp)
    if name == "numpy":
        return None
    dev = B.device_of(array)
    if name == "array_api_strict":
        return str(getattr(dev, "_device", dev))
    return str(getattr(dev, "id", dev))


def restore_array(backend: str, device: str | None, host: np.ndarray) -> Any:
    """Rebuild a backend array from its host copy (the unpickling side of ``portable``)."""
    if backend == "numpy":
        return host
    if backend == "array_api_strict":
        import array_api_strict as xp

        return xp.asarray(host, device=xp.Device(device) if device else None)
    if backend == "cupy":
        try:
            xp = B.make_backend("cupy").xp
        except B.BackendError as exc:
            raise B.BackendError(at(
                f"unpickling a CuPy array ({B.dtype_name(host.dtype)} "
                f"{tuple(host.shape)}) needs CuPy and a CUDA GPU, and here: {exc}. Pickle is "
                "for copies between processes on one kind of machine; to move values to a "
                "machine without a GPU, write them with gg.save(state, path) and read them "
                "with gg.load(path, backend=\"numpy\")")) from None
        return xp.asarray(host)  # onto the current GPU
    raise B.BackendError(at(f"unpickling an array of backend {backend!r}: gpugrad knows "
                            f"{', '.join(B.BACKEND_NAMES)}"))


class _Portable:
    """Pickles a backend array by backend name, device and host bytes; NumPy arrays need no
    wrapper (pickle handles them, and keeps two references to one array as one)."""

    __slots__ = ("array", "xp")

    def __init__(self, array: Any, xp: Any) -> None:
        self.array, self.xp = array, xp

    def __deepcopy__(self, memo: dict) -> Any:
        return copy_array(self.array, memo)

    def __reduce__(self) -> tuple:
        name = B.name_of(self.xp)
        if name not in B.BACKEND_NAMES:
            raise TypeError(at(f"pickle: arrays of backend {name!r} cannot be pickled; "
                               f"gpugrad pickles {', '.join(B.BACKEND_NAMES)} arrays"))
        return (restore_array, (name, device_name(self.xp, self.array),
                                B.to_numpy(self.array)))


def portable(value: Any) -> Any:
    """``value`` ready for pickle: a non-NumPy backend array is wrapped, the rest is kept."""
    if isinstance(value, (np.ndarray, np.generic)) or not B.is_backend_array(value):
        return value
    return _Portable(value, B.namespace_of(value))


def copy_array(array: Any, memo: dict) -> Any:
    """A device copy of a backend array for ``deepcopy`` (one copy per array per call)."""
    got = memo.get(id(array))
    if got is None:
        if isinstance(array, np.ndarray):
            got = np.array(array, copy=True)
        else:
            xp = B.namespace_of(array)
            got = xp.asarray(array, copy=True, device=B.device_of(array))
        memo[id(array)] = got
        memo.setdefault(id(memo), []).append(array)  # keep it alive, as deepcopy does
    return got


# --- Tensors ---------------------------------------------------------------------------

def _value(x: Any, memo: dict | None) -> Any:
    """A grad or data value, pickled (memo None) or deep-copied."""
    if x is None:
        return None
    if hasattr(x, "requires_grad") and hasattr(x, "xp"):  # a Tensor (create_graph grads)
        return x if memo is None else copy.deepcopy(x, memo)
    if memo is None:
        return portable(x)
    return copy_array(x, memo) if B.is_backend_array(x) else copy.deepcopy(x, memo)


def reduce_tensor(t: Any) -> tuple:
    """``Tensor.__reduce_ex__``: class, host data, flags; the tape is left behind."""
    leaf = t._node is None
    return (rebuild_tensor, (type(t), _value(t.data, None), t.requires_grad and leaf, t.name,
                             _value(t.grad, None), getattr(t, "_vlog", None)))


def rebuild_tensor(cls: type, data: Any, requires_grad: bool, name: str | None, grad: Any,
                   version: Any) -> Any:
    t = cls.__new__(cls)
    t.data = data
    t.xp = B.namespace_of(data)
    t.requires_grad = bool(requires_grad)
    t.name = name
    t.grad = grad
    t._node = None
    if version is not None:
        t._vlog = version
    return t


def deepcopy_tensor(t: Any, memo: dict) -> Any:
    """``Tensor.__deepcopy__``: the data copied on its device, the tape left behind."""
    leaf = t._node is None
    version = getattr(t, "_vlog", None)
    return rebuild_tensor(type(t), _value(t.data, memo), t.requires_grad and leaf, t.name,
                          _value(t.grad, memo),
                          None if version is None else copy.deepcopy(version, memo))


def copy_tensor(t: Any) -> Any:
    """``Tensor.__copy__``: a new Tensor object sharing data, grad, tape and version."""
    out = type(t).__new__(type(t))
    for slot in ("data", "grad", "requires_grad", "xp", "_node", "name", "_vlog", "_view"):
        if hasattr(t, slot):
            setattr(out, slot, getattr(t, slot))
    views = getattr(getattr(getattr(t, "_view", None), "base", None), "_views", None)
    if views is not None:  # a copy of a view is a view of the same base (gpugrad.views)
        views.append(weakref.ref(out))
    return out


# --- graphs ------------------------------------------------------------------------------

_listed: dict[int, weakref.ref] = {}
"""Symbols whose inputs an enclosing pickle or deepcopy already handles (see below)."""


def symbol_state(sym: Any) -> dict:
    """A Symbol's slots for pickle and deepcopy, less its compiled schedules.

    Pickle and deepcopy recurse through each object's state, so a graph thousands of ops
    deep would exceed Python's recursion limit. The first Symbol of a graph to be pickled
    therefore also lists every Symbol it depends on, inputs first (``_order``): each of them
    is then pickled after its own inputs, and the recursion stays shallow. The list only
    orders the work; unpickling ignores it."""
    state: dict = {}
    ref = _listed.pop(id(sym), None)
    if ref is None or ref() is not sym:
        order = _inputs_first(sym)
        for s in order:
            _listed[id(s)] = weakref.ref(s)
        if order:
            state["_order"] = order  # first: pickled before this Symbol's own inputs
    for klass in type(sym).__mro__:
        for slot in getattr(klass, "__slots__", ()):
            if slot not in ("_schedules", "__weakref__") and hasattr(sym, slot):
                state[slot] = getattr(sym, slot)
    return state


def _inputs_first(sym: Any) -> list:
    """Every Symbol ``sym`` depends on (not ``sym``), each after its inputs; no recursion."""
    out: list = []
    done = {id(sym)}
    stack = [(sym, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            if node is not sym:
                out.append(node)
            continue
        stack.append((node, True))
        for a in node.args:
            if getattr(a, "_gpugrad_symbolic", False) and id(a) not in done:
                done.add(id(a))
                stack.append((a, False))
    return out


def set_symbol_state(sym: Any, state: dict) -> None:
    for slot, value in state.items():
        if slot != "_order":
            setattr(sym, slot, value)
    sym._schedules = {}  # compiled again on the first run


# --- optimizers --------------------------------------------------------------------------

def optimizer_state(opt: Any) -> dict:
    """An optimizer's ``__dict__`` with its per-parameter arrays made portable. The state
    stays keyed by the parameter objects, which pickle keeps identical to ``opt.params``."""
    state = dict(vars(opt))
    state["state"] = {p: {k: portable(v) for k, v in st.items()}
                      for p, st in opt.state.items()}
    return state


__all__ = ["portable", "restore_array"]
