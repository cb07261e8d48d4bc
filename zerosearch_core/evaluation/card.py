"""What a person reads of an evaluation: the per-benchmark bar chart and the evaluation card that states the protocol.

Rendering only: nothing here changes a score, so the training stages do not depend on this file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zerosearch_core.agent.loop import SearchProtocol
from zerosearch_core.agent.rewards import METRICS
from zerosearch_core.config import EvalConfig
from zerosearch_core.evaluation.benchmarks import METRIC_NAMES, PAPER_METRICS


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
