"""gg.save / gg.load: safetensors checkpoints that run no code, and training resumes."""

from __future__ import annotations

import base64
import json
import pickle
import struct

import numpy as np
import pytest
from helpers import assert_on_backend, host

import gpugrad as gg
from gpugrad import cli, nn, optim, resume
from gpugrad.checkpoint import CheckpointError
from gpugrad.data import Batches


def _model_and_adam(bk):
    with gg.use_backend(bk.backend()):
        model = nn.MLP([3, 4, 2], seed=0, dtype=bk.float_dtype)
    opt = optim.Adam(model.parameters(), lr=0.05)
    x = gg.asarray(np.linspace(-1, 1, 15).reshape(5, 3).astype(bk.float_dtype))
    for _ in range(2):
        opt.zero_grad()
        gg.sum(model(x) ** 2).backward()
        opt.step()
    return model, opt, x


def test_module_and_optimizer_round_trip(bk, tmp_path):
    model, opt, x = _model_and_adam(bk)
    path = tmp_path / "ckpt.safetensors"
    gg.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
             "meta": {"step": opt.steps, "note": "two steps"}}, path)
    back = gg.load(path)
    assert back["meta"] == {"step": 2, "note": "two steps"}
    assert back["optimizer"]["hyper"]["betas"] == (0.9, 0.999)  # a tuple stays a tuple
    for v in back["model"].values():
        assert_on_backend(bk, v)
    head = gg.checkpoint.header(path)
    assert head["gpugrad"] == gg.__version__ and head["backend"] == bk.name
    assert set(head["dtypes"].values()) == {bk.float_dtype}
    with gg.use_backend(bk.backend()):
        model2 = nn.MLP([3, 4, 2], seed=7, dtype=bk.float_dtype)
    opt2 = optim.Adam(model2.parameters(), lr=0.5)
    model2.load_state_dict(back["model"])
    opt2.load_state_dict(back["optimizer"])
    assert opt2.lr == 0.05 and opt2.steps == 2
    for m, o in ((model, opt), (model2, opt2)):  # both continue the same way
        o.zero_grad()
        gg.sum(m(x) ** 2).backward()
        o.step()
    for p, p2 in zip(model.parameters(), model2.parameters()):
        np.testing.assert_array_equal(host(p), host(p2))


def test_load_onto_another_backend(tmp_path):
    import array_api_strict as xs

    with gg.use_backend("array_api_strict", xs.Device("device1")):
        w = gg.Variable(np.array([1.0, 2.0]), name="w")
        gg.save({"w": w, "c": gg.asarray(np.array([3, 4], "int64"))}, tmp_path / "s.safetensors")
    back = gg.load(tmp_path / "s.safetensors", backend="numpy")
    assert type(back["w"]) is gg.Variable and back["w"].name == "w"
    assert isinstance(back["w"].data, np.ndarray) and back["c"].data.dtype == np.int64
    assert type(back["c"]) is gg.Tensor and not back["c"].requires_grad


def test_kinds_nesting_and_shared_arrays(numpy_backend, tmp_path):
    w = gg.Variable(np.ones(3), name="w")
    state = {"a": [w, (w, 1.5, None, True)], "b": {"x": np.arange(2), "s": "text"},
             "n": np.float64(2.5), "nan": float("nan")}
    gg.save(state, tmp_path / "n.safetensors")
    back = gg.load(tmp_path / "n.safetensors")
    assert back["a"][0] is back["a"][1][0]  # one Variable saved twice comes back as one
    assert back["a"][1][1:] == (1.5, None, True)
    np.testing.assert_array_equal(back["b"]["x"], [0, 1])
    assert back["b"]["s"] == "text" and back["n"] == 2.5 and np.isnan(back["nan"])
    assert len(gg.checkpoint.header(tmp_path / "n.safetensors")["dtypes"]) == 2


def test_a_module_or_optimizer_saves_its_state_dict(numpy_backend, tmp_path):
    model = nn.Linear(2, 3, seed=0)
    opt = optim.SGD(model.parameters(), lr=0.3, momentum=0.5)
    gg.save(model, tmp_path / "m.safetensors")
    gg.save(opt, tmp_path / "o.safetensors")
    assert sorted(gg.load(tmp_path / "m.safetensors")) == ["bias", "weight"]
    assert gg.load(tmp_path / "o.safetensors")["hyper"]["momentum"] == 0.5


def test_bad_values_get_clear_errors(numpy_backend, tmp_path):
    with pytest.raises(TypeError, match="keys must be strings"):
        gg.save({"m": {1: np.ones(2)}}, tmp_path / "k.safetensors")
    with pytest.raises(TypeError, match="m/f is a builtin_function_or_method; a checkpoint holds"):
        gg.save({"m": {"f": len}}, tmp_path / "f.safetensors")
    with pytest.raises(TypeError, match="expected a state dict"):
        gg.save([np.ones(2)], tmp_path / "l.safetensors")
    with pytest.raises(FileNotFoundError, match="no such file"):
        gg.load(tmp_path / "missing.safetensors")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_reads_the_npz_that_train_save_writes(numpy_backend, tmp_path):
    out = tmp_path / "params.npz"
    cli.main(["train", "--epochs", "1", "--quiet", "--hidden", "8", "--save", str(out)])
    back = gg.load(out)
    assert back["_sizes"].tolist() == [64, 8, 10]
    model = nn.MLP([64, 8, 10])
    model.load_state_dict({k: v for k, v in back.items() if not k.startswith("_")})
    assert cli.main(["train", "--epochs", "1", "--quiet", "--hidden", "8", "--resume",
                     str(out)]) == 0  # the .npz gives the starting parameters
    assert cli.main(["train", "--epochs", "1", "--quiet", "--hidden", "9", "--resume",
                     str(out)]) == 2  # of the same sizes only
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(CheckpointError, match="needs pickle"):
        gg.load(tmp_path / "obj.npz")


# --- files that carry pickles are refused, and nothing runs -------------------------------

class _Payload:
    """Unpickling this writes a marker file: the test asserts the file never appears."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def _raw_safetensors(path, header: dict, body: bytes) -> None:
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + body)


def _evil_files(tmp_path, marker):
    from safetensors.numpy import save_file

    payload = pickle.dumps(_Payload(marker))
    old = pickle.dumps(_Payload(marker), protocol=0)
    files = {}
    files["renamed pickle"] = tmp_path / "renamed.safetensors"
    files["renamed pickle"].write_bytes(payload)
    files["protocol-0 pickle"] = tmp_path / "p0.safetensors"
    files["protocol-0 pickle"].write_bytes(old)
    files["tensor body"] = tmp_path / "body.safetensors"
    save_file({"w": np.frombuffer(payload, np.uint8).copy()}, files["tensor body"])
    files["float body"] = tmp_path / "fbody.safetensors"  # float64 values that are a pickle
    fill = -len(old) % 8
    fill += 8 if fill < 2 else 0
    prefix = b"K\x010" * (fill % 2) + b"N0" * ((fill - 3 * (fill % 2)) // 2)  # push, pop
    save_file({"w": np.frombuffer(prefix + old, np.float64).copy()}, files["float body"])
    for name, text in (("metadata raw", payload.decode("latin-1")),
                       ("metadata base64", base64.b64encode(payload).decode()),
                       ("metadata hex", payload.hex())):
        files[name] = tmp_path / f"{name.replace(' ', '_')}.safetensors"
        save_file({"w": np.zeros(2)}, files[name], metadata={"blob": text})
    files["gpugrad tree"] = tmp_path / "tree.safetensors"
    tree = {"format": "gpugrad.checkpoint", "version": 1, "tree": {
        "t": "dict", "v": {"x": base64.b64encode(payload).decode()}}}
    save_file({"w": np.zeros(2)}, files["gpugrad tree"], metadata={"gpugrad": json.dumps(tree)})
    files["header"] = tmp_path / "header.safetensors"
    _raw_safetensors(files["header"], {"w": {"dtype": "F64", "shape": [1],
                                             "data_offsets": [0, 8]},
                                       "x": {"pickle": payload.hex()}}, b"\x00" * 8)
    files["trailing bytes"] = tmp_path / "trailing.safetensors"
    _raw_safetensors(files["trailing bytes"], {"w": {"dtype": "F64", "shape": [1],
                                                     "data_offsets": [0, 8]}},
                     b"\x00" * 8 + payload)
    files["zip archive"] = tmp_path / "zip.safetensors"
    import zipfile

    with zipfile.ZipFile(files["zip archive"], "w") as z:
        z.writestr("archive/data.pkl", payload)
    return files


def test_files_carrying_pickles_are_refused_and_nothing_runs(numpy_backend, tmp_path,
                                                             monkeypatch):
    marker = tmp_path / "marker"
    files = _evil_files(tmp_path, marker)

    def forbidden(*args, **kwargs):
        raise AssertionError("gg.load called into pickle")

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    for what, path in files.items():
        with pytest.raises(CheckpointError) as info:
            gg.load(path)
        msg = str(info.value)
        assert str(path) in msg, what
        assert "pickle" in msg, (what, msg)
        assert not marker.exists(), what
    monkeypatch.undo()
    pickle.loads(files["renamed pickle"].read_bytes())  # the payload is live: it runs
    assert marker.read_text() == "ran"


def test_an_ordinary_safetensors_file_loads_flat(numpy_backend, tmp_path):
    from safetensors.numpy import save_file

    save_file({"a": np.arange(3.0), "b": np.ones((2, 2), np.float32)}, tmp_path / "x.st",
              metadata={"format": "np"})
    back = gg.load(tmp_path / "x.st")
    assert sorted(back) == ["a", "b"]
    np.testing.assert_array_equal(back["a"], [0.0, 1.0, 2.0])
    assert gg.checkpoint.header(tmp_path / "x.st") == {}
    # a header of 128 bytes: the file starts with 0x80, as a pickle does, and still loads
    entry = {"w": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]}}
    fill = 128 - len(json.dumps({**entry, "__metadata__": {"k": ""}}))
    _raw_safetensors(tmp_path / "h.st", {**entry, "__metadata__": {"k": "x" * fill}},
                     np.float64(1.5).tobytes())
    assert (tmp_path / "h.st").read_bytes()[:1] == b"\x80"
    np.testing.assert_array_equal(gg.load(tmp_path / "h.st")["w"], [1.5])


# --- stop and resume --------------------------------------------------------------------

def _run(epochs, seed_state=None, path=None, stop_at=None, resume_from=None):
    """Train a float64 MLP with the CLI's own epoch loop; checkpoint after ``stop_at``."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(60, 5))
    y = rng.integers(0, 3, size=60)
    model = nn.MLP([5, 7, 3], seed=0, dtype="float64")
    opt = optim.Adam(model.parameters(), lr=0.02)
    batches = Batches(X, y, 16, shuffle=True, seed=1)
    first = 0
    if resume_from is not None:
        first = resume.restore_training(resume_from, model, opt, batches,
                                        settings={"seed": 1})["epoch"]
    for epoch in range(first, epochs):
        cli.run_epoch(model, opt, batches)
        if stop_at is not None and epoch + 1 == stop_at:
            resume.save_training(path, model, opt, batches, epoch=epoch + 1,
                                 settings={"seed": 1})
            return None
    return model, opt


def test_stopped_and_resumed_run_ends_exactly_where_an_uninterrupted_one_does(
        numpy_backend, tmp_path):
    path = tmp_path / "run.safetensors"
    whole, whole_opt = _run(5)
    _run(5, path=path, stop_at=2)
    resumed, resumed_opt = _run(5, resume_from=path)
    for p, q in zip(whole.parameters(), resumed.parameters()):
        assert p.dtype == np.float64
        np.testing.assert_array_equal(host(p), host(q))
    assert whole_opt.steps == resumed_opt.steps == 20
    with pytest.raises(CheckpointError, match="seed: checkpoint 1, now 2"):
        resume.restore_training(path, *_fresh(), settings={"seed": 2})


def _fresh():
    model = nn.MLP([5, 7, 3], seed=0, dtype="float64")
    return model, optim.Adam(model.parameters()), Batches(np.ones((4, 5)), np.zeros(4), 2)


def test_train_save_and_resume_match_an_uninterrupted_run(numpy_backend, tmp_path):
    whole, part = tmp_path / "whole.safetensors", tmp_path / "part.safetensors"
    opts = ["--quiet", "--hidden", "16", "--optimizer", "sgd", "--batch-size", "64"]
    assert cli.main(["train", "--epochs", "3", "--save", str(whole), *opts]) == 0
    assert cli.main(["train", "--epochs", "1", "--save", str(part), *opts]) == 0
    assert gg.load(part)["train"]["epoch"] == 1
    assert cli.main(["train", "--epochs", "3", "--resume", str(part), "--save", str(part),
                     *opts]) == 0
    a, b = gg.load(whole), gg.load(part)
    assert b["train"]["epoch"] == 3
    assert a["train"]["extra"]["history"] == b["train"]["extra"]["history"]
    for k in a["model"]:
        np.testing.assert_array_equal(a["model"][k], b["model"][k])
    for sa, sb in zip(a["optimizer"]["state"], b["optimizer"]["state"]):
        for k in sa:
            np.testing.assert_array_equal(sa[k], sb[k])
    bad = ["train", "--epochs", "3", "--resume", str(part), "--quiet", "--hidden", "8"]
    assert cli.main(bad) == 2


# --- complex arrays, foreign complex files, file modes, paths -------------------------------

def _bits(a):
    a = np.ascontiguousarray(a)
    return a.dtype, a.shape, a.tobytes()


def _odd_complex(dtype):
    """Values whose bits a float round trip would lose: NaN payloads, -0.0, inf, subnormals."""
    real = np.dtype(dtype).char.lower().replace("f", "f4").replace("d", "f8")
    nan = np.frombuffer(np.array([0x7FF8_0000_0000_0ABC], "<u8").tobytes(), "<f8")[0]
    parts = np.array([1.5, -0.0, np.inf, nan, 5e-324, -2.0], dtype="f8").astype(real)
    z = np.empty(3, dtype)
    z.real, z.imag = parts[:3], parts[3:]
    return z


@pytest.mark.parametrize("dtype", ["complex128", "complex64"])
def test_complex_arrays_round_trip_bit_for_bit(numpy_backend, tmp_path, dtype):
    z = _odd_complex(dtype)
    state = {"z": z, "m": z.reshape(3, 1)[::-1].copy(), "s": np.asarray(z[0]),
             "e": np.zeros((0, 2), dtype), "v": gg.Variable(z, name="zv"), "n": 2}
    path = tmp_path / "c.safetensors"
    gg.save(state, path)
    assert gg.checkpoint.header(path)["dtypes"]["z"] == dtype
    assert gg.checkpoint.header(path)["version"] == 2
    back = gg.load(path)
    for k in ("z", "m", "s", "e"):
        assert _bits(back[k]) == _bits(state[k]), k
    assert isinstance(back["v"], gg.Variable) and back["v"].name == "zv"
    assert _bits(back["v"].data) == _bits(z)
    from safetensors.numpy import load_file  # another tool sees the real float pairs
    pairs = load_file(str(path))["z"]
    assert pairs.shape == (3, 2) and pairs.dtype == z.real.dtype
    np.testing.assert_array_equal(pairs[:, 0], z.real)


def test_files_without_complex_arrays_stay_format_version_1(numpy_backend, tmp_path):
    gg.save({"w": np.ones(2)}, tmp_path / "r.safetensors")
    assert gg.checkpoint.header(tmp_path / "r.safetensors")["version"] == 1


def test_adam_on_complex_variables_resumes_bit_for_bit(numpy_backend, tmp_path):
    target = np.array([1 - 2j, 0.5 + 3j])

    def steps(opt, w, n):
        for _ in range(n):
            opt.zero_grad()
            d = w - gg.asarray(target)
            gg.sum(gg.real(d * gg.conj(d))).backward()
            opt.step()

    w = gg.Variable(np.array([0j, 1 + 1j]), name="w")
    opt = optim.Adam([w], lr=0.1)
    steps(opt, w, 3)
    path = tmp_path / "adam.safetensors"
    gg.save({"w": w, "opt": opt.state_dict()}, path)
    steps(opt, w, 2)
    back = gg.load(path)
    w2 = back["w"]
    opt2 = optim.Adam([w2], lr=0.1)
    opt2.load_state_dict(back["opt"])
    assert [a.dtype for st in back["opt"]["state"] for a in st.values()] == [np.complex128] * 2
    steps(opt2, w2, 2)
    assert w.dtype == np.complex128
    assert _bits(gg.to_numpy(w2)) == _bits(gg.to_numpy(w))


def _foreign_c64(path, z):
    """A safetensors file with a C64 tensor, as another tool (torch) writes one."""
    head = json.dumps({"z": {"dtype": "C64", "shape": list(z.shape),
                             "data_offsets": [0, z.nbytes]}}).encode()
    head += b" " * (-len(head) % 8)
    path.write_bytes(struct.pack("<Q", len(head)) + head + z.astype("<c8").tobytes())


def test_a_complex64_file_from_another_tool_is_read(numpy_backend, tmp_path, monkeypatch):
    z = _odd_complex("complex64")
    path = tmp_path / "torch.safetensors"
    _foreign_c64(path, z)
    assert _bits(gg.load(path)["z"]) == _bits(z)
    import safetensors.numpy

    def old_safetensors(name):  # a safetensors release without C64
        raise KeyError("C64")
    monkeypatch.setattr(safetensors.numpy, "load_file", old_safetensors)
    assert _bits(gg.load(path)["z"]) == _bits(z)
    head = path.read_bytes()
    path.write_bytes(head.replace(b'"C64"', b'"C32"'))  # a dtype nobody reads: refused
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        gg.load(path)


def test_an_overwritten_checkpoint_keeps_its_mode_and_a_new_one_gets_the_umasks(
        numpy_backend, tmp_path):
    import os
    import stat

    path = tmp_path / "m.safetensors"
    old = os.umask(0o027)
    try:
        gg.save({"w": np.ones(2)}, path)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o640  # 0666 less the umask
        os.chmod(path, 0o644)
        gg.save({"w": np.zeros(2)}, path)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
        os.chmod(path, 0o600)
        gg.save({"w": np.ones(2)}, path)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    finally:
        os.umask(old)
    assert gg.load(path)["w"].tolist() == [1.0, 1.0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_load_of_a_directory_and_save_into_a_missing_folder_say_so(numpy_backend, tmp_path):
    gg.save({"w": np.ones(2)}, tmp_path / "run.safetensors")
    with pytest.raises(IsADirectoryError) as err:
        gg.load(tmp_path)
    msg = str(err.value)
    assert f"{tmp_path} is a directory, not a checkpoint file" in msg
    assert "pass the path of a .safetensors or .npz file" in msg and "run.safetensors" in msg
    with pytest.raises(FileNotFoundError, match=r"the folder .*nowhere does not exist; create"):
        gg.save({"w": np.ones(2)}, tmp_path / "nowhere" / "x.safetensors")
