"""The optimizer's update of every parameter as one native kernel (gpugrad.compiler.native),
from the element update the optimizer's form writes for CUDA (gpugrad.optim_rule)."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from .native import array_type


DONE, REFUSED, OVERFLOWED = 0, 1, 2
"""What an update kernel returns."""


class Update:
    """An optimizer's update of several parameters as one kernel: ``body`` is the update of
    one element as the optimizer's form writes it for CUDA (gpugrad.optim_rule: lines
    ``T n4 = (h2 * S0);`` and ``P = n25;``), ``hoisted`` the per-step scalars it reads
    (``h2``, ...), ``states`` how many state arrays a parameter has, ``params`` each
    parameter's number of dimensions, all of ``dtype``. The kernel returns :data:`DONE`,
    or :data:`OVERFLOWED` where a new parameter value is infinite or NaN from a finite one
    and a finite gradient (everything is written: the caller reports it as NumPy's error
    state says). ``eager``: the kernel of the eager step (gpugrad.optim_in_place), whose
    arrays nothing planned: it first checks that each gradient and state has its parameter's
    shape (it returns :data:`REFUSED`, having written nothing, where one does not), and it
    takes the scalars once, after every parameter's arrays, for all of them (the parameters
    have had as many updates)."""

    def __init__(self, body: str, hoisted: list, states: int, params: list, dtype: Any,
                 eager: bool = False):
        self.body, self.hoisted, self.states = body, hoisted, states
        self.params, self.dtype, self.eager = params, np.dtype(dtype), eager

    @classmethod
    def of_form(cls, form: Any, ndims: list, dtype: Any, eager: bool = False) -> Update:
        """The update of parameters of ``ndims`` dimensions by an optimizer's form
        (gpugrad.optim_rule.Form: its CUDA parts, ``T G, T h2, ...`` in, ``T P, T S0, ...``
        out, and the body)."""
        return cls(*form.element(), ndims, dtype, eager)

    def describe(self) -> str:
        return f"the optimizer's update of {len(self.params)} parameters"

    def args(self, j: int) -> list:
        return [f"P{j}", f"G{j}", *(f"S{j}_{k}" for k in range(self.states)),
                *(() if self.eager else (f"H{j}_{h}" for h in self.hoisted))]

    def source(self, name: str) -> str:
        """Its numba source: for each parameter one loop, reading an element of ``P``, ``G``
        and each state, computing the form's lines in the parameter's dtype (the scalars
        converted to it first, as NumPy converts a Python float), writing the new values."""
        dt = self.dtype.name
        sig, args, lines = [], [], []
        for j, ndim in enumerate(self.params):
            args += self.args(j)
            sig += [array_type(dt, ndim, True), array_type(dt, ndim)] + [
                array_type(dt, ndim, True)] * self.states + ["types.float64"] * len(
                () if self.eager else self.hoisted)
        if self.eager:
            args += [f"H_{h}" for h in self.hoisted]
            sig += ["types.float64"] * len(self.hoisted)
            for j, _ in enumerate(self.params):  # every shape, before anything is written
                lines += [f"    if G{j}.shape != P{j}.shape:", f"        return {REFUSED}",
                          *(line for k in range(self.states) for line in (
                              f"    if S{j}_{k}.shape != P{j}.shape:",
                              f"        return {REFUSED}"))]
        lines.append("    over = False")
        for j, _ in enumerate(self.params):
            rename = {"P": f"eP{j}", "G": f"eG{j}",
                      **{f"S{k}": f"eS{j}_{k}" for k in range(self.states)},
                      **{h: f"c{j}_{h}" for h in self.hoisted}}
            lines += [f"    p{j} = P{j}.ravel()", f"    g{j} = G{j}.ravel()",
                      *(f"    s{j}_{k} = S{j}_{k}.ravel()" for k in range(self.states)),
                      *(f"    c{j}_{h} = np.{dt}(H{'' if self.eager else j}_{h})"
                        for h in self.hoisted),
                      f"    for i{j} in range(p{j}.shape[0]):",
                      f"        eP{j} = p{j}[i{j}]", f"        eG{j} = g{j}[i{j}]",
                      *(f"        eS{j}_{k} = s{j}_{k}[i{j}]" for k in range(self.states))]
            for stmt in self.body.split(";"):
                stmt = stmt.strip()
                if not stmt:
                    continue
                target, expr = (x.strip() for x in stmt.split("=", 1))
                expr = re.sub(r"\b(sqrt)\(", "np.sqrt(", expr)
                expr = re.sub(r"\b[A-Za-z_]\w*\b",
                              lambda m: rename.get(m.group(0), m.group(0)), expr)
                if target.startswith("T "):
                    var = target[2:].strip()
                    lines.append(f"        {var}_{j} = np.{dt}({_suffix(expr, j)})")
                else:
                    dest = {"P": f"p{j}"}.get(target) or f"s{j}_{target[1:]}"
                    lines.append(f"        {dest}[i{j}] = {_suffix(expr, j)}")
            # an infinity or NaN made of a finite parameter and gradient: NumPy would report
            lines.append(f"        over |= (p{j}[i{j}] - p{j}[i{j}] != 0) & (eP{j} - eP{j} == 0)"
                         f" & (eG{j} - eG{j} == 0)")
        head = [f'@njit(types.int64({", ".join(sig)}),',
                '      nogil=True, error_model="numpy", cache=True)',
                f"def {name}({', '.join(args)}):"]
        return "\n".join(head + lines + [f"    return {OVERFLOWED} if over else {DONE}"])


def _suffix(expr: str, j: int) -> str:
    """The form's temporaries ``n4`` as this parameter's own (``n4_0``)."""
    return re.sub(r"\bn(\d+)\b", lambda m: f"n{m.group(1)}_{j}", expr)
