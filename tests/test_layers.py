"""The import graph of the library holds the layout: wings named after the method, each importing only wings below
it, no cycles, thin stages that import no other stage, and the whole config seen only by the CLI and the stages."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "zerosearch_core"

WING_RANK: dict[str, int] = {
    "base": 0,
    "search": 1,
    "agent": 2,
    "data": 2,
    "models": 3,
    "simulator": 4,
    "evaluation": 5,
    "policy": 6,
    "rl": 7,
    "stages": 8,
    "services": 8,
    "cli": 9,
}
"""A wing is a folder of ``zerosearch_core``; it may import its own modules and those of wings of a lower rank only.
The modules directly under the package are the base (errors, seeding, config, artifacts, ...), except ``cli``."""

MAX_TOP_LEVEL_MODULES = 8
"""Modules directly under ``zerosearch_core`` (``__init__`` included): each part of the method is a folder."""
MAX_STAGE_RUN_LINES = 60
"""A stage's ``run`` reads sections, calls one recipe and writes atomically; the recipe lives in its wing."""
NOT_STAGES = {"__init__", "registry", "sections"}
"""Modules of ``stages/`` that are wiring, not stages."""


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def wing_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and (PACKAGE / parts[1]).is_dir():
        return parts[1]
    return "cli" if parts[-1] == "cli" else "base"


def test_every_folder_is_a_wing_and_few_modules_sit_at_the_top() -> None:
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert folders == set(WING_RANK) - {"base", "cli"}, "a new folder needs its rank in WING_RANK"
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, f"{len(top)} modules at the top ({top}); move one into its wing"


def imported_modules(path: Path) -> set[str]:
    """zerosearch_core modules a file imports, at any depth (function-level imports too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name.startswith("zerosearch_core") and name != "zerosearch_core":
                found.add(name)
    return found


GRAPH = {module: imported_modules(path) - {module} for module, path in MODULES.items()}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_wing_imports_a_wing_above_it(module: str) -> None:
    wing = wing_of(module)
    for target in sorted(GRAPH[module]):
        other = wing_of(target)
        assert other == wing or WING_RANK[other] < WING_RANK[wing], f"{module} ({wing}) imports {target} ({other})"


def test_the_import_graph_has_no_cycle() -> None:
    state: dict[str, int] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = 1
        for target in sorted(GRAPH[module]):
            if state.get(target) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*trail, module, target]))
            if target not in state:
                visit(target, [*trail, module])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [])


@pytest.mark.parametrize("stage", sorted(p.stem for p in (PACKAGE / "stages").glob("*.py") if p.stem not in NOT_STAGES))
def test_a_stage_imports_no_other_stage_and_stays_thin(stage: str) -> None:
    module = f"zerosearch_core.stages.{stage}"
    stages = {t for t in GRAPH[module] if t.startswith("zerosearch_core.stages.")}
    assert stages <= {f"zerosearch_core.stages.{name}" for name in NOT_STAGES}, f"{stage} imports {stages}"
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    (run,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "run"] or [None]
    assert run is not None, f"{stage} has no run()"
    length = (run.end_lineno or run.lineno) - run.lineno + 1
    assert length <= MAX_STAGE_RUN_LINES, f"{stage}.run is {length} lines; move the recipe into its wing"
    assert any(
        isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "PARAMS" for t in n.targets) for n in tree.body
    )


@pytest.mark.parametrize("module", sorted(MODULES))
def test_only_the_cli_and_the_stages_see_the_whole_config(module: str) -> None:
    if wing_of(module) in ("stages", "services", "cli") or module == "zerosearch_core.config":
        return
    source = MODULES[module].read_text()
    assert "PipelineConfig" not in source, f"{module} takes the whole PipelineConfig; pass it the sections it reads"


@pytest.mark.parametrize("path", sorted([*(ROOT / "perf").glob("*.py"), *(ROOT / "scripts").glob("*.py")]))
def test_tools_import_no_tests_and_no_stage_internals(path: Path) -> None:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            assert not node.module.startswith("tests"), f"{path} imports {node.module}"
            if node.module.startswith("zerosearch_core.stages."):
                assert node.module.split(".")[2] in NOT_STAGES, f"{path} imports stage internals ({node.module})"
