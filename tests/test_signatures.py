"""One signature per name: ``gg.<name>`` and ``gpugrad.array_api.<name>`` take the same calls
(the standard's, plus the positional forms NumPy and PyTorch users type), eagerly and in
graphs, and a call that does not fit names the parameter."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import array_api as xa
from tests.helpers import const, host, var

STANDARD = sorted(n for n in xa.__all__ if callable(getattr(xa, n)) and not n.isupper()
                  and n not in ("gradient_support", "twice_differentiable"))
"""The array-API standard's functions, as gpugrad.array_api lists them."""

PROMOTING = {"add", "atan2", "concat", "divide", "logaddexp", "matmul", "maximum", "minimum",
             "multiply", "pow", "stack", "subtract", "where"}
"""Names whose array_api function promotes float32 meeting float64, as the standard says,
while gg.<name> refuses (docs/errors.md). Everything else is one object."""

def _plain(sig: inspect.Signature) -> list[tuple]:
    return [(p.name, p.kind, p.default) for p in sig.parameters.values()]


def test_every_standard_name_at_the_top_level_has_the_array_api_signature():
    top = [n for n in STANDARD if hasattr(gg, n)]
    assert len(top) >= 55
    two_objects = {n for n in top if getattr(gg, n) is not getattr(xa, n)}
    assert two_objects == PROMOTING
    for name in top:
        ours, theirs = inspect.signature(getattr(gg, name)), inspect.signature(getattr(xa, name))
        assert _plain(ours) == _plain(theirs), name
        assert "xp" not in ours.parameters, name


def test_signatures_are_the_standards_plus_positional_habits():
    assert str(inspect.signature(gg.sum)) == "(x, /, axis=None, *, dtype=None, keepdims=False)"
    assert str(inspect.signature(gg.mean)) == "(x, /, axis=None, *, keepdims=False)"
    assert str(inspect.signature(gg.reshape)) == "(x, /, shape, *, copy=None)"
    assert str(inspect.signature(gg.permute_dims)) == "(x, /, axes)"
    assert str(inspect.signature(gg.clip)) == "(x, /, min=None, max=None)"
    assert str(inspect.signature(gg.concat)) == "(arrays, /, axis=0)"
    assert str(inspect.signature(gg.astype)) == "(x, /, dtype, *, copy=True, device=None)"
    assert str(inspect.signature(gg.exp)) == "(x, /)"
    assert str(inspect.signature(gg.add)) == "(x1, x2, /)"
    assert str(inspect.signature(gg.where)) == "(condition, x1, x2, /)"
    assert str(inspect.signature(gg.sigmoid)) == "(x, /)"  # not standard: the rule's form


X = np.arange(24.0).reshape(2, 3, 4) / 7.0 - 1.5
IDX = np.array([2, 0, 2])

# (label, positional call, the same call with the rule's keywords)
FORMS = [
    ("sum", lambda f, x: f.sum(x, 0), lambda x: gg.sum(x, axis=0)),
    ("sum-tuple", lambda f, x: f.sum(x, (0, 2)), lambda x: gg.sum(x, axis=(0, 2))),
    ("mean", lambda f, x: f.mean(x, 1), lambda x: gg.mean(x, axis=1)),
    ("max", lambda f, x: f.max(x, 0), lambda x: gg.max(x, axis=0)),
    ("min", lambda f, x: f.min(x, -1), lambda x: gg.min(x, axis=-1)),
    ("cumulative_sum", lambda f, x: f.cumulative_sum(x, 1),
     lambda x: gg.cumulative_sum(x, axis=1)),
    ("concat", lambda f, x: f.concat([x, x], 1), lambda x: gg.concat([x, x], axis=1)),
    ("stack", lambda f, x: f.stack((x, x), 0), lambda x: gg.stack([x, x], axis=0)),
    ("expand_dims", lambda f, x: f.expand_dims(x, 0), lambda x: gg.expand_dims(x, axis=0)),
    ("squeeze", lambda f, x: f.squeeze(f.expand_dims(x, 1), 1), lambda x: x),
    ("reshape", lambda f, x: f.reshape(x, (4, 6)), lambda x: gg.reshape(x, shape=(4, 6))),
    ("reshape-list", lambda f, x: f.reshape(x, [6, -1]), lambda x: gg.reshape(x, shape=(6, 4))),
    ("broadcast_to", lambda f, x: f.broadcast_to(x, (2, 2, 3, 4)),
     lambda x: gg.broadcast_to(x, shape=(2, 2, 3, 4))),
    ("permute_dims", lambda f, x: f.permute_dims(x, (2, 0, 1)),
     lambda x: gg.permute_dims(x, axes=(2, 0, 1))),
    ("clip", lambda f, x: f.clip(x, 0, 1), lambda x: gg.clip(x, min=0, max=1)),
    ("clip-min-only", lambda f, x: f.clip(x, -0.55), lambda x: gg.clip(x, min=-0.55)),
    ("take", lambda f, x: f.take(x, _idx(x), 2), lambda x: gg.take(x, _idx(x), axis=2)),
    ("take_along_axis",
     lambda f, x: f.take_along_axis(x, f.reshape(_idx(x), (1, 3, 1)), 1),
     lambda x: gg.take_along_axis(x, gg.reshape(_idx(x), shape=(1, 3, 1)), axis=1)),
]

NOT_STANDARD = [
    ("softmax", lambda x: gg.softmax(x, 1), lambda x: gg.softmax(x, axis=1)),
    ("log_softmax", lambda x: gg.log_softmax(x, 0), lambda x: gg.log_softmax(x, axis=0)),
    ("logsumexp", lambda x: gg.logsumexp(x, 2), lambda x: gg.logsumexp(x, axis=2)),
]


def _idx(x):
    xp = getattr(x, "xp", None)
    if xp is None:  # a graph Symbol: indices are fed as constants of the current backend
        return gg.asarray(IDX)
    return gg.Tensor(xp.asarray(IDX, device=x.device))


@pytest.mark.parametrize("label,positional,keywords", FORMS, ids=[f[0] for f in FORMS])
def test_positional_forms_match_the_keyword_call_on_both_front_doors(bk, label, positional,
                                                                     keywords):
    x = const(bk, X)
    want = host(keywords(x))
    np.testing.assert_array_equal(host(positional(gg, x)), want)
    np.testing.assert_array_equal(host(positional(xa, x)), want)


@pytest.mark.parametrize("label,positional,keywords", NOT_STANDARD,
                         ids=[f[0] for f in NOT_STANDARD])
def test_positional_axis_for_the_ops_the_standard_lacks(bk, label, positional, keywords):
    x = const(bk, X)
    np.testing.assert_array_equal(host(positional(x)), host(keywords(x)))


@pytest.mark.parametrize("label,positional,keywords", FORMS + [
    (label, (lambda f, x, p=p: p(x)), k) for label, p, k in NOT_STANDARD],
    ids=[f[0] for f in FORMS + NOT_STANDARD])
def test_positional_forms_differentiate(bk64, label, positional, keywords):
    gg.testing.check_grad(lambda t: gg.sum(positional(gg, t) * positional(gg, t)), X)


def test_positional_forms_build_graphs(bk):
    dt = bk.float_dtype
    P = gg.Placeholder((2, 3, 4), dt, name="x")
    x = const(bk, X)
    for label, positional, keywords in FORMS:
        built = positional(gg, P)
        assert isinstance(built, gg.Symbol), label
        np.testing.assert_array_equal(host(built.eval({P: X.astype(dt)})),
                                      host(positional(gg, x)), err_msg=label)


def test_concat_and_stack_take_any_sequence_of_arrays(bk):
    x = const(bk, X)
    assert gg.concat((t for t in (x, x)), 1).shape == (2, 6, 4)
    assert gg.stack(iter([x, x, x]), 0).shape == (3, 2, 3, 4)
    assert xa.concat((x, x)).shape == (4, 3, 4)


def test_sum_and_cumulative_sum_take_a_dtype(bk):
    x = const(bk, X)
    assert gg.sum(x, 0, dtype="float32").dtype == gg.asarray(np.float32(1)).dtype
    assert gg.cumulative_sum(x, 1, dtype=x.dtype).dtype == x.dtype
    assert gg.reshape(x, (24,), copy=False).shape == (24,)
    assert gg.astype(x, "float32", copy=False).dtype == gg.asarray(np.float32(1)).dtype


def test_clip_with_array_bounds_differentiates_in_every_argument(bk64):
    lo = np.full((3, 4), -0.6) + np.linspace(0.0, 0.3, 4)
    hi = np.full((3, 4), 0.45) - np.linspace(0.0, 0.2, 4)

    def f(x, a, b):
        return gg.sum(gg.clip(x, a, b) ** 2)

    gg.testing.check_grad(f, X, lo, hi)
    out = host(gg.clip(const(bk64, X), const(bk64, lo), const(bk64, hi)))
    np.testing.assert_array_equal(out, np.minimum(np.maximum(X, lo), hi))


def test_the_promoting_names_differ_only_in_promotion():
    a32 = gg.asarray(np.ones(3, np.float32))
    a64 = gg.asarray(np.arange(3.0))
    for name in ("add", "multiply", "maximum"):
        np.testing.assert_array_equal(host(getattr(gg, name)(a64, a64)),
                                      host(getattr(xa, name)(a64, a64)))
        assert getattr(xa, name)(a32, a64).dtype == a64.dtype
        with pytest.raises(gg.DtypeError, match=f"{name}: float32 and float64"):
            getattr(gg, name)(a32, a64)
    np.testing.assert_array_equal(host(xa.concat([a64, a64], 0)), host(gg.concat([a64, a64], 0)))
    assert xa.stack([a32, a64], 0).dtype == a64.dtype


INTERNAL = ("were given", "(inputs:", "keyword-only argument", "unexpected keyword argument",
            "cannot be interpreted")
"""Phrases of Python's own messages, and of an op's rule failing on a value it cannot use."""

BAD_CALLS = [
    ("axis-tensor", lambda x: gg.sum(x, x),
     r"^`sum`: `axis` must be an int or a tuple of ints \(or None\), got a \w+ of shape"),
    ("axis-tensor-keyword", lambda x: gg.sum(x, axis=x), r"^`sum`: `axis` must be an int"),
    ("axis-str", lambda x: gg.mean(x, "rows"), r"^`mean`: `axis` must be an int .* \('rows'\)"),
    ("too-many", lambda x: gg.sum(x, 0, True),
     (r"^`sum`: takes at most 2 positional arguments \(x, axis\), got 3; pass dtype, keepdims "
      r"by keyword: call sum\(x, /, axis=None, \*, dtype=None, keepdims=False\)")),
    ("unknown-keyword", lambda x: gg.sum(x, axes=0), r"^`sum`: no keyword parameter `axes`"),
    ("unknown-keyword-mapped", lambda x: gg.reshape(x, (24,), order="C"),
     r"^`reshape`: no keyword parameter `order`"),
    ("missing-shape", lambda x: gg.reshape(x), r"^`reshape`: `shape` is missing"),
    ("missing-dtype", lambda x: gg.astype(x), r"^`astype`: `dtype` is missing"),
    ("missing-x2", lambda x: gg.add(x), r"^`add`: `x2` is missing"),
    ("exp-extra", lambda x: gg.exp(x, 1),
     r"^`exp`: takes at most 1 positional argument \(x\), got 2"),
    ("x-by-keyword", lambda x: gg.exp(x=x), r"^`exp`: no keyword parameter `x` \(pass it by"),
    ("clip-four", lambda x: gg.clip(x, 0, 1, 2), r"^`clip`: takes at most 3 positional"),
    ("axes-holds-tensor", lambda x: gg.permute_dims(x, (0, x, 1)),
     r"^`permute_dims`: `axes` must be a tuple of ints \(one per axis\), got a tuple holding a"),
    ("shape-float", lambda x: gg.reshape(x, (4.0, 6)),
     r"^`reshape`: `shape` must be a tuple of ints, got a tuple holding a float \(4.0\)"),
    ("keepdims-int", lambda x: gg.max(x, 0, keepdims=2), r"^`max`: `keepdims` must be True"),
    ("concat-two-arrays", lambda x: gg.concat(x, x),
     (r"^`concat`: `arrays` must be a list or tuple of arrays, got a \w+ of shape \(2, 3, 4\); "
      r"call concat\(\[a, b\], axis=0\)")),
    ("concat-three-arrays", lambda x: gg.concat(x, x, x),
     r"^`concat`: takes one list of arrays, got 3 separate arguments"),
    ("stack-one-array", lambda x: gg.stack(x), r"^`stack`: `arrays` must be a list or tuple"),
    ("api-concat-two-arrays", lambda x: xa.concat(x, x), r"^`concat`: `arrays` must be a list"),
    ("api-add-three", lambda x: xa.add(x, x, x), r"^`add`: takes at most 2 positional"),
]


@pytest.mark.parametrize("label,call,message", BAD_CALLS, ids=[b[0] for b in BAD_CALLS])
def test_a_call_that_does_not_fit_names_the_parameter(bk, label, call, message):
    x = var(bk, X)
    with pytest.raises((TypeError, gg.OpError), match=message) as info:
        call(x)
    text = str(info.value)
    assert "called at test_signatures.py:" in text
    assert not any(bit in text for bit in INTERNAL), text


@pytest.mark.parametrize("label,call,message",
                         BAD_CALLS, ids=[b[0] for b in BAD_CALLS])
def test_a_graph_call_that_does_not_fit_names_the_parameter(bk, label, call, message):
    P = gg.Placeholder((2, 3, 4), bk.float_dtype, name="x")
    with pytest.raises((TypeError, gg.OpError), match=message) as info:
        call(P)
    assert not any(bit in str(info.value) for bit in INTERNAL), str(info.value)


def test_a_user_op_gets_its_rules_signature_and_named_errors():
    @gg.ops.defop("test_scale_by")
    def scale_by(xp, x, *, k=2.0):
        "k x; d/dx = k"
        return x * k, None

    scale_by.defvjp(lambda xp, g, res, *, k=2.0: (g * k,))
    try:
        assert str(inspect.signature(scale_by)) == "(x, /, *, k=2.0)"
        x = gg.asarray([1.0, 2.0])
        np.testing.assert_array_equal(host(scale_by(x, k=3.0)), [3.0, 6.0])
        with pytest.raises(TypeError, match=r"^`test_scale_by`: takes at most 1 positional "
                                            r"argument \(x\), got 2; pass k by keyword"):
            scale_by(x, 3.0)
    finally:
        gg.ops.unregister("test_scale_by")


def test_tensor_methods_take_the_same_positional_axis(bk):
    x = const(bk, X)
    np.testing.assert_array_equal(host(x.sum(0)), host(gg.sum(x, 0)))
    np.testing.assert_array_equal(host(x.mean(1)), host(gg.mean(x, 1)))


def test_asarray_is_one_function_with_gpugrads_host_copy(bk):
    assert gg.asarray is xa.asarray
    assert [(p.name, p.kind.name) for p in inspect.signature(gg.asarray).parameters.values()] == [
        ("obj", "POSITIONAL_ONLY"), ("dtype", "POSITIONAL_OR_KEYWORD"), ("device", "KEYWORD_ONLY"),
        ("copy", "KEYWORD_ONLY")]
    host_array = X.copy()
    t = gg.asarray(host_array, bk.float_dtype)
    host_array[0, 0, 0] = 99.0
    np.testing.assert_allclose(host(t), X, rtol=1e-6)
    assert t.dtype == const(bk, X).dtype
    assert gg.asarray(t) is t
    assert gg.asarray(t, device=t.device).device == t.device


def test_asarray_stacks_tensors_differentiably(bk64):
    gg.testing.check_grad(lambda a, b: gg.sum(gg.asarray([a, b, a]) ** 2), X[0, 0], X[1, 2])


def test_a_user_op_with_star_args_takes_calls_as_they_are():
    @gg.ops.defop("test_sum_all")
    def sum_all(xp, *arrays, **params):
        "a + b + ...; d/d each = 1"
        out = arrays[0]
        for a in arrays[1:]:
            out = out + a
        return out, len(arrays)

    sum_all.defvjp(lambda xp, g, n, **params: (g,) * n)
    try:
        x = gg.Variable([1.0, 2.0])
        out = sum_all(x, x, x, scale=1.0)
        np.testing.assert_array_equal(host(out), [3.0, 6.0])
        gg.sum(out).backward()
        np.testing.assert_array_equal(host(x.grad), [3.0, 3.0])
    finally:
        gg.ops.unregister("test_sum_all")
