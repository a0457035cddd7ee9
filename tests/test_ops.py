"""The op case table: one row per op (or per variant of an op), and generic checks over it.

Every case gets, on every backend of ``tests/conftest.py``:

- a forward check against a NumPy reference computed on host copies of the inputs;
- a float64 finite-difference gradient check (``gg.testing.check_grad``, float64 backends only);
- a backward run that checks the gradient's dtype, shape and device and that no input (nor the
  seed gradient) was mutated;
- the broadcasting pairs for binary elementwise ops, and the shapes (), (0,), (1, 0, 3) for
  elementwise unary ops and reductions.

Kink values, the indexing fast paths, sigmoid's float32 accuracy and the softmax family's
behaviour on large and infinite inputs have their own tests below the generic ones.
No framework is used as an oracle: references are NumPy forward formulas, finite differences
and hand-derived gradients.
"""

from __future__ import annotations

import math
import warnings
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

BY_ID = {c.id: c for c in CASES}
GRAD_CASES = [c for c in CASES if c.differentiable]
BINARY_CASES = [c for c in CASES if c.kind == "binary"]
BROADCAST_PAIRS = [((3, 1), (1, 4)), ((2, 3), (3,)), ((), (2, 3)), ((2, 3), ())]
SHAPE_CASES = [(c, s) for c in CASES for s in c.special]


def params(cases):
    return [pytest.param(c, id=c.id) for c in cases]


# --- helpers --------------------------------------------------------------------------------

FORWARD_TOL = {"float32": (1e-5, 1e-6), "float64": (1e-11, 1e-13)}


def assert_matches(out: gg.Tensor, expect: Any, bk) -> None:
    """``out`` equals the NumPy result: shape, dtype, values, and it is on the backend's device."""
    got = gg.to_numpy(out)
    expect = np.asarray(expect)
    assert got.shape == expect.shape
    assert got.dtype == expect.dtype, f"got {got.dtype}, NumPy gives {expect.dtype}"
    if got.dtype.kind == "f":
        rtol, atol = FORWARD_TOL[got.dtype.name]
        np.testing.assert_allclose(got, expect, rtol=rtol, atol=atol, equal_nan=True)
    else:
        np.testing.assert_array_equal(got, expect)
    assert_on_backend(out.data, bk)


def assert_on_backend(arr, bk) -> None:
    want = bk.backend()
    assert B.name_of(B.namespace_of(arr)) == want.name
    if want.device is not None:
        assert arr.device == want.device


def copy_host(t) -> np.ndarray:
    return np.array(gg.to_numpy(t), copy=True)


def spy_forward(monkeypatch, name) -> list:
    """Record calls of op ``name``'s forward rule (so a row cannot silently test another op)."""
    op = gg.registry[name]
    calls: list = []

    def wrap(rule):
        def counted(*args, **kw):
            calls.append(name)
            return rule(*args, **kw)
        return counted

    monkeypatch.setattr(op, "forward", wrap(op.forward))
    for backend_name, rule in list(op.fast_forward.items()):
        monkeypatch.setitem(op.fast_forward, backend_name, wrap(rule))
    return calls


def run_backward(case, hosts, bk, rng):
    """Forward + backward with Variables for the floating inputs; checks each gradient's dtype,
    shape and device, and that neither the inputs nor the seed were mutated. Returns the grads.
    """
    args = [gg.Variable(h) if h.dtype.kind == "f" else gg.asarray(h) for h in hosts]
    before = [copy_host(a) for a in args]
    out = case.fn(*args)
    floating = B.is_floating(out.xp, out.dtype)
    if not (gg.registry[case.name].differentiable and floating):
        assert not out.requires_grad
        with pytest.raises(gg.GradientError):
            out.backward(grad=gg.asarray(np.ones(out.shape, dtype=bk.float_dtype)))
        return None
    seed = gg.asarray(rng.standard_normal(out.shape).astype(gg.to_numpy(out).dtype))
    seed_before = copy_host(seed)
    out.backward(grad=seed)
    grads = []
    for a, h in zip(args, hosts):
        if not a.requires_grad:
            assert a.grad is None
            continue
        assert a.grad is not None
        assert tuple(a.grad.shape) == h.shape
        assert a.grad.dtype == a.dtype
        assert B.device_of(a.grad) == a.device
        assert_on_backend(a.grad, bk)
        grads.append(gg.to_numpy(a.grad))
    for a, b in zip(args, before):
        np.testing.assert_array_equal(gg.to_numpy(a), b)
    np.testing.assert_array_equal(gg.to_numpy(seed), seed_before)
    return grads


# --- the guard ------------------------------------------------------------------------------

def test_every_registered_op_has_a_case():
    builtin = {name for name, op in gg.registry.items()
               if op.forward.__module__.startswith("gpugrad.ops")}
    assert len(builtin) >= 44
    covered = {c.name for c in CASES}
    assert not builtin - covered, f"ops without a case in tests/test_ops.py: {builtin - covered}"
    assert not covered - set(gg.registry), "cases for ops that are not registered"
    assert len(BY_ID) == len(CASES), "case ids must be unique"


def test_guard_ignores_user_ops():
    @gg.ops.defop("_test_ops_user_square")
    def user_square(xp, x):
        "x**2"
        return x * x, x

    try:
        builtin = {n for n, op in gg.registry.items()
                   if op.forward.__module__.startswith("gpugrad.ops")}
        assert "_test_ops_user_square" in gg.registry
        assert "_test_ops_user_square" not in builtin
    finally:
        gg.ops.unregister("_test_ops_user_square")


# --- generic checks over the table ----------------------------------------------------------

@pytest.mark.parametrize("case", params(CASES))
def test_forward(case, bk, rng, monkeypatch):
    hosts = case.hosts(rng, bk)
    calls = spy_forward(monkeypatch, case.name)
    out = case.fn(*[gg.asarray(h) for h in hosts])
    assert calls, f"case {case.id} never called op {case.name}"
    assert_matches(out, case.ref(*[h.copy() for h in hosts]), bk)


@pytest.mark.parametrize("case", params(GRAD_CASES))
def test_grad(case, bk64, rng):
    hosts = case.hosts(rng, bk64)
    gg.testing.check_grad(case.fn, *[gg.asarray(h) for h in hosts], **case.grad_kw)


@pytest.mark.parametrize("case", params(CASES))
def test_backward_meta_and_no_mutation(case, bk, rng):
    run_backward(case, case.hosts(rng, bk), bk, rng)


@pytest.mark.parametrize("case", params(CASES))
def test_float32_stays_float32(case, bk64, rng):
    """float32 inputs give float32 outputs and gradients where float64 exists too (NumPy
    included): no Python scalar, constant or rule may upcast them to float64. (On no_float64
    the generic tests above already run in float32.)"""
    hosts = case.hosts(rng, bk64, float_dtype="float32")
    out = case.fn(*[gg.asarray(h) for h in hosts])
    assert_matches(out, case.ref(*hosts), bk64)
    run_backward(case, hosts, bk64, rng)


@pytest.mark.parametrize("shapes", BROADCAST_PAIRS, ids=str)
@pytest.mark.parametrize("case", params(BINARY_CASES))
def test_broadcast_forward_backward(case, shapes, bk, rng):
    hosts = case.hosts(rng, bk, shapes)
    out = case.fn(*[gg.asarray(h) for h in hosts])
    assert_matches(out, case.ref(*hosts), bk)
    run_backward(case, hosts, bk, rng)


@pytest.mark.parametrize("shapes", BROADCAST_PAIRS, ids=str)
@pytest.mark.parametrize("case", params(c for c in BINARY_CASES if c.differentiable))
def test_broadcast_grad(case, shapes, bk64, rng):
    hosts = case.hosts(rng, bk64, shapes)
    gg.testing.check_grad(case.fn, *[gg.asarray(h) for h in hosts])


@pytest.mark.parametrize("case,shape",
                         [pytest.param(c, s, id=f"{c.id}-{s}") for c, s in SHAPE_CASES])
def test_special_shapes(case, shape, bk, rng):
    hosts = case.hosts(rng, bk, (shape,))
    with warnings.catch_warnings():
        if case.name == "mean" and 0 in shape:  # 0/0: nan, and NumPy warns about it
            warnings.simplefilter("ignore", RuntimeWarning)
        out = case.fn(*[gg.asarray(h) for h in hosts])
        assert_matches(out, case.ref(*hosts), bk)
        (grad,) = run_backward(case, hosts, bk, rng)
    assert grad.shape == shape
    if bk.float64 and shape == ():
        gg.testing.check_grad(case.fn, *[gg.asarray(h) for h in hosts], **case.grad_kw)


# Reductions with no identity cannot reduce an empty axis: they raise an OpError naming the op
# (NumPy raises as well). Reducing only non-empty axes of an empty array works.
@pytest.mark.parametrize("name", ["max", "min", "logsumexp"])
@pytest.mark.parametrize("shape", [(0,), (1, 0, 3)], ids=str)
def test_empty_reduction_without_identity_raises(name, shape, bk):
    x = gg.Variable(np.zeros(shape, dtype=bk.float_dtype))
    with pytest.raises(gg.OpError, match=name):
        gg.registry[name](x)


@pytest.mark.parametrize("name", ["max", "min", "logsumexp", "softmax", "log_softmax"])
def test_reduction_over_nonempty_axis_of_empty_array(name, bk, rng):
    x = gg.Variable(np.zeros((1, 0, 3), dtype=bk.float_dtype))
    out = gg.registry[name](x, axis=-1)
    expected_shape = (1, 0, 3) if "softmax" in name else (1, 0)
    assert out.shape == expected_shape
    out.backward(grad=gg.asarray(np.zeros(expected_shape, dtype=bk.float_dtype)))
    assert x.grad.shape == (1, 0, 3) and x.grad.dtype == x.dtype


# --- kinks (hand-derived gradients) ---------------------------------------------------------

def grads_of(bk, fn, *values):
    """Gradients of sum(fn(*Variables)) on the backend, as host arrays."""
    xs = [gg.Variable(np.asarray(v, dtype=bk.float_dtype)) for v in values]
    out = fn(*xs)
    gg.sum(out).backward()
    for x in xs:
        assert x.grad.dtype == x.dtype
    return [gg.to_numpy(x.grad) for x in xs]


def test_kink_relu_at_zero(bk):
    (g,) = grads_of(bk, gg.relu, [-1.0, 0.0, 2.0])
    np.testing.assert_array_equal(g, [0.0, 0.0, 1.0])


def test_kink_abs_at_zero(bk):
    (g,) = grads_of(bk, gg.abs, [-1.5, 0.0, 2.0])
    np.testing.assert_array_equal(g, [-1.0, 0.0, 1.0])


@pytest.mark.parametrize("name,winner_a", [("maximum", [0.5, 1.0, 0.5, 0.0]),
                                           ("minimum", [0.5, 0.0, 0.5, 1.0])])
def test_kink_maximum_minimum_ties_split(name, winner_a, bk):
    op = gg.registry[name]
    ga, gb = grads_of(bk, op, [1.0, 2.0, -3.0, 0.0], [1.0, 0.0, -3.0, 4.0])
    np.testing.assert_array_equal(ga, winner_a)
    np.testing.assert_array_equal(gb, 1.0 - np.asarray(winner_a))
    (g,) = grads_of(bk, lambda a: op(a, a), [1.0, -2.0])  # both halves reach the same input
    np.testing.assert_array_equal(g, [1.0, 1.0])


def test_kink_max_min_full_reduction_ties_split_evenly(bk):
    x = [[3.0, -1.0], [3.0, -1.0], [0.0, 3.0]]
    (g,) = grads_of(bk, gg.max, x)
    np.testing.assert_allclose(g, [[1 / 3, 0], [1 / 3, 0], [0, 1 / 3]], rtol=1e-6)
    assert abs(g.sum() - 1.0) < 1e-6
    (g,) = grads_of(bk, gg.min, x)
    np.testing.assert_array_equal(g, [[0, 0.5], [0, 0.5], [0, 0]])
    (g,) = grads_of(bk, lambda t: gg.max(t, axis=1), [[2.0, 2.0], [1.0, 0.0]])
    np.testing.assert_array_equal(g, [[0.5, 0.5], [1.0, 0.0]])


@pytest.mark.parametrize("bounds,expect", [
    ({"min": -1.0, "max": 1.0}, [0, 1, 1, 1, 0]),
    ({"min": -1.0}, [0, 1, 1, 1, 1]),
    ({"max": 1.0}, [1, 1, 1, 1, 0]),
], ids=["both", "min", "max"])
def test_kink_clip_passes_gradient_on_closed_interval(bounds, expect, bk):
    (g,) = grads_of(bk, lambda x: gg.clip(x, **bounds), [-2.0, -1.0, 0.0, 1.0, 2.0])
    np.testing.assert_array_equal(g, expect)


def test_kink_sqrt_at_zero_is_inf(bk):
    with np.errstate(divide="ignore"):  # 1/(2*sqrt(0)) is a true division by zero
        (g,) = grads_of(bk, gg.sqrt, [0.0, 4.0])
    np.testing.assert_array_equal(g, [np.inf, 0.25])


@pytest.mark.parametrize("exponent", [0.0, 0], ids=["float", "int"])
def test_kink_pow_scalar_exponent_zero(exponent, bk):
    x = [-2.0, 0.0, 3.0]
    out = gg.pow(gg.asarray(np.asarray(x, dtype=bk.float_dtype)), exponent)
    np.testing.assert_array_equal(gg.to_numpy(out), [1.0, 1.0, 1.0])
    (g,) = grads_of(bk, lambda t: gg.pow(t, exponent), x)
    np.testing.assert_array_equal(g, [0.0, 0.0, 0.0])


def test_kink_pow_array_exponent_zero(bk):
    ga, gb = grads_of(bk, gg.pow, [0.0, 2.0, -1.0], [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(ga, [0.0, 0.0, 0.0])
    # d/db a**b = a**b log(a): log 2 at a = 2; 0 by convention where a <= 0
    np.testing.assert_allclose(gb, [0.0, math.log(2.0), 0.0], rtol=1e-6)


def test_kink_pow_at_zero_base(bk):
    (g,) = grads_of(bk, lambda t: gg.pow(t, 2.0), [0.0, 1.5])
    np.testing.assert_array_equal(g, [0.0, 3.0])
    (g,) = grads_of(bk, lambda t: gg.pow(t, 1.0), [0.0, 1.5])
    np.testing.assert_array_equal(g, [1.0, 1.0])


def test_astype_gradient_keeps_input_dtype(bk64):
    x = gg.Variable(np.array([0.5, -1.25], dtype=np.float32))
    y = gg.astype(x, dtype=dtype("float64"))
    assert B.dtype_name(y.dtype) == "float64"
    gg.sum(y * y).backward()
    assert x.grad.dtype == x.dtype
    np.testing.assert_array_equal(gg.to_numpy(x.grad), np.array([1.0, -2.5], np.float32))


# --- indexing: scatter-add and the NumPy fast paths -----------------------------------------

def test_take_repeated_and_negative_indices_accumulate(bk):
    idx = gg.asarray(np.array([1, 1, 3, -1, 1], dtype=np.int64))
    (g,) = grads_of(bk, lambda x: gg.take(x, idx, axis=0), [10.0, 11.0, 12.0, 13.0, 14.0])
    np.testing.assert_array_equal(g, [0.0, 3.0, 0.0, 1.0, 1.0])
    idx2 = gg.asarray(np.array([[0, 0], [-1, 0]], dtype=np.int64))
    (g,) = grads_of(bk, lambda x: gg.take(x, idx2, axis=1), np.ones((2, 3)))
    np.testing.assert_array_equal(g, [[3.0, 0.0, 1.0], [3.0, 0.0, 1.0]])


def test_take_along_axis_repeated_and_negative_indices_accumulate(bk):
    idx = gg.asarray(np.array([[0, 0, 2], [-1, 2, 0]], dtype=np.int64))
    (g,) = grads_of(bk, lambda x: gg.take_along_axis(x, idx, axis=1), np.ones((2, 3)))
    np.testing.assert_array_equal(g, [[2.0, 0.0, 1.0], [1.0, 0.0, 2.0]])


def scatter_add_loop(in_shape, idx, axis, g):
    """Hand-written backward of take: each gathered slice of g added back at its index."""
    base = (math.prod(in_shape),) if axis is None else in_shape
    ax = 0 if axis is None else axis % len(in_shape)
    out = np.zeros(base)
    lead = (slice(None),) * ax
    g = g.reshape(base[:ax] + idx.shape + base[ax + 1:])
    for j in np.ndindex(*idx.shape):
        out[lead + (int(idx[j]) % base[ax],)] += g[lead + j]
    return out.reshape(in_shape)


@pytest.mark.parametrize("variant,shape,idx,axis", TAKE_ARGS, ids=[t[0] for t in TAKE_ARGS])
def test_take_fast_path_matches_portable_rule(variant, shape, idx, axis, rng):
    op = gg.registry["take"]
    x = rng.standard_normal(shape)
    idx = np.asarray(idx, dtype=np.int64)
    out, res = op.forward(np, x, idx, axis=axis)
    g = rng.standard_normal(out.shape)
    g_before = g.copy()
    portable = op.grads(np, g, res, (True, False), {"axis": axis})
    fast = op.fast_vjp["numpy"](np, g, res, axis=axis)
    assert portable[1] is None and fast[1] is None
    expect = scatter_add_loop(shape, idx, axis, g)
    np.testing.assert_allclose(portable[0], expect, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fast[0], expect, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(g, g_before)


@pytest.mark.parametrize("variant,shape,key", GETITEM_KEYS, ids=[k[0] for k in GETITEM_KEYS])
def test_getitem_fast_path_matches_portable_rule(variant, shape, key, rng):
    op = gg.registry["getitem"]
    x = rng.standard_normal(shape)
    out, res = op.forward(np, x, key=key)
    g = rng.standard_normal(np.shape(out))
    (portable,) = op.grads(np, g, res, (True,), {"key": key})
    (fast,) = op.fast_vjp["numpy"](np, g, res, key=key)
    # hand-derived: d sum(g * x[key]) / dx puts g at the selected positions, 0 elsewhere
    marker = np.arange(x.size, dtype=np.float64).reshape(shape)
    expect = np.zeros(x.size)
    np.put(expect, np.asarray(marker[key], dtype=np.int64).ravel(), np.ravel(g))
    expect = expect.reshape(shape)
    np.testing.assert_array_equal(portable, expect)
    np.testing.assert_array_equal(fast, expect)


# --- numerics: sigmoid and the softmax family -----------------------------------------------

def test_sigmoid_float32_accurate_without_warnings(bk):
    x = np.linspace(-100, 100, 20001).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        v = gg.Variable(x)
        s = gg.sigmoid(v)
        gg.sum(s).backward()
    got = gg.to_numpy(s)
    assert got.dtype == np.float32
    x64 = x.astype(np.float64)
    e = np.exp(-np.abs(x64))  # float64 reference in the overflow-free form
    ref = np.where(x64 >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.float32)
    is_normal = ref >= np.finfo(np.float32).tiny
    assert is_normal.sum() > 18000 and (~is_normal).sum() > 1000  # both regimes are exercised
    rel = np.abs(got[is_normal].astype(np.float64) - ref[is_normal]) / ref[is_normal]
    assert rel.max() <= 1e-6, f"relative error {rel.max():.3g} at x={x[is_normal][rel.argmax()]}"
    sub_err = np.abs(got[~is_normal].astype(np.float64) - ref[~is_normal])
    assert sub_err.max() <= 4 * np.finfo(np.float32).smallest_subnormal
    grad = gg.to_numpy(v.grad)
    assert grad.dtype == np.float32
    assert np.all(np.isfinite(grad)) and np.all((grad >= 0) & (grad <= 0.25))


LARGE = np.array([[1000.0, 1000.0, -np.inf], [-np.inf, 0.0, -1000.0], [-1000.0, -1000.0, -1000.0]])
LOG2, LOG3 = math.log(2.0), math.log(3.0)


def exp_minus_out_rtol(bk):
    """Gradients computed as exp(x - out) inherit out's rounding: in float32, out = 1000 + log 2
    is off by up to half an ulp of 1000 (3e-5), and so is the gradient."""
    return 1e-6 if bk.float64 else 1e-4


def test_logsumexp_large_and_infinite_inputs(bk):
    x = gg.Variable(LARGE.astype(bk.float_dtype))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = gg.logsumexp(x, axis=-1)
        gg.sum(out).backward()
    np.testing.assert_allclose(gg.to_numpy(out), [1000.0 + LOG2, 0.0, -1000.0 + LOG3], rtol=1e-6)
    np.testing.assert_allclose(gg.to_numpy(x.grad),
                               [[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [1 / 3, 1 / 3, 1 / 3]],
                               rtol=exp_minus_out_rtol(bk), atol=1e-7)


def test_softmax_large_and_infinite_inputs(bk):
    x = gg.Variable(LARGE.astype(bk.float_dtype))
    w = gg.asarray(np.array([[1.0, -2.0, 3.0]] * 3, dtype=bk.float_dtype))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = gg.softmax(x, axis=-1)
        gg.sum(s * w).backward()
    np.testing.assert_allclose(gg.to_numpy(s),
                               [[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [1 / 3, 1 / 3, 1 / 3]],
                               rtol=1e-6, atol=1e-7)
    # d/dx sum(w * s) = s * (w - sum(w * s)); hand-evaluated per row
    expect = [[0.5 * (1 + 0.5), 0.5 * (-2 + 0.5), 0.0], [0.0, 0.0, 0.0],
              [(1 - 2 / 3) / 3, (-2 - 2 / 3) / 3, (3 - 2 / 3) / 3]]
    np.testing.assert_allclose(gg.to_numpy(x.grad), expect, rtol=1e-5, atol=1e-6)


def test_log_softmax_large_and_infinite_inputs(bk):
    x = gg.Variable(LARGE.astype(bk.float_dtype))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = gg.log_softmax(x, axis=-1)
        gg.sum(out[:, 0]).backward()
    got = gg.to_numpy(out)
    np.testing.assert_allclose(got[0, :2], [-LOG2, -LOG2], rtol=1e-6)
    assert got[0, 2] == -np.inf and got[1, 0] == -np.inf
    np.testing.assert_allclose(got[1, 1:], [0.0, -1000.0], atol=1e-6)
    np.testing.assert_allclose(got[2], [-LOG3] * 3, rtol=1e-6)
    # d out[i, 0] / dx[i, :] = onehot(0) - softmax(x[i])
    grad = gg.to_numpy(x.grad)
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad, [[0.5, -0.5, 0.0], [1.0, -1.0, 0.0],
                                      [2 / 3, -1 / 3, -1 / 3]], rtol=1e-5, atol=1e-6)


def test_logaddexp_large_and_infinite_inputs(bk):
    a = gg.Variable(np.array([1000.0, -1000.0, -np.inf, 3.0, -np.inf], dtype=bk.float_dtype))
    b = gg.Variable(np.array([1000.0, -1000.0, 0.0, 3.0, -np.inf], dtype=bk.float_dtype))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = gg.logaddexp(a, b)
        gg.sum(out).backward()
    np.testing.assert_allclose(gg.to_numpy(out)[:4], [1000 + LOG2, -1000 + LOG2, 0.0, 3 + LOG2],
                               rtol=1e-6)
    assert gg.to_numpy(out)[4] == -np.inf
    # d/da = exp(a - out): ties split evenly; -inf gets nothing; both -inf: 0, not nan
    rtol = exp_minus_out_rtol(bk)
    np.testing.assert_allclose(gg.to_numpy(a.grad), [0.5, 0.5, 0.0, 0.5, 0.0], rtol=rtol)
    np.testing.assert_allclose(gg.to_numpy(b.grad), [0.5, 0.5, 1.0, 0.5, 0.0], rtol=rtol)


def test_logsumexp_all_minus_inf_is_minus_inf(bk):
    x = gg.asarray(np.full((2,), -np.inf, dtype=bk.float_dtype))
    with np.errstate(divide="ignore"):  # log(0) is exact here
        out = gg.logsumexp(x)
    assert gg.to_numpy(out) == -np.inf


# --- elementwise NumPy fast paths against their portable rules ---------------------------

_EXTREMES = np.array([-1000.0, -100.0, -88.8, -20.0, -1e-8, 0.0, 1e-8, 3.0, 20.0, 100.0,
                      1000.0, np.inf, -np.inf])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(), (13,), (4, 13)])
def test_sigmoid_fast_path_matches_portable_rule(dtype, shape, rng):
    op = gg.registry["sigmoid"]
    x = np.broadcast_to(_EXTREMES, (4, 13)).astype(dtype) if shape == (4, 13) else (
        _EXTREMES.astype(dtype) if shape == (13,) else np.asarray(-30.0, dtype))
    before = x.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fast, fres = op.fast_forward["numpy"](np, x)
        slow, sres = op.forward(np, x)
    np.testing.assert_array_equal(x, before)
    np.testing.assert_allclose(fast, slow, rtol=2e-7 if dtype == "float32" else 1e-15, atol=0)
    assert fast.dtype == slow.dtype == x.dtype
    for g in (rng.standard_normal(x.shape).astype(dtype),
              np.broadcast_to(np.asarray(1.0, dtype), x.shape),
              np.broadcast_to(np.asarray(-2.5, dtype), x.shape)):
        g_before = np.array(g)
        (gf,) = op.fast_vjp["numpy"](np, g, fres)
        (gs,) = op.vjp(np, g, sres)
        np.testing.assert_allclose(gf, gs, rtol=1e-6 if dtype == "float32" else 1e-14,
                                   atol=0)
        np.testing.assert_array_equal(g, g_before)
        assert np.asarray(gf).dtype == x.dtype


def test_relu_fast_path_matches_portable_rule(rng):
    op = gg.registry["relu"]
    x = np.concatenate([rng.standard_normal(20), [0.0, -0.0, 1e-300, -1e-300]])
    g = rng.standard_normal(x.shape)
    (gf,) = op.fast_vjp["numpy"](np, g, x)
    (gs,) = op.vjp(np, g, x)
    np.testing.assert_array_equal(gf, gs)
    assert gf[20] == 0.0 and gf[21] == 0.0  # relu'(0) = 0 on both paths


def test_sigmoid_fast_path_float32_accuracy_where_it_runs():
    """The fast path itself (not its exact fallback) keeps float32 relative error <= 1e-6."""
    op = gg.registry["sigmoid"]
    x = np.linspace(-88.0, 100.0, 40001, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, _ = op.fast_forward["numpy"](np, x)
    ref = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    normal = ref >= np.finfo(np.float32).tiny
    rel = np.abs(out[normal].astype(np.float64) - ref[normal]) / ref[normal]
    assert rel.max() <= 1e-6
    assert not normal.all()  # the range reaches subnormal results too
    assert np.all(np.abs(out[~normal] - ref[~normal]) <= 4 * np.finfo(np.float32).smallest_subnormal)


@pytest.mark.parametrize("shapes", [((3, 4), (4, 2), (2,)), ((2, 3, 4), (4, 2), (1, 2)),
                                    ((3, 4), (4, 2), (3, 1)), ((4,), (4, 2), (2,))], ids=str)
def test_linear_fast_path_matches_portable_rule(shapes, rng):
    op = gg.registry["linear"]
    x, w, b = (rng.standard_normal(s) for s in shapes)
    before = [a.copy() for a in (x, w, b)]
    fast, _ = op.fast_forward["numpy"](np, x, w, b)
    slow, _ = op.forward(np, x, w, b)
    np.testing.assert_allclose(fast, slow, rtol=1e-14)
    for a, a0 in zip((x, w, b), before):
        np.testing.assert_array_equal(a, a0)
    b32 = b.astype(np.float32)  # mixed dtypes never take the in-place path
    np.testing.assert_allclose(op.fast_forward["numpy"](np, x, w, b32)[0], x @ w + b32)
