"""outbound is the ground: it imports the standard library, httpx and Django's settings,
and nothing of ours, so every part of the project may use it."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "outbound"
ALLOWED = {"httpx", "django.conf", "outbound"}


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.add(node.module)
    return found


def test_outbound_imports_nothing_of_ours():
    modules = sorted(PACKAGE.glob("*.py"))
    assert modules
    for path in modules:
        for name in imports(path):
            top = name.split(".")[0]
            allowed = (top in sys.stdlib_module_names or top == "__future__"
                       or any(name == a or name.startswith(a + ".") for a in ALLOWED))
            assert allowed, f"{path.name} imports {name}"
