"""The layers import one way (DESIGN.md "Layout and data flow"), checked statically.

Every ``import`` and ``from ... import`` in every module of the four packages is read from
its AST, lazy imports inside functions included: a lazy import is still a dependency, it
only fails later, on a user's machine instead of here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package -> top-level modules it must never import
FORBIDDEN = {
    "model_repo": {"gateway", "trainer", "converters"},
    "converters": {"gateway", "trainer"},
    "gateway": {"trainer", "converters", "tensorflow", "horovod", "keras", "tf2onnx"},
    "trainer": {"gateway", "aiohttp"},
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) for every import in ``path``; relative imports are resolved
    against the module's own package path."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = list(path.relative_to(ROOT).parent.parts)  # relative imports start from the package
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.append((node.lineno, name))
    return out


def violations(package: str) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, module in imported_modules(path):
            top = module.split(".", 1)[0]
            if top in FORBIDDEN[package]:
                found.append(f"{path.relative_to(ROOT)}:{line}: imports {module}")
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_run_one_way(package):
    assert violations(package) == []


def test_the_checker_sees_relative_and_lazy_imports():
    # A guard against a checker that passes because it reads nothing.
    assert any(m == "gateway.jobs.launcher" for _, m in imported_modules(ROOT / "gateway/jobs/manager.py"))
    assert any(m == "gateway.rest_loop" for _, m in imported_modules(ROOT / "gateway/loop.py"))  # in setup_loop
