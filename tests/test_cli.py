"""``gpugrad train``: the command in a subprocess (as users run it) and in process."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]
HAS_CUPY = importlib.util.find_spec("cupy") is not None
HAS_MPL = importlib.util.find_spec("matplotlib") is not None


def train(*args, cwd=ROOT):
    env = {k: v for k, v in os.environ.items() if k != "GPUGRAD_BACKEND"}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "gpugrad", "train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def parse_test_accuracy(out):
    m = re.search(r"test accuracy (\d+(?:\.\d+)?)", out)
    assert m, out
    return float(m.group(1))


def blobs(n_per_class=50, seed=0):
    """Three well separated classes in 4 features."""
    rng = np.random.default_rng(seed)
    centers = np.array([[4.0, 0, 0, 0], [0, 4.0, 0, 0], [0, 0, 4.0, 0]])
    X = np.concatenate([c + rng.normal(size=(n_per_class, 4)) for c in centers])
    y = np.repeat(np.arange(3), n_per_class)
    return X.astype(np.float32), y


def assert_one_line_error(res, *needles):
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr + res.stdout
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "error" in lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]


# --- the embedded digits ---------------------------------------------------------------------

def test_default_one_epoch():
    res = train("--epochs", "1", "--quiet")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "UCI digits" in out and "1797" in out
    assert "test accuracy" in out and "train accuracy" in out
    assert "steps/s" in out
    assert "backend numpy" in out
    assert 0.0 <= parse_test_accuracy(out) <= 1.0
    assert "Traceback" not in res.stderr


def test_progress_lines_per_epoch():
    res = train("--epochs", "2", "--hidden", "32")
    assert res.returncode == 0, res.stderr
    losses = [float(m) for m in re.findall(r"epoch +\d+/2 +loss ([\d.]+)", res.stdout)]
    assert len(losses) == 2, res.stdout
    assert losses[1] < losses[0]


def test_in_process_default_run_reaches_95_percent(capsys):
    with gg.use_backend("numpy"):
        rc = cli.main(["train", "--epochs", "30", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0
    assert parse_test_accuracy(out) >= 0.95


# --- user data -------------------------------------------------------------------------------

def test_data_npz(tmp_path):
    X, y = blobs()
    path = tmp_path / "blobs.npz"
    np.savez(path, X=X, y=y)
    res = train("--data", str(path), "--epochs", "15", "--quiet", "--hidden", "16")
    assert res.returncode == 0, res.stderr
    assert "150 x 4" in res.stdout
    assert "[4, 16, 3]" in res.stdout  # 4 features in, 3 classes out
    assert parse_test_accuracy(res.stdout) >= 0.9


def test_data_csv(tmp_path):
    X, y = blobs(seed=1)
    path = tmp_path / "blobs.csv"
    np.savetxt(path, np.column_stack([X, y]), delimiter=",", fmt="%.6g")
    res = train("--data", str(path), "--epochs", "15", "--quiet", "--hidden", "16",
                "--optimizer", "sgd")
    assert res.returncode == 0, res.stderr
    assert "150 x 4" in res.stdout and "sgd" in res.stdout
    assert parse_test_accuracy(res.stdout) >= 0.9


# --- bad input: one line, exit code 2, no traceback ------------------------------------------

def test_missing_file(tmp_path):
    missing = tmp_path / "nope.npz"
    assert_one_line_error(train("--data", str(missing), "--epochs", "1"), "nope.npz")


def test_wrong_shape(tmp_path):
    X, y = blobs()
    path = tmp_path / "bad.npz"
    np.savez(path, X=X, y=y[:-5])
    assert_one_line_error(train("--data", str(path), "--epochs", "1"), "(150,)", "(145,)")


def test_non_integer_labels(tmp_path):
    X, y = blobs()
    labels = y.astype(np.float64)
    labels[3] = 0.5
    path = tmp_path / "bad.csv"
    np.savetxt(path, np.column_stack([X, labels]), delimiter=",", fmt="%.6g")
    assert_one_line_error(train("--data", str(path), "--epochs", "1"), "integer", "0.5")


def test_not_an_npz_archive(tmp_path):
    path = tmp_path / "text.npz"
    path.write_text("hello\n")
    assert_one_line_error(train("--data", str(path), "--epochs", "1"), "text.npz")
    path = tmp_path / "single.npz"
    with open(path, "wb") as f:
        np.save(f, np.ones(3))
    assert_one_line_error(train("--data", str(path), "--epochs", "1"), "single.npz")


def test_npz_without_X_and_y(tmp_path):
    path = tmp_path / "ab.npz"
    np.savez(path, a=np.ones((3, 2)), b=np.zeros(3))
    assert_one_line_error(train("--data", str(path), "--epochs", "1"), "X", "y", "'a'")


def test_wrong_extension(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("1,2,3\n")
    assert_one_line_error(train("--data", str(path), "--epochs", "1"), ".npz", ".csv")


def test_unknown_optimizer():
    res = train("--optimizer", "lbfgs", "--epochs", "1")
    assert_one_line_error(res, "lbfgs", "sgd", "adam", "adamw", "rmsprop", "adagrad")


def test_unknown_backend():
    assert_one_line_error(train("--backend", "tensorflow", "--epochs", "1"),
                          "tensorflow", "numpy", "cupy")


@pytest.mark.skipif(HAS_CUPY, reason="CuPy is installed here")
def test_unavailable_backend():
    assert_one_line_error(train("--backend", "cupy", "--epochs", "1"), "cupy",
                          "pip install")


# --- outputs ---------------------------------------------------------------------------------

def test_save_params(tmp_path):
    path = tmp_path / "params.npz"
    res = train("--epochs", "1", "--quiet", "--hidden", "16,8", "--save", str(path))
    assert res.returncode == 0, res.stderr
    assert path.is_file()
    with np.load(path) as z:
        shapes = {k: z[k].shape for k in z.files if not k.startswith("_")}
        assert shapes == {"layers.0.weight": (64, 16), "layers.0.bias": (16,),
                          "layers.2.weight": (16, 8), "layers.2.bias": (8,),
                          "layers.4.weight": (8, 10), "layers.4.bias": (10,)}
        assert all(np.all(np.isfinite(z[k])) for k in shapes)
        assert np.any(z["layers.0.bias"] != 0)  # trained, not the zero init


def test_save_adds_npz_suffix(tmp_path):
    res = train("--epochs", "1", "--quiet", "--hidden", "8", "--save", "weights", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "weights.npz").is_file()
    assert "weights.npz" in res.stdout


def test_strict_backend():
    res = train("--epochs", "1", "--quiet", "--hidden", "16", "--backend", "array_api_strict")
    assert res.returncode == 0, res.stderr
    assert "backend array_api_strict" in res.stdout
    assert 0.0 <= parse_test_accuracy(res.stdout) <= 1.0


def test_plot(tmp_path):
    png = tmp_path / "curve.png"
    res = train("--epochs", "1", "--quiet", "--hidden", "16", "--plot", str(png))
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    if HAS_MPL:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert "matplotlib" in res.stderr and "pip install gpugrad[plot]" in res.stderr
        assert not png.exists()
