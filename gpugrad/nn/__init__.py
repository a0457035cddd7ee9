"""Neural-network building blocks: Modules, layers, initialisers and losses.

>>> import numpy as np, gpugrad as gg
>>> from gpugrad import nn
>>> model = nn.MLP([64, 32, 10], activation="sigmoid", seed=0)
>>> x = gg.asarray(np.zeros((4, 64), "float32"))
>>> loss = nn.cross_entropy(model(x), gg.asarray(np.array([0, 1, 2, 3])))
>>> loss.backward()
>>> model.layers[0].weight.grad.shape
(64, 32)
"""

from . import init
from .layers import GELU, MLP, Linear, ReLU, Sequential, Sigmoid, SiLU, Softplus, Tanh
from .losses import accuracy, binary_cross_entropy_with_logits, cross_entropy, mse_loss
from .module import Module, StateDictError

__all__ = ["GELU", "MLP", "Linear", "Module", "ReLU", "Sequential", "SiLU", "Sigmoid", "Softplus",
           "StateDictError", "Tanh",
           "accuracy", "binary_cross_entropy_with_logits", "cross_entropy", "init", "mse_loss"]
