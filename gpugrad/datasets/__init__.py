"""Small datasets shipped inside the package (no network needed).

``load_digits()``: the UCI optical recognition of handwritten digits test set (1,797 8x8
images, pixel values 0..16, 10 classes; E. Alpaydin and C. Kaynak, 1998; CC BY 4.0).

>>> from gpugrad.datasets import load_digits
>>> X, y = load_digits()
>>> X.shape, y.shape, int(y.max())
((1797, 64), (1797,), 9)
"""

from __future__ import annotations

import pathlib

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """(X, y): X uint8 of shape (1797, 64) with values 0..16, y uint8 labels 0..9."""
    with np.load(HERE / "digits.npz") as f:
        return f["X"], f["y"]
