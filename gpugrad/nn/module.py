"""Module: a container of Variables and submodules, with state_dict round trips.

>>> import gpugrad as gg
>>> from gpugrad import nn
>>> model = nn.MLP([4, 8, 3], seed=0)
>>> [name for name, _ in model.named_parameters()]
['layers.0.weight', 'layers.0.bias', 'layers.2.weight', 'layers.2.bias']
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

import numpy as np

from .. import backend as B
from .. import versions
from ..errors import at
from ..tensor import Tensor, Variable


class StateDictError(KeyError, ValueError):
    """A state dict does not match the module or optimizer it is loaded into."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class Module:
    """Base class: assign Variables and Modules as attributes, write ``forward``."""

    training: bool

    def __init__(self) -> None:
        self.training = True

    def forward(self, *args: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args: Any) -> Any:
        return self.forward(*args)

    def named_children(self) -> Iterator[tuple[str, "Module"]]:
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if isinstance(item, Module):
                        yield f"{name}.{i}", item

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Variable]]:
        """(dotted name, Variable) for every parameter, recursively, in definition order."""
        seen: set = set()
        for name, value in self._named_parameters(prefix):
            if value not in seen:
                seen.add(value)
                yield name, value

    def _named_parameters(self, prefix: str) -> Iterator[tuple[str, Variable]]:
        for name, value in vars(self).items():
            if isinstance(value, Variable):
                yield prefix + name, value
            elif isinstance(value, Module):
                yield from value._named_parameters(f"{prefix}{name}.")
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if isinstance(item, Module):
                        yield from item._named_parameters(f"{prefix}{name}.{i}.")
                    elif isinstance(item, Variable):
                        yield f"{prefix}{name}.{i}", item

    def parameters(self) -> list[Variable]:
        """Every trainable Variable, recursively."""
        return [p for _, p in self.named_parameters()]

    def zero_grad(self) -> None:
        """Forget accumulated gradients (``.grad = None`` on every parameter)."""
        for p in self.parameters():
            p.grad = None

    def train(self, mode: bool = True) -> "Module":
        self.training = mode
        for _, child in self.named_children():
            child.train(mode)
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def state_dict(self) -> dict[str, Any]:
        """Parameter name -> backend array (the live data; copy it to keep a snapshot)."""
        return {name: p.data for name, p in self.named_parameters()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Load parameter values by name. Names and shapes must match exactly; values cross
        to each parameter's device and dtype."""
        params = dict(self.named_parameters())
        missing = [n for n in params if n not in state]
        unexpected = [n for n in state if n not in params]
        if missing or unexpected:
            raise StateDictError(at(
                f"{type(self).__name__}.load_state_dict: names do not match; missing "
                f"{missing or 'none'}, unexpected {unexpected or 'none'}"))
        new = {}
        for name, p in params.items():
            value = state[name]
            value = value.data if isinstance(value, Tensor) else value
            shape = tuple(value.shape) if hasattr(value, "shape") else np.shape(value)
            if tuple(shape) != p.shape:
                raise StateDictError(at(
                    f"{type(self).__name__}.load_state_dict: parameter {name!r} has shape "
                    f"{p.shape} but the state dict gives {tuple(shape)}"))
            new[name] = _onto(value, p)
        for name, p in params.items():
            p.data = new[name]
            versions.rebound(p)

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={c!r}" for n, c in self.named_children())
        return f"{type(self).__name__}({inner})"


def _onto(value: Any, like: Variable) -> Any:
    """A copy of ``value`` on ``like``'s backend, device and dtype."""
    xp = like.xp
    if B.is_backend_array(value) and B.name_of(B.namespace_of(value)) == B.name_of(xp) and (
            xp is np or B.device_of(value) == like.device):
        out = xp.asarray(value, copy=True)
    else:
        host = B.to_numpy(value)
        out = np.array(host) if xp is np else xp.asarray(host, device=like.device)
    return out if out.dtype == like.dtype else xp.astype(out, like.dtype)
