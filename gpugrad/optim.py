"""Optimizers and learning-rate schedules. Updates run in place on the device, under no_grad,
and bump each parameter's version (see ``Tensor.version``).

State is keyed by the parameter object itself (never by ``id()``), so it follows the
parameter and cannot be confused with a new object at a recycled address.

>>> import numpy as np, gpugrad as gg
>>> w = gg.Variable(np.array([1.0]))
>>> opt = gg.optim.SGD([w], lr=0.5)
>>> (w * w).sum().backward()
>>> opt.step()
>>> gg.to_numpy(w.data)
array([0.])
"""

from __future__ import annotations

import math
import weakref
from typing import Any, Iterable, Mapping

from .errors import at
from .graph import train_step, value_and_gradients
from .nn.module import StateDictError, _onto
from .optim_in_place import Lowering, apply, declared, portable_update, step_planned
from .serialize import optimizer_state
from .tensor import Tensor, Variable

WRAPPED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""Optimizers that must be stepped only through the object that wraps them, each with the
reason: gpugrad.distributed's sharded update puts their parameters in memory that every rank
shares, so a rank stepping the optimizer itself would write its own gradient's update over
the other ranks' (see DistributedOptimizer)."""


def _refuse_wrapped(opt: Any, call: str) -> None:
    raise RuntimeError(at(f"{type(opt).__name__}.{call}: {WRAPPED[opt]}"))


class Optimizer:
    """Base class: holds the parameters, per-parameter state and hyperparameters.

    An optimizer whose update is elementwise declares it once (see gpugrad.optim_rule):
    ``options``, ``scalars``, the staticmethod ``formula`` and, where needed, ``initial`` and
    ``counts_steps``. The eager step (in place on NumPy, one fused kernel on CuPy, the
    portable :meth:`update` elsewhere), the compiled step and the sharded distributed update
    all derive from that formula. A subclass may instead override :meth:`update`: it then
    runs for every parameter, on every path."""

    hyper: tuple[str, ...] = ("lr",)
    fused = True
    """On CuPy, update each parameter with one kernel generated from the formula; False runs
    the portable array-API update instead (the definition the kernels are tested against)."""
    formula: Any = None
    """``formula(x, o, c, p, g, s) -> {"p": ..., <state>: ...}``: the declared update."""
    counts_steps = False
    """Whether :meth:`scalars` takes the parameter's own update count ``t``."""

    def __init__(self, params: Iterable[Variable], lr: float) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        for p in self.params:
            if not isinstance(p, Tensor) or not p.requires_grad:
                raise TypeError(f"{type(self).__name__}: {p!r} is not a trainable Variable")
        if lr <= 0:
            raise ValueError(at(f"{type(self).__name__}: lr must be positive, got {lr}"))
        self.lr = float(lr)
        self.steps = 0
        self.state: dict[Variable, dict[str, Any]] = {p: {} for p in self.params}
        self.param_steps: dict[Variable, int] = {}  # updates each parameter has had

    def options(self) -> dict:
        """The switches that change the formula's shape."""
        return {}

    def scalars(self, t: int) -> dict:
        """The formula's scalar hyperparameters for a parameter's ``t``-th update."""
        return {"lr": self.lr}

    def initial(self) -> dict:
        """Each state array's first value where it is not 0."""
        return {}

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def __getstate__(self) -> dict:  # state arrays pickle by backend name (gpugrad.serialize)
        return optimizer_state(self)

    def __copy__(self) -> "Optimizer":  # shallow: the same parameters and state arrays
        new = type(self).__new__(type(self))
        new.__dict__.update(self.__dict__)
        return new

    def step(self) -> None:
        """Apply one update from each parameter's ``.grad`` (parameters without one are
        skipped)."""
        if WRAPPED.data and self in WRAPPED:  # (.data: len() of a WeakKeyDictionary is slow)
            _refuse_wrapped(self, "step")
        if type(self)._apply is Optimizer._apply and "_apply" not in self.__dict__ \
                and step_planned(self):  # nothing changed since the last step: the short way
            return
        self._apply([(p, p.grad) for p in self.params if p.grad is not None])

    def minimize(self, loss: Any, feed: Mapping | None = None, compiled: bool = True) -> Any:
        """Graph front end: forward, backward and update in one call; returns the loss as a
        0-d device array (read it with ``float()`` only when you need it).

        The three run as one compiled program per input signature, updating the parameters
        and the optimizer state in place (``compiled=False``: the gradients first, then
        :meth:`step`'s update; the same numbers)."""
        if WRAPPED and self in WRAPPED:
            _refuse_wrapped(self, "minimize")
        if not compiled:
            value, grads = value_and_gradients(loss, self.params, feed)
            self._apply(list(zip(self.params, grads)))
            return value
        return train_step(loss, self, feed)

    def _apply(self, pairs: list) -> None:
        apply(self, pairs)  # the one loop over the parameters (gpugrad.optim_in_place)

    def update(self, p: Variable, g: Any, state: dict) -> None:
        """One parameter's update by the declared formula on its own namespace (the
        portable path); a subclass may override it."""
        if type(self).formula is None:
            raise NotImplementedError(f"{type(self).__name__}: declare a formula or "
                                      "override update")
        portable_update(self, p, g, state)

    update.declared = True  # type: ignore[attr-defined]

    def lowering(self) -> Lowering | None:
        """The declared update as the compiler and the sharded distributed update take it,
        or None where :meth:`update` or ``_apply`` was replaced (they then call
        ``_apply``)."""
        return Lowering(self) if declared(self) and "_apply" not in vars(self) else None

    def state_dict(self) -> dict:
        """Hyperparameters, the step count, and each parameter's state in parameter order.

        The state arrays are the live ones, which later steps update in place: copy them
        (or save them to disk) to keep a snapshot."""
        return {
            "type": type(self).__name__,
            "hyper": {k: getattr(self, k) for k in self.hyper},
            "steps": self.steps,
            "state": [dict(self.state[p]) for p in self.params],
            "param_steps": [self.param_steps.get(p, 0) for p in self.params],
        }

    def load_state_dict(self, sd: Mapping) -> None:
        who = f"{type(self).__name__}.load_state_dict"
        if sd.get("type") != type(self).__name__:
            raise StateDictError(at(f"{who}: the state dict is from {sd.get('type')!r}"))
        states = sd["state"]
        if len(states) != len(self.params):
            raise StateDictError(at(f"{who}: the state dict has {len(states)} parameters, "
                                    f"this optimizer has {len(self.params)}"))
        for i, (p, st) in enumerate(zip(self.params, states)):
            for k, v in st.items():
                if tuple(v.shape) != p.shape:
                    raise StateDictError(at(f"{who}: state {k!r} of parameter {i} has shape "
                                            f"{tuple(v.shape)}, the parameter has {p.shape}"))
        for k, v in sd["hyper"].items():
            setattr(self, k, v)
        self.steps = int(sd["steps"])
        self.state = {p: {k: _onto(v, p) for k, v in st.items()}
                      for p, st in zip(self.params, states)}
        counts = sd.get("param_steps", [self.steps] * len(self.params))
        self.param_steps = {p: int(c) for p, c in zip(self.params, counts) if int(c)}


def _check(who: str, **values: float) -> None:
    for name, v in values.items():
        if not v >= 0.0:
            raise ValueError(at(f"{who}: {name} must be >= 0, got {v}"))


class SGD(Optimizer):
    """p -= lr * d, with d = g + weight_decay * p, then momentum (PyTorch's form):
    buf = momentum * buf + d (buf = d at the first step); d = buf, or d + momentum * buf
    with nesterov."""

    hyper = ("lr", "momentum", "nesterov", "weight_decay")

    def __init__(self, params: Iterable[Variable], lr: float = 0.01, momentum: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0) -> None:
        super().__init__(params, lr)
        if nesterov and momentum <= 0:
            raise ValueError("SGD: nesterov needs momentum > 0")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.weight_decay = float(weight_decay)

    def options(self) -> dict:
        return {"decay": self.weight_decay != 0, "momentum": self.momentum != 0,
                "nesterov": self.nesterov}

    def scalars(self, t: int) -> dict:
        return {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay}

    @staticmethod
    def formula(x: Any, o: Any, c: Any, p: Any, g: Any, s: Any) -> dict:
        d = g + c.weight_decay * p if o.decay else g
        if not o.momentum:
            return {"p": p - c.lr * d}
        buf = d if o.first else c.momentum * s.momentum + d
        d = d + c.momentum * buf if o.nesterov else buf
        return {"p": p - c.lr * d, "momentum": buf}


class Adam(Optimizer):
    """Adam with bias correction: m, v running moments of g and g**2;
    p -= lr * m_hat / (sqrt(v_hat) + eps). ``weight_decay`` adds an L2 term to g.
    Complex parameters are two real ones (their real and imaginary parts), as in PyTorch."""

    hyper = ("lr", "betas", "eps", "weight_decay")
    decoupled = False
    counts_steps = True

    def __init__(self, params: Iterable[Variable], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, lr)
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)

    def options(self) -> dict:
        return {"decay": self.weight_decay != 0, "decoupled": self.decoupled}

    def scalars(self, t: int) -> dict:
        b1, b2 = self.betas
        return {"lr": self.lr, "b1": b1, "b2": b2, "eps": self.eps,
                "weight_decay": self.weight_decay, "step_size": self.lr / (1.0 - b1**t),
                "bc2": math.sqrt(1.0 - b2**t)}

    @staticmethod
    def formula(x: Any, o: Any, c: Any, p: Any, g: Any, s: Any) -> dict:
        if o.decay and o.decoupled:
            p = p * (1.0 - c.lr * c.weight_decay)
        elif o.decay:
            g = g + c.weight_decay * p
        m = c.b1 * s.m + (1.0 - c.b1) * g
        v = c.b2 * s.v + (1.0 - c.b2) * (g * g)
        return {"p": p - c.step_size * (m / (x.sqrt(v) / c.bc2 + c.eps)), "m": m, "v": v}


class AdamW(Adam):
    """Adam with decoupled weight decay: p *= 1 - lr * weight_decay before the Adam step."""

    decoupled = True

    def __init__(self, params: Iterable[Variable], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2) -> None:
        super().__init__(params, lr, betas, eps, weight_decay)


class RMSprop(Optimizer):
    """RMSprop as PyTorch defines it: d = g + weight_decay * p;
    v = alpha * v + (1 - alpha) * d**2; centered: a = alpha * a + (1 - alpha) * d and
    v - a**2 in place of v; u = d / (sqrt(v) + eps); momentum: b = momentum * b + u,
    p -= lr * b; else p -= lr * u.

    >>> import numpy as np, gpugrad as gg
    >>> w = gg.Variable(np.array([1.0]))
    >>> opt = gg.optim.RMSprop([w], lr=0.1, alpha=0.5, eps=0.0)
    >>> w.grad = np.array([2.0])
    >>> opt.step()  # v = 0.5 * 4 = 2, p = 1 - 0.1 * 2 / sqrt(2)
    >>> round(float(gg.to_numpy(w.data)[0]), 6)
    0.858579
    """

    hyper = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered")

    def __init__(self, params: Iterable[Variable], lr: float = 0.01, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.0,
                 centered: bool = False) -> None:
        super().__init__(params, lr)
        _check("RMSprop", alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum)
        self.alpha, self.eps = float(alpha), float(eps)
        self.weight_decay, self.momentum = float(weight_decay), float(momentum)
        self.centered = bool(centered)

    def options(self) -> dict:
        return {"decay": self.weight_decay != 0, "momentum": self.momentum != 0,
                "centered": self.centered}

    def scalars(self, t: int) -> dict:
        return {"lr": self.lr, "alpha": self.alpha, "eps": self.eps,
                "weight_decay": self.weight_decay, "momentum": self.momentum}

    @staticmethod
    def formula(x: Any, o: Any, c: Any, p: Any, g: Any, s: Any) -> dict:
        if o.decay:
            g = g + c.weight_decay * p
        v = c.alpha * s.square_avg + (1.0 - c.alpha) * (g * g)
        new = {"square_avg": v}
        if o.centered:
            a = new["grad_avg"] = c.alpha * s.grad_avg + (1.0 - c.alpha) * g
            v = v - a * a
        u = g / (x.sqrt(v) + c.eps)
        if o.momentum:
            u = new["momentum_buffer"] = c.momentum * s.momentum_buffer + u
        new["p"] = p - c.lr * u
        return new


class Adagrad(Optimizer):
    """Adagrad as PyTorch defines it: clr = lr / (1 + (t - 1) * lr_decay) at a parameter's
    t-th update; d = g + weight_decay * p; sum += d**2 (starting from
    ``initial_accumulator_value``); p -= clr * d / (sqrt(sum) + eps).

    >>> import numpy as np, gpugrad as gg
    >>> w = gg.Variable(np.array([1.0]))
    >>> opt = gg.optim.Adagrad([w], lr=0.5, eps=0.0)
    >>> w.grad = np.array([3.0])
    >>> opt.step()  # sum = 9, p = 1 - 0.5 * 3 / 3
    >>> gg.to_numpy(w.data)
    array([0.5])
    """

    hyper = ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps")
    counts_steps = True

    def __init__(self, params: Iterable[Variable], lr: float = 0.01, lr_decay: float = 0.0,
                 weight_decay: float = 0.0, initial_accumulator_value: float = 0.0,
                 eps: float = 1e-10) -> None:
        super().__init__(params, lr)
        _check("Adagrad", lr_decay=lr_decay, weight_decay=weight_decay, eps=eps,
               initial_accumulator_value=initial_accumulator_value)
        self.lr_decay, self.weight_decay = float(lr_decay), float(weight_decay)
        self.initial_accumulator_value, self.eps = float(initial_accumulator_value), float(eps)

    def options(self) -> dict:
        return {"decay": self.weight_decay != 0}

    def scalars(self, t: int) -> dict:
        return {"clr": self.lr / (1.0 + (t - 1) * self.lr_decay), "eps": self.eps,
                "weight_decay": self.weight_decay}

    def initial(self) -> dict:
        return {"sum": self.initial_accumulator_value}

    @staticmethod
    def formula(x: Any, o: Any, c: Any, p: Any, g: Any, s: Any) -> dict:
        if o.decay:
            g = g + c.weight_decay * p
        total = s.sum + g * g
        return {"p": p - c.clr * (g / (x.sqrt(total) + c.eps)), "sum": total}


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop, "adagrad": Adagrad}


class LRSchedule:
    """Base class: sets ``optimizer.lr = lr_at(epoch)``; call ``step()`` once per epoch."""

    def __init__(self, optimizer: Optimizer) -> None:
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.epoch = 0

    def lr_at(self, epoch: int) -> float:  # pragma: no cover
        raise NotImplementedError

    def step(self) -> float:
        self.epoch += 1
        self.optimizer.lr = self.lr_at(self.epoch)
        return self.optimizer.lr


class StepLR(LRSchedule):
    """lr = base_lr * gamma ** (epoch // step_size)."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        super().__init__(optimizer)
        self.step_size, self.gamma = int(step_size), float(gamma)

    def lr_at(self, epoch: int) -> float:
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class CosineLR(LRSchedule):
    """lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0) -> None:
        super().__init__(optimizer)
        self.T_max, self.eta_min = int(T_max), float(eta_min)

    def lr_at(self, epoch: int) -> float:
        e = min(epoch, self.T_max)
        return self.eta_min + (self.base_lr - self.eta_min) * (
            1.0 + math.cos(math.pi * e / self.T_max)) / 2.0


__all__ = ["OPTIMIZERS", "SGD", "Adagrad", "Adam", "AdamW", "CosineLR", "LRSchedule",
           "Optimizer", "RMSprop", "StepLR"]
