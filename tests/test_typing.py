"""mypy over the library (style rule 26: annotations must be true)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # a cold mypy cache takes a minute or more on 2 cores
def test_library_type_checks() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "zerosearch_core"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
