"""The work of each DVC stage, free of experiment tracking: every function takes the config and returns what the CLI
logs (metrics, artifact paths). ``cli.py`` wraps each one in an MLflow run.

Stages, in DAG order: ``prepare_data`` → ``build_index`` → ``init_policy`` → ``evaluate``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from zerosearch_core import data as benchmark_data
from zerosearch_core.artifacts import file_sha256, write_dir_atomically, write_text_atomically
from zerosearch_core.config import PipelineConfig
from zerosearch_core.corpus import corpus_sha256, load_corpus
from zerosearch_core.evaluation import (
    BenchmarkRun,
    derive_seed,
    evaluate_benchmark,
    metrics_document,
    plot_metrics,
    render_eval_card,
    sample_questions,
)
from zerosearch_core.models import (
    build_tiny_policy,
    load_causal_lm,
    load_tokenizer,
    parameter_count,
    save_policy,
)
from zerosearch_core.rollout import HFPolicyGenerator
from zerosearch_core.search.base import SearchErrorBudget
from zerosearch_core.search.local import BM25Retriever, DenseRetriever, write_index
from zerosearch_core.search.registry import open_search_engine
from zerosearch_core.validation import DataValidationError, validate_benchmarks

logger = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions.jsonl"
CHART_FILE = "em_f1_by_benchmark.png"
CARD_FILE = "eval_card.md"

ProgressFactory = Callable[[int, str], Callable[[int], None]]
"""Makes a progress callback for ``total`` items with a description (the CLI passes tqdm)."""


@dataclass(frozen=True)
class StageResult:
    """What a stage produced, for the tracker."""

    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: tuple[Path, ...] = ()


def prepare_data(cfg: PipelineConfig) -> StageResult:
    """Read, normalise and validate every benchmark file; write all artifacts or none.

    The Great Expectations report is written to ``<reports_dir>/prepare_data`` whether validation passes or not.

    Raises:
        DataValidationError: Any expectation failed; no benchmark artifact was changed.
    """
    source_dir = Path(cfg.data.source_dir)
    report_dir = Path(cfg.paths.reports_dir) / "prepare_data"
    frames = {spec.name: (spec, benchmark_data.read_raw(spec, source_dir)) for spec in cfg.data.files}
    outcome = validate_benchmarks(frames, cfg.data, report_dir)
    if not outcome.success:
        raise DataValidationError(outcome.summary(), report_dir)
    normalized = outcome.normalized
    manifest = {
        name: {
            "rows": len(frame),
            "source": benchmark_data.source_label(frames[name][0]),
            "dataset": frames[name][0].dataset,
        }
        for name, frame in normalized.items()
    }

    def write(folder: Path) -> None:
        for name, frame in normalized.items():
            frame.to_parquet(folder / f"{name}.parquet", index=False)
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")

    write_dir_atomically(Path(cfg.paths.benchmarks_dir), write)
    metrics = {f"rows.{name}": float(len(frame)) for name, frame in normalized.items()}
    metrics.update(
        {f"duplicates_collapsed.{name}": float(len(rows)) for name, rows in outcome.collapsed.items()}
    )
    metrics["expectations_evaluated"] = float(outcome.evaluated)
    return StageResult(metrics=metrics, artifacts=(report_dir,))


def build_index(cfg: PipelineConfig) -> StageResult:
    """Load the corpus, build the configured index, and write both with a manifest holding the corpus hash."""
    passages = load_corpus(cfg.search.corpus_source, cfg.search.max_passages)
    sha = corpus_sha256(passages)
    logger.info("Corpus %s: %d passages, sha256 %s", cfg.search.corpus_source, len(passages), sha)
    retriever: BM25Retriever | DenseRetriever
    match cfg.search.retriever:
        case "bm25":
            retriever = BM25Retriever.build(passages)
        case "dense":
            retriever = DenseRetriever.build(passages, cfg.search.dense_model_path)
        case other:
            raise ValueError(f"Unknown search.retriever {other!r}; use 'bm25' or 'dense'.")
    manifest: dict[str, object] = {
        "corpus_source": cfg.search.corpus_source,
        "corpus_sha256": sha,
        "passages": len(passages),
    }
    if isinstance(retriever, DenseRetriever):
        manifest["dense_model_path"] = retriever.model_path
    index_dir = Path(cfg.paths.index_dir)
    write_dir_atomically(index_dir, lambda folder: write_index(retriever, folder, manifest))
    return StageResult(metrics={"passages": float(len(passages))}, artifacts=(index_dir / "manifest.json",))


def init_policy(cfg: PipelineConfig) -> StageResult:
    """Materialise the initial policy in ``paths.policy_dir``: build the tiny model, or copy a pretrained one."""
    target = Path(cfg.paths.policy_dir)
    if cfg.model.source == "tiny":
        passages = pd.read_parquet(Path(cfg.paths.index_dir) / "passages.parquet")
        texts = (passages["title"] + "\n" + passages["text"]).tolist()
        model, tokenizer = build_tiny_policy(cfg.model, texts, seed=derive_seed(cfg.seed, "init_policy"))
    else:
        assert cfg.model.name_or_path is not None  # checked by ModelConfig
        tokenizer = load_tokenizer(cfg.model.name_or_path)
        model = load_causal_lm(cfg.model.name_or_path, cfg.model.dtype)
    write_dir_atomically(target, lambda folder: save_policy(model, tokenizer, folder))
    return StageResult(
        metrics={"parameters": float(parameter_count(model)), "vocab_size": float(len(tokenizer))}
    )


def evaluate(cfg: PipelineConfig, progress: ProgressFactory | None = None) -> StageResult:
    """Evaluate the policy on every configured benchmark and mode; write predictions, metrics, chart and card."""
    policy_dir = Path(cfg.paths.policy_dir)
    tokenizer = load_tokenizer(policy_dir)
    model = load_causal_lm(policy_dir, cfg.model.dtype)
    generator = HFPolicyGenerator(
        model, tokenizer, cfg.rollout.temperature, derive_seed(cfg.seed, "evaluate")
    )
    benchmarks_dir = Path(cfg.paths.benchmarks_dir)
    specs = {spec.name: spec for spec in cfg.data.files}
    budget = SearchErrorBudget(cfg.search.max_error_rate)
    runs: list[BenchmarkRun] = []
    with open_search_engine(cfg.search, Path(cfg.paths.index_dir)) as engine:
        engine_facts = engine.describe()
        for name in cfg.eval.benchmarks:
            frame = benchmark_data.load_benchmark(benchmarks_dir, name)
            questions = sample_questions(
                frame, cfg.eval.max_questions_per_benchmark, derive_seed(cfg.seed, name)
            )
            for mode in cfg.eval.modes:
                callback = progress(len(questions), f"{name}/{mode}") if progress is not None else None
                run = evaluate_benchmark(
                    name, questions, mode, generator, tokenizer, engine, cfg, budget, callback
                )
                logger.info("%s/%s: EM %.3f F1 %.3f", name, mode, run.metrics["em"], run.metrics["f1"])
                runs.append(run)
    datasets = {name: str(specs[name].dataset) for name in cfg.eval.benchmarks}
    return _write_eval_outputs(cfg, runs, datasets, engine_facts)


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
    card = render_eval_card(cfg, document, engine_facts, benchmark_files, cfg.paths.policy_dir)

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
