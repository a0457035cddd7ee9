"""A catalogue of bad inputs: one row per mistake, with the exception it must raise and a
regular expression its message must match.

Messages name the gpugrad op or function first; where the mistake is the caller's, they end
with the caller's own line (``called at test_bad_inputs.py:N``). Rows run on NumPy unless
they are about another backend (array_api_strict rows are skipped where it is missing).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import nn, optim

HERE = r".*; called at test_bad_inputs\.py:\d+$"  # the caller's own line, last


@dataclass
class Bad:
    id: str
    fn: Callable[[], Any]
    exc: type
    regex: str
    strict: bool = False  # needs array_api_strict


def v(shape, dtype="float64", name=None):
    return gg.Variable(np.ones(shape, dtype), name=name)


def c(shape, dtype="float64"):
    return gg.asarray(np.ones(shape, dtype))


def _strict(device):
    import array_api_strict

    return gg.use_backend("array_api_strict", array_api_strict.Device(device))


def _on(device, make):
    with _strict(device):
        return make()


# --- multi-step setups ----------------------------------------------------------------------

def backward_twice():
    y = gg.sum(v(3) * 2.0)
    y.backward()
    y.backward()


def saved_input_changed():
    x = c(2)
    y = gg.sum(v(2) * x)
    x += 1.0
    y.backward()


def optimizer_step_before_backward():
    w = v(2)
    opt = optim.SGD([w], lr=0.1)
    gg.sum(w * w).backward()
    loss = gg.sum(w * w)
    opt.step()
    loss.backward()


def detached_alias_changed():
    h = v(2) * 3.0
    y = gg.sum(h * h)
    d = h.detach()
    d[0] = 0.0
    y.backward()


def raw_numpy_changed():
    arr = np.array([1.0, 2.0])
    y = gg.sum(v(2) * arr)
    arr[0] = 5.0
    y.backward()


def in_place_on_variable():
    w = v(2, name="w")
    w += 1.0


def in_place_changes_shape():
    h = v(3) * 1.0
    h += c((2, 3))


def in_place_downcast():
    t = c(3, "float32")
    t += np.ones(3)


def in_place_truncates():
    t = gg.asarray(np.arange(3))
    t[0] = 0.5


def in_place_two_devices():
    a = _on("device1", lambda: gg.asarray([1.0, 2.0]))
    b = _on("device2", lambda: gg.asarray([1.0, 2.0]))
    a += b


def mixed_devices():
    a = _on("device1", lambda: gg.Variable([1.0, 2.0]))
    b = _on("device2", lambda: gg.Variable([1.0, 2.0]))
    return a * b


def numpy_meets_strict():
    a = _on("device1", lambda: gg.Variable([1.0, 2.0]))
    return gg.asarray(np.ones(2)) + a


def graph_variables_on_two_devices():
    a = _on("device1", lambda: gg.Variable([1.0, 2.0]))
    b = _on("device2", lambda: gg.Variable([1.0, 2.0]))
    x = gg.Placeholder((2,), "float64", name="x")
    with _strict("device1"):
        gg.sum(x * a + b).eval({x: np.ones(2)})


def feed_on_other_device():
    w = _on("device1", lambda: gg.Variable([1.0, 2.0]))
    x = gg.Placeholder((2,), "float64", name="x")
    fed = _on("device2", lambda: gg.asarray(np.array([1.0, 2.0])).data)
    with _strict("device1"):
        gg.sum(x * w).eval({x: fed})


def graph_runtime_mismatch():
    x = gg.Placeholder((None, None), "float64", name="x")
    gg.sum(x @ v((4, 5))).eval({x: np.ones((2, 3))})


def graph_float32_meets_float64():
    x = gg.Placeholder((None, 2), "float32", name="x")
    gg.sum(x @ v((2, 2))).eval({x: np.ones((3, 2), "float32")})


def _graph(dtype="float32"):
    x = gg.Placeholder((None, 3), dtype, name="x")
    return x, gg.sum(x * 2.0)


def unfed():
    _, y = _graph()
    y.eval({})


def fed_wrong_shape():
    x, y = _graph()
    y.eval({x: np.ones((2, 4), "float32")})


def fed_wrong_dtype():
    x, y = _graph()
    y.eval({x: np.ones((2, 3))})


def fed_int_labels():
    x, y = _graph()
    y.eval({x: np.ones((2, 3), "int64")})


def fed_not_an_array():
    x, y = _graph()
    y.eval({x: "labels.csv"})


def labels_out_of_range():
    nn.cross_entropy(c((2, 3), "float32"), gg.asarray(np.array([0, 3])))


def float_labels():
    nn.cross_entropy(c((2, 3), "float32"), c(2, "float32"))


def module_state_wrong_shape():
    m = nn.Linear(2, 3)
    m.load_state_dict({"weight": np.zeros((3, 2), "float32"), "bias": np.zeros(3, "float32")})


def module_state_wrong_names():
    nn.Linear(2, 3).load_state_dict({"weight": np.zeros((2, 3), "float32")})


def optimizer_state_wrong_shape():
    w = v(3)
    opt = optim.SGD([w], lr=0.1, momentum=0.9)
    gg.sum(w * w).backward()
    opt.step()
    sd = opt.state_dict()
    sd["state"][0]["momentum"] = np.zeros((5, 5))
    opt.load_state_dict(sd)


def cupy_absent():
    saved = sys.modules.get("cupy", ...)
    sys.modules["cupy"] = None  # import cupy now raises ImportError
    try:
        gg.set_backend("cupy")
    finally:
        if saved is ...:
            del sys.modules["cupy"]
        else:
            sys.modules["cupy"] = saved
        gg.set_backend(None)


def sqrt_zero_backward():
    x = v(2) * 0.0
    with gg.detect_anomaly():
        gg.sum(gg.sqrt(x)).backward()


def log_zero_forward():
    with gg.detect_anomaly():
        gg.log(c(2) * 0.0)


def zero_times_inf():
    with gg.detect_anomaly():
        gg.asarray(0.0) * gg.asarray(np.inf)


# --- the catalogue --------------------------------------------------------------------------

CATALOGUE = [
    # shapes
    Bad("matmul-2d", lambda: v((2, 3)) @ v((4, 5)), gg.OpError,
        r"^matmul: shapes \(2, 3\) and \(4, 5\) are not aligned: 3 \(dim -1 of the first\) != "
        r"4 \(dim -2 of the second\)" + HERE),
    Bad("matmul-1d", lambda: v(3) @ c(4), gg.OpError,
        r"^matmul: shapes \(3,\) and \(4,\) are not aligned: .*\(dim 0 of the second\)" + HERE),
    Bad("matmul-batch", lambda: v((2, 3, 4)) @ c((5, 4, 2)), gg.OpError,
        r"^matmul: shapes \(2, 3, 4\) and \(5, 4, 2\) have batch dimensions that do not "
        r"broadcast" + HERE),
    Bad("matmul-0d", lambda: gg.matmul(v(()), c(3)), gg.OpError,
        r"^matmul: shapes \(\) and \(3,\) matmul needs operands with at least one dimension"),
    Bad("add-broadcast", lambda: v((2, 3)) + c((4, 5)), gg.OpError,
        r"^add: shapes \(2, 3\) and \(4, 5\) cannot be broadcast together: 3 \(dim -1 of the "
        r"first\) != 5 \(dim -1 of the second\)" + HERE),
    Bad("where-broadcast", lambda: gg.where(c(2) > 0.0, v(3), c(4)), gg.OpError,
        r"^where: shapes \(2,\), \(3,\) and \(4,\) cannot be broadcast together" + HERE),
    Bad("concat-dims", lambda: gg.concat([v((2, 3)), v((2, 4))]), gg.OpError,
        r"^concat: shapes \(2, 3\), \(2, 4\): arrays must match except along axis 0" + HERE),
    Bad("concat-rank", lambda: gg.concat([v((2, 3)), v(3)]), gg.OpError,
        r"^concat: .*input 0 has 2 and input 1 has 1" + HERE),
    Bad("concat-axis", lambda: gg.concat([v((2, 3)), v((2, 3))], axis=2), gg.OpError,
        r"^concat: .*axis 2 is out of range for arrays with 2 dimensions" + HERE),
    Bad("stack-shapes", lambda: gg.stack([v((2, 3)), v((3, 2))]), gg.OpError,
        r"^stack: shapes \(2, 3\), \(3, 2\): arrays must all have the same shape" + HERE),
    Bad("reshape-size", lambda: v((2, 3)).reshape(7), gg.OpError,
        r"^reshape: cannot reshape \(2, 3\) \(6 elements\) into \(7,\) \(7 elements\)" + HERE),
    Bad("reshape-minus-one", lambda: v((2, 3)).reshape(4, -1), gg.OpError,
        r"^reshape: cannot reshape \(2, 3\) \(6 elements\) into \(4, -1\): 6 is not a multiple "
        r"of 4" + HERE),
    Bad("reshape-two-minus-ones", lambda: v((2, 3)).reshape(-1, -1), gg.OpError,
        r"^reshape: .*only one dimension can be -1" + HERE),
    Bad("mse-shapes", lambda: nn.mse_loss(v((4, 3)), c(4)), gg.OpError,
        r"^mse_loss: prediction has shape \(4, 3\) but target has shape \(4,\)" + HERE),
    Bad("bce-shapes", lambda: nn.binary_cross_entropy_with_logits(v(4), c(5)), gg.OpError,
        r"^binary_cross_entropy_with_logits: prediction has shape \(4,\) but target has shape "
        r"\(5,\)" + HERE),
    Bad("cross-entropy-shapes", lambda: nn.cross_entropy(v((4, 3)), gg.asarray(np.zeros(3, int))),
        gg.OpError, r"^cross_entropy: logits have shape \(4, 3\), so targets need shape \(4,\)"
        + HERE),
    Bad("linear-features", lambda: nn.Linear(5, 2)(c((4, 3), "float32")), gg.OpError,
        r"^Linear\(5, 2, bias=True\): input has shape \(4, 3\)" + HERE),
    Bad("graph-declared-shapes", lambda: gg.Placeholder((None, 3)) @ v((4, 5), "float32"),
        gg.OpError, r"^matmul: shapes \(None, 3\) and \(4, 5\) are not aligned" + HERE),
    Bad("graph-run-shapes", graph_runtime_mismatch, gg.OpError,
        r"^matmul: shapes \(2, 3\) and \(4, 5\) are not aligned" + HERE),
    Bad("max-empty", lambda: gg.max(c(0)), gg.OpError,
        r"^max: shape \(0,\) has no elements to take the max of along axis None" + HERE),
    Bad("min-empty-axis", lambda: gg.min(c((2, 0)), axis=1), gg.OpError,
        r"^min: shape \(2, 0\) has no elements to take the min of along axis 1" + HERE),
    # dtypes
    Bad("int-variable", lambda: gg.Variable(np.arange(3), name="W"), gg.DtypeError,
        r"^Variable 'W': only floating or complex dtypes can require gradients, got int64 \(3,\)"
        + HERE),
    Bad("int-tensor-requires-grad", lambda: gg.Tensor(np.arange(3), requires_grad=True),
        gg.DtypeError,
        r"^Tensor: only floating or complex dtypes can require gradients, got int64" + HERE),
    Bad("float32-times-float64", lambda: v(3, "float32") * c(3), gg.DtypeError,
        r"^multiply: float32 and float64 inputs give a float64 result, so the float32 input "
        r"\(3,\) would be silently upcast to float64" + HERE),
    Bad("float64-matmul-float32", lambda: c((2, 2)) @ v((2, 2), "float32"), gg.DtypeError,
        r"^matmul: float64 and float32 inputs .* float32 input \(2, 2\) would be silently "
        r"upcast" + HERE),
    Bad("int64-upcasts-float32", lambda: gg.asarray(np.arange(3)) * v(3, "float32"),
        gg.DtypeError, r"^multiply: int64 and float32 inputs give a float64 result" + HERE),
    Bad("graph-float32-meets-float64", graph_float32_meets_float64, gg.DtypeError,
        r"^matmul: float32 and float64 inputs give a float64 result" + HERE),
    Bad("feed-int-labels-for-float", fed_int_labels, gg.FeedError,
        r"^Placeholder 'x': fed dtype int64 \(2, 3\) but it was declared float32; convert the "
        r"data first" + HERE),
    Bad("cross-entropy-float-labels", float_labels, gg.DtypeError,
        r"^cross_entropy: targets must be integer class indices, got dtype float32" + HERE),
    Bad("in-place-downcast", in_place_downcast, gg.DtypeError,
        r"^add \(in place, \+=\): a float64 value would be silently downcast into the float32 "
        r"Tensor" + HERE),
    Bad("in-place-truncates", in_place_truncates, gg.DtypeError,
        r"^setitem \(t\[key\] = value\): a float value would be truncated into the int64 "
        r"Tensor" + HERE),
    # devices and backends
    Bad("two-strict-devices", mixed_devices, gg.BackendError,
        r"^multiply: inputs live on different backends or devices \(array_api_strict:.*device1"
        r".* and array_api_strict:.*device2.*\)" + HERE, strict=True),
    Bad("numpy-meets-strict", numpy_meets_strict, gg.BackendError,
        r"^add: inputs live on different backends or devices \(numpy:cpu and "
        r"array_api_strict:" + r".*" + HERE, strict=True),
    Bad("in-place-two-devices", in_place_two_devices, gg.BackendError,
        r"^add \(in place, \+=\): inputs live on different backends or devices" + HERE,
        strict=True),
    Bad("graph-two-devices", graph_variables_on_two_devices, gg.BackendError,
        r"^graph: Variables live on different backends or devices .*device1.*device2" + HERE,
        strict=True),
    Bad("feed-other-device", feed_on_other_device, gg.BackendError,
        r"^Placeholder 'x': fed on device .*device2.* but the graph's Variables live on "
        r".*device1" + HERE, strict=True),
    Bad("unknown-backend", lambda: gg.set_backend("tpu"), gg.BackendError,
        r"^unknown backend 'tpu'; choose one of numpy, cupy, array_api_strict"),
    Bad("cupy-absent", cupy_absent, gg.BackendError,
        r"^backend 'cupy' needs CuPy, which is not installed; install it with `pip install "
        r"gpugrad\[cuda12\]`"),
    # version counters and in-place updates
    Bad("saved-input-changed", saved_input_changed, gg.GradientError,
        r"^backward: multiply saved an array \(input 1, shape \(2,\)\) for its gradient, and it "
        r"was modified in place afterwards, at test_bad_inputs\.py:\d+: expected version 0, "
        r"found version 1" + r".*" + HERE),
    Bad("optimizer-step-before-backward", optimizer_step_before_backward, gg.GradientError,
        r"^backward: multiply saved an array .* at SGD step called at test_bad_inputs\.py:\d+: "
        r"expected version 0, found version 1"),
    Bad("detached-alias-changed", detached_alias_changed, gg.GradientError,
        r"^backward: multiply saved an array .*expected version 0, found version 1"),
    Bad("raw-numpy-changed", raw_numpy_changed, gg.GradientError,
        r"^backward: multiply saved a NumPy array you passed in \(input 1, shape \(2,\)\)"
        + r".*" + HERE),
    Bad("in-place-on-variable", in_place_on_variable, gg.GradientError,
        r"^add \(in place, \+=\): Variable 'w' \(2,\) requires gradients, so it cannot be "
        r"changed in place while gradients are recorded" + HERE),
    Bad("setitem-on-variable", lambda: v(2).__setitem__(0, 1.0), gg.GradientError,
        r"^setitem \(t\[key\] = value\): Variable \(2,\) requires gradients" + HERE),
    Bad("in-place-changes-shape", in_place_changes_shape, gg.OpError,
        r"^add \(in place, \+=\): the result has shape \(2, 3\), but an in-place update keeps "
        r"the Tensor's shape \(3,\)" + HERE),
    Bad("setitem-fancy-on-recorded", lambda: (v(3) * 1.0).__setitem__(np.array([0, 1]), 0.0),
        TypeError, r"^setitem: index .* on a Tensor with recorded history must be basic"),
    # anomaly mode
    Bad("anomaly-sqrt-zero-backward", sqrt_zero_backward, gg.AnomalyError,
        r"^sqrt: backward produced inf \(2 of 2 values\) .*sqrt's forward was called at "
        r"test_bad_inputs\.py:\d+$"),
    Bad("anomaly-log-zero-forward", log_zero_forward, gg.AnomalyError,
        r"^log: forward produced -inf \(2 of 2 values\) .*log was called at "
        r"test_bad_inputs\.py:\d+$"),
    Bad("anomaly-zero-times-inf", zero_times_inf, gg.AnomalyError,
        r"^multiply: forward produced nan \(1 of 1 values\)"),
    # backward
    Bad("backward-twice", backward_twice, gg.GradientError,
        r"^backward: the saved arrays of .* were already freed by an earlier backward; call "
        r"backward\(retain_graph=True\)" + HERE),
    Bad("non-scalar-backward", lambda: (v((2, 3)) * 2.0).backward(), gg.GradientError,
        r"^backward: the output has shape \(2, 3\), not a scalar; pass a seed gradient" + HERE),
    Bad("seed-wrong-shape", lambda: (v((2, 3)) * 2.0).backward(grad=np.ones((3, 2))),
        gg.GradientError, r"^backward: seed gradient has shape \(3, 2\) but the output has "
                          r"shape \(2, 3\)" + HERE),
    Bad("backward-of-constant", lambda: c(1).backward(), gg.GradientError,
        r"^backward: this Tensor does not require gradients" + HERE),
    # graphs and feeds
    Bad("unfed-placeholder", unfed, gg.FeedError,
        r"^Placeholder 'x' was not fed; pass feed=\{placeholder: array\}" + HERE),
    Bad("feed-wrong-shape", fed_wrong_shape, gg.FeedError,
        r"^Placeholder 'x': fed shape \(2, 4\) does not match its declared shape \(None, 3\)"
        + HERE),
    Bad("feed-wrong-dtype", fed_wrong_dtype, gg.FeedError,
        r"^Placeholder 'x': fed dtype float64 \(2, 3\) but it was declared float32" + HERE),
    Bad("feed-not-an-array", fed_not_an_array, gg.FeedError,
        r"^Placeholder 'x': feed is a str, not an array" + HERE),
    # training
    Bad("labels-out-of-range", labels_out_of_range, gg.OpError,
        r"^cross_entropy: targets range over \[0, 3\] but must lie in \[0, 2\] for 3 classes"
        + HERE),
    Bad("module-state-wrong-shape", module_state_wrong_shape, nn.StateDictError,
        r"^Linear.load_state_dict: parameter 'weight' has shape \(2, 3\) but the state dict "
        r"gives \(3, 2\)" + HERE),
    Bad("module-state-wrong-names", module_state_wrong_names, nn.StateDictError,
        r"^Linear.load_state_dict: names do not match; missing \['bias'\]" + HERE),
    Bad("optimizer-state-wrong-shape", optimizer_state_wrong_shape, nn.StateDictError,
        r"^SGD.load_state_dict: state 'momentum' of parameter 0 has shape \(5, 5\), the "
        r"parameter has \(3,\)" + HERE),
    Bad("negative-learning-rate", lambda: optim.SGD([v(2)], lr=-0.1), ValueError,
        r"^SGD: lr must be positive, got -0.1" + HERE),
    Bad("zero-learning-rate-adam", lambda: optim.Adam([v(2)], lr=0.0), ValueError,
        r"^Adam: lr must be positive, got 0.0" + HERE),
    Bad("unknown-reduction", lambda: nn.mse_loss(v(2), c(2), reduction="avg"), ValueError,
        r"^mse_loss: unknown reduction 'avg'; choose one of mean, sum, none"),
    Bad("boolean-mask-in-graph", lambda: gg.Placeholder((None, 3), name="x")[
        np.array([True, False])], TypeError,
        r"^getitem: a boolean mask selects a number of elements that depends on the data.*"
        r"gg.where\(mask, x, 0.0\)" + HERE),
    Bad("boolean-mask-wrong-shape", lambda: v((2, 3))[np.array([True, False, True])],
        gg.OpError, r"^getitem_mask: mask of shape \(3,\) does not cover the leading dims of x "
        r"\(2, 3\)" + HERE),
    Bad("not-an-array-argument", lambda: gg.exp("1.0"), TypeError,
        r"^exp: argument 0 is a str; pass Tensors, backend arrays or Python scalars" + HERE),
]


@pytest.mark.parametrize("bad", CATALOGUE, ids=[b.id for b in CATALOGUE])
def test_bad_input_raises_a_clear_error(bad):
    if bad.strict:
        pytest.importorskip("array_api_strict")
    with gg.use_backend("numpy"):
        with pytest.raises(bad.exc) as info:
            bad.fn()
    assert info.type is bad.exc or issubclass(info.type, bad.exc)
    assert _search(bad.regex, str(info.value)), f"{bad.id}: {info.value}"


def _search(regex: str, msg: str) -> bool:
    import re

    return re.search(regex, msg, re.S) is not None


def test_catalogue_ids_are_unique_and_it_covers_the_issue_list():
    ids = [b.id for b in CATALOGUE]
    assert len(ids) == len(set(ids))
    required = {"backward-twice", "non-scalar-backward", "seed-wrong-shape", "max-empty",
                "unknown-backend", "cupy-absent", "unfed-placeholder", "feed-wrong-shape",
                "feed-wrong-dtype", "labels-out-of-range", "module-state-wrong-shape",
                "negative-learning-rate"}
    assert required <= set(ids)
