"""The backend fixture: every test that takes ``xp`` runs on each CPU backend (and on CuPy,
marked ``gpu``, where a GPU exists).

- numpy;
- array_api_strict on Device("device1"): catches device mixing, a missing ``device=`` and
  NumPy fallbacks;
- array_api_strict on Device("no_float64"): float32 paths, catches silent float64 upcasts;
- cupy: marked gpu, skipped without CuPy or a GPU.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

# Programs stay on the NumPy tier unless a test asks for the native one (tests/test_native.py
# does, and `GPUGRAD_JIT=now pytest` runs the whole suite natively): a program going hot in
# the middle of an unrelated test would make its timing and memory depend on the machine.
os.environ.setdefault("GPUGRAD_JIT", "0")

import gpugrad as gg  # noqa: E402
from gpugrad.compiler import tier  # noqa: E402


def _has_gpu() -> bool:
    if importlib.util.find_spec("cupy") is None:
        return False
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


HAS_GPU = _has_gpu()

collect_ignore = ["distributed"]
"""tests/distributed/ holds scripts that tests/test_distributed_mpi.py runs under mpiexec,
never in pytest."""


class BackendCase:
    """One backend under test: its gpugrad Backend, plus helpers to make arrays on it."""

    def __init__(self, name: str, device_name: str | None, float64: bool):
        self.name = name
        self.device_name = device_name
        self.float64 = float64
        self.id = name if device_name is None else f"{name}-{device_name}"

    def backend(self) -> gg.Backend:
        if self.name == "array_api_strict":
            import array_api_strict

            return gg.backend.make_backend("array_api_strict",
                                           array_api_strict.Device(self.device_name))
        return gg.backend.make_backend(self.name)

    @property
    def float_dtype(self) -> str:
        return "float64" if self.float64 else "float32"

    def __repr__(self) -> str:
        return self.id


BACKENDS = [
    pytest.param(BackendCase("numpy", None, True), id="numpy"),
    pytest.param(BackendCase("array_api_strict", "device1", True), id="strict-device1"),
    pytest.param(BackendCase("array_api_strict", "no_float64", False), id="strict-no_float64"),
    pytest.param(BackendCase("cupy", None, True), id="cupy",
                 marks=[pytest.mark.gpu,
                        pytest.mark.skipif(not HAS_GPU, reason="needs CuPy and a CUDA GPU")]),
]


@pytest.fixture(params=BACKENDS)
def bk(request):
    """Runs the test inside ``gg.use_backend`` for each backend; yields the BackendCase."""
    case = request.param
    with gg.use_backend(case.backend()):
        yield case


@pytest.fixture(params=[p for p in BACKENDS if p.id != "strict-no_float64"])
def bk64(request):
    """Backends with float64, for gradient checks (float32 differences give false failures)."""
    case = request.param
    with gg.use_backend(case.backend()):
        yield case


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def saving_op():
    """A user op whose residual is a fresh array ``2x``, so a weakref to it shows when the
    saved arrays (or the whole Node) are freed."""

    @gg.ops.defop("test_saving_op")
    def op(xp, x):
        "x**2; d/dx = 2x (saves 2x)"
        return x * x, x * 2.0

    op.defvjp(lambda xp, g, two_x: (g * two_x,))
    try:
        yield op
    finally:
        gg.ops.unregister("test_saving_op")


@pytest.fixture
def numpy_backend():
    """For tests written for NumPy arrays: they keep passing when the suite runs with
    GPUGRAD_BACKEND set to another backend (as ci/gpu-check does with cupy)."""
    with gg.use_backend("numpy"):
        yield


@pytest.fixture(scope="module")
def native_cache(tmp_path_factory):
    """The native tier's disk cache, one per test module."""
    return str(tmp_path_factory.mktemp("native-cache"))


@pytest.fixture
def native(monkeypatch, native_cache):
    """Programs built in the test go native at once (compiled before their first run)."""
    monkeypatch.setenv("GPUGRAD_CACHE_DIR", native_cache)
    monkeypatch.setenv("GPUGRAD_JIT", "now")
    with gg.use_backend("numpy"):
        yield


@pytest.fixture
def tiered(monkeypatch, tmp_path):
    """The default tiering, made hot after 128 runs (and no time) so that tests are short;
    a cache of its own (no program went native before)."""
    monkeypatch.setenv("GPUGRAD_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("GPUGRAD_JIT", "1")
    monkeypatch.setattr(tier, "HOT_RUNS", 128)
    monkeypatch.setattr(tier, "HOT_SECONDS", 0.0)
    with gg.use_backend("numpy"):
        yield
