"""Stage ``evaluate``: score the policy with real search and without, by EM and F1, on every benchmark.

Writes per-question predictions, a bar chart and the evaluation card into ``paths.eval_dir`` and the DVC metrics
file ``paths.eval_metrics``. Run: ``python -m zerosearch_core.cli evaluate --params params.yaml``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pandas as pd

from zerosearch_core.artifacts import file_sha256, write_dir_atomically, write_text_atomically
from zerosearch_core.config import PipelineConfig
from zerosearch_core.data import benchmarks as benchmark_data
from zerosearch_core.evaluation import (
    BenchmarkRun,
    evaluate_benchmark,
    metrics_document,
    plot_metrics,
    render_eval_card,
)
from zerosearch_core.models import load_causal_lm, load_tokenizer
from zerosearch_core.rollout import HFPolicyGenerator, SearchProtocol
from zerosearch_core.search.base import SearchErrorBudget
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
    benchmarks_dir = Path(cfg.paths.benchmarks_dir)
    specs = {spec.name: spec for spec in cfg.data.files}
    budget = SearchErrorBudget(cfg.search.max_error_rate)
    protocol = SearchProtocol.from_sections(cfg.rollout, cfg.search)
    runs: list[BenchmarkRun] = []
    with open_search_engine(cfg.search, Path(cfg.paths.index_dir)) as engine:
        engine_facts = engine.describe()
        for policy in cfg.eval.policies:
            policy_dir = Path(POLICY_DIRS[policy](cfg))
            tokenizer = load_tokenizer(policy_dir)
            model = load_causal_lm(policy_dir, cfg.model.dtype)
            generator = HFPolicyGenerator(model, tokenizer, cfg.rollout.temperature, derive_seed(cfg.seed, "evaluate"))
            prefix = "" if policy == "trained" else f"{policy}."
            for name in cfg.eval.benchmarks:
                frame = benchmark_data.load_benchmark(benchmarks_dir, name)
                questions = benchmark_data.sample_questions(
                    frame, cfg.eval.max_questions_per_benchmark, derive_seed(cfg.seed, name)
                )
                for mode in cfg.eval.modes:
                    callback = (
                        hooks.progress(len(questions), f"{prefix}{name}/{mode}") if hooks.progress is not None else None
                    )
                    run = evaluate_benchmark(
                        name, questions, mode, generator, tokenizer, engine, protocol, cfg.seed, budget, callback
                    )
                    run = dataclasses.replace(run, mode=f"{prefix}{mode}")
                    run.predictions["policy"] = policy
                    logger.info("%s%s/%s: EM %.3f F1 %.3f", prefix, name, mode, run.metrics["em"], run.metrics["f1"])
                    runs.append(run)
    datasets = {name: str(specs[name].dataset) for name in cfg.eval.benchmarks}
    return _write_eval_outputs(cfg, runs, datasets, engine_facts)


POLICY_DIRS = {
    "trained": lambda cfg: cfg.paths.trained_policy_dir,
    "initial": lambda cfg: cfg.paths.policy_dir,
}
"""Where each policy named in ``eval.policies`` is loaded from."""


def _write_eval_outputs(
    cfg: PipelineConfig, runs: list[BenchmarkRun], datasets: dict[str, str], engine_facts: dict[str, str]
) -> StageResult:
    eval_dir = Path(cfg.paths.eval_dir)
    document = metrics_document(runs, datasets)
    benchmarks_dir = Path(cfg.paths.benchmarks_dir)
    benchmark_files = {
        name: f"{benchmarks_dir / f'{name}.parquet'} (sha256 {file_sha256(benchmarks_dir / f'{name}.parquet')})"
        for name in cfg.eval.benchmarks
    }
    policies = ", ".join(f"{policy} `{POLICY_DIRS[policy](cfg)}`" for policy in cfg.eval.policies)
    provenance = {"policies": policies, "model_source": cfg.model.source, "seed": str(cfg.seed)}
    protocol = SearchProtocol.from_sections(cfg.rollout, cfg.search)
    card = render_eval_card(document, protocol, cfg.eval, provenance, engine_facts, benchmark_files)

    def write(folder: Path) -> None:
        predictions = pd.concat([r.predictions for r in runs], ignore_index=True)
        predictions.to_json(folder / PREDICTIONS_FILE, orient="records", lines=True, force_ascii=False)
        plot_metrics(document, folder / CHART_FILE)
        (folder / CARD_FILE).write_text(card)

    write_dir_atomically(eval_dir, write)
    write_text_atomically(Path(cfg.paths.eval_metrics), json.dumps(document, indent=2) + "\n")
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
        Path(cfg.paths.eval_metrics),
    )
    return StageResult(metrics=flat, artifacts=artifacts)
