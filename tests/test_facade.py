"""The package's front door: `import tamalloc` loads only the version, and every
public name comes from the module that defines it on first use."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import tamalloc

INIT = Path(tamalloc.__file__)


def _type_checking_imports() -> dict[str, str]:
    """name -> module of the imports under ``if TYPE_CHECKING:`` in __init__.py."""
    tree = ast.parse(INIT.read_text(encoding="utf-8"))
    block = next(
        node
        for node in tree.body
        if isinstance(node, ast.If)
        and isinstance(node.test, ast.Name)
        and node.test.id == "TYPE_CHECKING"
    )
    return {
        alias.asname or alias.name: node.module or ""
        for node in block.body
        if isinstance(node, ast.ImportFrom) and node.level == 1
        for alias in node.names
    }


def test_all_the_table_and_the_typed_imports_agree() -> None:
    exports = tamalloc._EXPORTS
    assert sorted(tamalloc.__all__) == sorted(["__version__", *exports])
    assert _type_checking_imports() == exports


def test_every_public_name_is_the_defining_modules() -> None:
    for name, module in tamalloc._EXPORTS.items():
        defining = __import__(f"tamalloc.{module}", fromlist=[name])
        assert getattr(tamalloc, name) is getattr(defining, name), name
    assert set(tamalloc.__all__) <= set(dir(tamalloc))


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        tamalloc.no_such_name  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as err:
        assert "no_such_name" in str(err)
    else:
        raise AssertionError("no AttributeError")


def test_import_tamalloc_loads_only_the_version() -> None:
    code = (
        "import json, sys\n"
        "before = set(sys.modules)\n"
        "import tamalloc\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out) == ["__future__", "tamalloc", "tamalloc._version"]


def test_the_submodules_import_tamalloc_loaded_are_still_attributes() -> None:
    code = (
        "import tamalloc\n"
        "assert tamalloc.stats.pid_max() > 0\n"
        "assert tamalloc.models.MemStats is tamalloc.MemStats\n"
        "assert tamalloc.backends.get_backend is tamalloc.get_backend\n"
        "assert tamalloc.errors.TamallocError is tamalloc.TamallocError\n"
        "assert tamalloc.sizes.parse_size('1k') == 1024\n"
        "assert tamalloc.process_visibility.Visibility is tamalloc.Visibility\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
