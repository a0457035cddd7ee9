"""Op case rows for the fft extension (gpugrad.ops.fft), added to tests/op_cases.py's table.

Each transform gets its default call and variants with ``n``/``s`` padding and truncation,
other axes, batches and every ``norm``; references are ``numpy.fft`` with the same arguments.
Complex inputs come from ``cnormal``; the generic checks then use PyTorch's convention
(``gg.testing.check_grad`` sends complex inputs and outputs to ``check_grad_complex``).
"""

from __future__ import annotations

import numpy as np

import gpugrad as gg
from op_cases import OpCase, normal


def cnormal(r, s):
    return np.asarray(r.standard_normal(s) + 1j * r.standard_normal(s), dtype=np.complex128)


def _row(name, variant, gen, shape, kw, ref_axes=None):
    fn = getattr(gg.fft, name)
    ref = getattr(np.fft, name)
    ref_kw = kw if ref_axes is None else {**kw, "axes": ref_axes}  # NumPy 2 wants axes with s
    return OpCase(name, lambda x: fn(x, **kw), lambda x: ref(x, **ref_kw), (gen,), (shape,),
                  variant=variant)


FFT_ROWS = [
    ("fft", "", cnormal, (2, 5), {}),
    ("fft", "real_pad_ortho", normal, (2, 5), {"n": 7, "norm": "ortho"}),
    ("fft", "axis0_trunc_forward", cnormal, (3, 4), {"n": 2, "axis": 0, "norm": "forward"}),
    ("ifft", "", cnormal, (2, 5), {}),
    ("ifft", "pad_ortho", cnormal, (2, 4), {"n": 6, "norm": "ortho"}),
    ("ifft", "real_forward", normal, (3, 3), {"axis": 0, "norm": "forward"}),
    ("fftn", "", cnormal, (3, 4), {}),
    ("fftn", "batched_s_forward", cnormal, (2, 2, 3), {"s": (3, 2), "norm": "forward"},
     (1, 2)),
    ("fftn", "axes0_ortho", normal, (3, 2), {"axes": (0,), "norm": "ortho"}),
    ("ifftn", "", cnormal, (3, 4), {}),
    ("ifftn", "s_axes_ortho", cnormal, (2, 3, 2), {"s": (4, 2), "axes": (2, 0),
                                                   "norm": "ortho"}),
    ("rfft", "even", normal, (2, 6), {}),
    ("rfft", "odd_ortho", normal, (2, 5), {"norm": "ortho"}),
    ("rfft", "axis0_pad_forward", normal, (3, 2), {"n": 6, "axis": 0, "norm": "forward"}),
    ("rfft", "trunc", normal, (2, 5), {"n": 3}),
    ("irfft", "", cnormal, (2, 4), {}),
    ("irfft", "odd_ortho", cnormal, (2, 4), {"n": 7, "norm": "ortho"}),
    ("irfft", "trunc_forward", cnormal, (2, 5), {"n": 4, "norm": "forward"}),
    ("irfft", "pad_axis0", cnormal, (2, 3), {"n": 6, "axis": 0}),
    ("rfftn", "", normal, (3, 4), {}),
    ("rfftn", "s_odd_ortho", normal, (3, 4), {"s": (2, 5), "norm": "ortho"}, (0, 1)),
    ("rfftn", "batched_axes_forward", normal, (2, 3, 4), {"axes": (0, 2), "norm": "forward"}),
    ("irfftn", "", cnormal, (3, 3), {}),
    ("irfftn", "s_ortho", cnormal, (3, 4), {"s": (4, 5), "norm": "ortho"}, (0, 1)),
    ("irfftn", "batched_forward", cnormal, (2, 3, 3), {"axes": (1, 2), "norm": "forward"}),
    ("hfft", "", cnormal, (2, 4), {}),
    ("hfft", "odd_ortho", cnormal, (2, 3), {"n": 5, "norm": "ortho"}),
    ("hfft", "axis0_forward", cnormal, (4, 2), {"n": 6, "axis": 0, "norm": "forward"}),
    ("ihfft", "", normal, (2, 6), {}),
    ("ihfft", "odd_ortho", normal, (2, 5), {"norm": "ortho"}),
    ("ihfft", "pad_forward", normal, (2, 3), {"n": 4, "norm": "forward"}),
    ("fftshift", "", normal, (3, 4), {}),
    ("fftshift", "axes1", normal, (2, 5), {"axes": 1}),
    ("fftshift", "complex", cnormal, (3, 3), {"axes": (0, 1)}),
    ("ifftshift", "", normal, (3, 5), {}),
    ("ifftshift", "axes0", cnormal, (5, 2), {"axes": (0,)}),
]

FFT_CASES = [_row(*row) for row in FFT_ROWS]
