"""README.md is the front door and docs/ the rest: their Python examples must run as written.

Every ```python block runs, in order, in one namespace per file, on the NumPy backend; blocks
in other languages (```bash) are shown, never run. A page whose example needs more than one
process (MPI) is written to run as a group of one as well, and a GPU-only command goes in a
```bash block. Each file's namespace is then checked by the function named after it below.
"""

from __future__ import annotations

import importlib.util
import math
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

import gpugrad as gg

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
# ops defined by the examples; removed again after their page runs
EXAMPLE_OPS = ("logcosh", "twice_wrong")


def _python_blocks(path: pathlib.Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), re.S | re.M)


def _run(path: pathlib.Path) -> dict:
    ns: dict = {"__name__": f"example_{path.stem}"}
    try:
        with gg.use_backend("numpy"):
            for block in _python_blocks(path):
                exec(compile(block, str(path), "exec"), ns)
    finally:
        for name in EXAMPLE_OPS:
            if name in gg.registry:
                gg.ops.unregister(name)
    return ns


def _floats_after(out: str, label: str) -> list[float]:
    return [float(m) for m in re.findall(re.escape(label) + r"\s+([-+0-9.eE]+)", out)]


def _check_tutorial_graph(ns: dict, out: str) -> None:
    """The tutorial's graph trained, and more steps lower its loss further."""
    x, t, loss, W, b = ns["x"], ns["t"], ns["loss"], ns["W"], ns["b"]
    feed = {x: ns["xb"], t: ns["tb"]}
    before = float(loss.eval(feed=feed))
    assert before < float(ns["value"]) + 1e-7
    for _ in range(50):
        gg.minimize(loss, [W, b], lr=0.5, feed=feed)
    assert float(loss.eval(feed=feed)) < before
    assert "digraph" in out


# ------------------------------------------------------------------------------- README

def test_readme_examples_run_and_train(capsys):
    blocks = _python_blocks(README)
    assert len(blocks) == 3, "README's graph, eager and compile examples"
    ns: dict = {}
    with gg.use_backend("numpy"):
        exec(compile(blocks[0], str(README), "exec"), ns)
        _check_tutorial_graph(ns, capsys.readouterr().out)
        for block in blocks[1:]:            # the eager block reuses the graph block's data
            exec(compile(block, str(README), "exec"), ns)
    assert ns["W"].grad.shape == (3, 2) and ns["b"].grad.shape == (2,)
    info = ns["step"].cache_info()
    assert (info.hits, info.misses, info.traces) == (2, 1, 1)


def test_readme_names_the_two_commands():
    text = README.read_text()
    assert 'pip install -e ".[test,mpi,docs,clients,cuda-check,jit]"' in text
    assert "python -m pytest -q" in text
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(("Set up", "Run the tests"))]
    assert len(starts) == 2, ".ci/run finds each command after a line starting with its key"


def test_readme_fits_on_a_screen_and_links_to_docs():
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    links = re.findall(r"\]\((docs/[^)#]+)", text)
    assert len(links) >= 10
    missing = [link for link in links if not (ROOT / link).is_file()]
    assert not missing, f"README links to missing pages: {missing}"


# ---------------------------------------------------------------------------------- docs

def _check_backends(ns, out):
    assert ns["total"] == 14.0 and "'name': 'numpy'" in out


def _check_graphs(ns, out):
    _check_tutorial_graph(ns, out)
    assert ns["h"].shape == (None, 2)


def _check_eager(ns, out):
    assert ns["W"].grad.shape == (3, 2) and ns["b"].grad.shape == (2,)
    np.testing.assert_allclose(gg.to_numpy(ns["v"]), [0.8, -2.0, 2.4], rtol=1e-12)
    # views: a write through a view reaches its base and the gradient (docs/eager.md)
    np.testing.assert_allclose(gg.to_numpy(ns["x"].grad), [48.0, 56.0, 24.0], rtol=1e-12)
    np.testing.assert_allclose(gg.to_numpy(ns["head"]), [13.0, 15.0], rtol=1e-12)
    assert "[12. 14.  6.]" in out


def _check_compile(ns, out):
    info = ns["step"].cache_info()
    assert (info.hits, info.misses, info.traces) == (2, 1, 1)
    np.testing.assert_allclose(gg.to_numpy(gg.sum(ns["p"], axis=-1)), np.ones(5), rtol=1e-6)
    assert ns["scaled"].cache_info() == (1, 2, 1, 32, 1)  # the rebound scale traced again
    assert "6.0\n30.0\n30.0\n" in out and float(ns["scaled"](ns["ones"])) == 30.0


def _check_debugging(ns, out):
    for tag in ("# matmul  debugging.md:6", "# sigmoid  debugging.md:6",
                "# sigmoid (vjp)  debugging.md:6", "# mean (vjp)  debugging.md:7",
                "# SGD update", "# tanh (vjp)  debugging.md:"):
        assert tag in out, tag
    assert ns["step"].cache_info().traces == 1 and ns["W"].grad is None


def _check_training(ns, out):
    losses = _floats_after(out, "last batch loss")
    assert len(losses) == 2 and all(0.0 < v < math.log(10.0) for v in losses), out


def _check_save_load(ns, out):
    assert ns["state"]["meta"] == {"step": 0}
    assert len(list(ns["clone"].parameters())) == len(list(ns["model"].parameters()))
    np.testing.assert_array_equal(ns["back"], [0.0, 1.0, 2.0])


def _check_distributed(ns, out):
    assert ns["group"].size == 1
    (last,) = _floats_after(out, "last loss")
    assert 0.0 < last < math.log(10.0)


def _check_ops(ns, out):
    np.testing.assert_allclose(gg.to_numpy(ns["y"]), np.log(np.cosh([0.0, 1.0])), rtol=1e-12)
    assert "pass dtype, keepdims by keyword" in out


def _check_array_api(ns, out):
    np.testing.assert_allclose(ns["Hg"], ns["H0"] @ ns["g0"], rtol=1e-10)
    np.testing.assert_allclose(gg.to_numpy(ns["grad_t"]), ns["g0"], rtol=1e-12)
    assert ns["grad_t"].requires_grad and "True" in out


def _check_linalg(ns, out):
    (analytic,) = _floats_after(out, "d nll / d ell:")
    (numeric,) = _floats_after(out, "numeric:")
    assert abs(analytic - numeric) <= 1e-5 * (1.0 + abs(numeric)), out
    assert "GaugeError: eigh backward: complex vectors" in out
    assert "phase-free loss, gradient finite: True" in out


def _check_complex(ns, out):
    np.testing.assert_allclose(gg.to_numpy(ns["z"]), gg.to_numpy(ns["c"]), atol=1e-6)


def _check_fft(ns, out):
    np.testing.assert_allclose(gg.to_numpy(ns["x"].grad), ns["by_hand"], rtol=1e-12)
    alt = ns["alt"]
    np.testing.assert_allclose(ns["H"], 6 * np.eye(6) + 1.0 + np.outer(alt, alt), atol=1e-12)
    np.testing.assert_allclose(gg.to_numpy(ns["freq"]), np.fft.fftshift(np.fft.fftfreq(6, 0.5)))
    assert "[ 9. 20.  3.  2.  6. 26.]" in out and "[-1.    -0.667 -0.333  0. " in out


def _check_errors(ns, out):
    for words in ("are not aligned", "silently upcast", "expected version 0, found version 1",
                  "the feed is keyed by its name 'x'"):
        assert words in out, words


def _check_testing(ns, out):
    assert "analytic 3, numeric 2" in out


PAGE_CHECKS = {
    "backends.md": _check_backends, "graphs.md": _check_graphs, "eager.md": _check_eager,
    "compile.md": _check_compile, "debugging.md": _check_debugging,
    "training.md": _check_training,
    "save-load.md": _check_save_load, "distributed.md": _check_distributed,
    "ops.md": _check_ops, "array-api.md": _check_array_api, "complex.md": _check_complex,
    "fft.md": _check_fft, "linalg.md": _check_linalg,
    "errors.md": _check_errors, "testing.md": _check_testing,
}


def test_every_page_with_examples_is_checked():
    with_examples = {p.name for p in DOCS.glob("*.md") if _python_blocks(p)}
    assert with_examples == set(PAGE_CHECKS)


@pytest.mark.parametrize("page", sorted(PAGE_CHECKS))
def test_docs_page_examples_run(page, capsys):
    ns = _run(DOCS / page)
    PAGE_CHECKS[page](ns, capsys.readouterr().out)


# ---------------------------------------------------------------------------- the site

def test_every_docs_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = {p.name for p in DOCS.glob("*.md")}
    assert pages, "docs/ has no pages"
    assert pages == set(re.findall(r":\s*([\w-]+\.md)\s*$", nav, re.M))


def test_mkdocs_build_strict(tmp_path):
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip('mkdocs is not installed (pip install -e ".[docs]")')
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "performance" / "index.html").is_file()
