"""Keep the DVC pipelines in step with the code.

1. Rewrite the ``zerosearch_core/...`` deps of every stage in ``dvc.yaml`` to the stage's import closure.
2. Regenerate ``toy/dvc.yaml`` (the toy-world profile) from ``dvc.yaml``: the same stages and commands, run from the
   repository root (``wdir: ..``) with ``--params toy/params.yaml``, plus the ``generate_world`` stage that writes the
   world the toy profile reads instead of the real benchmarks.

Run after changing imports or ``dvc.yaml``: ``.venv/bin/python scripts/sync_dvc_deps.py``. tests/test_dvc_pipeline.py
fails when either file and the code disagree; this script is the fix it points to.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.test_dvc_pipeline import import_closure  # noqa: E402

TOY_DIR = "toy"
TOY_PARAMS = f"{TOY_DIR}/params.yaml"
TOY_HEADER = """\
# GENERATED from ../dvc.yaml by scripts/sync_dvc_deps.py; do not edit (tests fail when it drifts).
# The toy-world profile: the same stages and code as the main pipeline, run from the repository root with
# --params toy/params.yaml, plus generate_world, which writes the synthetic world that prepare_data and build_index
# read in place of the real benchmarks and Wikipedia. Run: dvc repro toy/dvc.yaml (or python -m flows.toy).
"""


def module_deps(stage: str) -> list[str]:
    """The zerosearch_core files a stage's command imports."""
    return sorted(import_closure("zerosearch_core.cli", f"zerosearch_core.stages.{stage}"))


def sync(text: str) -> str:
    """dvc.yaml text with each stage's module deps replaced by its import closure."""
    out: list[str] = []
    stage: str | None = None
    for line in text.splitlines():
        header = re.match(r"^  ([a-z_]+):$", line)
        if header:
            stage = header.group(1)
        if line.startswith("      - zerosearch_core/"):
            continue
        out.append(line)
        if line == "    params:" and stage is not None:
            out[-1:-1] = [f"      - {m}" for m in module_deps(stage)]
    return "\n".join(out) + "\n"


def toy_pipeline(main_text: str) -> str:
    """``toy/dvc.yaml`` derived from the main ``dvc.yaml`` text."""
    main = yaml.safe_load(main_text)
    stages: dict[str, Any] = {
        "generate_world": {
            "cmd": f"python -m zerosearch_core.cli generate_world --params {TOY_PARAMS}",
            "deps": module_deps("generate_world"),
            "params": ["world", "paths.reports_dir", "tracking"],
            "outs": [
                {"${world.output_dir}": {"persist": True}},
                {"${paths.reports_dir}/generate_world": {"persist": True}},
            ],
        }
    }
    for name, spec in main["stages"].items():
        stage = {"wdir": "..", **spec}
        stage["cmd"] = spec["cmd"].replace("--params params.yaml", f"--params {TOY_PARAMS}")
        deps = list(spec["deps"])
        if name == "build_index":
            deps.insert(0, "${search.corpus_source}")  # the world's corpus file
        if name == "init_policy":
            deps.insert(0, "${cold_start.pretrain_texts}")  # the world's reading drills
        stage["deps"] = deps
        stage["params"] = [{TOY_PARAMS: list(spec["params"])}]
        stages[name] = stage
    stages["generate_world"]["params"] = [{TOY_PARAMS: stages["generate_world"]["params"]}]
    stages["generate_world"] = {"wdir": "..", **stages["generate_world"]}
    return TOY_HEADER + yaml.safe_dump({"stages": stages}, sort_keys=False, width=120)


if __name__ == "__main__":
    path = ROOT / "dvc.yaml"
    path.write_text(sync(path.read_text()))
    (ROOT / TOY_DIR).mkdir(exist_ok=True)
    (ROOT / TOY_DIR / "dvc.yaml").write_text(toy_pipeline(path.read_text()))
