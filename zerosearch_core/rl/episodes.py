"""One RL step's episodes: questions → prompts → search sessions at the curriculum's noise p(step) → trajectories.

Both trainers (TRL's GRPO through ``rollout_func``, and the torch PPO / REINFORCE++ trainer) call
:func:`run_step_episodes`, so the curriculum is applied in exactly one place: this module holds the only call of
:func:`~zerosearch_core.rl.curriculum.noise_probability`. :class:`RLSetup` is what RL reads of the config, passed as
sections rather than the whole pipeline config.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from zerosearch_core.agent.loop import PolicyGenerator, SearchProtocol, Trajectory, episode_statistics, run_episodes
from zerosearch_core.agent.prompts import build_prompt_ids
from zerosearch_core.config import CurriculumConfig, RewardConfig, TrainConfig
from zerosearch_core.evaluation.benchmarks import validate_policy
from zerosearch_core.models.generation import PolicyBackend
from zerosearch_core.rl.curriculum import noise_probability
from zerosearch_core.search.base import EpisodeContext, SearchEngine, SearchErrorBudget, SearchSession
from zerosearch_core.seeding import derive_seed


@dataclass(frozen=True)
class RLSetup:
    """The config sections policy RL reads, and where it reads and writes weights."""

    train: TrainConfig
    curriculum: CurriculumConfig
    reward: RewardConfig
    protocol: SearchProtocol
    dtype: str
    rl_seed: int
    """Root seed of rollouts, sampling and the trainer (``seed + train.seed``)."""
    validation_seed: int
    """Root seed of the validation episodes (``seed``: the same for every ``train.seed``)."""
    policy_dir: Path
    checkpoints_dir: Path


@dataclass(frozen=True)
class EpisodeRequest:
    """One episode to run: the question, its golden answers (for the simulator's prompt) and its own seed."""

    question: str
    golden_answers: tuple[str, ...]
    seed: int


@dataclass(frozen=True)
class StepEpisodes:
    """A step's episodes in request order, with the prompts they started from and the step's rollout metrics."""

    prompt_ids: list[list[int]]
    trajectories: list[Trajectory]
    noise_prob: float
    statistics: dict[str, float]


def step_noise_probability(setup: RLSetup, step: int) -> float:
    """The curriculum's probability of a noisy document at ``step`` of ``train.total_steps``."""
    curriculum = setup.curriculum
    return noise_probability(step, setup.train.total_steps, curriculum.start, curriculum.end, curriculum.base)


def run_step_episodes(
    generator: PolicyGenerator,
    tokenizer: PreTrainedTokenizerBase,
    engine: SearchEngine,
    requests: Sequence[EpisodeRequest],
    step: int,
    setup: RLSetup,
    error_budget: SearchErrorBudget,
) -> StepEpisodes:
    """Run one episode per request through the search protocol at step ``step``'s noise probability.

    Args:
        generator: The policy backend (the trainer's current weights).
        tokenizer: The policy's tokenizer, for the prompts.
        engine: The engine RL trains against (simulated or real).
        requests: The episodes, in order; repeated questions share one prompt rendering.
        step: The optimizer step the episodes are for (0-based), which sets the noise probability.
        setup: The RL sections.
        error_budget: Counts failed searches across the run.

    Returns:
        The prompts, trajectories, noise probability and rollout statistics.
    """
    noise_prob = step_noise_probability(setup, step)
    use_chat_template = setup.protocol.rollout.use_chat_template
    rendered: dict[str, list[int]] = {}
    prompt_ids: list[list[int]] = []
    sessions: list[SearchSession | None] = []
    for request in requests:
        if request.question not in rendered:
            rendered[request.question] = build_prompt_ids(tokenizer, request.question, "search", use_chat_template)
        prompt_ids.append(list(rendered[request.question]))
        ctx = EpisodeContext(request.question, request.golden_answers, noise_prob, request.seed)
        sessions.append(engine.open_session(ctx))
    trajectories = run_episodes(
        generator,
        prompt_ids,
        sessions,
        setup.protocol.rollout,
        setup.protocol.top_k,
        error_budget,
        seeds=[derive_seed(request.seed, "policy") for request in requests],
    )
    return StepEpisodes(prompt_ids, trajectories, noise_prob, episode_statistics(trajectories, noise_prob))


def validate_step(
    setup: RLSetup,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    validation: pd.DataFrame,
    engine: SearchEngine,
    backend: PolicyBackend,
    step: int,
) -> dict[str, float]:
    """Validation metrics of ``model`` after optimizer step ``step`` (greedy, real search, through ``backend``)."""
    return validate_policy(
        model,
        tokenizer,
        validation,
        engine,
        setup.protocol,
        setup.validation_seed,
        setup.reward.yes_no_exact,
        backend=backend,
        weights_version=step,
    )
