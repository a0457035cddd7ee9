"""Fusion groups with sums (a linear layer's bias gradient) as CUDA kernels over columns
(gpugrad/compiler/cuda_group.py ``columns_text``), checked on every machine without a GPU:

- a column's thread adds its rows in order from zero and stores each sum itself (the
  read-back fills the sums with NaN first): nothing zeroes them, no atomic adds;
- every such kernel of the benchmark models, read back as Python, gives the native tier's
  numba kernel's numbers on the same rows, the same bits where the members are arithmetic;
- a device program's groups with sums: no ``fill(0)``, their sums planned buffers where the
  program plans them, launched over their columns, compiled by NVRTC for compute_80 and
  compute_90."""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from gpugrad.compiler import cuda_group, cuda_program, native
from gpugrad.compiler.fuse import Group, _calls

sys.path.insert(0, str(Path(__file__).parent))
from helpers import assert_orders_agree  # noqa: E402
from test_cuda_groups import (  # noqa: E402
    DTYPES,
    MLP,
    NVRTC,
    SMALL,
    _programs,
    all_groups,
    host_kernel,
    mlp_step,
    nvrtc,
)
from test_cuda_program import host_device  # noqa: E402


def test_a_column_kernel_sums_its_rows_in_order_and_stores_every_sum():
    """A group with sums: one thread a column, its tail input read once, the rows added in
    order from zero (the native tier's order: the same bits), each sum stored by the kernel
    (the read-back fills them with NaN first), nothing zeroed by the caller."""
    g = Group([("y", ("multiply", ("name", "x"), ("name", "b"))),
               ("z", ("add", ("name", "y"), ("name", "s")))],
              (5, 2, 3), np.dtype("float32"), [("x", (5, 2, 3)), ("b", (2, 3)), ("s", None)],
              ["z"], [("sy", "y", (2, 3)), ("sx", "x", (2, 3))])
    src = cuda_group.raw_source(g, "K")
    assert "j < 6;" in src and "i += 6)" in src and src.count("p_b[j]") == 1
    assert src.index("p_b[j]") < src.index("for (long long i = j;")  # read once a column
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 2, 3)).astype("float32")
    b = rng.standard_normal((2, 3)).astype("float32")
    z, sy, sx = np.empty((5, 2, 3), "float32"), np.empty((2, 3), "float32"), \
        np.empty((2, 3), "float32")
    host_kernel(src)(x, b, 0.25, z, sy, sx)
    y = x * b
    np.testing.assert_array_equal(z, y + np.float32(0.25))
    want_y, want_x = np.zeros((2, 3), "float32"), np.zeros((2, 3), "float32")
    for r in range(5):  # in order, as the native tier adds
        want_y, want_x = want_y + y[r], want_x + x[r]
    np.testing.assert_array_equal(sy, want_y)
    np.testing.assert_array_equal(sx, want_x)


EXACT = frozenset({"add", "subtract", "multiply", "divide", "reciprocal", "negative",
                   "minimum", "maximum", "greater", "not_equal", "where", "sqrt"})
"""Formulas' operations rounded once, correctly, on every tier: a group of these alone
gives the same bits through the CUDA read-back (NumPy's steps) and numba."""


@pytest.mark.parametrize("dtype", DTYPES)
def test_column_kernels_give_the_native_kernels_numbers(dtype):
    """Every group with sums of the benchmark models, its CUDA kernel read back against the
    native tier's numba kernel on the same rows: the same bits where the members are
    arithmetic (the sums are added in the same order), within ulps where an ``exp`` or
    ``erf`` is NumPy's on one side and numba's on the other."""
    pytest.importorskip("numba")
    groups = [g for g in all_groups() if g.sums and g.dtype.name == dtype
              and all(g.kind(s) == "full" for _, s in g.inputs)]  # (others: the test above)
    assert len(groups) >= 8
    names = [f"K{j}" for j in range(len(groups))]
    module = native.load(native.module_source(list(zip(names, groups))))
    rng = np.random.default_rng(0)
    exact = 0
    for name, g in zip(names, groups):
        shape = (7, *g.shape[1:])  # any rows: the kernels read their count from the arrays
        ins = [rng.standard_normal(shape).astype(dtype) for _ in g.inputs]
        outs = [[np.empty(shape, dtype) for _ in g.outputs] for _ in range(2)]
        sums = [[np.empty(s, dtype) for _, _, s in g.sums] for _ in range(2)]
        host_kernel(cuda_group.raw_source(g, name))(*ins, *outs[0], *sums[0])
        getattr(module, name)(*ins, *outs[1], *sums[1])
        ops = {op for _, node in g.members for op in _calls(node)}
        for a, b in zip(outs[0] + sums[0], outs[1] + sums[1]):
            if ops <= EXACT:
                np.testing.assert_array_equal(a, b)
            else:
                assert_orders_agree(a, b, ulps=8)
        exact += ops <= EXACT
    assert exact >= 4


@pytest.mark.parametrize("cfg", [SMALL, MLP], ids=["small", "mlp"])
@pytest.mark.parametrize("activation,opt_name", [("sigmoid", "sgd"), ("relu", "adam")])
def test_a_device_program_sums_its_bias_gradients_without_zeroing(numpy_backend, cfg,
                                                                  activation, opt_name):
    """No ``fill(0)`` before a group with sums (its kernel stores each sum once), and the
    launches counted (a fill would count as one) are the groups, the products, the update
    and the cross-entropy's two kernels, nothing else; every kernel of the program compiles
    with NVRTC for compute_80 and compute_90 in one translation unit (where NVRTC is
    installed)."""
    loss, *_ = mlp_step(cfg, activation, opt_name, "float32")
    (prog,) = _programs(loss)
    dev = prog.rebuild(device=host_device())
    groups = cuda_group.groups_of(dev.kernels)
    with_sums = [(n, g) for n, g in groups if g.sums]
    assert dev.tier == "cuda" and len(with_sums) == 2  # the two hidden layers' biases
    assert ".fill(" not in dev.source and "atomicAdd" not in cuda_program.module_source(
        dev.kernels)
    for n, g in with_sums:
        assert cuda_group.threads(g) == g.tail() == cfg["sizes"][1]
        (m, _, _), = g.sums
        assert re.search(rf"    {n}\(.*\b{m}\)", dev.source)  # the sum: its last argument
    counts = cuda_group.launches(dev.source)  # (the update and the loss's two kernels)
    assert counts["groups"] == len(groups) and counts["native"] == 3 and counts["other"] == 0
    assert counts["total"] == counts["groups"] + counts["blas"] + 3
    if NVRTC is None:
        return
    for arch in ("compute_80", "compute_90"):
        rc, log = nvrtc.compile_ptx(NVRTC, cuda_program.module_source(dev.kernels), "step",
                                    (f"--gpu-architecture={arch}", *cuda_group.OPTIONS))
        assert rc == 0, f"{arch}: {log}"


def test_a_groups_sums_take_the_buffers_the_program_plans():
    g = Group([("y", ("multiply", ("name", "x"), ("name", "x")))], (4, 3),
              np.dtype("float32"), [("x", (4, 3))], ["y"], [("s", "y", (3,))])
    env: dict = {}
    ins = cuda_program.instruction(g, "N0", env)
    assert ins.defines == [("y", (4, 3), g.dtype), ("s", (3,), g.dtype)] and ins.lowered
    assert ins.emit(["B0", "B1"], []) == ["y = B0", "s = B1", "N0(x, y, s)"]
    assert ins.emit(["B0", "None"], []) == ["y = B0", "s = np.empty(S_N0_0, D_N0)",
                                            "N0(x, y, s)"]
    assert env["S_N0_0"] == (3,)


def test_a_kernel_with_sums_is_launched_over_its_columns():
    """CuPy's launch (a stand-in module): a group without sums over its elements in blocks
    of 256, one with sums over its columns in blocks of a warp, with the element count as
    its last argument, even where it is 0 (its sums are stored as 0)."""
    plain = Group([("y", ("exp", ("name", "x")))], (300, 3), np.dtype("float32"),
                  [("x", (300, 3))], ["y"])
    summed = dataclasses.replace(plain, shape=(4, 100), inputs=[("x", (4, 100))],
                                 sums=[("s", "y", (100,))])
    launched = []

    class Module:
        def __init__(self, code, options):
            assert "gpugrad_N0" in code and "gpugrad_N1" in code and options == \
                cuda_group.OPTIONS

        def get_function(self, name):
            return lambda grid, block, args: launched.append((name, grid, block, args[-1]))

    fake = type(sys)("fake_cupy")
    fake.RawModule = Module
    runs = cuda_program._load_raw(fake, [("N0", plain), ("N1", summed)])
    runs["N0"]((), 900)
    runs["N1"]((), 400)
    runs["N1"]((), 0)
    runs["N0"]((), 0)  # nothing to do: no launch
    assert launched == [("gpugrad_N0", (4,), (256,), 900), ("gpugrad_N1", (4,), (32,), 400),
                        ("gpugrad_N1", (4,), (32,), 0)]
