"""The house's shape: no import cycles between the package's modules, short functions, and the CLI's --help and
`info` on a dataset do not import torch."""
import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "discodance"


def _module_name(path: Path) -> str:
    parts = ["discodance", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """The package modules `path` imports at module level (imports inside functions are lazy by
    design and do not make a cycle at import time)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rsplit(".", 1)[0]
            target = (f"{base}.{node.module}" if node.module else base) if node.level else (node.module or "")
            candidates = [target] + [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        else:
            continue
        found |= {c for c in candidates if c in modules and c != name}
    return found


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: _top_level_imports(path, name, set(files)) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_of_the_package_is_in_an_import_cycle():
    graph = import_graph()
    assert len(graph) > 30 and "discodance.train" in graph
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_every_module_imports_in_a_fresh_interpreter():
    names = sorted(import_graph())
    code = "import importlib, sys\nfor n in sys.argv[1:]:\n    importlib.import_module(n)\n"
    done = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr.strip().splitlines()[-1:]


def test_help_and_dataset_info_do_not_import_torch(tmp_path):
    from discodance.data.writer import write_dataset
    import numpy as np
    data = write_dataset(tmp_path / "d", np.zeros((20, 8, 8), np.uint8), fps=24, source="test")
    probe = ("import sys\nfrom discodance.cli import main\ncode = main(sys.argv[1:])\n"
             "assert 'torch' not in sys.modules, 'torch was imported'\n")
    for argv in (["--help"], ["train", "--help"], ["info", str(data)]):
        done = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True)
        assert done.returncode == 0 and "torch was imported" not in done.stderr, (argv, done.stderr)


def test_no_function_is_longer_than_sixty_lines():
    """Short functions that read top to bottom; the argparse builder is the one list allowed to be long."""
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name != "build_parser":
                if node.end_lineno - node.lineno + 1 > 60:
                    long.append(f"{path.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, long


def test_every_benchmark_imports_names_that_exist():
    """Benchmarks are not run by the suite; a moved helper must not break them silently."""
    import importlib
    import importlib.util
    missing = []
    for path in sorted((PACKAGE.parents[1] / "benchmarks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("discodance"):
                module = importlib.import_module(node.module)
                missing += [f"{path.name}: {node.module}.{a.name}" for a in node.names if not hasattr(module, a.name)
                            and importlib.util.find_spec(f"{node.module}.{a.name}") is None]
    assert not missing, missing
