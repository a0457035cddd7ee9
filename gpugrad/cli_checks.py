"""What ``gpugrad train`` refuses before it trains: option values, output folders, features.

Option values are checked by argparse type functions, so the message names the option
(``argument --lr: ...``) and nothing has been loaded yet. Output folders (``--save``,
``--plot``) are checked by writing a probe file there, so a read-only filesystem or a folder
without permission is found at the start, not after the last epoch.

>>> from gpugrad import cli_checks
>>> cli_checks.learning_rate("0.5"), cli_checks.hidden_sizes("64, 32")
(0.5, [64, 32])
>>> cli_checks.seed("-1")
Traceback (most recent call last):
argparse.ArgumentTypeError: must be an integer 0 or above (a NumPy seed), got '-1'
"""

from __future__ import annotations

import argparse
import math
import pathlib
import tempfile

import numpy as np


class CLIError(Exception):
    """A problem with the user's input: printed as one line, no traceback."""


def learning_rate(text: str) -> float:
    """``--lr``: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number such as 0.01, got {text!r}") \
            from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text!r}")
    return value


def _integer(text: str, least: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < least:
        raise argparse.ArgumentTypeError(f"must be an integer {least} or above{what}, got "
                                         f"{text!r}")
    return value


def seed(text: str) -> int:
    """``--seed``: an integer NumPy can seed with (0 or above)."""
    return _integer(text, 0, " (a NumPy seed)")


def positive(text: str) -> int:
    """``--epochs``, ``--batch-size``: an integer 1 or above."""
    return _integer(text, 1, "")


def hidden_sizes(text: str) -> list[int]:
    """``--hidden``: comma-separated layer widths, each 1 or above (``""``: no hidden
    layer, a linear model)."""
    try:
        sizes = [int(h) for h in text.split(",") if h.strip()]
    except ValueError:
        sizes = None
    if sizes is None or any(h < 1 for h in sizes):
        raise argparse.ArgumentTypeError(f"expected layer widths of 1 or more, like 64,64, "
                                         f"got {text!r}")
    return sizes


def split_fraction(text: str) -> float:
    """``--test-split``: the fraction of rows held out, 0 (none) up to below 1."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be a fraction from 0 up to below 1, got "
                                         f"{text!r}")
    return value


def writable_file(option: str, path: str | None, target: str | None = None) -> None:
    """Refuse ``option path`` now if the file (``target``, default ``path``) could not be
    written at the end."""
    if not path:
        return
    p = pathlib.Path(target or path)
    folder = p.parent
    if p.is_dir():
        raise CLIError(f"{option} {path}: is a folder; give a file name in it")
    if not folder.is_dir():
        raise CLIError(f"{option} {path}: the folder {folder} does not exist (or is not a "
                       "folder); create it first or choose another path")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise CLIError(f"{option} {path}: cannot write into the folder {folder} "
                       f"({exc.strerror or exc}); choose a writable folder") from None


def finite_features(X: np.ndarray, where: str) -> np.ndarray:
    """``X`` as float32, or a CLIError naming the first row and column that is NaN or
    infinite (or too large for float32)."""
    with np.errstate(over="ignore", invalid="ignore"):
        X32 = X.astype(np.float32)
    bad = ~np.isfinite(X32)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise CLIError(f"{where}: feature row {row}, column {col} (counting from 0) is "
                       f"{X[row, col]}; {int(bad.sum())} value(s) are NaN or infinite as "
                       "float32. Remove or impute them before training")
    return X32
