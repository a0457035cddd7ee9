"""Every op gpugrad differentiates, one family per module; importing this registers them.

``defop``/``defvjp`` and the read-only ``registry`` are re-exported here so that
``gpugrad.ops.defop`` is the one public way to add an op.
"""

from ..registry import Op, defop, registry, unregister
from . import (activations, arithmetic, compare, complexes, elementwise, fft, indexing, linalg,
               masking, reductions, scan, shape, softmax, trig)
from . import (linalg_eig, linalg_solve,  # noqa: E402  (gpugrad.array_api.linalg's ops)
               linalg_spectral)
from . import cuda  # noqa: E402, F401  (CuPy fast paths; imports CuPy only when used)
from . import signatures  # noqa: F401  (each op's user-facing call)

__all__ = ["Op", "defop", "registry", "unregister", "activations", "arithmetic", "compare",
           "complexes", "elementwise", "fft", "indexing", "linalg", "masking", "reductions", "scan",
           "shape", "softmax", "trig", "linalg_solve", "linalg_spectral",
           "linalg_eig"]
