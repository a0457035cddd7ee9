"""When a program goes native (gpugrad.compiler.tier), the disk cache and threads: the
NumPy tier runs until a program is hot, then a background thread compiles and switches it
over, and no run waits; a second process loads the kernels instead of compiling them, and
starts native at once where an earlier one went native; threads share a native program and
a module being loaded.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
from helpers import assert_orders_agree
from native_helpers import TOL, programs_of, sigmoid_problem

import gpugrad as gg
from gpugrad import nn, optim
from gpugrad.compiler import tier

pytest.importorskip("numba")


def test_a_hot_program_goes_native_in_the_background(tiered):
    """Tier 1 runs from the start; once hot, a thread compiles and the program switches
    between two runs; no run waits and every result equals the NumPy tier's."""
    x, W, loss, X = sigmoid_problem()
    want = gg.gradients(loss, [W], feed={x: X})[0]
    (prog,) = programs_of(loss)
    assert prog.tier == "numpy"
    for _ in range(200):
        got = gg.gradients(loss, [W], feed={x: X})[0]
        assert_orders_agree(got, want, **TOL)
    tier.wait(120)
    assert prog.tier == "native" and prog.kernels
    for _ in range(3):
        assert_orders_agree(gg.gradients(loss, [W], feed={x: X})[0], want, **TOL)


def test_jit_0_keeps_the_numpy_program(tiered, monkeypatch):
    monkeypatch.setenv("GPUGRAD_JIT", "0")
    x, W, loss, X = sigmoid_problem()
    for _ in range(300):
        gg.gradients(loss, [W], feed={x: X})
    tier.wait(60)
    (prog,) = programs_of(loss)
    assert prog.tier == "numpy" and "N0(" not in prog.source


def test_two_threads_share_a_native_step(native):
    """Two threads calling one graph's native program, and one gg.compile'd function, at
    once get the single-thread results (one runs the program, the other the generic code
    while it is busy)."""
    x, W, loss, X = sigmoid_problem(256)
    Xs = [X * (1 + k / 10) for k in range(8)]
    want = [np.array(gg.gradients(loss, [W], feed={x: A})[0]) for A in Xs]
    f = gg.compile(lambda a: gg.sum(gg.tanh(gg.sigmoid(a @ W) * 2.0 - 1.0) * 3.0))
    want_f = [np.array(gg.to_numpy(f(gg.asarray(A)))) for A in Xs]
    errors = []

    def work(k):
        for _ in range(30):
            for A, w, wf in zip(Xs, want, want_f):
                got = np.asarray(gg.gradients(loss, [W], feed={x: A})[0])
                got_f = gg.to_numpy(f(gg.asarray(A)))
                if not (np.allclose(got, w, rtol=1e-12, atol=1e-14)
                        and np.allclose(got_f, wf, rtol=1e-12, atol=1e-14)):
                    errors.append(k)
    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(p.tier == "native" and p.kernels for p in programs_of(loss))
    progs = list(f._last[2].sched.programs.values())
    assert progs and all(p.tier == "native" and p.kernels for p in progs)


def test_a_second_process_loads_the_kernels_from_the_disk_cache(tmp_path):
    """The same program in a new process: numba finds every kernel in the cache."""
    script = textwrap.dedent("""
        import numpy as np, gpugrad as gg
        x = gg.Placeholder((None, 8), "float64")
        W = gg.Variable(np.ones((8, 8)) / 8)
        loss = gg.sum(gg.tanh(gg.sigmoid(x @ W) * 2.0 - 1.0))
        X = np.linspace(-1, 1, 40).reshape(5, 8)
        for _ in range(3):
            g = gg.gradients(loss, [W], feed={x: X})[0]
        (prog,) = [p for s in loss._schedules.values() for p in s.programs.values()]
        fns = [prog.fn.__globals__[n] for n, _ in prog.kernels]
        print(prog.tier, len(fns), sum(sum(f.stats.cache_hits.values()) > 0 for f in fns),
              float(np.sum(g)))
    """)
    env = dict(os.environ, GPUGRAD_JIT="now", GPUGRAD_CACHE_DIR=str(tmp_path),
               GPUGRAD_BACKEND="numpy")
    first, second = (subprocess.run([sys.executable, "-c", script], env=env, text=True,
                                    capture_output=True, timeout=300) for _ in range(2))
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    t1, n1, hits1, s1 = first.stdout.split()
    t2, n2, hits2, s2 = second.stdout.split()
    assert t1 == t2 == "native" and int(n1) >= 1 and n1 == n2
    assert int(hits1) == 0 and int(hits2) == int(n2)
    assert s1 == s2


def test_a_program_that_went_native_before_starts_native_at_once(tmp_path):
    """Tiered (GPUGRAD_JIT=1): a process whose program went hot and native leaves a marker
    in the cache; the next process with the same program builds its native tier from its
    first planned run (in the background, from the cache), long before it is hot."""
    script = textwrap.dedent("""
        import sys, numpy as np, gpugrad as gg
        from gpugrad.compiler import tier
        tier.HOT_RUNS, tier.HOT_SECONDS = int(sys.argv[1]), 0.0
        x = gg.Placeholder((None, 8), "float64")
        W = gg.Variable(np.ones((8, 8)) / 8)
        loss = gg.sum(gg.tanh(gg.sigmoid(x @ W) * 2.0 - 1.0))
        X = np.linspace(-1, 1, 40).reshape(5, 8)
        for _ in range(int(sys.argv[2])):
            g = gg.gradients(loss, [W], feed={x: X})[0]
        tier.wait(120)
        (prog,) = [p for s in loss._schedules.values() for p in s.programs.values()]
        print(prog.tier, prog.runs, float(np.sum(g)))
    """)
    env = dict(os.environ, GPUGRAD_JIT="1", GPUGRAD_CACHE_DIR=str(tmp_path),
               GPUGRAD_BACKEND="numpy")

    def run(hot_runs, runs):
        got = subprocess.run([sys.executable, "-c", script, str(hot_runs), str(runs)],
                             env=env, text=True, capture_output=True, timeout=300)
        assert got.returncode == 0, got.stderr
        return got.stdout.split()

    assert run(10**6, 3)[0] == "numpy"  # never hot: no marker
    assert run(10**6, 3)[0] == "numpy"
    assert run(64, 130)[0] == "native"  # hot: native, marked
    tier_, runs, _ = run(10**6, 2)  # never hot, yet native from the first planned run
    assert tier_ == "native" and int(runs) == 1


def test_a_hot_optimizer_step_goes_native_in_the_background(tiered):
    """``opt.step()`` is offered the native tier once, at its first planned step, and ticks
    like a program: once hot, a thread makes its kernel; no step waits for it."""
    model = nn.MLP([5, 7, 3], seed=2, dtype="float64")
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    X, Y = np.random.default_rng(4).standard_normal((6, 5)), np.arange(6) % 3
    for _ in range(200):
        opt.zero_grad()
        nn.cross_entropy(model(gg.asarray(X)), Y).backward()
        opt.step()
    tier.wait(120)
    assert opt._scratch.native and opt._scratch.remake is None


def test_two_threads_loading_one_module_both_get_its_kernels(monkeypatch, tmp_path):
    """The first load of a module compiles its kernels (seconds); a second thread asking for
    the same module meanwhile waits for it instead of getting it half made."""
    from gpugrad.compiler import native
    from gpugrad.compiler.fuse import Group

    monkeypatch.setenv("GPUGRAD_CACHE_DIR", str(tmp_path))
    g = Group([("y", ("multiply", ("name", "x"), ("const", 3.0)))], (4,),
              np.dtype("float64"), [("x", (4,))], ["y"])
    source = native.module_source([("N0", g)]) + "\n# two threads\n"
    start = threading.Barrier(2)
    got = []

    def work():
        start.wait()
        got.append(native.load(source))

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(got) == 2 and got[0] is got[1]
    y = np.empty(4)
    assert not got[1].N0(np.arange(4.0), y) and y.tolist() == [0.0, 3.0, 6.0, 9.0]
