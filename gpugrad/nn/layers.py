"""Layers: Linear, the activations, Sequential and the tutorial's MLP.

>>> import numpy as np, gpugrad as gg
>>> from gpugrad import nn
>>> layer = nn.Linear(3, 2, seed=0)
>>> layer(gg.asarray(np.ones((5, 3), "float32"))).shape
(5, 2)
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .. import ops
from ..ops import linalg
from ..errors import OpError, at, show
from ..graph import Placeholder
from ..tensor import Tensor, Variable
from . import init as initialisers
from .module import Module


class Linear(Module):
    """``y = x @ W + b`` with W of shape (in_features, out_features).

    ``init`` is "glorot" (default; for sigmoid/tanh) or "he" (for ReLU); ``seed`` is an int or
    a ``numpy.random.Generator``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 init: str = "glorot", seed: int | np.random.Generator | None = None,
                 dtype: Any = "float32") -> None:
        super().__init__()
        try:
            draw = initialisers.INITIALISERS[init]
        except KeyError:
            raise ValueError(f"Linear: unknown init {init!r}; choose one of "
                             f"{', '.join(sorted(initialisers.INITIALISERS))}") from None
        self.in_features = in_features
        self.out_features = out_features
        self.weight = Variable(draw((in_features, out_features), seed=seed, dtype=dtype),
                               name="weight")
        self.bias = Variable(initialisers.zeros((out_features,), dtype=dtype),
                             name="bias") if bias else None

    def forward(self, x: Any) -> Any:
        if type(x) is Tensor:  # the common eager case, checked without building tuples
            shape = x.data.shape
            if shape and shape[-1] == self.in_features:
                if self.bias is None:
                    return x @ self.weight
                return linalg.linear(x, self.weight, self.bias)
        shape = _known_shape(x)
        if shape is not None and (not shape or shape[-1] not in (None, self.in_features)):
            raise OpError(at(
                f"{self!r}: input has shape {show(shape)}, but the layer expects "
                f"{self.in_features} features in its last dimension, i.e. (..., "
                f"{self.in_features})"))
        if self.bias is None:
            return x @ self.weight
        return linalg.linear(x, self.weight, self.bias)

    def __repr__(self) -> str:
        return f"Linear({self.in_features}, {self.out_features}, bias={self.bias is not None})"


def _known_shape(x: Any) -> tuple | None:
    if isinstance(x, (Tensor, Placeholder)):
        return tuple(x.shape)
    if hasattr(x, "_gpugrad_symbolic"):  # a graph node: its shape inferred at build, if known
        return getattr(x, "_shape", None)
    if hasattr(x, "shape"):
        return tuple(x.shape)
    return None


class Sigmoid(Module):
    """The tutorial's A: 1 / (1 + exp(-x))."""

    def forward(self, x: Any) -> Any:
        return ops.elementwise.sigmoid(x)


class Tanh(Module):
    def forward(self, x: Any) -> Any:
        return ops.elementwise.tanh(x)


class ReLU(Module):
    def forward(self, x: Any) -> Any:
        return ops.elementwise.relu(x)


class Softplus(Module):
    """log(1 + exp(beta x)) / beta, x itself where beta x > threshold (PyTorch's defaults).

    >>> import gpugrad as gg
    >>> round(float(Softplus()(gg.asarray(0.0))), 6), float(Softplus(2.0, 1.0)(gg.asarray(3.0)))
    (0.693147, 3.0)
    """

    def __init__(self, beta: float = 1.0, threshold: float = 20.0) -> None:
        super().__init__()
        self.beta, self.threshold = float(beta), float(threshold)

    def forward(self, x: Any) -> Any:
        return ops.activations.softplus(x, beta=self.beta, threshold=self.threshold)


class GELU(Module):
    """x Phi(x): ``approximate="none"`` (erf) or ``"tanh"``, as PyTorch's GELU.

    >>> import gpugrad as gg
    >>> round(float(GELU()(gg.asarray(1.0))), 6), round(float(GELU("tanh")(gg.asarray(1.0))), 6)
    (0.841345, 0.841192)
    """

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x: Any) -> Any:
        return ops.activations.gelu(x, approximate=self.approximate)


class SiLU(Module):
    """x sigmoid(x)."""

    def forward(self, x: Any) -> Any:
        return ops.activations.silu(x)


ACTIVATIONS = {"sigmoid": Sigmoid, "tanh": Tanh, "relu": ReLU, "softplus": Softplus,
               "gelu": GELU, "silu": SiLU}


class Sequential(Module):
    """Modules applied in order."""

    def __init__(self, *layers: Module) -> None:
        super().__init__()
        self.layers = list(layers)

    def forward(self, x: Any) -> Any:
        for layer in self.layers:
            x = layer(x)
        return x

    def __getitem__(self, i: int) -> Module:
        return self.layers[i]

    def __len__(self) -> int:
        return len(self.layers)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(repr(m) for m in self.layers)})"


class MLP(Sequential):
    """Linear layers with an activation between them: ``MLP([784, 512, 512, 10])`` is the
    tutorial's stack of sigmoid layers (the last layer gives logits, no activation)."""

    def __init__(self, sizes: Sequence[int], activation: str = "sigmoid", *,
                 seed: int | np.random.Generator | None = 0, dtype: Any = "float32") -> None:
        if len(sizes) < 2:
            raise ValueError(f"MLP: need at least an input and an output size, got {sizes}")
        try:
            act = ACTIVATIONS[activation]
        except KeyError:
            raise ValueError(f"MLP: unknown activation {activation!r}; choose one of "
                             f"{', '.join(ACTIVATIONS)}") from None
        rng = np.random.default_rng(seed) if not isinstance(seed, np.random.Generator) else seed
        init = "he" if activation == "relu" else "glorot"
        layers: list[Module] = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(Linear(n_in, n_out, init=init, seed=rng, dtype=dtype))
            if i < len(sizes) - 2:
                layers.append(act())
        super().__init__(*layers)
        self.sizes = list(sizes)
        self.activation = activation

    def __repr__(self) -> str:
        return f"MLP({self.sizes}, activation={self.activation!r})"
