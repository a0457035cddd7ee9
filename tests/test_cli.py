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


# --- refused before training: option values, output folders, non-finite features ------------

def run_in_process(capsys, *args):
    try:
        rc = cli.main(["train", *args])
    except SystemExit as exc:  # argparse: a bad option value
        rc = exc.code
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.mark.parametrize("option,value", [
    ("--lr", "-1"), ("--lr", "0"), ("--lr", "nan"), ("--lr", "inf"), ("--lr", "fast"),
    ("--hidden", "0"), ("--hidden", "16,0"), ("--hidden", "-3"), ("--seed", "-1"),
    ("--seed", "1.5"), ("--epochs", "0"), ("--batch-size", "-2"), ("--test-split", "1"),
    ("--test-split", "-0.1")])
def test_a_bad_option_value_is_refused_naming_the_option(numpy_backend, capsys, option, value):
    rc, out, err = run_in_process(capsys, "--quiet", "--epochs", "1", option, value)
    assert rc == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"gpugrad train: error: argument {option}: "), err
    assert repr(value) in lines[0] and "gpugrad train --help" in lines[0]


def test_lr_minus_one_names_the_option_not_the_console_script():
    res = train("--lr", "-1", "--epochs", "1", "--quiet")
    assert_one_line_error(res, "argument --lr", "finite number above 0", "'-1'")
    assert "called at" not in res.stderr and not re.search(r"gpugrad:\d", res.stderr)


def _npz(tmp_path, X, y, name="d.npz"):
    path = tmp_path / name
    np.savez(path, X=X, y=y)
    return str(path)


@pytest.mark.parametrize("value,row,col", [(np.nan, 5, 2), (-np.inf, 0, 3), (1e39, 149, 0)])
def test_non_finite_features_are_refused_naming_the_first_row_and_column(
        numpy_backend, capsys, tmp_path, value, row, col):
    X, y = blobs()
    X = X.astype(np.float64)
    X[row, col] = value
    X[149, 3] = np.nan  # a later one is counted, not named
    save = tmp_path / "params.npz"
    rc, out, err = run_in_process(capsys, "--data", _npz(tmp_path, X, y), "--save", str(save))
    assert rc == 2 and "epoch" not in out
    assert len(err.strip().splitlines()) == 1
    assert f"feature row {row}, column {col} (counting from 0) is {np.float64(value)}" in err
    assert "2 value(s) are NaN or infinite" in err and "Remove or impute" in err
    assert not save.exists()


def test_non_finite_features_in_a_csv(tmp_path):
    X, y = blobs()
    X[7, 1] = np.inf
    path = tmp_path / "inf.csv"
    np.savetxt(path, np.column_stack([X, y]), delimiter=",", fmt="%.6g")
    assert_one_line_error(train("--data", str(path), "--epochs", "1"), "inf.csv",
                          "feature row 7, column 1", "inf")


@pytest.mark.parametrize("option", ["--save", "--plot"])
def test_an_output_into_a_missing_folder_is_refused_at_the_start(numpy_backend, capsys,
                                                                  tmp_path, option):
    target = tmp_path / "no" / "such" / "out.png"
    rc, out, err = run_in_process(capsys, "--epochs", "1", option, str(target))
    assert rc == 2 and out == ""  # nothing loaded, nothing trained
    assert f"error: {option} {target}: the folder {target.parent} does not exist" in err
    assert "create it first" in err
    (tmp_path / "file").write_text("")
    rc, _, err = run_in_process(capsys, "--epochs", "1", option, str(tmp_path / "file" / "x"))
    assert rc == 2 and f"{option} {tmp_path / 'file' / 'x'}: the folder" in err
    folder = tmp_path / "out.npz"
    folder.mkdir()
    rc, _, err = run_in_process(capsys, "--epochs", "1", option, str(folder))
    assert rc == 2 and f"{option} {folder}: is a folder; give a file name in it" in err


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="root writes into any folder")
def test_an_output_into_a_read_only_folder_is_refused_at_the_start(numpy_backend, capsys,
                                                                    tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        rc, out, err = run_in_process(capsys, "--epochs", "1", "--save",
                                      str(folder / "x.npz"))
    finally:
        folder.chmod(0o700)
    assert rc == 2 and out == ""
    assert f"--save {folder / 'x.npz'}: cannot write into the folder {folder}" in err


def test_test_split_zero_reports_no_test_accuracy(numpy_backend, capsys):
    rc, out, err = run_in_process(capsys, "--epochs", "2", "--hidden", "8", "--test-split",
                                  "0")
    assert rc == 0, err
    assert "nan" not in out.lower()
    assert "1797 train / 0 test rows" in out
    assert "no test rows (--test-split 0)" in out
    assert len(re.findall(r"epoch +\d/2 +loss [\d.]+ +train acc [\d.]+\n", out)) == 2, out


# --- --resume ----------------------------------------------------------------------------------

_RESUME = ["--quiet", "--hidden", "8", "--batch-size", "128"]


def test_resume_with_a_new_lr_uses_it_and_says_so(numpy_backend, capsys, tmp_path):
    ck, same, new = (tmp_path / f"{n}.safetensors" for n in ("ck", "same", "new"))
    assert cli.main(["train", "--epochs", "1", "--lr", "0.01", "--save", str(ck),
                     *_RESUME]) == 0
    for out_path in (same, new):
        out_path.write_bytes(ck.read_bytes())
    capsys.readouterr()
    rc, out, _ = run_in_process(capsys, "--epochs", "2", "--resume", str(same), "--save",
                                str(same), *_RESUME)
    assert rc == 0 and "adam lr 0.01;" in out and "--lr" not in out
    rc, out, _ = run_in_process(capsys, "--epochs", "2", "--resume", str(new), "--lr", "0.2",
                                "--save", str(new), *_RESUME)
    assert rc == 0
    said = [line for line in out.splitlines() if line.startswith("--lr")]
    assert said == ["--lr 0.2: the checkpoint trained at lr 0.01; the resumed run uses 0.2"]
    assert "adam lr 0.2;" in out  # the banner tells the rate that runs
    a, b = gg.load(same), gg.load(new)
    assert a["optimizer"]["hyper"]["lr"] == 0.01 and b["optimizer"]["hyper"]["lr"] == 0.2
    moved = [np.abs(gg.to_numpy(b["model"][k]) - gg.to_numpy(a["model"][k])).max()
             for k in a["model"]]
    assert max(moved) > 1e-3  # the new rate trained, not the checkpoint's


def test_resume_to_epochs_already_done_is_refused(numpy_backend, capsys, tmp_path):
    ck = tmp_path / "ck.safetensors"
    assert cli.main(["train", "--epochs", "2", "--save", str(ck), *_RESUME]) == 0
    before = ck.read_bytes()
    capsys.readouterr()
    for epochs in ("1", "2"):
        rc, out, err = run_in_process(capsys, "--epochs", epochs, "--resume", str(ck), "--save",
                                      str(ck), *_RESUME)
        assert rc == 2 and "done:" not in out
        assert f"--epochs {epochs}: the checkpoint {ck} has already finished 2 epoch(s)" in err
        assert "pass more than 2 to continue" in err
    assert ck.read_bytes() == before


def test_resume_from_an_npz_with_another_class_count_names_the_classes(numpy_backend, capsys,
                                                                       tmp_path):
    params = tmp_path / "p.npz"
    assert cli.main(["train", "--epochs", "1", "--save", str(params), *_RESUME]) == 0
    rng = np.random.default_rng(0)
    data = _npz(tmp_path, rng.normal(size=(60, 64)).astype(np.float32), np.arange(60) % 3)
    capsys.readouterr()
    rc, _, err = run_in_process(capsys, "--data", data, "--resume", str(params), "--epochs",
                                "1", *_RESUME)
    assert rc == 2
    assert "it was trained on 10 classes and this --data has 3 (labels 0..2)" in err
    assert "resume only on data with the same classes" in err
    assert "--hidden" not in err
    rc, _, err = run_in_process(capsys, "--resume", str(params), "--epochs", "1", "--quiet",
                                "--hidden", "4")
    assert rc == 2 and "its hidden sizes are 8 and this run builds 4; pass --hidden 8" in err
