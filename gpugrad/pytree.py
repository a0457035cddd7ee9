"""Pytrees: nested tuples, lists (namedtuples too) and dicts whose leaves are arrays.

The functional transforms take and return parameters in this form.

>>> from gpugrad.pytree import tree_flatten, tree_unflatten
>>> leaves, structure = tree_flatten({"w": [1, 2], "b": (3,)})
>>> leaves
[1, 2, 3]
>>> tree_unflatten(structure, [10, 20, 30])
{'w': [10, 20], 'b': (30,)}
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def tree_flatten(tree: Any) -> tuple[list, Any]:
    """(leaves, structure): leaves in order, and what ``tree_unflatten`` needs to rebuild."""
    if isinstance(tree, dict):
        keys = list(tree)
        parts = [tree_flatten(tree[k]) for k in keys]
        return [v for p in parts for v in p[0]], (dict, keys, [p[1] for p in parts])
    if isinstance(tree, (tuple, list)):
        parts = [tree_flatten(v) for v in tree]
        return [v for p in parts for v in p[0]], (type(tree), None, [p[1] for p in parts])
    return [tree], None


def tree_unflatten(structure: Any, leaves: Sequence[Any]) -> Any:
    """The tree ``tree_flatten`` took apart, with ``leaves`` in place of its leaves."""
    it = iter(leaves)

    def build(s: Any) -> Any:
        if s is None:
            return next(it)
        kind, keys, children = s
        values = [build(c) for c in children]
        if kind is dict:
            return dict(zip(keys, values))
        if hasattr(kind, "_fields"):  # a namedtuple
            return kind(*values)
        return kind(values)

    return build(structure)


def tree_map(fn: Callable, tree: Any) -> Any:
    """The tree with ``fn`` applied to each leaf."""
    leaves, structure = tree_flatten(tree)
    return tree_unflatten(structure, [fn(v) for v in leaves])
