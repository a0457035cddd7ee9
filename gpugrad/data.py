"""Minibatches over ``(X, y)``, moved to the device once per batch, or once in all.

>>> import numpy as np, gpugrad as gg
>>> X, y = np.arange(10.0).reshape(5, 2), np.arange(5)
>>> [tuple(xb.shape) for xb, yb in gg.data.Batches(X, y, batch_size=2, shuffle=False)]
[(2, 2), (2, 2), (1, 2)]
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from . import backend as B

DEFAULT_RESIDENT_BYTES = 1 << 30


class Batches:
    """Iterate over minibatches ``(X[i:i+n], y[i:i+n])`` as backend arrays.

    - ``shuffle`` draws a new order each epoch from a host ``numpy.random.Generator`` seeded
      with ``seed``, so runs repeat exactly.
    - ``drop_last`` skips a final short batch.
    - ``resident``: True moves the whole dataset to the device once and slices it there;
      False moves each batch as it is needed; "auto" (default) is True when the data fits
      in ``max_resident_bytes``.
    - ``shard``: a ``gg.distributed`` group (anything with ``rank`` and ``size``). Each rank
      then gets a disjoint, equal share of every epoch, in batches of ``batch_size`` rows
      (the per-rank batch). The shuffle is seeded, so identical on every rank (a seed is
      required). Step k of the epoch covers the same rows on all ranks together as step k
      of one process with batch ``batch_size * size``. The remainder: the last
      ``n % size`` rows of the epoch's order are left out (a different few each shuffled
      epoch), and every rank's last batch is equally short (dropped with ``drop_last``), so
      all ranks take the same number of steps.
    """

    def __init__(self, X: Any, y: Any = None, batch_size: int = 32, *, shuffle: bool = True,
                 seed: int | None = 0, drop_last: bool = False, resident: bool | str = "auto",
                 max_resident_bytes: int = DEFAULT_RESIDENT_BYTES, shard: Any = None) -> None:
        if batch_size < 1:
            raise ValueError(f"Batches: batch_size must be >= 1, got {batch_size}")
        X = _host(X)
        n = X.shape[0]
        if y is not None:
            y = _host(y)
            if y.shape[0] != n:
                raise ValueError(f"Batches: X has {n} rows but y has {y.shape[0]}; they must "
                                 "have one label per row")
        self.X, self.y = X, y
        self.n = n
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.rng = np.random.default_rng(seed)
        nbytes = X.nbytes + (0 if y is None else y.nbytes)
        if resident == "auto":
            resident = nbytes <= max_resident_bytes
        self.resident = bool(resident)
        self._device: tuple | None = None
        self.shard = shard if shard is not None and shard.size > 1 else None
        if self.shard is not None and seed is None and shuffle:
            raise ValueError("Batches: shard needs a seed, so that every rank draws the same "
                             "shuffle; pass seed=<int>")

    def __len__(self) -> int:
        n = self.n if self.shard is None else self.n // self.shard.size  # rows per rank
        if self.drop_last:
            return n // self.batch_size
        return -(-n // self.batch_size)

    def _on_device(self) -> tuple:
        if self._device is None:
            self._device = (B.to_backend(self.X),
                            None if self.y is None else B.to_backend(self.y))
        return self._device

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        order = self.rng.permutation(self.n) if self.shuffle else None
        n = self.n
        if self.shard is not None:
            order = shard_order(order, n, self.batch_size, self.shard.rank, self.shard.size)
            n = len(order)
        stop = len(self) * self.batch_size if self.drop_last else n
        if self.resident:
            X, y = self._on_device()
            xp = B.namespace_of(X)
            dev_order = None
            if order is not None:  # one small transfer per epoch
                dev_order = B.to_backend(order)
            for i in range(0, stop, self.batch_size):
                j = min(i + self.batch_size, n)
                if dev_order is None:
                    yield X[i:j, ...], (None if y is None else y[i:j, ...])
                else:
                    idx = dev_order[i:j]
                    yield (xp.take(X, idx, axis=0),
                           None if y is None else xp.take(y, idx, axis=0))
            return
        for i in range(0, stop, self.batch_size):
            j = min(i + self.batch_size, n)
            sel = slice(i, j) if order is None else order[i:j]
            yield (B.to_backend(np.ascontiguousarray(self.X[sel])),
                   None if self.y is None else B.to_backend(np.ascontiguousarray(self.y[sel])))


def shard_order(order: np.ndarray | None, n: int, batch: int, rank: int,
                size: int) -> np.ndarray:
    """The rows of one epoch that ``rank`` of ``size`` trains on, in its order.

    Step k of the epoch gives rank r the rows at positions ``k*batch*size + r*batch`` and on
    (a block of ``batch``); the last, short step splits what is left equally. ``n % size``
    rows at the end of the order are left out.

    >>> shard_order(None, 10, 2, 1, 2).tolist()   # rank 1 of 2, batches of 2 rows
    [2, 3, 6, 7, 9]
    """
    order = np.arange(n) if order is None else np.asarray(order)
    per_rank = n // size
    full = per_rank // batch
    head = order[:full * batch * size].reshape(full, size, batch)[:, rank, :].reshape(-1)
    short = per_rank - full * batch
    tail = order[full * batch * size:full * batch * size + short * size]
    return np.concatenate([head, tail.reshape(size, short)[rank]])


def _host(a: Any) -> np.ndarray:
    if isinstance(a, np.ndarray):
        return a
    return B.to_numpy(a)


def train_test_split(X: np.ndarray, y: np.ndarray, test_fraction: float = 0.2,
                     seed: int | None = 0) -> tuple:
    """Shuffle rows with a seeded host RNG and split off ``test_fraction`` of them."""
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"train_test_split: test_fraction must be in [0, 1), got "
                         f"{test_fraction}")
    n = X.shape[0]
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return X[train], y[train], X[test], y[test]
