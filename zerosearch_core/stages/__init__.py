"""The work of each DVC stage, one module per stage, free of experiment tracking.

Every stage module exposes ``run(cfg) -> StageResult``; ``cli.py`` imports only the module of the stage it runs and
wraps it in an MLflow run, so a stage's DVC ``deps`` are exactly the modules that module imports
(``tests/test_dvc_pipeline.py`` checks that). DAG order (dvc.yaml): ``prepare_data`` → ``build_index`` →
``init_policy`` → ``collect_trajectories`` → ``build_simulator_sft`` → ``finetune_simulator`` → ``train_policy`` →
``evaluate``. ``serve_retriever`` and ``serve_simulator`` are long-running services, not stages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ProgressFactory = Callable[[int, str], Callable[[int], None]]
"""Makes a progress callback for ``total`` items with a description (the CLI passes tqdm)."""

StepLogger = Callable[[dict[str, float], int], None]
"""Receives a training step's metrics and the step number (the CLI logs them to MLflow)."""


@dataclass(frozen=True)
class StageResult:
    """What a stage produced, for the tracker."""

    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: tuple[Path, ...] = ()
