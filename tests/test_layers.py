"""Dependency direction (DESIGN sec 5 item 4, issue #20): the import-linter layers contract in pyproject.toml is
kept, and no module of causalrep imports inside a function, except the optional packages allowed below."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "causalrep"

# in-function imports that are allowed: module (or a parent of it) -> why it is imported only when needed
ALLOWED = {
    "aim": "the optional Aim backend (track/aim.py): importing causalrep must never need aim",
    "torch.nn.parallel": "DistributedDataParallel, built only for a run under torchrun (train/trainer.py)",
}


def test_layers_contract_is_kept():
    """lint-imports (import-linter, the contract in pyproject.toml) on this checkout's causalrep; it puts the
    working directory first on sys.path, so ROOT's package is the one analysed."""
    cmd = [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()",
           "--no-cache"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert "Contracts: 1 kept, 0 broken." in res.stdout and res.returncode == 0, \
        f"lint-imports exited {res.returncode}:\n{res.stdout}\n{res.stderr}"


def _target(node: ast.Import | ast.ImportFrom) -> list[str]:
    """The absolute names an import statement brings in; relative imports keep their leading dots."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.module is None:  # from . import x
        return ["." * node.level + a.name for a in node.names]
    return ["." * node.level + node.module]


def _allowed(name: str) -> str | None:
    return next((a for a in ALLOWED if name == a or name.startswith(a + ".")), None)


def in_function_imports(package: Path = PACKAGE) -> list[tuple[str, int, str]]:
    """(file, line, imported name) of every import statement inside a function body in the package, and of every
    dynamic import (importlib.import_module, __import__) anywhere in it."""
    found = []
    for path in sorted(package.rglob("*.py")):
        rel = str(path.relative_to(package.parent))
        tree = ast.parse(path.read_text(), filename=rel)
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                for node in ast.walk(fn):
                    if isinstance(node, (ast.Import, ast.ImportFrom)):
                        found += [(rel, node.lineno, name) for name in _target(node)]
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                f = node.func
                if (isinstance(f, ast.Name) and f.id == "__import__") or \
                        (isinstance(f, ast.Attribute) and f.attr == "import_module"):
                    found.append((rel, node.lineno, "<dynamic import>"))
    return sorted(set(found))  # a function nested in a function is walked twice


def test_no_imports_inside_functions_but_the_optional_packages():
    found = in_function_imports()
    bad = [f"{rel}:{line}: {name}" for rel, line, name in found if _allowed(name) is None]
    assert not bad, ("imports inside functions (move them to the top of the module; an upward import means the "
                     "code belongs in a higher layer, see pyproject.toml's [tool.importlinter]):\n" + "\n".join(bad)
                     + f"\nallowed in a function: {', '.join(ALLOWED)}")
    used = {_allowed(name) for _, _, name in found}
    assert used == set(ALLOWED), f"allowed but no longer imported in a function: {set(ALLOWED) - used}"


def test_the_checker_sees_an_import_inside_a_method(tmp_path):
    """The AST walk finds an import in a method and a dynamic import, not one at module level."""
    pkg = tmp_path / "causalrep"
    pkg.mkdir()
    (pkg / "m.py").write_text("import os\n\nclass A:\n    def f(self):\n        from . import errors\n"
                              "        import aim\n\n\ndef g():\n    return __import__('json')\n")
    assert in_function_imports(pkg) == [("causalrep/m.py", 5, ".errors"), ("causalrep/m.py", 6, "aim"),
                                     ("causalrep/m.py", 10, "<dynamic import>")]
