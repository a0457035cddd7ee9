"""gpugrad as an array-API namespace: the arrays are Tensors, and functions differentiate.

``Tensor.__array_namespace__()`` returns this module, so array-API code written for any
library, ``xp = array_api_compat.array_namespace(x)`` and then only ``xp.*`` calls, runs on
Tensors unchanged and records a tape that ``backward`` (or ``gpugrad.grad``) differentiates.

- Registered ops are the differentiable core (``exp``, ``matmul``, ``sum``, ``take``, ...).
- Other functions are written from them (``var``, ``tensordot``, ``flip``, ``sort``, ...).
- Piecewise constant functions (``floor``, ``sign``, ...) return constants: their gradient
  is 0.
- Functions with boolean, integer or new-array results (comparisons, ``argsort``,
  ``zeros``, ``finfo``, ...) have nothing to differentiate.
- Functions with no gradient rule yet (``prod``, ``unique_values``, ...) run on
  constants and raise NotImplementedError, naming themselves, when an input requires a
  gradient. A result is never silently non-differentiable.

``gradient_support()`` lists how each function differentiates. Dtype attributes
(``float32``, ...) are the current backend's; functions that take a dtype read it by name
for the backend of their arrays.

>>> import array_api_compat, numpy as np, gpugrad as gg
>>> def softplus(x):
...     xp = array_api_compat.array_namespace(x)
...     return xp.logaddexp(x, xp.zeros_like(x))
>>> x = gg.Variable(np.array([0.0, 1.0]))
>>> array_api_compat.array_namespace(x) is gg.array_api
True
>>> gg.sum(softplus(x)).backward()
>>> np.round(gg.to_numpy(x.grad), 4)        # sigmoid(x)
array([0.5   , 0.7311])
"""

import math as _math
import sys as _sys
from typing import Any as _Any

from .. import backend as _B
from .. import hooks as _hooks
from ..registry import Op as _Op
from ..registry import registry as _registry
from . import _names
from ._creation import (
    arange,
    asarray,
    astype,
    can_cast,
    empty,
    empty_like,
    eye,
    finfo,
    from_dlpack,
    full,
    full_like,
    iinfo,
    isdtype,
    linspace,
    ones,
    ones_like,
    result_type,
    zeros,
    zeros_like,
)
from ._elementwise import (
    abs,
    acos,
    acosh,
    add,
    asin,
    asinh,
    atan,
    atan2,
    atanh,
    bitwise_and,
    bitwise_invert,
    bitwise_left_shift,
    bitwise_or,
    bitwise_right_shift,
    bitwise_xor,
    ceil,
    clip,
    conj,
    copysign,
    cos,
    cosh,
    divide,
    equal,
    exp,
    expm1,
    floor,
    floor_divide,
    greater,
    greater_equal,
    hypot,
    imag,
    isfinite,
    isinf,
    isnan,
    less,
    less_equal,
    log,
    log1p,
    log2,
    log10,
    logaddexp,
    logical_and,
    logical_not,
    logical_or,
    logical_xor,
    maximum,
    minimum,
    multiply,
    negative,
    nextafter,
    not_equal,
    positive,
    pow,
    real,
    reciprocal,
    remainder,
    round,
    sign,
    signbit,
    sin,
    sinh,
    sqrt,
    square,
    subtract,
    tan,
    tanh,
    trunc,
    where,
)
from . import fft
from ._info import __array_namespace_info__
from ._manipulation import (
    broadcast_arrays,
    broadcast_shapes,
    broadcast_to,
    concat,
    expand_dims,
    flip,
    matmul,
    matrix_transpose,
    meshgrid,
    moveaxis,
    permute_dims,
    repeat,
    reshape,
    roll,
    squeeze,
    stack,
    take,
    take_along_axis,
    tensordot,
    tile,
    tril,
    triu,
    unstack,
    vecdot,
)
from ._names import DTYPES
from ._reductions import (
    all,
    any,
    argmax,
    argmin,
    argsort,
    count_nonzero,
    cumulative_prod,
    cumulative_sum,
    diff,
    isin,
    max,
    mean,
    min,
    nonzero,
    prod,
    searchsorted,
    sort,
    std,
    sum,
    unique_all,
    unique_counts,
    unique_inverse,
    unique_values,
    var,
)

from . import linalg  # noqa: E402  (the linalg extension)

__array_api_version__ = "2025.12"

e = _math.e
inf = _math.inf
nan = _math.nan
pi = _math.pi
newaxis = None

__all__ = [  # the standard's names (_names.STANDARD) and the extras (_names.EXTRAS)
    "DTYPES", "KINDS", "__array_namespace_info__", "abs", "acos", "acosh", "add", "all", "any",
    "arange", "argmax", "argmin", "argsort", "asarray", "asin", "asinh", "astype", "atan",
    "atan2", "atanh", "bitwise_and", "bitwise_invert", "bitwise_left_shift", "bitwise_or",
    "bitwise_right_shift", "bitwise_xor", "broadcast_arrays", "broadcast_shapes",
    "broadcast_to", "can_cast", "ceil", "clip", "concat", "conj", "copysign", "cos", "cosh",
    "count_nonzero", "cumulative_prod", "cumulative_sum", "diff", "divide", "e", "empty",
    "empty_like", "equal", "exp", "expand_dims", "expm1", "eye", "fft", "finfo", "flip", "floor",
    "floor_divide", "from_dlpack", "full", "full_like", "gradient_support", "greater",
    "greater_equal", "hypot", "iinfo", "imag", "inf", "isdtype", "isfinite", "isin", "isinf",
    "isnan", "less", "less_equal", "linalg", "linspace", "log", "log1p", "log2", "log10",
    "logaddexp", "logical_and", "logical_not", "logical_or", "logical_xor", "matmul",
    "matrix_transpose",
    "max", "maximum", "mean", "meshgrid", "min", "minimum", "moveaxis", "multiply", "nan",
    "negative", "newaxis", "nextafter", "nonzero", "not_equal", "ones", "ones_like",
    "permute_dims", "pi", "positive", "pow", "prod", "real", "reciprocal", "remainder",
    "repeat", "reshape", "result_type", "roll", "round", "searchsorted", "sign", "signbit",
    "sin", "sinh", "sort", "sqrt", "square", "squeeze", "stack", "std", "subtract", "sum",
    "take", "take_along_axis", "tan", "tanh", "tensordot", "tile", "tril", "triu", "trunc",
    "twice_differentiable", "unique_all", "unique_counts", "unique_inverse", "unique_values",
    "unstack", "var", "vecdot", "where", "zeros", "zeros_like",
]

KINDS = {
    "op": "differentiable: a registered op",
    "composite": "differentiable: written from registered ops",
    "zero": "piecewise constant: gradient 0, the result is a constant",
    "none": "no gradient: boolean, integer or new-array results, dtype facts",
    "constants": "constants only: no gradient rule yet (NotImplementedError if asked)",
}
"""What each value of ``gradient_support()`` means."""


def __getattr__(name: str) -> _Any:
    if name in DTYPES:
        return getattr(_B.current().xp, name)
    raise AttributeError(
        f"module 'gpugrad.array_api' has no attribute {name!r}; it provides the array-API "
        "standard's functions, constants and dtypes (see gradient_support())"
    )


def __dir__() -> list[str]:
    return sorted({*globals(), *DTYPES})


def _kind(fn: _Any) -> str | None:
    if isinstance(fn, _Op):
        return "op" if fn.differentiable else "none"
    return getattr(fn, "gradient", None)


def gradient_support() -> dict[str, str]:
    """How each function of the namespace differentiates, by name (values: see ``KINDS``).

    >>> import gpugrad as gg
    >>> support = gg.array_api.gradient_support()
    >>> support["exp"], support["var"], support["floor"], support["argsort"], support["prod"]
    ('op', 'composite', 'zero', 'none', 'constants')
    """
    return {name: kind for name, fn in sorted(globals().items())
            if not name.startswith("_") or name == "__array_namespace_info__"
            if (kind := _kind(fn)) is not None}


def twice_differentiable(name: str) -> bool:
    """Whether the function ``name`` can be differentiated twice (``backward(create_graph=True)``
    through it): a registered op whose rule allows it, or a composite of such ops."""
    kind = _kind(globals()[name])
    if kind not in ("op", "composite"):
        return False
    op = _registry.get(name)
    return op is None or op.twice_differentiable


__all__.extend(n for n in _names.EXTENSIONS if n in globals() and n not in __all__)  # if present

_hooks.namespace = _sys.modules[__name__]  # t.__array_namespace__(), t & u, t % u, ...
