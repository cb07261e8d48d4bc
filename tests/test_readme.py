"""The README opens with exactly the two commands, and CI runs the second one."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_opens_with_the_run_and_test_commands() -> None:
    text = (ROOT / "README.md").read_text()
    assert text.startswith("```bash\n")
    block = re.match(r"```bash\n(.*?)\n```", text, re.DOTALL)
    assert block is not None
    run, test = block.group(1).splitlines()
    assert run == "bash scripts/setup.sh && .venv/bin/python -m flows.quickstart"
    assert test == "bash scripts/setup.sh && .venv/bin/python -m pytest"
    ci = (ROOT / ".ci" / "run").read_text()
    assert test in ci.splitlines()
