"""Stage ``train_policy``: curriculum RL of the policy with search (GRPO in TRL, or PPO / REINFORCE++ here).

Trains from ``paths.policy_dir`` on the questions of ``train.questions``, checkpointing into
``paths.checkpoints_dir`` (a rerun after a crash or kill resumes there), and writes the trained policy to
``paths.trained_policy_dir`` with its per-step history and reward curve, plus ``paths.train_metrics`` for DVC.
Run: ``python -m zerosearch_core.cli train_policy --params params.yaml``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch

from zerosearch_core.artifacts import (
    AFRESH_CLEARED,
    RESUMED,
    checkpoint_identity,
    code_digest,
    file_sha256,
    prepare_resumable_dir,
    write_dir_atomically,
    write_text_atomically,
)
from zerosearch_core.config import PipelineConfig, config_values, tracked_keys
from zerosearch_core.data import benchmarks as benchmark_data
from zerosearch_core.evaluation.benchmarks import bridge_names
from zerosearch_core.models.build import save_policy, tokenizer_identity
from zerosearch_core.rl import distributed
from zerosearch_core.rl.registry import get_trainer
from zerosearch_core.rl.report import latest_by_step, plot_training_curves, summarize_history
from zerosearch_core.search.local import passage_titles
from zerosearch_core.search.registry import open_search_engine
from zerosearch_core.seeding import derive_seed
from zerosearch_core.stages import StageHooks, StageResult
from zerosearch_core.stages.sections import open_training_engine, rl_setup

logger = logging.getLogger(__name__)

HISTORY_FILE = "history.jsonl"
FINGERPRINT_FILE = "run_fingerprint"

PARAMS = (
    "seed",
    "search",
    "model",
    "rollout",
    "simulator.mode",
    "simulator.doc_words",
    "simulator.max_new_tokens",
    "simulator.max_length",  # the simulator engine's context (max_model_len) on the training path
    "simulator.answer_aware",  # the simulator prompt the training searches render
    "simulator.temperature",
    "simulator.type_check",
    "simulator.type_check_attempts",
    "simulator.url",
    "simulator.engine",
    "curriculum",
    "reward",
    "train",
    "paths.benchmarks_dir",
    "paths.index_dir",
    "paths.policy_dir",
    "paths.simulator_dir",
    "paths.checkpoints_dir",
    "paths.trained_policy_dir",
    "paths.train_metrics",
)


def run_identity(cfg: PipelineConfig) -> dict[str, object]:
    """Everything a checkpoint's validity depends on: every config key the stage reads (the ones DVC tracks: service
    knobs aside), the code it runs (:func:`~zerosearch_core.artifacts.code_digest`), the weights it starts from and
    searches with, and the data it trains and validates on. A rerun whose identity differs starts afresh instead of
    resuming (or republishing) another run's checkpoints."""
    relevant: dict[str, object] = config_values(cfg, [key for entry in PARAMS for key in tracked_keys(entry)])
    relevant["code"] = code_digest(__name__)
    relevant["policy_weights"] = checkpoint_identity(cfg.paths.policy_dir)
    relevant["policy_tokenizer"] = tokenizer_identity(cfg.paths.policy_dir)
    if cfg.train.search_engine == "simulated" and cfg.simulator.url is None:
        relevant["simulator_weights"] = checkpoint_identity(cfg.paths.simulator_dir)
    benchmarks_dir = Path(cfg.paths.benchmarks_dir)
    for role, name in (("train_data", cfg.train.questions), ("validation_data", cfg.train.validation_questions)):
        path = benchmarks_dir / f"{name}.parquet"
        relevant[role] = file_sha256(path) if path.is_file() else name
    manifest = Path(cfg.paths.index_dir) / "manifest.json"
    relevant["index"] = file_sha256(manifest) if manifest.is_file() else cfg.paths.index_dir
    return relevant


def prepare_checkpoints_dir(cfg: PipelineConfig) -> Path:
    """Keep checkpoints of the same run for resuming; clear those of a different config, code, data or weights."""
    return _prepare_checkpoints(cfg)[0]


def _prepare_checkpoints(cfg: PipelineConfig) -> tuple[Path, str]:
    """The checkpoints folder and how the run starts (:func:`~zerosearch_core.artifacts.run_start`)."""
    checkpoints_dir = Path(cfg.paths.checkpoints_dir)
    start = prepare_resumable_dir(checkpoints_dir, run_identity(cfg), FINGERPRINT_FILE, "paths.checkpoints_dir")
    if start == RESUMED:
        logger.info(
            "Checkpoints in %s belong to this run (same config, code, data and weights): resuming", checkpoints_dir
        )
    elif start == AFRESH_CLEARED:
        logger.warning(
            "Checkpoints in %s belonged to another run (config, code, data or weights changed); started afresh",
            checkpoints_dir,
        )
    return checkpoints_dir, start


def run(cfg: PipelineConfig, hooks: StageHooks) -> StageResult:
    """Train (or resume) to ``train.total_steps`` and write the trained policy.

    Under ``accelerate launch`` every rank trains (gradients averaged across ranks, each rank rolling out its share
    of a step's questions); rank 0 alone prepares the checkpoints folder, keeps the history, checkpoints and writes
    the trained policy and metrics.
    """
    distributed.init_process_group()
    main = distributed.is_main_process()
    checkpoints_dir, start = _prepare_checkpoints(cfg) if main else (Path(cfg.paths.checkpoints_dir), "")
    distributed.barrier()
    history_path = checkpoints_dir / HISTORY_FILE
    benchmarks_dir = Path(cfg.paths.benchmarks_dir)
    questions = benchmark_data.load_benchmark(benchmarks_dir, cfg.train.questions)
    questions["bridge"] = bridge_names(questions, passage_titles(Path(cfg.paths.index_dir)))  # reward.bridge_bonus
    validation = benchmark_data.sample_questions(
        benchmark_data.load_benchmark(benchmarks_dir, cfg.train.validation_questions),
        cfg.train.validation_size,
        derive_seed(cfg.seed, "validation"),
    )

    def on_step(metrics: dict[str, float]) -> None:
        if not main:
            return
        with history_path.open("a") as handle:  # survives a kill; a redone step's entry supersedes the old one
            handle.write(json.dumps(metrics) + "\n")
        if hooks.log_step is not None:
            hooks.log_step(metrics, int(metrics["step"]))

    trainer = get_trainer(cfg.train.algorithm)
    with open_training_engine(cfg) as engine, open_search_engine(cfg.search, Path(cfg.paths.index_dir)) as real:
        model, tokenizer = trainer(rl_setup(cfg), questions, validation, engine, real, on_step)
    if distributed.world_size() > 1:
        logger.info(
            "rank %d of %d finished training: weights %s",
            distributed.rank(),
            distributed.world_size(),
            weights_digest(model),
        )
    if not main:
        return StageResult(metrics={}, artifacts=())

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
        tags={"run_start": start},
    )


def weights_digest(model: torch.nn.Module) -> str:
    """A short hash of a model's parameters (equal on every rank when gradients were averaged across them)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]
