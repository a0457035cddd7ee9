"""What the layers above Tensor install here at import, so that no module imports upward.

Tensor (and its operator methods) sit below the engine, the differentiable namespace and
``gg.compile``, yet ``t.backward()``, ``t += u``, ``t[k] = v``, ``t & u`` and
``t.__array_namespace__()`` need them. Each of those layers fills its entry when it is
imported (``gpugrad/__init__.py`` imports them all), and Tensor calls the entry by attribute
at call time. This module imports nothing from gpugrad.

>>> import gpugrad as gg
>>> from gpugrad import hooks
>>> hooks.namespace is gg.array_api, hooks.sweep is gg.eager.backward
(True, True)
"""

from __future__ import annotations

from typing import Any, Callable

sweep: Callable[..., None] | None = None
"""``sweep(root, grad, retain_graph)``: the general backward sweep (gpugrad.eager)."""

sweep_with_graph: Callable[..., None] | None = None
"""``sweep_with_graph(root, grad)``: ``backward(create_graph=True)``, which replays the tape
on Tensors so each ``.grad`` can be differentiated again (gpugrad.higher)."""

whole_sweeps: dict = {}
"""Op class -> ``sweep(root, retain_graph) -> bool``: the whole backward from a root that an
op of that class made, when it can do it alone (gpugrad.jit: a compiled call's gradients,
computed with its forward); False leaves it to the general sweep."""

setitem: Callable[..., None] | None = None
"""``setitem(t, key, value)``: ``t[key] = value`` (gpugrad.inplace)."""

update: Callable[..., Any] | None = None
"""``update(t, other, op_name)``: ``t += other`` and the like (gpugrad.inplace)."""

follow: Callable[..., None] | None = None
"""``follow(base)``: recompute the views of a Tensor that got a new array
(gpugrad.views; gpugrad.versions.rebound calls it for a Tensor that has views)."""

view: Callable[..., Any] | None = None
"""``view(op, args, params, out) -> out``: after an op declared a view op (``op.defview``)
ran, link its result to its base when they share memory (gpugrad.views)."""

namespace: Any = None
"""The differentiable array-API namespace, ``gpugrad.array_api``: ``t.__array_namespace__()``,
the operators the standard has and gpugrad has no op for (``& | ^ ~ << >> % //``), and the
names NumPy's refusals suggest."""

scalar_declared: Callable[[Any], Any] | None = None
"""``scalar_declared(op)``: called by ``Op.defscalar`` once an op's scalar formulas are
declared (gpugrad.ops.cuda: the CuPy fast path generated from them)."""
