"""Tiers: a planned program starts as NumPy code and goes native once it is hot.

The first tier is the planned NumPy program (gpugrad.compiler.program): it runs from the
second call on, and it is what runs wherever numba is not installed or ``GPUGRAD_JIT=0``.
A program is *hot* once it has run :data:`HOT_RUNS` times and :data:`HOT_SECONDS` have
passed since its first run; then a background thread builds its native tier (the same
program with each fusion group as one kernel, gpugrad.compiler.native), compiles it (or
loads it from the disk cache) and switches the program over between two runs. No run
waits for a compile: until the switch, the NumPy tier runs. A program that went native
before, in this process or another (its kernels are in the disk cache, and a marker named by
its NumPy source says so), starts its native tier at once instead, still in the background.

``GPUGRAD_JIT``: unset or ``1``, as above; ``0``, never native; ``now``, native from the
first planned run, compiled before it (for tests and benchmarks).

>>> import os
>>> mode() in ("0", "1", "now")
True
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import threading
import time
import warnings
from typing import Any, Callable

from . import native

HOT_RUNS = 256
"""Runs before a program may go native (checked every 64 runs)."""
HOT_SECONDS = 1.0
"""Seconds from a program's first run before it may go native."""

_threads: list = []
_lock = threading.Lock()


def mode() -> str:
    got = os.environ.get("GPUGRAD_JIT", "1").strip().lower()
    return got if got in ("0", "now") else "1"


def available() -> bool:
    """Whether the native tier can run here (numba is installed and not turned off)."""
    global _numba
    if _numba is None:
        _numba = importlib.util.find_spec("numba") is not None
    return mode() != "0" and _numba


_numba: bool | None = None  # whether numba is installed (looked up once)


def offer(obj: Any, make: Callable) -> None:
    """Give ``obj`` (a NumPy-tier program, an optimizer's planned step: it has ``runs``,
    ``first`` and ``remake``) the way to its native tier, ``make(obj)``, which builds it and
    puts it in place. With ``GPUGRAD_JIT=now`` that happens now; read once, here. A program
    that went native before (:func:`gpugrad.compiler.native.was_native`) starts it in the
    background now, instead of once hot."""
    if not available():
        return
    if mode() == "now":
        make(obj)
        return
    source = getattr(obj, "source", None)
    if source is not None and native.was_native(source):  # built before: go at once
        background(make, obj)
        return
    obj.remake = make


def hot(obj: Any) -> bool:
    """Called every 64th run of ``obj`` (a program, an optimizer's planned step: it has
    ``runs`` and ``first``): whether it is hot now."""
    now = time.perf_counter()
    if obj.first is None:
        obj.first = now
        return False
    return obj.runs >= HOT_RUNS and now - obj.first >= HOT_SECONDS


def background(target: Callable, *args: Any) -> None:
    """Run ``target(*args)`` on a daemon thread that :func:`wait` can join."""
    t = threading.Thread(target=target, args=args, daemon=True, name="gpugrad native tier")
    with _lock:
        _threads.append(t)
    t.start()


def tick(obj: Any) -> None:
    """Called every 64th run of ``obj`` while it has a ``remake``: start its native tier
    once it is hot."""
    if hot(obj):
        make, obj.remake = obj.remake, None
        background(make, obj)


def compiled(kernels: list) -> Any:
    """The module of ``kernels`` (``(name, kernel)`` each), compiled or from the cache;
    None, with a warning saying why, where it cannot be built."""
    try:
        return native.load(native.module_source(kernels))
    except Exception as e:
        _cannot(e)
        return None


def _cannot(e: Exception) -> None:
    """Say once why the native tier could not be built: the NumPy code goes on."""
    warnings.warn(f"gpugrad: the native tier could not be built ({type(e).__name__}: {e}); "
                  "the NumPy code goes on", RuntimeWarning, stacklevel=3)


def switch(remake: Callable, prog: Any) -> None:
    """Build (``remake()``), compile and bind the native program, then put it in
    ``prog``'s place (between two runs)."""
    try:
        new = remake()
    except Exception as e:
        _cannot(e)
        return
    if new.kernels:
        module = compiled(new.kernels)
        if module is None:
            return
        new.fn.__globals__.update({n: getattr(module, n) for n, _ in new.kernels})
    native.mark_native(prog.source)
    with prog.busy:
        prog.fn, prog.buffers, prog.source = new.fn, new.buffers, new.source
        prog.frames, prog.lead = new.frames, new.lead
        prog.kernels, prog.tier = new.kernels, "native"


def wait(timeout: float | None = None) -> None:
    """Wait for the native tiers being built now (benchmarks call it after warming up)."""
    with _lock:
        running = list(_threads)
        _threads.clear()
    for t in running:
        t.join(timeout)


atexit.register(wait, 60.0)  # a compile under way finishes before the interpreter goes
