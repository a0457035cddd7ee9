"""Complex dtypes: values, gradients (PyTorch's convention z.grad = dL/dx + i dL/dy, checked
against central differences on the real and imaginary parts), and the rules around them.

Inputs lie in the open first quadrant, away from every branch cut (the real and imaginary
axes), so each function is holomorphic (or, for abs, smooth) around them.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import gpugrad as gg
from gpugrad.testing import GradCheckError, check_grad, check_grad_complex

from helpers import host

xa = gg.array_api


def cplx(rng, *shape):
    return rng.uniform(0.5, 1.5, shape) + 1j * rng.uniform(0.3, 1.0, shape)


def on_device(t, host_array):
    """A constant on ``t``'s backend and device (index arrays, masks)."""
    return gg.Tensor(t.xp.asarray(host_array, device=t.device) if t.xp is not np
                     else host_array)


UNARY = {
    "exp": gg.exp, "log": gg.log, "log1p": gg.log1p, "sqrt": gg.sqrt, "square": gg.square,
    "abs": gg.abs, "tanh": gg.tanh, "sin": gg.sin, "cos": gg.cos, "tan": gg.tan,
    "asin": gg.asin, "acos": gg.acos, "atan": gg.atan, "sinh": gg.sinh, "cosh": gg.cosh,
    "asinh": gg.asinh, "acosh": gg.acosh, "atanh": gg.atanh, "expm1": gg.expm1,
    "negative": gg.negative, "conj": gg.conj, "real": gg.real, "imag": gg.imag,
    "log2": xa.log2, "log10": xa.log10, "reciprocal": xa.reciprocal, "positive": xa.positive,
    "xa.conj": xa.conj, "xa.real": xa.real, "xa.imag": xa.imag,
    "sum": gg.sum, "sum_axis": lambda t: gg.sum(t, axis=0), "mean": gg.mean,
    "mean_axis": lambda t: gg.mean(t, axis=1), "cumulative_sum":
        lambda t: gg.cumulative_sum(t, axis=1),
    "reshape": lambda t: gg.reshape(t, shape=(3, 2)), "matrix_transpose": gg.matrix_transpose,
    "permute_dims": lambda t: gg.permute_dims(t, axes=(1, 0)),
    "expand_dims": lambda t: gg.expand_dims(t, axis=0),
    "squeeze": lambda t: gg.squeeze(gg.expand_dims(t, axis=1), axis=1),
    "broadcast_to": lambda t: gg.broadcast_to(t, shape=(2, 2, 3)),
    "concat": lambda t: gg.concat([t, t * 2.0], axis=1), "stack": lambda t: gg.stack([t, t]),
    "getitem": lambda t: t[1, ::-1], "setitem": lambda t: gg.setitem(t, t[0] * 1j, key=1),
    "take": lambda t: gg.take(t, on_device(t, np.array([1, 0, 1])), axis=1),
    "take_along_axis": lambda t: gg.take_along_axis(t, on_device(t, np.array([[2, 2], [0, 1]])),
                                                    axis=1),
    "flip": lambda t: xa.flip(t, axis=1), "roll": lambda t: xa.roll(t, 1),
    "moveaxis": lambda t: xa.moveaxis(t, 0, 1), "tile": lambda t: xa.tile(t, (1, 2)),
    "repeat": lambda t: xa.repeat(t, 2, axis=0), "diff": lambda t: xa.diff(t, axis=1),
    "vecdot": lambda t: xa.vecdot(t, t * (1.0 + 2.0j)),
    "abs_squared": lambda t: gg.abs(t) * gg.abs(t),
    "scalar_ops": lambda t: (t * (2.0 - 1.0j) + 1j) / (0.5 + 0.5j) - 3.0,
    "pow_scalar": lambda t: t ** 2.5, "pow_complex_scalar": lambda t: t ** (1.0 + 1.0j),
    "astype_same": lambda t: gg.astype(t, dtype=t.dtype),
    "sigmoid": gg.sigmoid, "sigmoid_0d": lambda t: gg.sigmoid(t[0, 1]),
}

# gpugrad's own composites take complex values where the backend's max does (NumPy)
NUMPY_ONLY = {
    "softmax": lambda t: gg.softmax(t, axis=-1),
    "log_softmax": lambda t: gg.log_softmax(t, axis=0),
    "logsumexp": lambda t: gg.logsumexp(t, axis=1), "logsumexp_all": gg.logsumexp,
}

BINARY = {
    "add": gg.add, "subtract": gg.subtract, "multiply": gg.multiply, "divide": gg.divide,
    "pow": gg.pow, "xa.multiply": xa.multiply,
    "matmul": lambda a, b: gg.matmul(a, gg.matrix_transpose(b)),
    "matmul_1d": lambda a, b: gg.matmul(a[0], gg.matrix_transpose(b)),
    "matmul_2d_1d": lambda a, b: gg.matmul(a, b[0]),
    "matmul_1d_1d": lambda a, b: gg.matmul(a[0], b[1]),
    "xa.matmul": lambda a, b: xa.matmul(a, xa.matrix_transpose(b)),
    "tensordot": lambda a, b: xa.tensordot(a, b, axes=2),
    "where": lambda a, b: gg.where(on_device(a, np.array([[True, False, True]] * 2)), a, b),
    "broadcast": lambda a, b: a * b[:1],
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_gradients_match_finite_differences(name, bk64, rng):
    check_grad_complex(UNARY[name], cplx(rng, 2, 3))


@pytest.mark.parametrize("name", sorted(NUMPY_ONLY))
def test_softmax_family_gradients_on_numpy(name, numpy_backend, rng):
    check_grad_complex(NUMPY_ONLY[name], cplx(rng, 2, 3))


@pytest.mark.parametrize("call", [
    lambda t: gg.maximum(t, t), lambda t: gg.minimum(t, 0.0), lambda t: gg.clip(t, min=0.0),
    gg.max, lambda t: gg.min(t, axis=0), lambda t: xa.atan2(t, t),
    lambda t: gg.logaddexp(t, 0.0),
], ids=["maximum", "minimum", "clip", "max", "min", "atan2", "logaddexp"])
def test_real_only_functions_refuse_complex_input(call, bk64, rng):
    with pytest.raises(gg.OpError, match="defined for real values only"):
        call(gg.asarray(cplx(rng, 2, 3)))


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_gradients_match_finite_differences(name, bk64, rng):
    check_grad_complex(BINARY[name], cplx(rng, 2, 3), cplx(rng, 2, 3))


@pytest.mark.parametrize("fn", [
    lambda x, z: gg.abs(x * z),                        # real input, complex path
    lambda x, z: gg.real(gg.exp(z * x)),
    lambda x, z: gg.pow(x, z),                         # a real base, a complex exponent
    lambda x, z: gg.imag(gg.astype(x, dtype=z.dtype) * z),
], ids=["abs_mul", "real_exp", "pow", "astype_to_complex"])
def test_real_inputs_get_the_real_part(fn, bk64, rng):
    """A real input that feeds complex values gets dL/dx, a real gradient of its own dtype."""
    x = rng.uniform(0.5, 2.0, (3,))
    check_grad_complex(fn, x, cplx(rng, 3))
    xv = gg.Variable(x)
    gg.sum(gg.real(fn(xv, gg.asarray(cplx(rng, 3))))).backward()
    assert xv.grad.dtype == xv.dtype


def test_check_grad_sends_complex_inputs_to_the_complex_check(bk64, rng):
    check_grad(lambda t: gg.exp(t) * t, cplx(rng, 3))


def test_complex_check_catches_a_wrong_rule(bk64, rng):
    """A rule without the conjugate (g * f'(z)) is the classic mistake; the check sees it."""

    @gg.ops.defop("test_unconjugated_square")
    def op(xp, z):
        "z**2 with a wrong VJP: g * 2z instead of g * conj(2z)"
        return z * z, z

    op.defvjp(lambda xp, g, z: (g * (z * 2.0),))
    try:
        with pytest.raises(GradCheckError, match="imaginary part|real part"):
            check_grad_complex(op, cplx(rng, 3))
    finally:
        gg.ops.unregister("test_unconjugated_square")


def test_descent_with_the_gradient_descends(bk64, rng):
    """z -= lr * z.grad lowers a real loss of a complex parameter (the point of the
    convention): fit c to z in |z - c|**2."""
    target = cplx(rng, 4)
    z = gg.Variable(np.zeros(4, np.complex128))
    c = gg.asarray(target)
    losses = []
    for _ in range(20):
        z.grad = None
        d = z - c
        loss = gg.sum(gg.real(d * gg.conj(d)))
        loss.backward()
        losses.append(float(loss))
        with gg.no_grad():
            z -= 0.25 * gg.Tensor(z.grad)
    assert losses[-1] < 1e-5 * losses[0]
    np.testing.assert_allclose(host_complex(z), target, rtol=1e-3)


def host_complex(t):
    return np.asarray(gg.to_numpy(t), dtype=np.complex128)


def test_values_match_numpy(bk, rng):
    """Forward values of complex ops, in complex64 on every backend."""
    z = cplx(rng, 2, 3).astype(np.complex64)
    t = gg.asarray(z)
    for fn, ref in [(gg.exp, np.exp), (gg.sqrt, np.sqrt), (gg.abs, np.abs), (gg.conj, np.conj),
                    (gg.real, np.real), (gg.imag, np.imag), (gg.sum, np.sum),
                    (lambda a: gg.matmul(a, gg.matrix_transpose(a)), lambda a: a @ a.T)]:
        out = fn(t)
        got = gg.to_numpy(out)
        assert got.dtype == np.asarray(ref(z)).dtype
        np.testing.assert_allclose(got, ref(z), rtol=1e-5)


def test_variables_of_complex_dtype(bk64):
    z = gg.Variable(np.array([1.0 + 2.0j]), name="z")
    assert z.requires_grad and "complex" in str(z.dtype)
    with pytest.raises(gg.DtypeError, match="only floating or complex dtypes"):
        gg.Variable(np.array([1, 2]), name="n")
    assert complex(gg.asarray(np.array(1.0 + 2.0j))) == 1.0 + 2.0j
    with gg.no_grad():  # in-place updates keep the dtype; a complex value into real data fails
        z -= 0.5
        z *= 1j
    np.testing.assert_allclose(host_complex(z), [-2.0 + 0.5j])
    r = gg.Variable(np.array([1.0]))
    with gg.no_grad(), pytest.raises(gg.DtypeError, match="imaginary part"):
        r += 1j


def test_complex_to_real_astype_is_refused(bk64):
    z = gg.asarray(np.array([1.0 + 2.0j]))
    with pytest.raises(Exception, match="imaginary part.*real"):
        gg.astype(z, dtype=xa.float64)


def test_no_complex_warning_anywhere(bk64, rng):
    """Mixing real and complex values never casts complex to real silently (NumPy's
    ComplexWarning, an error here)."""
    x = gg.Variable(rng.standard_normal(3))
    z = gg.Variable(cplx(rng, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = gg.sum(gg.abs(gg.astype(x, dtype=z.dtype) * z + x))
        loss.backward()
    assert x.grad.dtype == x.dtype and z.grad.dtype == z.dtype


def test_twice_differentiable_through_complex(bk64):
    """backward(create_graph=True) and gg.grad run the conjugating rules on Tensors: the
    real gradient of |exp(x c)|**2 is itself differentiated against finite differences."""
    c = gg.asarray(np.array([0.3 + 0.7j, -0.2 + 0.1j]))

    def f(x):
        e = gg.exp(gg.astype(x, dtype=c.dtype) * c)
        return gg.sum(gg.real(e * gg.conj(e)))

    x = gg.Variable(np.array([0.4, -0.9]))
    f(x).backward(create_graph=True)
    assert isinstance(x.grad, gg.Tensor) and x.grad.requires_grad
    check_grad(lambda t: gg.grad(f)(t), np.array([0.4, -0.9]))
    # |exp(x c)|**2 = exp(2 x Re c): the gradient is 2 Re(c) exp(2 x Re c)
    want = 2.0 * np.array([0.3, -0.2]) * np.exp(2.0 * np.array([0.4, -0.9]) * [0.3, -0.2])
    np.testing.assert_allclose(host(x.grad), want, rtol=1e-12)


def test_complex_sign_is_differentiated(bk64, rng):
    """sign(z) = z/|z| is piecewise constant only for real z; for complex z it has a
    gradient (and sign(0) = 0 without a 0/0 warning)."""
    check_grad_complex(xa.sign, cplx(rng, 2, 2))
    with np.errstate(all="raise"), warnings.catch_warnings():
        warnings.simplefilter("error")
        out = xa.sign(gg.Variable(np.array([0j, 3.0 + 4.0j])))
        const = xa.sign(gg.asarray(np.array([0j, 3.0 + 4.0j])))
    np.testing.assert_allclose(host_complex(out), [0.0, 0.6 + 0.8j])
    np.testing.assert_allclose(host_complex(const), [0.0, 0.6 + 0.8j])


@pytest.mark.parametrize("make", [
    lambda ps: gg.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01),
    lambda ps: gg.optim.Adam(ps, lr=0.05),
    lambda ps: gg.optim.AdamW(ps, lr=0.05, weight_decay=0.1),
], ids=["sgd", "adam", "adamw"])
def test_optimizers_treat_a_complex_parameter_as_its_real_and_imaginary_parts(make, bk64,
                                                                               rng):
    """Training z = x + iy gives exactly the x and y that training the two real parameters
    gives (PyTorch's view of complex parameters), for the same real loss."""
    target = cplx(rng, 3)
    c = gg.asarray(target)
    z = gg.Variable(np.full(3, 0.1 - 0.2j))
    x, y = gg.Variable(np.full(3, 0.1)), gg.Variable(np.full(3, -0.2))
    cr, ci = gg.asarray(target.real), gg.asarray(target.imag)
    opt_z, opt_xy = make([z]), make([x, y])
    for _ in range(5):
        for opt in (opt_z, opt_xy):
            opt.zero_grad()
        d = z - c
        gg.sum(gg.real(d * gg.conj(d)) * gg.real(d)).backward()
        dr, di = x - cr, y - ci
        gg.sum((dr * dr + di * di) * dr).backward()
        opt_z.step()
        opt_xy.step()
    np.testing.assert_allclose(host_complex(z).real, host(x), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(host_complex(z).imag, host(y), rtol=1e-12, atol=1e-14)


def test_graph_front_end_with_complex_values(bk64):
    """Placeholders of a complex dtype, compiled once, run per feed: the gradients equal the
    eager ones (checked and generated runs alike)."""
    x = gg.Placeholder((None,), "complex128", name="x")
    w = gg.Variable(np.array([1.0 + 1.0j, 2.0 - 1.0j, 0.5j]), name="w")
    d = x * w * (1.0 - 0.5j) - 1.0
    loss = gg.sum(gg.real(d * gg.conj(d)))
    feed_x = np.array([1.0 + 0.0j, 1.0j, 2.0 + 0.5j])
    for _ in range(2):
        value, (gw,) = gg.value_and_gradients(loss, [w], {x: feed_x})
    we = gg.Variable(w.data)
    de = gg.asarray(feed_x) * we * (1.0 - 0.5j) - 1.0
    eager_loss = gg.sum(gg.real(de * gg.conj(de)))
    eager_loss.backward()
    np.testing.assert_allclose(float(gg.to_numpy(value)), float(eager_loss), rtol=1e-12)
    np.testing.assert_allclose(host_complex(gw), host_complex(we.grad), rtol=1e-12)


def test_anomaly_mode_sees_complex_infinities(bk64):
    z = gg.Variable(np.array([0j, 1.0 + 1.0j]))
    with gg.detect_anomaly(), pytest.raises(gg.AnomalyError, match="log: forward produced"):
        gg.log(z)


def test_backward_of_a_complex_output_needs_a_real_loss(bk64):
    z = gg.Variable(np.array([1.0 + 2.0j]))
    out = gg.sum(z * z)
    with pytest.raises(gg.GradientError, match="output is complex.*real loss"):
        out.backward()
    with pytest.raises(gg.GradientError, match="output is complex"):
        gg.grad(lambda t: gg.sum(t * t))(np.array([1.0 + 2.0j]))
    out.backward(grad=gg.asarray(np.array(1.0 + 0.0j)))  # an explicit seed: Re(out)
    np.testing.assert_allclose(host_complex(z.grad), [2.0 - 4.0j])


SECOND = {
    "exp_times": lambda t: gg.exp(t) * t, "sin": gg.sin, "log": gg.log, "sqrt": gg.sqrt,
    "matmul": lambda t: gg.matmul(t, t), "abs": gg.abs, "reciprocal": lambda t: 1.0 / t,
    "tanh": gg.tanh, "atan": gg.atan, "asinh": gg.asinh, "acosh": gg.acosh,
    "pow": lambda t: t ** 2.5, "sigmoid": gg.sigmoid, "real_times": lambda t: gg.real(t) * t,
    "imag_square": lambda t: gg.imag(t * t), "sign": xa.sign,
}


@pytest.mark.parametrize("name", sorted(SECOND))
def test_second_derivatives_of_complex_functions(name, bk64, rng):
    """The conjugating VJP rules are array-API code, so they differentiate again
    (check_gradgrad hands its complex VJP to check_grad_complex)."""
    gg.testing.check_gradgrad(SECOND[name], cplx(rng, 2, 2))


def test_astype_between_complex_precisions(bk64, rng):
    z = gg.Variable(cplx(rng, 3).astype(np.complex64))
    out = gg.astype(z, dtype=xa.complex128)
    gg.sum(gg.real(out * gg.conj(out))).backward()
    assert z.grad.dtype == z.dtype
    np.testing.assert_allclose(host_complex(z.grad), 2.0 * host_complex(z), rtol=1e-6)


@pytest.mark.parametrize("make_opt", [lambda ps: gg.optim.SGD(ps, lr=0.1, momentum=0.9),
                                      lambda ps: gg.optim.Adam(ps, lr=0.05)])
def test_compiled_whole_step_with_complex_values_equals_the_uncompiled_one(make_opt):
    """The planned program lowers real arithmetic only: complex values take the registered
    (conjugating) rules and the optimizer's own update, with the same numbers."""
    with gg.use_backend("numpy"):
        x = gg.Placeholder((None,), "complex128", name="x")
        feed = {x: np.array([1.0 + 0.5j, -1.0j, 2.0 + 0.0j])}
        runs = []
        for compiled in (True, False):
            w = gg.Variable(np.array([1.0 + 1.0j, 2.0 - 1.0j, 0.5j]), name="w")
            d = x * w - 1.0
            loss = gg.sum(gg.real(d * gg.conj(d)))
            opt = make_opt([w])
            losses = [float(opt.minimize(loss, feed=feed, compiled=compiled)) for _ in range(5)]
            runs.append((losses, gg.to_numpy(w.data)))
        np.testing.assert_allclose(runs[0][0], runs[1][0], rtol=1e-12)
        np.testing.assert_allclose(runs[0][1], runs[1][1], rtol=1e-12, atol=1e-14)
        assert runs[0][0][-1] < runs[0][0][0]
