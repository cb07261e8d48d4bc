"""Stage ``train_policy``: curriculum RL of the policy with search (GRPO in TRL, or PPO / REINFORCE++ here).

Trains from ``paths.policy_dir`` on the questions of ``train.questions``, checkpointing into
``paths.checkpoints_dir`` (a rerun after a crash or kill resumes there), and writes the trained policy to
``paths.trained_policy_dir`` with its per-step history and reward curve, plus ``paths.train_metrics`` for DVC.
Run: ``python -m zerosearch_core.cli train_policy --params params.yaml``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from zerosearch_core import data as benchmark_data
from zerosearch_core.artifacts import (
    checkpoint_identity,
    fingerprint,
    prepare_resumable_dir,
    write_dir_atomically,
    write_text_atomically,
)
from zerosearch_core.config import PipelineConfig, config_to_dict
from zerosearch_core.evaluation import sample_questions
from zerosearch_core.models import save_policy
from zerosearch_core.search.registry import open_search_engine, open_training_engine
from zerosearch_core.seeding import derive_seed
from zerosearch_core.stages import StageResult, StepLogger
from zerosearch_core.training_report import latest_by_step, plot_training_curves, summarize_history

logger = logging.getLogger(__name__)

HISTORY_FILE = "history.jsonl"
FINGERPRINT_FILE = "run_fingerprint"


def run_fingerprint(cfg: PipelineConfig) -> str:
    """A hash of everything a checkpoint's validity depends on: the training-relevant config and the start policy."""
    relevant = {
        key: config_to_dict(getattr(cfg, key))
        for key in ("seed", "model", "rollout", "curriculum", "reward", "train", "search")
    }
    relevant["policy_weights"] = checkpoint_identity(cfg.paths.policy_dir)
    return fingerprint(relevant)


def prepare_checkpoints_dir(cfg: PipelineConfig) -> Path:
    """Keep checkpoints of the same run for resuming; clear those of a different config or start policy."""
    checkpoints_dir = Path(cfg.paths.checkpoints_dir)
    existed = checkpoints_dir.exists()
    if not prepare_resumable_dir(checkpoints_dir, run_fingerprint(cfg), FINGERPRINT_FILE) and existed:
        logger.warning("Checkpoints in %s belonged to another configuration; started a fresh run", checkpoints_dir)
    return checkpoints_dir


def run(cfg: PipelineConfig, log_step: StepLogger | None = None) -> StageResult:
    """Train (or resume) to ``train.total_steps`` and write the trained policy."""
    checkpoints_dir = prepare_checkpoints_dir(cfg)
    history_path = checkpoints_dir / HISTORY_FILE
    benchmarks_dir = Path(cfg.paths.benchmarks_dir)
    questions = benchmark_data.load_benchmark(benchmarks_dir, cfg.train.questions)
    validation = sample_questions(
        benchmark_data.load_benchmark(benchmarks_dir, cfg.train.validation_questions),
        cfg.train.validation_size,
        derive_seed(cfg.seed, "validation"),
    )

    def on_step(metrics: dict[str, float]) -> None:
        with history_path.open("a") as handle:  # survives a kill; a redone step's entry supersedes the old one
            handle.write(json.dumps(metrics) + "\n")
        if log_step is not None:
            log_step(metrics, int(metrics["step"]))

    with open_training_engine(cfg) as engine, open_search_engine(cfg.search, Path(cfg.paths.index_dir)) as real:
        if cfg.train.algorithm == "grpo":
            from zerosearch_core.grpo import run_grpo

            model, tokenizer = run_grpo(cfg, questions, validation, engine, real, on_step)
        else:
            from zerosearch_core.training import run_training

            trainer = run_training(cfg, questions, validation, engine, real, on_step)
            model, tokenizer = trainer.policy, trainer.tokenizer

    history = latest_by_step([json.loads(line) for line in history_path.read_text().splitlines() if line.strip()])
    summary = summarize_history(history, cfg.train.algorithm)

    def write(folder: Path) -> None:
        save_policy(model, tokenizer, folder)
        report = folder / "training"
        report.mkdir()
        (report / HISTORY_FILE).write_text("".join(json.dumps(h) + "\n" for h in history))
        plot_training_curves(history, report / "reward_curve.png")

    trained_dir = Path(cfg.paths.trained_policy_dir)
    write_dir_atomically(trained_dir, write)
    write_text_atomically(Path(cfg.paths.train_metrics), json.dumps(summary, indent=2) + "\n")
    return StageResult(
        metrics={f"final.{k}": v for k, v in summary.items() if isinstance(v, float)},
        artifacts=(trained_dir / "training", Path(cfg.paths.train_metrics)),
    )
