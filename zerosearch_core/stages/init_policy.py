"""Stage ``init_policy``: build the tiny policy and tokenizer (CPU), or copy a pretrained checkpoint (GPU), then
optionally warm it up (``cold_start``: pre-training on the corpus and SFT on real-search protocol trajectories).

Run: ``python -m zerosearch_core.cli init_policy --params params.yaml``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from zerosearch_core.artifacts import write_dir_atomically
from zerosearch_core.config import PipelineConfig
from zerosearch_core.data import benchmarks as benchmark_data
from zerosearch_core.policy.cold_start.recipe import REPORT_DIR, ColdStartSetup, run_recipe, save_start
from zerosearch_core.search.local import PASSAGES_FILE
from zerosearch_core.seeding import derive_seed
from zerosearch_core.stages import StageHooks, StageResult

PARAMS = (
    "seed",
    "model",
    "cold_start",
    "rollout.use_chat_template",  # the SFT trajectories' prompt and documents; not the generation engine
    "rollout.max_doc_chars",
    "rollout.max_turns",  # the reading check's episodes
    "rollout.max_new_tokens_per_turn",
    "rollout.max_total_tokens",
    "rollout.batch_size",
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
    setup = ColdStartSetup(
        model=cfg.model,
        cold_start=cfg.cold_start,
        rollout=cfg.rollout,
        search=cfg.search,
        seed=cfg.seed,
        index_dir=Path(cfg.paths.index_dir),
        corpus_texts=corpus_texts,
        sft_questions=_sft_questions(cfg),
    )
    start = run_recipe(setup, hooks.log_step)
    write_dir_atomically(target, lambda folder: save_start(start, folder))
    artifacts = (target / REPORT_DIR,) if any(start.curves.values()) else ()
    return StageResult(metrics=start.metrics, artifacts=artifacts)


def _sft_questions(cfg: PipelineConfig) -> pd.DataFrame:
    """The seeded sample of questions the cold-start SFT is built from (empty when SFT is off)."""
    name = cfg.cold_start.sft_questions
    if name is None:
        return pd.DataFrame({"id": [], "question": [], "golden_answers": []})
    frame = benchmark_data.load_benchmark(Path(cfg.paths.benchmarks_dir), name)
    return benchmark_data.sample_questions(frame, cfg.cold_start.sft_examples, derive_seed(cfg.seed, "cold_start_sft"))
