"""The layers import one way, and the gateway's rooms too (docs/architecture.md), checked
statically.

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


# gateway room -> gateway rooms and libraries it must never import (a room is a sub-package,
# or server.py, the composition root). No room imports a front end but the front end itself.
ROOMS = {
    "core": {"gateway.http", "gateway.grpc", "gateway.loop", "gateway.server", "aiohttp", "grpc"},
    "runtime": {"gateway.http", "gateway.grpc", "gateway.loop", "gateway.server", "grpc"},
    "loop": {"gateway.http", "gateway.grpc", "gateway.server", "aiohttp", "grpc"},
    "server.py": {"gateway.http", "gateway.grpc", "aiohttp", "grpc"},
    "http": {"gateway.grpc", "grpc"},
    "grpc": {"gateway.http", "aiohttp"},
    # The --workers supervisor starts processes; it serves nothing and loads nothing itself.
    "workers.py": {"gateway.http", "gateway.grpc", "gateway.loop", "gateway.server", "gateway.core.registry",
                   "aiohttp", "grpc", "onnxruntime"},
    "sockets.py": {"gateway.http", "gateway.grpc", "gateway.loop", "gateway.server", "aiohttp", "grpc"},
}


def room_violations(room: str) -> list[str]:
    paths = [ROOT / "gateway" / room] if room.endswith(".py") else sorted((ROOT / "gateway" / room).rglob("*.py"))
    found = []
    for path in paths:
        for line, module in imported_modules(path):
            if any(module == banned or module.startswith(banned + ".") for banned in ROOMS[room]):
                found.append(f"{path.relative_to(ROOT)}:{line}: imports {module}")
    return found


@pytest.mark.parametrize("room", sorted(ROOMS))
def test_gateway_rooms_import_one_way(room):
    assert room_violations(room) == []


def _module_graph() -> dict[str, set[str]]:
    """gateway module -> the gateway modules it imports (a name that is not a module, such
    as ``from .x import y`` where y is a function, counts as its module)."""
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
               for p in (ROOT / "gateway").rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for _, module in imported_modules(path):
            while module and module not in modules:
                module = module.rpartition(".")[0]
            if module.startswith("gateway") and module != name:
                targets.add(module)
        graph[name] = targets
    return graph


def test_no_import_cycles_inside_the_gateway():
    graph = _module_graph()
    cycles = []
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            node, trail = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start and nxt != "gateway":  # the package's __init__ holds only the version
                    cycles.append(" -> ".join(trail + [start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, trail + [nxt]))
    assert cycles == []


def test_the_checker_sees_relative_and_lazy_imports():
    # A guard against a checker that passes because it reads nothing.
    assert any(m == "gateway.loop.jobs.launcher"
               for _, m in imported_modules(ROOT / "gateway/loop/jobs/manager.py"))
    assert any(m == "gateway.loop.jobs.kubernetes"
               for _, m in imported_modules(ROOT / "gateway/loop/wiring.py"))  # lazy, in make_launcher
    assert "gateway.core.registry" in _module_graph()["gateway.loop.canary"]
