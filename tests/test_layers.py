"""The layers hold: ``.importlinter``'s contract is kept, and no gpugrad module imports gpugrad
from inside a function (a lazy import is how an upward import hides; see docs/layers.md)."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gpugrad"

PENDING: dict = {}
"""(importer, imported) -> the function holding the import: known sites still to remove."""


def _lint(config: pathlib.Path) -> subprocess.CompletedProcess:
    code = "from importlinter.cli import lint_imports_command as c; c()"
    return subprocess.run(
        [sys.executable, "-c", code, "--no-cache", "--no-logo", str(config)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)


def _with_ignores(text: str, pairs: list) -> str:
    """``.importlinter`` with ``ignore_imports`` for ``pairs`` added to its layers contract."""
    if not pairs:
        return text
    lines = "".join(f"\n    {a} -> {b}" for a, b in pairs)
    head, sep, rest = text.partition("type = layers\n")
    assert sep, "the layers contract is missing from .importlinter"
    return f"{head}{sep}ignore_imports ={lines}\n{rest}"


def test_import_contract_is_kept(tmp_path):
    """lint-imports passes with only the PENDING upward imports ignored (and fails if one of
    those is gone, since import-linter refuses an ignore that matches nothing)."""
    upward = [pair for pair in PENDING if pair[1] == "gpugrad.optim"]
    config = tmp_path / "importlinter.ini"
    config.write_text(_with_ignores((ROOT / ".importlinter").read_text(), upward))
    run = _lint(config)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 kept, 0 broken" in run.stdout, run.stdout


def test_lint_imports_catches_an_upward_import(tmp_path):
    """The same check fails, naming the import, when a low layer imports a high one."""
    pkg = tmp_path / "layered"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("def f():\n    from . import high  # lazy, still counted\n")
    (pkg / "high.py").write_text("from . import low\n")
    config = tmp_path / "contract.ini"
    config.write_text("[importlinter]\nroot_package = layered\n\n[importlinter:contract:l]\n"
                      "name = layered\ntype = layers\ncontainers =\n    layered\n"
                      "layers =\n    high\n    low\n")
    code = (f"import sys; sys.path.insert(0, {str(tmp_path)!r}); "
            "from importlinter.cli import lint_imports_command as c; c()")
    run = subprocess.run([sys.executable, "-c", code, "--no-cache", "--no-logo", str(config)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert "layered.low -> layered.high" in run.stdout, run.stdout


def _module(path: pathlib.Path, base: pathlib.Path) -> str:
    parts = list(path.relative_to(base).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _target(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def function_level_imports(package: pathlib.Path = PACKAGE) -> list[tuple[str, str, str, int]]:
    """(module, imported gpugrad module, function, line) for each import of gpugrad inside
    a function body anywhere under ``package`` (a directory named gpugrad)."""
    found = []
    for path in sorted(package.rglob("*.py")):
        module = _module(path, package.parent)
        tree = ast.parse(path.read_text(), str(path))
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    targets = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    t = _target(module, node, path.name == "__init__.py")
                    targets = [f"{t}.{a.name}" for a in node.names] if not node.module else [t]
                else:
                    continue
                for t in targets:
                    if t == "gpugrad" or t.startswith("gpugrad."):
                        found.append((module, t, getattr(fn, "name", "<lambda>"), node.lineno))
    return sorted(set(found))


def test_no_gpugrad_import_inside_a_function():
    found = function_level_imports()
    known = {(m, t, f) for m, t, f, _ in found if PENDING.get((m, t)) == f}
    new = [f"{m}:{line} ({f}) imports {t}" for m, t, f, line in found if (m, t, f) not in known]
    assert not new, ("import it at module level if it is below, or have the higher layer "
                     "register what is needed (gpugrad.hooks): " + "; ".join(new))
    gone = {(m, t) for (m, t), f in PENDING.items()} - {(m, t) for m, t, _ in known}
    assert not gone, f"no longer imported inside a function: remove from PENDING: {gone}"


def test_the_ast_check_sees_lazy_imports(tmp_path):
    pkg = tmp_path / "gpugrad"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "m.py").write_text(
        "import numpy\n\n\ndef f():\n    import cupy\n    from ..graph import Symbol\n\n\n"
        "class C:\n    def g(self):\n        import gpugrad.optim\n")
    found = function_level_imports(pkg)
    assert [(m, t, f) for m, t, f, _ in found] == [
        ("gpugrad.sub.m", "gpugrad.graph", "f"), ("gpugrad.sub.m", "gpugrad.optim", "g")]

