"""Real clients of the array-API standard on gpugrad Tensors: SciPy (``SCIPY_ARRAY_API=1``)
and scikit-learn (``array_api_dispatch=True``). Their results equal NumPy's, and gpugrad
differentiates through the ones that keep arrays. Needs the ``clients`` extra; skipped where
it is absent.

scikit-learn's estimators that use ``xp.linalg`` (PCA with svd_solver="full",
LinearDiscriminantAnalysis with solver="svd") run on gg.linalg and equal NumPy; PCA's fitted
arrays differentiate with respect to the data (checked against finite differences).
"""

import os
import sys

import numpy as np
import pytest

import gpugrad as gg

if "scipy" not in sys.modules:  # SciPy reads the switch once, when it is first imported
    os.environ.setdefault("SCIPY_ARRAY_API", "1")
special = pytest.importorskip("scipy.special")
stats = pytest.importorskip("scipy.stats")


@pytest.fixture(autouse=True)
def _scipy_array_api():
    if not isinstance(special.softmax(gg.asarray([1.0, 2.0])), gg.Tensor):
        pytest.skip("SciPy was imported without SCIPY_ARRAY_API=1 in this process")
    with gg.use_backend("numpy"):
        yield


A = np.random.default_rng(7).random((3, 5)) + 0.5
W = np.random.default_rng(8).standard_normal((3, 5))

CALLS = {
    "skew": lambda m, x: m.skew(x, axis=1),
    "kurtosis": lambda m, x: m.kurtosis(x, axis=1),
    "moment": lambda m, x: m.moment(x, order=3, axis=1),
    "variation": lambda m, x: m.variation(x, axis=1),
    "gmean": lambda m, x: m.gmean(x, axis=1),
    "hmean": lambda m, x: m.hmean(x, axis=1),
    "zscore": lambda m, x: m.zscore(x, axis=1),
    "softmax": lambda m, x: m.softmax(x, axis=1),
    "log_softmax": lambda m, x: m.log_softmax(x, axis=1),
    "logsumexp": lambda m, x: m.logsumexp(x, axis=1),
}


def _module(name):
    return special if name in ("softmax", "log_softmax", "logsumexp") else stats


def _weighted(out, w):
    return out * (w if out.ndim == 2 else w[:, 0])


@pytest.mark.parametrize("name", sorted(CALLS))
def test_scipy_on_tensors_equals_numpy(name):
    call, m = CALLS[name], _module(name)
    out = call(m, gg.asarray(A))
    assert isinstance(out, gg.Tensor)
    np.testing.assert_allclose(gg.to_numpy(out), call(m, A), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_scipy_differentiates(name):
    """gg.grad through SciPy's code against central differences of SciPy on NumPy."""
    call, m = CALLS[name], _module(name)

    def loss(x):
        return gg.sum(_weighted(call(m, x), gg.asarray(W)))

    grad = gg.to_numpy(gg.grad(loss)(gg.asarray(A)))
    h, fd = 1e-6, np.zeros_like(A)
    for i in np.ndindex(A.shape):
        e = np.zeros_like(A)
        e[i] = h
        fd[i] = (np.sum(_weighted(call(m, A + e), W)) - np.sum(_weighted(call(m, A - e), W))) / (
            2 * h)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-7)


# StandardScaler divides 0 by 0 on its first batch and discards the NaN; on NumPy it silences
# the warning with np.errstate, elsewhere (array_api_strict, gpugrad) it lets NumPy warn
@pytest.mark.filterwarnings("ignore:invalid value encountered in divide:RuntimeWarning")
def test_scikit_learn_scalers_on_tensors():
    sklearn = pytest.importorskip("sklearn")
    from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, Normalizer, StandardScaler

    with sklearn.config_context(array_api_dispatch=True):
        for scaler in (StandardScaler, MinMaxScaler, MaxAbsScaler, Normalizer):
            out = scaler().fit_transform(gg.asarray(A))
            assert isinstance(out, gg.Tensor), scaler.__name__
            np.testing.assert_allclose(gg.to_numpy(out), scaler().fit_transform(A),
                                       rtol=1e-12, atol=1e-14)


def test_scikit_learn_linalg_estimators():
    sklearn = pytest.importorskip("sklearn")
    from sklearn.decomposition import PCA

    with sklearn.config_context(array_api_dispatch=True):
        out = PCA(n_components=2, svd_solver="full").fit_transform(gg.asarray(A))
        white = PCA(n_components=3, svd_solver="full", whiten=True).fit(gg.asarray(LX))
        white_x = white.transform(gg.asarray(LX))
    want = PCA(n_components=2, svd_solver="full").fit_transform(A)
    np.testing.assert_allclose(np.abs(gg.to_numpy(out)), np.abs(want), rtol=1e-9, atol=1e-12)
    ref = PCA(n_components=3, svd_solver="full", whiten=True).fit(LX)
    assert isinstance(white.explained_variance_ratio_, gg.Tensor)
    np.testing.assert_allclose(np.abs(gg.to_numpy(white_x)),
                               np.abs(ref.transform(LX)), rtol=1e-9, atol=1e-12)


LX = np.random.default_rng(9).standard_normal((12, 4)) + np.repeat([[0.0], [1.5], [-1.0]], 4,
                                                                   axis=0)
LY = np.repeat([0, 1, 2], 4)


def test_scikit_learn_lda_svd_on_tensors():
    sklearn = pytest.importorskip("sklearn")
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis as LDA

    with sklearn.config_context(array_api_dispatch=True):
        m = LDA(solver="svd").fit(gg.asarray(LX), gg.asarray(LY))
        t, p, pp = (f(gg.asarray(LX)) for f in (m.transform, m.predict, m.predict_proba))
    ref = LDA(solver="svd").fit(LX, LY)
    assert all(isinstance(r, gg.Tensor) for r in (t, p, pp))
    np.testing.assert_allclose(np.abs(gg.to_numpy(t)), np.abs(ref.transform(LX)), rtol=1e-9,
                               atol=1e-12)
    np.testing.assert_array_equal(gg.to_numpy(p), ref.predict(LX))
    np.testing.assert_allclose(gg.to_numpy(pp), ref.predict_proba(LX), rtol=1e-9, atol=1e-12)


def _pca_variance(sklearn, x):
    from sklearn.decomposition import PCA

    return gg.sum(PCA(n_components=2, svd_solver="full").fit(x).explained_variance_)


# PCA only: LDA's "svd" solver takes the SVD of the centred class means, which has a zero
# singular value by construction. Where LAPACK returns it as exactly 0 (it does with
# OpenBLAS's Haswell kernel, not with SkylakeX's) the SVD's gradient is NaN there, as
# PyTorch's is (docs/linalg.md); LDA's forward is compared with NumPy above.
@pytest.mark.parametrize("loss", [_pca_variance], ids=["pca"])
def test_scikit_learn_linalg_estimators_differentiate(loss):
    sklearn = pytest.importorskip("sklearn")
    with sklearn.config_context(array_api_dispatch=True):
        x = gg.Variable(LX)
        loss(sklearn, x).backward()
        fd = np.zeros_like(LX)
        h = 1e-6
        for i, j in np.ndindex(*LX.shape):
            e = np.zeros_like(LX)
            e[i, j] = h
            fd[i, j] = (float(loss(sklearn, gg.asarray(LX + e)))
                        - float(loss(sklearn, gg.asarray(LX - e)))) / (2 * h)
    assert np.abs(fd).max() > 0.1
    np.testing.assert_allclose(gg.to_numpy(x.grad), fd, rtol=1e-5, atol=1e-6)
