"""Guards: what a ``gg.compile`` trace read from outside its arguments, checked on each call.

A trace bakes in what the traced function read besides its arguments. :func:`guard_of` lists
those reads before the trace, from the function's code (no run, no profiling hook), and
returns one generated check, so that a call whose reads changed traces again:

- the function's **closure cells** (``co_freevars``), every one;
- the **globals** its code loads (``LOAD_GLOBAL``, in its own code and the code objects nested
  in it: lambdas, comprehensions, inner functions); names missing from the module (builtins)
  are not guarded;
- **module attributes** read from those, ``np.pi`` or ``settings.scale`` or ``gg.nn.relu``
  (a closure cell or global holding a module, then ``.name``, then again while the value
  is a module); attributes of other objects (``self.lr``, ``cfg.scale``) are not guarded;
- the same, recursively, for **plain functions** reached through those reads that are defined
  in the same module as the compiled function (helpers, nested closures) and for compiled
  functions it calls (they are traced through); library code is not looked into.

Names the code assigns (``global n; n += 1``, ``nonlocal``) are not guarded: the compiled
function does not run its Python again, and guarding them would trace on every call.

How each value read is compared with the value the trace saw:

- Python numbers, bools, strings, bytes and None, and tuples of them: by type and value;
- Tensors: by identity and ``requires_grad``; a Tensor that does not require gradients also by
  its version (an in-place write traces again, so a value read on the host during the trace,
  ``float(t)``, is never stale). A Variable is not versioned: the compiled code reads its
  current value on every call, as before;
- anything else (NumPy arrays, modules, functions, models, lists): by identity only. Their
  contents are read when the compiled code runs: an array written in place is seen by the
  next call, without a new trace, as a Variable is.

>>> import gpugrad as gg
>>> scale = 2.0
>>> f = gg.compile(lambda x: gg.sum(x * scale))
>>> float(f(gg.asarray([1.0, 2.0, 3.0])))
12.0
>>> scale = 10.0
>>> float(f(gg.asarray([1.0, 2.0, 3.0])))
60.0
>>> f.cache_info().retraces
1
"""

from __future__ import annotations

import dis
import functools
import types
from typing import Any, Callable

from .. import versions
from ..tensor import Tensor

_VALUES = (int, float, complex, bool, str, bytes, type(None))
_LOADS = frozenset({"LOAD_GLOBAL", "LOAD_DEREF", "LOAD_CLASSDEREF"})
_ATTRS = frozenset({"LOAD_ATTR", "LOAD_METHOD"})
_MISSING = object()


def guard_of(fn: Callable, compiled: type) -> Callable[[], bool] | None:
    """A check that the values ``fn`` reads from outside its arguments are still the ones
    they are now (True: the trace made now still holds), or None when it reads none.
    ``compiled``: the class of compiled functions, whose ``fn`` is looked into."""
    reads: list = []
    seen: set = set()
    first = _function(fn)
    module = None if first is None else first.__globals__
    todo = [first]
    while todo:
        f = todo.pop()
        if f is None or id(f) in seen:
            continue
        seen.add(id(f))
        for value in _reads_of(f, reads):
            if isinstance(value, compiled):
                todo.append(_function(value.fn))
            elif type(value) is types.FunctionType and value.__globals__ is module:
                todo.append(value)
    return _generate(reads) if reads else None


def _function(fn: Any) -> types.FunctionType | None:
    """The plain Python function behind ``fn`` (a bound method's, a partial's), if any."""
    while True:
        if type(fn) is types.FunctionType:
            return fn
        if isinstance(fn, types.MethodType):
            fn = fn.__func__
        elif isinstance(fn, functools.partial):
            fn = fn.func
        else:
            return None


def _reads_of(f: types.FunctionType, reads: list) -> list:
    """Append ``f``'s reads to ``reads`` as (source, value) pairs; return the values (for
    the functions to look into). A source is ("cell", cell), ("global", dict, name) or
    ("attr", module dict, name)."""
    code = f.__code__
    cells = dict(zip(code.co_freevars, f.__closure__ or ()))
    g = f.__globals__
    stored, loads = _scan(code)
    values = []

    def read(source: tuple, value: Any) -> None:
        reads.append((source, value))
        values.append(value)

    for name, cell in cells.items():
        if name in stored:
            continue
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell (not assigned yet): nothing to guard
            continue
        read(("cell", cell, name), value)
    for op, name, attrs in loads:
        if name in stored:
            continue
        if op == "LOAD_GLOBAL":
            value = g.get(name, _MISSING)
            if value is _MISSING:
                continue
            read(("global", g, name), value)
        else:
            cell = cells.get(name)
            if cell is None:
                continue
            try:
                value = cell.cell_contents
            except ValueError:
                continue
        for attr in attrs:  # mod.a.b: guard each step while it is a module's attribute
            if type(value) is not types.ModuleType:
                break
            d = value.__dict__
            value = d.get(attr, _MISSING)
            if value is _MISSING:
                break
            read(("attr", d, attr), value)
    return values


def _scan(code: types.CodeType) -> tuple:
    """(names ``code`` assigns as globals or closure cells, [(load op, name, the attribute
    names read from it in a row)]) over ``code`` and the code objects nested in it."""
    stored: set = set()
    loads: list = []
    stack = [code]
    while stack:
        c = stack.pop()
        stack.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
        current = None
        for ins in dis.get_instructions(c):
            op = ins.opname
            if op in _ATTRS and current is not None:
                current[2].append(ins.argval)
                continue
            current = None
            if op in ("STORE_GLOBAL", "DELETE_GLOBAL", "STORE_DEREF", "DELETE_DEREF"):
                stored.add(ins.argval)
            elif op in _LOADS and (op == "LOAD_GLOBAL" or ins.argval in code.co_freevars):
                current = (op if op == "LOAD_GLOBAL" else "LOAD_DEREF", ins.argval, [])
                loads.append(current)
    return stored, loads


def _generate(reads: list) -> Callable[[], bool]:
    """One function that compares every read, made once per trace: a few identity and
    equality tests, with every object it needs bound as a default argument (a local)."""
    env: dict = {"_MISSING": _MISSING}
    tests = []
    for k, (source, value) in enumerate(reads):
        kind = source[0]
        if kind == "cell":
            env[f"s{k}"] = source[1]
            get = f"s{k}.cell_contents"
        else:
            env[f"s{k}"] = source[1]
            get = f"s{k}.get({source[2]!r}, _MISSING)"
        env[f"v{k}"] = value
        tests.append(_test(k, get, value, env))
    params = ", ".join(f"{name}={name}" for name in env)
    body = " and\n            ".join(tests)
    src = (f"def check({params}):\n    try:\n        return ({body})\n"
           "    except Exception:\n        return False\n")
    namespace: dict = {}
    exec(compile(src, "<gg.compile guards>", "exec"), env, namespace)  # noqa: S102
    check = namespace["check"]
    check.reads = tuple(_describe(source) for source, _ in reads)
    return check


def _test(k: int, get: str, value: Any, env: dict) -> str:
    """The comparison of read ``k`` (``get`` reads it now) with ``value``, the trace's."""
    if _is_value(value):
        env[f"t{k}"] = type(value)
        return f"((x := {get}) is v{k} or (type(x) is t{k} and x == v{k}))"
    if isinstance(value, Tensor):
        env[f"g{k}"] = value.requires_grad
        test = f"{get} is v{k} and v{k}.requires_grad is g{k}"
        if not value.requires_grad:  # its version: a write in place traces again
            env[f"n{k}"] = versions.version_of(value)
            env[f"c{k}"] = env[f"n{k}"].count
            test += f" and v{k}._vlog is n{k} and n{k}.count == c{k}"
        return f"({test})"
    return f"{get} is v{k}"


def _is_value(value: Any) -> bool:
    if type(value) is tuple:
        return all(_is_value(v) for v in value)
    return type(value) in _VALUES


def _describe(source: tuple) -> str:
    if source[0] == "cell":
        return f"closure variable {source[2]}"
    if source[0] == "global":
        return f"global {source[2]}"
    return f"module attribute {source[2]}"
