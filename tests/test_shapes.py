"""Static shapes in graphs (gpugrad.shapes): every Symbol's shape and dtype at build time.

Each op case of tests/op_cases.py is built from Placeholders, with static dims and with None
dims, and its inferred shape is checked against the shape of the value the graph computes.
Shape errors are raised at the line that builds the graph, naming the op and the shapes.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import backend as B
from gpugrad import shapes as S
from op_cases import CASES, params


def _line() -> int:
    """The caller's line number, from its running frame."""
    return sys._getframe(1).f_lineno


def _site(line: int) -> str:
    return f"called at test_shapes.py:{line}"


# --- the guard -------------------------------------------------------------------------------

def test_every_builtin_op_has_a_shape_and_dtype_rule():
    builtin = [op for op in gg.registry.values() if op.forward.__module__.startswith(
        "gpugrad.ops")]
    assert len(builtin) >= 60
    missing = [op.name for op in builtin if S.rule_of(op) is None]
    assert missing == [], f"built-in ops without a shape rule in gpugrad/shape_rules.py: {missing}"
    no_dtype = [op.name for op in builtin if S.dtype_rule_of(op) is None]
    assert no_dtype == [], f"built-in ops without a dtype rule: {no_dtype}"
    assert set(S.RULES) <= set(gg.registry), "shape rules for ops that are not registered"


def test_a_user_op_has_no_rule_until_it_declares_one():
    @gg.ops.defop("_test_shapes_user")
    def op(xp, x):
        "2x"
        return 2.0 * x, None

    try:
        x = gg.Placeholder((None, 3), name="x")
        y = op(x)
        assert S.rule_of(op) is None and y.dtype is None
        with pytest.raises(AttributeError, match="_test_shapes_user.*gpugrad.shapes.defshape"):
            _ = y.shape
        with pytest.raises(AttributeError, match="no shape"):
            _ = (y + 1.0).shape  # unknown propagates
        S.defshape(op, lambda shapes, params: shapes[0])
        assert op(x).shape == (None, 3)
        assert (op(x) @ gg.Placeholder((3, 4))).shape == (None, 4)
    finally:
        gg.ops.unregister("_test_shapes_user")


# --- every op case: inferred shapes agree with the computed ones ----------------------------

def _build(case, hosts, xp, dims):
    """The case's graph on Placeholders whose shapes are ``dims(host.shape)``."""
    holders = [gg.Placeholder(dims(h.shape), B.resolve_dtype(xp, h.dtype.name), name=f"in{i}")
               for i, h in enumerate(hosts)]
    return holders, case.fn(*holders)


STATIC = ("static", lambda s: s)
LEADING_NONE = ("leading_none", lambda s: (None,) + tuple(s[1:]) if s else s)
ALL_NONE = ("all_none", lambda s: (None,) * len(s))


@pytest.mark.parametrize("how", [STATIC, LEADING_NONE, ALL_NONE], ids=lambda h: h[0])
@pytest.mark.parametrize("case", params(c for c in CASES if c.name != "getitem_mask"))
def test_inferred_shape_and_dtype_match_the_run(case, how, bk, rng):
    label, dims = how
    hosts = case.hosts(rng, bk)
    xp = B.current().xp
    holders, sym = _build(case, hosts, xp, dims)
    out = sym.eval(dict(zip(holders, hosts)))
    got = tuple(out.shape)
    assert isinstance(sym, gg.Symbol)
    assert len(sym.shape) == len(got) == sym.ndim, (sym.shape, got)
    if label == "static":
        assert sym.shape == got  # nothing is left unknown when every dim is declared
    else:
        assert all(d is None or d == g for d, g in zip(sym.shape, got)), (sym.shape, got)
        oracle = None if bk.name != "numpy" else _two_sizes(  # the oracle runs on NumPy
            case, [h.dtype for h in hosts], [dims(h.shape) for h in hosts])
        if oracle is not None:  # a fixed dim must be fixed; a dim that varies must be None
            assert len(oracle) == len(sym.shape)
            for mine, seen in zip(sym.shape, oracle):
                assert mine is None or mine == seen, (sym.shape, oracle)
                assert seen is not None or mine is None, (sym.shape, oracle)
    if sym.dtype is not None:
        assert sym.dtype == B.dtype_name(out.dtype)
    else:  # unknown only where the input kinds leave it open
        assert not all(B.is_floating(xp, B.resolve_dtype(xp, h.dtype.name)) for h in hosts)


def _two_sizes(case, dtypes, declared):
    """The output shape over two feeds, every None dim set to 2 and then to 3 (zeros, eager,
    on NumPy): a dim that differs is None. None where a feed does not fit (a None that must
    equal a fixed size, or zeros that are not valid inputs)."""
    outs = []
    with gg.use_backend("numpy"), np.errstate(all="ignore"):  # zeros meet poles: fine here
        for n in (2, 3):
            ins = [gg.asarray(np.zeros(tuple(n if d is None else d for d in shape), dt))
                   for shape, dt in zip(declared, dtypes)]
            try:
                outs.append(tuple(case.fn(*ins).shape))
            except (ValueError, TypeError, IndexError):
                return None
    a, b = outs
    return tuple(x if x == y else None for x, y in zip(a, b))


@pytest.mark.parametrize("case", params(c for c in CASES if c.name == "getitem_mask"))
def test_a_mask_in_a_graph_is_refused_with_where(case, rng):
    hosts = case.hosts(rng, None, float_dtype="float64")
    with pytest.raises(TypeError) as info:
        _build(case, hosts, np, lambda s: s)
    msg = str(info.value)
    assert msg.startswith("getitem: a boolean mask selects a number of elements that depends "
                          "on the data"), msg
    line = case.fn.__code__.co_firstlineno  # the case's own x[m]: the line that built it
    assert "gg.where(mask, x, 0.0)" in msg and msg.endswith(f"op_cases.py:{line}"), msg
    m = gg.Placeholder((None, 3), "float64", name="x") > 0.0  # a mask that is a graph node
    t = gg.asarray(np.ones((4, 3)))
    line = _line() + 2
    with pytest.raises(TypeError) as info:
        t[m]
    assert str(info.value).endswith(_site(line)) and "gg.where" in str(info.value)
    line = _line() + 2
    with pytest.raises(TypeError, match=r"a graph Symbol cannot be written into a Tensor.*where"):
        t[m] = 0.0


def test_exact_none_dims_of_common_layers():
    """Hand-derived: which dims follow the None batch and which are fixed."""
    x = gg.Placeholder((None, 3), "float64", name="x")
    W = gg.Variable(np.ones((3, 2)), name="W")
    b = gg.Variable(np.zeros(2), name="b")
    h = gg.sigmoid(x @ W + b)
    assert (x @ W).shape == (None, 2)
    assert h.shape == (None, 2) and h.dtype == "float64"
    assert gg.sum(x, axis=0).shape == (3,)
    assert gg.mean(h).shape == ()
    assert gg.sum(h, axis=1, keepdims=True).shape == (None, 1)
    assert gg.linear(x, W, b).shape == (None, 2)
    assert gg.softmax(h, axis=-1).shape == (None, 2)
    assert gg.logsumexp(h, axis=0).shape == (2,)
    assert gg.concat([h, h], axis=0).shape == (None, 2)
    assert gg.concat([h, h], axis=1).shape == (None, 4)
    assert gg.stack([h, h], axis=1).shape == (None, 2, 2)
    assert h.reshape(-1).shape == (None,)
    assert h.reshape(-1, 1, 2).shape == (None, 1, 2)
    assert gg.expand_dims(h, axis=1).shape == (None, 1, 2)
    assert h[:, 0].shape == (None,) and h[0].shape == (2,) and h[:, None].shape == (None, 1, 2)
    assert h[1:3].shape == (None, 2)  # the fed size decides how many rows a slice keeps
    assert gg.cumulative_sum(h, axis=0, include_initial=True).shape == (None, 2)
    assert gg.cumulative_sum(h, axis=1, include_initial=True).shape == (None, 3)
    assert gg.take(h, gg.asarray(np.array([0, 1, 1])), axis=1).shape == (None, 3)
    assert gg.permute_dims(gg.expand_dims(h, axis=0), axes=(2, 0, 1)).shape == (2, 1, None)


def test_broadcasting_none_against_1_and_against_a_size():
    x = gg.Placeholder((None, 3), "float64", name="x")
    one = gg.Placeholder((1, 3), "float64", name="one")
    five = gg.Placeholder((5, 1), "float64", name="five")
    assert (x + one).shape == (None, 3)  # None with 1: still any size
    y = x + five
    assert y.shape == (5, 3)  # None with 5: it must be 5
    feed = {x: np.ones((5, 3)), five: np.ones((5, 1))}
    assert tuple(y.eval(feed).shape) == (5, 3)
    with pytest.raises(gg.OpError, match=r"add: shapes \(4, 3\) and \(5, 1\)"):
        y.eval({x: np.ones((4, 3)), five: np.ones((5, 1))})  # checked when it runs, as before


def test_shape_ndim_len_and_T_of_intermediates():
    x = gg.Placeholder((4, 3), "float64", name="x")
    h = gg.tanh(x @ gg.Variable(np.ones((3, 2))))
    assert h.shape == (4, 2) and h.ndim == 2 and len(h) == 4
    assert h.T.shape == (2, 4) and h.mT.shape == (2, 4)
    np.testing.assert_allclose(gg.to_numpy(h.T.eval({x: np.zeros((4, 3))})), np.zeros((2, 4)))
    rows = list(h)
    assert len(rows) == 4 and all(r.shape == (2,) for r in rows)
    np.testing.assert_allclose(gg.to_numpy(rows[3].eval({x: np.ones((4, 3))})),
                               np.tanh([3.0, 3.0]))
    with pytest.raises(ValueError, match=r"T: defined for 2-D arrays only \(shape \(4, 2, 1\)"):
        _ = gg.expand_dims(h, axis=-1).T
    batch = gg.Placeholder((None, 3), "float64", name="batch")
    with pytest.raises(TypeError, match=r"len\(\) of <Symbol sum>: its shape \(None,\) has a "
                                        r"leading None, a size known only when the graph runs"):
        len(gg.sum(batch, axis=1))
    with pytest.raises(TypeError, match="len"):
        list(batch)
    with pytest.raises(TypeError, match=r"len\(\) of a 0-d graph Symbol"):
        len(gg.sum(batch))
    with pytest.raises(TypeError,
                       match=r"has no value until the graph runs; call gg.to_numpy\(sym.eval"):
        np.asarray(h)  # not walked as a sequence of 4 x 2 nodes


def test_dtypes_of_intermediates():
    x = gg.Placeholder((None, 3), "float32", name="x")
    i = gg.Placeholder((2,), "int64", name="i")
    assert (x * 2.5).dtype == "float32"  # a Python scalar is weak
    assert (x > 0.0).dtype == "bool"
    assert gg.astype(x, dtype=np.float64).dtype == "float64"
    assert gg.take(x, i, axis=1).dtype == "float32"
    assert gg.where(x > 0.0, x, 0.0).dtype == "float32"
    assert gg.exp(i).dtype is None  # NumPy would give float64, a strict backend an error
    assert (i + 1).dtype == "int64"


# --- errors at the line that builds the graph -----------------------------------------------

def test_shape_errors_of_intermediates_name_op_shapes_and_line():
    x = gg.Placeholder((None, 3), "float64", name="x")
    h = x @ gg.Variable(np.ones((3, 2)))  # (None, 2): an intermediate
    g = gg.sum(h, axis=1)  # (None,)
    checks = [
        (lambda: h + gg.Placeholder((3,)), r"add: shapes (None, 2) and (3,) cannot be "
         "broadcast together: 2 (dim -1 of the first) != 3 (dim -1 of the second)"),
        (lambda: h @ gg.Placeholder((3, 4)), "matmul: shapes (None, 2) and (3, 4) are not "
         "aligned: 2 (dim -1 of the first) != 3 (dim -2 of the second)"),
        (lambda: gg.atan2(h, gg.Placeholder((4,))), "atan2: shapes (None, 2) and (4,) cannot be "
         "broadcast together"),
        (lambda: gg.concat([h, g], axis=0), "concat: shapes (None, 2), (None,): arrays must "
         "have the same number of dimensions"),
        (lambda: gg.stack([h, h[:, :1]], axis=0), "stack: shapes (None, 2), (None, 1): arrays "
         "must all have the same shape"),
        (lambda: h.reshape(5, 3), "reshape: cannot reshape (None, 2) into (5, 3): 15 elements "
         "is not a multiple of 2"),
        (lambda: gg.sum(h, axis=2), "sum: axis 2 is out of range for shape (None, 2) (2 dims)"),
        (lambda: gg.max(h, axis=(1, -1)), "max: axis (1, -1) names an axis twice"),
        (lambda: gg.squeeze(h, axis=1), "squeeze: axis 1 of shape (None, 2) has size 2, not 1"),
        (lambda: gg.permute_dims(h, axes=(0, 0)), "permute_dims: axes (0, 0) are not a "
         "permutation of the 2 dims of shape (None, 2)"),
        (lambda: gg.matrix_transpose(g), "matrix_transpose: shape (None,) has fewer than 2 dims"),
        (lambda: gg.broadcast_to(h, shape=(4, 3)), "broadcast_to: shape (None, 2) cannot be "
         "broadcast to (4, 3)"),
        (lambda: h[:, 5], "getitem: index 5 is out of range for a dim of size 2 (shape "
         "(None, 2)"),
        (lambda: h[0, 0, 0], "getitem: shape (None, 2): getitem: too many indices"),
        (lambda: gg.take(h, gg.asarray(np.array([0])), axis=2), "take: axis 2 is out of "
         "range for shape (None, 2)"),
        (lambda: gg.take_along_axis(h, gg.asarray(np.array([0])), axis=1), "take_along_axis: "
         "shapes (None, 2) and (1,): the indices need as many dims as the array"),
        (lambda: gg.linear(h, gg.Variable(np.ones((3, 4))), gg.Variable(np.ones(4))),
         "linear: x (None, 2) and weight (3, 4) are not aligned"),
        (lambda: gg.linear(h, gg.Variable(np.ones((2, 4))), gg.Variable(np.ones(3))),
         "linear: bias (3,) cannot be broadcast against x @ weight (None, 4)"),
        (lambda: gg.cumulative_sum(h), "cumulative_sum: axis is required for shape (None, 2)"),
        (lambda: gg.softmax(h, axis=-3), "softmax: axis -3 is out of range for shape "
         "(None, 2)"),
        (lambda: gg.setitem(h, gg.Placeholder((3,)), key=0), "setitem: value of shape (3,) "
         "cannot be broadcast to x[key] of shape (2,) (x (None, 2))"),
        (lambda: gg.expand_dims(h, axis=4), "expand_dims: axis 4 is out of range for shape "
         "(None, 2) (3 dims)"),
    ]
    for build, want in checks:
        with pytest.raises(gg.OpError) as info:
            build()
        msg = str(info.value)
        assert msg.startswith(want), f"{msg!r} does not start with {want!r}"
        assert msg.endswith(_site(build.__code__.co_firstlineno)), msg  # the building line


def test_a_shape_error_deep_in_a_model_points_at_the_users_line():
    x = gg.Placeholder((None, 4), "float32", name="x")
    model = gg.nn.Sequential(gg.nn.Linear(4, 8), gg.nn.ReLU(), gg.nn.Linear(8, 3))
    out = model(x)
    assert out.shape == (None, 3)
    target = gg.Placeholder((None, 2), "float32", name="target")
    line = _line() + 2
    with pytest.raises(gg.OpError) as info:
        out - target
    msg = str(info.value)
    assert msg.startswith("subtract: shapes (None, 3) and (None, 2) cannot be broadcast"), msg
    assert msg.endswith(_site(line)), msg


def test_layers_and_losses_check_intermediate_nodes_at_build():
    x = gg.Placeholder((None, 4), "float32", name="x")
    h = gg.nn.Linear(4, 5)(x)  # (None, 5)
    line = _line() + 2
    with pytest.raises(gg.OpError) as info:
        gg.nn.Linear(4, 8)(h)
    assert str(info.value).startswith("Linear(4, 8, bias=True): input has shape (None, 5)")
    assert str(info.value).endswith(_site(line))
    pred = gg.nn.Linear(5, 1)(h)  # (None, 1) against (None,) would broadcast to (None, None)
    target = gg.Placeholder((None,), "float32", name="target")
    with pytest.raises(gg.OpError, match=r"^mse_loss: prediction has shape \(None, 1\) but "
                                         r"target has shape \(None,\)"):
        gg.nn.mse_loss(pred, target)
    assert gg.nn.mse_loss(gg.squeeze(pred, axis=1), target).shape == ()


def test_an_eager_history_lifted_into_a_graph_keeps_its_shapes():
    W = gg.Variable(np.ones((3, 2)), name="W")
    penalty = 0.01 * gg.sum(W ** 2, axis=0)  # eager, shape (2,)
    x = gg.Placeholder((None, 3), "float64", name="x")
    loss = gg.sum(x @ W, axis=0) + penalty
    assert loss.shape == (2,) and loss.dtype == "float64"
    lifted = [a for a in loss.args if isinstance(a, gg.Symbol) and a.op.name == "multiply"]
    assert lifted and lifted[0].shape == (2,)


# --- the generic rule for user ops -----------------------------------------------------------

def test_evaluated_rule_for_a_user_op_matches_the_run(bk):
    @gg.ops.defop("_test_shapes_outer")
    def outer(xp, a, b):
        "a[:, None] * b[None, :], then the row sums appended as a last column"
        o = xp.reshape(a, (-1, 1)) * xp.reshape(b, (1, -1))
        return xp.concat([o, xp.sum(o, axis=1, keepdims=True)], axis=1), None

    S.defshape(outer, S.evaluated(outer.forward))
    try:
        dt = bk.float_dtype
        a = gg.Placeholder((None,), dt, name="a")
        b = gg.Placeholder((4,), dt, name="b")
        y = outer(a, b)
        assert y.shape == (None, 5)
        out = y.eval({a: np.ones(7, dt), b: np.ones(4, dt)})
        assert tuple(out.shape) == (7, 5)
        big = outer(gg.Placeholder((100_000,), dt), gg.Placeholder((None,), dt))
        assert big.shape == (100_000, None)
        # a None that must equal a known size cannot be guessed: the shape stays unknown
        S.defshape(outer, S.evaluated(lambda xp, a, b: (a + b, None)))
        assert outer(gg.Placeholder((None,), dt), gg.Placeholder((4,), dt))._shape is None
    finally:
        gg.ops.unregister("_test_shapes_outer")
