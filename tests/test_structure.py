"""The runtime's shape, kept where a change can see it: no class over 300 lines, no function
over 80, and no import cycle between livegen's modules (imports inside functions count)."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "livegen"
MAX_CLASS, MAX_FUNCTION = 300, 80


def modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(path.read_text(), str(path))
    return out


def imports(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """The livegen modules `name` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(tree):     # (livegen writes its imports absolute)
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in known and t != name}
    return found


def test_no_class_or_function_is_too_long():
    long = []
    for name, tree in modules().items():
        for node in ast.walk(tree):
            limit = MAX_CLASS if isinstance(node, ast.ClassDef) else \
                MAX_FUNCTION if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else None
            if limit and node.end_lineno - node.lineno + 1 > limit:
                long.append(f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines (at most {limit})")
    assert not long, long


def test_no_import_cycle_between_livegen_modules():
    trees = modules()
    graph = {name: imports(name, tree, set(trees)) for name, tree in trees.items()}
    cycles = []

    def visit(node, path):
        for nxt in graph[node]:
            if nxt == path[0]:
                cycles.append(" -> ".join(path + [nxt]))
            elif nxt not in path and len(path) < 12:
                visit(nxt, path + [nxt])

    for name in graph:
        # a package imports its own modules to export them; that is not a cycle
        graph[name] = {m for m in graph[name] if not m.startswith(name + ".")}
    for name in graph:
        visit(name, [name])
    assert not cycles, cycles[:5]


def test_the_check_sees_a_cycle():
    """(the check above can fail: two modules importing each other, one inside a function)"""
    a = ast.parse("import x.b\n")
    b = ast.parse("def f():\n    from x.a import g\n")
    known = {"x.a", "x.b"}
    assert imports("x.a", a, known) == {"x.b"} and imports("x.b", b, known) == {"x.a"}
