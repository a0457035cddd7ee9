"""Backend selection: which array-API namespace (and device) new arrays live on.

Precedence, strongest first: ``with use_backend(...)`` (a ContextVar, so per thread and
per task), then ``set_backend(...)``, then the ``GPUGRAD_BACKEND`` environment variable,
read on first use and never written. numpy is the default.

>>> import gpugrad as gg
>>> with gg.use_backend("array_api_strict"):
...     gg.backend_info()["name"]
'array_api_strict'
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from .errors import at

BACKEND_NAMES = ("numpy", "cupy", "array_api_strict")
ENV_VAR = "GPUGRAD_BACKEND"


class BackendError(RuntimeError):
    """A backend cannot be selected or two backends/devices were mixed."""


@dataclass(frozen=True)
class Backend:
    """A resolved backend: its name, its array-API namespace ``xp`` and its device."""

    name: str
    xp: Any
    device: Any = None

    def __repr__(self) -> str:
        return f"Backend({self.name!r}, device={self.device!r})"


def _load_cupy() -> Any:
    try:
        import cupy  # noqa: F401
    except ImportError as exc:
        raise BackendError(
            "backend 'cupy' needs CuPy, which is not installed; install it with "
            "`pip install gpugrad[cuda12]` (CUDA 12) or `pip install gpugrad[cuda13]` (CUDA 13)"
        ) from exc
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDA driver missing or broken
        raise BackendError(
            f"backend 'cupy': CuPy is installed but no usable CUDA GPU was found ({exc}); "
            "use GPUGRAD_BACKEND=numpy on this machine"
        ) from exc
    if n == 0:
        raise BackendError(
            "backend 'cupy': CuPy is installed but this machine has no CUDA GPU; "
            "use GPUGRAD_BACKEND=numpy on this machine"
        )
    import array_api_compat.cupy as xp

    return xp


def _namespace_for(name: str) -> Any:
    if name == "numpy":
        return np
    if name == "cupy":
        return _load_cupy()
    if name == "array_api_strict":
        try:
            import array_api_strict
        except ImportError as exc:
            raise BackendError(
                "backend 'array_api_strict' needs array-api-strict; install it with "
                "`pip install gpugrad[test]`"
            ) from exc
        return array_api_strict
    raise BackendError(
        f"unknown backend {name!r}; choose one of {', '.join(BACKEND_NAMES)} "
        f"(set {ENV_VAR} or call gpugrad.set_backend)"
    )


def name_of(xp: Any) -> str:
    """The short name of an array-API namespace (``'numpy'``, ``'cupy'``, ...)."""
    mod = getattr(xp, "__name__", type(xp).__name__)
    if mod == "numpy" or mod.endswith("compat.numpy"):
        return "numpy"
    if "cupy" in mod:
        return "cupy"
    return mod.split(".")[0]


def make_backend(spec: Any, device: Any = None) -> Backend:
    """Resolve a name, a namespace or a Backend into a Backend."""
    if isinstance(spec, Backend):
        return spec if device is None else Backend(spec.name, spec.xp, device)
    if isinstance(spec, str):
        name = spec.strip().lower()
        xp = _namespace_for(name)
    else:
        xp = spec
        if not hasattr(xp, "asarray"):
            raise BackendError(
                f"set_backend: {spec!r} is neither a backend name ({', '.join(BACKEND_NAMES)}) "
                "nor an array-API namespace"
            )
        name = name_of(xp)
        if name == "numpy":
            xp = np
    return Backend(name, xp, device)


_explicit: Backend | None = None
_from_env: Backend | None = None
_scoped: contextvars.ContextVar[Backend | None] = contextvars.ContextVar(
    "gpugrad_backend", default=None
)


def current() -> Backend:
    """The backend in force here: scoped, then set_backend, then GPUGRAD_BACKEND, then numpy."""
    b = _scoped.get()
    if b is not None:
        return b
    if _explicit is not None:
        return _explicit
    global _from_env
    if _from_env is None:
        _from_env = make_backend(os.environ.get(ENV_VAR, "numpy") or "numpy")
    return _from_env


def set_backend(spec: Any, device: Any = None) -> Backend:
    """Select the backend for this process, overriding ``GPUGRAD_BACKEND``.

    ``spec`` is a name (``"numpy"``, ``"cupy"``, ``"array_api_strict"``), an array-API
    namespace or a Backend; ``device`` is where new arrays go (default: the library's).
    ``set_backend(None)`` returns to the environment variable.

    >>> import gpugrad as gg
    >>> gg.set_backend("numpy").name
    'numpy'
    """
    global _explicit
    _explicit = None if spec is None else make_backend(spec, device)
    return current()


@contextlib.contextmanager
def use_backend(spec: Any, device: Any = None) -> Iterator[Backend]:
    """Use a backend inside a ``with`` block (per thread and per task).

    >>> import gpugrad as gg
    >>> with gg.use_backend("numpy") as b:
    ...     b.name
    'numpy'
    """
    token = _scoped.set(make_backend(spec, device))
    try:
        yield _scoped.get()
    finally:
        _scoped.reset(token)


def device_of(x: Any) -> Any:
    """The device of a backend array (``'cpu'`` for NumPy)."""
    return getattr(x, "device", "cpu")


def describe_device(xp: Any, device: Any) -> str:
    return f"{name_of(xp)}:{device}"


def namespace_of(x: Any) -> Any:
    """The array-API namespace of one array (fast for NumPy)."""
    if isinstance(x, (np.ndarray, np.generic)):
        return np
    if type(x).__module__.startswith("cupy"):
        import array_api_compat.cupy as cupy_xp

        return cupy_xp
    ns = getattr(x, "__array_namespace__", None)
    if ns is not None:
        return ns()
    import array_api_compat

    return array_api_compat.array_namespace(x)


def is_backend_array(x: Any) -> bool:
    if isinstance(x, np.ndarray):
        return True
    return hasattr(x, "__array_namespace__") and hasattr(x, "shape") and hasattr(x, "dtype")


def resolve_dtype(xp: Any, dtype: Any) -> Any:
    """A dtype given as a string (``'float32'``) or a dtype object, as ``xp``'s dtype."""
    if dtype is None:
        return None
    if isinstance(dtype, str):
        try:
            return getattr(xp, dtype)
        except AttributeError:
            raise TypeError(f"unknown dtype {dtype!r} for backend {name_of(xp)}") from None
    if xp is np:
        return np.dtype(dtype)
    return dtype


def dtype_name(dtype: Any) -> str:
    s = str(dtype)
    return s.rsplit(".", 1)[-1].strip("'>")


def is_floating(xp: Any, dtype: Any) -> bool:
    if xp is np:
        return np.dtype(dtype).kind == "f"
    return xp.isdtype(dtype, "real floating")


def is_complex(xp: Any, dtype: Any) -> bool:
    kind = getattr(dtype, "kind", None)  # NumPy and CuPy dtypes: no namespace call
    if kind is not None:
        return kind == "c"
    return xp.isdtype(dtype, "complex floating")


def is_inexact(xp: Any, dtype: Any) -> bool:
    """Real floating or complex: the dtypes that can require (and carry) gradients."""
    if xp is np:
        return np.dtype(dtype).kind in "fc"
    return xp.isdtype(dtype, ("real floating", "complex floating"))


def is_integral(xp: Any, dtype: Any) -> bool:
    """Signed or unsigned integer (not bool)."""
    return _kind(xp, dtype) == "i"


def _kind(xp: Any, dtype: Any) -> str:
    kind = getattr(dtype, "kind", None)
    if kind is not None:
        return "i" if kind == "u" else kind
    for k, name in (("b", "bool"), ("i", "integral"), ("f", "real floating"),
                    ("c", "complex floating")):
        if xp.isdtype(dtype, name):
            return k
    return "?"


_SCALAR_FITS = {bool: "b", int: "ifc", float: "fc", complex: "c"}


def scalar_dtype(xp: Any, value: Any, dtype: Any) -> Any:
    """The dtype a Python scalar takes beside an array of ``dtype`` (the standard's rule: the
    scalar is weak, so ``where(c, int32_array, 0)`` stays int32 and ``x32 * 0.5`` float32);
    a complex scalar beside a real floating array gives its complex counterpart. None where
    the kinds do not mix (the scalar then gets its own default dtype)."""
    kind = _kind(xp, dtype)
    if kind in _SCALAR_FITS.get(type(value), ""):
        return dtype
    if type(value) is complex and kind == "f":
        name = "complex64" if dtype_name(dtype) == "float32" else "complex128"
        return np.dtype(name) if xp is np else getattr(xp, name)
    return None


def to_backend(data: Any, dtype: Any = None, backend: Backend | None = None) -> Any:
    """Move host data (lists, NumPy arrays, scalars) to ``backend``'s device once.

    An array that already belongs to the backend's namespace keeps its device; another
    library's array (PyTorch, JAX, ...) is copied over through DLPack.
    """
    b = backend or current()
    xp = b.xp
    dt = resolve_dtype(xp, dtype)
    if not isinstance(data, np.ndarray) and hasattr(data, "__dlpack__"):
        if is_foreign(data, b):  # another library's array (torch, JAX, ...): copied over
            data = import_array(data, b, copy=True)
            return data if dt is None or data.dtype == dt else xp.astype(data, dt)
    if is_backend_array(data):
        src = namespace_of(data)
        if src is xp or name_of(src) == b.name:
            return data if dt is None or data.dtype == dt else xp.astype(data, dt)
        if src is not np:
            raise BackendError(
                f"asarray: cannot move a {name_of(src)} array on device {device_of(data)} to "
                f"backend {b.name}; convert it to host data with gpugrad.to_numpy first"
            )
    if b.name == "numpy":
        return np.asarray(data, dtype=dt)
    kw = {} if b.device is None else {"device": b.device}
    return xp.asarray(data, dtype=dt, **kw)


def to_numpy(x: Any) -> np.ndarray:
    """Host NumPy copy of a backend array or Tensor (the only way results leave the device).

    >>> import gpugrad as gg
    >>> gg.to_numpy(gg.asarray([1.0, 2.0]))
    array([1., 2.])
    """
    if hasattr(x, "requires_grad") and hasattr(x, "xp"):  # a Tensor
        x.leaving_as("gg.to_numpy")  # warns inside a transform (gpugrad.tensor.leaving)
        x = x.data
    if isinstance(x, (np.ndarray, np.generic)):
        return np.asarray(x)
    get = getattr(x, "get", None)
    if get is not None and "cupy" in type(x).__module__:
        return get()
    try:
        return np.from_dlpack(x)
    except Exception:
        return np.asarray(x)


# --- another library's arrays, through DLPack --------------------------------------------

def is_foreign(data: Any, backend: Backend) -> bool:
    """Does ``data`` come from another library that speaks DLPack (not a NumPy array, not
    one of ``backend``'s own arrays)?"""
    if isinstance(data, (np.ndarray, np.generic)) or not hasattr(data, "__dlpack__") or (
            hasattr(data, "requires_grad") and hasattr(data, "xp")):  # a Tensor
        return False
    if is_backend_array(data):
        src = namespace_of(data)
        return not (src is backend.xp or name_of(src) == backend.name)
    return True


def import_array(x: Any, backend: Backend | None = None, copy: bool | None = None) -> Any:
    """A backend array holding the DLPack producer ``x``'s values. ``copy=None`` shares
    memory where the devices allow and copies otherwise; ``copy=False`` raises a
    BackendError instead of copying; ``copy=True`` always copies."""
    b = backend or current()
    kw = {} if copy is None else {"copy": copy}
    try:
        out = _native(b, x, kw)
        if copy and b.name != "cupy" and not to_numpy(out).flags.writeable:
            # a read-only producer (JAX) marks its copies read-only too: this copy is ours
            out = np.array(out) if isinstance(out, np.ndarray) else b.xp.asarray(
                out, copy=True, device=device_of(out))
        return out
    except (BufferError, RuntimeError, ValueError, TypeError) as exc:
        if copy is False:
            raise BackendError(at(
                f"from_dlpack: a {_describe(x)} cannot be shared with backend {b.name} "
                f"without a copy ({exc}); pass copy=None or copy=True")) from None
        reason = exc
    try:  # another device: ask the producer for a host copy, which crosses once
        host = np.from_dlpack(x, device="cpu", copy=True)
    except Exception:
        try:  # a producer without DLPack 1.0's device and copy (CuPy's .get() and the like)
            host = to_numpy(x)
            if host.dtype == object:
                raise TypeError("not an array of numbers")
        except Exception:
            dtype = str(getattr(x, "dtype", "")).rpartition(".")[2]
            if dtype == "bfloat16":  # on the host already: there is no dtype to cross into
                raise BackendError(at(
                    f"from_dlpack: a {_describe(x)} has dtype bfloat16, which NumPy and backend "
                    f"{b.name} have no dtype for; convert it to float32 in its own library "
                    "first (x.float() in torch)")) from None
            raise BackendError(at(
                f"from_dlpack: cannot bring a {_describe(x)} to backend {b.name} ({reason}); "
                "copy it to the host in its own library first")) from None
    return to_backend(host, backend=b)


def _native(b: Backend, x: Any, kw: dict) -> Any:
    if b.name == "numpy":
        return np.from_dlpack(x, **kw)
    if b.name == "array_api_strict":
        if b.device is not None:
            kw["device"] = b.device
        return b.xp.from_dlpack(x, **kw)
    if b.name == "cupy":
        import cupy

        out = cupy.from_dlpack(x) if not kw else cupy.from_dlpack(x, **kw)
        return out
    return b.xp.from_dlpack(x, **kw)


def refuse_argument(who: str, x: Any) -> str:
    """The message for an argument ``who`` that is neither a Tensor, a backend array nor a
    Python scalar. Another library's class is named with its module (a ``torch.Tensor`` is
    not a gpugrad Tensor), and a DLPack producer is told how to cross over.

    >>> class Tensor:
    ...     __module__ = "otherlib"
    ...     def __dlpack__(self): ...
    >>> refuse_argument("exp: argument 0", Tensor())[:59]
    'exp: argument 0 is a otherlib.Tensor, not a gpugrad Tensor;'
    """
    cls = type(x)
    if cls.__module__ == "builtins" or not hasattr(x, "__dlpack__"):
        return (f"{who} is a {cls.__qualname__}; pass Tensors, backend arrays or Python "
                "scalars (wrap host data with gpugrad.asarray)")
    return (f"{who} is a {cls.__module__}.{cls.__qualname__}, not a gpugrad Tensor; convert "
            "it first with gg.from_dlpack(x) (shares memory where the devices allow), or "
            "gg.asarray of a NumPy copy (x.numpy() in torch)")


def _describe(x: Any) -> str:
    try:
        dev = x.__dlpack_device__()
    except Exception:
        dev = "?"
    shape = tuple(getattr(x, "shape", ()))
    return f"{type(x).__module__.split('.')[0]} array {shape} on DLPack device {dev}"


def backend_info() -> dict:
    """Name, device and library versions of the current backend.

    >>> import gpugrad as gg
    >>> sorted(gg.backend_info())
    ['array_api_compat', 'device', 'name', 'numpy', 'version']
    """
    import array_api_compat

    b = current()
    ver = getattr(b.xp, "__version__", None)
    if ver is None and b.name == "cupy":
        import cupy

        ver = cupy.__version__
    dev = b.device
    if dev is None:
        try:
            dev = b.xp.__array_namespace_info__().default_device()
        except Exception:
            dev = "cpu"
    return {
        "name": b.name,
        "device": str(dev),
        "version": ver,
        "numpy": np.__version__,
        "array_api_compat": array_api_compat.__version__,
    }
