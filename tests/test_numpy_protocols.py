"""NumPy on Tensors and graph Symbols: operators' ufuncs run gpugrad ops, other ufuncs and
NumPy functions name the gg function to call instead, and np.asarray gives the values of a
constant only."""

from __future__ import annotations

import numpy as np
import pytest

import gpugrad as gg
from tests.helpers import const, host, var

X = np.array([[0.5, -1.25, 2.0], [1.5, 0.25, -0.75]])

# (label, NumPy call on t, the gg function the message names)
REFUSED = [
    ("exp", lambda t: np.exp(t), "gg.exp"),
    ("sum", lambda t: np.sum(t), "gg.sum"),
    ("sum-axis", lambda t: np.sum(t, axis=0), "gg.sum"),
    ("concatenate", lambda t: np.concatenate([t, t]), "gg.concat"),
    ("tanh", lambda t: np.tanh(t), "gg.tanh"),
    ("absolute", lambda t: np.abs(t), "gg.abs"),
    ("arctan2", lambda t: np.arctan2(t, t), "gg.atan2"),
    ("mean", lambda t: np.mean(t), "gg.mean"),
    ("amax", lambda t: np.max(t), "gg.max"),
    ("transpose", lambda t: np.transpose(t), "gg.permute_dims"),
    ("cumsum", lambda t: np.cumsum(t, axis=1), "gg.cumulative_sum"),
    ("clip", lambda t: np.clip(t, 0.0, 1.0), "gg.clip"),
    ("where", lambda t: np.where(t > 0.0, t, 0.0), "gg.where"),
    ("reshape", lambda t: np.reshape(t, (3, 2)), "gg.reshape"),
    ("floor", lambda t: np.floor(t), "gg.array_api.floor"),
    ("var", lambda t: np.var(t), "gg.array_api.var"),
    ("add-reduce", lambda t: np.add.reduce(t), "gg.sum"),
    ("exp-out", lambda t: np.exp(t, out=np.empty((2, 3))), "gg.exp"),
]


def _check_refused(call, t, names):
    with pytest.raises(TypeError) as info:
        call(t)
    text = str(info.value)
    assert f"call {names} instead" in text, text
    assert "NumPy would drop the gradient" in text or "out=" in text
    assert "called at test_numpy_protocols.py:" in text


@pytest.mark.parametrize("label,call,names", REFUSED, ids=[r[0] for r in REFUSED])
def test_numpy_functions_on_a_tensor_name_the_gg_function(bk, label, call, names):
    _check_refused(call, var(bk, X), names)
    _check_refused(call, const(bk, X), names)


@pytest.mark.parametrize("label,call,names", REFUSED, ids=[r[0] for r in REFUSED])
def test_numpy_functions_on_a_symbol_name_the_gg_function(bk, label, call, names):
    _check_refused(call, gg.Placeholder((2, 3), bk.float_dtype, name="x"), names)


def test_a_numpy_function_gpugrad_lacks_says_how_to_leave_autodiff(bk):
    with pytest.raises(TypeError, match=r"np.median cannot take gpugrad Tensors .* gpugrad has "
                                        r"no such function.* gg.to_numpy\(t\)"):
        np.median(var(bk, X))


def test_operator_ufuncs_run_gpugrad_ops_and_differentiate(numpy_backend):
    a = np.array([2.0, 1.5, 0.5])
    M = np.arange(6.0).reshape(3, 2) / 4.0

    def f(t):
        return gg.sum(a * t + a / t - a ** t + (a - t) ** 2.0) + gg.sum(t @ M)

    for name, out in [("add", a + gg.asarray(X[0])), ("less", a < gg.asarray(X[0])),
                      ("scalar", np.float64(2.0) * gg.asarray(X[0])),
                      ("explicit", np.multiply(a, gg.asarray(X[0])))]:
        assert isinstance(out, gg.Tensor), name
    np.testing.assert_array_equal(host(a - gg.asarray(X[0])), a - X[0])
    np.testing.assert_array_equal(gg.to_numpy(a < gg.asarray(X[0])), a < X[0])
    v = gg.Variable(X[0] + 2.0)
    f(v).backward()
    assert v.grad is not None
    gg.testing.check_grad(f, X[0] + 2.0)


def test_an_in_place_numpy_update_with_a_tensor_says_what_to_write(numpy_backend):
    host_array = np.ones(3)
    with pytest.raises(TypeError, match=r"np.add into a NumPy array \(host \+= t, or out=\) "
                                        r"cannot take a gpugrad Tensor"):
        host_array += gg.Variable([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(host_array, np.ones(3))


def test_operator_ufuncs_build_graph_nodes():
    P = gg.Placeholder((3,), "float64", name="x")
    out = np.array([1.0, 2.0, 3.0]) * P
    assert isinstance(out, gg.Symbol)
    np.testing.assert_array_equal(host(out.eval({P: np.array([1.0, 0.5, 2.0])})),
                                  [1.0, 1.0, 6.0])


def test_metadata_functions_work(bk):
    t = var(bk, X)
    assert np.shape(t) == (2, 3) and np.ndim(t) == 2 and np.size(t) == 6


def test_asarray_of_a_constant_gives_its_values(bk):
    c = const(bk, X)
    values = np.asarray(c)
    assert isinstance(values, np.ndarray)
    np.testing.assert_array_equal(values, X.astype(bk.float_dtype))
    copied = np.array(c)
    copied[0, 0] = 99.0
    assert host(c)[0, 0] == X[0, 0]
    assert np.asarray(c, dtype=np.float32).dtype == np.float32


def test_asarray_on_the_numpy_backend_shares_memory_read_only(numpy_backend):
    c = gg.asarray(X)
    values = np.asarray(c)
    assert np.shares_memory(values, c.data)
    with pytest.raises(ValueError, match="read-only"):
        values[0, 0] = 99.0
    assert np.asarray(c, copy=False).base is not None
    with pytest.raises(ValueError, match="needs a copy"):
        np.asarray(c, dtype=np.float32, copy=False)


def test_asarray_copy_false_from_another_backend_raises(bk):
    if bk.name == "numpy":
        pytest.skip("the NumPy backend shares memory")
    with pytest.raises(ValueError, match="only as a copy"):
        np.asarray(const(bk, X), copy=False)


def test_asarray_refuses_a_tensor_that_requires_a_gradient_and_a_symbol(bk):
    with pytest.raises(TypeError, match=r"requires a gradient, which NumPy would drop; call "
                                        r"gg.to_numpy\(t\)"):
        np.asarray(var(bk, X))
    with pytest.raises(TypeError, match="has no value until the graph runs"):
        np.asarray(gg.Placeholder((2, 3), bk.float_dtype))
    np.testing.assert_array_equal(np.asarray(var(bk, X).detach()), X.astype(bk.float_dtype))


def test_host_conversion_of_a_list_of_variables_is_refused_not_an_object_array(numpy_backend):
    v = gg.Variable([1.0, 2.0])
    with pytest.raises(TypeError, match="gg.stack"):
        np.asarray([v, v])
    np.testing.assert_array_equal(host(gg.asarray([v, v])), [[1.0, 2.0], [1.0, 2.0]])
