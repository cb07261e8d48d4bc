"""mypy over the library (style rule 26: annotations must be true)."""

from __future__ import annotations

import pytest

from tests.conftest import start_mypy


@pytest.mark.slow  # a cold mypy cache takes about three minutes of one core; conftest starts it at collection
def test_library_type_checks(request: pytest.FixtureRequest) -> None:
    process, log = start_mypy(request.config)
    returncode = process.wait(timeout=1200)
    assert returncode == 0, log.read_text()
