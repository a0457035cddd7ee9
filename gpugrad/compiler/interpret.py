"""A compiled schedule run one step at a time, with checks between the steps.

A schedule's first run goes through here, and so does every run inside ``detect_anomaly``.
It uses the same rules as the generated code, in the same order, so it gets the same
numbers; between steps it checks what the straight-line code cannot afford to:

- float32 meeting float64 in a step (the Placeholders' dtypes are fixed, so one run settles
  it for every later run);
- in anomaly mode, NaN or Inf made by a step's forward or backward.

Each error names the op and the place where the graph's op was built.
"""

from __future__ import annotations

from typing import Any, Mapping

from .. import backend as B
from .. import diagnose as D
from .. import errors as E
from ..eager import vjp
from ..fpstate import quiet
from ..shaping import as_array, fit


def check_dtypes(op: Any, args: list, out: Any, xp: Any, site: str) -> None:
    """Raise DtypeError where two array inputs of different dtypes changed a float input's
    precision (Python scalars are weak and never count)."""
    dtypes = [a.dtype for a in args if hasattr(a, "dtype")]
    if len(dtypes) > 1 and any(d != dtypes[0] for d in dtypes) and B.is_inexact(xp, out.dtype):
        why = D.promotion_problem(op.name, args, out.dtype, xp)
        if why is not None:
            raise E.DtypeError(E.at(why, site))


def checked_forward(sched: Any, feed: Mapping, grads: bool, hook: Any) -> tuple[list, list]:
    """One forward sweep of ``sched``, step by step: ``(values, residuals)``. ``hook`` is
    the anomaly checker, or None."""
    xp = sched.xp
    vals = sched.template[:]
    sched._feeds(feed, vals)
    pending = set(sched.scalars_pending)
    res: list = [None] * len(sched.fsteps)
    for k, (fwd, ins, params, out, _) in enumerate(sched.fsteps):
        op, site = sched.ops[k], sched.sites[k]
        if k in pending:  # the step's inputs have values now: its weak scalars follow them
            sched._convert_scalars(vals, k)
        args = [vals[i] for i in ins]
        try:
            o, r = fwd(xp, *args, **params)
        except (ValueError, TypeError, IndexError) as exc:
            if isinstance(exc, (E.OpError, E.DtypeError, B.BackendError)):
                raise
            raise D.op_error(op.name, op.__signature__, args, params, exc, site) from exc
        o = as_array(xp, o)
        check_dtypes(op, args, o, xp, site)
        if hook is not None:
            hook.forward(op, args, o, None, site)
        vals[out] = o
        if grads:
            res[k] = r
    sched.scalars_pending = []
    return vals, res


def checked_backward(sched: Any, vals: list, res: list, gv: list, hook: Any) -> None:
    """The VJP sweep of ``sched``, step by step, adding into ``gv`` (seeded at the output)."""
    xp = sched.xp
    with quiet(xp):  # a tiny gradient is not an error (see gpugrad.fpstate)
        for k, out, _, op, params, ins, needs in sched.back:
            g = gv[out]
            if g is None:
                continue
            gs = vjp(op, xp, g, res[k], needs, params, sched.backend)
            if hook is not None:
                hook.backward(op, needs, res[k], g, gs, sched.sites[k])
            res[k] = None
            for pos, need in enumerate(needs):
                gi = gs[pos] if need else None
                if gi is None:
                    continue
                src = vals[ins[pos]]
                gi = fit(xp, gi, tuple(src.shape), src.dtype)
                if gi is not None:
                    prev = gv[ins[pos]]
                    gv[ins[pos]] = gi if prev is None else as_array(xp, prev + gi)
