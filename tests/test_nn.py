"""gpugrad.nn: Modules, layers, initialisers and losses.

Expected values are hand-written float64 NumPy formulas; gradients are checked with
finite differences (``gg.testing.check_grad``) on the float64 backends.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import gpugrad as gg
from helpers import assert_on_backend as on_backend
from helpers import host
from gpugrad import backend as B
from gpugrad import nn
from gpugrad.nn import init

# --- helpers --------------------------------------------------------------------------------

def tol(bk):
    return {"rtol": 1e-12, "atol": 1e-12} if bk.float64 else {"rtol": 2e-6, "atol": 2e-6}


def np_sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def np_log_softmax(z):
    m = z.max(axis=-1, keepdims=True)
    return z - (m + np.log(np.exp(z - m).sum(axis=-1, keepdims=True)))


def reduce_np(loss, reduction):
    return {"mean": loss.mean(), "sum": loss.sum(), "none": loss}[reduction]


class Block(nn.Module):
    def __init__(self, seed):
        super().__init__()
        self.lin1 = nn.Linear(2, 3, seed=seed)
        self.scale = gg.Variable(np.ones(3, "float32"), name="scale")
        self.act = nn.Tanh()
        self.lin2 = nn.Linear(3, 4, bias=False, seed=seed + 1)

    def forward(self, x):
        return self.lin2(self.act(self.lin1(x) * self.scale))


class Net(nn.Module):
    def __init__(self, seed=0):
        super().__init__()
        self.block = Block(seed)
        self.layers = [nn.Linear(4, 5, seed=seed + 2), nn.ReLU(), nn.Linear(5, 2, seed=seed + 3)]
        self.head = gg.Variable(np.zeros(2, "float32"), name="head")

    def forward(self, x):
        h = self.block(x)
        for layer in self.layers:
            h = layer(h)
        return h + self.head


NET_NAMES = ["block.lin1.weight", "block.lin1.bias", "block.scale", "block.lin2.weight",
             "layers.0.weight", "layers.0.bias", "layers.2.weight", "layers.2.bias", "head"]


# --- Module ---------------------------------------------------------------------------------

def test_named_parameters_recursive_and_ordered():
    net = Net()
    names = [n for n, _ in net.named_parameters()]
    assert names == NET_NAMES
    params = net.parameters()
    assert len(params) == len(NET_NAMES)
    assert params[0] is net.block.lin1.weight
    assert params[2] is net.block.scale
    assert params[5] is net.layers[0].bias
    assert params[-1] is net.head
    assert all(isinstance(p, gg.Variable) and p.requires_grad for p in params)
    assert [n for n, _ in net.block.named_parameters()] == [
        "lin1.weight", "lin1.bias", "scale", "lin2.weight"]


def test_shared_parameter_listed_once():
    shared = nn.Linear(3, 3, seed=0)
    model = nn.Sequential(shared, nn.Sigmoid(), shared)
    assert len(model.parameters()) == 2
    assert [n for n, _ in model.named_parameters()] == ["layers.0.weight", "layers.0.bias"]


def test_zero_grad(bk):
    net = Net()
    x = gg.asarray(np.ones((3, 2), "float32"))  # the layers are float32
    gg.sum(net(x)).backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_train_eval_propagate():
    net = Net()
    modules = [net, net.block, net.block.lin1, net.block.act, net.block.lin2, *net.layers]
    assert all(m.training for m in modules)
    assert net.eval() is net
    assert not any(m.training for m in modules)
    net.train()
    assert all(m.training for m in modules)
    net.train(False)
    assert not any(m.training for m in modules)


def test_state_dict_round_trip(bk):
    a = nn.MLP([4, 6, 3], seed=0)
    b = nn.MLP([4, 6, 3], seed=1)
    sd = a.state_dict()
    assert list(sd) == ["layers.0.weight", "layers.0.bias", "layers.2.weight", "layers.2.bias"]
    assert not np.allclose(host(sd["layers.0.weight"]), host(b.state_dict()["layers.0.weight"]))
    b.load_state_dict(sd)
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(host(pa), host(pb), err_msg=name)
        on_backend(bk, pb.data)
        assert pb.dtype == pa.dtype
        assert pb.data is not pa.data
    # b holds copies: moving a does not move b
    before = host(b.layers[0].weight)
    with gg.no_grad():
        a.layers[0].weight.data += 1.0
    np.testing.assert_array_equal(host(b.layers[0].weight), before)
    x = gg.asarray(np.ones((2, 4), "float32"))  # the layers are float32
    np.testing.assert_allclose(host(b(x)), host(nn.MLP([4, 6, 3], seed=0)(x)), rtol=1e-6)


def test_state_dict_loads_host_arrays(bk):
    a = nn.MLP([3, 2], seed=0)
    b = nn.MLP([3, 2], seed=5)
    b.load_state_dict({k: gg.to_numpy(v) for k, v in a.state_dict().items()})
    np.testing.assert_array_equal(host(b.layers[0].weight), host(a.layers[0].weight))
    on_backend(bk, b.layers[0].weight.data)


def test_load_state_dict_missing_name():
    model = nn.MLP([4, 6, 3], seed=0)
    sd = dict(model.state_dict())
    del sd["layers.2.bias"]
    with pytest.raises(nn.StateDictError, match=r"layers\.2\.bias"):
        nn.MLP([4, 6, 3], seed=1).load_state_dict(sd)


def test_load_state_dict_unexpected_name():
    model = nn.MLP([4, 6, 3], seed=0)
    sd = dict(model.state_dict())
    sd["layers.4.weight"] = np.zeros((3, 3), "float32")
    with pytest.raises(nn.StateDictError, match=r"layers\.4\.weight"):
        nn.MLP([4, 6, 3], seed=1).load_state_dict(sd)


def test_load_state_dict_wrong_shape_leaves_model_unchanged():
    src = nn.MLP([4, 6, 3], seed=0)
    dst = nn.MLP([4, 6, 3], seed=1)
    before = {k: host(v) for k, v in dst.state_dict().items()}
    sd = dict(src.state_dict())
    sd["layers.2.weight"] = np.zeros((6, 4), "float32")
    with pytest.raises(nn.StateDictError) as info:
        dst.load_state_dict(sd)
    msg = str(info.value)
    assert "layers.2.weight" in msg and "(6, 3)" in msg and "(6, 4)" in msg
    assert isinstance(info.value, (KeyError, ValueError))
    for k, v in dst.state_dict().items():  # nothing half-loaded
        np.testing.assert_array_equal(host(v), before[k])


# --- layers ---------------------------------------------------------------------------------

def test_linear_forward_matches_formula(bk):
    layer = nn.Linear(3, 2, seed=0, dtype=bk.float_dtype)
    with gg.no_grad():
        layer.bias.data += 0.25
    x = np.arange(12, dtype=bk.float_dtype).reshape(4, 3) / 10
    y = layer(gg.asarray(x))
    on_backend(bk, y.data)
    want = x.astype(np.float64) @ host(layer.weight) + host(layer.bias)
    np.testing.assert_allclose(host(y), want, **tol(bk))
    assert layer.weight.shape == (3, 2) and layer.bias.shape == (2,)
    assert nn.Linear(3, 2, bias=False).bias is None
    assert len(nn.Linear(3, 2, bias=False).parameters()) == 1


def test_linear_wrong_feature_count(bk):
    layer = nn.Linear(3, 2, seed=0)
    with pytest.raises(ValueError) as info:
        layer(gg.asarray(np.ones((5, 4), bk.float_dtype)))
    msg = str(info.value)
    assert "Linear(3, 2" in msg
    assert "(5, 4)" in msg and "3" in msg


def test_linear_wrong_feature_count_placeholder():
    model = nn.MLP([3, 4, 2], seed=0)
    x = gg.Placeholder((None, 5), "float32", name="x")
    with pytest.raises(ValueError) as info:
        model(x)
    msg = str(info.value)
    assert "Linear(3, 4" in msg and "(None, 5)" in msg


def test_linear_accepts_placeholder_of_any_width():
    # None in a Placeholder's shape means any size: the check waits for the feed
    model = nn.MLP([3, 4, 2], seed=0)
    x = gg.Placeholder((None, None), "float32", name="x")
    xb = np.ones((5, 3), "float32")
    out = model(x).eval(feed={x: xb})
    np.testing.assert_allclose(gg.to_numpy(out), gg.to_numpy(model(gg.asarray(xb))),
                               rtol=1e-6)


def test_mlp_structure():
    model = nn.MLP([784, 512, 512, 10])
    kinds = [type(m) for m in model.layers]
    assert kinds == [nn.Linear, nn.Sigmoid, nn.Linear, nn.Sigmoid, nn.Linear]
    shapes = [p.shape for p in model.parameters()]
    assert shapes == [(784, 512), (512,), (512, 512), (512,), (512, 10), (10,)]
    assert model.activation == "sigmoid"
    assert [type(m) for m in nn.MLP([4, 3, 2], activation="relu").layers] == [
        nn.Linear, nn.ReLU, nn.Linear]
    assert [type(m) for m in nn.MLP([4, 3, 2], activation="tanh").layers] == [
        nn.Linear, nn.Tanh, nn.Linear]
    with pytest.raises(ValueError, match="sigmoid"):
        nn.MLP([4, 2], activation="softsign")


def test_mlp_forward_is_tutorial_stack(bk):
    model = nn.MLP([5, 4, 3, 2], seed=3, dtype=bk.float_dtype)
    with gg.no_grad():
        for layer in model.layers[::2]:
            layer.bias.data += 0.1
    x = np.random.default_rng(0).normal(size=(6, 5)).astype(bk.float_dtype)
    out = model(gg.asarray(x))
    W1, b1, W2, b2, W3, b3 = [host(p) for p in model.parameters()]
    h = np_sigmoid(x.astype(np.float64) @ W1 + b1)
    h = np_sigmoid(h @ W2 + b2)
    want = h @ W3 + b3  # logits: no activation after the last layer
    np.testing.assert_allclose(host(out), want, rtol=1e-5 if not bk.float64 else 1e-12,
                               atol=1e-6 if not bk.float64 else 1e-12)


# --- init -----------------------------------------------------------------------------------

SHAPE = (400, 600)


def test_glorot_uniform_statistics():
    w = gg.to_numpy(init.glorot_uniform(SHAPE, seed=0)).astype(np.float64)
    a = math.sqrt(6.0 / (400 + 600))
    assert w.shape == SHAPE
    assert np.abs(w).max() <= a
    assert np.abs(w).max() > 0.99 * a
    assert abs(w.mean()) < 0.01 * a
    assert w.std() == pytest.approx(a / math.sqrt(3.0), rel=0.02)


def test_glorot_normal_statistics():
    w = gg.to_numpy(init.glorot_normal(SHAPE, seed=0)).astype(np.float64)
    std = math.sqrt(2.0 / (400 + 600))
    assert w.std() == pytest.approx(std, rel=0.02)
    assert abs(w.mean()) < 0.01 * std


def test_he_normal_statistics():
    w = gg.to_numpy(init.he_normal(SHAPE, seed=0)).astype(np.float64)
    std = math.sqrt(2.0 / 400)
    assert w.std() == pytest.approx(std, rel=0.02)
    assert abs(w.mean()) < 0.01 * std


def test_he_uniform_statistics():
    w = gg.to_numpy(init.he_uniform(SHAPE, seed=0)).astype(np.float64)
    a = math.sqrt(6.0 / 400)
    assert np.abs(w).max() <= a
    assert np.abs(w).max() > 0.99 * a
    assert w.std() == pytest.approx(a / math.sqrt(3.0), rel=0.02)


def test_linear_init_choice():
    glorot = gg.to_numpy(nn.Linear(400, 600, seed=0).weight).astype(np.float64)
    he = gg.to_numpy(nn.Linear(400, 600, init="he", seed=0).weight).astype(np.float64)
    assert glorot.std() == pytest.approx(math.sqrt(2.0 / 1000), rel=0.02)
    assert he.std() == pytest.approx(math.sqrt(2.0 / 400), rel=0.02)
    with pytest.raises(ValueError, match="glorot"):
        nn.Linear(2, 2, init="orthogonal")


@pytest.mark.parametrize("fn", [init.glorot_uniform, init.glorot_normal, init.he_normal,
                                init.he_uniform])
def test_init_seeded_and_on_device(bk, fn):
    a = fn((20, 30), seed=7, dtype=bk.float_dtype)
    b = fn((20, 30), seed=7, dtype=bk.float_dtype)
    c = fn((20, 30), seed=8, dtype=bk.float_dtype)
    on_backend(bk, a)
    assert B.dtype_name(a.dtype) == bk.float_dtype
    np.testing.assert_array_equal(gg.to_numpy(a), gg.to_numpy(b))
    assert not np.array_equal(gg.to_numpy(a), gg.to_numpy(c))


def test_model_seeds(bk):
    a, b, c = nn.MLP([6, 5, 3], seed=1), nn.MLP([6, 5, 3], seed=1), nn.MLP([6, 5, 3], seed=2)
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters()):
        on_backend(bk, pa.data)
        np.testing.assert_array_equal(host(pa), host(pb))
    assert not np.array_equal(host(a.layers[0].weight), host(c.layers[0].weight))
    # layers of one MLP draw different values (one generator, not one seed per layer)
    w1, w2 = host(nn.MLP([5, 5, 5], seed=0).layers[0].weight), host(
        nn.MLP([5, 5, 5], seed=0).layers[2].weight)
    assert not np.allclose(w1, w2)
    # biases start at zero
    assert not host(a.layers[0].bias).any()


# --- losses ---------------------------------------------------------------------------------

REDUCTIONS = ["mean", "sum", "none"]


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_loss_values(bk, reduction):
    rng = np.random.default_rng(0)
    p = rng.normal(size=(4, 3)).astype(bk.float_dtype)
    t = rng.normal(size=(4, 3)).astype(bk.float_dtype)
    out = nn.mse_loss(gg.asarray(p), gg.asarray(t), reduction=reduction)
    on_backend(bk, out.data)
    want = reduce_np((p.astype(np.float64) - t.astype(np.float64)) ** 2, reduction)
    assert out.shape == np.shape(want)
    np.testing.assert_allclose(host(out), want, **tol(bk))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_with_logits_values(bk, reduction):
    z = np.array([[-3.0, -0.5, 0.0], [0.25, 2.0, 7.5]], dtype=bk.float_dtype)
    y = np.array([[0.0, 1.0, 1.0], [0.0, 1.0, 0.3]], dtype=bk.float_dtype)
    out = nn.binary_cross_entropy_with_logits(gg.asarray(z), gg.asarray(y),
                                              reduction=reduction)
    on_backend(bk, out.data)
    z64, y64 = z.astype(np.float64), y.astype(np.float64)
    s = np_sigmoid(z64)
    want = reduce_np(-(y64 * np.log(s) + (1 - y64) * np.log(1 - s)), reduction)
    assert out.shape == np.shape(want)
    np.testing.assert_allclose(host(out), want, **tol(bk))


def test_bce_with_logits_stable_at_extremes(bk):
    z = gg.Variable(np.array([1000.0, -1000.0, 1000.0, -1000.0], dtype=bk.float_dtype))
    y = gg.asarray(np.array([1.0, 0.0, 0.0, 1.0], dtype=bk.float_dtype))
    per = nn.binary_cross_entropy_with_logits(z, y, reduction="none")
    assert np.all(np.isfinite(host(per)))
    np.testing.assert_allclose(host(per), [0.0, 0.0, 1000.0, 1000.0], rtol=1e-6, atol=1e-6)
    loss = nn.binary_cross_entropy_with_logits(z, y)
    loss.backward()
    g = host(z.grad)
    assert np.all(np.isfinite(g))
    # d/dz = (sigmoid(z) - y) / n
    np.testing.assert_allclose(g, np.array([0.0, 0.0, 1.0, -1.0]) / 4, atol=1e-7)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_values(bk, reduction):
    z = np.array([[1.0, 2.0, 0.5], [-1.0, 0.0, 3.0], [0.2, 0.2, 0.2], [5.0, -2.0, 1.0]],
                 dtype=bk.float_dtype)
    t = np.array([1, 2, 0, 1])
    out = nn.cross_entropy(gg.asarray(z), gg.asarray(t), reduction=reduction)
    on_backend(bk, out.data)
    lp = np_log_softmax(z.astype(np.float64))
    want = reduce_np(-lp[np.arange(4), t], reduction)
    assert out.shape == np.shape(want)
    np.testing.assert_allclose(host(out), want, **tol(bk))


def test_cross_entropy_large_logits_finite(bk):
    z = gg.Variable(np.array([[1000.0, -1000.0, 0.0], [0.0, 0.0, -1000.0]], bk.float_dtype))
    t = gg.asarray(np.array([1, 0]))
    loss = nn.cross_entropy(z, t, reduction="none")
    np.testing.assert_allclose(host(loss), [2000.0, math.log(2.0)], rtol=1e-6)
    gg.sum(loss).backward()
    assert np.all(np.isfinite(host(z.grad)))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_losses_check_grad(bk64, reduction):
    rng = np.random.default_rng(1)
    p, t = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    gg.testing.check_grad(lambda a, b: nn.mse_loss(a, b, reduction=reduction), p, t)
    z, y = 3 * rng.normal(size=(3, 4)), rng.uniform(size=(3, 4))
    gg.testing.check_grad(
        lambda a, b: nn.binary_cross_entropy_with_logits(a, b, reduction=reduction), z, y)
    logits, cls = rng.normal(size=(5, 4)), gg.asarray(np.array([0, 3, 1, 1, 2]))
    gg.testing.check_grad(lambda a: nn.cross_entropy(a, cls, reduction=reduction), logits)


def test_losses_check_grad_large_input(bk64):
    # more than 64 elements: the random-direction path of check_grad
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(40, 5))
    cls = gg.asarray(rng.integers(0, 5, size=40))
    gg.testing.check_grad(lambda a: nn.cross_entropy(a, cls), logits)


def test_cross_entropy_targets_out_of_range(bk):
    z = gg.asarray(np.zeros((3, 4), bk.float_dtype))
    with pytest.raises(ValueError) as info:
        nn.cross_entropy(z, gg.asarray(np.array([0, 4, 1])))
    msg = str(info.value)
    assert "[0, 3]" in msg and "4" in msg
    with pytest.raises(ValueError, match=r"\[0, 3\]"):
        nn.cross_entropy(z, gg.asarray(np.array([0, -1, 1])))


def test_cross_entropy_non_integer_targets(bk):
    z = gg.asarray(np.zeros((3, 4), bk.float_dtype))
    with pytest.raises(TypeError, match="integer"):
        nn.cross_entropy(z, gg.asarray(np.array([0.0, 1.0, 2.0], bk.float_dtype)))


def test_cross_entropy_target_shape_mismatch():
    z = gg.asarray(np.zeros((3, 4), "float32"))
    with pytest.raises(ValueError, match=r"\(3,\)"):
        nn.cross_entropy(z, gg.asarray(np.array([0, 1])))


@pytest.mark.parametrize("loss", [nn.mse_loss, nn.binary_cross_entropy_with_logits])
def test_elementwise_loss_shape_mismatch(loss):
    with pytest.raises(ValueError, match=r"\(3, 2\).*\(2, 3\)"):
        loss(gg.asarray(np.zeros((3, 2))), gg.asarray(np.zeros((2, 3))))


def test_unknown_reduction():
    a = gg.asarray(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="mean"):
        nn.mse_loss(a, a, reduction="avg")
    with pytest.raises(ValueError, match="avg"):
        nn.binary_cross_entropy_with_logits(a, a, reduction="avg")
    with pytest.raises(ValueError, match="none"):
        nn.cross_entropy(a, gg.asarray(np.array([0, 1])), reduction="max")


def test_losses_in_graph_match_eager():
    rng = np.random.default_rng(3)
    xb = rng.normal(size=(6, 3)).astype("float32")
    yb = rng.integers(0, 2, size=6)
    x = gg.Placeholder((None, 3), "float32", name="x")
    t = gg.Placeholder((None,), "int64", name="t")
    model = nn.MLP([3, 4, 2], seed=0)
    sym = nn.cross_entropy(model(x), t)
    eager = nn.cross_entropy(model(gg.asarray(xb)), gg.asarray(yb))
    np.testing.assert_allclose(float(sym.eval(feed={x: xb, t: yb})), float(eager), rtol=1e-6)


def test_accuracy(bk):
    z = gg.asarray(np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]], bk.float_dtype))
    acc = nn.accuracy(z, gg.asarray(np.array([1, 0, 0, 0])))
    assert float(acc) == pytest.approx(0.75)
