"""Anomaly mode: the first op whose forward or backward makes a NaN or an Inf raises, naming
the op, the pass and where the op's forward was called; off, it costs one check per op."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

import gpugrad as gg
from helpers import const, var


def this_line():
    """The caller's line number, from its running frame (not from the file on disk)."""
    return sys._getframe(1).f_lineno


def test_sqrt_at_zero_fails_in_backward_naming_the_forward_call_site(bk):
    x = var(bk, [0.0, 4.0])
    with gg.detect_anomaly():
        y = gg.sum(gg.sqrt(x) * 3.0)
        built_at = this_line() - 1
        with pytest.raises(gg.AnomalyError) as info:
            y.backward()
    msg = str(info.value)
    assert msg.startswith(f"sqrt: backward produced inf (1 of 2 values) in the gradient of "
                          f"input 0 (2,) {bk.float_dtype}"), msg
    assert msg.endswith(f"sqrt's forward was called at test_anomaly.py:{built_at}"), msg
    assert x.grad is None


def test_log_of_zero_fails_in_forward(bk):
    x = var(bk, [1.0, 0.0, 2.0])
    with gg.detect_anomaly():
        called_at = this_line() + 2
        with pytest.raises(gg.AnomalyError) as info:
            gg.log(x)
    msg = str(info.value)
    assert msg.startswith("log: forward produced -inf (1 of 3 values) from inputs (3,)"), msg
    assert msg.endswith(f"log was called at test_anomaly.py:{called_at}"), msg


def test_zero_times_inf_is_blamed_but_inf_times_two_is_not(bk):
    zero, inf = const(bk, [0.0, 1.0]), const(bk, [np.inf, 1.0])
    with gg.detect_anomaly():
        with pytest.raises(gg.AnomalyError, match=r"^multiply: forward produced nan \(1 of 2 "
                                                  r"values\)"):
            zero * inf
        doubled = inf * 2.0  # passes an Inf along, makes no new one
    assert gg.to_numpy(doubled)[0] == np.inf


def test_nan_made_in_backward_from_finite_values(bk):
    x = var(bk, [0.0, 1.0])
    with gg.detect_anomaly():
        y = gg.sum(gg.sqrt(x) * 0.0)  # backward: 0 / (2 sqrt(0)) = nan
        with pytest.raises(gg.AnomalyError, match=r"^sqrt: backward produced nan"):
            y.backward()


def test_off_it_checks_nothing_and_costs_one_check(bk):
    assert gg.eager._anomaly is None and not gg.is_anomaly_enabled()
    x = var(bk, [0.0, 4.0])
    with np.errstate(all="ignore"):
        y = gg.sum(gg.sqrt(x))
        y.backward()  # no error outside the block
    assert np.isinf(gg.to_numpy(x.grad)[0])
    with gg.detect_anomaly():
        with gg.detect_anomaly():
            assert gg.is_anomaly_enabled()
        assert gg.eager._anomaly is not None
    assert gg.eager._anomaly is None


def test_decorator_and_fine_computations_pass(bk):
    @gg.detect_anomaly()
    def step(w):
        loss = gg.sum(gg.sigmoid(w * 2.0) + gg.log(w * w + 1.0))
        loss.backward()
        return loss

    w = var(bk, [0.5, -1.0])
    step(w)
    assert np.all(np.isfinite(gg.to_numpy(w.grad)))


def test_anomaly_mode_is_per_thread():
    inside, done = threading.Event(), threading.Event()
    seen = {}

    def checked():
        with gg.detect_anomaly():
            inside.set()
            done.wait(10)
            try:
                gg.log(gg.asarray([0.0]))
            except gg.AnomalyError:
                seen["checked"] = "raised"

    worker = threading.Thread(target=checked)
    worker.start()
    assert inside.wait(10)
    with np.errstate(divide="ignore"):
        out = gg.log(gg.asarray([0.0]))  # this thread is not in the block
    seen["other"] = float(out.data[0])
    done.set()
    worker.join()
    assert seen == {"checked": "raised", "other": -np.inf}


def test_graph_front_end_forward_and_backward(bk):
    dt = bk.float_dtype
    x = gg.Placeholder((2,), dt, name="x")
    W = gg.Variable(np.ones(2, dt))
    root = gg.sqrt(x * W)
    built_at = this_line() - 1
    loss = gg.sum(root)
    with gg.detect_anomaly():
        with pytest.raises(gg.AnomalyError) as info:
            gg.gradients(loss, [W], feed={x: np.array([0.0, 1.0], dt)})
        msg = str(info.value)
        assert msg.startswith("sqrt: backward produced inf"), msg
        assert msg.endswith(f"at test_anomaly.py:{built_at}"), msg
        logged = gg.sum(gg.log(x))
        with pytest.raises(gg.AnomalyError, match=r"^log: forward produced -inf.*called at "
                                                  r"test_anomaly.py:\d+$"):
            logged.eval({x: np.array([0.0, 1.0], dt)})
    with np.errstate(all="ignore"):  # off again: the compiled code runs unchecked
        (g,) = gg.gradients(loss, [W], feed={x: np.array([0.0, 1.0], dt)})
    assert np.isnan(gg.to_numpy(g)[0])  # 0 * inf, which anomaly mode would have caught
