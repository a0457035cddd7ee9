"""Tools around the ops: check_grad, the op registry and user ops, and to_dot."""

from __future__ import annotations

import pydoc
import re

import numpy as np
import pytest

import gpugrad as gg
from gpugrad.testing import GradCheckError, check_grad

# --- user ops -------------------------------------------------------------------------------

@pytest.fixture
def wrong_op():
    """x**2 with a VJP that is wrong (3x instead of 2x) wherever x > 1.5."""

    @gg.ops.defop("test_wrong_op")
    def op(xp, x):
        "x**2;  d/dx = 2x (but the VJP below says 3x where x > 1.5)"
        return x * x, x

    op.defvjp(lambda xp, g, x: (xp.where(x > 1.5, g * 3.0 * x, g * 2.0 * x),))
    try:
        yield op
    finally:
        gg.ops.unregister("test_wrong_op")


@pytest.fixture
def cube():
    @gg.ops.defop("test_cube")
    def op(xp, x):
        """x**3;  d/dx = 3 x**2"""
        return x * x * x, (x,)

    @op.defvjp
    def _(xp, g, res):
        (x,) = res
        return (g * 3.0 * x * x,)

    try:
        yield op
    finally:
        gg.ops.unregister("test_cube")


@pytest.fixture
def wrong_second_input():
    """a * b whose VJP for b is off by a factor 2."""

    @gg.ops.defop("test_wrong_b")
    def op(xp, a, b):
        "a * b;  d/da = b, d/db = a (the VJP says 2a)"
        return a * b, (a, b)

    op.defvjp(lambda xp, g, res: g * res[1], lambda xp, g, res: g * 2.0 * res[0])
    try:
        yield op
    finally:
        gg.ops.unregister("test_wrong_b")


# --- check_grad -----------------------------------------------------------------------------

def test_check_grad_passes_on_correct_gradients(bk64, rng):
    a = rng.standard_normal((3, 4))
    b = rng.standard_normal((4, 2))
    check_grad(lambda x, y: gg.sum(gg.sigmoid(x @ y) * gg.tanh(x).sum()), a, b)
    check_grad(lambda x: gg.softmax(x, axis=-1) * 2.0, a)  # a vector output
    check_grad(lambda x, y: (x @ y).mean(axis=0), a, b)
    # integer inputs are constants, not differentiated
    check_grad(lambda x, idx: gg.sum(gg.take(x, idx, axis=1) ** 2),
               a, np.array([0, 3, 3]))


def test_check_grad_passes_for_a_correct_user_op(bk64, cube):
    check_grad(lambda x: cube(x) * 2.0, np.array([0.5, -1.0, 2.0]))


def test_check_grad_reports_the_largest_error_and_where(bk64, wrong_op):
    x = np.array([0.5, -1.0, 2.0, 0.1])
    with pytest.raises(GradCheckError) as info:
        check_grad(lambda t: gg.sum(wrong_op(t)), x)
    msg = str(info.value)
    # the only wrong entry is d out / d x[2]: analytic 3*2 = 6, numeric 2*2 = 4
    assert "input 0" in msg
    assert "1 of 4 values" in msg
    assert re.search(r"largest error 2\b", msg), msg
    assert "Jacobian entry" in msg and "(0, 2)" in msg
    assert "analytic 6" in msg and "numeric 4" in msg
    assert isinstance(info.value, AssertionError)  # pytest shows it as a failure

    # a vector output: the entry (output 3, input 3)
    y = np.array([0.5, -1.0, 0.1, 3.0])
    with pytest.raises(GradCheckError,
                       match=r"largest error 3\b.*\(3, 3\).*analytic 9, numeric 6"):
        check_grad(lambda t: wrong_op(t), y)
    # where the op's gradient is right, it passes
    check_grad(lambda t: wrong_op(t), np.array([0.5, -1.0, 1.2]))


def test_check_grad_names_the_wrong_input(bk64, wrong_second_input):
    a, b = np.array([1.0, 2.0]), np.array([3.0, -1.0])
    with pytest.raises(GradCheckError, match="input 1"):
        check_grad(lambda x, y: gg.sum(wrong_second_input(x, y)), a, b)
    check_grad(lambda x, y: gg.sum(wrong_second_input(x, y)), a, b, wrt=0)


def _counting(fn):
    calls = []

    def wrapped(*args):
        calls.append(1)
        return fn(*args)

    return wrapped, calls


def test_check_grad_full_jacobian_for_small_inputs(bk64, cube):
    x = np.linspace(-1.0, 1.0, 10)
    fn, calls = _counting(lambda t: gg.sum(cube(t)))
    check_grad(fn, x)
    assert len(calls) >= 2 * x.size  # two evaluations per input element

    fn, calls = _counting(lambda t: cube(t))  # 10 outputs x 10 inputs
    check_grad(fn, x)
    assert len(calls) >= 2 * x.size + 10  # ... and one backward per output row


def test_check_grad_random_direction_for_large_inputs(bk64, cube, wrong_op, rng):
    x = rng.uniform(-1.0, 1.0, 100)  # more than 64 elements
    fn, calls = _counting(lambda t: gg.sum(cube(t)))
    check_grad(fn, x)
    assert len(calls) <= 6  # one random direction, not 100 columns

    fn, calls = _counting(lambda t: cube(t))  # 100 outputs: random output weights too
    check_grad(fn, x)
    assert len(calls) <= 6

    big = rng.uniform(-1.0, 1.0, (10, 10))
    big[3, 4] = 2.0  # the one place where the wrong VJP is wrong
    with pytest.raises(GradCheckError, match=r"directional derivative"):
        check_grad(lambda t: gg.sum(wrong_op(t)), big)
    check_grad(lambda t: gg.sum(wrong_op(t)), big * 0.5)


def test_check_grad_on_float32_backend(bk):
    # float32 is checked with looser tolerances from the one table
    x = np.array([0.5, -1.0, 2.0], dtype=bk.float_dtype)
    check_grad(lambda t: gg.sum(gg.tanh(t) * t), x, eps=1e-3)


# --- the registry ---------------------------------------------------------------------------

def test_registry_is_read_only():
    reg = gg.ops.registry
    assert reg is gg.registry
    with pytest.raises(TypeError):
        reg["add"] = reg["multiply"]
    with pytest.raises(TypeError):
        reg["new_name"] = reg["multiply"]
    with pytest.raises(TypeError):
        del reg["add"]
    assert reg["add"] is gg.add
    for name in ("add", "matmul", "sum", "sigmoid", "logsumexp", "softmax", "log_softmax",
                 "relu", "matrix_transpose"):
        assert name in reg and getattr(gg, name) is reg[name]


def test_duplicate_op_name_is_refused():
    original = gg.ops.registry["add"]
    with pytest.raises(ValueError, match="'add'"):
        gg.ops.defop("add")(lambda xp, a, b: (a + b, None))
    assert gg.ops.registry["add"] is original


def test_duplicate_user_op_name_is_refused(cube):
    with pytest.raises(ValueError, match="test_cube"):
        gg.ops.defop("test_cube")(lambda xp, x: (x, None))
    assert gg.ops.registry["test_cube"] is cube


def test_user_op_is_callable_in_both_front_ends(bk, cube):
    assert isinstance(cube, gg.ops.Op)
    assert gg.ops.registry["test_cube"] is cube
    dt = bk.float_dtype
    x = gg.Variable(np.array([1.0, 2.0], dt))
    y = cube(x)
    np.testing.assert_array_equal(gg.to_numpy(y), [1.0, 8.0])
    y.sum().backward()
    np.testing.assert_array_equal(gg.to_numpy(x.grad), [3.0, 12.0])

    p = gg.Placeholder((2,), dt, name="p")
    s = gg.sum(cube(p * x))
    assert isinstance(s, gg.Symbol)
    (gx,) = gg.gradients(s, [x], {p: np.array([1.0, -1.0], dt)})
    # d/dx sum((p x)**3) = 3 p**3 x**2
    np.testing.assert_array_equal(gg.to_numpy(gx), [3.0, -12.0])


def test_unregister_removes_the_op():
    @gg.ops.defop("test_temporary")
    def op(xp, x):
        "x;  d/dx = 1"
        return x, None

    assert "test_temporary" in gg.ops.registry
    gg.ops.unregister("test_temporary")
    assert "test_temporary" not in gg.ops.registry
    # the name is free again
    gg.ops.defop("test_temporary")(lambda xp, x: (x, None))
    gg.ops.unregister("test_temporary")


def test_vjp_rule_must_return_one_gradient_per_input():
    @gg.ops.defop("test_bare_vjp")
    def op(xp, x):
        "-x;  d/dx = -1 (the VJP forgets the tuple)"
        return -x, None

    op.defvjp(lambda xp, g, res: -g)
    try:
        with gg.use_backend("numpy"):
            x = gg.Variable(np.array([1.0, 2.0]))
            with pytest.raises(TypeError, match="test_bare_vjp.*tuple"):
                (op(x) * np.array([3.0, 5.0])).sum().backward()
    finally:
        gg.ops.unregister("test_bare_vjp")


def test_op_docs_show_the_math(cube):
    assert "d/dx = s (1 - s)" in gg.sigmoid.__doc__
    assert "d/da = g @ b^T" in gg.matmul.__doc__
    text = pydoc.render_doc(gg.sigmoid)
    assert "d/dx = s (1 - s)" in text
    assert "3 x**2" in pydoc.render_doc(cube)
    assert "sigmoid" in repr(gg.sigmoid) and "d/dx" in repr(gg.sigmoid)
    for name, op in gg.ops.registry.items():
        doc = (op.__doc__ or "").strip()
        assert doc, f"op {name} has no docstring"
        if op.differentiable:
            assert re.search(r"d/d|gradient|\bg\b", doc), f"op {name}'s doc has no derivative"
        else:
            assert "no gradient" in doc, name


# --- to_dot ---------------------------------------------------------------------------------

def _parse_dot(text):
    """Declared node ids and edges of gpugrad's DOT output; checks the outer structure."""
    assert text.startswith("digraph ")
    assert text.rstrip().endswith("}")
    assert text.count("{") == text.count("}") == 1
    assert text.count('"') % 2 == 0
    nodes = dict(re.findall(r'^\s*(\w+) \[label="((?:[^"\\]|\\.)*)"', text, re.MULTILINE))
    edges = re.findall(r"^\s*(\w+) -> (\w+);", text, re.MULTILINE)
    for a, b in edges:
        assert a in nodes and b in nodes, (a, b)
    return nodes, edges


def _tutorial_parts(dt="float32"):
    x = gg.Placeholder((None, 3), dt, name="x")
    W = gg.Variable(np.zeros((3, 2), dt), name="W")
    b = gg.Variable(np.zeros(2, dt), name="b")
    return x, W, b


def test_to_dot_of_a_graph_symbol():
    with gg.use_backend("numpy"):
        x, W, b = _tutorial_parts()
        text = gg.to_dot(gg.sigmoid(x @ W + b))
    nodes, edges = _parse_dot(text)
    for piece in ("sigmoid", "add", "matmul", "Placeholder x", "Variable W", "Variable b"):
        assert piece in text
    assert "sigmoid\\n(None, 2)" in text  # the shape inferred at build
    assert len(nodes) == 6 and len(edges) == 5
    by_label = {label.split("\\n")[0]: key for key, label in nodes.items()}
    want = {("Placeholder x", "matmul"), ("Variable W", "matmul"), ("matmul", "add"),
            ("Variable b", "add"), ("add", "sigmoid")}
    got = {(a, b) for a, b in edges}
    assert got == {(by_label[s], by_label[d]) for s, d in want}


def test_to_dot_of_an_eager_tensor(bk):
    _, W, b = _tutorial_parts(bk.float_dtype)
    xb = gg.asarray(np.ones((4, 3), bk.float_dtype))
    y = gg.sigmoid(xb @ W + b)
    text = gg.to_dot(y)
    nodes, edges = _parse_dot(text)
    for piece in ("sigmoid", "add", "matmul", "Variable W", "Variable b", "(4, 2)"):
        assert piece in text
    assert len(nodes) == 6 and len(edges) == 5


def test_to_dot_shared_nodes_and_scalars():
    with gg.use_backend("numpy"):
        x, W, _ = _tutorial_parts()
        h = x @ W
        text = gg.to_dot(gg.sum(h * h + 2.0, axis=0), name="g")
    assert text.startswith("digraph g {")
    nodes, _ = _parse_dot(text)
    assert sum(1 for label in nodes.values() if label.startswith("matmul")) == 1
    assert "2.0" in text  # the scalar constant


def test_to_dot_quotes_names():
    with gg.use_backend("numpy"):
        W = gg.Variable(np.zeros(2), name='my "W"')
        text = gg.to_dot(gg.sum(W * W))
    nodes, _ = _parse_dot(text)
    assert any('my \\"W\\"' in label for label in nodes.values())
