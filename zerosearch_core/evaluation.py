"""Evaluate a policy on the QA benchmarks with real search (and a no-search baseline), by exact match and F1.

For every benchmark in ``eval.benchmarks`` and every mode in ``eval.modes`` the policy runs the multi-turn protocol
of :mod:`zerosearch_core.rollout` ("search") or answers in one turn without search ("direct"); answers are scored with
:mod:`zerosearch_core.rewards`, the same functions RL rewards use. Outputs: per-question predictions, a metrics dict
``{mode: {benchmark: {em, f1, n, ...}}}``, a bar chart, and an evaluation card that states the protocol.

Stage: ``python -m zerosearch_core.cli evaluate --params params.yaml``.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from zerosearch_core.config import DATASETS, EvalConfig
from zerosearch_core.prompts import build_prompt_ids
from zerosearch_core.rewards import METRICS, answer_metrics
from zerosearch_core.rollout import HFPolicyGenerator, PolicyGenerator, SearchProtocol, Trajectory, run_episodes
from zerosearch_core.search.base import EpisodeContext, SearchEngine, SearchErrorBudget, SearchSession
from zerosearch_core.seeding import derive_seed

logger = logging.getLogger(__name__)

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
    )
    predictions = _predictions_frame(name, mode, questions, trajectories, yes_no_exact)
    return BenchmarkRun(benchmark=name, mode=mode, predictions=predictions, metrics=summarize(predictions))


def validate_policy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    questions: pd.DataFrame,
    engine: SearchEngine,
    protocol: SearchProtocol,
    seed: int,
    yes_no_exact: bool = True,
) -> dict[str, float]:
    """EM, cover-EM and F1 of ``model`` on ``questions`` with real search and greedy decoding (the training
    validation slice)."""
    was_training = model.training
    model.eval()
    generator = HFPolicyGenerator(model, tokenizer, temperature=0.0, seed=derive_seed(seed, "validation"))
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

    >>> summarize(pd.DataFrame({"em": [1.0, 0.0], "cover_em": [1.0, 1.0], "f1": [1.0, 0.5], "prediction": ["a", None],
    ...     "turns": [1, 2], "searches": [0, 1], "invalid_actions": [0, 1], "search_failures": [0, 0],
    ...     "response_tokens": [3, 5]}))["f1"]
    0.75
    """
    count = len(predictions)
    return {
        **{metric: float(predictions[metric].mean()) if count else 0.0 for metric in METRICS},
        "n": float(count),
        "answer_rate": float(predictions["prediction"].notna().mean()) if count else 0.0,
        "mean_turns": float(predictions["turns"].mean()) if count else 0.0,
        "mean_searches": float(predictions["searches"].mean()) if count else 0.0,
        "invalid_actions": float(predictions["invalid_actions"].sum()),
        "search_failures": float(predictions["search_failures"].sum()),
        "mean_response_tokens": float(predictions["response_tokens"].mean()) if count else 0.0,
    }


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


def plot_metrics(document: dict[str, Any], path: Path) -> None:
    """A grouped bar chart of EM, cover-EM and F1 per benchmark and mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = [m for m in document if m != "not_evaluated"]
    datasets = [d for d in document[modes[0]] if d != "average"] + ["average"]
    fig, axes = plt.subplots(1, len(METRICS), figsize=(18, 4), sharey=True)
    width = 0.8 / max(len(modes), 1)
    for ax, metric in zip(axes, METRICS, strict=True):
        for i, mode in enumerate(modes):
            values = [document[mode].get(d, {}).get(metric, 0.0) for d in datasets]
            positions = [x + i * width for x in range(len(datasets))]
            bars = ax.bar(positions, values, width=width, label=mode)
            ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)  # zeros stay visible as numbers
        ax.set_xticks(
            [x + width * (len(modes) - 1) / 2 for x in range(len(datasets))],
            datasets,
            rotation=30,
            ha="right",
        )
        ax.set_title(METRIC_NAMES[metric])
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("score")
    axes[-1].legend(title="mode")
    missing = document.get("not_evaluated", [])
    fig.suptitle("Real-search evaluation" + (f" (no data: {', '.join(missing)})" if missing else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _sample_size(max_questions: int | None) -> str:
    return "all" if max_questions is None else str(max_questions)


def render_eval_card(
    document: dict[str, Any],
    protocol: SearchProtocol,
    evaluation: EvalConfig,
    provenance: dict[str, str],
    engine_facts: dict[str, str],
    benchmark_files: dict[str, str],
    yes_no_exact: bool = True,
) -> str:
    """A Markdown card that states the evaluation protocol and the results.

    Args:
        document: The metrics document (:func:`metrics_document`).
        protocol: The search protocol the episodes ran with.
        evaluation: The ``eval`` section.
        provenance: ``policies`` (which models), ``model_source`` and ``seed``.
        engine_facts: The retriever's own description.
        benchmark_files: Benchmark name to the file it was read from.
        yes_no_exact: Whether F1 used HotpotQA's yes/no rule.
    """
    rollout = protocol.rollout
    lines = [
        "# Evaluation card",
        "",
        "## Protocol",
        f"- policies: {provenance['policies']} (source: {provenance['model_source']})",
        f"- modes: {', '.join(evaluation.modes)}; max turns {rollout.max_turns}, "
        f"{rollout.max_new_tokens_per_turn} new tokens per turn, temperature {rollout.temperature}",
        f"- retriever: {engine_facts.get('retriever', 'n/a')} via {engine_facts.get('backend', 'n/a')}"
        f", top-k {protocol.top_k}, documents cut to {rollout.max_doc_chars} characters",
        f"- corpus: {engine_facts.get('corpus_source', 'n/a')}, {engine_facts.get('passages', '?')} passages, "
        f"sha256 `{engine_facts.get('corpus_sha256', 'n/a')}`",
        "- metrics (SQuAD normalisation, best over the golden answers; answer = the last <answer> span): EM (strict "
        "exact match), cover-EM (a golden answer contained in the answer), F1 (token F1"
        + (", yes/no only match themselves)" if yes_no_exact else ", yes/no with partial credit)"),
        f"- {PAPER_METRICS}",
        "- prompt: "
        + ("this project's (render_policy_prompt)" if protocol.prompt_template is None else "a given template")
        + f"; chat template {'on' if rollout.use_chat_template else 'off'}",
        f"- questions: {_sample_size(evaluation.max_questions_per_benchmark)} per benchmark, seeded sample "
        f"(seed {provenance['seed']})",
        "",
        "## Files",
        *(f"- {name}: `{path}`" for name, path in benchmark_files.items()),
        "",
        "## Results",
        "",
        "| mode | benchmark | EM | cover-EM | F1 | n | answer rate | mean searches |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode in (m for m in document if m != "not_evaluated"):
        for dataset, values in document[mode].items():
            scores = " | ".join(f"{values[metric]:.3f}" for metric in METRICS)
            if dataset == "average":
                lines.append(f"| {mode} | **average** | {scores} | | | |")
                continue
            lines.append(
                f"| {mode} | {dataset} | {scores} | {int(values['n'])} | "
                f"{values['answer_rate']:.2f} | {values['mean_searches']:.2f} |"
            )
    missing = document.get("not_evaluated", [])
    if missing:
        lines += ["", f"Not evaluated (no data in data.files): {', '.join(missing)}."]
    return "\n".join(lines) + "\n"
