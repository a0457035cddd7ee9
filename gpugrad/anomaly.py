"""Anomaly mode: stop at the first op whose forward or backward makes a NaN or an Inf.

Inside ``with gpugrad.detect_anomaly():`` every op's result is checked, and each recorded op
keeps the call site of its forward, so that a backward failure can say where the op came
from. An op is blamed only for non-finite values it made itself: a NaN where none of its
inputs had one, or an Inf where all its inputs were finite (``inf * 2`` passes, ``0 * inf``
and ``log(0)`` do not). In backward, the inputs are the incoming gradient and the arrays the
op saved.

Outside the block nothing is checked: the engine tests one module variable per op. The mode
is per thread and per task, like ``no_grad``. Checks read values back from the device, so
expect it to be slow on a GPU. Inside the block NumPy's own floating-point warnings are
silenced (``numpy.errstate(all="ignore")``): the AnomalyError says more, and says it once.
"""

from __future__ import annotations

import contextvars
import functools
import threading
from typing import Any, Callable

import numpy as np

from . import backend as B
from . import eager
from .diagnose import describe
from .errors import AnomalyError, call_site, show
from .versions import saved_arrays

_on: contextvars.ContextVar[bool] = contextvars.ContextVar("gpugrad_anomaly", default=False)
_open = 0
_lock = threading.Lock()


class detect_anomaly:
    """Context manager and decorator: raise AnomalyError at the first op whose forward or
    backward produces NaN or Inf, naming the op, the pass and where the op was called.

    >>> import gpugrad as gg
    >>> x = gg.Variable([0.0, 1.0])
    >>> with gg.detect_anomaly():
    ...     y = gg.sum(gg.sqrt(x))
    ...     try:
    ...         y.backward()
    ...     except gg.AnomalyError as e:
    ...         print(str(e).split(" (its")[0])
    sqrt: backward produced inf (1 of 2 values) in the gradient of input 0 (2,) float64
    """

    def __enter__(self) -> "detect_anomaly":
        global _open
        self._token = _on.set(True)
        self._quiet = np.errstate(all="ignore")
        self._quiet.__enter__()
        with _lock:
            _open += 1
            eager.set_anomaly_hook(_HOOK)
        return self

    def __exit__(self, *exc: Any) -> None:
        global _open
        self._quiet.__exit__(*exc)
        _on.reset(self._token)
        with _lock:
            _open -= 1
            if _open == 0:
                eager.set_anomaly_hook(None)

    def __call__(self, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            with detect_anomaly():
                return fn(*args, **kwargs)

        return wrapped


def is_anomaly_enabled() -> bool:
    """Whether anomaly mode is on here (inside ``detect_anomaly``)."""
    return _on.get()


def _counts(a: Any) -> tuple[int, int]:
    """(NaN count, Inf count) of a floating or complex array; (0, 0) for anything else."""
    if not hasattr(a, "dtype") or not hasattr(a, "shape"):
        return 0, 0
    xp = B.namespace_of(a)
    if not B.is_inexact(xp, a.dtype) or bool(xp.all(xp.isfinite(a))):
        return 0, 0
    nan = int(xp.sum(xp.astype(xp.isnan(a), xp.int64)))
    inf = int(xp.sum(xp.astype(xp.isinf(a), xp.int64)))
    return nan, inf


def _blame(out: Any, inputs: list) -> str | None:
    """What ``out`` holds that ``inputs`` did not explain, e.g. ``nan (2 of 6 values)``."""
    nan, inf = _counts(out)
    if not nan and not inf:
        return None
    seen = [_counts(a) for a in inputs]
    had_nan = any(n for n, _ in seen)
    had_inf = any(i for _, i in seen)
    if nan and not had_nan:
        what, k = "nan", nan
    elif inf and not had_nan and not had_inf:
        what, k = _inf_sign(out), inf
    else:
        return None
    return f"{what} ({k} of {_size(out)} values)"


def _inf_sign(a: Any) -> str:
    xp = B.namespace_of(a)
    pos = bool(xp.any(a == float("inf")))
    neg = bool(xp.any(a == -float("inf")))
    return "inf and -inf" if pos and neg else ("-inf" if neg else "inf")


def _size(a: Any) -> int:
    n = 1
    for d in a.shape:
        n *= d
    return n


def _origin(site: str | None) -> str:
    return site or "an unknown place (its forward ran outside detect_anomaly)"


class _Hook:
    """What the engine calls while some ``detect_anomaly`` block is open."""

    @staticmethod
    def enabled() -> bool:
        return _on.get()

    @staticmethod
    def forward(op: Any, arrays: list, out: Any, node: Any, site: str | None = None) -> None:
        if not _on.get():
            return
        site = site or call_site()
        if node is not None:
            node.site = site
        what = _blame(out, arrays)
        if what is not None:
            raise AnomalyError(
                f"{op.name}: forward produced {what} from inputs "
                f"{', '.join(describe(a) for a in arrays)} (which had none); {op.name} was "
                f"called at {site}")

    @staticmethod
    def backward(op: Any, needs: tuple, res: Any, g: Any, gs: Any, site: str | None) -> None:
        inputs = [g, *saved_arrays(res)]
        for i, (need, gi) in enumerate(zip(needs, gs)):
            if not need or gi is None:
                continue
            what = _blame(gi, inputs)
            if what is not None:
                raise AnomalyError(
                    f"{op.name}: backward produced {what} in the gradient of input {i} "
                    f"{show(gi.shape)} {B.dtype_name(gi.dtype)} (its incoming gradient and "
                    f"saved arrays had none); {op.name}'s forward was called at "
                    f"{_origin(site)}")


_HOOK = _Hook()
