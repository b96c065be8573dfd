"""The import graph stays one-way (ARCHITECTURE.md): db ← daemon ← web/scheduler ← __main__."""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
OURS = {"daemon", "db", "web", "scheduler", "sandbox"}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & OURS


def _package_imports(package: str, skip: tuple[str, ...] = ()) -> dict[str, set[str]]:
    return {
        str(path.relative_to(ROOT)): _imports(path)
        for path in (ROOT / package).rglob("*.py")
        if path.name not in skip
    }


@pytest.mark.parametrize(
    ("package", "forbidden", "skip"),
    [
        ("db", OURS - {"db"}, ()),
        ("web", {"scheduler", "sandbox"}, ()),
        ("scheduler", OURS - {"scheduler"}, ()),
        # Only the composition root wires the web layer and the scheduler, and starts the
        # sandbox's tools (the demo, the simulator) for its development commands.
        ("daemon", {"web", "scheduler", "sandbox"}, ("__main__.py",)),
    ],
)
def test_package_does_not_import(package, forbidden, skip):
    offenders = {
        module: names & forbidden
        for module, names in _package_imports(package, skip).items()
        if names & forbidden
    }
    assert offenders == {}


def test_the_product_loads_no_sandbox_code_to_serve():
    """`daemon/__main__.py` reaches the sandbox only inside the commands that need it: the
    modules it imports at load time (all of them, for `serve`) never name `sandbox`."""
    tree = ast.parse((ROOT / "daemon" / "__main__.py").read_text())
    top_level = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in tree.body
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    assert "sandbox" not in top_level


def _modules(path: Path) -> set[str]:
    """Every module a file imports, by its full dotted name."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            names.add(node.module)
    return names


def test_the_rules_are_pure_standard_library():
    """The access rules read no clock, database or network: the standard library and each
    other only, so that they are tested with plain values."""
    offenders = {}
    for path in (ROOT / "daemon" / "rules").rglob("*.py"):
        foreign = {
            name
            for name in _modules(path)
            if name.split(".")[0] not in sys.stdlib_module_names
            and not name.startswith("daemon.rules")
        }
        if foreign:
            offenders[path.name] = foreign
    assert offenders == {}


def test_setup_py_ships_every_package():
    """A subpackage missing from setup.py installs as a broken daemon."""
    shipped = ast.literal_eval(
        next(
            keyword.value
            for node in ast.walk(ast.parse((ROOT / "setup.py").read_text()))
            if isinstance(node, ast.Call)
            for keyword in node.keywords
            if keyword.arg == "packages"
        )
    )
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in OURS
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert set(shipped) == found
