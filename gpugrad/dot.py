"""Graphviz DOT text for a graph, with no dependency: the tutorial's picture.

>>> import numpy as np, gpugrad as gg
>>> x = gg.Placeholder((None, 3), name="x")
>>> W = gg.Variable(np.zeros((3, 2), "float32"), name="W")
>>> b = gg.Variable(np.zeros(2, "float32"), name="b")
>>> text = gg.to_dot(gg.sigmoid(x @ W + b))
>>> "sigmoid" in text and "Placeholder x" in text
True
"""

from __future__ import annotations

from typing import Any

from .backend import dtype_name
from .graph import Placeholder, Symbol
from .eager import Node
from .tensor import Tensor, Variable


def _shape_text(shape: Any) -> str:
    if shape is None:
        return "?"
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + \
        ("," if len(shape) == 1 else "") + ")"


def _describe(obj: Any) -> tuple[str, str]:
    """(label, node attributes) for one node."""
    if isinstance(obj, Placeholder):
        label = f"Placeholder {obj.name or ''}\\n{_shape_text(obj.shape)} {dtype_name(obj.dtype)}"
        return label, 'shape=box, style="rounded,dashed"'
    if isinstance(obj, Variable):
        return (f"Variable {obj.name or ''}\\n{_shape_text(obj.shape)}",
                'shape=box, style="rounded,filled", fillcolor="#cfe8ff"')
    if isinstance(obj, Symbol):  # its shape as inferred at build ("?" where unknown)
        return f"{obj.op.name}\\n{_shape_text(obj._shape)}", "shape=ellipse"
    if isinstance(obj, Node):
        return f"{obj.op.name}\\n{_shape_text(obj.shape)}", "shape=ellipse"
    if isinstance(obj, Tensor):
        return f"constant\\n{_shape_text(obj.shape)}", "shape=box"
    return f"constant {obj!r}", "shape=plaintext"


def _inputs(obj: Any) -> tuple:
    if isinstance(obj, Symbol):
        return obj.args
    if isinstance(obj, Node):
        return obj.inputs
    return ()


def to_dot(output: Any, name: str = "gpugrad") -> str:
    """DOT text of the graph that computes ``output`` (an eager Tensor or a graph Symbol).

    Ops are ellipses labelled by op (and shape, where known); Variables are filled boxes;
    Placeholders are dashed boxes. Render with ``dot -Tpng``.
    """
    ids: dict = {}
    lines = [f"digraph {name} {{", "  rankdir=LR;"]
    edges = []
    stack = [output._node if isinstance(output, Tensor) and output._node is not None else output]
    while stack:
        obj = stack.pop()
        if isinstance(obj, (Tensor, Symbol, Node)) and obj in ids:
            continue
        key = f"n{len(ids)}"
        if isinstance(obj, (Tensor, Symbol, Node)):
            ids[obj] = key
        label, attrs = _describe(obj)
        label = label.replace('"', '\\"')  # a name may hold quotes
        lines.append(f'  {key} [label="{label}", {attrs}];')
        for a in _inputs(obj):
            if a is None:
                continue
            if isinstance(a, (Tensor, Symbol, Node)):
                stack.append(a)
            edges.append((a, key))
    for n, (a, dst) in enumerate(edges):
        if isinstance(a, (Tensor, Symbol, Node)):
            lines.append(f"  {ids[a]} -> {dst};")
        else:  # a Python scalar: its own small node per use
            lines.append(f'  c{n} [label="{a!r}", shape=plaintext];')
            lines.append(f"  c{n} -> {dst};")
    lines.append("}")
    return "\n".join(lines)
