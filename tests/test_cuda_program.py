"""The device program (gpugrad/compiler/cuda_program.py): a CuPy program's fusion groups as
CUDA kernels.

On every machine, without a GPU: the program ``build`` makes for a device, built over NumPy
arrays with each group's kernel run as its complete CUDA source read back as Python, one
element at a time (tests/test_cuda_groups.py's ``host_kernel``). It is the code path of a
CuPy program: the same lowering and grouping, the instruction writer, the device buffers,
the argument checks of each launch, the vectors of ones, no error state, the fallback
where the kernels do not compile; only ``cupy`` itself, NVRTC's compile for a device and
the device's arithmetic (its ``exp`` and ``tanh``) are not exercised here. A bias's
gradient is summed by its column's thread, row after row in order (no atomic adds): the
same order on a device as here. The numbers are compared with the planned NumPy program's:
float64 to 1e-12 relative, float32 in ulps. (Groups with sums: tests/test_cuda_sums.py.)

Tests marked ``gpu`` run the real CuPy fused step (``ci/gpu-check``)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

import gpugrad as gg
from gpugrad.compiler import cuda_group, cuda_program, cuda_update
from gpugrad.compiler.fuse import Group

sys.path.insert(0, str(Path(__file__).parent))
from conftest import HAS_GPU  # noqa: E402
from cuda_block import host_block_kernel  # noqa: E402
from helpers import assert_orders_agree  # noqa: E402
from test_cuda_groups import (DTYPES, SMALL, _programs, _run, chain,  # noqa: E402
                              host_kernel, mlp_step)

MLP_SHAPED = {"sizes": (24, 16, 16, 6), "batch": 8}  # the mlp's layers, small enough to read
CASES = [(SMALL, "sigmoid", "sgd"), (SMALL, "tanh", "adam"), (MLP_SHAPED, "relu", "sgd"),
         (MLP_SHAPED, "sigmoid", "adam")]
IDS = ["small-sigmoid-sgd", "small-tanh-adam", "mlp-relu-sgd", "mlp-sigmoid-adam"]


@pytest.fixture(autouse=True)
def _numpy_tier_first(monkeypatch):
    """The reference is the planned NumPy program (the first tier) whatever GPUGRAD_JIT the
    suite runs under (``GPUGRAD_JIT=now pytest`` too); a test that wants another sets it."""
    monkeypatch.setenv("GPUGRAD_JIT", "0")


ADAM_ULPS = 16
"""Adam divides each update by its gradient's own size, so a gradient's last bits move a
float32 parameter by more ulps: the eager step (``minimize(compiled=False)``) and the planned
NumPy program differ by up to 7.25 ulps on these cases (2026-12-06)."""


def host_device(loaded: list | None = None, ran: list | None = None) -> cuda_program.Device:
    """A device over NumPy: each kernel is its CUDA source read back as Python (``loaded``
    collects the kernels it was given, ``ran`` the names of those launched)."""
    def load(kernels):
        if loaded is not None:
            loaded.extend(kernels)
        return {n: _counted(ran, n, _runner(host_kernel(cuda_group.raw_source(g, n)))
                            if isinstance(g, Group) else
                            _update_runner(host_update(g.source(n)))
                            if isinstance(g, cuda_update.Update) else
                            host_block_kernel(cuda_program.source(n, g)))
                for n, g in kernels}
    return cuda_program.Device(np, load)


def _counted(ran, name, run):
    def counted(args, n):
        if ran is not None:
            ran.append(name)
        run(args, n)
    return counted


def host_update(source: str):
    """The optimizer's update kernel (cuda_update.Update.source) read back as Python: a
    function of its arguments (pointers as flat arrays, doubles as floats) and ``n``, one
    element at a time in the parameters' type, through the source's own offsets."""
    lines = source.strip().splitlines()
    head = lines[0]
    params = head[head.index("(") + 1:head.rindex(")")].split(", ")
    ctype = params[0].split()[0].rstrip("*")
    body = []
    for line in lines[5:-2]:
        indent, stmt = line[:len(line) - len(line.lstrip())], line.strip().rstrip(";")
        if stmt == "}":
            continue
        stmt = re.sub(r"^\} else if \((.*)\) \{$", r"elif \1:", stmt)
        stmt = re.sub(r"^if \((.*)\) \{$", r"if \1:", stmt).replace("} else {", "else:")
        stmt = re.sub(r"^(const long long |const T |T )", "", stmt)
        stmt = re.sub(r"\(T\)(\w+)", r"T(\1)", stmt).replace("sqrt(", "np.sqrt(")
        body.append(indent + stmt)
    names = [p.split()[-1] for p in params]
    code = "\n".join([f"def kernel({', '.join(names)}):", "    for i in range(n):", *body])
    T = {"float": np.float32, "double": np.float64}[ctype]
    scope = {"np": np, "T": T}
    exec(compile(code, "<update kernel>", "exec"), scope)  # noqa: S102  (the generator's C)

    def run(*args):
        flat = [a.reshape(-1) if "*" in p else int(a) if p.startswith("long long") else
                float(a) for p, a in zip(params, args)]
        assert all(a.dtype == T and a.flags.c_contiguous for a in flat
                   if isinstance(a, np.ndarray))
        with np.errstate(all="ignore"):
            scope["kernel"](*flat)
    return run


def _update_runner(kernel):
    def run(args, n):
        kernel(*args, n)
    return run


def _runner(kernel):
    def run(args, n):
        assert all(a.size in (1, n) or a.ndim for a in args if isinstance(a, np.ndarray))
        kernel(*args)
    return run


def on_device(loss, dev: cuda_program.Device):
    """Put the device program of ``loss``'s one planned program in its place (as the native
    tier switches a program); returns it."""
    (prog,) = _programs(loss)
    new = prog.rebuild(device=dev)
    prog.fn, prog.buffers, prog.source, prog.kernels = new.fn, new.buffers, new.source, \
        new.kernels
    prog.frames, prog.lead, prog.tier = new.frames, new.lead, new.tier
    return prog


def train(cfg: dict, activation: str, opt_name: str, dtype: str, steps: int, dev=None):
    """A fresh MLP's ``steps`` training steps (the first plans the program, the others run
    it, on ``dev``'s program where given): (the losses, the parameters, the program)."""
    loss, opt, feed, model = mlp_step(cfg, activation, opt_name, dtype)
    prog = on_device(loss, dev) if dev is not None else _programs(loss)[0]
    losses = [gg.to_numpy(opt.minimize(loss, feed=feed)) for _ in range(steps)]
    return losses, [gg.to_numpy(p.data) for p in model.parameters()], prog


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cfg,activation,opt_name", CASES, ids=IDS)
def test_the_device_program_gives_the_numpy_programs_numbers(numpy_backend, cfg, activation,
                                                             opt_name, dtype):
    """Three steps, each the groups' kernels and the optimizer's one update kernel (``NU``,
    Adam's states made by the step before the device program's first)."""
    loaded: list = []
    ran: list = []
    want_loss, want, ref = train(cfg, activation, opt_name, dtype, 3)
    got_loss, got, prog = train(cfg, activation, opt_name, dtype, 3, host_device(loaded, ran))
    assert prog.tier == "cuda" and ref.tier == "numpy"
    groups = cuda_group.groups_of(prog.kernels)
    assert len(groups) >= 3 and [n for n, _ in loaded] == [n for n, _ in groups] + [
        "NU", "NX0", "NX1"]  # (the update, the cross-entropy's forward and backward)
    assert ran.count("NU") == 3 and len(ran) == 3 * len(loaded)
    for a, b in zip(got_loss + got, want_loss + want):
        assert_orders_agree(a, b, ulps=ADAM_ULPS if opt_name == "adam" else 4)


def test_the_device_programs_code_has_no_host_work(numpy_backend):
    """Each group is one call, its single elements passed as they are (no ``.item()``),
    nothing tests for overflow, no error state is entered; the cross-entropy is its own two
    kernels, the logits' bias add and the mean folded into the first (no reduction read on
    the host: the only ``float(`` is of the mean's gradient, a host number); the seed is
    not made; every buffer is an array of the device's module."""
    loss, opt, feed, _ = mlp_step(SMALL, "sigmoid", "sgd", "float32")
    prog = on_device(loss, host_device())
    opt.minimize(loss, feed=feed)
    src = prog.source
    n = len(cuda_group.groups_of(prog.kernels))
    assert sum(f"    N{j}(" in src for j in range(n)) == n
    for host in (".item()", "overflow", "fp_enter", "isfinite", ".reduce(", "seed_ =", "F5("):
        assert host not in src
    assert re.findall(r"float\((\w+)\)", src) == ["c6_0"] and "c6_0 = INVn_float32" in src
    counts = cuda_group.launches(src)
    assert counts["groups"] == n and counts["blas"] == 8 and counts["other"] == 0
    assert counts["native"] == 3 and src.count("NU(opt, ") == 1  # the update: one kernel
    assert src.count("    if NX0(p12, ") == 1 and src.count("    NX1(") == 1  # bias add in
    assert "apply(" not in src and "UF_[" not in src  # (no update of a parameter alone)
    if prog.frames is not None:  # a frame per batch size: its buffers first
        bufs = prog.frames.last[:len(prog.frames.sizing.buffers)]
    else:
        bufs = prog.buffers
    assert bufs and all(isinstance(b, np.ndarray) for b in bufs)


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_device_program_of_the_chain(numpy_backend, dtype):
    loss, _, feed = chain(dtype, steps=30, n=5)
    (prog,) = _programs(loss)
    (sched,) = [s for s in loss._schedules.values() if s.programs]
    dev = prog.rebuild(device=host_device())
    assert dev.tier == "cuda" and len(cuda_group.groups_of(dev.kernels)) >= 2
    for a, b in zip(_run(dev, sched, feed, None), _run(prog, sched, feed, None)):
        assert_orders_agree(a, b)


def test_a_batch_size_of_its_own_runs_the_same_device_program(numpy_backend):
    """A program independent of the batch size: the kernels take the size fed."""
    loss, opt, feed, model = mlp_step(MLP_SHAPED, "sigmoid", "sgd", "float64", grads_only=True)
    (sched,) = [s for s in loss._schedules.values() if s.programs]
    (prog,) = _programs(loss)
    dev = prog.rebuild(device=host_device())
    if dev.frames is None:
        pytest.skip("this program is planned for one batch size")
    small = {k: v[:3] for k, v in feed.items()}
    for a, b in zip(_run(dev, sched, small, None), _run(prog, sched, small, None)):
        assert_orders_agree(a, b)


def test_kernels_that_do_not_compile_leave_the_rules_with_a_warning(numpy_backend):
    def refuse(kernels):
        raise RuntimeError("NVRTC_ERROR_COMPILATION: no")
    loss, _, feed = chain("float64", steps=5, n=4)
    (prog,) = _programs(loss)
    (sched,) = [s for s in loss._schedules.values() if s.programs]
    with pytest.warns(RuntimeWarning, match="could not be built.*NVRTC_ERROR_COMPILATION"):
        got = prog.rebuild(device=cuda_program.Device(np, refuse))
    assert got.tier != "cuda" and not got.kernels
    for a, b in zip(_run(got, sched, feed, None), _run(prog, sched, feed, None)):
        assert_orders_agree(a, b)


def test_a_launch_checks_what_it_is_handed():
    from gpugrad.compiler.fuse import Group

    g = Group([("y", ("add", ("multiply", ("name", "x"), ("name", "s")), ("name", "b")))],
              (3, 4), np.dtype("float64"), [("x", (3, 4)), ("s", (1, 1)), ("b", (4,))], ["y"])
    seen = []
    launch = cuda_program.Launch(g, lambda args, n: seen.append((args, n)), host_device())
    x, b, y = np.arange(12.0).reshape(4, 3).T, np.ones(4), np.empty((3, 4))
    launch(x, np.float64(2.0), b, y)  # a view, a host scalar: made contiguous, an array
    (args, n), = seen
    assert n == 12 and args[0].flags.c_contiguous and np.array_equal(args[0], x)
    assert isinstance(args[1], np.ndarray) and args[1].item() == 2.0
    with pytest.raises(TypeError, match="float32"):
        launch(x.astype("float32"), 2.0, b, y)
    with pytest.raises(TypeError, match="size 3"):
        launch(x, 2.0, b[:3], y)
    with pytest.raises(TypeError, match="not contiguous"):
        launch(x, 2.0, b, np.empty((4, 3)).T)


def test_only_portable_code_stays_lowered_on_a_device():
    dev = host_device()
    ok = ["o = np.dot(v1, v2, D)", "c = np.dot(g, v2.T, C)", "c = g", "o = v1[3, ...]",
          "o = v1[:, 1:]", "o = v1[-1, None, ::2]",
          "c = np.dot(ONES32_float32, g, C)", "np.maximum(x, ZERO_float32, out=o)"]
    assert all(cuda_program.portable([line], dev) for line in ok)
    bad = ["s_ = np.add.reduce(v1, axis=None)", "o = asarray(s_.dtype.type(float(s_) / NF3))",
           "c = INV32_float32", "c = K_float32_3fe0000000000000", "o = v1[AR3, t]",
           "C.fill(0)", "c = g / NF3", "m = np.where(np.isfinite(m_), m_, 0.0)",
           "C[3, ...] = g", "o = v1[t]", "o = v1[3] + 1"]
    assert not any(cuda_program.portable([line], dev) for line in bad)
    assert not cuda_program.portable(["o = np.exp(x, D)"], cuda_program.Device(object(), None))


# --- on a device ---------------------------------------------------------------------------

def _cupy_train(cfg, activation, opt_name, dtype, steps):
    import cupy

    loss, opt, feed, model = mlp_step(cfg, activation, opt_name, dtype)
    feed = {k: cupy.asarray(v) for k, v in feed.items()}
    losses = [gg.to_numpy(opt.minimize(loss, feed=feed)) for _ in range(steps)]
    return losses, [gg.to_numpy(p.data) for p in model.parameters()], _programs(loss)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs CuPy and a CUDA GPU")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cfg,activation,opt_name", CASES, ids=IDS)
def test_the_fused_cupy_step_gives_the_numpy_programs_numbers(monkeypatch, cfg, activation,
                                                              opt_name, dtype):
    """The real thing: a CuPy training step whose groups run as CUDA kernels (compiled by
    NVRTC for this device, in one RawModule), against the planned NumPy program."""
    monkeypatch.setenv("GPUGRAD_JIT", "0")
    with gg.use_backend("numpy"):
        want_loss, want, _ = train(cfg, activation, opt_name, dtype, 3)
    monkeypatch.setenv("GPUGRAD_JIT", "now")
    with gg.use_backend("cupy"):
        got_loss, got, progs = _cupy_train(cfg, activation, opt_name, dtype, 3)
    assert [p.tier for p in progs] == ["cuda"] and cuda_group.groups_of(progs[0].kernels)
    ulps = 4 * ADAM_ULPS if opt_name == "adam" else 16  # the device's exp and tanh
    for a, b in zip(got_loss + got, want_loss + want):
        assert_orders_agree(a, b, ulps=ulps, rtol=1e-11)


def test_which_programs_are_built_for_a_device(monkeypatch):
    dev = host_device()
    f32, c64 = [((3,), np.dtype("float32"))], [((3,), np.dtype("complex64"))]
    assert cuda_program.choose(np, dev, f32, False) is dev
    assert cuda_program.choose(np, None, f32, False) is None  # NumPy: the host program
    assert cuda_program.choose(np, False, f32, False) is None
    assert cuda_program.choose(np, dev, c64, False) is None  # complex: the rules
    assert cuda_program.choose(np, dev, f32, "numba") is None  # the native CPU tier
    fake = type(sys)("array_api_compat.cupy")  # (never imported: the device is not chosen)
    for mode in ("0", "1"):  # opt-in (GPUGRAD_JIT=now) until a device has checked it
        monkeypatch.setenv("GPUGRAD_JIT", mode)
        assert cuda_program.choose(fake, None, f32, False) is None


# --- the optimizer's update as one kernel ---------------------------------------------------

def _sgd_changing(dev):
    """An SGD step, one with a new learning rate, two with momentum turned on (new options:
    a form with state, made by the first of them): the parameters after each, of the
    device program or (``dev`` None) of the eager step. (Not the planned NumPy program's:
    its learning rate folded into the backward seed, it keeps ``P - G`` when momentum is
    turned on, 2026-12-06.)"""
    loss, opt, feed, model = mlp_step(MLP_SHAPED, "tanh", "sgd", "float64")
    if dev is not None:
        on_device(loss, dev)
    got = []
    for change in ({}, {"lr": 0.05}, {"momentum": 0.9}, {}):
        for k, v in change.items():
            setattr(opt, k, v)
        opt.minimize(loss, feed=feed, compiled=dev is not None)
        got += [gg.to_numpy(p.data).copy() for p in model.parameters()]
    return got


def test_the_update_kernel_follows_the_learning_rate_and_leaves_new_options(numpy_backend):
    """A new ``lr`` is read by the kernel on its step; momentum turned on is a form the
    kernel was not made from: those steps update each parameter as a program without the
    kernel does (``opt._apply``), with the eager step's numbers."""
    ran: list = []
    got, want = _sgd_changing(host_device(ran=ran)), _sgd_changing(None)
    assert ran.count("NU") == 2
    for a, b in zip(got, want):
        assert_orders_agree(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_the_update_kernel_is_the_forms_body_over_every_parameter(numpy_backend, opt_name,
                                                                   dtype):
    loss, opt, feed, model = mlp_step(SMALL, "relu", opt_name, dtype)
    prog = on_device(loss, host_device())
    (kernel,) = [k for n, k in prog.kernels if n == "NU"]
    sizes = [p.data.size for p in model.parameters()]
    assert isinstance(kernel, cuda_update.Update) and kernel.sizes == sizes
    assert kernel.body == opt.lowering().later.kernel[2] and kernel.dtype == dtype
    src = kernel.source("NU")
    assert src.count("const long long k = i - ") == len(sizes)
    assert f"}} else if (i < {sizes[0] + sizes[1]}) {{" in src


def _adam_restarted(dev):
    """Three Adam steps, the first after its state was dropped (it makes it again)."""
    loss, opt, feed, model = mlp_step(MLP_SHAPED, "sigmoid", "adam", "float32")
    if dev is not None:
        on_device(loss, dev)
    for p in model.parameters():
        opt.state[p] = {}
    for _ in range(3):
        opt.minimize(loss, feed=feed, compiled=dev is not None)
    return [gg.to_numpy(p.data) for p in model.parameters()]


def test_a_first_update_makes_the_state_before_the_update_kernel_runs(numpy_backend):
    ran: list = []
    got, want = _adam_restarted(host_device(ran=ran)), _adam_restarted(None)
    assert ran.count("NU") == 2
    for a, b in zip(got, want):
        assert_orders_agree(a, b, ulps=ADAM_ULPS)
