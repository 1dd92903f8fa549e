"""The package's shape: no import circle among its modules, the bench harness off the
command line's import path."""

import ast
import pathlib
import subprocess
import sys

import fastrnn
from helpers import OUTSIDE_REPO

PACKAGE_DIR = pathlib.Path(fastrnn.__file__).resolve().parent


def module_name(path):
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path, modules, *, deferred=False):
    """The fastrnn modules that `path` imports when it is itself imported.

    An import under a module-level `if` or `try` counts; with `deferred`, so do
    those inside functions and classes, which run later.
    """
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()

    def visit(statements):
        for node in statements:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                # `from . import x` imports the submodule x where there is one; a
                # name that is no submodule is read from the module `base` itself
                names = {f"{base}.{alias.name}" for alias in node.names}
                found.update(names)
                if not names <= modules:
                    found.add(base)
            elif deferred or isinstance(node, (ast.If, ast.Try)):
                for field in ("body", "orelse", "finalbody", "handlers"):
                    block = getattr(node, field, None)
                    if isinstance(block, list):
                        visit(block)

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return {other for other in found if other in modules and other != name}


def import_graph(*, deferred=False):
    """{module: the fastrnn modules it imports} for every module of the package."""
    paths = sorted(PACKAGE_DIR.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    return {module_name(path): imports_of(path, modules, deferred=deferred) for path in paths}


def find_cycle(graph):
    """One import circle as a list of modules [a, b, ..., a], or None."""
    done, path = set(), []

    def walk(module):
        if module in path:
            return path[path.index(module):] + [module]
        if module in done:
            return None
        path.append(module)
        for other in sorted(graph[module]):
            cycle = walk(other)
            if cycle:
                return cycle
        path.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        cycle = walk(module)
        if cycle:
            return cycle
    return None


def test_the_import_graph_is_read_from_every_module():
    graph = import_graph()
    assert {"fastrnn", "fastrnn.model", "fastrnn.checkpoint", "fastrnn.cli"} <= set(graph)
    assert "fastrnn.checkpoint" in graph["fastrnn.model"]
    assert "fastrnn.model" not in graph["fastrnn.cli"]                 # imported in a function
    assert "fastrnn.model" in import_graph(deferred=True)["fastrnn.cli"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_module_of_the_package_imports_itself_in_a_circle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_no_two_modules_import_each_other_even_inside_functions():
    """A circle hidden in a function is still two modules that each need the other.

    The package's __init__ re-exports the API, so submodules may read names from it.
    """
    graph = import_graph(deferred=True)
    pairs = sorted((a, b) for a in graph for b in graph[a]
                   if a < b and a in graph[b] and "fastrnn" not in (a, b))
    assert not pairs, f"modules that import each other: {pairs}"


def modules_loaded_by(code):
    """The fastrnn modules a fresh interpreter holds after running `code`."""
    probe = code + "\nimport sys\nprint(*(m for m in sys.modules if m.startswith('fastrnn')))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          cwd=OUTSIDE_REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.splitlines()[-1].split())


def test_importing_the_command_line_leaves_the_bench_harness_out():
    loaded = modules_loaded_by("import fastrnn.cli")
    assert "fastrnn.cli" in loaded
    assert "fastrnn.bench" not in loaded


def test_a_command_other_than_bench_leaves_the_bench_harness_out():
    loaded = modules_loaded_by("import fastrnn.cli\nfastrnn.cli.main(['info', '--json'])")
    assert "fastrnn.bench" not in loaded


def test_fastrnn_and_its_layers_run_without_importing_torch():
    """torch is an optional dependency: only fastrnn.torch (and the bench) import it."""
    probe = ("import sys, numpy as np, fastrnn\n"
             "layer = fastrnn.GRU(3, 4, 2, bidirectional=True)\n"
             "layer.forward(np.ones((2, 5, 3), np.float32))\n"
             "layer.backward(np.ones((2, 5, 8), np.float32))\n"
             "import fastrnn.cli\n"
             "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          cwd=OUTSIDE_REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False"]


def test_only_fastrnn_torch_and_the_bench_import_torch():
    importers = set()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) \
                else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level \
                else []
            if any(name == "torch" or name.startswith("torch.") for name in names):
                importers.add(module_name(path))
    assert importers, "no module imports torch: the search finds nothing"
    assert all(name.startswith(("fastrnn.torch", "fastrnn.bench")) for name in importers), \
        importers
