"""CUDA kernels of the fusion groups (gpugrad/compiler/cuda_group.py), checked on every
machine without a GPU:

- the full source of every group kernel the library forms for the op cases and the benchmark
  models, in float32 and float64, compiles with NVRTC for compute_80 and compute_90 (skipped
  where the ``cuda-check`` extra is absent);
- each kernel's source, read back as Python one element at a time (its C expressions through
  tests/test_cuda_formulas.py's reader), stands in for the group in the fused program and
  gives the unfused program's numbers: the loads (a bias at ``i % tail``), the order of the
  members and the stores are right, not only the syntax (a group with sums, a kernel over
  columns, is read back with its loops: tests/test_cuda_sums.py checks it further);
- the launches a ``small`` and an ``mlp`` training step would make on a device with fusion,
  counted from the programs' structure (computed, not measured).

Tests marked ``gpu`` run the same kernels through CuPy (``ci/gpu-check``)."""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import nn, optim
from gpugrad.compiler import native
from gpugrad.compiler import cuda_group, cuda_program, cuda_update, native_fold

sys.path.insert(0, str(Path(__file__).parent))
import nvrtc  # noqa: E402
from helpers import assert_orders_agree  # noqa: E402
from op_cases import CASES  # noqa: E402
from test_cuda_formulas import _CReader  # noqa: E402

DTYPES = ("float32", "float64")
NVRTC = nvrtc.load()
SMALL = {"sizes": (64, 64, 64, 10), "batch": 32}  # benchmarks/sizes.py's FULL shapes
MLP = {"sizes": (784, 512, 512, 10), "batch": 256}
OPTIMIZERS = {"sgd": lambda ps: optim.SGD(ps, lr=0.1),
              "adam": lambda ps: optim.Adam(ps, lr=0.01)}


@pytest.fixture(autouse=True)
def _numpy_tier_first(monkeypatch):
    """The programs compared and counted are the planned NumPy ones (the first tier), whatever
    GPUGRAD_JIT the suite runs under (``GPUGRAD_JIT=now pytest`` too)."""
    monkeypatch.setenv("GPUGRAD_JIT", "0")


def _programs(root) -> list:
    """Every planned program on ``root``'s schedules."""
    return [p for s in root._schedules.values() for p in s.programs.values()]


def _groups(*roots) -> list:
    """The fusion groups of every planned program on ``roots``' schedules (formed while
    the graphs are alive: a program holds its schedule weakly)."""
    return [g for root in roots for p in _programs(root)
            for _, g in cuda_group.groups_of(p.fused().kernels)]


def case_groups(case, dtype: str) -> list:
    """The fusion groups of an op case's planned programs (its value, and the gradients of
    ``sum(out * out)`` where it is differentiable) at ``dtype``; [] where it does not run."""
    hosts = case.hosts(np.random.default_rng(0), None, float_dtype=dtype)
    phs = [gg.Placeholder(h.shape, h.dtype) for h in hosts]
    feed = dict(zip(phs, hosts))
    floats = [p for p, h in zip(phs, hosts) if h.dtype.kind == "f"]
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            out = case.fn(*phs)
            first = gg.to_numpy(out.eval(feed=feed))
            root = out
            if case.differentiable and floats and first.dtype.kind == "f":
                root = gg.sum(out * out)
                gg.value_and_gradients(root, floats, feed=feed)
    except (TypeError, AttributeError, ValueError, IndexError, FloatingPointError):
        return []
    return _groups(out) + (_groups(root) if root is not out else [])


def mlp_step(cfg: dict, activation: str, opt_name: str, dtype: str, grads_only: bool = False):
    """A cross-entropy MLP's training step (or its gradients) on fixed data, run once so that
    its program is planned: (the loss, the optimizer or None, the feed, the model)."""
    model = nn.MLP(cfg["sizes"], activation=activation, seed=0, dtype=dtype)
    rng = np.random.default_rng(1)
    xs = gg.Placeholder((None, cfg["sizes"][0]), dtype, name="x")
    ys = gg.Placeholder((None,), "int64", name="y")
    loss = nn.cross_entropy(model(xs), ys)
    feed = {xs: rng.standard_normal((cfg["batch"], cfg["sizes"][0])).astype(dtype),
            ys: rng.integers(0, cfg["sizes"][-1], cfg["batch"])}
    if grads_only:
        gg.value_and_gradients(loss, model.parameters(), feed=feed)
        return loss, None, feed, model
    opt = OPTIMIZERS[opt_name](model.parameters())
    opt.minimize(loss, feed=feed)
    return loss, opt, feed, model


def chain(dtype: str, steps: int = 100, n: int = 16):
    """The benchmark's chain: ``y = sigmoid(y * w + 0.1)`` ``steps`` times, its gradients
    with respect to every ``w`` planned: (the loss, the Variables, the feed)."""
    rng = np.random.default_rng(0)
    ws = [gg.Variable(rng.uniform(0.5, 1.5, n).astype(dtype)) for _ in range(steps)]
    y0 = gg.Placeholder((n,), dtype, name="y0")
    y = y0
    for w in ws:
        y = gg.sigmoid(y * w + 0.1)
    loss = gg.sum(y)
    feed = {y0: rng.standard_normal(n).astype(dtype)}
    gg.gradients(loss, ws, feed=feed)
    return loss, ws, feed


def model_groups() -> list:
    """The fusion groups of the benchmark models: the small and mlp MLPs with sigmoid, tanh
    and relu, cross-entropy, SGD and Adam; the small one with gelu, silu and softplus (erf
    and where); the 100-step chain; float32 and float64."""
    groups = []
    for dtype in DTYPES:
        for cfg in (SMALL, MLP):
            for activation in ("sigmoid", "tanh", "relu"):
                for opt_name in OPTIMIZERS:
                    groups += _groups(mlp_step(cfg, activation, opt_name, dtype)[0])
        for activation in ("gelu", "silu", "softplus"):
            groups += _groups(mlp_step(SMALL, activation, "sgd", dtype)[0])
        groups += _groups(chain(dtype)[0])
    return groups


@functools.cache
def all_groups() -> tuple:
    """Every distinct group the library forms for the op cases and the benchmark models
    (planned on NumPy, where programs are lowered and grouped, whatever the backend)."""
    with gg.use_backend("numpy"):
        groups = model_groups()
        for case in CASES:
            for dtype in DTYPES:
                groups += case_groups(case, dtype)
    return tuple({cuda_group.raw_source(g, "K"): g for g in groups}.values())


# --- NVRTC -----------------------------------------------------------------------------------

@pytest.mark.skipif(NVRTC is None, reason="NVRTC is not installed (pip install -e '.[cuda-check]'"
                    " brings the nvidia-cuda-nvrtc-cu12 wheel)")
@pytest.mark.parametrize("arch", ["compute_80", "compute_90"])
def test_every_group_kernel_compiles_with_nvrtc(arch):
    groups = all_groups()
    dtypes = {g.dtype.name for g in groups}
    kinds = {g.kind(s) for g in groups for _, s in g.inputs}
    assert len(groups) >= 100 and dtypes == set(DTYPES) and {"full", "tail", "one"} <= kinds
    assert sum(1 for g in groups if g.sums) >= 20  # bias gradients: kernels over columns
    names = [f"K{j}" for j in range(len(groups))]
    for start in range(0, len(groups), 64):  # 64 kernels a translation unit
        chunk = list(zip(names, groups))[start:start + 64]
        rc, log = nvrtc.compile_ptx(NVRTC, cuda_group.module_source(chunk), f"groups{start}",
                                    (f"--gpu-architecture={arch}", *cuda_group.OPTIONS))
        assert rc == 0, f"kernels {start}..{start + len(chunk) - 1} ({arch}): {log}"


def test_the_elementwise_form_and_the_full_source_say_the_same():
    """The ElementwiseKernel's parameters are the full source's, in order, and its operation
    is the full source's loop body, statement by statement. A group with sums has no
    ElementwiseKernel; its kernel's row loop runs the same statements as the kernel of the
    same group without its sums (its members and outputs)."""
    groups = all_groups()
    assert any(g.sums for g in groups) and any(not g.sums for g in groups)
    for g in groups:
        raw = cuda_group.raw_source(g, "K")
        if g.sums:
            with pytest.raises(ValueError, match="raw kernel only"):
                cuda_group.elementwise(g, "K")
            assert "atomicAdd" not in raw and raw.count("    for (long long ") == 2
        src = cuda_group.elementwise(dataclasses.replace(g, sums=[]), "K")
        params = re.search(r"\((.*), long long n\)", raw.splitlines()[0]).group(1).split(", ")
        ins = [p.split()[1] for p in src.in_params.split(", ")]
        outs = [p.split()[-1] for p in src.out_params.split(", ")] if src.out_params else []
        names = [p.split()[-1] for p in params]
        assert [n.replace("p_", "v_", 1) for n in names[:len(ins)]] == ins
        assert [n.replace("p_", "o_", 1) for n in names[len(ins):]] == outs + [
            cuda_group.sum_name(m) for m, _, _ in g.sums]
        body = [line.strip() for line in raw.splitlines()]
        at = [body.index(s.strip() + ";") for s in src.operation.split(";") if s.strip()]
        assert at == sorted(at) and at[-1] - at[0] == len(at) - 1


# --- the kernels read back as Python, standing in for the groups -------------------------------

_GRID = re.compile(r"^for \(long long (\w) = blockIdx\.x .*; \1 < (\w+)$")
_ROWS = re.compile(r"^for \(long long i = j; i < n; i \+= (\d+)\) \{$")


def host_kernel(source: str):
    """A callable running ``source`` (a :func:`cuda_group.raw_source`) on host arrays, one
    element at a time, with the argument convention of the native tier's kernels (inputs,
    a single element or a number as a Python float, then outputs and sums; returns False: a
    CUDA kernel reports no overflow). Its loops are the source's own: the grid-stride loop
    over the elements ``i`` (or, with sums, the columns ``j``) as one thread after another,
    a column's loop over its rows in order. The sums are filled with NaN first: the kernel
    must store every element of them itself."""
    lines = source.strip().splitlines()
    head = lines[0]
    params = head[head.index("(") + 1:head.rindex(")")].split(", ")[:-1]
    ctype = head.split("(")[1].split()[1].rstrip("*")
    body, k = [], 2
    while k < len(lines) - 1:
        line = lines[k]
        indent, stmt = line[:len(line) - len(line.lstrip())], line.strip().rstrip(";")
        k += 1
        if stmt in ("}", "#pragma unroll 1", "#pragma unroll 4") or stmt.startswith("T o_"):
            continue
        grid, rows = _GRID.match(stmt), _ROWS.match(stmt)
        if grid:  # ``for (i = blockIdx.x ...; i < n;`` and its stride on the next line
            assert lines[k].strip().endswith(") {")
            k += 1
            stmt = f"for {grid.group(1)} in range({grid.group(2)}):"
        elif rows:
            stmt = f"for i in range(j, n, {rows.group(1)}):"
        elif stmt.startswith("T s_"):  # a column's sum, from zero: ``T s_x = (T)0``
            stmt = stmt[len("T "):].replace("(T)0", "T(0)")
        elif stmt.startswith("const T "):
            name, expr = stmt[len("const T "):].split(" = ", 1)
            if not expr.startswith("p_"):
                expr = _CReader(expr).expr()
            stmt = f"{name} = {expr}"
        body.append(indent + stmt)
    names = [p.split()[-1] for p in params]
    code = "\n".join([f"def kernel({', '.join(names)}, n):", *body])
    T = {"float": np.float32, "double": np.float64}[ctype]
    scope = {"np": np, "math": math, "T": T, "inf": np.inf}
    exec(compile(code, "<kernel>", "exec"), scope)  # noqa: S102  (the generator's own C)

    def run(*args):
        flat = [np.asarray(a, T).reshape(-1) if "*" in p else T(a)
                for p, a in zip(params, args)]
        for p, a in zip(params, flat):
            if p.split()[-1].startswith("q_"):  # a sum: nobody zeroes it
                a[...] = np.nan
        with np.errstate(all="ignore"):
            sized = [a for p, a in zip(params, flat) if "*" in p
                     and not p.split()[-1].startswith("q_")]
            scope["kernel"](*flat, max(a.size for a in sized))
        return False
    return run


def _run(prog, sched, feed: dict, opt):
    feeds = [feed[ph] for _, ph in sched.placeholders]
    datas = [t.data.copy() for _, t in sched.tensors]  # an update writes into them
    value, grads = prog(feeds, datas, opt)
    return [np.array(v) for v in (value, *grads) if v is not None] + datas


def _stand_ins(root) -> tuple:
    """(the planned program of ``root``, its fused program with each group's CUDA source
    read back as Python in the group's place, the schedule)."""
    (sched,) = [s for s in root._schedules.values() if s.programs]
    (prog,) = sched.programs.values()
    fused = prog.fused()
    groups = cuda_group.groups_of(fused.kernels)
    assert groups
    fused.fn.__globals__.update(
        {n: host_kernel(cuda_group.raw_source(g, n)) for n, g in groups})
    others = [(n, k) for n, k in fused.kernels if (n, k) not in groups]
    if others:  # the update and op kernels: the native tier's own (numba)
        pytest.importorskip("numba")
        module = native.load(native.module_source(others))
        fused.fn.__globals__.update({n: getattr(module, n) for n, _ in others})
    return prog, fused, sched


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", "gelu", "softplus"])
def test_group_kernels_stand_in_for_their_groups_in_a_training_step(numpy_backend, activation,
                                                                    dtype):
    loss, opt, feed, _ = mlp_step({"sizes": (16, 8, 8, 4), "batch": 4}, activation, "sgd",
                                  dtype)
    prog, fused, sched = _stand_ins(loss)
    want, got = _run(prog, sched, feed, opt), _run(fused, sched, feed, opt)
    for a, b in zip(got, want):
        assert_orders_agree(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_group_kernels_stand_in_for_their_groups_in_the_chain(numpy_backend, dtype):
    loss, _, feed = chain(dtype, steps=30, n=5)
    prog, fused, sched = _stand_ins(loss)
    assert len(cuda_group.groups_of(fused.kernels)) >= 2  # a run is cut at fuse.MAX_MEMBERS
    want, got = _run(prog, sched, feed, None), _run(fused, sched, feed, None)
    for a, b in zip(got, want):
        assert_orders_agree(a, b)


def test_a_stand_in_reads_a_bias_and_a_single_element_where_the_group_says():
    from gpugrad.compiler.fuse import Group

    g = Group([("y", ("add", ("multiply", ("name", "x"), ("name", "s")), ("name", "b")))],
              (3, 4), np.dtype("float64"), [("x", (3, 4)), ("s", (1, 1)), ("b", (4,))], ["y"])
    x, b = np.arange(12.0).reshape(3, 4), np.array([1.0, 2.0, 3.0, 4.0])
    y = np.empty((3, 4))
    host_kernel(cuda_group.raw_source(g, "K"))(x, 0.5, b, y)
    np.testing.assert_array_equal(y, x * 0.5 + b)


UPDATERS = [lambda ps: optim.SGD(ps, lr=0.1), lambda ps: optim.Adam(ps, lr=0.01),
            lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1),
            lambda ps: optim.AdamW(ps, lr=0.01), lambda ps: optim.RMSprop(ps, lr=0.01),
            lambda ps: optim.Adagrad(ps, lr=0.1)]


@pytest.mark.skipif(NVRTC is None, reason="NVRTC is not installed")
@pytest.mark.parametrize("arch", ["compute_80", "compute_90"])
def test_the_update_kernel_compiles_with_nvrtc_beside_the_groups(arch):
    """The optimizer's update of every parameter (gpugrad/compiler/cuda_update.py), from
    each optimizer form's CUDA body, in one translation unit with a program's groups."""
    groups = all_groups()
    for dtype in DTYPES:
        model = nn.MLP((5, 4, 3), seed=0, dtype=dtype)
        sizes = [p.data.size for p in model.parameters()]
        for j, make in enumerate(UPDATERS):
            form = make(model.parameters()).lowering().later
            kernel = cuda_update.Update.of_form(form, sizes, dtype)
            assert kernel.fits() and "P = " in kernel.body
            unit = [(f"K{k}", g) for k, g in enumerate(groups[:2])] + [("NU", kernel)]
            rc, log = nvrtc.compile_ptx(NVRTC, cuda_program.module_source(unit), f"update{j}",
                                        (f"--gpu-architecture={arch}", *cuda_group.OPTIONS))
            assert rc == 0, f"update kernel {j} ({dtype}, {arch}): {log}"


# --- launches per training step (computed from the programs, not measured) --------------------

@pytest.mark.parametrize("cfg", [SMALL, MLP], ids=["small", "mlp"])
def test_launches_per_step_with_fusion(numpy_backend, cfg):
    """A 3-layer MLP's SGD step: 11 BLAS calls (3 forward, 8 backward: no gradient for x),
    less the bias sums a group takes, one kernel per fusion group, one update kernel and
    the cross-entropy's two, and fewer launches than the unfused program's."""
    loss, *_ = mlp_step(cfg, "sigmoid", "sgd", "float32")
    (prog,) = _programs(loss)
    fused = prog.fused()
    got, before = cuda_group.launches(fused.source), cuda_group.launches(prog.source)
    sums = sum(len(g.sums) for _, g in cuda_group.groups_of(fused.kernels))
    folded = [k.fold for _, k in fused.kernels if isinstance(k, native_fold.Folded)]
    sums += sum(len(f.sums) for f in folded)  # (the last one joins the loss's gradient)
    assert before["blas"] == 11 and got["blas"] == 11 - sums == 8  # (bias sums join a loop)
    assert len(folded) == 2  # the logits' bias add joins the loss's kernel too
    assert got["groups"] == len(cuda_group.groups_of(fused.kernels)) >= 4
    assert got["total"] < before["total"]
    assert got["native"] == 3  # the update (NU) and the cross-entropy's two (NX0, NX1)
    assert got["total"] == got["blas"] + got["groups"] + got["native"] + got["other"]


# --- on a device ---------------------------------------------------------------------------

def _cupy():
    try:
        import cupy

        return cupy if cupy.cuda.runtime.getDeviceCount() > 0 else None
    except Exception:
        return None


@pytest.mark.gpu
@pytest.mark.skipif(_cupy() is None, reason="needs CuPy and a CUDA GPU")
@pytest.mark.parametrize("dtype", DTYPES)
def test_group_kernels_run_on_cupy_as_on_the_host(numpy_backend, dtype):
    """Each group of a step through CuPy, as the ElementwiseKernel (a group without sums)
    and as the raw kernel launched as a device program launches it (a group with sums over
    its columns), against its source read back on the host: a sum to the same bits (the
    same order of adds; the summed values are products and sums, rounded alike)."""
    cp = _cupy()
    loss, *_ = mlp_step(SMALL, "sigmoid", "sgd", dtype)
    (prog,) = _programs(loss)
    rng = np.random.default_rng(0)
    groups = cuda_group.groups_of(prog.fused().kernels)
    assert any(g.sums for _, g in groups)
    for name, g in groups:
        ins = [rng.standard_normal(s).astype(dtype) if s is not None else
               np.dtype(dtype).type(0.5) for _, s in g.inputs]  # a number goes by value
        dev = [cp.asarray(a) if isinstance(a, np.ndarray) else a for a in ins]
        want = [np.empty(g.shape, dtype) for _ in g.outputs]
        want_sums = [np.empty(s, dtype) for _, _, s in g.sums]
        host_kernel(cuda_group.raw_source(g, name))(*ins, *want, *want_sums)
        if not g.sums:
            ew = cp.ElementwiseKernel(*cuda_group.elementwise(g, name),
                                      options=cuda_group.OPTIONS)
            outs = [cp.empty(g.shape, dtype) for _ in g.outputs]
            ew(*dev, *outs)
            for a, w in zip(outs, want):
                assert_orders_agree(cp.asnumpy(a), w)
        run = cuda_program._load_raw(cp, [(name, g)])[name]
        routs = [cp.empty(g.shape, dtype) for _ in g.outputs]
        sums = [cp.full(s, cp.nan, dtype) for _, _, s in g.sums]
        run((*dev, *routs, *sums), math.prod(g.shape))
        for b, w in zip(routs, want):
            assert_orders_agree(cp.asnumpy(b), w)
        for b, w in zip(sums, want_sums):
            np.testing.assert_array_equal(cp.asnumpy(b), w)


@pytest.mark.gpu
@pytest.mark.skipif(_cupy() is None, reason="needs CuPy and a CUDA GPU")
def test_every_group_kernel_loads_with_cupy():
    """CuPy's own compile (NVRTC for the device's architecture) of every group kernel."""
    cp = _cupy()
    groups = all_groups()
    names = [f"K{j}" for j in range(len(groups))]
    for start in range(0, len(groups), 64):
        chunk = list(zip(names, groups))[start:start + 64]
        module = cp.RawModule(code=cuda_group.module_source(chunk), options=cuda_group.OPTIONS)
        for name, _ in chunk:
            assert module.get_function(cuda_group.kernel_name(name)) is not None


def launch_table() -> list:
    """Rows (model, activation, optimizer, launches of the unfused program, of the CuPy
    device program) of the benchmark MLPs' float32 training steps, computed from their
    programs (the device program built over NumPy, tests/test_cuda_program.py)."""
    from test_cuda_program import host_device  # (it imports this module)

    rows = []
    with gg.use_backend("numpy"):
        for model, cfg in (("small", SMALL), ("mlp", MLP)):
            for activation in ("sigmoid", "tanh", "relu"):
                for opt_name in OPTIMIZERS:
                    loss = mlp_step(cfg, activation, opt_name, "float32")[0]
                    (prog,) = _programs(loss)
                    dev = prog.rebuild(device=host_device())
                    assert dev.tier == "cuda"
                    rows.append((model, activation, opt_name, cuda_group.launches(prog.source),
                                 cuda_group.launches(dev.source)))
    return rows


if __name__ == "__main__":  # ci/gpu-check prints this table (computed, not measured)
    print("launches per float32 training step, computed from the programs (not measured):")
    print("(unfused: the planned NumPy program's array calls; on CuPy: the device program's "
          "kernels: fusion groups, own = the loss's two and the update, BLAS, other)")
    print(f"{'model':<6} {'act':<8} {'opt':<5} {'unfused':>7} {'groups':>6} {'own':>4} "
          f"{'blas':>4} {'other':>5} {'cupy':>5}")
    for model, act, opt_name, before, got in launch_table():
        print(f"{model:<6} {act:<8} {opt_name:<5} {before['total']:>7} {got['groups']:>6} "
              f"{got['native']:>4} {got['blas']:>4} {got['other']:>5} {got['total']:>5}")
    print(f"group kernels compiled by the NVRTC test: {len(all_groups())} per architecture")
