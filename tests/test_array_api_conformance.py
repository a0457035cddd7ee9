"""gpugrad.array_api against array_api_strict, function by function.

Every function the namespace implements has at least one row (a guard test fails otherwise).
Each row runs on gpugrad Tensors, on every backend of the fixture, and on array_api_strict
arrays built from the same host data; results must agree in type (array, tuple, dtype, ...),
shape, dtype (by name, so the standard's promotion rules are checked) and value.

Rows of differentiable functions (registered ops and composites) also get a float64
finite-difference check of the first and second derivatives on NumPy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import array_api_strict as strict
import numpy as np
import pytest
from array_api_strict._array_object import Array as StrictArray

import gpugrad as gg
from gpugrad import backend as B

xp = gg.array_api


# --- input makers: rng -> host array (float64 floats are cast to the backend's float) -----

def F(*shape):
    return lambda r: r.standard_normal(shape)


def P(*shape):  # positive, away from 0
    return lambda r: r.uniform(0.5, 2.0, shape)


def NZ(*shape):  # away from 0 (divisors, kinks)
    return lambda r: r.choice([-1.0, 1.0], shape) * r.uniform(0.5, 2.0, shape)


def U(*shape):  # inside (-1, 1)
    return lambda r: r.uniform(-0.8, 0.8, shape)


def G1(*shape):  # above 1
    return lambda r: r.uniform(1.2, 3.0, shape)


def TIES(*shape):  # small integers as floats: many ties for comparisons
    return lambda r: r.integers(-1, 2, shape).astype(np.float64)


def I(*shape, low=-4, high=5, dtype="int64"):
    return lambda r: r.integers(low, high, shape).astype(dtype)


def C(*shape):  # complex inputs (their gradients: tests/test_complex.py)
    return lambda r: r.standard_normal(shape) + 1j * r.standard_normal(shape)


def BOOL(*shape):
    return lambda r: r.random(shape) < 0.5


def A(values, dtype=None):  # a fixed host array
    return lambda r: np.asarray(values, dtype=dtype)


@dataclass(frozen=True)
class D:
    """A dtype by name, resolved in each namespace."""
    name: str


@dataclass
class Case:
    name: str
    args: tuple
    kwargs: dict = field(default_factory=dict)
    variant: str = ""
    float64: bool = False  # needs float64 (skipped on the no_float64 device)
    exact: tuple = ()      # argument positions whose host dtype is kept (not cast)
    grad_kw: dict = field(default_factory=dict)  # for the derivative checks

    @property
    def id(self) -> str:
        return f"{self.name}-{self.variant}" if self.variant else self.name


def case(name, *args, variant="", float64=False, exact=(), grad_kw=None, **kwargs) -> Case:
    return Case(name, args, kwargs, variant, float64, exact, grad_kw or {})


UNARY_F = ["abs", "asinh", "atan", "ceil", "cos", "cosh", "exp", "expm1", "floor", "isfinite",
           "isinf", "isnan", "negative", "positive", "round", "sign", "signbit", "sin", "sinh",
           "square", "tan", "tanh", "trunc", "real", "conj"]
BINARY_F = ["add", "subtract", "multiply", "maximum", "minimum", "logaddexp", "atan2", "hypot",
            "copysign", "nextafter"]
COMPARE = ["equal", "not_equal", "less", "less_equal", "greater", "greater_equal"]

CASES = [
    *(case(n, F(2, 3)) for n in UNARY_F),
    case("acos", U(2, 3)), case("asin", U(2, 3)), case("atanh", U(2, 3)),
    case("acosh", G1(2, 3)),
    *(case(n, C(2, 3), variant="complex", exact=(0,), float64=True)
      for n in ("real", "imag", "conj")),
    *(case(n, P(2, 3)) for n in ("log", "log1p", "log2", "log10", "sqrt")),
    case("reciprocal", NZ(2, 3)),
    case("logical_not", BOOL(2, 3)),
    case("bitwise_invert", I(2, 3)),
    *(case(n, F(2, 3), F(2, 3)) for n in BINARY_F),
    case("add", F(3, 1), F(1, 4), variant="broadcast"),
    case("multiply", F(2, 3), F(3), variant="broadcast"),
    case("add", F(2, 3), 2.5, variant="scalar"),
    case("subtract", 1.5, F(2, 3), variant="scalar_left"),
    case("add", A([[1.0, 2.0]], "float32"), A([[0.5], [0.25]], "float64"),
         variant="promote_f32_f64", float64=True, exact=(0, 1)),
    case("multiply", I(2, 3, dtype="int8"), I(3, dtype="int64"), variant="promote_int8_int64",
         exact=(0, 1)),
    case("add", I(2, 3, low=0, dtype="uint8"), I(2, 3, dtype="int16"),
         variant="promote_uint8_int16", exact=(0, 1)),
    case("concat", [A([1.0], "float32"), A([2.0, 3.0], "float64")], variant="promote",
         float64=True, exact=(0,)),
    case("divide", F(2, 3), NZ(2, 3)),
    case("pow", P(2, 3), F(2, 3)),
    case("pow", F(2, 3), 2.0, variant="scalar"),
    case("remainder", F(2, 3), NZ(2, 3)),
    case("floor_divide", F(2, 3), NZ(2, 3)),
    *(case(n, TIES(2, 3), TIES(2, 3)) for n in COMPARE),
    *(case(n, BOOL(2, 3), BOOL(2, 3)) for n in ("logical_and", "logical_or", "logical_xor")),
    *(case(n, I(2, 3), I(2, 3)) for n in ("bitwise_and", "bitwise_or", "bitwise_xor")),
    case("bitwise_left_shift", I(2, 3), I(2, 3, low=0, high=4)),
    case("bitwise_right_shift", I(2, 3), I(2, 3, low=0, high=4)),
    case("clip", F(2, 3), min=-0.5, max=0.5),
    case("clip", F(2, 3), min=F(3), max=A(1.0), variant="array_bounds"),
    case("where", BOOL(2, 3), F(2, 3), F(1, 3)),
    case("where", BOOL(2, 3), F(2, 3), 0.5, variant="scalar"),
    # creation
    case("arange", 5), case("arange", 1.0, 3.0, 0.5, variant="float"),
    case("asarray", A([[1, 2], [3, 4]])),
    case("asarray", A([1.5, 2.5]), dtype=D("float32"), variant="dtype"),
    case("empty", (2, 3)), case("empty_like", F(2, 3)),
    case("eye", 3, 4, k=1), case("full", (2, 2), 3.5), case("full_like", F(2, 3), 2.0),
    case("linspace", 0.0, 1.0, 5), case("ones", (2, 3)), case("ones_like", I(2, 3)),
    case("zeros", (3,), dtype=D("int32")), case("zeros_like", F(2, 3)),
    case("from_dlpack", F(2, 3)),
    case("meshgrid", F(3), F(2)), case("meshgrid", F(3), F(2), indexing="ij", variant="ij"),
    case("tril", F(3, 4), k=1), case("triu", F(2, 3, 4), k=-1),
    # data types
    # float64 -> float32 rounds; the map is linear, so a large step is exact up to rounding
    case("astype", F(2, 3), D("float32"), grad_kw={"eps": 1e-2, "atol": 1e-4}),
    case("astype", I(2, 3), D("float64"), variant="int_to_float", float64=True),
    case("astype", F(2, 3), D("int32"), variant="to_int"),
    case("can_cast", D("int8"), D("int64")), case("can_cast", D("float64"), D("int8"),
                                                  variant="no"),
    case("finfo", D("float32")), case("iinfo", D("int16")),
    case("isdtype", D("float32"), "real floating"),
    case("isdtype", D("int8"), ("bool", "signed integer"), variant="tuple"),
    case("result_type", D("int8"), D("int16")),
    case("result_type", I(2, dtype="int8"), D("int32"), variant="array", exact=(0,)),
    # manipulation
    case("broadcast_arrays", F(3, 1), F(4)),
    case("broadcast_shapes", (2, 1), (1, 3)),
    case("broadcast_to", F(3), (2, 3)),
    case("concat", [F(2, 3), F(1, 3)], axis=0),
    case("concat", [F(2, 3), F(4)], axis=None, variant="flat"),
    case("expand_dims", F(2, 3), axis=1),
    case("flip", F(2, 3)), case("flip", F(2, 3, 2), axis=(0, 2), variant="axes"),
    case("moveaxis", F(2, 3, 4), 0, -1),
    case("moveaxis", F(2, 3, 4), (0, 1), (2, 0), variant="tuple"),
    case("permute_dims", F(2, 3, 4), (2, 0, 1)),
    case("repeat", F(2, 3), 2), case("repeat", F(2, 3), A([1, 0, 3]), axis=1,
                                     variant="counts"),
    case("reshape", F(2, 3), (3, 2)),
    case("roll", F(2, 3), 2), case("roll", F(2, 3), (1, -1), axis=(0, 1), variant="axes"),
    case("squeeze", F(2, 1, 3), axis=1),
    case("stack", [F(2, 3), F(2, 3)], axis=1),
    case("tile", F(2, 3), (2, 1)), case("tile", F(3), (2, 2), variant="grow"),
    case("unstack", F(2, 3), axis=1),
    # indexing, linear algebra
    case("take", F(4, 3), A([2, 0, 2]), axis=0),
    case("take_along_axis", F(3, 4), A([[0, 3], [1, 1], [2, 0]]), axis=1),
    case("matmul", F(2, 3), F(3, 4)), case("matmul", F(2, 2, 3), F(3), variant="batch_vec"),
    case("matrix_transpose", F(2, 3, 4)),
    case("tensordot", F(2, 3), F(3, 4), axes=1),
    case("tensordot", F(2, 3, 4), F(4, 3, 5), axes=([1, 2], [1, 0]), variant="lists"),
    case("vecdot", F(2, 3), F(3)),
    # searching, sorting, sets
    case("argmax", F(2, 3), axis=1), case("argmin", F(2, 3), axis=0, keepdims=True),
    case("count_nonzero", TIES(2, 3), axis=1),
    case("nonzero", TIES(2, 3)),
    case("searchsorted", A([0.0, 1.0, 2.0, 3.0]), F(5), side="right"),
    case("argsort", F(2, 3), axis=1, descending=True),
    case("sort", F(2, 3), axis=0), case("sort", F(5), descending=True, variant="descending"),
    case("isin", I(5), A([0, 1])),
    *(case(n, TIES(7)) for n in ("unique_all", "unique_counts", "unique_inverse",
                                 "unique_values")),
    # statistics, utility
    case("sum", F(2, 3), axis=1), case("sum", I(2, 3, dtype="int32"), variant="int32",
                                       exact=(0,)),
    case("sum", F(2, 3), dtype=D("float64"), variant="dtype", float64=True),
    case("mean", F(2, 3), axis=(0, 1), keepdims=True),
    case("max", F(2, 3), axis=0), case("min", F(2, 3, 2), axis=(0, 2)),
    case("prod", F(2, 3), axis=1),
    case("cumulative_sum", F(2, 3), axis=1, include_initial=True),
    case("cumulative_sum", F(4), variant="1d"),
    case("cumulative_prod", F(2, 3), axis=0),
    case("var", F(3, 4), axis=1, correction=1.0), case("std", F(3, 4)),
    case("diff", F(2, 5), n=2), case("diff", F(4), prepend=F(1), append=F(2),
                                     variant="pend"),
    case("all", BOOL(2, 3), axis=1), case("any", BOOL(2, 3)),
]
NOT_COMPARED = {"__array_namespace_info__": "an inspection object; see test_namespace_info"}


def params(cases):
    return [pytest.param(c, id=c.id) for c in cases]


# --- running a row in both namespaces --------------------------------------------------------

def hosts(c: Case, bk, rng) -> list:
    """Host values for the row: floats in the backend's float dtype unless ``exact``."""
    out = []
    for i, a in enumerate(c.args):
        out.append(_host(a, rng, bk, i in c.exact))
    return out


def _host(a, rng, bk, exact):
    if isinstance(a, list):
        return [_host(v, rng, bk, exact) for v in a]
    if callable(a):
        h = np.asarray(a(rng))
        if h.dtype.kind == "f" and not exact:
            h = h.astype(bk.float_dtype)
        return h
    return a


def to_namespace(v, mod, make):
    if isinstance(v, list):
        return [to_namespace(x, mod, make) for x in v]
    if isinstance(v, np.ndarray):
        return make(v)
    if isinstance(v, D):
        return getattr(mod, v.name)
    return v


CREATION = {"arange", "asarray", "empty", "eye", "full", "linspace", "ones", "zeros"}


def kwargs_for(c: Case, bk, mod, make) -> dict:
    """The row's keyword arguments in one namespace (array makers use a fixed seed)."""
    return {k: to_namespace(_host(v, np.random.default_rng(7), bk, False), mod, make)
            for k, v in c.kwargs.items()}


def run_ours(c: Case, hs: list, bk) -> Any:
    args = [to_namespace(h, xp, gg.asarray) for h in hs]
    return getattr(xp, c.name)(*args, **kwargs_for(c, bk, xp, gg.asarray))


def run_strict(c: Case, hs: list, bk) -> Any:
    device = bk.backend().device if bk.name == "array_api_strict" else None

    def make(h):
        return strict.asarray(h) if device is None else strict.asarray(h, device=device)

    args = [to_namespace(h, strict, make) for h in hs]
    kw = kwargs_for(c, bk, strict, make)
    if c.name in CREATION and device is not None:
        kw["device"] = device
    return getattr(strict, c.name)(*args, **kw)


def assert_same(ours, ref, what="result") -> None:
    if isinstance(ref, StrictArray):
        assert isinstance(ours, gg.Tensor), f"{what}: expected an array, got {type(ours)}"
        assert ours.shape == tuple(ref.shape), f"{what}: shape {ours.shape} != {ref.shape}"
        assert B.dtype_name(ours.dtype) == B.dtype_name(ref.dtype), \
            f"{what}: dtype {B.dtype_name(ours.dtype)} != {B.dtype_name(ref.dtype)}"
        got, want = gg.to_numpy(ours), B.to_numpy(ref)
        if want.dtype.kind == "f":
            rtol = 1e-12 if want.dtype == np.float64 else 2e-6
            np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol, equal_nan=True)
        else:
            np.testing.assert_array_equal(got, want)
    elif isinstance(ref, tuple):
        assert isinstance(ours, tuple) and len(ours) == len(ref), f"{what}: {ours!r}"
        for i, (o, r) in enumerate(zip(ours, ref)):
            assert_same(o, r, f"{what}[{i}]")
    elif hasattr(ref, "bits"):  # finfo / iinfo
        for attr in ("bits", "max", "min", "eps", "smallest_normal"):
            if hasattr(ref, attr):
                assert getattr(ours, attr) == getattr(ref, attr), f"{what}.{attr}"
    elif type(ref).__name__ == "DType":
        assert B.dtype_name(ours) == B.dtype_name(ref)
    else:
        assert ours == ref and type(ours) is type(ref), f"{what}: {ours!r} != {ref!r}"


# --- tests -----------------------------------------------------------------------------------

def test_every_implemented_function_is_compared():
    implemented = set(xp.gradient_support())
    covered = {c.name for c in CASES}
    assert not covered - implemented, f"rows for unknown functions: {covered - implemented}"
    missing = implemented - covered - set(NOT_COMPARED)
    assert not missing, f"functions without a strict comparison row: {sorted(missing)}"
    assert len({c.id for c in CASES}) == len(CASES), "row ids must be unique"


@pytest.mark.parametrize("c", params(CASES))
def test_matches_array_api_strict(c, bk, rng):
    if c.float64 and not bk.float64:
        pytest.skip("needs float64")
    hs = hosts(c, bk, rng)
    ours, ref = run_ours(c, hs, bk), run_strict(c, hs, bk)
    if c.name in ("empty", "empty_like"):  # values are unspecified
        assert ours.shape == tuple(ref.shape)
        assert B.dtype_name(ours.dtype) == B.dtype_name(ref.dtype)
        return
    assert_same(ours, ref)
    for t in ours if isinstance(ours, tuple) else (ours,):
        if isinstance(t, gg.Tensor):
            assert B.name_of(t.xp) == bk.name
            if bk.backend().device is not None and c.name != "from_dlpack":
                assert t.device == bk.backend().device, f"{c.id} left the backend's device"


def test_namespace_info(bk):
    info = xp.__array_namespace_info__()
    assert B.dtype_name(info.default_dtypes()["integral"]) == "int64"
    assert info.capabilities()["boolean indexing"] in (True, False)


# --- derivatives of the differentiable functions ----------------------------------------------

class _F64:
    float_dtype = "float64"


def _has_float_input(c: Case) -> bool:
    hs = hosts(c, _F64, np.random.default_rng(0))
    return any(isinstance(h, list) or (isinstance(h, np.ndarray) and h.dtype.kind == "f")
               for h in hs)


GRAD_ROWS = [c for c in CASES
             if xp.gradient_support()[c.name] in ("op", "composite") and not c.exact
             and c.id != "astype-to_int" and _has_float_input(c)]


def _as_function(c: Case, hs: list) -> tuple[Callable, list]:
    """(fn of the floating inputs -> one Tensor, those inputs)."""
    slots = [i for i, h in enumerate(hs) if isinstance(h, np.ndarray) and h.dtype.kind == "f"]
    lists = [i for i, h in enumerate(hs) if isinstance(h, list)]

    def fn(*ts):
        args = [to_namespace(h, xp, gg.asarray) for h in hs]
        it = iter(ts)
        for i in slots:
            args[i] = next(it)
        for i in lists:
            args[i] = [next(it) for _ in hs[i]]
        out = getattr(xp, c.name)(*args, **kwargs_for(c, _F64, xp, gg.asarray))
        if isinstance(out, tuple):
            out = xp.concat([xp.reshape(o, (-1,)) for o in out])
        return out

    inputs = [hs[i] for i in slots] + [v for i in lists for v in hs[i]]
    return fn, inputs


def test_every_differentiable_function_gets_derivative_checks():
    support = xp.gradient_support()
    differentiable = {n for n, kind in support.items() if kind in ("op", "composite")}
    complex_only = {"imag"}  # defined for complex input only: tests/test_complex.py checks it
    assert not differentiable - {c.name for c in GRAD_ROWS} - complex_only


@pytest.mark.parametrize("c", params(GRAD_ROWS))
def test_first_and_second_derivatives(c, rng):
    with gg.use_backend("numpy"):
        hs = hosts(c, _F64, rng)
        fn, inputs = _as_function(c, hs)
        gg.testing.check_grad(fn, *inputs, **c.grad_kw)
        assert xp.twice_differentiable(c.name)
        gg.testing.check_gradgrad(fn, *inputs, **c.grad_kw)
