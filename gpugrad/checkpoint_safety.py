"""Refusing files that carry pickles, before any of their data is read.

A safetensors file is an 8-byte little-endian header length, a JSON header, then the tensors'
bytes. ``check_file`` reads the header with ``json`` (which cannot run code) and refuses:

- a Python pickle, or a zip archive (PyTorch's ``torch.save`` format, which holds a pickle),
  given a safetensors name;
- a header that is not the safetensors layout: each entry ``dtype``, ``shape`` and
  ``data_offsets`` only, and the tensors covering the body exactly, so no byte belongs to no
  tensor;
- metadata values that are pickles (raw, or in base64 or hex).

``looks_like_pickle`` is also applied to each tensor's bytes by ``gg.load``.
"""

from __future__ import annotations

import base64
import binascii
import json
import pathlib
import pickletools
import struct

MAX_HEADER = 100 * 1024 * 1024

_CALLS = {"GLOBAL", "STACK_GLOBAL", "REDUCE", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "BUILD",
          "EXT1", "EXT2", "EXT4"}
_FIRST = {op.code.encode("latin-1") for op in pickletools.opcodes}


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, malformed or unsafe (it carries a pickle)."""


def looks_like_pickle(buf: bytes | memoryview) -> bool:
    """Is ``buf`` one whole pickle stream that imports or calls something (or starts with
    the PROTO opcode)? Disassembled with ``pickletools``, which runs nothing."""
    if len(buf) < 2 or bytes(buf[-1:]) != b"." or bytes(buf[:1]) not in _FIRST:
        return False
    buf = bytes(buf)
    ops = set()
    try:
        for op, _, pos in pickletools.genops(buf):
            ops.add(op.name)
            if op.name == "STOP":
                return pos == len(buf) - 1 and (bool(ops & _CALLS) or "PROTO" in ops)
    except Exception:  # not a pickle stream
        return False
    return False


def decoded(text: str) -> list[bytes]:
    """The byte strings a metadata value could smuggle: itself, base64 and hex."""
    out = [text.encode("latin-1", errors="ignore"), text.encode("utf-8", errors="ignore")]
    compact = "".join(text.split())
    try:
        out.append(base64.b64decode(compact, validate=True))
    except (binascii.Error, ValueError):
        pass
    try:
        out.append(bytes.fromhex(compact))
    except ValueError:
        pass
    return out


def check_file(p: pathlib.Path) -> tuple[dict, dict]:
    """``(metadata, tensor entries)`` of a safetensors file, or a CheckpointError saying why
    it is refused."""
    size = p.stat().st_size
    with open(p, "rb") as f:
        head = f.read(8)
        if head[:2] == b"PK":
            raise CheckpointError(
                f"gg.load {p}: this is a zip archive (PyTorch's torch.save format, which "
                "holds a pickle), not a safetensors file; gpugrad never unpickles. Convert it "
                "where you trust it, e.g. with safetensors.torch.save_file")
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        if not 0 < n <= min(size - 8, MAX_HEADER):  # no header length that fits the file
            pickled = head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")
            if pickled or looks_like_pickle(head + f.read(MAX_HEADER)):
                raise CheckpointError(
                    f"gg.load {p}: this is a Python pickle, not a safetensors file; gpugrad "
                    "never unpickles (a pickle can run any code when loaded). Write "
                    "checkpoints with gg.save")
            raise CheckpointError(f"gg.load {p}: not a safetensors file (its first 8 bytes "
                                  f"are not a header length that fits its {size} bytes)")
        raw = f.read(n)
    try:
        hdr = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        if looks_like_pickle(raw.rstrip(b" ")):
            raise CheckpointError(f"gg.load {p}: its header is a Python pickle; refused "
                                  "(gpugrad never unpickles)") from None
        raise CheckpointError(f"gg.load {p}: its header is not JSON, so this is not a "
                              "safetensors file") from None
    if not isinstance(hdr, dict):
        raise CheckpointError(f"gg.load {p}: its header is not a JSON object")
    meta = hdr.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise CheckpointError(f"gg.load {p}: its __metadata__ must map strings to strings")
    for k, v in meta.items():
        if any(looks_like_pickle(b) for b in decoded(v)):
            raise CheckpointError(f"gg.load {p}: metadata {k!r} holds a Python pickle; "
                                  "refused (gpugrad never unpickles)")
    spans = []
    for name, entry in hdr.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            strings = [v for v in (entry.values() if isinstance(entry, dict) else [entry])
                       if isinstance(v, str)]
            what = " and holds a Python pickle" if any(
                looks_like_pickle(b) for v in strings for b in decoded(v)) else ""
            raise CheckpointError(f"gg.load {p}: header entry {name!r} is not a tensor "
                                  f"(dtype, shape, data_offsets){what}; refused")
        spans.append(tuple(entry["data_offsets"]))
    body = size - 8 - n
    end = 0
    for lo, hi in sorted(spans):
        if lo != end:
            break
        end = hi
    if end != body:
        with open(p, "rb") as f:
            f.seek(8 + n + end)
            rest = f.read(min(body - end, MAX_HEADER)) if body > end else b""
        what = "; the extra bytes are a Python pickle" if looks_like_pickle(rest) else ""
        raise CheckpointError(f"gg.load {p}: its tensors do not cover its {body} data bytes "
                              f"exactly (bytes that belong to no tensor are refused){what}")
    return meta, hdr
