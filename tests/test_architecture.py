"""The import graph stays one-way (ARCHITECTURE.md): db ← daemon ← web/scheduler ← __main__."""

import ast
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
