"""Backend selection: GPUGRAD_BACKEND (read lazily, never written), set_backend, use_backend,
and arrays staying where they are."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import pathlib
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import backend as B

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_python(code: str, env_value: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != B.ENV_VAR}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    if env_value is not None:
        env[B.ENV_VAR] = env_value
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def restore_backend():
    """Tests that call set_backend put the process-wide choice back afterwards."""
    saved = B._explicit
    try:
        yield
    finally:
        B._explicit = saved


# --- the environment variable ---------------------------------------------------------------

def test_env_var_is_read_lazily_and_unknown_names_list_the_choices():
    r = run_python("""
        import gpugrad as gg               # importing must not read the bad name
        print("imported")
        try:
            gg.asarray([1.0])
        except gg.BackendError as e:
            print("ERROR:", e)
        else:
            print("NO ERROR")
        gg.set_backend("numpy")            # set_backend overrides the environment
        print("after set:", gg.backend_info()["name"], type(gg.asarray([1.0]).data).__name__)
    """, "bogus")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "imported" in out
    err = next(line for line in out.splitlines() if line.startswith(("ERROR", "NO ERROR")))
    assert err.startswith("ERROR:")
    for name in ("bogus", "numpy", "cupy", "array_api_strict"):
        assert name in err, err
    assert "after set: numpy ndarray" in out


def test_env_var_selects_array_api_strict():
    pytest.importorskip("array_api_strict")
    r = run_python("""
        import gpugrad as gg
        t = gg.Variable([1.0, 2.0])
        (t * t).sum().backward()
        print(gg.backend_info()["name"], type(t.data).__module__.split(".")[0],
              type(t.grad).__module__.split(".")[0], gg.to_numpy(t.grad).tolist())
        with gg.use_backend("numpy"):
            print("scoped", gg.backend_info()["name"])
        print("after", gg.backend_info()["name"])
        gg.set_backend("numpy")
        print("set", gg.backend_info()["name"])
        gg.set_backend(None)
        print("reset", gg.backend_info()["name"])
    """, "array_api_strict")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "array_api_strict array_api_strict array_api_strict [2.0, 4.0]"
    assert lines[1:] == ["scoped numpy", "after array_api_strict", "set numpy",
                         "reset array_api_strict"]


def test_default_backend_is_numpy():
    r = run_python("""
        import gpugrad as gg
        print(gg.backend_info()["name"], type(gg.asarray([1.0]).data).__name__)
    """, None)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "numpy ndarray"


def test_nothing_writes_os_environ():
    r = run_python("""
        import os
        from collections.abc import MutableMapping

        class Guard(MutableMapping):
            def __init__(self, inner): self.inner = inner
            def __getitem__(self, k): return self.inner[k]
            def __iter__(self): return iter(self.inner)
            def __len__(self): return len(self.inner)
            def __setitem__(self, k, v): raise AssertionError(f"os.environ[{k!r}] written")
            def __delitem__(self, k): raise AssertionError(f"os.environ[{k!r}] deleted")

        def no_putenv(*a): raise AssertionError(f"putenv{a}")

        import numpy, array_api_compat, array_api_strict  # third parties may putenv

        os.environ = Guard(os.environ)
        os.putenv = os.unsetenv = no_putenv
        before = dict(os.environ)
        import gpugrad as gg
        gg.asarray([1.0])
        gg.set_backend("array_api_strict")
        with gg.use_backend("numpy"):
            gg.Variable([1.0]).sum().backward()
        gg.set_backend(None)
        gg.backend_info()
        try:
            gg.set_backend("cupy")
        except gg.BackendError:
            pass
        assert dict(os.environ) == before
        print("ok")
    """, "numpy")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


# --- set_backend and use_backend ------------------------------------------------------------

def test_set_backend_and_use_backend_precedence(restore_backend):
    pytest.importorskip("array_api_strict")
    gg.set_backend("array_api_strict")
    assert gg.backend_info()["name"] == "array_api_strict"
    assert B.name_of(gg.asarray([1.0]).xp) == "array_api_strict"
    with gg.use_backend("numpy") as b:
        assert b.name == "numpy"
        assert type(gg.asarray([1.0]).data) is np.ndarray
        with gg.use_backend("array_api_strict"):
            assert gg.backend_info()["name"] == "array_api_strict"
        assert gg.backend_info()["name"] == "numpy"
    assert gg.backend_info()["name"] == "array_api_strict"
    gg.set_backend(None)
    assert B._explicit is None


def test_set_backend_accepts_a_namespace_and_a_device(restore_backend):
    array_api_strict = pytest.importorskip("array_api_strict")
    dev = array_api_strict.Device("device1")
    b = gg.set_backend(array_api_strict, dev)
    assert b.name == "array_api_strict" and b.device == dev
    assert gg.asarray([1.0]).device == dev
    assert "device1" in gg.backend_info()["device"]
    b = gg.set_backend(np)
    assert b.name == "numpy" and b.xp is np
    with pytest.raises(gg.BackendError, match="neither"):
        gg.set_backend(object())
    with pytest.raises(gg.BackendError, match="numpy, cupy, array_api_strict"):
        gg.set_backend("jax")


def test_use_backend_is_per_thread():
    pytest.importorskip("array_api_strict")
    inside, release = threading.Event(), threading.Event()
    seen = {}

    def worker():
        with gg.use_backend("array_api_strict"):
            inside.set()
            release.wait(10)
            seen["worker"] = B.name_of(gg.asarray([1.0]).xp)

    def fresh():
        seen["fresh"] = gg.backend_info()["name"]

    with gg.use_backend("numpy"):
        th = threading.Thread(target=worker)
        th.start()
        assert inside.wait(10)
        assert gg.backend_info()["name"] == "numpy"  # the worker's choice stays there
        release.set()
        th.join()
    default = B.current().name
    scoped = "numpy" if default != "numpy" else "array_api_strict"
    with gg.use_backend(scoped):
        other = threading.Thread(target=fresh)
        other.start()
        other.join()
    assert seen["worker"] == "array_api_strict"
    # a new thread does not inherit this thread's use_backend; it sees the process default
    assert seen["fresh"] == default


def test_use_backend_is_per_task():
    pytest.importorskip("array_api_strict")

    async def main():
        entered = asyncio.Event()
        done = asyncio.Event()

        async def strict():
            with gg.use_backend("array_api_strict"):
                entered.set()
                await done.wait()
                return gg.backend_info()["name"]

        async def plain():
            await entered.wait()
            with gg.use_backend("numpy"):
                name = gg.backend_info()["name"]
            done.set()
            return name

        return await asyncio.gather(strict(), plain())

    assert asyncio.run(main()) == ["array_api_strict", "numpy"]


def test_cupy_missing_names_the_extra():
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed here")
    for attempt in (lambda: gg.set_backend("cupy"), lambda: gg.use_backend("cupy").__enter__()):
        with pytest.raises(gg.BackendError) as info:
            attempt()
        assert "pip install gpugrad[cuda12]" in str(info.value)
    assert B._explicit is None or B._explicit.name != "cupy"


# --- host and device ------------------------------------------------------------------------

def test_to_numpy(bk):
    host = np.arange(6.0).reshape(2, 3).astype(bk.float_dtype)
    t = gg.asarray(host)
    for x in (t, t.data):
        out = gg.to_numpy(x)
        assert type(out) is np.ndarray
        np.testing.assert_array_equal(out, host)
        assert out.dtype == host.dtype
    v = gg.Variable(host)
    np.testing.assert_array_equal(v.numpy(), host)
    np.testing.assert_array_equal(gg.to_numpy(gg.asarray(np.array(3))), 3)


def test_backend_info(bk):
    info = gg.backend_info()
    assert set(info) == {"name", "device", "version", "numpy", "array_api_compat"}
    assert info["name"] == bk.name
    assert info["numpy"] == np.__version__
    import array_api_compat

    assert info["array_api_compat"] == array_api_compat.__version__
    assert isinstance(info["version"], str) and info["version"]
    if bk.device_name is not None:
        assert bk.device_name in info["device"]


def test_asarray_moves_host_data_once(bk):
    t = gg.asarray([[1.0, 2.0]])
    assert t.shape == (1, 2) and not t.requires_grad
    assert B.name_of(t.xp) == bk.name
    if bk.device_name is not None:
        assert bk.device_name in str(t.device)
    f = gg.asarray(np.array([1, 2]), dtype=bk.float_dtype)
    assert B.dtype_name(f.dtype) == bk.float_dtype
    assert gg.asarray(t) is t


def test_asarray_keeps_an_on_backend_arrays_device():
    array_api_strict = pytest.importorskip("array_api_strict")
    d1, d2 = array_api_strict.Device("device1"), array_api_strict.Device("device2")
    on_d2 = array_api_strict.asarray([1.0, 2.0], device=d2)
    with gg.use_backend("array_api_strict", d1):
        t = gg.asarray(on_d2)
        assert t.device == d2
        assert t.data is on_d2
        v = gg.Variable(on_d2)
        assert v.device == d2 and v.data is not on_d2  # a Variable copies, on its device
        fresh = gg.asarray([1.0])
        assert fresh.device == d1


def test_asarray_takes_another_librarys_array_through_dlpack():
    array_api_strict = pytest.importorskip("array_api_strict")
    s = array_api_strict.asarray([1.0, 2.0])
    with gg.use_backend("numpy"):
        t = gg.asarray(s)
    assert isinstance(t.data, np.ndarray) and t.data.tolist() == [1.0, 2.0]


def test_asarray_refuses_an_array_that_cannot_reach_the_host():
    class OnAnotherDevice:  # a DLPack producer that cannot hand its data to the CPU
        shape = (2,)

        def __dlpack__(self, **kwargs):
            raise BufferError("device memory only")

        def __dlpack_device__(self):
            return (2, 0)

    with gg.use_backend("numpy"):
        with pytest.raises(gg.BackendError, match=r"cannot bring a .* \(2,\) on DLPack "
                                                  r"device \(2, 0\) to backend numpy"):
            gg.asarray(OnAnotherDevice())


def test_tensor_caches_its_namespace(monkeypatch):
    array_api_strict = pytest.importorskip("array_api_strict")
    import array_api_compat

    with gg.use_backend("array_api_strict", array_api_strict.Device("device1")):
        W = gg.Variable(np.array([[1.0, 2.0], [3.0, 4.0]]), name="W")
        b = gg.Variable(np.array([0.5, -0.5]), name="b")
        x = gg.asarray(np.array([[1.0, -1.0]]))

    def forbidden(*args, **kwargs):
        raise AssertionError("array_namespace was called")

    monkeypatch.setattr(array_api_compat, "array_namespace", forbidden)
    monkeypatch.setattr(type(W.data), "__array_namespace__", forbidden)
    with pytest.raises(AssertionError, match="array_namespace"):  # the trap is armed
        B.namespace_of(W.data)
    with gg.use_backend("numpy"):  # the Tensors' own xp is used, not the current backend
        loss = gg.sum(gg.sigmoid(x @ W + b) * 2.0 - 1.0)
        loss.backward()
    assert W.xp is array_api_strict
    assert type(W.grad) is type(W.data) and W.grad.device == W.device
    monkeypatch.undo()
    s = 1 / (1 + np.exp(-(np.array([[1.0, -1.0]]) @ [[1.0, 2.0], [3.0, 4.0]] + [0.5, -0.5])))
    np.testing.assert_allclose(gg.to_numpy(b.grad), (2 * s * (1 - s))[0])
