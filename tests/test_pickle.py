"""Pickle, copy and deepcopy: Tensors, Variables, graphs, modules, optimizers, schedules."""

from __future__ import annotations

import copy
import multiprocessing
import pickle

import numpy as np
import pytest
from conftest import HAS_GPU
from helpers import assert_on_backend, host, var

import gpugrad as gg
from gpugrad import backend as B
from gpugrad import nn, optim, serialize


def roundtrip(obj):
    return pickle.loads(pickle.dumps(obj))


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_variable_keeps_backend_device_flags_and_grad(bk, how):
    w = var(bk, [1.0, -2.0, 3.0], name="w")
    (w * w).sum().backward()
    with gg.no_grad():
        w += 1.0  # version 1
    w2 = roundtrip(w) if how == "pickle" else copy.deepcopy(w)
    assert type(w2) is gg.Variable and w2 is not w
    assert w2.name == "w" and w2.requires_grad and w2.version == 1
    assert_on_backend(bk, w2.data)
    assert w2.xp is w.xp and w2.dtype == w.dtype
    np.testing.assert_array_equal(host(w2), [2.0, -1.0, 4.0])
    np.testing.assert_array_equal(host(w2.grad), [2.0, -4.0, 6.0])
    assert_on_backend(bk, w2.grad)
    with gg.no_grad():  # the copy owns its memory
        w2 += 10.0
    np.testing.assert_array_equal(host(w), [2.0, -1.0, 4.0])
    (w2 * w2).sum().backward()  # and still trains
    np.testing.assert_array_equal(host(w2.grad), [2.0 + 24.0, -4.0 + 18.0, 6.0 + 28.0])


def test_pickle_holds_backend_by_name_not_module(bk):
    w = var(bk, [1.0, 2.0])
    payload = pickle.dumps(w)
    assert b"array_api_compat" not in payload
    if bk.name == "array_api_strict":  # the array crosses as host bytes plus a device name
        assert bk.device_name.encode() in payload
    fn, args = w.__reduce_ex__(4)
    assert fn is serialize.rebuild_tensor
    assert not any(a is w.xp for a in args)


def test_computed_tensor_pickles_as_a_constant_with_its_value(bk):
    w = var(bk, [1.0, 2.0])
    y = w * 3.0
    for y2 in (roundtrip(y), copy.deepcopy(y)):
        assert y2._node is None and not y2.requires_grad
        np.testing.assert_array_equal(host(y2), [3.0, 6.0])
    shallow = copy.copy(y)  # shallow: the same array and the same place on the tape
    assert shallow.data is y.data and shallow._node is y._node
    shallow.sum().backward()
    np.testing.assert_array_equal(host(w.grad), [3.0, 3.0])


def test_detached_alias_shares_version_after_deepcopy(bk):
    c = gg.asarray(np.array([1.0, 2.0], dtype=bk.float_dtype))
    d = c.detach()
    c2, d2 = copy.deepcopy([c, d])
    assert c2._vlog is d2._vlog
    c2 += 1.0
    assert d2.version == 1 and c.version == 0


def test_module_shared_parameter_stays_one_object():
    lin = nn.Linear(3, 3, seed=0)
    model = nn.Sequential(lin, nn.Sigmoid(), lin)  # one layer used twice
    for m2 in (copy.deepcopy(model), roundtrip(model)):
        assert m2.layers[0] is m2.layers[2]
        assert m2.layers[0].weight is m2.layers[2].weight
        assert m2.layers[0].weight is not lin.weight
        assert len(m2.parameters()) == 2
    tied = nn.Linear(2, 2, seed=1)
    other = nn.Linear(2, 2, seed=2)
    other.weight = tied.weight  # a tied weight across two modules
    both = copy.deepcopy([tied, other])
    assert both[0].weight is both[1].weight


@pytest.mark.parametrize("make", [
    lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
    lambda ps: optim.Adam(ps, lr=0.05),
    lambda ps: optim.AdamW(ps, lr=0.05),
], ids=["sgd", "adam", "adamw"])
@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_optimizer_state_follows_its_parameters(bk, make, how):
    rng = np.random.default_rng(0)
    x = gg.asarray(rng.normal(size=(5, 3)).astype(bk.float_dtype))
    with gg.use_backend(bk.backend()):
        model = nn.Linear(3, 2, seed=0, dtype=bk.float_dtype)
    opt = make(model.parameters())

    def step(m, o):
        o.zero_grad()
        gg.sum(m(x) ** 2).backward()
        o.step()

    step(model, opt)
    model2, opt2 = roundtrip((model, opt)) if how == "pickle" else copy.deepcopy((model, opt))
    assert opt2.params[0] is model2.weight and opt2.params[1] is model2.bias
    assert set(opt2.state) == {model2.weight, model2.bias}
    assert opt2.param_steps.keys() <= set(opt2.state)
    for st in opt2.state.values():
        for v in st.values():
            assert_on_backend(bk, v)
    for _ in range(2):  # the copy continues exactly as the original does
        step(model, opt)
        step(model2, opt2)
    for p, p2 in zip(model.parameters(), model2.parameters()):
        np.testing.assert_array_equal(host(p), host(p2))


def test_shallow_copy_of_an_optimizer_shares_its_state(bk):
    w = var(bk, [1.0, 2.0])
    opt = optim.SGD([w], lr=0.1, momentum=0.9)
    (w * w).sum().backward()
    opt.step()
    opt2 = copy.copy(opt)
    assert opt2.params[0] is w and opt2.state[w]["momentum"] is opt.state[w]["momentum"]


def test_create_graph_gradient_pickles_as_a_constant(bk64):
    w = var(bk64, [1.0, 2.0])
    gg.sum(w * w * w).backward(create_graph=True)
    assert isinstance(w.grad, gg.Tensor) and w.grad._node is not None
    for w2 in (roundtrip(w), copy.deepcopy(w)):
        assert isinstance(w2.grad, gg.Tensor) and w2.grad._node is None
        np.testing.assert_array_equal(host(w2.grad), [3.0, 12.0])  # 3 w**2


@pytest.mark.parametrize("make, after_one, after_two", [
    (lambda o: optim.StepLR(o, step_size=1, gamma=0.5), 0.5, 0.25),
    (lambda o: optim.CosineLR(o, T_max=2), 0.5, 0.0),  # (1 + cos(pi e / 2)) / 2
], ids=["step", "cosine"])
def test_lr_schedule_keeps_its_optimizer(make, after_one, after_two):
    w = gg.Variable(np.ones(2))
    opt = optim.SGD([w], lr=1.0)
    sched = make(opt)
    sched.step()
    for s2 in (roundtrip(sched), copy.deepcopy(sched)):
        assert s2.optimizer.lr == pytest.approx(after_one, abs=1e-15) and s2.epoch == 1
        assert s2.step() == pytest.approx(after_two, abs=1e-15)
        assert s2.optimizer.lr == pytest.approx(after_two, abs=1e-15)
        assert opt.lr == pytest.approx(after_one, abs=1e-15)


def test_placeholder_graph_pickles_and_recompiles(numpy_backend):
    x = gg.Placeholder((None, 2), "float64", name="x")
    W = gg.Variable(np.array([[1.0], [2.0]]), name="W")
    loss = gg.sum(gg.sigmoid(x @ W) ** 2)
    feed = np.array([[0.5, -1.0], [2.0, 0.25]])
    want = float(loss.eval(feed={x: feed}))
    gW = gg.to_numpy(gg.gradients(loss, [W], feed={x: feed})[0])
    assert loss._schedules  # compiled once here
    for loss2 in (roundtrip(loss), copy.deepcopy(loss)):
        assert loss2._schedules == {}
        x2 = _find(loss2, gg.Placeholder)
        W2 = _find(loss2, gg.Variable)
        assert x2.declared_shape == (None, 2) and x2.name == "x" and W2 is not W
        assert float(loss2.eval(feed={x2: feed})) == want
        np.testing.assert_array_equal(gg.to_numpy(gg.gradients(loss2, [W2], {x2: feed})[0]),
                                      gW)
        gg.minimize(loss2, [W2], lr=0.1, feed={x2: feed})  # moves the copy only
        np.testing.assert_array_equal(gg.to_numpy(W), [[1.0], [2.0]])


def _find(sym, kind):
    stack, seen = [sym], set()
    while stack:
        s = stack.pop()
        if isinstance(s, kind):
            return s
        if isinstance(s, gg.Symbol) and id(s) not in seen:
            seen.add(id(s))
            stack.extend(s.args)
    raise AssertionError(f"no {kind.__name__} in the graph")


def test_unregistered_op_refuses_to_pickle():
    op = gg.registry["add"]
    assert roundtrip(op) is op and copy.deepcopy(op) is op
    stray = gg.registry["add"].__class__("not_registered_here", lambda xp, a: (a, None))
    with pytest.raises(TypeError, match="not_registered_here"):
        pickle.dumps(stray)


@pytest.mark.skipif(HAS_GPU, reason="checks the message shown where there is no GPU")
def test_cupy_payload_without_gpu_offers_gg_load():
    class CupyArrayPayload:  # what a CuPy Tensor pickles to, crafted without CuPy
        def __reduce__(self):
            return (serialize.restore_array, ("cupy", "0", np.arange(3.0)))

    class CupyVariablePayload:
        def __reduce__(self):
            return (serialize.rebuild_tensor,
                    (gg.Variable, CupyArrayPayload(), True, "w", None, None))

    payload = pickle.dumps(CupyVariablePayload())
    with pytest.raises(B.BackendError) as info:
        pickle.loads(payload)
    msg = str(info.value)
    assert "CuPy" in msg and "float64 (3,)" in msg
    assert 'gg.load(path, backend="numpy")' in msg


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs CuPy and a CUDA GPU")
def test_cupy_tensor_pickles_through_host_bytes_onto_the_gpu(tmp_path):
    with gg.use_backend("cupy"):
        w = gg.Variable(np.array([1.0, 2.0]), name="w")
        opt = optim.Adam([w], lr=0.1)
        (w * w).sum().backward()
        opt.step()
        w2, opt2 = roundtrip((w, opt))
        assert "cupy" in type(w2.data).__module__ and opt2.params[0] is w2
        np.testing.assert_array_equal(gg.to_numpy(w2), gg.to_numpy(w))
        path = tmp_path / "gpu.safetensors"
        gg.save({"w": w, "opt": opt.state_dict()}, path)
    back = gg.load(path, backend="numpy")  # the path the no-GPU error offers
    assert isinstance(back["w"].data, np.ndarray)
    np.testing.assert_array_equal(gg.to_numpy(back["w"]), gg.to_numpy(w))


def _train_copy(model, opt, x):
    """Runs in a spawned process: one step on the pickled model and optimizer."""
    opt.zero_grad()
    gg.sum(model(gg.asarray(x)) ** 2).backward()
    opt.step()
    return model, opt


def test_multiprocessing_spawn_round_trip(numpy_backend):
    model = nn.MLP([3, 4, 2], seed=0, dtype="float64")
    opt = optim.Adam(model.parameters(), lr=0.1)
    x = np.linspace(-1.0, 1.0, 6).reshape(2, 3)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        model2, opt2 = pool.apply(_train_copy, (model, opt, x))
    _train_copy(model, opt, x)
    assert opt2.params[0] is model2.parameters()[0]
    for p, p2 in zip(model.parameters(), model2.parameters()):
        np.testing.assert_array_equal(host(p), host(p2))


def test_deep_graph_pickles_without_recursion(numpy_backend):
    x = gg.Placeholder((2,), "float64", name="x")
    w = gg.Variable(np.array([0.3, -0.2]), name="w")
    y = x
    for _ in range(700):  # 2,100 Symbols: far past Python's recursion limit if recursed
        y = gg.sigmoid(y * 1.01 + w)
    loss = gg.sum(y)
    feed = np.array([0.5, 1.0])
    want = gg.to_numpy(gg.gradients(loss, [w], {x: feed})[0])
    for loss2, x2, w2 in (roundtrip((loss, x, w)), copy.deepcopy((loss, x, w))):
        assert float(loss2.eval({x2: feed})) == float(loss.eval({x: feed}))
        np.testing.assert_array_equal(gg.to_numpy(gg.gradients(loss2, [w2], {x2: feed})[0]),
                                      want)
    assert not serialize._listed  # the ordering hints were all used
