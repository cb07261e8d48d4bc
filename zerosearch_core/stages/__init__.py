"""The work of each DVC stage, one thin module per stage, free of experiment tracking.

Every stage module exposes the same entry, ``run(cfg, hooks) -> StageResult``, and ``PARAMS``, the config keys it
reads (``scripts/sync_dvc_deps.py`` writes them into ``dvc.yaml``, service knobs left out). A stage reads its
sections, calls one wing of the library and writes its outputs atomically; no stage imports another. ``cli.py``
imports only the module of the stage it runs (the list is :mod:`zerosearch_core.stages.registry`) and wraps it in an
MLflow run, so a stage's DVC ``deps`` are exactly the modules that module imports.
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
class StageHooks:
    """What the CLI hands every stage: a progress-bar factory and a per-step metrics logger (both optional)."""

    progress: ProgressFactory | None = None
    log_step: StepLogger | None = None


@dataclass(frozen=True)
class StageResult:
    """What a stage produced, for the tracker."""

    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: tuple[Path, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)
    """Facts about the run for the tracker, e.g. ``run_start``: whether training resumed or started afresh."""
