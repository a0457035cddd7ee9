"""gpugrad: reverse-mode automatic differentiation on the array API (NumPy, CuPy, ...).

Every registered op is also a top-level function, e.g. ``gpugrad.sigmoid``, ``gpugrad.sum``.

>>> import gpugrad as gg
>>> W = gg.Variable([2.0, -1.0], name="W")
>>> loss = gg.sum(gg.sigmoid(W))
>>> loss.backward()
>>> W.grad.shape
(2,)
"""

from . import ops
from . import eager  # noqa: F401  (installs the eager dispatcher)
from . import inplace  # noqa: F401  (installs t[key] = v, t += u, ... on Tensors)
from .backend import (
    Backend,
    BackendError,
    backend_info,
    set_backend,
    to_numpy,
    use_backend,
)
from .anomaly import detect_anomaly, is_anomaly_enabled
from .dot import to_dot
from .errors import AnomalyError, DtypeError
from .graph import (
    FeedError,
    Placeholder,
    Symbol,
    gradients,
    value_and_gradients,
)
from .registry import registry
from .tensor import (
    GradientError,
    OpError,
    Tensor,
    TracedValueWarning,
    Variable,
    is_grad_enabled,
    no_grad,
)
from . import data, datasets, nn, optim, testing  # noqa: E402
from .descent import minimize  # noqa: E402
from . import array_api, functional, higher  # noqa: E402
from .functional import grad, hessian, hvp, jacobian, value_and_grad, vjp  # noqa: E402
from .jit.jit import compile  # noqa: E402,A004  (gg.compile, like jax.jit)
asarray = array_api.asarray  # one asarray: the standard's call, and gpugrad's host copy
from .checkpoint import load, save  # noqa: E402
from_dlpack = array_api.from_dlpack
from . import checkpoint, serialize  # noqa: E402,F401
from . import distributed  # noqa: E402

from ._version import __version__  # noqa: E402, F401  (gpugrad.__version__)

# One top-level function per registered op: gpugrad.add, gpugrad.matmul, ...
globals().update({name: op for name, op in registry.items() if not name.startswith("linalg_")})
linalg = array_api.linalg  # gg.linalg: the standard's linalg extension (its ops are there)
abs = registry["abs"]  # noqa: A001  (shadowing the builtin is the array-API name)
max = registry["max"]  # noqa: A001
min = registry["min"]  # noqa: A001
sum = registry["sum"]  # noqa: A001
pow = registry["pow"]  # noqa: A001
# the standard's conj/real/imag also take real input (x itself, or zeros for imag)
conj, real, imag = array_api.conj, array_api.real, array_api.imag  # noqa: E402
fft = array_api.fft  # the standard's fft extension (the module; its ops are also gg.rfft, ...)

# One front door: every name of the array-API standard is also gpugrad.<name>, the namespace's
# function itself. The registered ops already here stay: they are the same computation, also
# take graph symbols, and refuse to promote float32 meeting float64 silently (add, divide,
# matmul, ...), where gpugrad.array_api's wrappers promote as the standard says.
for _name in array_api._names.STANDARD:
    globals().setdefault(_name, getattr(array_api, _name))
for _name in array_api._names.EXTENSIONS:  # gg.linalg, gg.fft where the namespace has them
    if hasattr(array_api, _name):
        globals().setdefault(_name, getattr(array_api, _name))
del _name


def __getattr__(name: str):
    """Dtypes (``gg.float32``, ...) are the current backend's, as in gpugrad.array_api."""
    if name in array_api.DTYPES:
        return getattr(array_api, name)
    raise AttributeError(f"module 'gpugrad' has no attribute {name!r}")


def __dir__() -> list:
    return sorted({*globals(), *array_api.DTYPES})


__all__ = [
    "AnomalyError", "Backend", "BackendError", "DtypeError", "FeedError", "GradientError", "TracedValueWarning",
    "OpError", "Placeholder", "detect_anomaly", "is_anomaly_enabled",
    "Symbol", "Tensor", "Variable", "asarray", "backend_info", "gradients",
    "is_grad_enabled", "minimize", "nn", "no_grad", "ops", "optim", "data", "datasets",
    "registry", "set_backend", "testing",
    "to_dot", "to_numpy", "use_backend", "value_and_gradients", "linalg",
    *(k for k in registry.keys() if not k.startswith("linalg_")),
    "array_api", "functional", "higher", "grad", "value_and_grad", "vjp", "jacobian", "hvp",
    "hessian", "compile", "checkpoint", "from_dlpack", "load", "save", "distributed",
]
__all__ += [n for n in (*array_api._names.STANDARD, *array_api._names.EXTENSIONS)
            if n in globals() and n not in __all__]
