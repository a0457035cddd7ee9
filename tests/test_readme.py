"""README.md is the front door: its Python examples must run as written."""

from __future__ import annotations

import pathlib
import re

import numpy as np

import gpugrad as gg

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_examples_run_and_train(capsys):
    blocks = _python_blocks()
    assert len(blocks) >= 3, "README lost its examples"
    ns: dict = {}
    try:
        with gg.use_backend("numpy"):
            exec(compile(blocks[0], str(README), "exec"), ns)
            # the tutorial's graph trained, and more steps lower its loss further
            x, t, loss, W, b = ns["x"], ns["t"], ns["loss"], ns["W"], ns["b"]
            feed = {x: ns["xb"], t: ns["tb"]}
            before = float(loss.eval(feed=feed))
            assert before < float(ns["value"]) + 1e-7
            for _ in range(50):
                gg.minimize(loss, [W, b], lr=0.5, feed=feed)
            assert float(loss.eval(feed=feed)) < before
            assert "digraph" in capsys.readouterr().out
            for block in blocks[1:]:
                exec(compile(block, str(README), "exec"), ns)
            assert ns["W"].grad.shape == (3, 2) and ns["b"].grad.shape == (2,)
            # the array-API section: its transforms agree with one another
            np.testing.assert_allclose(ns["Hg"], ns["H0"] @ ns["g0"], rtol=1e-10)
            np.testing.assert_allclose(gg.to_numpy(ns["grad_t"]), ns["g0"], rtol=1e-12)
            assert ns["grad_t"].requires_grad
    finally:
        if "softplus" in gg.registry:
            gg.ops.unregister("softplus")


def test_readme_names_the_two_commands():
    text = README.read_text()
    assert 'pip install -e ".[test,mpi]"' in text
    assert "python -m pytest -q" in text
