"""Stage ``init_policy``: build the tiny policy and tokenizer (CPU), or copy a pretrained checkpoint (GPU), then
optionally warm it up (``cold_start``: pre-training on the corpus and SFT on real-search protocol trajectories).

Run: ``python -m zerosearch_core.cli init_policy --params params.yaml``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
from transformers import PreTrainedTokenizerBase

from zerosearch_core.artifacts import write_dir_atomically
from zerosearch_core.cold_start import (
    SFTExample,
    build_sft_examples,
    plot_cold_start,
    read_pretrain_texts,
    run_cold_start,
    tokenizer_texts,
)
from zerosearch_core.config import PipelineConfig
from zerosearch_core.data import benchmarks as benchmark_data
from zerosearch_core.models import (
    build_tiny_policy,
    load_causal_lm,
    load_tokenizer,
    parameter_count,
    save_policy,
)
from zerosearch_core.search.local import PASSAGES_FILE
from zerosearch_core.search.registry import open_search_engine
from zerosearch_core.seeding import derive_seed
from zerosearch_core.stages import StageHooks, StageResult

logger = logging.getLogger(__name__)

COLD_START_DIR = "cold_start"


PARAMS = (
    "seed",
    "model",
    "cold_start",
    "rollout.use_chat_template",  # the SFT trajectories' prompt and documents; not the generation engine
    "rollout.max_doc_chars",
    "search",
    "paths.benchmarks_dir",
    "paths.index_dir",
    "paths.policy_dir",
)
"""The config keys this stage reads (DVC tracks them; see scripts/sync_dvc_deps.py)."""


def run(cfg: PipelineConfig, hooks: StageHooks) -> StageResult:
    """Materialise the initial policy in ``paths.policy_dir``: build the tiny model or copy a pretrained one, then
    run the configured cold start."""
    target = Path(cfg.paths.policy_dir)
    corpus_texts: list[str] = []
    if cfg.model.source == "tiny" or cfg.cold_start.pretrain_steps:  # the corpus trains the tokenizer or the LM
        passages = pd.read_parquet(Path(cfg.paths.index_dir) / PASSAGES_FILE)
        corpus_texts = (passages["title"] + "\n" + passages["text"]).tolist()
    extra_texts: list[str] = []
    if cfg.cold_start.pretrain_texts is not None:
        extra_texts = read_pretrain_texts(Path(cfg.cold_start.pretrain_texts))
    sft_questions = _sft_questions(cfg)
    tokenizer: PreTrainedTokenizerBase
    if cfg.model.source == "tiny":
        texts = tokenizer_texts(corpus_texts, sft_questions["question"].tolist(), extra_texts)
        model, tokenizer = build_tiny_policy(cfg.model, texts, seed=derive_seed(cfg.seed, "init_policy"))
    else:
        assert cfg.model.name_or_path is not None  # checked by ModelConfig
        tokenizer = load_tokenizer(cfg.model.name_or_path)
        model = load_causal_lm(cfg.model.name_or_path, cfg.model.dtype)
    metrics = {"parameters": float(parameter_count(model)), "vocab_size": float(len(tokenizer))}
    if extra_texts:
        metrics["cold_start.pretrain_texts"] = float(len(extra_texts))
    examples: list[SFTExample] = []
    if len(sft_questions):
        with open_search_engine(cfg.search, Path(cfg.paths.index_dir)) as engine:
            examples = build_sft_examples(
                sft_questions,
                tokenizer,
                engine,
                cfg.rollout,
                cfg.search.top_k,
                cfg.cold_start.sft_search_share,
                derive_seed(cfg.seed, "cold_start_search"),
            )
        metrics["cold_start.sft_examples"] = float(len(examples))
        metrics["cold_start.sft_searching_examples"] = float(sum(e.searches for e in examples))

    def on_step(phase: str, step: int, loss: float) -> None:
        if hooks.log_step is not None:
            hooks.log_step({f"cold_start.{phase}_loss": loss}, step)

    curves = run_cold_start(
        model,
        tokenizer,
        cfg.cold_start,
        corpus_texts,
        examples,
        derive_seed(cfg.seed, "cold_start"),
        on_step,
        extra_texts,
    )
    for phase, losses in curves.items():
        if losses:
            metrics[f"cold_start.{phase}_final_loss"] = losses[-1]
            logger.info("Cold start %s: %d steps, loss %.3f -> %.3f", phase, len(losses), losses[0], losses[-1])

    def write(folder: Path) -> None:
        save_policy(model, tokenizer, folder)
        if any(curves.values()):
            report = folder / COLD_START_DIR
            report.mkdir()
            (report / "losses.json").write_text(json.dumps(curves) + "\n")
            plot_cold_start(curves, report / "losses.png")
            if examples:
                sample = str(tokenizer.decode(list(examples[0].input_ids)))
                (report / "sft_example.txt").write_text(sample + "\n")

    write_dir_atomically(target, write)
    artifacts = (target / COLD_START_DIR,) if any(curves.values()) else ()
    return StageResult(metrics=metrics, artifacts=artifacts)


def _sft_questions(cfg: PipelineConfig) -> pd.DataFrame:
    """The seeded sample of questions the cold-start SFT is built from (empty when SFT is off)."""
    name = cfg.cold_start.sft_questions
    if name is None:
        return pd.DataFrame({"id": [], "question": [], "golden_answers": []})
    frame = benchmark_data.load_benchmark(Path(cfg.paths.benchmarks_dir), name)
    return benchmark_data.sample_questions(frame, cfg.cold_start.sft_examples, derive_seed(cfg.seed, "cold_start_sft"))
