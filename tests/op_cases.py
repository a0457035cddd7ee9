"""The op case table: one row per op (or per variant of an op).

Each row names a registered op, a call with its static parameters bound, a NumPy reference and
one input maker per argument. tests/test_ops.py runs the generic checks over it,
tests/test_higher.py the second-derivative checks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import backend as B

Gen = Callable[[np.random.Generator, Any], np.ndarray]
SPECIAL_SHAPES = ((), (0,), (1, 0, 3))


# --- input makers: (rng, shape) -> float64 / int64 / bool host array -----------------------

def normal(r, s):
    return np.asarray(r.standard_normal(s), dtype=np.float64)


def positive(r, s):  # log, sqrt, pow bases: away from 0
    return np.asarray(r.uniform(0.5, 2.0, s), dtype=np.float64)


def nonzero(r, s):  # abs, relu, divisors: away from the kink / pole at 0
    return np.asarray(r.choice([-1.0, 1.0], s) * r.uniform(0.3, 2.0, s), dtype=np.float64)


def above_minus_one(r, s):  # log1p
    return np.asarray(r.uniform(-0.5, 2.0, s), dtype=np.float64)


def inside_unit(r, s):  # asin, acos, atanh, and tan away from its poles
    return np.asarray(r.uniform(-0.8, 0.8, s), dtype=np.float64)


def above_one(r, s):  # acosh
    return np.asarray(r.uniform(1.2, 3.0, s), dtype=np.float64)


def small_ints(r, s):  # comparisons: many ties
    return np.asarray(r.integers(-1, 2, s), dtype=np.float64)


def distinct(r, s):  # max/min: no ties, gaps of 0.5 >> finite-difference step
    n = math.prod(s)
    return np.asarray(r.permutation(n) * 0.5 - n / 4.0, dtype=np.float64).reshape(s)


def boolean(r, s):
    return np.asarray(r.random(s) < 0.5)


def index(values) -> Gen:
    return lambda r, s: np.asarray(values, dtype=np.int64)


def dtype(name: str) -> Any:
    """The current backend's dtype object for ``name`` (ops take backend dtypes)."""
    return B.resolve_dtype(B.current().xp, name)


# --- the table ------------------------------------------------------------------------------

@dataclass
class OpCase:
    name: str                          # the registered op this row covers
    fn: Callable[..., Any]             # Tensors -> Tensor; calls the op (static params bound)
    ref: Callable[..., Any]            # NumPy reference on the same host arrays
    gens: tuple[Gen, ...]              # one input maker per argument
    shapes: tuple = ((2, 3),)          # the shape given to each maker
    variant: str = ""
    kind: str = "other"                # "unary" | "binary" | "reduction" | "other"
    special: tuple = ()                # which of SPECIAL_SHAPES this case is run on
    grad: bool = True                  # False: no finite-difference check (see the row)
    grad_kw: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.name}-{self.variant}" if self.variant else self.name

    @property
    def differentiable(self) -> bool:
        return gg.registry[self.name].differentiable and self.grad

    def hosts(self, rng, bk, shapes=None, float_dtype=None) -> list[np.ndarray]:
        """Host inputs in the backend's float dtype (float32 on no_float64)."""
        float_dtype = float_dtype or bk.float_dtype
        out = []
        for gen, s in zip(self.gens, shapes or self.shapes):
            a = gen(rng, s)
            if a.dtype.kind == "c":  # complex makers (fft): the complex type of float_dtype
                a = a.astype({"float32": "complex64"}.get(float_dtype, "complex128"))
            out.append(a.astype(float_dtype) if a.dtype.kind == "f" else a)
        return out


def unary(name, ref, gen=normal, **kw) -> OpCase:
    return OpCase(name, gg.registry[name], ref, (gen,), kind="unary", special=SPECIAL_SHAPES, **kw)


def binary(name, ref, gen_a=normal, gen_b=normal, **kw) -> OpCase:
    return OpCase(name, gg.registry[name], ref, (gen_a, gen_b), ((2, 3), (2, 3)), kind="binary",
                  **kw)


def reduction(name, ref, variant, gen=normal, shape=(2, 3), special=(), **params) -> OpCase:
    op = gg.registry[name]
    return OpCase(name, lambda x: op(x, **params), lambda x: ref(x, **params), (gen,), (shape,),
                  variant=variant, kind="reduction", special=special)


def _sigmoid_ref(x):
    return 1.0 / (1.0 + np.exp(-x))


def _erf(x):
    return np.vectorize(math.erf, otypes=[np.float64])(x).astype(x.dtype)


def _softplus_ref(x, beta=1.0, threshold=20.0):
    with np.errstate(over="ignore"):
        return np.where(x * beta > threshold, x, np.log1p(np.exp(x * beta)) / beta)


def _gelu_ref(x):
    return x * 0.5 * (1.0 + _erf(x / x.dtype.type(math.sqrt(2.0))))


def _gelu_tanh_ref(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def around_threshold(r, s):  # softplus(beta=2, threshold=1): both sides of beta x = 1
    return np.asarray(r.choice([-1.0, 1.0], s) * r.uniform(0.1, 0.4, s) + 0.5, np.float64)


def _logsumexp_ref(x, axis=None, keepdims=False):
    m = np.max(x, axis=axis, keepdims=True)
    out = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis)


def _softmax_ref(x, axis=-1):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def _log_softmax_ref(x, axis=-1):
    return np.log(_softmax_ref(x, axis))


def _pow_ref(a, b):
    return a**b


def _clip(x, min=None, max=None):
    return np.clip(x, min, max)


CASES: list[OpCase] = [
    # arithmetic
    binary("add", np.add),
    binary("subtract", np.subtract),
    binary("multiply", np.multiply),
    binary("divide", np.divide, gen_b=nonzero),
    binary("pow", _pow_ref, gen_a=positive),
    OpCase("add", lambda x: gg.add(x, 2.5), lambda x: x + 2.5, (normal,), variant="scalar"),
    OpCase("subtract", lambda x: gg.subtract(1.5, x), lambda x: 1.5 - x, (normal,),
           variant="scalar_left"),
    OpCase("multiply", lambda x: gg.multiply(x, -3.0), lambda x: x * -3.0, (normal,),
           variant="scalar"),
    OpCase("divide", lambda x: gg.divide(2.0, x), lambda x: 2.0 / x, (nonzero,),
           variant="scalar_left"),
    OpCase("pow", lambda x: gg.pow(x, 2.0), lambda x: x**2.0, (normal,), variant="scalar2"),
    OpCase("pow", lambda x: gg.pow(x, 3), lambda x: x**3, (normal,), variant="int3"),
    OpCase("pow", lambda x: gg.pow(x, 0.5), lambda x: x**0.5, (positive,), variant="scalar_half"),
    OpCase("pow", lambda x: gg.pow(x, -1.5), lambda x: x**-1.5, (positive,), variant="negative"),
    unary("negative", np.negative),
    # elementwise
    unary("exp", np.exp),
    unary("log", np.log, gen=positive),
    unary("log1p", np.log1p, gen=above_minus_one),
    unary("sqrt", np.sqrt, gen=positive),
    unary("square", np.square),
    unary("abs", np.abs, gen=nonzero),
    unary("tanh", np.tanh),
    unary("sigmoid", _sigmoid_ref),
    unary("relu", lambda x: np.maximum(x, 0.0), gen=nonzero),
    # activations (gpugrad/ops/activations.py)
    unary("erf", lambda x: _erf(x)),
    OpCase("erf", gg.erf, lambda x: _erf(x), (lambda r, s: 2.0 * normal(r, s) + 1.0,),
           ((4, 5),), variant="wide"),  # both sides of |x| = 2.5, where its method changes
    unary("softplus", _softplus_ref),
    OpCase("softplus", lambda x: gg.softplus(x, beta=2.0, threshold=1.0),
           lambda x: _softplus_ref(x, 2.0, 1.0), (around_threshold,), variant="threshold",
           kind="unary"),
    unary("gelu", _gelu_ref),
    OpCase("gelu", lambda x: gg.gelu(x, approximate="tanh"), _gelu_tanh_ref, (normal,),
           variant="tanh", kind="unary", special=SPECIAL_SHAPES),
    unary("silu", lambda x: x / (1.0 + np.exp(-x))),
    binary("maximum", np.maximum),
    binary("minimum", np.minimum),
    binary("logaddexp", np.logaddexp),
    OpCase("logaddexp", lambda x: gg.logaddexp(x, 0.0), lambda x: np.logaddexp(x, 0.0),
           (normal,), variant="scalar"),
    OpCase("where", gg.where, np.where, (boolean, normal, normal), ((2, 3),) * 3),
    OpCase("where", gg.where, np.where, (boolean, normal, normal), ((3, 1), (1, 4), ()),
           variant="broadcast"),
    OpCase("where", lambda c, b: gg.where(c, 0.5, b), lambda c, b: np.where(c, 0.5, b),
           (boolean, normal), ((2, 3), (2, 3)), variant="scalar"),
    # clip inputs stay >= 0.1 away from the bounds (the kink test covers the bounds)
    OpCase("clip", lambda x: gg.clip(x, min=-1.0, max=1.0), lambda x: _clip(x, -1.0, 1.0),
           (lambda r, s: np.array([[-1.7, -0.6, 0.3], [0.8, 1.4, -0.1]]),), variant="both"),
    OpCase("clip", lambda x: gg.clip(x, min=-0.5), lambda x: _clip(x, min=-0.5),
           (normal,), variant="min_only", kind="unary", special=SPECIAL_SHAPES),
    OpCase("clip", lambda x: gg.clip(x, max=0.25), lambda x: _clip(x, max=0.25),
           (lambda r, s: np.array([[-1.7, -0.6, 0.3], [0.8, 1.4, -0.1]]),), variant="max_only"),
    OpCase("astype", lambda x: gg.astype(x, dtype=x.dtype), lambda x: x, (normal,),
           variant="same", kind="unary", special=SPECIAL_SHAPES),
    # float64 -> float32 rounds; the map is linear, so a large step is exact up to rounding
    OpCase("astype", lambda x: gg.astype(x, dtype=dtype("float32")),
           lambda x: x.astype(np.float32), (normal,), variant="float32",
           grad_kw={"eps": 1e-2, "atol": 1e-4}),
    # an integer result is a constant: nothing to differentiate
    OpCase("astype", lambda x: gg.astype(x, dtype=dtype("int64")),
           lambda x: x.astype(np.int64), (lambda r, s: 3.0 * normal(r, s),), variant="int64",
           grad=False),
    # trigonometric and hyperbolic
    unary("sin", np.sin),
    unary("cos", np.cos),
    unary("tan", np.tan, gen=inside_unit),
    unary("asin", np.arcsin, gen=inside_unit),
    unary("acos", np.arccos, gen=inside_unit),
    unary("atan", np.arctan),
    binary("atan2", np.arctan2),
    unary("sinh", np.sinh),
    unary("cosh", np.cosh),
    unary("asinh", np.arcsinh),
    unary("acosh", np.arccosh, gen=above_one),
    unary("atanh", np.arctanh, gen=inside_unit),
    unary("expm1", np.expm1),
    # complex parts on real input (complex inputs: tests/test_complex.py)
    unary("conj", np.conj),
    unary("real", np.real),
    unary("imag", np.imag),
    # comparisons: boolean results, no gradient
    *(binary(name, ref, small_ints, small_ints) for name, ref in [
        ("equal", np.equal), ("not_equal", np.not_equal), ("less", np.less),
        ("less_equal", np.less_equal), ("greater", np.greater),
        ("greater_equal", np.greater_equal)]),
    # reductions
    reduction("sum", np.sum, "all", special=SPECIAL_SHAPES),
    reduction("sum", np.sum, "axis0", special=((1, 0, 3),), axis=0),
    reduction("sum", np.sum, "axes_keepdims", shape=(2, 3, 2), axis=(0, 2), keepdims=True),
    reduction("mean", np.mean, "all", special=SPECIAL_SHAPES),
    reduction("mean", np.mean, "axis-1", special=((1, 0, 3),), axis=-1),
    reduction("mean", np.mean, "axes_keepdims", shape=(2, 3, 2), axis=(0, 2), keepdims=True),
    reduction("max", np.max, "all", gen=distinct, special=((),)),
    reduction("max", np.max, "axis-1_keepdims", gen=distinct, axis=-1, keepdims=True),
    reduction("max", np.max, "axes", gen=distinct, shape=(2, 3, 2), axis=(0, 2)),
    reduction("min", np.min, "all", gen=distinct, special=((),)),
    reduction("min", np.min, "axis0", gen=distinct, axis=0),
    reduction("min", np.min, "axes_keepdims", gen=distinct, shape=(2, 3, 2), axis=(1, 2),
              keepdims=True),
    reduction("logsumexp", _logsumexp_ref, "all", special=((),)),
    reduction("logsumexp", _logsumexp_ref, "axis-1", axis=-1),
    reduction("logsumexp", _logsumexp_ref, "axes_keepdims", shape=(2, 3, 2), axis=(0, 2),
              keepdims=True),
    reduction("softmax", _softmax_ref, "axis-1", axis=-1),
    reduction("softmax", _softmax_ref, "axis0", axis=0),
    reduction("log_softmax", _log_softmax_ref, "axis-1", axis=-1),
    reduction("log_softmax", _log_softmax_ref, "axis0", axis=0),
    # scans
    OpCase("cumulative_sum", lambda x: gg.cumulative_sum(x, axis=1),
           lambda x: np.cumulative_sum(x, axis=1), (normal,)),
    OpCase("cumulative_sum", lambda x: gg.cumulative_sum(x, axis=0, include_initial=True),
           lambda x: np.cumulative_sum(x, axis=0, include_initial=True), (normal,),
           variant="initial_axis0"),
    OpCase("cumulative_sum", gg.cumulative_sum, np.cumulative_sum, (normal,), ((5,),),
           variant="1d", special=((0,),)),
    # linear algebra
    OpCase("matmul", gg.matmul, np.matmul, (normal, normal), ((3, 4), (4, 2)), variant="2d"),
    OpCase("linear", gg.linear, lambda x, w, b: x @ w + b, (normal, normal, normal),
           ((3, 4), (4, 2), (2,)), variant="2d"),
    OpCase("linear", gg.linear, lambda x, w, b: x @ w + b, (normal, normal, normal),
           ((2, 3, 4), (4, 2), (1, 2)), variant="batched"),
    OpCase("linear", gg.linear, lambda x, w, b: x @ w + b, (normal, normal, normal),
           ((3, 4), (4, 2), (3, 1)), variant="column_bias"),
    OpCase("matmul", gg.matmul, np.matmul, (normal, normal), ((2, 1, 2, 3), (3, 3, 2)),
           variant="batch_broadcast"),
    OpCase("matmul", gg.matmul, np.matmul, (normal, normal), ((4,), (4, 3)), variant="1d_2d"),
    OpCase("matmul", gg.matmul, np.matmul, (normal, normal), ((3, 4), (4,)), variant="2d_1d"),
    OpCase("matmul", gg.matmul, np.matmul, (normal, normal), ((4,), (4,)), variant="1d_1d"),
    OpCase("matmul", gg.matmul, np.matmul, (normal, normal), ((2, 2, 3), (3,)),
           variant="batch_1d"),
    OpCase("matmul", gg.matmul, np.matmul, (normal, normal), ((3,), (2, 3, 2)),
           variant="1d_batch"),
    OpCase("matrix_transpose", gg.matrix_transpose, lambda x: np.swapaxes(x, -1, -2), (normal,),
           ((2, 3, 2),)),
    OpCase("permute_dims", lambda x: gg.permute_dims(x, axes=(2, 0, 1)),
           lambda x: np.transpose(x, (2, 0, 1)), (normal,), ((2, 3, 2),)),
    OpCase("permute_dims", lambda x: gg.permute_dims(x, axes=(1, 0)), np.transpose, (normal,),
           variant="2d"),
    # shape
    OpCase("reshape", lambda x: gg.reshape(x, shape=(3, 2)), lambda x: x.reshape(3, 2),
           (normal,)),
    OpCase("reshape", lambda x: gg.reshape(x, shape=(-1,)), lambda x: x.reshape(-1), (normal,),
           variant="flatten"),
    OpCase("expand_dims", lambda x: gg.expand_dims(x, axis=0), lambda x: x[None], (normal,)),
    OpCase("expand_dims", lambda x: gg.expand_dims(x, axis=-1), lambda x: x[..., None],
           (normal,), variant="last"),
    OpCase("squeeze", lambda x: gg.squeeze(x, axis=1), lambda x: np.squeeze(x, axis=1),
           (normal,), ((2, 1, 3),)),
    OpCase("squeeze", lambda x: gg.squeeze(x, axis=(0, 2)), lambda x: np.squeeze(x, (0, 2)),
           (normal,), ((1, 3, 1),), variant="axes"),
    OpCase("broadcast_to", lambda x: gg.broadcast_to(x, shape=(2, 3)),
           lambda x: np.broadcast_to(x, (2, 3)), (normal,), ((3,),)),
    OpCase("broadcast_to", lambda x: gg.broadcast_to(x, shape=(2, 2, 3)),
           lambda x: np.broadcast_to(x, (2, 2, 3)), (normal,), ((2, 1),), variant="expand"),
    OpCase("concat", lambda a, b: gg.concat([a, b], axis=0),
           lambda a, b: np.concatenate([a, b], axis=0), (normal, normal), ((2, 3), (1, 3))),
    OpCase("concat", lambda a, b, c: gg.concat([a, b, c], axis=-1),
           lambda a, b, c: np.concatenate([a, b, c], axis=-1), (normal,) * 3,
           ((2, 1), (2, 3), (2, 2)), variant="axis-1_three"),
    OpCase("concat", lambda a, b: gg.concat([a, b], axis=None),
           lambda a, b: np.concatenate([a, b], axis=None), (normal, normal), ((2, 3), (4,)),
           variant="flat"),
    OpCase("stack", lambda a, b: gg.stack([a, b], axis=0), lambda a, b: np.stack([a, b]),
           (normal, normal), ((2, 3), (2, 3))),
    OpCase("stack", lambda a, b, c: gg.stack([a, b, c], axis=1),
           lambda a, b, c: np.stack([a, b, c], axis=1), (normal,) * 3, ((3,),) * 3,
           variant="axis1_three"),
    OpCase("stack", lambda a, b: gg.stack([a, b], axis=-1), lambda a, b: np.stack([a, b], -1),
           (normal, normal), ((2, 3), (2, 3)), variant="axis-1"),
]

# indexing: getitem keys, on the shape each key needs
GETITEM_KEYS = [
    ("int", (3, 4), 1),
    ("neg_int", (3, 4), -1),
    ("col", (3, 4), (slice(None), 1)),
    ("step", (7,), slice(None, None, 2)),
    ("neg_step", (7,), slice(5, 0, -2)),
    ("reverse", (2, 3), (slice(None), slice(None, None, -1))),
    ("none", (3, 4), (None, slice(1, 3))),
    ("ellipsis", (2, 3, 2), (Ellipsis, 1)),
    ("mixed", (2, 3, 2), (1, None, Ellipsis, slice(None, None, -1))),
    ("empty_slice", (3, 4), slice(1, 1)),
    ("all", (2, 3), Ellipsis),
]
CASES += [
    OpCase("getitem", partial(gg.getitem, key=key), lambda x, key=key: x[key], (normal,),
           (shape,), variant=variant)
    for variant, shape, key in GETITEM_KEYS
]
# setitem: the out-of-place x[key] = value that item assignment on a recorded Tensor uses;
# value broadcasts into x[key], so its gradient is summed back
SETITEM_ARGS = [
    ("block", (3, 4), (slice(0, 2), slice(1, 3)), (2, 2)),
    ("row_broadcast", (3, 4), 1, (1,)),
    ("step", (7,), slice(None, None, 3), (3,)),
    ("ellipsis", (2, 3, 2), (Ellipsis, 0), (3,)),
    ("int_slice", (2, 3, 2), (1, slice(None, None, -1)), (2,)),
]


def _setitem_ref(x, v, key):
    out = x.copy()
    out[key] = v
    return out


CASES += [
    OpCase("setitem", partial(gg.setitem, key=key), partial(_setitem_ref, key=key),
           (normal, normal), (shape, vshape), variant=variant)
    for variant, shape, key, vshape in SETITEM_ARGS
]
CASES.append(OpCase("setitem", lambda x: gg.setitem(x, 0.5, key=(slice(None), 0)),
                    lambda x: _setitem_ref(x, 0.5, (slice(None), 0)), (normal,),
                    variant="scalar"))
# take: repeated and negative indices everywhere, so the backward must scatter-add
TAKE_ARGS = [
    ("axis0", (4, 3), [2, 0, 2, -1], 0),
    ("axis1", (3, 4), [3, 3, 0], 1),
    ("flat", (2, 3), [5, -6, 5], None),
    ("idx2d", (4, 2), [[0, 1], [1, 3], [0, 0]], 0),
    ("axis-1_idx2d", (2, 3), [[2, -1], [0, 2]], -1),
]
CASES += [
    OpCase("take", partial(gg.take, axis=axis), partial(np.take, axis=axis),
           (normal, index(idx)), (shape, None), variant=variant)
    for variant, shape, idx, axis in TAKE_ARGS
]
CASES.append(OpCase("take", lambda x, i: x[:, i], lambda x, i: x[:, i],
                    (normal, index([2, 0, -1, 2])), ((2, 3), None), variant="operator_column"))

# take_along_axis: repeats (also -1 and n-1 naming one position) must accumulate
ALONG_ARGS = [
    ("axis-1", (3, 4), [[0, 0], [3, -1], [1, 2]], -1),
    ("axis0", (3, 2), [[2, 0], [2, -3]], 0),
    ("labels", (3, 4), [[1], [3], [0]], 1),
]
CASES += [
    OpCase("take_along_axis", partial(gg.take_along_axis, axis=axis),
           partial(np.take_along_axis, axis=axis), (normal, index(idx)), (shape, None),
           variant=variant)
    for variant, shape, idx, axis in ALONG_ARGS
]

# softmax_cross_entropy: one class label per row (negative labels count from the end)


def _softmax_cross_entropy_ref(x, t, axis=-1):
    logp = _log_softmax_ref(x, axis)
    return -np.squeeze(np.take_along_axis(logp, np.expand_dims(t, axis), axis), axis)


CASES += [
    OpCase("softmax_cross_entropy", partial(gg.softmax_cross_entropy, axis=axis),
           partial(_softmax_cross_entropy_ref, axis=axis), (normal, index(t)), (shape, None),
           variant=variant)
    for variant, shape, t, axis in [("labels", (3, 4), [1, 3, -1], -1),
                                    ("axis0", (3, 2), [2, 0], 0),
                                    ("batched", (2, 3, 4), [[0, 3, 1], [2, 2, 0]], -1)]
]

# boolean masks: x[mask] over all or the leading dims of x, and x[mask] = value out of place
# (value broadcasts to x[mask]'s shape, (count,) + the dims the mask leaves)
MASK_2x3 = [[True, False, True], [False, False, True]]  # count 3
MASK_ARGS = [
    ("full", (2, 3), MASK_2x3),
    ("leading", (3, 4), [True, False, True]),
    ("none", (2, 3), [False, False]),
    ("all_3d", (2, 3, 2), [[True, True, True], [True, True, True]]),
]


def mask(values) -> Gen:
    return lambda r, s: np.asarray(values, dtype=bool)


CASES += [
    OpCase("getitem_mask", lambda x, m: x[m], lambda x, m: x[m], (normal, mask(m)),
           (shape, None), variant=variant)
    for variant, shape, m in MASK_ARGS
]
SETITEM_MASK_ARGS = [
    ("full", (2, 3), MASK_2x3, (3,)),
    ("leading_row", (3, 4), [True, False, True], (4,)),
    ("leading_rows", (3, 4), [True, False, True], (2, 4)),
    ("scalar", (2, 3), MASK_2x3, ()),
]


def _setitem_mask_ref(x, v, m):
    out = x.copy()
    out[m] = v
    return out


CASES += [
    OpCase("setitem_mask", gg.setitem_mask, _setitem_mask_ref, (normal, normal, mask(m)),
           (shape, vshape, None), variant=variant)
    for variant, shape, m, vshape in SETITEM_MASK_ARGS
]

from op_cases_fft import FFT_CASES  # noqa: E402  (the fft extension's rows)
from op_cases_linalg import LINALG_CASES  # noqa: E402  (the linalg extension's rows)

CASES += FFT_CASES + LINALG_CASES
BY_ID = {c.id: c for c in CASES}
GRAD_CASES = [c for c in CASES if c.differentiable]
BINARY_CASES = [c for c in CASES if c.kind == "binary"]
BROADCAST_PAIRS = [((3, 1), (1, 4)), ((2, 3), (3,)), ((), (2, 3)), ((2, 3), ())]
SHAPE_CASES = [(c, s) for c in CASES for s in c.special]


def params(cases):
    return [pytest.param(c, id=c.id) for c in cases]
