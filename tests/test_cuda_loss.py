"""The softmax cross-entropy's own device kernels (``NativeKernel.cuda`` in
gpugrad/ops/softmax.py), in a device program (gpugrad/compiler/cuda_program.py), checked on
every machine without a GPU:

- their CUDA source, with and without what folds into them (the logits' bias add and the
  mean of the losses into the forward, a bias's gradient into the backward), compiles with
  NVRTC for compute_80 and compute_90, float32 and float64 (skipped without the
  ``cuda-check`` extra);
- read back as Python and run as one block of threads (tests/cuda_block.py), they give
  the planned NumPy program's numbers: a mean, a sum and a plain product's logits;
- a label out of range makes the loss NaN on a device (the host is not told);
- a device program that would still read a reduction on the host is built without the
  device, with a warning.

Tests marked ``gpu`` in tests/test_cuda_program.py run them through CuPy."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

import gpugrad as gg
from gpugrad.compiler import cuda_group, cuda_program, native_fold

sys.path.insert(0, str(Path(__file__).parent))
import nvrtc  # noqa: E402
from helpers import assert_orders_agree  # noqa: E402
from test_cuda_groups import DTYPES, SMALL, _programs, _run, mlp_step  # noqa: E402
from test_cuda_program import MLP_SHAPED, host_device  # noqa: E402

NVRTC = nvrtc.load()


def _graph(kind: str, dtype: str, n: int = 7, k: int = 5):
    """A loss over cross-entropy of ``n`` rows of ``k`` classes, its value and gradients
    planned:
    ``mean`` (of ``x @ W + b``), ``sum`` (of the same: the backward reads a row of
    gradients), ``plain`` (the mean of ``x @ W``: no bias add to fold). (The loss, the
    Variables, the feed.)"""
    rng = np.random.default_rng(3)
    x = gg.Placeholder((n, 4), dtype, name="x")
    y = gg.Placeholder((n,), "int64", name="y")
    w = gg.Variable(rng.standard_normal((4, k)).astype(dtype))
    b = gg.Variable(rng.standard_normal(k).astype(dtype))
    z = x @ w if kind == "plain" else x @ w + b
    rows = gg.softmax_cross_entropy(z, y)
    loss = gg.sum(rows) if kind == "sum" else gg.mean(rows)
    feed = {x: rng.standard_normal((n, 4)).astype(dtype), y: rng.integers(-k, k, n)}
    wrt = [w] if kind == "plain" else [w, b]
    gg.value_and_gradients(loss, wrt, feed=feed)
    return loss, wrt, feed


def _device(loss, loaded=None):
    (prog,) = _programs(loss)
    (sched,) = [s for s in loss._schedules.values() if s.programs]
    return prog, prog.rebuild(device=host_device(loaded)), sched


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["mean", "sum", "plain"])
def test_the_device_kernels_give_the_numpy_programs_numbers(numpy_backend, kind, dtype):
    loss, _, feed = _graph(kind, dtype)
    loaded: list = []
    prog, dev, sched = _device(loss, loaded)
    assert dev.tier == "cuda" and [n for n, _ in loaded if n.startswith("NX")] == ["NX0", "NX1"]
    folds = {n: k.fold for n, k in loaded if isinstance(k, native_fold.Folded)}
    if kind == "mean":  # the bias add and the mean into the forward, b's gradient into the back
        assert folds["NX0"].inputs and folds["NX0"].mean and folds["NX1"].sums
        assert "  # mean  " not in dev.source  # (no forward step of its own)
    elif kind == "plain":
        assert "NX0" in folds and not folds["NX0"].inputs and folds["NX0"].mean
    for a, b in zip(_run(dev, sched, feed, None), _run(prog, sched, feed, None)):
        assert_orders_agree(a, b, ulps=4)


def test_a_label_out_of_range_makes_the_loss_nan_on_a_device(numpy_backend):
    loss, _, feed = _graph("mean", "float32")
    prog, dev, sched = _device(loss)
    (y,) = [ph for ph, v in feed.items() if v.dtype.kind == "i"]
    bad = {**feed, y: np.where(np.arange(7) == 2, 5, feed[y])}  # k = 5: no class 5
    value, *grads = _run(dev, sched, bad, None)[:3]
    assert np.isnan(value) and np.isnan(grads[0]).any()
    with pytest.raises(IndexError, match="out of (bounds|range)"):
        _run(prog, sched, bad, None)  # the host program says so


def test_code_that_would_wait_for_the_device_leaves_it_with_a_warning(numpy_backend,
                                                                         monkeypatch):
    """Where the mean does not fold into the kernel, its NumPy code would read the sum on
    the host: the program is built again without the device."""
    loss, _, feed = _graph("mean", "float64")
    monkeypatch.setattr(native_fold, "_total", lambda *a, **k: None)
    with pytest.warns(RuntimeWarning, match="would wait for the device: .*reduce"):
        _, dev, _ = _device(loss)
    assert dev.tier != "cuda"


def _kernel_sources() -> list:
    """The op kernels (name, kernel) of the device programs of the three graphs and of a
    small and an mlp-shaped training step (SGD: the mean's gradient a number), each
    dtype."""
    got = []
    for dtype in DTYPES:
        for kind in ("mean", "sum", "plain"):
            loaded: list = []
            _device(_graph(kind, dtype)[0], loaded)
            got += [(f"{kind}_{dtype}_{n}", k) for n, k in loaded if n.startswith("NX")]
        for cfg in (SMALL, MLP_SHAPED):
            loaded = []
            loss = mlp_step(cfg, "relu", "sgd", dtype)[0]
            _device(loss, loaded)
            got += [(f"mlp{cfg['batch']}_{dtype}_{n}", k) for n, k in loaded
                    if n.startswith("NX")]
    return got


@pytest.mark.skipif(NVRTC is None, reason="NVRTC is not installed (pip install -e '.[cuda-check]'"
                    " brings the nvidia-cuda-nvrtc-cu12 wheel)")
@pytest.mark.parametrize("arch", ["compute_80", "compute_90"])
def test_the_device_kernels_compile_with_nvrtc(numpy_backend, arch):
    kernels = _kernel_sources()
    src = cuda_program.module_source(kernels)
    assert len(kernels) == 20 and src.count("__global__") == 20
    for what in ("f0[i * k + j] + f1[j]", "tot[0] = (T)(s / (double)n);", "r0[j] = ar0;",
                 "const double g", "const float* g", "const double* g", "const float* z"):
        assert what in src, what
    rc, log = nvrtc.compile_ptx(NVRTC, src, "loss", (f"--gpu-architecture={arch}",
                                                     *cuda_group.OPTIONS))
    assert rc == 0, log
    assert re.search(r"PTX: [1-9]\d* bytes", log)
