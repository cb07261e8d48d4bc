"""House rules that keep the layers apart, checked on the source (style guide rules 1, 20, 22, 29, 40)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = sorted((ROOT / "zerosearch_core").rglob("*.py"))


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _imported_roots(tree: ast.Module) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(ROOT)))
def test_library_never_imports_orchestration_and_only_cli_tracks(path: Path) -> None:
    roots = _imported_roots(_tree(path))
    assert not roots & {"prefect", "dvc", "tasks", "flows"}, f"{path} imports orchestration"
    if path.name != "cli.py":
        assert "mlflow" not in roots, f"{path} imports mlflow; only cli.py may"


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_global_rng_and_no_print(path: Path) -> None:
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            chain = ast.unparse(owner)
            explicit_generator = node.func.attr in ("Random", "default_rng", "Generator")
            if chain in ("random", "np.random", "numpy.random") and not explicit_generator:
                raise AssertionError(f"{path}:{node.lineno} uses the global RNG ({chain}.{node.func.attr})")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id != "print", f"{path}:{node.lineno} prints; use logging"


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_module_opens_with_a_docstring(path: Path) -> None:
    assert ast.get_docstring(_tree(path)), f"{path} has no module docstring"


def test_tasks_and_flows_hold_no_business_logic() -> None:
    for folder in ("tasks", "flows"):
        for path in (ROOT / folder).glob("*.py"):
            roots = _imported_roots(_tree(path))
            assert "zerosearch_core" not in roots, f"{path} reaches into the library; call a DVC stage instead"


def test_last_complete_checkpoint_skips_and_removes_a_half_written_one(tmp_path: Path) -> None:
    from zerosearch_core.artifacts import last_complete_checkpoint

    assert last_complete_checkpoint(tmp_path / "missing") is None
    for step, complete in ((2, True), (10, True), (12, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if complete:
            (folder / "trainer_state.json").write_text('{"global_step": 1, "max_steps": 12}')
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")  # 10 > 2 numerically, not as text
    assert not (tmp_path / "checkpoint-12").exists()
