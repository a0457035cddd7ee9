"""gpugrad.data: minibatches on the device, and the seeded train/test split."""

from __future__ import annotations

import numpy as np
import pytest

import gpugrad as gg
from helpers import assert_on_backend as on_backend
from gpugrad import backend as B
from gpugrad.data import Batches, train_test_split


def dataset(n=10, d=3):
    X = np.arange(n * d, dtype=np.float32).reshape(n, d)
    y = np.arange(n, dtype=np.int64)  # label == row index, so batches reveal the order
    return X, y


def rows_of(batches):
    """Row indices of each batch, read back from the labels, with the X rows checked."""
    out = []
    for xb, yb in batches:
        xs, ys = gg.to_numpy(xb), gg.to_numpy(yb)
        d = xs.shape[1]
        np.testing.assert_array_equal(xs, ys[:, None] * d + np.arange(d))  # rows match labels
        out.append(ys.tolist())
    return out


@pytest.mark.parametrize("n,bs,drop_last,want", [
    (10, 3, False, 4), (10, 3, True, 3), (9, 3, False, 3), (9, 3, True, 3),
    (2, 5, False, 1), (2, 5, True, 0), (10, 1, False, 10),
])
def test_batch_count(n, bs, drop_last, want):
    X, y = dataset(n)
    b = Batches(X, y, batch_size=bs, drop_last=drop_last, shuffle=False)
    assert len(b) == want
    batches = list(b)
    assert len(batches) == want
    sizes = [len(gg.to_numpy(yb)) for _, yb in batches]
    if drop_last:
        assert all(s == bs for s in sizes)
    else:
        assert sum(sizes) == n and all(s == bs for s in sizes[:-1])


def test_no_shuffle_keeps_order():
    X, y = dataset(7)
    assert rows_of(Batches(X, y, batch_size=3, shuffle=False)) == [[0, 1, 2], [3, 4, 5], [6]]


def test_drop_last_drops_only_the_tail():
    X, y = dataset(7)
    assert rows_of(Batches(X, y, 3, shuffle=False, drop_last=True)) == [[0, 1, 2], [3, 4, 5]]


def test_shuffle_reproducible_and_new_order_each_epoch():
    X, y = dataset(50)
    a = Batches(X, y, batch_size=8, seed=3)
    b = Batches(X, y, batch_size=8, seed=3)
    a1, a2 = rows_of(a), rows_of(a)
    assert a1 == rows_of(b) and a2 == rows_of(b)  # same seed, same sequence of epochs
    assert a1 != a2  # a new order each epoch
    assert a1 != rows_of(Batches(X, y, batch_size=8, seed=4))
    assert [r for b in a1 for r in b] != list(range(50))  # really shuffled


@pytest.mark.parametrize("resident", [True, False])
@pytest.mark.parametrize("drop_last", [False, True])
def test_every_row_once_per_epoch(resident, drop_last):
    X, y = dataset(23)
    b = Batches(X, y, batch_size=5, seed=0, resident=resident, drop_last=drop_last)
    for _ in range(3):
        seen = [r for batch in rows_of(b) for r in batch]
        if drop_last:
            assert len(seen) == 20 and len(set(seen)) == 20
        else:
            assert sorted(seen) == list(range(23))


@pytest.mark.parametrize("shuffle", [True, False])
def test_resident_and_streamed_agree(bk, shuffle):
    X, y = dataset(17)
    res = Batches(X, y, batch_size=4, seed=5, shuffle=shuffle, resident=True)
    stream = Batches(X, y, batch_size=4, seed=5, shuffle=shuffle, resident=False)
    assert res.resident and not stream.resident
    for _ in range(2):
        for (xa, ya), (xb, yb) in zip(res, stream, strict=True):
            np.testing.assert_array_equal(gg.to_numpy(xa), gg.to_numpy(xb))
            np.testing.assert_array_equal(gg.to_numpy(ya), gg.to_numpy(yb))


def test_resident_auto_follows_size_limit():
    X, y = dataset(10)
    assert Batches(X, y).resident
    assert not Batches(X, y, max_resident_bytes=X.nbytes).resident


@pytest.mark.parametrize("resident", [True, False])
@pytest.mark.parametrize("shuffle", [True, False])
def test_batches_are_backend_arrays(bk, resident, shuffle):
    X = np.random.default_rng(0).normal(size=(9, 2)).astype(bk.float_dtype)
    y = np.arange(9)
    for xb, yb in Batches(X, y, batch_size=4, resident=resident, shuffle=shuffle):
        on_backend(bk, xb)
        on_backend(bk, yb)
        assert B.dtype_name(xb.dtype) == bk.float_dtype
        assert "int" in B.dtype_name(yb.dtype)
        assert not isinstance(xb, gg.Tensor)


def test_backend_arrays_as_input(bk):
    X = gg.asarray(np.arange(12.0, dtype=bk.float_dtype).reshape(6, 2)).data
    y = gg.asarray(np.arange(6)).data
    batches = list(Batches(X, y, batch_size=4, shuffle=False))
    np.testing.assert_array_equal(gg.to_numpy(batches[1][1]), [4, 5])
    on_backend(bk, batches[0][0])


def test_without_labels():
    X, _ = dataset(5)
    out = list(Batches(X, batch_size=2, shuffle=False))
    assert [yb for _, yb in out] == [None, None, None]
    assert [gg.to_numpy(xb).shape for xb, _ in out] == [(2, 3), (2, 3), (1, 3)]


def test_mismatched_lengths_raise():
    X, y = dataset(10)
    with pytest.raises(ValueError, match="10.*9"):
        Batches(X, y[:9])


def test_bad_batch_size():
    X, y = dataset(4)
    with pytest.raises(ValueError, match="batch_size"):
        Batches(X, y, batch_size=0)


# --- train_test_split ------------------------------------------------------------------------

def test_train_test_split_sizes_and_disjoint():
    X, y = dataset(100)
    Xtr, ytr, Xte, yte = train_test_split(X, y, 0.2, seed=0)
    assert Xtr.shape == (80, 3) and Xte.shape == (20, 3)
    assert ytr.shape == (80,) and yte.shape == (20,)
    assert sorted(ytr.tolist() + yte.tolist()) == list(range(100))
    np.testing.assert_array_equal(Xtr[:, 0], ytr * 3)  # rows stay with their labels
    np.testing.assert_array_equal(Xte[:, 0], yte * 3)
    assert ytr.tolist() != sorted(ytr.tolist())  # shuffled


def test_train_test_split_deterministic():
    X, y = dataset(50)
    a = train_test_split(X, y, 0.3, seed=1)
    b = train_test_split(X, y, 0.3, seed=1)
    c = train_test_split(X, y, 0.3, seed=2)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert a[3].tolist() != c[3].tolist()
    assert len(a[3]) == 15


def test_train_test_split_edges():
    X, y = dataset(10)
    _, ytr, _, yte = train_test_split(X, y, 0.0)
    assert len(ytr) == 10 and len(yte) == 0
    with pytest.raises(ValueError, match="test_fraction"):
        train_test_split(X, y, 1.0)
