"""The CuPy kernels generated from the ops' scalar formulas (gpugrad/ops/cuda.py), checked on
every machine: each kernel's CUDA expression, read back as Python scalar code, gives the
portable rule's numbers on float64 edge values (the formulas and the rules agree, and the
translation keeps NumPy's semantics); and the full source of every kernel compiles with NVRTC
for compute_80 and compute_90 (skipped where the ``cuda-check`` extra is absent). On a GPU,
tests/test_cuda.py runs the same kernels against the rules."""

from __future__ import annotations

import itertools
import math
import re
import sys

import numpy as np
import pytest

import gpugrad as gg
from gpugrad.ops import cuda

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
import nvrtc  # noqa: E402

GENERATED = sorted(op.name for op in gg.registry.values() if cuda.generated(op) is not None)
TINY = np.finfo(np.float64).tiny
EDGES = [0.0, -0.0, 1.0, -1.0, 0.5, -2.5, 3.0, 1e-300, -1e-300, 1e300, -1e300, 700.0,
         -700.0, 720.0, -720.0, 1e5, -1e5, np.inf, -np.inf, np.nan]


# --- the CUDA subset the generator writes, read back as Python -----------------------------

_TOKEN = re.compile(r"\s*(\d+\.\d*(?:e[-+]?\d+)?|\d+(?:e[-+]?\d+)?|inf|[A-Za-z_]\w*|\|\||&&|"
                    r"==|!=|>=|<=|[-+*/()?:<>,])")
_FUNCS = {"exp": "np.exp", "log": "np.log", "log1p": "np.log1p", "sqrt": "np.sqrt",
          "tanh": "np.tanh", "fabs": "np.fabs", "erf": "math.erf", "isinf": "np.isinf"}


class _CReader:
    """A recursive-descent reader of C expressions (ternary, ``|| && == != < <= > >=``,
    ``+ - * /``, unary minus, ``(T)`` casts, calls) that writes the same expression in
    Python over NumPy float64 scalars."""

    def __init__(self, text: str) -> None:
        self.toks = _TOKEN.findall(text)
        assert "".join(self.toks) == re.sub(r"\s+", "", text), text
        self.k = 0

    def peek(self) -> str | None:
        return self.toks[self.k] if self.k < len(self.toks) else None

    def take(self, want: str | None = None) -> str:
        tok = self.toks[self.k]
        assert want is None or tok == want, (tok, want)
        self.k += 1
        return tok

    def expr(self) -> str:
        cond = self.binary(0)
        if self.peek() == "?":
            self.take("?")
            a = self.expr()
            self.take(":")
            b = self.expr()
            return f"(({a}) if ({cond}) else ({b}))"
        return cond

    LEVELS = [("||",), ("&&",), ("==", "!="), ("<", "<=", ">", ">="), ("+", "-"), ("*", "/")]
    PY = {"||": "or", "&&": "and"}

    def binary(self, level: int) -> str:
        if level == len(self.LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while self.peek() in self.LEVELS[level]:
            op = self.take()
            right = self.binary(level + 1)
            left = f"({left} {self.PY.get(op, op)} {right})"
        return left

    def unary(self) -> str:
        tok = self.peek()
        if tok == "-":
            self.take()
            return f"(-{self.unary()})"
        if tok == "(" and self.toks[self.k + 1:self.k + 3] == ["T", ")"]:
            self.k += 3
            return f"T({self.unary()})"
        if tok == "(":
            self.take("(")
            inner = self.expr()
            self.take(")")
            return f"({inner})"
        self.take()
        if self.peek() == "(":
            self.take("(")
            arg = self.expr()
            self.take(")")
            return f"{_FUNCS[tok]}({arg})"
        return tok


def run_c(source: cuda.Source, env: dict) -> np.ndarray:
    """The kernel's operation on float64 host arrays, one element at a time, as C would."""
    target, expr = source.operation.rstrip(";").split(" = ", 1)
    code = compile(_CReader(expr).expr(), source.name, "eval")
    names = cuda.arg_names(source.in_params)
    cols = np.broadcast_arrays(*(np.asarray(env[n], np.float64) for n in names))
    out = np.empty(cols[0].shape)
    with np.errstate(all="ignore"):
        for idx in np.ndindex(out.shape):
            scope = {"np": np, "math": math, "T": np.float64, "inf": np.inf,
                     **{f"v_{n}": np.float64(c[idx]) for n, c in zip(names, cols)}}
            out[idx] = eval(code, scope)  # noqa: S307  (the generator's own C, read back)
    return out


def _points(op: gg.ops.Op) -> list:
    n = len(cuda.generated(op).inputs)
    rng = np.random.default_rng(len(op.name))
    if n == 1:
        return [np.concatenate([EDGES, rng.standard_normal(40) * 4])]
    pairs = np.array(list(itertools.product(EDGES, repeat=2))).T
    rand = rng.standard_normal((2, 60)) * 4
    rand[1, :10] = rand[0, :10]  # ties
    return list(np.concatenate([pairs, rand], axis=1))


def _saved(op: gg.ops.Op, arrays: list) -> tuple:
    """The portable forward on NumPy, and the names it saves (as the fast path learns them)."""
    gen = cuda.generated(op)
    with np.errstate(all="ignore"):
        out, res = op.forward(np, *arrays)
    return out, res, cuda.saved_names(gen, tuple(arrays), out, res)


@pytest.mark.parametrize("name", GENERATED)
def test_generated_kernels_give_the_portable_rules_numbers(name):
    op = gg.registry[name]
    gen = cuda.generated(op)
    arrays = [a.copy() for a in _points(op)]
    out, res, layout = _saved(op, arrays)
    assert layout not in (None, False), f"{name}: the rule saves something besides its arrays"
    env = dict(zip(gen.inputs, arrays), out=out)
    # erf: C's (math.erf here) and the rule's (erf_value, within 2e-15) differ by an ulp or
    # two, which 1 + erf(x) (gelu) makes large relative to a result near 0
    atol = 1e-14 if "erf" in op.scalar[0] else TINY
    np.testing.assert_allclose(run_c(gen.forward, env), out, rtol=1e-12, atol=atol,
                               equal_nan=True, err_msg=f"{name} forward")
    g = np.random.default_rng(1).standard_normal(out.shape)
    g[:3] = (1.0, -1.0, 0.5)
    with np.errstate(all="ignore"):
        want = op.grads(np, g, res, (True,) * len(arrays), {})
    saved = frozenset(layout if isinstance(layout, tuple) else (layout,))
    for k, w in enumerate(want):
        src = gen.vjp(k, saved)
        assert src is not None, f"{name}: no kernel for input {k}'s gradient"
        got = (dict(env, g=g)[src] if isinstance(src, str)
               else run_c(src, dict(env, g=g)))
        np.testing.assert_allclose(np.broadcast_to(got, np.shape(w)), w, rtol=1e-12,
                                   atol=atol, equal_nan=True, err_msg=f"{name} vjp {k}")


@pytest.mark.parametrize("name", ["maximum", "minimum"])
def test_maximum_and_minimum_keep_numpys_nan_and_signed_zero(name):
    gen = cuda.generated(gg.registry[name])
    a, b = np.array(list(itertools.product([0.0, -0.0, np.nan, 1.0, -np.inf], repeat=2))).T
    got = run_c(gen.forward, {"a": a, "b": b})
    want = getattr(np, name)(a, b)
    np.testing.assert_array_equal(got, want)  # NaN where NumPy has NaN (CUDA's fmax: not)
    assert (np.signbit(got) == np.signbit(want)).all()


def test_sign_is_numpys():
    tree = cuda.parse("sign(x)")
    src = cuda.Source("T v_x", "T v_r", f"v_r = {cuda.cuda(tree)};", "sign")
    x = np.array([0.0, -0.0, 2.0, -3.0, np.inf, -np.inf, np.nan])
    got = run_c(src, {"x": x})
    np.testing.assert_array_equal(got, np.sign(x))
    assert (np.signbit(got) == np.signbit(np.sign(x))).all()


def test_every_elementwise_op_with_parsing_formulas_gets_a_cupy_path():
    assert {"sigmoid", "tanh", "relu", "silu", "exp", "maximum", "divide"} <= set(GENERATED)
    for name in GENERATED:
        op = gg.registry[name]
        assert "cupy" in op.fast_forward, name
        assert ("cupy" in op.fast_vjps) == (op.vjps is not None), name
    assert {"erf", "gelu"} <= set(GENERATED)
    # softplus's formula names its static parameters (beta, threshold): its rule runs
    assert "cupy" not in gg.registry["softplus"].fast_forward


def test_where_is_numpys():
    """``where(c, a, b)``: ``a`` where the comparison holds (not at NaN), else ``b``."""
    tree = cuda.parse("where(x * 2 > 1, x, -x)")
    src = cuda.Source("T v_x", "T v_r", f"v_r = {cuda.cuda(tree)};", "where")
    x = np.array([0.0, -0.0, 0.5, 0.75, -3.0, np.inf, -np.inf, np.nan])
    with np.errstate(invalid="ignore"):
        want = np.where(x * 2 > 1, x, -x)
    np.testing.assert_array_equal(run_c(src, {"x": x}), want)


def test_a_user_ops_formulas_give_it_a_cupy_path():
    @gg.ops.defop("cube_cuda_example")
    def cube(xp, x):
        return x * x * x, x

    cube.defvjp(lambda xp, g, x: (g * 3.0 * x * x,))
    try:
        assert "cupy" not in cube.fast_forward
        cube.defscalar("x * x * x", "g * 3 * x * x")
        assert "cupy" in cube.fast_forward and "cupy" in cube.fast_vjp
        assert cuda.generated(cube).forward.operation == "v_out = ((v_x * v_x) * v_x);"
    finally:
        gg.ops.unregister("cube_cuda_example")


# --- NVRTC -----------------------------------------------------------------------------------

def all_sources() -> list:
    """Every kernel source the generated fast paths can build for the registered ops."""
    sources = []
    for name in GENERATED:
        op = gg.registry[name]
        gen = cuda.generated(op)
        arrays = [np.linspace(1.0, 2.0, 3) + k for k in range(len(gen.inputs))]
        layout = _saved(op, arrays)[2]
        saved = frozenset(layout if isinstance(layout, tuple) else (layout,))
        sources.append(gen.forward)
        sources += [s for k in range(len(gen.inputs))
                    if isinstance(s := gen.vjp(k, saved), cuda.Source)]
    return sources


NVRTC = nvrtc.load()


@pytest.mark.skipif(NVRTC is None, reason="NVRTC is not installed (pip install -e '.[cuda-check]'"
                    " brings the nvidia-cuda-nvrtc-cu12 wheel)")
@pytest.mark.parametrize("arch", ["compute_80", "compute_90"])
def test_every_generated_kernel_compiles_with_nvrtc(arch):
    sources = all_sources()
    assert len(sources) >= 30
    for src in sources:
        for ctype in ("float", "double"):
            rc, log = nvrtc.compile_ptx(NVRTC, cuda.raw_source(src, ctype), src.name,
                                        (f"--gpu-architecture={arch}", *cuda.OPTIONS))
            assert rc == 0, f"{src.name} ({ctype}, {arch}): {log}"


@pytest.mark.skipif(NVRTC is None, reason="NVRTC is not installed")
def test_nvrtc_check_catches_a_broken_kernel():
    src = cuda.Source("T v_x", "T v_r", "v_r = erf_missing(v_x);", "broken")
    rc, log = nvrtc.compile_ptx(NVRTC, cuda.raw_source(src, "float"), "broken",
                                ("--gpu-architecture=compute_80",))
    assert rc != 0 and "erf_missing" in log


# --- the fast path's plumbing, with the kernels run as Python on the CPU ---------------------

@pytest.fixture
def host_kernels(monkeypatch):
    """The generated fast paths with NumPy arrays standing in for CuPy's and each kernel run
    by :func:`run_c`."""
    def fake(src):
        return lambda *args: run_c(src, dict(zip(cuda.arg_names(src.in_params), args)))

    monkeypatch.setattr(cuda, "is_cupy_array", lambda a: isinstance(a, np.ndarray))
    monkeypatch.setattr(cuda, "kernel", fake)


@pytest.mark.parametrize("name", GENERATED)
def test_the_fast_path_saves_what_the_rule_saves_and_reads_it_back(host_kernels, name):
    op = gg.registry[name]
    fast = cuda._FastPath(op, cuda.generated(op))
    arrays = [np.linspace(-2.0, 3.0, 7) * (k + 1) + 0.25 for k in range(len(fast.gen.inputs))]
    if name in ("log", "log1p", "sqrt"):
        arrays = [np.abs(a) for a in arrays]
    out, res = fast.forward(np, *arrays)
    assert fast.layout not in (None, False)
    want_out, want_res = op.forward(np, *arrays)
    np.testing.assert_allclose(out, want_out, rtol=1e-12)
    # the fast forward saves the rule's own arrays: the portable VJP reads them as its own
    g = np.cos(np.arange(out.size, dtype=np.float64))
    needs = (True,) * len(arrays)
    for a, b in zip(op.grads(np, g, res, needs, {}), op.grads(np, g, want_res, needs, {})):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    got = ([fast.vjp_rule(k)(np, g, res) for k in range(len(arrays))] if op.vjps is not None
           else fast.vjp(np, g, res))
    for a, b in zip(got, op.grads(np, g, want_res, needs, {})):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-300)


def test_the_fast_path_leaves_what_it_cannot_run_to_the_rule(host_kernels, monkeypatch):
    op = gg.registry["multiply"]
    fast = cuda._FastPath(op, cuda.generated(op))
    monkeypatch.setattr(cuda, "kernel", lambda src: pytest.fail(f"{src.name} ran"))
    x32, x64 = np.ones(3, np.float32), np.ones(3)
    for args in ((x64, 2.0), (x32, x64), (np.ones(3, np.complex128), x64),
                 (np.ones(3, np.int64), np.ones(3, np.int64))):
        out, _ = fast.forward(np, *args)
        np.testing.assert_array_equal(out, op.forward(np, *args)[0])


def test_the_engine_runs_the_generated_paths_as_it_runs_the_rules(host_kernels, monkeypatch):
    rng = np.random.default_rng(0)
    host = [rng.standard_normal((5, 4)), rng.standard_normal((4, 4)), rng.standard_normal(4)]

    def grads():
        x, w, b = (gg.Variable(h.copy()) for h in host)
        h = gg.silu(x @ w) * gg.sigmoid(b) + gg.tanh(gg.maximum(x, b) - gg.relu(b))
        loss = gg.sum(gg.log1p(gg.exp(-gg.abs(h))) / gg.square(h))
        loss.backward()
        return [t.grad.data for t in (x, w, b)]

    want = grads()
    fast_paths = []
    for name in GENERATED:  # the generated paths stand in for NumPy's own
        op = gg.registry[name]
        fast = cuda._FastPath(op, cuda.generated(op))
        fast_paths.append(fast)
        monkeypatch.setitem(op.fast_forward, "numpy", fast.forward)
        if op.vjps is not None:
            monkeypatch.setitem(op.fast_vjps, "numpy", tuple(
                fast.vjp_rule(k) for k in range(len(op.vjps))))
        else:
            monkeypatch.setitem(op.fast_vjp, "numpy", fast.vjp)
    for a, b in zip(grads(), want):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    used = {f.op.name for f in fast_paths if f.layout not in (None, False)}
    assert {"silu", "sigmoid", "tanh", "maximum", "relu", "log1p", "exp", "abs", "square",
            "multiply", "add", "subtract", "divide", "negative"} <= used
