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

import numpy as np

from . import backend as B
from . import versions
from .errors import at, call_site
from .fpstate import quiet
from .graph import train_step, value_and_gradients
from .nn.module import StateDictError, _onto
from .ops import cuda
from .optim_in_place import apply_in_place, has_in_place, step_planned
from .tensor import Tensor, Variable, no_grad


WRAPPED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""Optimizers that must be stepped only through the object that wraps them, each with the
reason: gpugrad.distributed's sharded update puts their parameters in memory that every rank
shares, so a rank stepping the optimizer itself would write its own gradient's update over
the other ranks' (see DistributedOptimizer)."""


def _refuse_wrapped(opt: Any, call: str) -> None:
    raise RuntimeError(at(f"{type(opt).__name__}.{call}: {WRAPPED[opt]}"))


class Optimizer:
    """Base class: holds the parameters, per-parameter state and hyperparameters."""

    hyper: tuple[str, ...] = ("lr",)
    fused = True
    """On CuPy, update each parameter with one fused kernel (gpugrad.ops.cuda); False runs
    the portable array-API update instead (the definition the kernels are tested against)."""

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

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def __getstate__(self) -> dict:  # state arrays pickle by backend name (gpugrad.serialize)
        from .serialize import optimizer_state

        return optimizer_state(self)

    def __copy__(self) -> "Optimizer":  # shallow: the same parameters and state arrays
        new = type(self).__new__(type(self))
        new.__dict__.update(self.__dict__)
        return new

    def step(self) -> None:
        """Apply one update from each parameter's ``.grad`` (parameters without one are
        skipped)."""
        if WRAPPED and self in WRAPPED:
            _refuse_wrapped(self, "step")
        if step_planned(self):  # NumPy, nothing changed since the last step: the short way
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
        self.steps += 1
        site = f"{type(self).__name__} step called at {call_site()}"
        written: list = []
        try:
            if has_in_place(self):  # NumPy arrays: update_in_place (gpugrad.optim_in_place)
                pairs = apply_in_place(self, pairs, written)
            if not pairs:
                return
            with no_grad(), quiet(self.params[0].xp):  # tiny moments underflow quietly
                for p, g in pairs:
                    before = p.data
                    self.update(p, g, self.state[p])
                    # an in-place update is a write that backward must see (a graph recorded
                    # before the step and differentiated after it would use the new values)
                    if p.data is before:
                        written.append(p)
                    else:
                        versions.rebound(p)
        finally:  # the writes made before any failure still count
            if written:
                versions.wrote_many(written, site)

    def update(self, p: Variable, g: Any, state: dict) -> None:  # pragma: no cover
        raise NotImplementedError

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


class SGD(Optimizer):
    """p -= lr * d, with d = g + weight_decay * p, then momentum (PyTorch's form):
    buf = momentum * buf + d;  d = buf, or d + momentum * buf with nesterov."""

    hyper = ("lr", "momentum", "nesterov", "weight_decay")

    def __init__(self, params: Iterable[Variable], lr: float = 0.01, momentum: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0) -> None:
        super().__init__(params, lr)
        if nesterov and momentum <= 0:
            raise ValueError("SGD: nesterov needs momentum > 0")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.weight_decay = float(weight_decay)

    def update(self, p: Variable, g: Any, state: dict) -> None:
        if self.fused and cuda.is_cupy_array(p.data) and not B.is_complex(p.xp, p.dtype):
            buf = state.get("momentum")
            first = buf is None
            if self.momentum and first:
                buf = state["momentum"] = p.xp.zeros_like(p.data)
            cuda.sgd_update(p.data, g, buf if self.momentum else None, self.lr, self.momentum,
                            self.weight_decay, self.nesterov, first)
            return
        if self.weight_decay:
            g = g + self.weight_decay * p.data
        if self.momentum:
            buf = state.get("momentum")
            if buf is None:
                buf = state["momentum"] = p.xp.asarray(g, copy=True)
            else:
                buf *= self.momentum
                buf += g
            g = g + self.momentum * buf if self.nesterov else buf
        p.data -= self.lr * g

    def update_in_place(self, p: Variable, P: Any, g: Any, T: Any) -> None:
        """:meth:`update` on NumPy, for the eager step (gpugrad.optim_in_place) and the
        compiled one (gpugrad.compiler.update): the same arithmetic in the same order, through
        the scratch buffer ``T``. ``P`` is ``p``'s array; ``g`` is only read.
        tests/test_optim_in_place.py and tests/test_compiler.py check it against
        :meth:`update`."""
        if self.weight_decay:
            g = g + np.multiply(P, self.weight_decay, T)
        if self.momentum:
            st = self.state[p]
            buf = st.get("momentum")
            if buf is None:
                buf = st["momentum"] = np.array(g, copy=True)
            else:
                buf *= self.momentum
                buf += g
            g = g + np.multiply(buf, self.momentum, T) if self.nesterov else buf
        np.multiply(g, self.lr, T)
        np.subtract(P, T, P)


class Adam(Optimizer):
    """Adam with bias correction: m, v running moments of g and g**2;
    p -= lr * m_hat / (sqrt(v_hat) + eps). ``weight_decay`` adds an L2 term to g."""

    hyper = ("lr", "betas", "eps", "weight_decay")
    decoupled = False

    def __init__(self, params: Iterable[Variable], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, lr)
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)

    def update(self, p: Variable, g: Any, state: dict) -> None:
        b1, b2 = self.betas
        fused = self.fused and cuda.is_cupy_array(p.data) and not B.is_complex(p.xp, p.dtype)
        if self.weight_decay and not fused:
            if self.decoupled:
                p.data *= 1.0 - self.lr * self.weight_decay
            else:
                g = g + self.weight_decay * p.data
        m = state.get("m")
        if m is None:
            m = state["m"] = p.xp.zeros_like(p.data)
            state["v"] = p.xp.zeros_like(p.data)
        v = state["v"]
        t = self.param_steps[p] = self.param_steps.get(p, 0) + 1  # per parameter
        if fused:
            cuda.adam_update(p.data, g, m, v, self.lr, b1, b2, self.eps, self.weight_decay,
                             1.0 - b1**t, math.sqrt(1.0 - b2**t), self.decoupled)
            return
        m *= b1
        m += (1.0 - b1) * g
        v *= b2
        step_size = self.lr / (1.0 - b1**t)
        if B.is_complex(p.xp, p.dtype):
            _complex_adam_step(p, g, m, v, b2, step_size, math.sqrt(1.0 - b2**t), self.eps)
            return
        v += (1.0 - b2) * (g * g)
        denom = p.xp.sqrt(v) / math.sqrt(1.0 - b2**t) + self.eps
        p.data -= step_size * (m / denom)

    def update_in_place(self, p: Variable, P: Any, g: Any, T: Any) -> None:
        """:meth:`update` (Adam's and AdamW's) on NumPy for the eager and the compiled step,
        real values only: the same arithmetic in the same order, through the scratch buffer
        ``T``."""
        b1, b2 = self.betas
        if self.weight_decay:
            if self.decoupled:
                P *= 1.0 - self.lr * self.weight_decay
            else:
                g = g + np.multiply(P, self.weight_decay, T)
        st = self.state[p]
        m = st.get("m")
        if m is None:
            m = st["m"] = np.zeros_like(P)
            st["v"] = np.zeros_like(P)
        v = st["v"]
        t = self.param_steps[p] = self.param_steps.get(p, 0) + 1
        m *= b1
        m += np.multiply(g, 1.0 - b1, T)
        v *= b2
        np.multiply(g, g, T)
        v += np.multiply(T, 1.0 - b2, T)
        np.sqrt(v, T)
        np.divide(T, math.sqrt(1.0 - b2**t), T)
        np.add(T, self.eps, T)
        np.divide(m, T, T)
        np.multiply(T, self.lr / (1.0 - b1**t), T)
        np.subtract(P, T, P)


def _complex_adam_step(p: Variable, g: Any, m: Any, v: Any, b2: float, step_size: float,
                       bc2: float, eps: float) -> None:
    """Adam on a complex parameter as PyTorch does it: the real and the imaginary parts are
    two real parameters. ``v`` holds the second moment of Re g in its real part and of Im g
    in its imaginary part."""
    xp = p.xp
    re, im = xp.real(g), xp.imag(g)
    v += (1.0 - b2) * (xp.astype(re * re, v.dtype) + xp.astype(im * im, v.dtype) * 1j)
    d_re = xp.real(m) / (xp.sqrt(xp.real(v)) / bc2 + eps)
    d_im = xp.imag(m) / (xp.sqrt(xp.imag(v)) / bc2 + eps)
    p.data -= step_size * (xp.astype(d_re, p.dtype) + xp.astype(d_im, p.dtype) * 1j)


class AdamW(Adam):
    """Adam with decoupled weight decay: p *= 1 - lr * weight_decay before the Adam step."""

    decoupled = True

    def __init__(self, params: Iterable[Variable], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2) -> None:
        super().__init__(params, lr, betas, eps, weight_decay)


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW}


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


__all__ = ["Adam", "AdamW", "CosineLR", "LRSchedule", "OPTIMIZERS", "Optimizer", "SGD", "StepLR"]
