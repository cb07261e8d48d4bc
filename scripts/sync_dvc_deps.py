"""Rewrite the ``zerosearch_core/...`` deps of every stage in dvc.yaml to the stage's import closure.

Run after changing imports: ``.venv/bin/python scripts/sync_dvc_deps.py``. tests/test_dvc_pipeline.py fails when
dvc.yaml and the code disagree; this script is the fix it points to.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.test_dvc_pipeline import import_closure  # noqa: E402


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
            modules = sorted(import_closure("zerosearch_core.cli", f"zerosearch_core.stages.{stage}"))
            out[-1:-1] = [f"      - {m}" for m in modules]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    path = ROOT / "dvc.yaml"
    path.write_text(sync(path.read_text()))
