"""What NumPy does with Tensors and graph Symbols: the ``__array_ufunc__``,
``__array_function__`` and ``__array__`` protocols.

- The ufuncs behind Python's operators (``np.add``, ``np.multiply``, ``np.less``, ...) run
  the gpugrad op, because ``host_array + t`` calls them: the result is a Tensor, recorded
  like ``t + host_array``. Writing such a result into a NumPy array (``host += t``,
  ``out=``) raises: it would lose the gradient.
- Every other ufunc (``np.exp(t)``), ufunc method (``np.add.reduce(t)``) and NumPy function
  (``np.sum(t)``, ``np.concatenate([t, t])``) raises a TypeError that names the gpugrad
  function to call instead: NumPy would turn the Tensor into a plain array and drop its
  gradient. ``np.shape``, ``np.ndim`` and ``np.size`` only read metadata and work.
- ``np.asarray(t)`` gives the values of a Tensor that requires no gradient, as
  ``gg.to_numpy(t)`` does (read-only on the NumPy backend, where it shares memory; a copy
  with ``np.array(t)``). A Tensor that requires a gradient raises, naming
  ``gg.to_numpy(t)`` and ``t.detach()``; a Symbol raises, since it has no value until run.

>>> import numpy as np, gpugrad as gg
>>> t = gg.Variable([0.0, 1.0])
>>> np.ones(2) + t
Tensor(array([1., 2.]), requires_grad=True)
>>> np.exp(t)
Traceback (most recent call last):
...
TypeError: np.exp cannot take gpugrad Tensors or Symbols (NumPy would drop the gradient); call gg.exp ...
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import backend as B
from . import errors as E
from . import hooks
from .ops import arithmetic, compare, linalg
from .registry import registry

OPERATORS = {
    "add": arithmetic.add, "subtract": arithmetic.subtract, "multiply": arithmetic.multiply,
    "divide": arithmetic.divide, "power": arithmetic.pow, "matmul": linalg.matmul,
    "equal": compare.equal, "not_equal": compare.not_equal, "less": compare.less,
    "less_equal": compare.less_equal, "greater": compare.greater,
    "greater_equal": compare.greater_equal,
}
"""Ufuncs that ndarray's operators call, so ``host_array + t`` works: the gpugrad op."""

API_OPERATORS = {
    "floor_divide": "floor_divide", "remainder": "remainder", "bitwise_and": "bitwise_and",
    "bitwise_or": "bitwise_or", "bitwise_xor": "bitwise_xor",
    "left_shift": "bitwise_left_shift", "right_shift": "bitwise_right_shift",
}
"""The other operator ufuncs: the gpugrad.array_api function (as Tensor's own operators)."""

RENAMED = {
    "absolute": "abs", "fabs": "abs", "arcsin": "asin", "arccos": "acos", "arctan": "atan",
    "arctan2": "atan2", "arcsinh": "asinh", "arccosh": "acosh", "arctanh": "atanh",
    "true_divide": "divide", "power": "pow", "conjugate": "conj", "invert": "bitwise_invert",
    "bitwise_not": "bitwise_invert", "left_shift": "bitwise_left_shift",
    "right_shift": "bitwise_right_shift", "mod": "remainder", "fmod": "remainder",
    "concatenate": "concat", "amax": "max", "amin": "min", "cumsum": "cumulative_sum",
    "cumprod": "cumulative_prod", "transpose": "permute_dims", "swapaxes": "permute_dims",
    "dot": "matmul", "inner": "vecdot", "vstack": "concat", "hstack": "concat",
    "around": "round", "ravel": "reshape", "array_equal": "equal", "copy": "asarray",
    "split": "unstack", "rint": "round", "fix": "trunc",
}
"""NumPy names whose gpugrad function is spelled the array-API way."""

REDUCE = {"add": "sum", "multiply": "prod", "maximum": "max", "minimum": "min",
          "logical_and": "all", "logical_or": "any"}
"""``np.<ufunc>.reduce`` and ``.accumulate``: the gpugrad reduction or scan."""

TOP_LEVEL = frozenset({"asarray", "from_dlpack", "load", "save"})
"""NumPy names that gpugrad's package has as functions besides its registered ops."""

METADATA = frozenset({"shape", "ndim", "size"})
"""NumPy functions that only read a Tensor's metadata: they run."""


def suggestion(name: str) -> str:
    """The gpugrad function for NumPy's ``name``: ``gg.exp``, ``gg.array_api.floor``, or a
    pointer to ``gg.to_numpy`` where gpugrad has none."""
    ours = RENAMED.get(name, name)
    if ours in registry or ours in TOP_LEVEL:
        return f"call gg.{ours} instead"
    if ours in hooks.namespace.__all__:
        return f"call gg.array_api.{ours} instead"
    return ("gpugrad has no such function; write it from gg ops to keep the gradient, or take "
            "the values out of autodiff with gg.to_numpy(t)")


def _refuse(what: str, name: str) -> TypeError:
    return TypeError(E.at(f"{what} cannot take gpugrad Tensors or Symbols (NumPy would drop "
                          f"the gradient); {suggestion(name)}"))


def ufunc(fn: Any, method: str, inputs: tuple, kwargs: dict) -> Any:
    """``__array_ufunc__``: an operator's ufunc runs the gpugrad op; others raise."""
    name = fn.__name__
    if method == "__call__" and not kwargs:
        op = OPERATORS.get(name)
        if op is not None and len(inputs) == 2:
            return op(*inputs)
        if name in API_OPERATORS and len(inputs) == 2:
            return getattr(hooks.namespace, API_OPERATORS[name])(*inputs)
    if method == "__call__":
        if "out" in kwargs and (name in OPERATORS or name in API_OPERATORS):
            return _raise(TypeError(E.at(
                f"np.{name} into a NumPy array (host += t, or out=) cannot take a gpugrad "
                "Tensor or Symbol: the result would lose its gradient; write host = host + t "
                "for a Tensor, or use gg.to_numpy(t) for values")))
        if kwargs:
            keys = ", ".join(sorted(kwargs))
            return _raise(TypeError(E.at(
                f"np.{name} with {keys}= cannot take gpugrad Tensors or Symbols (gpugrad "
                f"never writes into an output array); {suggestion(name)}")))
        return _raise(_refuse(f"np.{name}", name))
    if method in ("reduce", "accumulate") and name in REDUCE:
        target = REDUCE[name] if method == "reduce" else {
            "sum": "cumulative_sum", "prod": "cumulative_prod"}.get(REDUCE[name], REDUCE[name])
        return _raise(_refuse(f"np.{name}.{method}", target))
    return _raise(_refuse(f"np.{name}.{method}", ""))


def function(fn: Any, args: tuple, kwargs: dict) -> Any:
    """``__array_function__``: metadata functions run; the rest raise, naming gg's."""
    name = fn.__name__
    if name in METADATA:
        return fn._implementation(*args, **kwargs)
    return _raise(_refuse(f"np.{name}", name))


def to_array(x: Any, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
    """``__array__``: the values of a Tensor that requires no gradient; a TypeError for one
    that does (a graph Symbol refuses in its own ``__array__``, gpugrad.graph)."""
    if x.requires_grad:
        raise TypeError(E.at(
            "np.asarray: this Tensor requires a gradient, which NumPy would drop; call "
            "gg.to_numpy(t) for its values, or pass t.detach() (gg.stack joins Tensors "
            "into one, differentiably)"))
    data = x.data
    if not isinstance(data, np.ndarray):  # another backend: the values cross to the host
        if copy is False:
            raise ValueError("np.asarray(copy=False): this Tensor lives on another backend; "
                             "its values reach NumPy only as a copy")
        return np.array(B.to_numpy(data), dtype=dtype)
    if copy:
        return np.array(data, dtype=dtype)
    if dtype is not None and np.dtype(dtype) != data.dtype:
        if copy is False:
            raise ValueError(f"np.asarray(copy=False): converting {data.dtype} to "
                             f"{np.dtype(dtype)} needs a copy")
        return data.astype(dtype)
    out = data.view()
    out.flags.writeable = False  # the Tensor's own memory, maybe saved for backward
    return out


def _raise(exc: Exception) -> Any:
    raise exc
