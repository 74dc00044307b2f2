"""The package's structure rules of issue 12, read from the source (no imports run).

- No private helper is imported across modules: a name starting with "_" imported from
  another gflow module must be a module itself (gflow's modules are private by name; the
  functions one module lends another are public within the package).
- No import cycle among gflow's modules at module level (imports inside functions are
  deferred on purpose, e.g. to keep `import gflow` light, and are not edges).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "gflow"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in ROOT.rglob("*.py")}


def _package(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rsplit(".", 1)[0]


def _imports(name: str, path: Path, top_level_only: bool):
    """(line, target module, imported names) of every `from gflow... import` in `path`."""
    tree = ast.parse(path.read_text())
    if top_level_only:
        nodes = []
        for node in tree.body:  # module level, including inside if/try blocks
            if isinstance(node, ast.If | ast.Try):
                nodes.extend(ast.walk(node))
            else:
                nodes.append(node)
    else:
        nodes = list(ast.walk(tree))
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = _package(name, path).split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").split(".")[0] == "gflow":
                target = node.module
            else:
                continue
            yield node.lineno, target, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "gflow":
                    yield node.lineno, a.name, []


def test_the_source_tree_is_found():
    assert "gflow._flow._simulate" in MODULES and len(MODULES) > 50


def test_no_private_helper_is_imported_across_modules():
    found = []
    for name, path in MODULES.items():
        for line, target, names in _imports(name, path, top_level_only=False):
            for n in names:
                if n.startswith("_") and not n.startswith("__") and f"{target}.{n}" not in MODULES:
                    where = f"{path.relative_to(ROOT.parent)}:{line}"
                    found.append(f"{where} imports {n} from {target}")
    assert not found, "private helpers imported across modules:\n" + "\n".join(found)


def test_no_import_cycle_at_module_level():
    graph = {}
    for name, path in MODULES.items():
        deps = set()
        for _, target, names in _imports(name, path, top_level_only=True):
            for n in names or [None]:
                sub = f"{target}.{n}" if n else None
                deps.add(sub if sub in MODULES else target)
        graph[name] = {d for d in deps if d in MODULES and d != name}

    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(u: str) -> None:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                cycles.append(stack[stack.index(v) :] + [v])
            elif v not in state:
                visit(v)
        stack.pop()
        state[u] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)
