"""Who may import whom (DESIGN.md), checked on the source: every module of trainer/, data_pipeline/
and eval/ is parsed with `ast`, and its imports, at module level and inside functions alike, make the
project's import graph."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("trainer", "data_pipeline", "eval")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imported_names(path: Path, name: str) -> set[str]:
    """Every module name an import statement anywhere in the file names, relative imports resolved;
    `from a import b` names both a and a.b (b may be a submodule)."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[:len(base) - node.level + (1 if is_package else 0)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{alias.name}" for alias in node.names)
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (a module's import of a.b.c also runs a and a.b)."""
    modules = project_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for imported in imported_names(path, name):
            parts = imported.split(".")
            edges.update(".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in modules)
        edges.discard(name)
        # a package's own __init__ runs before its submodules, so it is no edge of its submodules' making
        graph[name] = {m for m in edges if not name.startswith(m + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


GRAPH = import_graph()


def _offenders(allowed, forbidden) -> list[str]:
    return sorted(f"{m} imports {t}" for m, targets in GRAPH.items() if not allowed(m)
                  for t in targets if forbidden(t))


def test_graph_sees_function_level_and_relative_imports(tmp_path):
    """The checks below can fail: a function-local import and a relative one are edges."""
    src = tmp_path / "mod.py"
    src.write_text("from .errors import IngestError\n\ndef f():\n    from eval.cli import x\n    import trainer.cli\n")
    names = imported_names(src, "data_pipeline.mod")
    assert {"data_pipeline.errors", "eval.cli.x", "trainer.cli"} <= names
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_covers_the_packages():
    assert {"trainer.cli", "trainer.cli.run", "trainer.round", "eval.evaluator", "data_pipeline.store"} <= set(GRAPH)
    assert "eval.checkpoints" in GRAPH["trainer.round"] and "trainer.round" in GRAPH["trainer.cli.train"]


def test_no_import_cycle():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_only_the_cli_imports_the_cli():
    assert _offenders(lambda m: m == "trainer.cli" or m.startswith("trainer.cli."),
                      lambda t: t == "trainer.cli" or t.startswith("trainer.cli.")) == []


def test_data_pipeline_is_the_ground_floor():
    assert _offenders(lambda m: not m.startswith("data_pipeline"),
                      lambda t: t.startswith(("trainer", "eval"))) == []


def test_eval_never_imports_trainer():
    assert _offenders(lambda m: not m.startswith("eval"), lambda t: t.startswith("trainer")) == []


@pytest.mark.parametrize("pkg", PACKAGES)
def test_argparse_only_in_the_cli(pkg):
    users = [name for name, path in project_modules().items() if name.startswith(pkg)
             and "argparse" in imported_names(path, name)]
    assert [u for u in users if not (u == "trainer.cli" or u.startswith("trainer.cli."))] == []
