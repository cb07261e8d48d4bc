"""Stage ``collect_trajectories``: record real-search interactions for the simulator's training data.

Every (question, golden answers, query, returned documents) interaction with the real search engine is written to
``paths.trajectories`` (JSON lines). With ``simulator.query_source: policy`` the queries are the ones the policy
issues while running the search protocol, ``simulator.collect_samples`` episodes per question sampled at
``simulator.collect_temperature``; each interaction then also carries its episode's answer and reward (the trainer's
``reward`` section), which the ``outcome`` labeller reads. With ``question`` the question itself is the query (for a
policy that cannot search yet, like the untrained CPU model). Each search fetches ``simulator.noisy_pool`` results
(at least ``search.top_k``); the policy sees the first ``search.top_k`` (``documents``), the rest are kept as
``lower_ranked`` for deriving noisy targets. Run: ``python -m zerosearch_core.cli collect_trajectories``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from transformers import PreTrainedTokenizerBase

from zerosearch_core.agent.loop import PolicyGenerator, run_episodes, sampled_ids
from zerosearch_core.agent.prompts import build_prompt_ids
from zerosearch_core.agent.rewards import answer_reward
from zerosearch_core.artifacts import write_text_atomically
from zerosearch_core.config import PipelineConfig
from zerosearch_core.data import benchmarks as benchmark_data
from zerosearch_core.models.build import load_causal_lm, load_tokenizer
from zerosearch_core.models.generation import open_policy_backend
from zerosearch_core.search.base import (
    Document,
    EpisodeContext,
    SearchEngine,
    SearchErrorBudget,
    SearchResult,
    SearchSession,
)
from zerosearch_core.search.registry import open_search_engine
from zerosearch_core.seeding import derive_seed
from zerosearch_core.stages import StageHooks, StageResult


def _as_record(documents: tuple[Document, ...]) -> list[dict[str, object]]:
    return [{"id": d.id, "title": d.title, "text": d.text, "score": d.score} for d in documents]


@dataclass
class RecordingSession:
    """Wraps a real search session and records every query and its documents.

    Each search asks the engine for ``pool`` results (at least the ``top_k`` asked for); the caller gets the first
    ``top_k``, and the record keeps the rest as ``lower_ranked``.
    """

    inner: SearchSession
    record: dict[str, object]
    pool: int = 0
    interactions: list[dict[str, object]] = field(default_factory=list)

    def search(self, query: str, top_k: int) -> SearchResult:
        result = self.inner.search(query, max(top_k, self.pool))
        if result.status != "ok":
            return result
        shown, rest = result.documents[:top_k], result.documents[top_k:]
        self.interactions.append(
            {**self.record, "query": query, "documents": _as_record(shown), "lower_ranked": _as_record(rest)}
        )
        return dataclasses.replace(result, documents=shown)


PARAMS = (
    "seed",
    "search.backend",
    "search.url",
    "search.web_url",
    "search.top_k",
    "search.max_error_rate",
    "rollout",
    "reward",
    "simulator.collect_questions",
    "simulator.collect_max_questions",
    "simulator.collect_samples",
    "simulator.collect_temperature",
    "simulator.query_source",
    "simulator.noisy_pool",
    "paths.benchmarks_dir",
    "paths.index_dir",
    "paths.policy_dir",
    "paths.trajectories",
)
"""The config keys this stage reads (DVC tracks them; see scripts/sync_dvc_deps.py)."""


def run(cfg: PipelineConfig, hooks: StageHooks) -> StageResult:
    """Search for every sampled question (with the policy's own queries, or the question) and write the
    interactions."""
    sim = cfg.simulator
    frame = benchmark_data.load_benchmark(Path(cfg.paths.benchmarks_dir), sim.collect_questions)
    questions = benchmark_data.sample_questions(frame, sim.collect_max_questions, derive_seed(cfg.seed, "collect"))
    samples = sim.collect_samples if sim.query_source == "policy" else 1
    metrics: dict[str, float] = {"questions": float(len(questions)), "episodes": float(len(questions) * samples)}
    with open_search_engine(cfg.search, Path(cfg.paths.index_dir)) as engine:
        sessions = recording_sessions(cfg, engine, questions, samples)
        advance = hooks.progress(len(sessions), "collect") if hooks.progress is not None else None
        if sim.query_source == "question":
            for session in sessions:
                session.search(str(session.record["question"]), cfg.search.top_k)
                if advance is not None:
                    advance(1)
        else:
            metrics.update(_run_policy(cfg, sessions, advance))
    interactions = [i for session in sessions for i in session.interactions]
    if not interactions:
        raise RuntimeError(
            "No real-search interaction was recorded: the policy issued no query. Use simulator.query_source: question "
            "for a policy that cannot search yet."
        )
    text = "".join(json.dumps(i, ensure_ascii=False) + "\n" for i in interactions)
    write_text_atomically(Path(cfg.paths.trajectories), text)
    return StageResult(metrics={"interactions": float(len(interactions)), **metrics}, artifacts=())


def recording_sessions(
    cfg: PipelineConfig, engine: SearchEngine, questions: pd.DataFrame, samples: int
) -> list[RecordingSession]:
    """``samples`` recording sessions per question (the episode's seed derives from the question and sample)."""
    sessions = []
    for row in questions.itertuples(index=False):
        for sample in range(samples):
            ctx = EpisodeContext(
                str(row.question), tuple(row.golden_answers), 0.0, derive_seed(cfg.seed, row.id, sample)
            )
            record: dict[str, object] = {
                "id": str(row.id),
                "question": str(row.question),
                "golden_answers": [str(a) for a in row.golden_answers],
                "sample": sample,
            }
            sessions.append(RecordingSession(engine.open_session(ctx), record, cfg.simulator.noisy_pool))
    return sessions


def _run_policy(cfg: PipelineConfig, sessions: list[RecordingSession], advance) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Open the policy's backend and run its episodes against real search."""
    policy_dir = Path(cfg.paths.policy_dir)
    tokenizer = load_tokenizer(policy_dir)
    with open_policy_backend(cfg.rollout, policy_dir, tokenizer, cfg.model.dtype, cfg.seed) as backend:
        model = load_causal_lm(policy_dir) if backend.vllm is None else None
        generator = backend.generator(model, cfg.simulator.collect_temperature, derive_seed(cfg.seed, "collect"))
        return record_policy_episodes(generator, tokenizer, sessions, cfg, advance)


def record_policy_episodes(
    generator: PolicyGenerator,
    tokenizer: PreTrainedTokenizerBase,
    sessions: list[RecordingSession],
    cfg: PipelineConfig,
    advance: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """Run one episode per session with ``generator`` and stamp each recorded interaction with its episode's answer
    and reward (``cfg.reward``, on the text the policy wrote, as the trainer scores it).

    Returns:
        The mean episode reward and how many episodes searched at least once.
    """
    prompts = [
        build_prompt_ids(tokenizer, str(s.record["question"]), "search", cfg.rollout.use_chat_template)
        for s in sessions
    ]
    seeds = [derive_seed(cfg.seed, "collect", s.record["id"], s.record["sample"]) for s in sessions]
    budget = SearchErrorBudget(cfg.search.max_error_rate)
    trajectories = run_episodes(
        generator, prompts, list(sessions), cfg.rollout, cfg.search.top_k, budget, on_batch_done=advance, seeds=seeds
    )
    rewards = []
    for session, trajectory in zip(sessions, trajectories, strict=True):
        golden = [str(a) for a in session.record["golden_answers"]]  # type: ignore[attr-defined]
        sampled = generator.decode(sampled_ids(trajectory))
        reward = answer_reward(sampled, golden, cfg.reward.metric, cfg.reward.yes_no_exact)
        rewards.append(reward)
        for interaction in session.interactions:
            interaction.update(answer=trajectory.answer, reward=reward)
    return {
        "episode_reward_mean": sum(rewards) / max(len(rewards), 1),
        "episodes_that_searched": float(sum(1 for s in sessions if s.interactions)),
    }
