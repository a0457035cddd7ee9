"""gpugrad as an array-API namespace: code written for any array library, differentiated.

The functions below know nothing of gpugrad: they ask array_api_compat for the namespace of
their arguments and then call only ``xp.*``. They run on NumPy, on array_api_strict and on
gpugrad Tensors with the same values, and ``gpugrad.grad`` of each matches finite
differences of the same function run on NumPy.
"""

from __future__ import annotations

import array_api_compat
import array_api_strict as strict
import numpy as np
import pytest

import gpugrad as gg
from gpugrad import backend as B

# --- array-API code that was not written for gpugrad ------------------------------------------


def softplus(x):
    xp = array_api_compat.array_namespace(x)
    return xp.sum(xp.logaddexp(x, xp.zeros_like(x)))


def logistic_loss(w, X, y):
    """Mean binary cross-entropy of logits X @ w against 0/1 labels, in the stable form
    max(z, 0) - z y + log1p(exp(-|z|))."""
    xp = array_api_compat.array_namespace(w, X, y)
    z = X @ w
    return xp.mean(xp.maximum(z, xp.zeros_like(z)) - z * y + xp.log1p(xp.exp(-xp.abs(z))))


def mlp_loss(params, x):
    xp = array_api_compat.array_namespace(x)
    h = xp.tanh(x @ params["W1"] + params["b1"])
    out = h @ params["W2"] + params["b2"]
    return xp.sum(out ** 2) / out.shape[0]


def normalised_distance(a, b):
    """Mean over rows of |a - b| / (|a| + |b|)."""
    xp = array_api_compat.array_namespace(a, b)
    d = a - b
    num = xp.sqrt(xp.vecdot(d, d))
    den = xp.sqrt(xp.vecdot(a, a)) + xp.sqrt(xp.vecdot(b, b))
    return xp.mean(num / den)


def problems(rng):
    """(name, function, arguments as host float64 arrays or dicts of them)."""
    X = rng.standard_normal((6, 3))
    return [
        ("softplus", softplus, (rng.standard_normal(5),)),
        ("logistic_loss", logistic_loss,
         (rng.standard_normal(3), X, (rng.random(6) < 0.5).astype(np.float64))),
        ("mlp_loss", mlp_loss, ({"W1": rng.standard_normal((3, 4)), "b1": rng.standard_normal(4),
                                 "W2": rng.standard_normal((4, 2)), "b2": rng.standard_normal(2)},
                                X)),
        ("normalised_distance", normalised_distance,
         (rng.standard_normal((4, 3)), rng.standard_normal((4, 3)))),
    ]


NAMES = ["softplus", "logistic_loss", "mlp_loss", "normalised_distance"]


def pick(rng, name):
    return next(p for p in problems(rng) if p[0] == name)


def convert(arg, make):
    if isinstance(arg, dict):
        return {k: make(v) for k, v in arg.items()}
    return make(arg)


def numeric_grad(f, args, eps=1e-6):
    """Central differences of f run on plain NumPy, for the first argument (array or dict)."""
    first, rest = args[0], args[1:]

    def one(x, put):
        g = np.zeros_like(x)
        for i in np.ndindex(x.shape):
            d = np.zeros_like(x)
            d[i] = eps
            g[i] = (float(f(put(x + d), *rest)) - float(f(put(x - d), *rest))) / (2 * eps)
        return g

    if isinstance(first, dict):
        return {k: one(v, lambda val, k=k: {**first, k: val}) for k, v in first.items()}
    return one(first, lambda val: val)


@pytest.mark.parametrize("name", NAMES)
def test_same_values_on_numpy_strict_and_tensors(name, bk, rng):
    _, f, args = pick(rng, name)
    args = [convert(a, lambda v: v.astype(bk.float_dtype)) for a in args]
    on_numpy = float(f(*args))
    on_strict = float(f(*[convert(a, strict.asarray) for a in args]))
    tensors = [convert(a, gg.asarray) for a in args]
    on_gpugrad = f(*tensors)
    assert isinstance(on_gpugrad, gg.Tensor)
    assert B.name_of(on_gpugrad.xp) == bk.name
    rtol = 1e-12 if bk.float64 else 1e-5
    assert on_strict == pytest.approx(on_numpy, rel=rtol)
    assert float(on_gpugrad) == pytest.approx(on_numpy, rel=rtol)


@pytest.mark.parametrize("name", NAMES)
def test_grad_matches_finite_differences(name, bk64, rng):
    _, f, args = pick(rng, name)
    expected = numeric_grad(f, args)
    on_backend = [convert(a, lambda v: gg.to_numpy(gg.asarray(v))) if bk64.name == "numpy"
                  else convert(a, lambda v: gg.asarray(v).data) for a in args]
    got = gg.grad(f)(*on_backend)
    if isinstance(expected, dict):
        assert set(got) == set(expected)
        for k in expected:
            assert B.name_of(B.namespace_of(got[k])) == bk64.name
            np.testing.assert_allclose(gg.to_numpy(got[k]), expected[k], rtol=1e-6, atol=1e-8)
    else:
        assert not isinstance(got, gg.Tensor)  # plain arrays in, plain arrays out
        np.testing.assert_allclose(gg.to_numpy(got), expected, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", ["softplus", "logistic_loss", "normalised_distance"])
def test_check_grad_and_gradgrad_on_tensors(name, rng):
    _, f, args = pick(rng, name)
    gg.testing.check_grad(f, *args)
    gg.testing.check_gradgrad(f, *args)
    # gg.grad's own output passes check_grad too: its derivative is the Hessian
    gg.testing.check_grad(lambda *ts: gg.grad(f)(*ts), *args, wrt=0)


# --- the namespace ---------------------------------------------------------------------------

def test_tensor_namespace_is_gpugrad_array_api(bk):
    x = gg.asarray(np.ones(2, dtype=bk.float_dtype))
    assert x.__array_namespace__() is gg.array_api
    assert x.__array_namespace__(api_version="2024.12") is gg.array_api
    assert x.__array_namespace__(api_version="2025.12") is gg.array_api
    assert array_api_compat.array_namespace(x) is gg.array_api
    assert gg.array_api.__array_api_version__ == "2025.12"
    with pytest.raises(ValueError, match="2025.12"):
        x.__array_namespace__(api_version="2021.12")


def test_mixing_tensors_and_other_arrays_is_refused_by_array_api_compat():
    with pytest.raises(TypeError, match="Multiple namespaces"):
        array_api_compat.array_namespace(gg.asarray([1.0]), np.ones(1))


def test_dtypes_follow_the_current_backend(numpy_backend):
    xp = gg.array_api
    assert xp.float32 is np.float32
    with gg.use_backend("array_api_strict"):
        assert xp.float64 == strict.float64
        x = gg.asarray([1.0, 2.0])
        assert xp.astype(x, np.float32).dtype == strict.float32  # any backend's dtype, by name
        assert xp.astype(x, "float32").dtype == strict.float32
    with pytest.raises(AttributeError, match="no attribute 'float128'"):
        xp.float128  # noqa: B018


def test_every_function_says_how_it_differentiates():
    support = gg.array_api.gradient_support()
    assert set(support.values()) <= set(gg.array_api.KINDS)
    assert len(support) >= 130
    for name in support:
        fn = getattr(gg.array_api, name)
        assert (fn.__doc__ or "").strip(), f"{name} has no docstring"
    assert gg.array_api.twice_differentiable("tanh")
    assert gg.array_api.twice_differentiable("tensordot")
    assert not gg.array_api.twice_differentiable("argsort")


def test_constants_only_functions_refuse_to_differentiate(bk):
    xp = gg.array_api
    x = gg.Variable(np.array([0.5, 1.0], dtype=bk.float_dtype))
    with pytest.raises(NotImplementedError, match=r"gpugrad\.array_api\.prod: no gradient rule"):
        xp.prod(x)
    with pytest.raises(NotImplementedError, match="unique_values"):
        xp.unique_values(x)
    np.testing.assert_allclose(gg.to_numpy(xp.prod(x.detach())), 0.5, rtol=1e-6)
    with gg.no_grad():
        assert not xp.prod(x).requires_grad


def test_piecewise_constant_functions_have_zero_gradient(bk):
    xp = gg.array_api
    x = gg.Variable(np.array([0.5, -1.5, 2.25], dtype=bk.float_dtype))
    f = xp.floor(x)
    assert not f.requires_grad
    gg.sum(x * f + xp.sign(x)).backward()
    np.testing.assert_allclose(gg.to_numpy(x.grad), [0.0, -2.0, 2.0])


def test_asarray_keeps_graphs(bk):
    xp = gg.array_api
    x = gg.Variable(np.array([1.0, 2.0], dtype=bk.float_dtype))
    assert xp.asarray(x) is x
    copy = xp.asarray(x, copy=True)
    assert copy is not x and copy.requires_grad
    stacked = xp.asarray([x[0], 3.0 * x[1]])
    gg.sum(stacked * copy).backward()
    np.testing.assert_allclose(gg.to_numpy(x.grad), [2.0, 12.0])


def test_float32_meets_float64_by_the_standard(bk64):
    xp = gg.array_api
    a = gg.Variable(np.array([1.0, 2.0], dtype="float32"))
    b = gg.Variable(np.array([3.0, 4.0], dtype="float64"))
    out = xp.multiply(a, b)
    assert B.dtype_name(out.dtype) == "float64"
    gg.sum(out).backward()
    assert B.dtype_name(a.grad.dtype) == "float32" and B.dtype_name(b.grad.dtype) == "float64"
    np.testing.assert_allclose(gg.to_numpy(a.grad), [3.0, 4.0])


def test_creation_functions_use_the_backend_device(bk):
    xp = gg.array_api
    z = xp.zeros((2, 3))
    assert isinstance(z, gg.Tensor) and not z.requires_grad
    assert B.name_of(z.xp) == bk.name
    if bk.backend().device is not None:
        assert z.device == bk.backend().device
