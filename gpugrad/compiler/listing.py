"""Generated code a person can read and step through.

- Every line the compiler generates ends with a tag naming the op and the user's line that
  made it (``# sigmoid  model.py:12``; a backward line ``# sigmoid (vjp)  model.py:12``; an
  optimizer's ``# SGD update``). Tags are comments: the code runs the same with or without.
- :func:`register` gives each generated module a file name of its own and puts its lines
  in ``linecache``, so tracebacks and pdb show them; with ``GPUGRAD_SOURCE_DIR=dir`` the
  module is written to ``dir`` instead (one file per distinct source, named by a hash of
  it) and compiled under that real path, where a debugger can set breakpoints.
- :func:`listing` is what ``.source`` hands the user: a program's source, then the source
  of each kernel it calls (the optimizer's in-place update).

>>> tag("sigmoid", "model.py:12", "vjp")
'sigmoid (vjp)  model.py:12'
>>> tagged(["v5 = np.exp(v4, B0)"], "sigmoid  model.py:12")
['v5 = np.exp(v4, B0)  # sigmoid  model.py:12']
>>> untagged("v5 = np.exp(v4, B0)  # sigmoid  model.py:12")
'v5 = np.exp(v4, B0)'
"""

from __future__ import annotations

import hashlib
import itertools
import linecache
import os
import weakref
from typing import Any

from . import native

MARK = "  # "
"""What separates a generated line from its tag (generated code has no ``#`` otherwise)."""

_serial = itertools.count(1)


def tag(op: str, site: str | None = None, role: str = "") -> str:
    """The tag of code for ``op`` built at ``site`` (``file.py:line``); ``role`` says which
    part of it (``"vjp"``)."""
    text = f"{op} ({role})" if role else op
    if site and site != "<unknown>":
        text = f"{text}  {site}"
    return text.replace("\n", " ")


def tagged(lines: list, text: str) -> list:
    """``lines`` each ending with the comment ``text`` (as they are where it is empty)."""
    if not text:
        return lines
    return [f"{line}{MARK}{text}" for line in lines]


def untagged(source: str) -> str:
    """``source`` without its tags: the code alone, line for line."""
    return "\n".join(line.split(MARK, 1)[0] for line in source.split("\n"))


class Tags:
    """The tags of a schedule's instructions: ``step(k, role)`` for step ``k``'s code,
    ``value(slot, role)`` for code about a value (its producer's step, or the name of the
    Variable or Placeholder it is)."""

    def __init__(self, sched: Any) -> None:
        self.sched = sched
        self.producer = {o: k for k, (*_, o) in enumerate(sched.steps)}
        self.names = {s: getattr(a, "name", None) or "input"
                      for s, a in (*sched.placeholders, *sched.tensors)}

    def step(self, k: int, role: str = "") -> str:
        return tag(self.sched.steps[k][0].name, self.sched.sites[k], role)

    def value(self, slot: int, role: str) -> str:
        k = self.producer.get(slot)
        return self.step(k, role) if k is not None else \
            tag(self.names.get(slot, "input"), None, role)


def label(prog: list, start: int, text: str) -> None:
    """Tag the instructions ``prog[start:]`` (gpugrad.compiler.plan.Instr) that have none."""
    for ins in prog[start:]:
        if not ins.tag:
            ins.tag = text


def register(source: str, name: str) -> str:
    """The file name to compile generated ``source`` under (``name``: what it defines). Its
    lines go into ``linecache`` (removed by :func:`forget` when the code is gone); with
    ``GPUGRAD_SOURCE_DIR`` set (read on every call, at compile time only) the module is
    written there and its real path returned."""
    folder = os.environ.get("GPUGRAD_SOURCE_DIR")
    if folder:
        digest = hashlib.sha256(source.encode()).hexdigest()[:16]
        path = os.path.abspath(os.path.join(folder, f"gpugrad_{name}_{digest}.py"))
        if not os.path.exists(path):
            tmp = f"{path}.{os.getpid()}.tmp"
            try:
                os.makedirs(folder, exist_ok=True)
                with open(tmp, "w", encoding="utf-8") as f:
                    f.write(source + "\n")
                os.replace(tmp, path)  # another process writing it writes the same text
            except OSError as exc:
                raise OSError(f"GPUGRAD_SOURCE_DIR={folder!r}: cannot write the generated "
                              f"module {path}: {exc}; set it to a writable folder, or unset "
                              "it") from exc
        return path
    filename = f"<gpugrad {name} {next(_serial)}>"
    lines = [line + "\n" for line in source.split("\n")]
    linecache.cache[filename] = (len(source), None, lines, filename)  # mtime None: kept
    return filename


def forget(fn: Any, filename: str) -> None:
    """Drop ``filename``'s lines from ``linecache`` once the function ``fn`` is collected."""
    if filename.startswith("<"):
        weakref.finalize(fn, _release, filename)


def _release(filename: str) -> None:
    """Free the lines of a generated module whose code is gone, keeping its (empty) entry: a
    finalizer runs whenever the collector does, maybe while ``linecache.checkcache`` looks up
    the names it listed a moment before, and a name gone from the cache would raise there."""
    if filename in linecache.cache:
        linecache.cache[filename] = (0, None, [], filename)


def listing(prog: Any) -> str:
    """The readable text of a planned program (``gpugrad.compiler.program.Program``) or of a
    schedule's generic code (``Schedule``): its source, then each kernel it calls."""
    parts = [prog.source]
    fn = getattr(prog, "fn", None)
    low = fn.__globals__.get("LOW") if fn is not None else None
    if low is not None and "UF_[" in prog.source:  # an optimizer's update, per parameter
        parts.append(f"# UF_[i], the {type(low.opt).__name__} update of parameter i "
                     f"(from {type(low.opt).__name__}.formula):\n{low.later.source}")
    for name, kernel in getattr(prog, "kernels", ()) if getattr(prog, "tier", "") == "native" \
            else ():
        parts.append(f"# {name}, {native.describe(kernel)} (native tier, numba):\n"
                     f"{native.source_of(name, kernel)}")
    return "\n\n".join(parts)
