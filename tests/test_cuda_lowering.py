"""Which steps a device program keeps lowered (gpugrad/compiler/cuda_program.py ``lowered``,
``grouped``, ``left_out``): a step whose formulas are spelt in CUDA runs in fusion groups
though its NumPy lines are not portable (gelu's erf, softplus's ``where``), and a step that
no group takes runs its rules, never its NumPy lines.

On the CPU, as tests/test_cuda_program.py: the device program over NumPy, each kernel its
CUDA source read back as Python; numbers compared with the planned NumPy program's (float64
to 1e-12 relative, float32 in ulps)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

import gpugrad as gg
from gpugrad.compiler import cuda_group, cuda_program, fuse

sys.path.insert(0, str(Path(__file__).parent))
from helpers import assert_orders_agree  # noqa: E402
from test_cuda_groups import DTYPES, _programs  # noqa: E402
from test_cuda_program import ADAM_ULPS, MLP_SHAPED, host_device, on_device, train  # noqa: E402

ACTIVATIONS = ("gelu", "silu", "softplus")
RULE = re.compile(r"\b[FR]\d+(_\d+)?\(")
NUMPY_ONLY = re.compile(r"\bERF_INTO\(|\bnp\.copyto\(")
"""The NumPy lines of gelu's and softplus's formulas that no device runs."""

@pytest.fixture(autouse=True)
def _numpy_tier_first(monkeypatch):
    """The reference is the planned NumPy program (the first tier) whatever GPUGRAD_JIT the
    suite runs under (``GPUGRAD_JIT=now pytest`` too); a test that wants another sets it."""
    monkeypatch.setenv("GPUGRAD_JIT", "0")



def rule_calls(source: str, op: str) -> list:
    """The lines of a program's ``source`` calling a registered rule of ``op``."""
    return [line for line in source.splitlines()
            if RULE.search(line) and re.search(rf"# {op}( \(vjp\))? ", line)]


def group_calls(source: str, op: str) -> list:
    """The lines of ``source`` launching a group with one of ``op``'s instructions."""
    return [line for line in source.splitlines()
            if re.match(r"\s*N\d+\(", line) and re.search(rf"\b{op}\b", line)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_the_activation_runs_in_groups_with_the_numpy_programs_numbers(
        numpy_backend, activation, opt_name, dtype):
    """The MLP's two activations, forward (with the bias add) and backward (with the bias's
    gradient), are four groups; no rule of the activation runs, nor its NumPy lines."""
    want_loss, want, ref = train(MLP_SHAPED, activation, opt_name, dtype, 3)
    ran: list = []
    got_loss, got, prog = train(MLP_SHAPED, activation, opt_name, dtype, 3,
                                host_device(ran=ran))
    assert prog.tier == "cuda" and ref.tier == "numpy"
    assert len(cuda_group.groups_of(prog.kernels)) == 4
    assert len(group_calls(prog.source, activation)) == 4
    assert rule_calls(prog.source, activation) == []
    assert not NUMPY_ONLY.search(prog.source)
    assert cuda_group.launches(prog.source)["other"] == 0
    assert len([n for n in ran if n.startswith("N") and n[1:].isdigit()]) == 3 * 4
    for a, b in zip(got_loss + got, want_loss + want):
        assert_orders_agree(a, b, ulps=ADAM_ULPS if opt_name == "adam" else 4)


@pytest.mark.parametrize("activation", ["gelu", "softplus"])
def test_a_step_no_group_takes_runs_its_rules(numpy_backend, monkeypatch, activation):
    """With no lone formula worth a kernel, the activation's gradient is alone between two
    products: no group takes it, so the whole step (forward too) runs its rules, and the
    bias add before it, alone in turn, its NumPy call; the numbers stay the NumPy
    program's."""
    want_loss, want, _ = train(MLP_SHAPED, activation, "sgd", "float64", 3)
    monkeypatch.setattr(fuse, "_worth_alone", lambda node: False)
    got_loss, got, prog = train(MLP_SHAPED, activation, "sgd", "float64", 3, host_device())
    assert prog.tier == "cuda"
    assert len(rule_calls(prog.source, activation)) == 4  # two layers, forward and backward
    assert not NUMPY_ONLY.search(prog.source)
    assert group_calls(prog.source, activation) == []
    for a, b in zip(got_loss + got, want_loss + want):
        assert_orders_agree(a, b)


def _half_gelu():
    """``sum(gelu(x @ w) * 2)`` in float16 and its gradient: a dtype no group reads."""
    x = gg.Placeholder((None, 5), "float16", name="x")
    w = gg.Variable(np.linspace(-1, 1, 20).reshape(5, 4).astype("float16"))
    loss = gg.sum(gg.gelu(x @ w) * 2.0)
    feed = {x: np.linspace(-2, 2, 40).reshape(8, 5).astype("float16")}
    want = gg.gradients(loss, [w], feed=feed)
    return loss, w, feed, [gg.to_numpy(g) for g in want]


def test_a_float16_formula_step_runs_its_rules(numpy_backend):
    loss, w, feed, want = _half_gelu()
    assert "ERF_INTO(" in _programs(loss)[0].source  # (the NumPy program runs its lines)
    prog = on_device(loss, host_device())
    assert prog.tier == "cuda" and not prog.kernels
    assert len(rule_calls(prog.source, "gelu")) == 2
    assert not NUMPY_ONLY.search(prog.source)
    for a, b in zip([gg.to_numpy(g) for g in gg.gradients(loss, [w], feed=feed)], want):
        assert_orders_agree(a, b)


def test_without_the_check_a_device_would_run_numpy_lines(numpy_backend, monkeypatch):
    """What ``left_out`` prevents: the float16 gelu kept for a group that none forms."""
    loss, *_ = _half_gelu()
    monkeypatch.setattr(cuda_program, "left_out", lambda *args: set())
    assert "ERF_INTO(" in on_device(loss, host_device()).source


def test_what_a_device_keeps_lowered_and_why(numpy_backend):
    """``lowered`` says "code" for portable lines, "groups" for CUDA-spelt formulas whose
    lines are not portable, "" otherwise (a formula CUDA cannot spell)."""
    from gpugrad.compiler import lower

    dev = host_device()
    f64 = ((8, 4), np.dtype("float64"))

    def how(op: str) -> str:
        got = gg.registry[op]
        low = lower.forward(got, ["x"], [f64], f64, {})
        back = lower.backward(got, 0, "g", ["x"], [f64], "o", f64, {})
        return cuda_program.lowered(low, [back], dev)
    assert (how("tanh"), how("gelu"), how("softplus")) == ("code", "groups", "groups")
    erf = gg.registry["erf"]
    low = lower.forward(erf, ["x"], [f64], f64, {})
    assert cuda_program.grouped(low, [], dev)
    assert not cuda_program.grouped(low._replace(scalar=("arctan", ("name", "x"))), [], dev)
