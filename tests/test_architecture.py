"""The dependency rules of DESIGN.md, enforced: a layering violation fails the suite."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "src" / "dlforge"


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def modules_under(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py")) if folder else sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize(("folder", "forbidden"), [
    ("train", "dlforge.serve"), ("serve", "dlforge.train"), ("nn", "dlforge.train"), ("data", "dlforge.train"),
    ("config", "dlforge.nn"), ("config", "dlforge.data"), ("export", "dlforge.train"), ("export", "dlforge.serve"),
])
def test_layers_never_import_upwards(folder: str, forbidden: str) -> None:
    for path in modules_under(folder):
        bad = [m for m in imports_of(path) if m == forbidden or m.startswith(forbidden + ".")]
        assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"


def runtime_imports_of(path: Path) -> set[str]:
    """Imports outside `if TYPE_CHECKING:` blocks (type hints may name any layer)."""
    tree = ast.parse(path.read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
            for child in node.body for n in ast.walk(child)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("forbidden", ["dlforge.train", "dlforge.serve.app", "dlforge.serve.routes", "dlforge.cli"])
def test_tasks_sit_below_train_and_serve(forbidden: str) -> None:
    for path in modules_under("tasks"):
        bad = [m for m in runtime_imports_of(path) if m == forbidden or m.startswith(forbidden + ".")]
        assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"


def test_nothing_imports_the_cli() -> None:
    for path in modules_under(""):
        if path.name not in {"cli.py", "__main__.py"}:
            assert "dlforge.cli" not in imports_of(path), path


def test_only_dist_py_touches_torch_distributed() -> None:
    for path in modules_under(""):
        uses = [m for m in imports_of(path) if m.startswith("torch.distributed")]
        if path.relative_to(PACKAGE).as_posix() != "train/dist.py":
            assert not uses, f"{path.relative_to(PACKAGE)} imports {uses}"
