"""Straight-line Python for a compiled schedule: one line per forward step, a few per
backward step, no interpreter loop and no per-step lookups. ``Schedule.source`` shows it.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import numpy as np

from ..eager import as_array, fit
from ..registry import gradient_tuple
from . import listing


def _args(ins: tuple, k: int, params: dict) -> str:
    parts = [f"v[{i}]" for i in ins]
    if params:
        parts.append(f"**P{k}")
    return ", ".join(["xp", *parts])


def forward_source(steps: list, keep_res: list, frees: list, numpy: bool,
                   labels: list | None = None) -> tuple[str, dict]:
    """``forward(xp, v, res, meta, grads)`` running every step in order. ``labels``: each
    step's (op name, ``file:line``), its lines' tag (gpugrad.compiler.listing)."""
    env: dict[str, Any] = {"ndarray": np.ndarray, "asarray": np.asarray}
    lines = ["def forward(xp, v, res, meta, grads):"]
    for k, (fwd, ins, params, out) in enumerate(steps):
        env[f"F{k}"] = fwd
        if params:
            env[f"P{k}"] = params
        step = [f"    o, r = F{k}({_args(ins, k, params)})"]
        if numpy:
            step.append("    v[%d] = o if type(o) is ndarray else asarray(o)" % out)
        else:
            step.append(f"    v[{out}] = o")
        if keep_res[k]:
            step.append(f"    if grads: res[{k}] = r")
        for i in frees[k]:
            step.append(f"    o = v[{i}]; meta[{i}] = (o.shape, o.dtype); v[{i}] = None")
        lines += listing.tagged(step, listing.tag(*labels[k]) if labels else "")
    lines.append("    return None")
    return "\n".join(lines), env


def backward_source(back: list, backend: str, numpy: bool, freed: set,
                    labels: list | None = None) -> tuple[str, dict]:
    """``backward(xp, v, res, meta, gv)`` running the VJP steps in reverse order (``labels``
    as for :func:`forward_source`)."""
    env: dict[str, Any] = {"ndarray": np.ndarray, "fit": fit, "as_array": as_array,
                           "check": gradient_tuple}
    lines = ["def backward(xp, v, res, meta, gv):"]
    for k, out, drop, op, params, ins, needs in back:
        start = len(lines)
        if params:
            env[f"P{k}"] = params
        kw = f", **P{k}" if params else ""
        lines += [f"    g = gv[{out}]", "    if g is not None:"]
        if drop:
            lines.append(f"        gv[{out}] = None")
        lines.append(f"        r = res[{k}]; res[{k}] = None")
        fast = op.fast_vjp.get(backend) if op.fast_vjp else None
        wanted = [(pos, ins[pos]) for pos, need in enumerate(needs) if need]
        if fast is None and op.vjps is not None:
            for pos, slot in wanted:
                env[f"R{k}_{pos}"] = op.vjps[pos]
                lines.append(f"        gi = R{k}_{pos}(xp, g, r{kw})")
                lines += _accumulate(slot, numpy, slot in freed)
        else:
            env[f"R{k}"] = fast or op.vjp
            env[f"N{k}"] = op.name
            lines.append(f"        gs = check(R{k}(xp, g, r{kw}), N{k})")
            for pos, slot in wanted:
                lines.append(f"        gi = gs[{pos}]")
                lines += _accumulate(slot, numpy, slot in freed)
        if labels:
            lines[start:] = listing.tagged(lines[start:], listing.tag(*labels[k], "vjp"))
    lines.append("    return None")
    return "\n".join(lines), env


def _accumulate(slot: int, numpy: bool, freed: bool) -> list[str]:
    """Fit ``gi`` to the input's shape and dtype, then add it into ``gv[slot]``. Whether the
    input's value was dropped after the forward sweep is known when compiling."""
    where = (f"shape, dtype = meta[{slot}]" if freed
             else f"o = v[{slot}]; shape = o.shape; dtype = o.dtype")
    # builtin NumPy dtypes are singletons, so `is` is the cheap exact test; anything else
    # goes through fit, which compares properly
    same = ("type(gi) is ndarray and gi.shape == shape and gi.dtype is dtype" if numpy
            else "False")
    return [
        "        if gi is not None:",
        f"            {where}",
        f"            if not ({same}):",
        "                gi = fit(xp, gi, shape, dtype)",
        "            if gi is not None:",
        f"                o = gv[{slot}]",
        f"                gv[{slot}] = gi if o is None else as_array(xp, o + gi)",
    ]


def build(source: str, env: dict, name: str) -> Callable:
    """The function ``name`` that ``source`` defines, run in a copy of ``env``. Tracebacks,
    pdb and ``GPUGRAD_SOURCE_DIR`` see its lines (gpugrad.compiler.listing)."""
    namespace = dict(env)
    filename = listing.register(source, name)
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102
    fn = namespace[name]
    listing.forget(fn, filename)
    return fn


_BUFFER = re.compile(r"\bB(\d+)\b")
_LOAD = re.compile(r"    B(\d+) = B\[\1\]")


def used_buffers(lines: list, head: int) -> tuple[str, int]:
    """A planned program's ``lines`` as source, without the lines of its head (the first
    ``head``) that load a buffer (``    B3 = B[3]``) no later line names (a native kernel
    over a table of addresses takes its buffers from ``B`` itself), and the new length of
    the head.

    >>> src, head = used_buffers(["def f(B):", "    B0 = B[0]", "    B1 = B[1]", "    return B1"],
    ...                          3)
    >>> src.splitlines(), head
    (['def f(B):', '    B1 = B[1]', '    return B1'], 2)
    """
    named = set(_BUFFER.findall("\n".join(lines[head:])))
    kept = [line for line in lines[:head]
            if (m := _LOAD.fullmatch(line)) is None or m.group(1) in named]
    return "\n".join(kept + lines[head:]), len(kept)
