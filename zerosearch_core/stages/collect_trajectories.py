"""Stage ``collect_trajectories``: record real-search interactions for the simulator's training data.

Every (question, golden answers, query, returned documents) interaction with the real search engine is written to
``paths.trajectories`` (JSON lines). With ``simulator.query_source: policy`` the queries are the ones the policy
issues while running the search protocol; with ``question`` the question itself is the query (for a policy that
cannot search yet, like the untrained CPU model). Run: ``python -m zerosearch_core.cli collect_trajectories``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from zerosearch_core.artifacts import write_text_atomically
from zerosearch_core.config import PipelineConfig
from zerosearch_core.data import benchmarks as benchmark_data
from zerosearch_core.models import load_causal_lm, load_tokenizer
from zerosearch_core.prompts import build_prompt_ids
from zerosearch_core.rollout import open_policy_backend, run_episodes
from zerosearch_core.search.base import EpisodeContext, SearchErrorBudget, SearchResult, SearchSession
from zerosearch_core.search.registry import open_search_engine
from zerosearch_core.seeding import derive_seed
from zerosearch_core.stages import StageHooks, StageResult


@dataclass
class RecordingSession:
    """Wraps a real search session and records every query and its documents."""

    inner: SearchSession
    record: dict[str, object]
    interactions: list[dict[str, object]] = field(default_factory=list)

    def search(self, query: str, top_k: int) -> SearchResult:
        result = self.inner.search(query, top_k)
        if result.status == "ok":
            documents = [{"id": d.id, "title": d.title, "text": d.text, "score": d.score} for d in result.documents]
            self.interactions.append({**self.record, "query": query, "documents": documents})
        return result


PARAMS = (
    "seed",
    "search.backend",
    "search.url",
    "search.web_url",
    "search.top_k",
    "search.max_error_rate",
    "rollout",
    "simulator.collect_questions",
    "simulator.collect_max_questions",
    "simulator.query_source",
    "paths.benchmarks_dir",
    "paths.index_dir",
    "paths.policy_dir",
    "paths.trajectories",
)
"""The config keys this stage reads (DVC tracks them; see scripts/sync_dvc_deps.py)."""


def run(cfg: PipelineConfig, hooks: StageHooks) -> StageResult:
    """Search for every sampled question and write the interactions."""
    sim = cfg.simulator
    frame = benchmark_data.load_benchmark(Path(cfg.paths.benchmarks_dir), sim.collect_questions)
    questions = benchmark_data.sample_questions(frame, sim.collect_max_questions, derive_seed(cfg.seed, "collect"))
    interactions: list[dict[str, object]] = []
    with open_search_engine(cfg.search, Path(cfg.paths.index_dir)) as engine:
        sessions = []
        for row in questions.itertuples(index=False):
            ctx = EpisodeContext(str(row.question), tuple(row.golden_answers), 0.0, derive_seed(cfg.seed, row.id))
            record: dict[str, object] = {
                "id": str(row.id),
                "question": str(row.question),
                "golden_answers": [str(a) for a in row.golden_answers],
            }
            sessions.append(RecordingSession(engine.open_session(ctx), record))
        advance = hooks.progress(len(sessions), "collect") if hooks.progress is not None else None
        if sim.query_source == "question":
            for session in sessions:
                session.search(str(session.record["question"]), cfg.search.top_k)
                if advance is not None:
                    advance(1)
        else:
            policy_dir = Path(cfg.paths.policy_dir)
            tokenizer = load_tokenizer(policy_dir)
            prompts = [
                build_prompt_ids(tokenizer, str(s.record["question"]), "search", cfg.rollout.use_chat_template)
                for s in sessions
            ]
            budget = SearchErrorBudget(cfg.search.max_error_rate)
            with open_policy_backend(cfg.rollout, policy_dir, tokenizer, cfg.model.dtype, cfg.seed) as backend:
                model = load_causal_lm(policy_dir) if backend.vllm is None else None
                generator = backend.generator(model, 1.0, derive_seed(cfg.seed, "collect"))
                run_episodes(
                    generator, prompts, list(sessions), cfg.rollout, cfg.search.top_k, budget, on_batch_done=advance
                )
        for session in sessions:
            interactions.extend(session.interactions)
    if not interactions:
        raise RuntimeError(
            "No real-search interaction was recorded: the policy issued no query. Use simulator.query_source: question "
            "for a policy that cannot search yet."
        )
    text = "".join(json.dumps(i, ensure_ascii=False) + "\n" for i in interactions)
    write_text_atomically(Path(cfg.paths.trajectories), text)
    return StageResult(
        metrics={"interactions": float(len(interactions)), "questions": float(len(questions))},
        artifacts=(),
    )
