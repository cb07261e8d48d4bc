"""Keep the DVC pipelines in step with the code.

1. Rewrite the ``zerosearch_core/...`` deps of every stage in ``dvc.yaml`` to the stage's import closure, less the
   modules that compute nothing a stage outputs (:data:`UNTRACKED_MODULES`: the CLI and the config schema, whose
   values DVC tracks as params), and its ``params`` to the keys the stage module declares in ``PARAMS`` (a whole
   section expands into its keys less the service knobs: ports, hosts, timeouts, tracking).
2. Regenerate ``toy/dvc.yaml`` (the toy-world profile) and ``quickstart/dvc.yaml`` from ``dvc.yaml``: the same stages
   and commands, run from the repository root (``wdir: ..``) with ``--params FOLDER/params.yaml``, plus the
   ``generate_world`` stage that writes the world these profiles read instead of the real benchmarks.

Run after changing imports, a stage's ``PARAMS`` or ``dvc.yaml``: ``.venv/bin/python scripts/sync_dvc_deps.py``.
tests/stages/test_dvc_pipeline.py fails when either file and the code disagree; this script is the fix it names.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zerosearch_core import artifacts  # noqa: E402
from zerosearch_core.artifacts import UNTRACKED_MODULES  # noqa: E402
from zerosearch_core.config import tracked_keys  # noqa: E402


def import_closure(*modules: str) -> set[str]:
    """Every zerosearch_core file reachable by imports (any depth, parent packages included), as repo paths."""
    return {str(p.relative_to(ROOT)) for p in artifacts.import_closure(ROOT, *modules)}


WORLD_PROFILES: dict[str, str] = {
    "toy": (
        "# The toy-world profile: the same stages and code as the main pipeline, run from the repository root with\n"
        "# --params toy/params.yaml, plus generate_world, which writes the synthetic world that prepare_data and "
        "build_index\n"
        "# read in place of the real benchmarks and Wikipedia. Run: dvc repro toy/dvc.yaml (or python -m flows.toy).\n"
    ),
    "quickstart": (
        "# The quickstart profile (the README's first command): the toy world's pipeline at smaller budgets, run from\n"
        "# the repository root with --params quickstart/params.yaml. Run: python -m flows.quickstart (or dvc repro\n"
        "# quickstart/dvc.yaml).\n"
    ),
}
"""The profiles whose pipeline is the main one plus ``generate_world`` (a generated world), by folder: each gets
``FOLDER/dvc.yaml`` with ``--params FOLDER/params.yaml``, under this description."""
GENERATED_HEADER = (
    "# GENERATED from ../dvc.yaml by scripts/sync_dvc_deps.py; do not edit (tests fail when it drifts).\n"
)


def module_deps(stage: str) -> list[str]:
    """The zerosearch_core files a stage's command imports, less :data:`UNTRACKED_MODULES`."""
    return sorted(import_closure(f"zerosearch_core.stages.{stage}") - UNTRACKED_MODULES)


def stage_params(stage: str) -> list[str]:
    """The keys DVC tracks for a stage: its module's ``PARAMS``, sections expanded, service knobs left out."""
    declared = importlib.import_module(f"zerosearch_core.stages.{stage}").PARAMS
    return [key for entry in declared for key in tracked_keys(entry)]


def sync(text: str) -> str:
    """dvc.yaml text with each stage's module deps and params regenerated from the code."""
    out: list[str] = []
    stage: str | None = None
    in_params = False
    for line in text.splitlines():
        header = re.match(r"^  ([a-z_]+):$", line)
        if header:
            stage = header.group(1)
        if line.startswith("      - zerosearch_core/"):
            continue
        if in_params and line.startswith("      - "):
            continue
        in_params = False
        out.append(line)
        if line == "    params:" and stage is not None:
            out[-1:-1] = [f"      - {m}" for m in module_deps(stage)]
            out += [f"      - {key}" for key in stage_params(stage)]
            in_params = True
    return "\n".join(out) + "\n"


def world_pipeline(main_text: str, folder: str) -> str:
    """``FOLDER/dvc.yaml`` of a generated-world profile (:data:`WORLD_PROFILES`) derived from the main ``dvc.yaml``
    text."""
    params = f"{folder}/params.yaml"
    main = yaml.safe_load(main_text)
    stages: dict[str, Any] = {
        "generate_world": {
            "cmd": f"scripts/stage-python -m zerosearch_core.cli generate_world --params {params}",
            "deps": module_deps("generate_world"),
            "params": stage_params("generate_world"),
            "outs": [
                {"${world.output_dir}": {"persist": True}},
                {"${paths.reports_dir}/generate_world": {"persist": True}},
            ],
        }
    }
    for name, spec in main["stages"].items():
        stage = {"wdir": "..", **spec}
        stage["cmd"] = spec["cmd"].replace("--params params.yaml", f"--params {params}")
        deps = list(spec["deps"])
        if name == "build_index":
            deps.insert(0, "${search.corpus_source}")  # the world's corpus file
        if name == "init_policy":
            # the world's reading drills and reading lessons (corpus and questions)
            deps[0:0] = [
                "${cold_start.pretrain_texts}",
                "${cold_start.reading_corpus}",
                "${cold_start.reading_questions}",
            ]
        stage["deps"] = deps
        stage["params"] = [{params: list(spec["params"])}]
        stages[name] = stage
    stages["generate_world"]["params"] = [{params: stages["generate_world"]["params"]}]
    stages["generate_world"] = {"wdir": "..", **stages["generate_world"]}
    header = GENERATED_HEADER + WORLD_PROFILES[folder]
    return header + yaml.safe_dump({"stages": stages}, sort_keys=False, width=120)


if __name__ == "__main__":
    path = ROOT / "dvc.yaml"
    path.write_text(sync(path.read_text()))
    for folder in WORLD_PROFILES:
        (ROOT / folder).mkdir(exist_ok=True)
        (ROOT / folder / "dvc.yaml").write_text(world_pipeline(path.read_text(), folder))
