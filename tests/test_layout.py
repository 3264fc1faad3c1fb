"""The layout of the test suite: test modules never import other test modules.

Shared helpers live in conftest.py or in plain helper modules (not named test_*): importing a test module from
another runs its module-level code twice under two names and hides what is a test and what is a helper.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def imported_modules(tree: ast.AST) -> list[str]:
    """Every module an `import` or `from ... import` statement names, anywhere in the tree (`from a import b`
    names both `a` and `a.b`, since `b` may be a module; relative imports keep their leading dots)."""
    modules: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            package = "." * node.level + (node.module or "")
            if node.module:
                modules.append(package)
            modules.extend(f"{package.rstrip('.')}.{alias.name}".lstrip(".") for alias in node.names)
    return modules


def test_no_test_module_imports_another_test_module() -> None:
    offenders = []
    for path in sorted(TESTS.rglob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for module in imported_modules(tree):
            if module.rsplit(".", 1)[-1].startswith("test_"):
                offenders.append(f"{path.relative_to(TESTS.parent)} imports {module}")
    assert not offenders, "test modules must not import test modules (move the helpers out):\n" + "\n".join(
        offenders
    )
