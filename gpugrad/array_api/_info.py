"""The namespace's inspection object (``__array_namespace_info__()``): the current backend's
devices and default dtypes, and gpugrad's capabilities, with the standard's extensions that
are present (``capabilities()["extensions"]``).
"""

from __future__ import annotations

import sys
from typing import Any

from .. import backend as B
from . import _wrap as W
from ._names import EXTENSIONS
from ._wrap import mark


def extensions() -> tuple[str, ...]:
    """The standard's extensions (``"linalg"``, ``"fft"``) that gpugrad.array_api holds."""
    namespace = sys.modules[__package__]
    return tuple(name for name in EXTENSIONS if hasattr(namespace, name))


class Info:
    """Facts about gpugrad.array_api on the current backend (the standard's ``Info``).

    >>> import gpugrad as gg
    >>> info = gg.array_api.__array_namespace_info__()
    >>> with gg.use_backend("numpy"):
    ...     info.devices(), info.default_device(), info.default_dtypes()["real floating"]
    (('cpu',), 'cpu', dtype('float64'))
    >>> info.capabilities()["boolean indexing"]
    True
    """

    __module__ = "gpugrad.array_api"

    def _native(self) -> Any:
        return W.native(B.current().xp).__array_namespace_info__()

    def capabilities(self) -> dict:
        """Boolean indexing, data-dependent shapes, the most dimensions, and ``extensions``:
        the standard's extensions present in gpugrad.array_api."""
        out = dict(self._native().capabilities())
        out["extensions"] = extensions()
        return out

    def default_device(self) -> Any:
        """The current backend's device (``'cpu'`` for NumPy)."""
        device = B.current().device
        return self._native().default_device() if device is None else device

    def devices(self) -> tuple:
        """The current backend's devices."""
        return tuple(self._native().devices())

    def default_dtypes(self, *, device: Any = None) -> dict:
        """The default floating, complex, integral and indexing dtypes."""
        return self._native().default_dtypes(device=device)

    def dtypes(self, *, device: Any = None, kind: Any = None) -> dict:
        """The dtypes of ``kind`` (a kind name, or a tuple of them; all when None) by name."""
        return self._native().dtypes(device=device, kind=kind)


@mark("none")
def __array_namespace_info__() -> Info:
    """The namespace's inspection object: devices, default dtypes, capabilities."""
    return Info()
