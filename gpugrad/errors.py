"""gpugrad's exceptions, and where a message points: the user's own call site.

Every message starts with the gpugrad op (or function) and ends with the user's own call
site: the first stack frame outside the gpugrad package. This module is the ground floor (it
imports nothing from gpugrad); the messages that explain a refused op's shapes, dtypes or
static parameters are built in ``gpugrad.diagnose``.

>>> import gpugrad as gg
>>> a, b = gg.asarray([1.0, 2.0, 3.0]), gg.asarray([1.0, 2.0])
>>> try:
...     a @ b
... except gg.OpError as e:
...     print(str(e).split("; called at")[0])
matmul: shapes (3,) and (2,) are not aligned: 3 (dim -1 of the first) != 2 (dim 0 of the second)
"""

from __future__ import annotations

import os
import sys
from typing import Any, Sequence


class GradientError(RuntimeError):
    """backward() was asked for something it cannot do."""


class OpError(ValueError):
    """An op rejected its inputs; the message names the op, the shapes and the call site."""


class OpIndexError(OpError, IndexError):
    """An op rejected an axis or index out of range (an IndexError, as the array-API standard
    asks, and an OpError)."""


class DtypeError(TypeError):
    """A dtype problem: an integer Tensor asked to require gradients, or float32 meeting
    float64 where the result would silently change precision."""


class AnomalyError(FloatingPointError):
    """Raised inside ``detect_anomaly``: an op's forward or backward produced NaN or Inf."""


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


_OURS = (_PACKAGE, "<gpugrad")  # gpugrad's files and its generated code
_SITES: dict = {}  # (id of a code object, bytecode offset) -> (the code, "file.py:line")


def call_site(depth: int = 1) -> str:
    """``file.py:line`` of the first stack frame outside the gpugrad package (formatted
    once per call site: an optimizer step asks on every step)."""
    frame = sys._getframe(depth)
    while frame is not None:
        code = frame.f_code
        if not code.co_filename.startswith(_OURS):
            # keyed by the bytecode offset: f_lineno decodes the line table each time
            key = (id(code), frame.f_lasti)
            known = _SITES.get(key)
            if known is None or known[0] is not code:  # (an id reused by a new code)
                if len(_SITES) >= 4096:
                    _SITES.clear()
                where = f"{os.path.basename(code.co_filename)}:{frame.f_lineno}"
                known = _SITES[key] = (code, where)
            return known[1]
        frame = frame.f_back
    return "<unknown>"


def ours(code: Any) -> bool:
    """Is ``code`` (a frame's code object) gpugrad's own, its files' or code it generated?
    :func:`call_site` passes over those frames."""
    return code.co_filename.startswith(_OURS)


def at(message: str, site: str | None = None) -> str:
    """``message`` with the call site appended."""
    return f"{message}; called at {site or call_site(2)}"


def show(shape: Sequence[int | None]) -> str:
    """A shape as Python writes a tuple; None (any size) stays None."""
    shape = tuple(shape)
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


class TracedValueWarning(UserWarning):
    """A differentiated value was turned into a Python number or a NumPy array inside a
    transform (``gg.grad``, ``gg.jacobian``, ...): what is computed from it carries no
    gradient. Shown once per line of user code, as Python shows warnings."""
