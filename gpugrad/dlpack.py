"""DLPack both ways: Tensors export their data, and ``gg.from_dlpack`` / ``gg.asarray`` take
any DLPack producer (NumPy, array_api_strict, PyTorch, JAX, CuPy).

Export (``Tensor.__dlpack__``) hands the consumer the Tensor's own array, so it shares memory
where the devices allow; no gradient travels, and writes the consumer makes are not tracked.
Import shares memory where the producer's device is the backend's device, and otherwise asks
the producer for a copy on the host, which then crosses to the backend once.

>>> import numpy as np, gpugrad as gg
>>> with gg.use_backend("numpy"):
...     host = np.arange(3.0)
...     t = gg.from_dlpack(host)
...     np.shares_memory(gg.to_numpy(t), host), np.from_dlpack(t)
(True, array([0., 1., 2.]))
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import backend as B
from .errors import at


def export(t: Any, *, stream: Any = None, max_version: tuple[int, int] | None = None,
           dl_device: tuple[Any, int] | None = None, copy: bool | None = None) -> Any:
    """``t.__dlpack__``: the standard's keywords go to the array's own ``__dlpack__``."""
    kwargs: dict[str, Any] = {"stream": stream}
    for key, value in (("max_version", max_version), ("dl_device", dl_device),
                       ("copy", copy)):
        if value is not None:
            kwargs[key] = value
    try:
        return t.data.__dlpack__(**kwargs)
    except TypeError:
        if len(kwargs) > 1 and max_version is not None and dl_device is None and copy is None:
            # a producer older than DLPack 1.0 (the consumer falls back to the old capsule)
            return t.data.__dlpack__(stream=stream)
        raise


def is_foreign(data: Any, backend: B.Backend) -> bool:
    """Does ``data`` come from another library that speaks DLPack (not a NumPy array, not
    one of ``backend``'s own arrays)?"""
    if isinstance(data, (np.ndarray, np.generic)) or not hasattr(data, "__dlpack__") or (
            hasattr(data, "requires_grad") and hasattr(data, "xp")):  # a Tensor
        return False
    if B.is_backend_array(data):
        src = B.namespace_of(data)
        return not (src is backend.xp or B.name_of(src) == backend.name)
    return True


def import_array(x: Any, backend: B.Backend | None = None, copy: bool | None = None) -> Any:
    """A backend array holding the DLPack producer ``x``'s values. ``copy=None`` shares
    memory where the devices allow and copies otherwise; ``copy=False`` raises a
    BackendError instead of copying; ``copy=True`` always copies."""
    b = backend or B.current()
    kw = {} if copy is None else {"copy": copy}
    try:
        out = _native(b, x, kw)
        if copy and b.name != "cupy" and not B.to_numpy(out).flags.writeable:
            # a read-only producer (JAX) marks its copies read-only too: this copy is ours
            out = np.array(out) if isinstance(out, np.ndarray) else b.xp.asarray(
                out, copy=True, device=B.device_of(out))
        return out
    except (BufferError, RuntimeError, ValueError, TypeError) as exc:
        if copy is False:
            raise B.BackendError(at(
                f"from_dlpack: a {_describe(x)} cannot be shared with backend {b.name} "
                f"without a copy ({exc}); pass copy=None or copy=True")) from None
        reason = exc
    try:  # another device: ask the producer for a host copy, which crosses once
        host = np.from_dlpack(x, device="cpu", copy=True)
    except Exception:
        try:  # a producer without DLPack 1.0's device and copy (CuPy's .get() and the like)
            host = B.to_numpy(x)
            if host.dtype == object:
                raise TypeError("not an array of numbers")
        except Exception:
            raise B.BackendError(at(
                f"from_dlpack: cannot bring a {_describe(x)} to backend {b.name} ({reason}); "
                "copy it to the host in its own library first")) from None
    return B.to_backend(host, backend=b)


def _native(b: B.Backend, x: Any, kw: dict) -> Any:
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


def _describe(x: Any) -> str:
    try:
        dev = x.__dlpack_device__()
    except Exception:
        dev = "?"
    shape = tuple(getattr(x, "shape", ()))
    return f"{type(x).__module__.split('.')[0]} array {shape} on DLPack device {dev}"


def from_dlpack(x: Any, /, *, device: Any = None, copy: bool | None = None) -> Any:
    """A constant Tensor on the backend, from any DLPack producer.

    ``x`` is a NumPy, array_api_strict, PyTorch, JAX or CuPy array, or a Tensor. Memory is
    shared where the producer's device is the backend's (``copy=None``, the default);
    ``copy=True`` always copies, ``copy=False`` raises rather than copy. ``device`` picks
    the backend device (default: the backend's own). Edits made through the producer after
    sharing are not tracked by version counters: copy if you will change it. A read-only
    producer (a JAX array) gives a read-only Tensor; ``copy=True`` gives one you can update
    in place.

    >>> import numpy as np, gpugrad as gg
    >>> with gg.use_backend("numpy"):
    ...     gg.to_numpy(gg.from_dlpack(np.array([1.0, 2.0]), copy=True))
    array([1., 2.])
    """
    from .tensor import Tensor  # this module sits below tensor.py, beside backend.py

    if isinstance(x, Tensor):
        x = x.data
    if not hasattr(x, "__dlpack__"):
        raise TypeError(at(f"from_dlpack: a {type(x).__name__} is not a DLPack producer (it "
                           "has no __dlpack__); use gg.asarray for lists, scalars and buffers"))
    b = B.current()
    if device is not None:
        b = B.make_backend(b, device)
    return Tensor(import_array(x, b, copy))


__all__ = ["from_dlpack"]
