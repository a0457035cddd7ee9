"""Compiled code a person can read (gpugrad/compiler/listing.py): ``loss.source(...)`` and
``gg.compile(fn).source(...)``, each generated line tagged with its op and the line of this
file that made it; the text shown is the text that runs; tracebacks, pdb and
``GPUGRAD_SOURCE_DIR`` see the generated lines."""

from __future__ import annotations

import inspect
import linecache
import os
import traceback

import numpy as np
import pytest
from helpers import var

import gpugrad as gg
from gpugrad import optim
from gpugrad.compiler.listing import listing, untagged
from gpugrad.registry import Op

HERE = os.path.basename(__file__)


def _line(marker: str) -> int:
    """The line of this file that carries the comment ``marker``."""
    lines = inspect.getsource(inspect.getmodule(_line)).splitlines()
    (n,) = [k + 1 for k, line in enumerate(lines) if line.endswith(f"# <{marker}>")]
    return n


def _graph():
    x = gg.Placeholder((None, 3), "float64", name="x")
    W = gg.Variable(np.linspace(-1.0, 1.0, 6).reshape(3, 2), name="W")
    h = gg.sigmoid(x @ W)  # <hidden>
    loss = gg.sum(h * h)  # <loss>
    return x, W, loss


def _tags(src: str) -> set:
    return {line.split("  # ", 1)[1] for line in src.splitlines() if "  # " in line}


def test_graph_source_tags_forward_backward_and_update_with_the_users_lines():
    x, W, loss = _graph()
    feed = {x: np.ones((4, 3))}
    before = gg.to_numpy(W.data).copy()
    src = loss.source(feed, opt=optim.SGD([W], lr=0.1))
    hidden, last = f"{HERE}:{_line('hidden')}", f"{HERE}:{_line('loss')}"
    tags = _tags(src)
    assert {f"matmul  {hidden}", f"sigmoid  {hidden}", f"multiply  {last}",
            f"sum  {last}"} <= tags
    assert {f"sigmoid (vjp)  {hidden}", f"matmul (vjp)  {hidden}",
            f"multiply (vjp)  {last}", "SGD update"} <= tags
    # each NumPy call is tagged, and where: the sigmoid's exp in the forward, its
    # derivative in the backward, the subtraction of the update
    for line in src.splitlines():
        if "np." in line and "= np.array(" not in line:
            assert "  # " in line, line
    assert [t for line in src.splitlines() if "np.exp(" in line
            for t in [line.split("  # ")[1]]] == [f"sigmoid  {hidden}"]
    assert any(line.strip().startswith("np.subtract(") and line.endswith("# SGD update")
               for line in src.splitlines())
    # source() ran no update and stored no gradient
    np.testing.assert_array_equal(gg.to_numpy(W.data), before)
    assert W.grad is None


def test_graph_source_modes_and_the_optimizers_kernel():
    x, W, loss = _graph()
    feed = {x: np.ones((2, 3))}
    forward = loss.source(feed)
    assert "(vjp)" not in forward and f"sigmoid  {HERE}:{_line('hidden')}" in _tags(forward)
    grads = loss.source(feed, wrt=[W])
    assert "sigmoid (vjp)" in grads and "update" not in grads
    adam = loss.source(feed, opt=optim.Adam([W], lr=0.01))
    assert "Adam update" in _tags(adam)
    program, kernel = adam.split("\n\n# UF_[i], the Adam update", 1)
    assert "UF_[" in program and kernel.count("def update(P, G, S, T, h):") == 1


def test_graph_source_is_the_text_that_runs():
    x, W, loss = _graph()
    opt = optim.SGD([W], lr=0.1)
    feed = {x: np.ones((4, 3))}
    shown = loss.source(feed, opt=opt)
    for _ in range(2):
        opt.minimize(loss, feed=feed)
    (prog,) = loss._schedules[((W,), np)].programs.values()
    assert listing(prog) == shown
    # the function's file name maps to that text, for tracebacks, pdb and inspect
    filename = prog.fn.__code__.co_filename
    assert "".join(linecache.getlines(filename)) == prog.source + "\n"
    assert inspect.getsource(prog.fn) == prog.source + "\n"
    # once filed, the filed program is what source() shows
    assert loss.source(feed, opt=opt) == shown


def test_source_on_every_backend_is_tagged_and_is_what_runs(bk):
    x = gg.Placeholder((None, 3), bk.float_dtype, name="x")
    W = var(bk, np.linspace(-1.0, 1.0, 6).reshape(3, 2), name="W")
    loss = gg.sum(gg.tanh(x @ W)) + gg.sum(W * W)  # <two uses>
    opt = optim.SGD([W], lr=0.1)
    feed = {x: np.ones((4, 3), bk.float_dtype)}
    shown = loss.source(feed, opt=opt)
    at = f"{HERE}:{_line('two uses')}"
    assert {f"tanh  {at}", f"tanh (vjp)  {at}", f"matmul (vjp)  {at}", "W (gradient sum)",
            "SGD update"} <= _tags(shown)
    for _ in range(2):
        opt.minimize(loss, feed=feed)
    (sched,) = loss._schedules.values()
    (prog,) = sched.programs.values()
    assert listing(prog) == shown


def test_tags_are_comments_only():
    x, W, loss = _graph()
    shown = loss.source({x: np.ones((4, 3))}, opt=optim.SGD([W], lr=0.1))
    src = shown.split("\n\n# UF_")[0]
    plain = untagged(src)
    assert plain != src and "#" not in plain
    code = compile(src, "<a>", "exec").co_consts[0]
    bare = compile(plain, "<b>", "exec").co_consts[0]
    assert code.co_code == bare.co_code and code.co_consts == bare.co_consts
    assert list(code.co_lines()) == list(bare.co_lines())


def test_generic_schedule_source_is_tagged():
    x, W, loss = _graph()
    sched, _ = loss._schedule((W,))
    tags = _tags(sched.source)
    hidden = f"{HERE}:{_line('hidden')}"
    assert {f"sigmoid  {hidden}", f"sigmoid (vjp)  {hidden}", f"matmul (vjp)  {hidden}"} \
        <= tags


W_COMPILED = gg.Variable(np.linspace(-1.0, 1.0, 6).reshape(3, 2), name="W")


@gg.compile
def _loss(xb):
    z = xb @ W_COMPILED  # <compiled matmul>
    return gg.mean(gg.tanh(z) ** 2)  # <compiled loss>


def test_compile_source_tags_and_equals_the_program_that_runs():
    xb = gg.asarray(np.ones((5, 3)))
    before = gg.to_numpy(W_COMPILED.data).copy()
    src = _loss.source(xb)
    mm, last = f"{HERE}:{_line('compiled matmul')}", f"{HERE}:{_line('compiled loss')}"
    tags = _tags(src)
    assert {f"matmul  {mm}", f"tanh  {last}", f"mean  {last}", f"matmul (vjp)  {mm}",
            f"tanh (vjp)  {last}"} <= tags
    assert W_COMPILED.grad is None  # no gradient stored, nothing updated
    np.testing.assert_array_equal(gg.to_numpy(W_COMPILED.data), before)
    assert _loss.cache_info().traces == 1
    for _ in range(3):
        _loss(xb).backward()
    entry = next(iter(_loss._cache.values()))
    (prog,) = entry.sched.programs.values()
    assert listing(prog) == src == _loss.source(xb)


def test_compile_source_of_several_outputs_is_the_generic_code():
    @gg.compile
    def two(xb):
        return gg.tanh(xb @ W_COMPILED), gg.sum(xb)  # <two outputs>

    src = two.source(gg.asarray(np.ones((2, 3))))
    assert src.startswith("def forward(xp, v, res, meta, grads):")
    assert f"tanh  {HERE}:{_line('two outputs')}" in _tags(src)
    assert "def backward(" in src
    with gg.no_grad():  # not recorded: the forward-only planned program
        plain = two.source(gg.asarray(np.ones((2, 3))))
    assert plain.startswith("def forward(")


class _Boom(RuntimeError):
    pass


def _failing_op():
    armed = []

    def forward(xp, x):
        if armed:
            raise _Boom("inside the generated program")
        return x + 1.0, None

    return Op("boom", forward, differentiable=False), armed


def test_a_traceback_through_a_generated_program_shows_its_lines():
    op, armed = _failing_op()
    x = gg.Placeholder((2,), "float64", name="x")
    y = op(x)  # <boom>
    feed = {x: np.zeros(2)}
    y.eval(feed)  # the first run goes step by step and files the planned program
    armed.append(True)
    with pytest.raises(_Boom) as info:
        y.eval(feed)
    text = "".join(traceback.format_exception(info.value))
    (prog,) = y._schedules[((), np)].programs.values()
    filename = prog.fn.__code__.co_filename
    assert f'File "{filename}"' in text
    assert f"= F0(xp, v0)  # boom  {HERE}:{_line('boom')}" in text


def test_source_dir_writes_each_module_to_a_real_file(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUGRAD_SOURCE_DIR", str(tmp_path / "generated"))
    x, W, loss = _graph()
    opt = optim.SGD([W], lr=0.1)
    feed = {x: np.ones((4, 3))}
    for _ in range(2):
        opt.minimize(loss, feed=feed)
    (prog,) = loss._schedules[((W,), np)].programs.values()
    path = prog.fn.__code__.co_filename
    assert os.path.dirname(path) == str(tmp_path / "generated")
    with open(path, encoding="utf-8") as f:
        assert f.read() == prog.source + "\n"
    names = sorted(os.listdir(tmp_path / "generated"))
    assert any(n.startswith("gpugrad_program_") for n in names)
    assert any(n.startswith("gpugrad_forward_") for n in names)
    # the same program in another graph: the same file, named by its text
    x2, W2, loss2 = _graph()
    opt2 = optim.SGD([W2], lr=0.1)
    for _ in range(2):
        opt2.minimize(loss2, feed={x2: np.ones((4, 3))})
    (prog2,) = loss2._schedules[((W2,), np)].programs.values()
    assert prog2.fn.__code__.co_filename == path


def test_an_unwritable_source_dir_is_named(tmp_path, monkeypatch):
    blocker = tmp_path / "a file"
    blocker.write_text("")
    monkeypatch.setenv("GPUGRAD_SOURCE_DIR", str(blocker / "generated"))
    x = gg.Placeholder((2,), "float64", name="x")
    with pytest.raises(OSError, match="GPUGRAD_SOURCE_DIR=.*cannot write the generated"):
        (x * 2.0).eval({x: np.zeros(2)})


def test_a_collected_program_frees_its_lines_but_keeps_its_linecache_name():
    """A generated module's lines go when its code is collected, but not its name:
    ``linecache.checkcache`` lists the names first and looks each one up after, and a
    collection (which runs the finalizer) can come in between."""
    import gc

    from gpugrad.compiler import listing

    name = listing.register("def f():\n    return 1", "test")
    fn = compile("def f():\n    return 1", name, "exec")
    ns: dict = {}
    exec(fn, ns)
    listing.forget(ns["f"], name)
    assert linecache.getlines(name)
    listed = list(linecache.cache)
    ns.clear()
    del fn
    gc.collect()
    for key in listed:  # what checkcache does after listing the names
        assert linecache.cache[key] is not None
    assert linecache.getlines(name) == []
    linecache.checkcache()
