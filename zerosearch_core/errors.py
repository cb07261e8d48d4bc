"""Exceptions shared by stages and the CLI (kept light: no heavy imports)."""

from __future__ import annotations

from pathlib import Path


class DataValidationError(RuntimeError):
    """A dataset failed its expectations; ``report_dir`` holds the full report."""

    def __init__(self, message: str, report_dir: Path) -> None:
        super().__init__(
            f"{message}\nFull report: {report_dir / 'summary.md'} and {report_dir / 'data_docs/index.html'}"
        )
        self.report_dir = report_dir
