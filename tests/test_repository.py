"""The repository's promises about itself: CI runs exactly the README's test command."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    test_command = next(line for line in ci_lines if "pytest" in line)
    assert test_command in readme
    assert readme.index(test_command) < readme.index("jitnet is a JIT"), "the command opens the README"


def _imports(package: str) -> dict[str, set[str]]:
    """module -> the modules of `package` it imports (at any depth: function-level imports count)."""
    import ast

    modules = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's package
                    anchor = name.split(".")[: len(name.split(".")) - node.level + is_package]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            found |= {t for t in targets if t in modules and t != name}
        graph[name] = found
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path + [node, nxt]
            if nxt not in state and (found := visit(nxt, path + [node])):
                return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node, [])):
            return found[found.index(found[-1]) :]
    return None


def test_no_import_cycles():
    """No module imports, directly or through others, a module that imports it back (package
    __init__ files count as the package)."""
    for package in ("jitnet", "bench"):
        assert _cycle(_imports(package)) is None, f"import cycle in {package}: {' -> '.join(_cycle(_imports(package)))}"


def test_only_the_registry_names_a_backend():
    """Outside a backend's own package, only the registry (jitnet/backends/__init__.py) imports it:
    the compiler, the fuser and the runtime ask the registered Backend object."""
    graph = _imports("jitnet")
    for module, imported in graph.items():
        for target in imported:
            parts = target.split(".")
            if len(parts) >= 3 and parts[:2] == ["jitnet", "backends"]:
                owner = ".".join(parts[:3])
                assert module == owner or module.startswith(owner + ".") or module == "jitnet.backends.interpret", (
                    f"{module} imports {target}"
                )


def test_ci_names_only_test_files_that_exist():
    """A renamed test module must not silently drop out of CI's checked-mode run (pytest exits 4)."""
    import re

    named = re.findall(r"tests/[\w/]+\.py", (ROOT / ".ci" / "run").read_text())
    assert named and all((ROOT / path).is_file() for path in named), [p for p in named if not (ROOT / p).is_file()]
