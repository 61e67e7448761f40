"""The dependency rules of DESIGN.md, enforced: a layering violation fails the suite."""

import ast
import re
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


CONTRACT = PACKAGE / "taskapi.py"
LEAVES = {"dlforge.errors", "dlforge.registry", "dlforge.config", "dlforge.config.schema", "dlforge.data.splits",
          "dlforge.runinfo", "dlforge.serve.protocol", "dlforge.serve.tensors"}  # wire types and data facts, no stage


def test_the_task_contract_sits_below_every_stage() -> None:
    """#25: dlforge.taskapi is what stages ask of tasks; it imports (type-only included) no stage and no task."""
    found = {m for m in imports_of(CONTRACT) if m.startswith("dlforge")}
    assert found <= LEAVES, sorted(found - LEAVES)


def test_tasks_sit_above_every_stage() -> None:
    """No module outside dlforge/tasks imports a task, not even for a type: stages find tasks by name
    through the registry in dlforge.taskapi, so a third-party task is found the same way."""
    for path in modules_under(""):
        if path.relative_to(PACKAGE).parts[0] == "tasks":
            continue
        bad = [m for m in imports_of(path) if m == "dlforge.tasks" or m.startswith("dlforge.tasks.")]
        assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"


TASK_NAMES = re.compile(r'"(classification|seq2seq|gan|denoise)"|task (==|in) ')
STAGE_FILES = [*(p for folder in ("serve", "export", "train", "evaluate") for p in modules_under(folder)),
               *PACKAGE.glob("cli*.py")]


@pytest.mark.parametrize("path", STAGE_FILES, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_no_stage_branches_on_a_task_name(path: Path) -> None:
    """The grep of #25: a stage that names a task is a task's code in the wrong place. (`"classification"`
    beside `binary_tensor_data` is the V2 extension the server advertises, not our task.)"""
    hits = [f"{n}: {line.strip()}" for n, line in enumerate(path.read_text().splitlines(), 1)
            if TASK_NAMES.search(line) and "binary_tensor_data" not in line and not line.lstrip().startswith("#")]
    assert not hits, hits


def test_nothing_imports_the_cli() -> None:
    for path in modules_under(""):
        if path.name not in {"cli.py", "__main__.py"}:
            assert "dlforge.cli" not in imports_of(path), path


def test_only_dist_py_touches_torch_distributed() -> None:
    for path in modules_under(""):
        uses = [m for m in imports_of(path) if m.startswith("torch.distributed")]
        if path.relative_to(PACKAGE).as_posix() != "train/dist.py":
            assert not uses, f"{path.relative_to(PACKAGE)} imports {uses}"


def _import_cycles(folder: str) -> list[list[str]]:
    """Cycles among the modules of one folder (top-level and function-level imports alike)."""
    graph: dict[str, set[str]] = {}
    for path in modules_under(folder):
        name = "dlforge." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
        graph[name] = {m for m in imports_of(path) if m.startswith(f"dlforge.{folder}.")}
    cycles = []

    def walk(node: str, trail: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt in trail:
                cycles.append([*trail[trail.index(nxt):], nxt])
            elif nxt in graph and len(trail) < len(graph):
                walk(nxt, [*trail, nxt])

    for start in graph:
        walk(start, [start])
    return cycles


FOLDERS = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file())


@pytest.mark.parametrize("folder", FOLDERS)
def test_no_import_circles_inside_a_folder(folder: str) -> None:
    """STYLE.md 19: when two modules need each other, the shared piece becomes a third, lower module
    (type-only imports count too: each folder reads top-down)."""
    assert not _import_cycles(folder)


def _module_name(path: Path) -> str:
    return "dlforge." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")


def _import_graph(type_only: bool = True) -> dict[str, set[str]]:
    """Module → the dlforge modules it imports, lazily or not (`from pkg import submodule` names the submodule);
    without `type_only`, imports under `if TYPE_CHECKING:` are left out (what runs)."""
    names = {_module_name(path) for path in modules_under("")}
    graph: dict[str, set[str]] = {}
    for path in modules_under(""):
        tree = ast.parse(path.read_text())
        skip = set() if type_only else {
            id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
            for child in node.body for n in ast.walk(child)}
        found: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name in names}
            elif isinstance(node, ast.ImportFrom) and node.module in names:
                found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in names else node.module
                          for a in node.names}
        graph[_module_name(path)] = found - {_module_name(path)}
    return graph


def test_no_import_circles_in_the_package_at_run_time() -> None:
    """Across folders too, no module needs one that needs it back (lazy imports included; a type-only
    reference such as a task's `Trainer` hint is not a run-time dependency)."""
    graph, cycles = _import_graph(type_only=False), []

    def walk(node: str, trail: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt in trail:
                cycles.append(" -> ".join([*trail[trail.index(nxt):], nxt]))
            elif len(trail) < 8:
                walk(nxt, [*trail, nxt])

    for start in sorted(graph):
        walk(start, [start])
    assert not cycles, cycles[:5]


def test_no_import_circles_at_all_type_only_included() -> None:
    """#25: the package reads bottom-up even for type hints — no set of modules needs each other, in any way
    (strongly connected components of the whole import graph)."""
    graph, index, low, stack, on_stack, circles = _import_graph(), {}, {}, [], set(), []

    def connect(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    assert not circles, circles


def test_the_product_holds_no_test_hooks() -> None:
    """#18: fault injection for tests lives in tests/worker_hooks, not in code users run."""
    for path in modules_under(""):
        assert "DLFORGE_TEST" not in path.read_text(), path.relative_to(PACKAGE)
