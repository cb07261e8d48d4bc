"""Stage ``prepare_data``: read, normalise and validate every benchmark file; write all artifacts or none.

Run: ``python -m zerosearch_core.cli prepare_data --params params.yaml``.
"""

from __future__ import annotations

import json
from pathlib import Path

from zerosearch_core.artifacts import write_dir_atomically
from zerosearch_core.config import PipelineConfig
from zerosearch_core.data import benchmarks as benchmark_data
from zerosearch_core.data.validation import validate_benchmarks
from zerosearch_core.errors import DataValidationError
from zerosearch_core.stages import StageHooks, StageResult

PARAMS = (
    "data",
    "paths.benchmarks_dir",
    "paths.reports_dir",
)
"""The config keys this stage reads (DVC tracks them; see scripts/sync_dvc_deps.py)."""


def run(cfg: PipelineConfig, hooks: StageHooks) -> StageResult:
    """Read, normalise and validate every benchmark file; write all artifacts or none.

    The Great Expectations report is written to ``<reports_dir>/prepare_data`` whether validation passes or not.

    Raises:
        DataValidationError: Any expectation failed; no benchmark artifact was changed.
    """
    source_dir = Path(cfg.data.source_dir)
    report_dir = Path(cfg.paths.reports_dir) / "prepare_data"
    frames = {spec.name: (spec, benchmark_data.read_raw(spec, source_dir)) for spec in cfg.data.files}
    outcome = validate_benchmarks(frames, cfg.data, report_dir)
    if not outcome.success:
        raise DataValidationError(outcome.summary(), report_dir)
    normalized = outcome.normalized
    manifest = {
        name: {
            "rows": len(frame),
            "source": benchmark_data.source_label(frames[name][0]),
            "dataset": frames[name][0].dataset,
        }
        for name, frame in normalized.items()
    }

    def write(folder: Path) -> None:
        for name, frame in normalized.items():
            frame.to_parquet(folder / f"{name}.parquet", index=False)
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")

    write_dir_atomically(Path(cfg.paths.benchmarks_dir), write)
    metrics = {f"rows.{name}": float(len(frame)) for name, frame in normalized.items()}
    metrics.update({f"duplicates_collapsed.{name}": float(len(rows)) for name, rows in outcome.collapsed.items()})
    metrics["expectations_evaluated"] = float(outcome.evaluated)
    return StageResult(metrics=metrics, artifacts=(report_dir,))
