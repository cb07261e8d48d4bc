"""Stage ``generate_world``: generate the synthetic toy world from ``world.seed``, validate it, write all or nothing.

The Great Expectations report goes to ``<reports_dir>/generate_world`` whether validation passes or not; the corpus
and question files (:func:`zerosearch_core.toyworld.write_world`) replace ``world.output_dir`` only when it passes.

Run: ``python -m zerosearch_core.cli generate_world --params toy/params.yaml``.
"""

from __future__ import annotations

from pathlib import Path

from zerosearch_core.artifacts import write_dir_atomically
from zerosearch_core.config import ConfigError, PipelineConfig
from zerosearch_core.data import toyworld
from zerosearch_core.errors import DataValidationError
from zerosearch_core.stages import StageHooks, StageResult

PARAMS = (
    "world",
    "paths.reports_dir",
)
"""The config keys this stage reads (DVC tracks them; see scripts/sync_dvc_deps.py)."""


def run(cfg: PipelineConfig, hooks: StageHooks) -> StageResult:
    """Generate, validate and write the toy world (reads only ``cfg.world`` and ``cfg.paths.reports_dir``).

    Returns:
        Metrics (passages, questions per split and hop type, expectations evaluated) and the report folder and
        manifest as artifacts.

    Raises:
        ConfigError: ``world`` is null, or the world is too small for the configured split sizes.
        DataValidationError: Any expectation failed; ``world.output_dir`` was left unchanged.
    """
    if cfg.world is None:
        raise ConfigError(
            "The generate_world stage needs a world, but world is null; set a world: section "
            "(see toy/params.yaml) or drop the generate_world stage."
        )
    world = toyworld.generate_world(cfg.world)
    report_dir = Path(cfg.paths.reports_dir) / "generate_world"
    outcome = toyworld.validate_world(world, report_dir)
    if not outcome.success:
        raise DataValidationError(outcome.summary(), report_dir)
    output_dir = Path(cfg.world.output_dir)
    write_dir_atomically(output_dir, lambda folder: toyworld.write_world(world, folder))
    metrics = {
        "passages": float(len(world.passages)),
        "reading_drills": float(len(world.reading)),
        "expectations_evaluated": float(outcome.evaluated),
    }
    for split, counts in toyworld.question_counts(world).items():
        metrics.update({f"questions.{split}.{hop}": float(count) for hop, count in counts.items()})
    return StageResult(metrics=metrics, artifacts=(report_dir, output_dir / toyworld.MANIFEST_FILE))
