"""A one-block CUDA kernel's source read back as Python, for the tests of an op's own
device kernel (``lower.NativeKernel.cuda``: the softmax cross-entropy's) on a machine
without a GPU.

The source is the generator's own C, in its own layout (a statement or a block opener per
line, four spaces a level): each thread of the block is a Python generator running the body,
``__syncthreads()`` a ``yield``, and the block runs its threads phase by phase (every thread
to its next barrier, then the next phase), so shared memory and the block's global writes
are seen as on a device. Arithmetic is NumPy's in the kernel's types: ``T`` is
``np.float32`` or ``np.float64``, ``double`` is ``np.float64``, a ``T`` times a ``T`` stays
a ``T`` as in C (``exp`` of a float is ``np.exp`` of a float32: CUDA's ``expf`` may differ by
an ulp, which the tests allow in ulps)."""

from __future__ import annotations

import math
import re

import numpy as np

_FOR = re.compile(r"^for \((?:const )?(?:long long|unsigned int|int) (\w+) = (.+?); \1 < (.+?); "
                  r"(?:\+\+\1|\1 \+= (.+?))\) \{$")
_DECL = re.compile(r"^(?:const )?(?:T|double|long long|unsigned int|int) (?=\w+ (?:=|\+=))")
_SHARED = re.compile(r"^__shared__ double (\w+)\[(\d+)\]$")
_CAST = re.compile(r"\((T|double)\)(\w+(?:\[[^\]]*\]|\((?:[^()]|\([^()]*\))*\))?"
                   r"|\((?:[^()]|\([^()]*\))*\))")
TYPES = {"float": np.float32, "double": np.float64}


def _expr(text: str) -> str:
    text = text.replace('nan("")', "NAN")
    while _CAST.search(text):
        text = _CAST.sub(lambda m: f"{'T' if m.group(1) == 'T' else 'F64'}({m.group(2)})", text)
    text = text.replace("||", " or ").replace("&&", " and ").replace("!(", "not (")
    return text.replace("threadIdx.x", "tid").replace("blockDim.x", "bdim")


def _statement(stmt: str) -> str:
    stmt = _DECL.sub("", stmt.strip())
    m = _SHARED.match(stmt)
    if m:
        return f"{m.group(1)} = SHARED.setdefault({m.group(1)!r}, np.zeros({m.group(2)}))"
    if stmt == "__syncthreads()":
        return "yield"
    return _expr(stmt)


def _python(source: str) -> tuple[str, list, type]:
    """The kernel as a Python generator function of (tid, bdim, SHARED, *params), its C
    parameters and its ``T``."""
    text = re.sub(r"//[^\n]*", "", source)
    head, body = text.split("{", 1)
    params = [p.strip() for p in head[head.index("(") + 1:head.rindex(")")].split(",")]
    names = [p.split()[-1].lstrip("*") for p in params]
    out = [f"def kernel(tid, bdim, SHARED, {', '.join(names)}):", "    if False:", "        yield"]
    ctype = None
    for line in body.rstrip().rstrip("}").splitlines():
        stripped = line.strip()
        if not stripped or stripped == "}":
            continue
        ind = line[:len(line) - len(line.lstrip())]
        m = _FOR.match(stripped)
        if m:
            var, start, stop, step = m.groups()
            out.append(f"{ind}for {var} in range({_expr(start)}, {_expr(stop)}, "
                       f"{_expr(step or '1')}):")
        elif stripped.startswith("typedef "):
            ctype = stripped.split()[1]
        elif stripped.startswith("if ("):
            out.append(f"{ind}if {_expr(stripped[3:-2])}:")
        elif stripped.startswith("} else if ("):
            out.append(f"{ind}elif {_expr(stripped[10:-2])}:")
        elif stripped == "} else {":
            out.append(f"{ind}else:")
        else:
            out += [ind + _statement(s) for s in stripped.split(";") if s.strip()]
    return "\n".join(out), params, TYPES[ctype]


def host_block_kernel(source: str, threads: int = 256):
    """``run(args, None)``: the kernel of ``source`` run by one block of ``threads`` threads
    on NumPy arrays (its pointers; written through), numbers and counts."""
    code, params, T = _python(source)
    scope = {"np": np, "T": T, "F64": np.float64, "NAN": math.nan, "exp": np.exp,
             "log": np.log}
    exec(compile(code, "<op kernel>", "exec"), scope)  # noqa: S102  (the generator's C)

    def run(args, n):
        assert n is None and len(args) == len(params)
        flat = []
        for p, a in zip(params, args):
            if "*" in p:
                assert isinstance(a, np.ndarray) and a.flags.c_contiguous
                want = np.int64 if p.startswith(("long long", "const long long")) else T
                assert a.dtype == want, (p, a.dtype)
                flat.append(a.reshape(-1))
            else:
                flat.append(int(a) if "long long" in p else np.float64(a))
        shared: dict = {}
        alive = [scope["kernel"](t, threads, shared, *flat) for t in range(threads)]
        with np.errstate(all="ignore"):
            while alive:
                alive = [g for g in alive if next(g, StopIteration) is not StopIteration]
    return run
