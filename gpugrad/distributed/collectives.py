"""Collectives on backend arrays and Tensors: ``all_reduce``, ``broadcast`` and
``broadcast_parameters``. None of them is differentiated: their results are constants."""

from __future__ import annotations

from typing import Any, Iterable

from .. import backend as B
from .. import versions
from ..tensor import Tensor, no_grad
from .group import DistributedError, Group, init

OPS = ("sum", "mean", "max")


def _unwrap(x: Any, who: str) -> tuple[Any, bool]:
    if isinstance(x, Tensor):
        return x.data, True
    if B.is_backend_array(x):
        return x, False
    raise TypeError(f"{who}: expected a backend array or a Tensor, got {type(x).__name__}; "
                    "wrap host data with gpugrad.asarray first")


def _flat(xp: Any, a: Any) -> Any:
    return xp.reshape(a, (-1,)) if a.ndim != 1 else a


def all_reduce(x: Any, op: str = "sum", *, group: Group | None = None) -> Any:
    """Combine ``x`` elementwise over every rank of the group: ``"sum"``, ``"mean"`` or
    ``"max"``. Every rank gets the result, with ``x``'s shape, dtype and device; a Tensor
    gives a Tensor, a backend array an array. ``x`` itself is not modified.

    Not differentiated: the result is a constant (no graph), even for a Variable.
    ``"mean"`` on an integer dtype is the floor of the mean (``sum // size``), so the dtype
    is kept; reduce with ``"sum"`` and divide yourself for a fractional mean.

    >>> import numpy as np, gpugrad as gg
    >>> gg.distributed.all_reduce(np.array([1.0, 2.0]), op="mean")  # a group of size 1
    array([1., 2.])
    """
    if op not in OPS:
        raise ValueError(f"all_reduce: unknown op {op!r}; choose one of {', '.join(OPS)}")
    a, is_tensor = _unwrap(x, "all_reduce")
    group = group or init()
    xp = B.namespace_of(a)
    out = group.start_allreduce(xp.asarray(_flat(xp, a), copy=True),
                                "max" if op == "max" else "sum").finish()
    if op == "mean" and group.size > 1:
        out = out / float(group.size) if B.is_floating(xp, out.dtype) else out // group.size
    out = xp.reshape(out, tuple(a.shape))
    return Tensor(out) if is_tensor else out


def broadcast(x: Any, root: int = 0, *, group: Group | None = None) -> Any:
    """Root's ``x`` on every rank (same shape, dtype and device as the local ``x``, which
    is not modified). A Tensor gives a Tensor. Not differentiated: the result is a constant.

    >>> import numpy as np, gpugrad as gg
    >>> gg.distributed.broadcast(np.arange(3))
    array([0, 1, 2])
    """
    a, is_tensor = _unwrap(x, "broadcast")
    group = group or init()
    if not 0 <= root < group.size:
        raise ValueError(f"broadcast: root {root} is not a rank of this group of size "
                         f"{group.size}")
    xp = B.namespace_of(a)
    out = group.start_broadcast(xp.asarray(_flat(xp, a), copy=True), root).finish()
    out = xp.reshape(out, tuple(a.shape))
    return Tensor(out) if is_tensor else out


def broadcast_parameters(module_or_params: Any, root: int = 0, *,
                         group: Group | None = None) -> None:
    """Overwrite every parameter with root's value, so all ranks start from the same point.

    Takes a ``gg.nn.Module`` or an iterable of Variables. Shapes and dtypes must already
    agree (they are checked first). Each parameter gets a new array and its version is
    bumped, as for any update.

    >>> import gpugrad as gg
    >>> model = gg.nn.Linear(2, 1, seed=0)
    >>> gg.distributed.broadcast_parameters(model)
    """
    params = _params(module_or_params, "broadcast_parameters")
    group = group or init()
    check_same_parameters(params, group, "broadcast_parameters")
    with no_grad():
        for p in params:
            p.data = broadcast(p.data, root, group=group)
            versions.rebound(p)


def _params(module_or_params: Any, who: str) -> list:
    if hasattr(module_or_params, "parameters"):
        params = list(module_or_params.parameters())
    else:
        params = list(module_or_params)
    for p in params:
        if not isinstance(p, Tensor):
            raise TypeError(f"{who}: expected Variables, got {type(p).__name__}")
    return params


def describe_parameters(params: Iterable[Tensor]) -> list:
    return [(p.name, tuple(p.shape), B.dtype_name(p.dtype)) for p in params]


def check_same_parameters(params: list, group: Group, who: str) -> None:
    """Every rank holds the same number of parameters with the same shapes and dtypes; else
    raise the same DistributedError on every rank, naming the first difference."""
    if group.size == 1:
        return
    mine = describe_parameters(params)
    every = group.allgather(mine)
    ref = every[0]
    for r, theirs in enumerate(every[1:], start=1):
        if len(theirs) != len(ref):
            raise DistributedError(f"{who}: rank 0 has {len(ref)} parameters but rank {r} has "
                                   f"{len(theirs)}; every rank must build the same model")
    for i, (name, shape, dtype) in enumerate(ref):
        for r, theirs in enumerate(every[1:], start=1):
            _, s, d = theirs[i]
            if (s, d) != (shape, dtype):
                label = f"parameter {i}" + (f" ({name!r})" if name else "")
                raise DistributedError(
                    f"{who}: {label} has shape {shape} {dtype} on rank 0 but {s} {d} on rank "
                    f"{r}; every rank must build the same model, in the same order")
