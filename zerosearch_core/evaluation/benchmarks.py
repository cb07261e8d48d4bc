"""Evaluate a policy on the QA benchmarks with real search (and a no-search baseline), by exact match and F1.

For every benchmark in ``eval.benchmarks`` and every mode in ``eval.modes`` the policy runs the multi-turn protocol
of :mod:`zerosearch_core.agent.loop` ("search") or answers in one turn without search ("direct"); answers are scored
with :mod:`zerosearch_core.agent.rewards`, the same functions RL rewards use. Outputs: per-question predictions and a
metrics dict ``{mode: {benchmark: {em, f1, n, ...}}}``; the bar chart and the evaluation card that states the
protocol are in :mod:`zerosearch_core.evaluation.card`.

Stage: ``python -m zerosearch_core.cli evaluate --params params.yaml``.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from zerosearch_core.agent.loop import PolicyGenerator, SearchProtocol, Trajectory, run_episodes
from zerosearch_core.agent.prompts import build_prompt_ids
from zerosearch_core.agent.rewards import METRICS, answer_metrics, searched_bridge
from zerosearch_core.config import DATASETS
from zerosearch_core.models.generation import PolicyBackend
from zerosearch_core.search.base import EpisodeContext, SearchEngine, SearchErrorBudget, SearchSession
from zerosearch_core.seeding import derive_seed

METRIC_NAMES: dict[str, str] = {"em": "EM", "cover_em": "cover-EM", "f1": "F1"}


PAPER_METRICS = (
    "which to compare: ZeroSearch's tables report cover-EM (its `em_check` tests containment); Search-R1's report "
    "strict EM; FlashRAG reports EM and `acc` (= cover-EM)"
)


@dataclass(frozen=True)
class BenchmarkRun:
    """Predictions and metrics of one (benchmark, mode) pair."""

    benchmark: str
    mode: str
    predictions: pd.DataFrame
    metrics: dict[str, float]


def evaluate_benchmark(
    name: str,
    questions: pd.DataFrame,
    mode: str,
    generator: PolicyGenerator,
    tokenizer: PreTrainedTokenizerBase,
    engine: SearchEngine | None,
    protocol: SearchProtocol,
    seed: int,
    error_budget: SearchErrorBudget,
    on_batch_done: Callable[[int], None] | None = None,
    yes_no_exact: bool = True,
    bridges: Sequence[str | None] | None = None,
) -> BenchmarkRun:
    """Run the policy on ``questions`` in ``mode`` and score every answer.

    Args:
        name: Benchmark artifact name (e.g. ``nq_dev``).
        questions: Normalised rows (``id``, ``question``, ``golden_answers``).
        mode: ``"search"`` or ``"direct"``.
        generator: The policy backend.
        tokenizer: The policy's tokenizer (for the prompt).
        engine: The real search engine; unused in direct mode.
        protocol: Turn and token budgets and documents per search.
        seed: Root seed of the episodes' search sessions (``seed``).
        error_budget: Shared search-failure budget.
        on_batch_done: Progress callback, called with the number of episodes finished.
        yes_no_exact: HotpotQA's yes/no rule for F1 (``reward.yes_no_exact``).
        bridges: Per question, the bridge entity a multi-hop question's later search should name
            (:func:`bridge_names`), or None; adds ``bridge_query_rate`` to the metrics.

    Returns:
        Per-question predictions and aggregate metrics.
    """
    prompts = [
        build_prompt_ids(tokenizer, q, mode, protocol.rollout.use_chat_template, protocol.prompt_template)
        for q in questions["question"].tolist()
    ]
    sessions: list[SearchSession | None] = []
    for row in questions.itertuples(index=False):
        if mode == "search" and engine is not None:
            ctx = EpisodeContext(str(row.question), tuple(row.golden_answers), 0.0, derive_seed(seed, row.id))
            sessions.append(engine.open_session(ctx))
        else:
            sessions.append(None)
    trajectories = run_episodes(
        generator,
        prompts,
        sessions,
        protocol.rollout,
        top_k=protocol.top_k,
        error_budget=error_budget,
        max_turns=protocol.rollout.max_turns if mode == "search" else 1,
        on_batch_done=on_batch_done,
        seeds=[derive_seed(seed, "policy", row_id) for row_id in questions["id"].tolist()],
    )
    predictions = _predictions_frame(name, mode, questions, trajectories, yes_no_exact)
    if bridges is not None:
        predictions["bridge"] = list(bridges)
        predictions["bridge_queried"] = [
            searched_bridge(queries, bridge) for bridge, queries in zip(bridges, predictions["queries"], strict=True)
        ]
    return BenchmarkRun(benchmark=name, mode=mode, predictions=predictions, metrics=summarize(predictions))


def validate_policy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    questions: pd.DataFrame,
    engine: SearchEngine,
    protocol: SearchProtocol,
    seed: int,
    yes_no_exact: bool = True,
    backend: PolicyBackend | None = None,
    weights_version: int | None = None,
) -> dict[str, float]:
    """EM, cover-EM and F1 of ``model`` on ``questions`` with real search and greedy decoding (the training
    validation slice), generated by ``backend`` (transformers when None) with the model's weights of
    ``weights_version``."""
    was_training = model.training
    model.eval()
    backend = backend if backend is not None else PolicyBackend(tokenizer)
    generator = backend.generator(model, 0.0, derive_seed(seed, "validation"), weights_version=weights_version)
    run = evaluate_benchmark(
        "validation",
        questions,
        "search",
        generator,
        tokenizer,
        engine,
        protocol,
        seed,
        SearchErrorBudget(protocol.max_error_rate),
        yes_no_exact=yes_no_exact,
    )
    model.train(was_training)
    return {
        **{f"val_{metric}": run.metrics[metric] for metric in METRICS},
        "val_searches_mean": run.metrics["mean_searches"],
    }


def _predictions_frame(
    name: str, mode: str, questions: pd.DataFrame, trajectories: Sequence[Trajectory], yes_no_exact: bool
) -> pd.DataFrame:
    rows = []
    for row, traj in zip(questions.itertuples(index=False), trajectories, strict=True):
        golden = [str(a) for a in row.golden_answers]
        rows.append(
            {
                "benchmark": name,
                "mode": mode,
                "id": row.id,
                "question": row.question,
                "golden_answers": golden,
                "prediction": traj.answer,
                **answer_metrics(traj.answer, golden, yes_no_exact),
                "finish_reason": traj.finish_reason,
                "turns": traj.turns,
                "searches": traj.searches,
                "queries": list(traj.queries),
                "invalid_actions": traj.invalid_actions,
                "search_failures": traj.search_failures,
                "response_tokens": len(traj.response_ids),
                "response": traj.response_text,
            }
        )
    return pd.DataFrame(rows)


def summarize(predictions: pd.DataFrame) -> dict[str, float]:
    """Aggregate metrics of one predictions frame.

    ``search_rate`` is the share of questions on which the policy searched at least once, ``em_when_searching`` the
    EM on those questions alone (how well it reads what it finds; 0 when it never searched).

    >>> metrics = summarize(pd.DataFrame({"em": [1.0, 0.0], "cover_em": [1.0, 1.0], "f1": [1.0, 0.5],
    ...     "prediction": ["a", None], "turns": [1, 2], "searches": [0, 1], "invalid_actions": [0, 1],
    ...     "search_failures": [0, 0], "response_tokens": [3, 5]}))
    >>> metrics["f1"], metrics["search_rate"], metrics["em_when_searching"]
    (0.75, 0.5, 0.0)
    """
    count = len(predictions)
    searched = predictions[predictions["searches"] > 0]
    searched_again = predictions[predictions["searches"] > 1]
    multi_hop: dict[str, float] = {
        "multi_search_rate": len(searched_again) / count if count else 0.0,
        "em_when_multi_search": float(searched_again["em"].mean()) if len(searched_again) else 0.0,
    }
    if "bridge" in predictions.columns:
        bridged = predictions[predictions["bridge"].notna()]
        if len(bridged):
            multi_hop["bridge_query_rate"] = float(bridged["bridge_queried"].mean())
    return {
        **multi_hop,
        **{metric: float(predictions[metric].mean()) if count else 0.0 for metric in METRICS},
        "n": float(count),
        "answer_rate": float(predictions["prediction"].notna().mean()) if count else 0.0,
        "mean_turns": float(predictions["turns"].mean()) if count else 0.0,
        "mean_searches": float(predictions["searches"].mean()) if count else 0.0,
        "search_rate": len(searched) / count if count else 0.0,
        "em_when_searching": float(searched["em"].mean()) if len(searched) else 0.0,
        "invalid_actions": float(predictions["invalid_actions"].sum()),
        "search_failures": float(predictions["search_failures"].sum()),
        "mean_response_tokens": float(predictions["response_tokens"].mean()) if count else 0.0,
    }


def bridge_names(questions: pd.DataFrame, titles: dict[str, str]) -> list[str | None]:
    """The bridge entity of each multi-hop question: the title of its last supporting passage (the one that states
    the answer, which a second search must find), or None for a question with fewer than two supporting passages.

    >>> frame = pd.DataFrame({"supporting_doc_ids": [["p1"], ["p1", "p2"]]})
    >>> bridge_names(frame, {"p1": "Alira Venhold", "p2": "Doranor Kelby"})
    [None, 'Doranor Kelby']
    """
    if "supporting_doc_ids" not in questions.columns:
        return [None] * len(questions)
    return [titles.get(str(list(docs)[-1])) if len(docs) >= 2 else None for docs in questions["supporting_doc_ids"]]


def metrics_document(runs: Sequence[BenchmarkRun], benchmark_datasets: dict[str, str]) -> dict[str, Any]:
    """The DVC metrics document: ``{mode: {benchmark: {em, cover_em, f1, n, ...}, "average": {em, cover_em, f1}}}``,
    plus which of the
    paper's seven benchmarks (by dataset) were not evaluated because the data is not there."""
    document: dict[str, Any] = {}
    for run in runs:
        document.setdefault(run.mode, {})[run.benchmark] = {k: round(v, 6) for k, v in run.metrics.items()}
    for _mode, per_dataset in document.items():
        per_dataset["average"] = {
            metric: round(statistics.fmean(v[metric] for v in per_dataset.values()), 6) for metric in METRICS
        }
    evaluated = set(benchmark_datasets.values())
    document["not_evaluated"] = [d for d in DATASETS if d not in evaluated]
    return document
