"""Floating-point hygiene: gpugrad's own arithmetic never trips the user's ``np.errstate``.

A user who runs ``with np.errstate(all="raise"):`` (or turns warnings into errors) asks to
hear about *their* floating-point events. gpugrad keeps to this rule:

- an op reports what its NumPy namesake reports for the same input (``gg.exp(-1000.0)``
  underflows like ``np.exp(-1000.0)``, ``gg.log(0.0)`` divides by zero like ``np.log``);
- the steps *inside* a stable formula never report: the exponentials of sigmoid, logaddexp,
  logsumexp, softmax and log_softmax underflow by design, and their results are exact;
- gradients and optimizer updates never report underflow (a tiny gradient flushed towards 0
  is not an error), but an overflow, a division by zero or an invalid value in them is still
  reported: that is a real infinity or NaN the user asked to hear about.

``quiet(xp)`` is the one switch: an ``np.errstate`` for namespaces computed by NumPy
(numpy, array_api_strict), nothing elsewhere (CuPy has no floating-point flags). It wraps
only gpugrad's own arithmetic: the inner steps of the stable formulas, a backward sweep (one
context per sweep: eager, ``create_graph``, compiled and checked runs) and an optimizer step
(one per step), so the flags the user set still apply to every op the user calls.

``np.errstate`` costs about 1.2 µs a context (2026-12-02, NumPy 2.4; 2.8 to 3.4 µs on a
loaded machine), a few percent of a small training step, or of a sigmoid on a small array.
NumPy 2 keeps the error state in a context variable, so :func:`state_with` works out once per
surrounding state what ``np.errstate(**flags)`` would make of it, and a context is then one
``set`` and one ``reset`` of that variable (:func:`enter`, :func:`leave`, in ``try`` /
``finally``): 0.6 µs in all. (A ``with`` object around them cost as much as ``np.errstate``,
so the hot paths, the planned programs and the eager NumPy sigmoid, call them directly.)
That variable is NumPy's private name; without it (another NumPy) every function here falls
back to ``np.errstate`` itself, with the same flags.

The private read stays because it is worth more than 2% on the ``small`` benchmark (issue 18's
bar). Measured 2026-12-06 (2-core AMD EPYC VM, NumPy 2.4.6), this module as it is against the
same code with ``_STATE = None`` (the public ``np.errstate`` path), 10 interleaved runs each of
``python -m benchmarks --no-peers --workloads small --repeats 300``, median ms per step:

======= ============ ============== =======
row     private read np.errstate     cost
======= ============ ============== =======
eager   0.179        0.1845         +3.1%
graph   0.079        0.083          +5.1%
compile 0.094        0.099          +5.3%
======= ============ ============== =======

Instructions per step (``python -m benchmarks.instructions``) rise by 18.6k (eager, +1.4%),
12.9k (graph, +1.5%) and 18.6k (compile, +1.9%) on the public path.

>>> import numpy as np, gpugrad as gg
>>> with np.errstate(all="raise"):
...     float(gg.sigmoid(gg.asarray(np.array([-800.0, 0.0])))[0])
0.0
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

try:  # NumPy 2 keeps its floating-point error state in a context variable (private name)
    from numpy._core._ufunc_config import _extobj_contextvar as _STATE
except ImportError:  # pragma: no cover
    _STATE = None

_NULL = contextlib.nullcontext()
_on_numpy: dict[Any, bool] = {np: True}


def computed_by_numpy(xp: Any) -> bool:
    """Whether NumPy's floating-point flags apply to ``xp``'s arithmetic (numpy itself, and
    array_api_strict, which computes with NumPy)."""
    known = _on_numpy.get(xp)
    if known is None:
        name = getattr(xp, "__name__", "")
        known = _on_numpy[xp] = name.startswith(("numpy", "array_api_strict",
                                                 "array_api_compat.numpy"))
    return known


def quiet(xp: Any, **flags: str) -> Any:
    """A context manager that ignores underflow (and sets any other ``flags`` given, as for
    ``np.errstate``) while ``xp`` computes; a no-op for namespaces without NumPy's flags."""
    if not computed_by_numpy(xp):
        return _NULL
    return np.errstate(under="ignore", **flags)


UNDER_IGNORED = (("under", "ignore"),)
OVER_RAISED = (("over", "raise"),)

_DERIVED: dict = {}  # (surrounding state, flags) -> the state np.errstate(**flags) makes of it


def state_with(flags: tuple) -> Any:
    """NumPy's error state as ``np.errstate(**dict(flags))`` would set it here and now (for
    :func:`enter`). Worked out once per surrounding state: a loop under one state pays a
    dictionary lookup."""
    if _STATE is None:  # pragma: no cover
        return flags
    here = _STATE.get()
    key = (here, flags)
    state = _DERIVED.get(key)
    if state is None:
        with np.errstate(**dict(flags)):
            state = _STATE.get()
        if len(_DERIVED) >= 64:  # states made on the fly (an errstate per step): stay small
            _DERIVED.clear()
        _DERIVED[key] = state  # (the key keeps ``here`` alive: no id is reused)
    return state


def enter(state: Any) -> Any:
    """Make ``state`` (from :func:`state_with`) NumPy's error state; returns the token that
    :func:`leave` takes to restore the one before."""
    if _STATE is None:  # pragma: no cover
        token = np.errstate(**dict(state))
        token.__enter__()
        return token
    return _STATE.set(state)


def leave(token: Any) -> None:
    """Restore the error state :func:`enter` replaced."""
    if _STATE is None:  # pragma: no cover
        token.__exit__(None, None, None)
        return
    _STATE.reset(token)


ENTER, LEAVE = (_STATE.set, _STATE.reset) if _STATE is not None else (enter, leave)
""":func:`enter` and :func:`leave` without their Python layer, for generated code (the
planned programs call them twice a run)."""


def quiet_unless_ignored() -> Any:
    """None when NumPy's current error state already ignores underflow (the default; checked
    once per state object), else ``quiet(np)``: for code that runs often and wants a
    context only when one is needed."""
    if _STATE is None:  # pragma: no cover
        return None if np.geterr()["under"] == "ignore" else quiet(np)
    state = _STATE.get()
    if state is _IGNORING[0]:
        return None
    if np.geterr()["under"] == "ignore":
        _IGNORING[0] = state
        return None
    return quiet(np)


_IGNORING: list = [None]  # the last error state seen that already ignores underflow
