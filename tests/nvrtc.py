"""NVRTC through ctypes: compile CUDA C to PTX on a machine without a GPU (tests only).

The library comes from the ``nvidia-cuda-nvrtc-cu12`` (or ``-cu13``) wheel, the
``cuda-check`` extra; :func:`load` returns None where it is absent."""

from __future__ import annotations

import ctypes
import pathlib


def load() -> ctypes.CDLL | None:
    try:
        import nvidia.cuda_nvrtc as pkg
    except ImportError:
        return None
    for root in pkg.__path__:
        for lib in sorted(pathlib.Path(root, "lib").glob("libnvrtc.so.*")):
            return ctypes.CDLL(str(lib))
    return None


def compile_ptx(lib: ctypes.CDLL, source: str, name: str, options: tuple) -> tuple[int, str]:
    """(NVRTC's result code, its log + PTX size) for ``source``; 0 is success."""
    prog = ctypes.c_void_p()
    rc = lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), f"{name}.cu".encode(),
                                0, None, None)
    if rc:
        return rc, "nvrtcCreateProgram failed"
    try:
        opts = (ctypes.c_char_p * len(options))(*(o.encode() for o in options))
        rc = lib.nvrtcCompileProgram(prog, len(options), opts)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, log)
        ptx_size = ctypes.c_size_t()
        if rc == 0:
            lib.nvrtcGetPTXSize(prog, ctypes.byref(ptx_size))
        return rc, f"{log.value.decode(errors='replace')} (PTX: {ptx_size.value} bytes)"
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))
