"""Functional transforms: grad, value_and_grad, vjp, jacobian, hvp, hessian.

Plain arrays in give plain arrays out; Tensors in (or a call inside another transform) give
Tensors with graphs, so the transforms compose. Expected values are hand-derived.
"""

from __future__ import annotations

import array_api_compat
import numpy as np
import pytest

import gpugrad as gg
from helpers import host
from gpugrad import backend as B


def on_backend(bk, values):
    return gg.asarray(np.asarray(values, dtype=bk.float_dtype)).data


def check_backend_array(bk, a, like):
    assert not isinstance(a, gg.Tensor)
    assert B.name_of(B.namespace_of(a)) == bk.name
    assert tuple(a.shape) == tuple(like.shape) and a.dtype == like.dtype
    assert B.device_of(a) == B.device_of(like)


# --- grad and value_and_grad --------------------------------------------------------------------

def test_grad_of_backend_arrays_is_a_backend_array(bk, rng):
    x = on_backend(bk, rng.standard_normal(4))
    g = gg.grad(lambda t: gg.sum(gg.tanh(t)))(x)
    check_backend_array(bk, g, x)
    np.testing.assert_allclose(host(g), 1 - np.tanh(host(x)) ** 2, rtol=1e-5)


def test_grad_of_a_python_float():
    assert float(gg.grad(lambda t: t * t * t)(2.0)) == pytest.approx(12.0)


def test_value_and_grad_argnums_and_aux(rng, numpy_backend):
    w, x = rng.standard_normal(3), rng.standard_normal((5, 3))

    def f(w, x, scale=1.0):
        r = x @ w
        return scale * gg.sum(r * r), {"residual": r}

    (value, aux), (dw, dx) = gg.value_and_grad(f, argnums=(0, 1), has_aux=True)(w, x, scale=2.0)
    r = x @ w
    assert float(value) == pytest.approx(2.0 * r @ r)
    np.testing.assert_allclose(aux["residual"], r)
    assert not isinstance(aux["residual"], gg.Tensor)
    np.testing.assert_allclose(dw, 4.0 * x.T @ r)
    np.testing.assert_allclose(dx, 4.0 * np.outer(r, w))
    g, aux2 = gg.grad(f, has_aux=True)(w, x)
    np.testing.assert_allclose(g, 2.0 * x.T @ r)
    np.testing.assert_allclose(aux2["residual"], r)


def test_grad_of_pytrees():
    params = {"layer": [np.array([1.0, 2.0]), (np.array(3.0),)], "bias": np.array([0.5])}

    def f(p):
        (a,), = [p["layer"][1]]
        return gg.sum(p["layer"][0] ** 2) * a + gg.sum(p["bias"])

    g = gg.grad(f)(params)
    assert set(g) == {"layer", "bias"} and isinstance(g["layer"], list)
    assert isinstance(g["layer"][1], tuple)
    np.testing.assert_allclose(g["layer"][0], [6.0, 12.0])
    assert float(g["layer"][1][0]) == pytest.approx(5.0)
    np.testing.assert_allclose(g["bias"], [1.0])


def test_unused_argument_gets_zeros_and_constant_output_too(bk):
    x = on_backend(bk, [1.0, 2.0])
    g = gg.grad(lambda a, b: gg.sum(b * 2.0), argnums=0)(x, x)
    check_backend_array(bk, g, x)
    np.testing.assert_array_equal(host(g), 0.0)
    # a Tensor with no path to the argument: zeros, as in JAX
    np.testing.assert_array_equal(host(gg.grad(lambda a: gg.asarray(3.0))(x)), 0.0)


_CUT = {
    "float()": lambda x: float(gg.sum(x * x)),
    ".item()": lambda x: gg.sum(x * x).item(),
    "to_numpy": lambda x: gg.to_numpy(gg.sum(x * x)),
    "numpy scalar": lambda x: np.float64(gg.to_numpy(gg.sum(x * x))),
}


@pytest.mark.filterwarnings("ignore::gpugrad.TracedValueWarning")  # (tests/test_traced_values.py)
@pytest.mark.parametrize("cause", list(_CUT))
@pytest.mark.parametrize("transform", ["grad", "value_and_grad", "jacobian", "vjp"])
def test_a_result_cut_from_the_graph_is_refused_not_zeros(transform, cause):
    f, x = _CUT[cause], np.array([1.0, 2.0])
    with pytest.raises(TypeError) as err:
        if transform == "vjp":
            gg.vjp(f, x)
        else:
            getattr(gg, transform)(f)(x)
    msg = str(err.value)
    assert msg.startswith(f"{transform}: the function returned a ")
    assert "not a gpugrad Tensor" in msg and "zeros" in msg
    for hint in ("float()", ".item()", "gg.to_numpy()", "gpugrad ops"):
        assert hint in msg


def test_a_list_argument_is_a_pytree_and_a_failure_on_it_says_so():
    g = gg.grad(lambda p: p[0] * p[1])([2.0, 3.0])  # JAX's habit: one gradient per leaf
    assert [float(v) for v in g] == [3.0, 2.0]
    with pytest.raises(TypeError) as err:
        gg.grad(lambda x: gg.sum(x ** 2))([1.0, 2.0])
    msg = str(err.value)
    assert msg.startswith("grad: argument 0 is a list of numbers") and "pytree" in msg
    assert "pass an array: np.array(...)" in msg and "'list' and 'int'" in msg
    assert isinstance(err.value.__cause__, TypeError)
    np.testing.assert_array_equal(gg.grad(lambda x: gg.sum(x ** 2))(np.array([1.0, 2.0])),
                                  [2.0, 4.0])


def test_a_type_error_of_the_function_itself_is_left_alone():
    def f(x):
        raise TypeError("mine")
    with pytest.raises(TypeError, match="^mine$"):
        gg.grad(f)(np.array([1.0]))


def test_grad_does_not_touch_closed_over_variables(rng):
    W = gg.Variable(rng.standard_normal((3, 2)))
    g = gg.grad(lambda x: gg.sum(gg.tanh(x @ W)))(rng.standard_normal((4, 3)))
    assert W.grad is None and g.shape == (4, 3)


def test_grad_works_under_no_grad():
    with gg.no_grad():
        g = gg.grad(lambda t: gg.sum(t * t))(np.array([1.0, -2.0]))
        np.testing.assert_allclose(g, [2.0, -4.0])
        t = gg.grad(lambda t: gg.sum(t * t))(gg.Variable(np.array([1.0, -2.0])))
    assert isinstance(t, gg.Tensor) and not t.requires_grad  # no graph is built under no_grad
    np.testing.assert_allclose(host(t), [2.0, -4.0])


def test_grad_errors():
    with pytest.raises(TypeError, match=r"scalar.*shape \(2,\)"):
        gg.grad(lambda t: t * 2.0)(np.array([1.0, 2.0]))
    with pytest.raises(TypeError, match="only floating"):
        gg.grad(lambda t: gg.sum(t))(np.array([1, 2]))
    with pytest.raises(TypeError, match="pair"):
        gg.grad(lambda t: gg.sum(t), has_aux=True)(np.array([1.0]))


# --- vjp, jacobian, hvp, hessian ----------------------------------------------------------------

def test_vjp_many_cotangents_and_pytree_outputs(rng):
    x = rng.standard_normal(3)
    out, vjp_fn = gg.vjp(lambda t: (t * t, {"s": gg.sum(t)}), x)
    np.testing.assert_allclose(out[0], x * x)
    assert float(out[1]["s"]) == pytest.approx(x.sum())
    for _ in range(2):  # the graph is kept between calls
        (g,) = vjp_fn((np.ones(3), {"s": np.array(2.0)}))
        np.testing.assert_allclose(g, 2 * x + 2.0)
    with pytest.raises(TypeError, match="structure"):
        vjp_fn(np.ones(3))


def test_vjp_with_several_primals_and_has_aux():
    out, vjp_fn, aux = gg.vjp(lambda a, b: (a * b, "note"), np.array([2.0]), np.array([5.0]),
                              has_aux=True)
    assert aux == "note" and float(out[0]) == 10.0
    da, db = vjp_fn(np.array([1.0]))
    assert float(da[0]) == 5.0 and float(db[0]) == 2.0


def test_jacobian(bk64, rng):
    A = rng.standard_normal((2, 3))
    x = on_backend(bk64, rng.standard_normal(3))
    A_t = gg.asarray(A)
    J = gg.jacobian(lambda t: A_t @ gg.tanh(t))(x)
    check_backend_array(bk64, J, gg.asarray(np.zeros((2, 3))).data)
    np.testing.assert_allclose(host(J), A * (1 - np.tanh(host(x)) ** 2), rtol=1e-12)


def test_jacobian_of_pytrees():
    x = {"a": np.array([1.0, 2.0]), "b": np.array(3.0)}
    J = gg.jacobian(lambda p: (p["a"] * p["b"], gg.sum(p["a"])))(x)
    np.testing.assert_allclose(J[0]["a"], 3.0 * np.eye(2))
    np.testing.assert_allclose(J[0]["b"], [1.0, 2.0])
    np.testing.assert_allclose(J[1]["a"], [1.0, 1.0])
    assert J[1]["b"].shape == () and float(J[1]["b"]) == 0.0


def test_hvp_equals_hessian_times_v(bk64, rng):
    x0, v0 = rng.standard_normal(4), rng.standard_normal(4)

    def f(t):
        xp = array_api_compat.array_namespace(t)
        return xp.sum(xp.exp(t) * xp.sin(t.detach())) + xp.sum(t) ** 3

    x, v = on_backend(bk64, x0), on_backend(bk64, v0)
    H = host(gg.hessian(f)(x))
    expected = np.diag(np.exp(x0) * np.sin(x0)) + 6 * x0.sum() * np.ones((4, 4))
    np.testing.assert_allclose(H, expected, rtol=1e-10)
    hv = gg.hvp(f, x, v)
    check_backend_array(bk64, hv, x)
    np.testing.assert_allclose(host(hv), expected @ v0, rtol=1e-10)


def test_hessian_of_a_pytree():
    x = {"a": np.array([1.0, 2.0]), "b": np.array(3.0)}
    H = gg.hessian(lambda p: gg.sum(p["a"] ** 2) * p["b"])(x)
    np.testing.assert_allclose(H["a"]["a"], 6.0 * np.eye(2))
    np.testing.assert_allclose(H["a"]["b"], [2.0, 4.0])
    np.testing.assert_allclose(H["b"]["a"], [2.0, 4.0])
    assert float(H["b"]["b"]) == 0.0


# --- composition ---------------------------------------------------------------------------------

def f_cubic(t):
    return gg.sum(t ** 3)


def test_tensors_in_give_tensors_with_graphs_out(bk64):
    x = gg.Variable(np.array([1.0, 2.0], dtype=bk64.float_dtype))
    g = gg.grad(f_cubic)(x)
    assert isinstance(g, gg.Tensor) and g.requires_grad
    gg.sum(g).backward()  # d/dx sum(3 x**2) = 6 x
    np.testing.assert_allclose(host(x.grad), [6.0, 12.0])


def test_grad_of_grad_and_jacobian_of_grad(bk64):
    x = on_backend(bk64, [1.0, -2.0])
    second = gg.grad(lambda t: gg.sum(gg.grad(f_cubic)(t)))(x)
    check_backend_array(bk64, second, x)
    np.testing.assert_allclose(host(second), [6.0, -12.0])
    H = gg.jacobian(gg.grad(f_cubic))(x)
    np.testing.assert_allclose(host(H), np.diag([6.0, -12.0]))
    np.testing.assert_allclose(host(gg.hessian(f_cubic)(x)), host(H))


def test_scalar_grad_of_grad():
    d2 = gg.grad(gg.grad(gg.tanh))(np.array(0.5))
    assert float(d2) == pytest.approx(-0.7268619813835873, rel=1e-12)


def test_no_perturbation_confusion():
    # d/dx [x * d/dy (x * y)] = d/dx [x * x] = 2x  (the inner derivative is x, not a constant)
    def f(x):
        return x * gg.grad(lambda y: x * y)(np.array(1.0))
    assert float(gg.grad(f)(np.array(2.0))) == pytest.approx(4.0)
    # d/dx [d/dy (x * y) at y = x] = d/dx x = 1  (the inner y is not the outer x)
    def g(x):
        return gg.grad(lambda y: x * y)(x)
    assert float(gg.grad(g)(np.array(2.0))) == pytest.approx(1.0)


def test_strict_backend_round_trip():
    with gg.use_backend("array_api_strict"):
        x = gg.asarray([0.5, 1.5]).data
        H = gg.hessian(lambda t: gg.sum(gg.exp(t)))(x)
        assert B.name_of(B.namespace_of(H)) == "array_api_strict"
        np.testing.assert_allclose(host(H), np.diag(np.exp([0.5, 1.5])), rtol=1e-12)


# --- Newton's method with Hessian-vector products ------------------------------------------------

def logistic_problem():
    rng = np.random.default_rng(3)
    n, d = 200, 5
    X = rng.standard_normal((n, d)) * np.array([1.0, 3.0, 0.3, 8.0, 0.1])  # ill-conditioned
    w_true = rng.standard_normal(d)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-X @ w_true))).astype(np.float64)
    signs, lam = gg.asarray(2.0 * y - 1.0), 1e-2
    X_t = gg.asarray(X)

    def loss(w):
        """L2-regularised logistic loss, array-API style: strongly convex."""
        xp = array_api_compat.array_namespace(w)
        z = signs * (X_t @ w)
        return xp.mean(xp.logaddexp(xp.zeros_like(z), -z)) + 0.5 * lam * xp.sum(w * w)

    # the Hessian's largest eigenvalue is at most |X|_2**2 / (4 n) + lam
    L = np.linalg.norm(X, 2) ** 2 / (4 * n) + lam
    return loss, d, L


def conjugate_gradient(matvec, b, tol, maxiter):
    x = np.zeros_like(b)
    r = b.copy()
    p = r.copy()
    rr = r @ r
    for _ in range(maxiter):
        if np.sqrt(rr) < tol:
            break
        Ap = matvec(p)
        alpha = rr / (p @ Ap)
        x += alpha * p
        r -= alpha * Ap
        rr, rr_old = r @ r, rr
        p = r + (rr / rr_old) * p
    return x


def test_newton_cg_beats_gradient_descent(numpy_backend):
    loss, d, L = logistic_problem()
    tol = 1e-8
    w = np.zeros(d)
    newton_steps = 0
    for newton_steps in range(1, 11):
        g = gg.grad(loss)(w)
        if np.linalg.norm(g) < tol:
            break
        step = conjugate_gradient(lambda v, w=w: gg.hvp(loss, w, v), -g, tol=1e-12,
                                  maxiter=4 * d)
        w = w + step
    assert np.linalg.norm(gg.grad(loss)(w)) < tol, "Newton-CG did not converge in 10 steps"
    assert newton_steps <= 10

    v = np.zeros(d)
    gd_steps = 0
    for gd_steps in range(1, 501):  # the classic step 1/L
        g = gg.grad(loss)(v)
        if np.linalg.norm(g) < tol:
            break
        v = v - g / L
    assert np.linalg.norm(gg.grad(loss)(v)) > 100 * tol, \
        "gradient descent should still be far from the optimum after 500 steps"
    assert gd_steps == 500 and newton_steps < gd_steps / 50
    assert float(loss(gg.asarray(w))) < float(loss(gg.asarray(v)))
