"""Checkpoints that are safe to load: ``gg.save(state, path)`` and ``gg.load(path)``.

A checkpoint is a safetensors file: a JSON header, then raw array bytes. The arrays of a
state dict (a module's, an optimizer's, or a dict of both with a small metadata dict) are
stored as named tensors. Everything else (hyperparameters, step counts, the nesting of dicts,
lists and tuples, which leaves were Variables) goes into one JSON string in the header's
metadata under ``"gpugrad"``, with the gpugrad version, the backend and each array's dtype.

safetensors has no complex128 (and older versions no complex64), so a complex array is
stored as its real float pair: a float64 (or float32) tensor with one more axis of length 2,
real part first, the very bytes of the complex array. The header's dtype (``complex128``,
``complex64``) tells ``gg.load`` to view it as complex again, bit for bit. Such a file has
format version 2, so an older gpugrad refuses it instead of returning the pairs; files
without complex arrays stay version 1. A complex64 file written by another tool (dtype
``C64``) is read too, by NumPy where the installed safetensors cannot.

An overwritten checkpoint keeps its file mode; a new one gets the mode ``open()`` would give
it (0666 less the umask).

Loading runs no code: the header is read with ``json``, the arrays with safetensors' NumPy
reader, and nothing is unpickled. Before that, the file is checked, and refused with a
CheckpointError, if it is a pickle (or a PyTorch zip archive), if its header or metadata
holds a pickle, if a tensor's bytes are a pickle stream that imports or calls, or if it has
bytes that belong to no tensor. NumPy ``.npz`` files (what ``gpugrad train --save x.npz``
writes) load with ``allow_pickle=False``.

>>> import os, tempfile, numpy as np, gpugrad as gg
>>> path = os.path.join(tempfile.mkdtemp(), "w.safetensors")
>>> gg.save({"w": np.array([1.0, 2.0]), "step": 3, "betas": (0.9, 0.999)}, path)
>>> back = gg.load(path, backend="numpy")
>>> back["w"], back["step"], back["betas"]
(array([1., 2.]), 3, (0.9, 0.999))
"""

from __future__ import annotations

import json
import os
import pathlib
import stat
import struct
from typing import Any, Mapping

import numpy as np

from . import backend as B
from .checkpoint_safety import CheckpointError, check_file, decoded, looks_like_pickle
from ._version import __version__
from .tensor import Tensor, Variable

FORMAT = "gpugrad.checkpoint"
FORMAT_VERSION = 2  # 2: complex arrays as float pairs; files without them are written as 1
_REAL = {"complex64": np.float32, "complex128": np.float64}
_SCALARS = (bool, int, float, str, type(None))


def save(obj: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write a state dict (nested dicts, lists and tuples of arrays, Tensors, numbers,
    strings and None; dict keys are strings) to a safetensors file at ``path``. A Module
    or an optimizer given instead is saved as its ``state_dict()``.

    Arrays cross to the host once. The file is written beside ``path`` and renamed over it,
    so an interrupted save leaves the old checkpoint whole. The header records the gpugrad
    version, the backend and every array's dtype.

    >>> import os, tempfile, gpugrad as gg
    >>> model = gg.nn.Linear(2, 1, seed=0)
    >>> path = os.path.join(tempfile.mkdtemp(), "m.safetensors")
    >>> gg.save({"model": model.state_dict(), "meta": {"step": 10}}, path)
    >>> sorted(gg.load(path)["model"])
    ['bias', 'weight']
    """
    from safetensors.numpy import save_file

    if not isinstance(obj, Mapping) and hasattr(obj, "state_dict"):  # a Module, an Optimizer
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        raise TypeError(f"gg.save: expected a state dict (a mapping), got {type(obj).__name__}")
    arrays: dict[str, np.ndarray] = {}
    backends: set[str] = set()
    tree = _encode(obj, "", arrays, {}, backends)
    dtypes = {k: str(a.dtype) for k, a in arrays.items()}
    header = {
        "format": FORMAT, "version": 2 if any(d in _REAL for d in dtypes.values()) else 1,
        "gpugrad": __version__,
        "backend": min(backends) if len(backends) == 1 else sorted(backends),
        "dtypes": dtypes,
        "tree": tree,
    }
    stored = {k: _as_pair(a) if a.dtype.kind == "c" else a for k, a in arrays.items()}
    target = pathlib.Path(path)
    tmp = target.with_name(target.name + ".tmp")
    mode = _mode_for(target, tmp, path)
    try:
        save_file(stored, str(tmp), metadata={"gpugrad": json.dumps(header)})
        os.chmod(tmp, mode)  # safetensors writes 0600
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"gg.save {path}: safetensors could not write the arrays "
                              f"({exc})") from None
    os.replace(tmp, target)


def _mode_for(target: pathlib.Path, tmp: pathlib.Path, path: Any) -> int:
    """The file mode the checkpoint gets: the overwritten file's, else what ``open()`` gives
    a new file (created as ``tmp``, which safetensors then writes)."""
    if not target.parent.is_dir():
        raise FileNotFoundError(f"gg.save {path}: the folder {target.parent} does not "
                                "exist; create it first")
    tmp.unlink(missing_ok=True)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the umask applies
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        return stat.S_IMODE(os.stat(tmp).st_mode)


def _as_pair(a: np.ndarray) -> np.ndarray:
    """A complex array's bytes as real pairs: shape ``a.shape + (2,)``, real part first."""
    return np.ascontiguousarray(a).reshape(-1).view(_REAL[str(a.dtype)]).reshape(
        (*a.shape, 2))


def _from_pair(a: np.ndarray, dtype: str, key: str, path: Any) -> np.ndarray:
    if a.dtype != _REAL[dtype] or a.ndim == 0 or a.shape[-1] != 2:
        raise CheckpointError(f"gg.load {path}: tensor {key!r} should hold {dtype} values as "
                              f"{np.dtype(_REAL[dtype]).name} pairs (last axis 2), but it is "
                              f"{a.dtype} of shape {a.shape}")
    return np.ascontiguousarray(a).reshape(-1).view(dtype).reshape(a.shape[:-1])


def _encode(value: Any, where: str, arrays: dict, seen: dict, backends: set) -> Any:
    """The JSON tree: scalars as they are, containers and arrays as tagged objects."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, Mapping):
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise TypeError(f"gg.save: {where or 'the state dict'} has key {bad[0]!r}; "
                            "checkpoint keys must be strings")
        return {"t": "dict", "v": {k: _encode(v, f"{where}/{k}" if where else k, arrays, seen,
                                              backends) for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        kind = "tuple" if isinstance(value, tuple) else "list"
        return {"t": kind, "v": [_encode(v, f"{where}/{i}", arrays, seen, backends)
                                 for i, v in enumerate(value)]}
    leaf: dict[str, Any] = {"t": "array"}
    if isinstance(value, Tensor):
        leaf["t"] = "Variable" if isinstance(value, Variable) else "Tensor"
        leaf["name"] = value.name
        leaf["requires_grad"] = bool(value.requires_grad and value._node is None)
        value = value.data
    if not B.is_backend_array(value):
        raise TypeError(f"gg.save: {where or 'the value'} is a {type(value).__name__}; a "
                        "checkpoint holds arrays, Tensors, numbers, strings, None, and "
                        "dicts, lists and tuples of them")
    backends.add(B.name_of(B.namespace_of(value)))
    key = seen.get(id(value))
    if key is None:  # one array named twice (a shared parameter) is stored once
        key = where or "value"
        while key in arrays:
            key += "'"
        arrays[key] = np.ascontiguousarray(B.to_numpy(value))
        seen[id(value)] = key
    leaf["key"] = key
    return leaf


def load(path: str | os.PathLike, backend: Any = None) -> Any:
    """Read a checkpoint written by ``gg.save`` (or any safetensors file, or an ``.npz``)
    onto ``backend`` (a name such as ``"numpy"``, or a Backend; default: the current one).

    Arrays come back as backend arrays, Tensors and Variables as Tensors and Variables, so
    ``model.load_state_dict(gg.load(path)["model"])`` works. A safetensors file that gpugrad
    did not write comes back as a flat dict of arrays. No code runs while loading (see the
    module docstring); a file that holds a pickle is refused with a CheckpointError.

    >>> import os, tempfile, numpy as np, gpugrad as gg
    >>> path = os.path.join(tempfile.mkdtemp(), "v.safetensors")
    >>> gg.save({"w": gg.Variable(np.ones(2), name="w")}, path)
    >>> gg.load(path, backend="numpy")["w"]
    Variable(array([1., 1.]), requires_grad=True, name='w')
    """
    p = pathlib.Path(path)
    b = B.current() if backend is None else B.make_backend(backend)
    if p.is_dir():
        found = sorted(f.name for f in p.iterdir() if f.suffix in (".safetensors", ".npz"))
        raise IsADirectoryError(
            f"gg.load: {path} is a directory, not a checkpoint file; pass the path of a "
            ".safetensors or .npz file" + (f" such as {p / found[0]} (it holds "
                                           f"{', '.join(found[:5])})" if found else ""))
    if not p.is_file():
        raise FileNotFoundError(f"gg.load: no such file: {path}")
    if p.suffix == ".npz":
        return _load_npz(p, b)
    meta, entries = check_file(p)  # refuses pickles before safetensors reads a byte of data
    host = _read_arrays(p, entries)
    _check_bodies(p, host)
    text = meta.get("gpugrad")
    header = None if text is None else _gpugrad_header(text, path)
    dtypes = {} if header is None else header.get("dtypes") or {}
    for k, dtype in dtypes.items():
        if dtype in _REAL and k in host:
            host[k] = _from_pair(host[k], dtype, k, path)
    arrays = {k: B.to_backend(np.array(a, copy=True), backend=b) for k, a in host.items()}
    if header is None:
        return arrays
    return _decode(header.get("tree"), arrays, {}, str(path))


def _gpugrad_header(text: str, path: Any) -> dict:
    try:
        header = json.loads(text)
    except ValueError as exc:
        raise CheckpointError(f"gg.load {path}: its gpugrad metadata is not JSON ({exc})") \
            from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"gg.load {path}: its gpugrad metadata is not a {FORMAT} header")
    if int(header.get("version", 0)) > FORMAT_VERSION:
        raise CheckpointError(f"gg.load {path}: written by a newer gpugrad (format version "
                              f"{header['version']}); upgrade gpugrad to read it")
    return header


_NUMPY_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "U64": "<u8",
                 "I32": "<i4", "U32": "<u4", "I16": "<i2", "U16": "<u2", "I8": "i1",
                 "U8": "u1", "BOOL": "?", "C64": "<c8"}


def _read_arrays(p: pathlib.Path, entries: dict) -> dict:
    """The file's tensors as host arrays: by safetensors, or, where the installed
    safetensors lacks a dtype NumPy has (complex64 before safetensors 0.6), by NumPy from
    the offsets ``check_file`` validated."""
    from safetensors.numpy import load_file

    try:
        return load_file(str(p))
    except Exception as exc:
        unknown = sorted({e["dtype"] for e in entries.values()} - set(_NUMPY_DTYPES))
        if unknown or not entries:
            raise CheckpointError(f"gg.load {p}: not a readable safetensors file ({exc})") \
                from None
    with open(p, "rb") as f:
        f.seek(8 + struct.unpack("<Q", f.read(8))[0])  # offsets count from the header's end
        body = f.read()
    out = {}
    for k, e in entries.items():
        lo, hi = e["data_offsets"]
        out[k] = np.frombuffer(body[lo:hi], dtype=_NUMPY_DTYPES[e["dtype"]]).reshape(e["shape"])
    return out


def _check_bodies(p: pathlib.Path, host: dict) -> None:
    for k, a in host.items():
        if looks_like_pickle(memoryview(np.ascontiguousarray(a).reshape(-1)).cast("B")):
            raise CheckpointError(f"gg.load {p}: tensor {k!r} holds a Python pickle, not "
                                  "array data; refusing the file (gpugrad never unpickles)")


def _decode(node: Any, arrays: dict, made: dict, path: str) -> Any:
    if isinstance(node, str) and any(looks_like_pickle(b) for b in decoded(node)):
        raise CheckpointError(f"gg.load {path}: a string in its gpugrad metadata holds a "
                              "Python pickle; refused (gpugrad never unpickles)")
    if isinstance(node, _SCALARS):
        return node
    if not isinstance(node, dict) or "t" not in node:
        raise CheckpointError(f"gg.load {path}: malformed gpugrad metadata near {node!r:.60}")
    kind = node["t"]
    if kind == "dict":
        return {k: _decode(v, arrays, made, path) for k, v in node["v"].items()}
    if kind in ("list", "tuple"):
        items = [_decode(v, arrays, made, path) for v in node["v"]]
        return tuple(items) if kind == "tuple" else items
    if kind not in ("array", "Tensor", "Variable"):
        raise CheckpointError(f"gg.load {path}: unknown entry kind {kind!r} in its metadata")
    key = node.get("key")
    if key not in arrays:
        raise CheckpointError(f"gg.load {path}: the metadata names tensor {key!r}, which "
                              "the file does not hold")
    if (key, kind) in made:  # one object, as it was when saved
        return made[key, kind]
    arr = arrays[key]
    if kind == "Variable":
        out: Any = Variable(arr, name=node.get("name"))
    elif kind == "Tensor":
        out = Tensor(arr, bool(node.get("requires_grad")), name=node.get("name"))
    else:
        out = arr
    made[key, kind] = out
    return out


def _load_npz(p: pathlib.Path, b: B.Backend) -> dict:
    try:
        with np.load(p, allow_pickle=False) as z:
            files = getattr(z, "files", None)
            if files is None:
                raise CheckpointError(f"gg.load {p}: a single .npy array, not an .npz archive")
            return {k: B.to_backend(z[k], backend=b) for k in files}
    except ValueError as exc:  # object arrays would need pickle: refused
        raise CheckpointError(f"gg.load {p}: refusing an .npz entry that needs pickle "
                              f"({exc})") from None


def header(path: str | os.PathLike) -> dict:
    """The gpugrad header of a checkpoint (format, gpugrad version, backend, dtypes, tree),
    read without loading any array; ``{}`` for a safetensors file gpugrad did not write.

    >>> import os, tempfile, numpy as np, gpugrad as gg
    >>> path = os.path.join(tempfile.mkdtemp(), "h.safetensors")
    >>> gg.save({"w": np.zeros(2, "float32")}, path)
    >>> h = gg.checkpoint.header(path)
    >>> h["backend"], h["dtypes"]
    ('numpy', {'w': 'float32'})
    """
    meta, _ = check_file(pathlib.Path(path))
    text = meta.get("gpugrad")
    return {} if text is None else json.loads(text)


__all__ = ["CheckpointError", "header", "load", "save"]
