"""Stage ``evaluate``: score the policy with real search and without, by EM and F1, on every benchmark.

Writes per-question predictions, a bar chart and the evaluation card into ``paths.eval_dir`` and the DVC metrics
file ``paths.eval_metrics``. Run: ``python -m zerosearch_core.cli evaluate --params params.yaml``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from zerosearch_core.agent.loop import SearchProtocol
from zerosearch_core.artifacts import file_sha256, write_dir_atomically, write_text_atomically
from zerosearch_core.config import PipelineConfig
from zerosearch_core.data import benchmarks as benchmark_data
from zerosearch_core.evaluation.benchmarks import BenchmarkRun, bridge_names, evaluate_benchmark, metrics_document
from zerosearch_core.evaluation.card import plot_metrics, render_eval_card
from zerosearch_core.models.build import load_causal_lm, load_tokenizer
from zerosearch_core.models.generation import open_policy_backend
from zerosearch_core.search.base import SearchEngine, SearchErrorBudget
from zerosearch_core.search.local import passage_titles
from zerosearch_core.search.registry import open_search_engine
from zerosearch_core.seeding import derive_seed
from zerosearch_core.stages import StageHooks, StageResult

logger = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions.jsonl"
CHART_FILE = "em_f1_by_benchmark.png"
CARD_FILE = "eval_card.md"


PARAMS = (
    "seed",
    "data.files",
    "search.backend",
    "search.url",
    "search.web_url",
    "search.top_k",
    "search.max_error_rate",
    "model.source",
    "model.dtype",
    "rollout",
    "eval",
    "reward.yes_no_exact",
    "paths.benchmarks_dir",
    "paths.index_dir",
    "paths.policy_dir",
    "paths.trained_policy_dir",
    "paths.eval_dir",
    "paths.eval_metrics",
)
"""The config keys this stage reads (DVC tracks them; see scripts/sync_dvc_deps.py)."""


def run(cfg: PipelineConfig, hooks: StageHooks) -> StageResult:
    """Evaluate every policy in ``eval.policies`` on every configured benchmark and mode; write predictions,
    metrics, chart and card. The trained policy's modes are keyed ``search``/``direct``, the initial policy's
    ``initial.search``/``initial.direct``."""
    models = {
        ("" if policy == "trained" else f"{policy}."): Path(POLICY_DIRS[policy](cfg)) for policy in cfg.eval.policies
    }
    with open_search_engine(cfg.search, Path(cfg.paths.index_dir)) as engine:
        return evaluate_models(
            cfg, models, engine, cfg.eval.benchmarks, Path(cfg.paths.eval_dir), Path(cfg.paths.eval_metrics), hooks
        )


def evaluate_models(
    cfg: PipelineConfig,
    models: dict[str, Path],
    engine: SearchEngine,
    benchmarks: Sequence[str],
    eval_dir: Path,
    metrics_path: Path,
    hooks: StageHooks,
    prompt_template: str | None = None,
) -> StageResult:
    """Score each model folder on ``benchmarks`` in every mode of ``eval.modes`` with ``engine``, and write the
    predictions, metrics, chart and card (the ``evaluate`` stage, and ``zerosearch evaluate_checkpoint``).

    Args:
        cfg: The config (rollout, eval, search, reward and seed sections are read).
        models: Mode-key prefix (``""`` or ``"initial."``) to the model folder scored under it.
        engine: The real search engine.
        benchmarks: Artifact names of ``data.files`` to score on.
        eval_dir: Receives predictions, chart and card (replaced as a whole).
        metrics_path: Receives the metrics document.
        hooks: Progress bars.
        prompt_template: A search-mode prompt with ``{question}``; None uses this project's.
    """
    benchmarks_dir = Path(cfg.paths.benchmarks_dir)
    specs = {spec.name: spec for spec in cfg.data.files}
    budget = SearchErrorBudget(cfg.search.max_error_rate)
    protocol = dataclasses.replace(
        SearchProtocol.from_sections(cfg.rollout, cfg.search), prompt_template=prompt_template
    )
    runs: list[BenchmarkRun] = []
    engine_facts = engine.describe()
    titles = passage_titles(Path(cfg.paths.index_dir))  # the bridge entity of multi-hop questions
    for prefix, policy_dir in models.items():
        tokenizer = load_tokenizer(policy_dir)
        with open_policy_backend(cfg.rollout, Path(policy_dir), tokenizer, cfg.model.dtype, cfg.seed) as backend:
            # vLLM starts from the folder's weights; transformers generates with the model loaded here
            model = load_causal_lm(policy_dir, cfg.model.dtype) if backend.vllm is None else None
            generator = backend.generator(model, cfg.rollout.temperature, derive_seed(cfg.seed, "evaluate"))
            for name in benchmarks:
                frame = benchmark_data.load_benchmark(benchmarks_dir, name)
                questions = benchmark_data.sample_questions(
                    frame, cfg.eval.max_questions_per_benchmark, derive_seed(cfg.seed, name)
                )
                for mode in cfg.eval.modes:
                    label = f"{prefix}{name}/{mode}"
                    callback = hooks.progress(len(questions), label) if hooks.progress is not None else None
                    run = evaluate_benchmark(
                        name,
                        questions,
                        mode,
                        generator,
                        tokenizer,
                        engine,
                        protocol,
                        cfg.seed,
                        budget,
                        callback,
                        yes_no_exact=cfg.reward.yes_no_exact,
                        bridges=bridge_names(questions, titles),
                    )
                    run = dataclasses.replace(run, mode=f"{prefix}{mode}")
                    run.predictions["policy"] = prefix.rstrip(".") or "trained"
                    run.predictions["model"] = str(policy_dir)
                    scores = run.metrics
                    logger.info(
                        "%s: EM %.3f cover-EM %.3f F1 %.3f", label, scores["em"], scores["cover_em"], scores["f1"]
                    )
                    runs.append(run)
    datasets = {name: str(specs[name].dataset) for name in benchmarks}
    policies = ", ".join(
        f"`{path}`" + (f" ({prefix.rstrip('.')})" if prefix else "") for prefix, path in models.items()
    )
    return _write_eval_outputs(cfg, runs, datasets, engine_facts, policies, eval_dir, metrics_path, protocol)


POLICY_DIRS = {
    "trained": lambda cfg: cfg.paths.trained_policy_dir,
    "initial": lambda cfg: cfg.paths.policy_dir,
}
"""Where each policy named in ``eval.policies`` is loaded from."""


def _write_eval_outputs(
    cfg: PipelineConfig,
    runs: list[BenchmarkRun],
    datasets: dict[str, str],
    engine_facts: dict[str, str],
    policies: str,
    eval_dir: Path,
    metrics_path: Path,
    protocol: SearchProtocol,
) -> StageResult:
    document = metrics_document(runs, datasets)
    benchmarks_dir = Path(cfg.paths.benchmarks_dir)
    benchmark_files = {
        name: f"{benchmarks_dir / f'{name}.parquet'} (sha256 {file_sha256(benchmarks_dir / f'{name}.parquet')})"
        for name in datasets
    }
    provenance = {"policies": policies, "model_source": cfg.model.source, "seed": str(cfg.seed)}
    card = render_eval_card(
        document, protocol, cfg.eval, provenance, engine_facts, benchmark_files, cfg.reward.yes_no_exact
    )

    def write(folder: Path) -> None:
        predictions = pd.concat([r.predictions for r in runs], ignore_index=True)
        predictions.to_json(folder / PREDICTIONS_FILE, orient="records", lines=True, force_ascii=False)
        plot_metrics(document, folder / CHART_FILE)
        (folder / CARD_FILE).write_text(card)

    write_dir_atomically(eval_dir, write)
    write_text_atomically(metrics_path, json.dumps(document, indent=2) + "\n")
    flat = {
        f"{mode}.{bench}.{metric}": value
        for mode, per_bench in document.items()
        if mode != "not_evaluated"
        for bench, values in per_bench.items()
        for metric, value in values.items()
    }
    artifacts = (
        eval_dir / CARD_FILE,
        eval_dir / CHART_FILE,
        eval_dir / PREDICTIONS_FILE,
        metrics_path,
    )
    return StageResult(metrics=flat, artifacts=artifacts)
