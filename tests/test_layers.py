"""The package's import layers (docs/architecture.md): every import in src/tamalloc,
at module level or inside a function, points to a module of the same layer or of a
lower one, and the import graph has no cycle.

The edge is the import statement itself: importing tamalloc.a.b also runs
tamalloc/__init__ and tamalloc/a/__init__, but that is Python loading a package, not a
dependency of the importing module."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "tamalloc"

# Lower numbers sit lower: a module may import its own layer and those below it.
BASE, SOURCES, MODEL, FRONT = 0, 1, 2, 3
LAYER_NAMES = {BASE: "base", SOURCES: "data sources", MODEL: "model", FRONT: "front ends"}
LAYERS = {
    # records, errors, sizes, the ABI, libc and the kernel's arithmetic: no I/O
    "tamalloc._version": BASE,
    "tamalloc._libc": BASE,
    "tamalloc._mapping": BASE,
    "tamalloc.abi": BASE,
    "tamalloc.errors": BASE,
    "tamalloc.models": BASE,
    "tamalloc.oom_score": BASE,
    "tamalloc.sizes": BASE,
    # what reads the kernel: syscalls, /proc, cgroupfs
    "tamalloc.backends": SOURCES,
    "tamalloc.backends._procscan": SOURCES,
    "tamalloc.backends.base": SOURCES,
    "tamalloc.backends.bpf": SOURCES,
    "tamalloc.backends._bpfiter": SOURCES,
    "tamalloc.backends.kernel": SOURCES,
    "tamalloc.backends.procfs": SOURCES,
    "tamalloc.cgroupfs": SOURCES,
    "tamalloc.oom_inputs": SOURCES,
    "tamalloc.process_visibility": SOURCES,
    "tamalloc.system": SOURCES,
    # the public API over the sources
    "tamalloc.buffer": MODEL,
    "tamalloc.forecast": MODEL,
    "tamalloc.oom": MODEL,
    "tamalloc.stats": MODEL,
    # what people and Prometheus call
    "tamalloc": FRONT,
    "tamalloc.__main__": FRONT,
    "tamalloc.cli": FRONT,
    "tamalloc.cli.commands": FRONT,
    "tamalloc.cli.demo": FRONT,
    "tamalloc.cli.env": FRONT,
    "tamalloc.cli.exporter": FRONT,
    "tamalloc.cli.main": FRONT,
    "tamalloc.cli.oom": FRONT,
    "tamalloc.cli.output": FRONT,
    "tamalloc.cli.stats": FRONT,
    "tamalloc.cli.system": FRONT,
    "tamalloc.cli.total": FRONT,
    "tamalloc.cli.watch": FRONT,
    "tamalloc.exporter": FRONT,
    "tamalloc.exporter.collector": FRONT,
    "tamalloc.exporter.limits": FRONT,
    "tamalloc.exporter.server": FRONT,
    "tamalloc.exporter.service": FRONT,
    "tamalloc.exporter.textfile": FRONT,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    """Every module of the package: its .py files and its C extensions, each by the
    source of its PyInit_ function, in the package of the nearest directory above it
    with an __init__.py (an extension's sources may sit in a directory of their own)."""
    found = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    for c in PACKAGE.rglob("*.c"):
        init = re.search(r"^PyMODINIT_FUNC\s+PyInit_(\w+)", c.read_text(encoding="utf-8"), re.M)
        if init is None:
            continue
        package = c.parent
        while not (package / "__init__.py").exists():
            package = package.parent
        found.setdefault(f"{_module_name(package / '__init__.py')}.{init[1]}", c)
    return found


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``name`` imports, wherever the import statement is
    (module level, a function, ``if TYPE_CHECKING``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            if node.level:
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            # `from pkg import sub` imports the submodule; `from pkg import name`, pkg.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            if target == "tamalloc" or target.startswith("tamalloc."):
                # `import tamalloc.a.b` names tamalloc.a.b; the longest known prefix
                # catches an attribute-like tail.
                while target not in modules and "." in target:
                    target = target.rpartition(".")[0]
                found.add(target)
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    names = set(modules)
    return {
        name: imports_of(name, path, names) if path.suffix == ".py" else set()
        for name, path in modules.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_every_module_has_a_layer() -> None:
    modules = set(_modules())
    assert sorted(modules - set(LAYERS)) == [], "add them to LAYERS (and the doc)"
    assert sorted(set(LAYERS) - modules) == [], "gone: drop them from LAYERS"


def test_imports_point_down_the_layers() -> None:
    upward = [
        f"{name} ({LAYER_NAMES[LAYERS[name]]}) imports {target} ({LAYER_NAMES[LAYERS[target]]})"
        for name, targets in sorted(import_graph().items())
        for target in sorted(targets)
        if name in LAYERS and target in LAYERS and LAYERS[target] > LAYERS[name]
    ]
    assert upward == []


def test_the_import_graph_has_no_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or ())


def test_the_checks_see_function_level_imports_and_cycles(tmp_path: Path) -> None:
    """The parser and the cycle search on a made-up package: an import inside a
    function counts, and a circle of three is found."""
    pkg = tmp_path / "tamalloc"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def f():\n    from .sub import c\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("import tamalloc.a\nfrom ..a import x\n")
    names = {"tamalloc", "tamalloc.a", "tamalloc.b", "tamalloc.sub", "tamalloc.sub.c"}
    graph = {
        "tamalloc.a": imports_of("tamalloc.a", pkg / "a.py", names),
        "tamalloc.b": imports_of("tamalloc.b", pkg / "b.py", names),
        "tamalloc.sub.c": imports_of("tamalloc.sub.c", pkg / "sub" / "c.py", names),
    }
    assert graph == {
        "tamalloc.a": {"tamalloc.b"},
        "tamalloc.b": {"tamalloc.sub.c"},
        "tamalloc.sub.c": {"tamalloc.a"},
    }
    assert find_cycle(graph) == ["tamalloc.a", "tamalloc.b", "tamalloc.sub.c", "tamalloc.a"]


# What running one command imports: the child prints sys.modules once it is done.
_COMMAND_CHILD = """
import io, sys
from tamalloc.cli.env import Environment
from tamalloc.cli.main import main
env = Environment(stdout=io.StringIO(), stderr=io.StringIO(), stdout_isatty=False)
status = main(sys.argv[1:], env)
print(repr((status, sorted(sys.modules))))
"""

# The other commands' code, and what only they need.
_NOT_FOR_STATS = {
    "tamalloc.buffer",
    "tamalloc.cli.demo",
    "tamalloc.cli.exporter",
    "tamalloc.cli.oom",
    "tamalloc.cli.system",
    "tamalloc.cli.total",
    "tamalloc.cli.watch",
    "tamalloc.exporter.collector",
    "tamalloc.exporter.server",
    "tamalloc.exporter.service",
    "tamalloc.exporter.textfile",
    "tamalloc.oom",
    "tamalloc.oom_inputs",
    # the standard library's that the piped table needs none of (dataclasses loads
    # inspect, ast and dis; argparse's help formatter shutil and the compression modules)
    "csv",
    "dataclasses",
    "inspect",
    "json",
    "shutil",
    "socket",
    "rich",
}


def _modules_after(*argv: str) -> tuple[int, set[str]]:
    out = subprocess.run(
        [sys.executable, "-c", _COMMAND_CHILD, *argv], capture_output=True, text=True, check=True
    ).stdout
    status, modules = ast.literal_eval(out)
    return status, set(modules)


def test_a_command_loads_its_own_module_and_not_the_others() -> None:
    """The options of every command are in cli.commands; `tamalloc stats` then imports
    the stats command's code and not the exporter's server, the OOM model or the other
    commands (the start-up of every command: bench/bench_startup.py)."""
    for argv in (["stats"], ["stats", "1", "--csv"], ["stats", "--json"]):
        status, modules = _modules_after(*argv)
        assert status == 0, argv
        assert "tamalloc.cli.stats" in modules, argv
        wanted = {"csv"} if "--csv" in argv else {"json"} if "--json" in argv else set()
        assert sorted(modules & (_NOT_FOR_STATS - wanted)) == [], argv
    status, modules = _modules_after("--help")
    assert status == 0
    assert sorted(m for m in modules if m.startswith("tamalloc.cli.")) == [
        "tamalloc.cli.commands",
        "tamalloc.cli.env",
        "tamalloc.cli.main",
        "tamalloc.cli.output",
    ]
