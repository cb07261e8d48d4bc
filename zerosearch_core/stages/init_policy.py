"""Stage ``init_policy``: build the tiny policy and tokenizer (CPU), or copy a pretrained checkpoint (GPU).

Run: ``python -m zerosearch_core.cli init_policy --params params.yaml``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from transformers import PreTrainedTokenizerBase

from zerosearch_core.artifacts import write_dir_atomically
from zerosearch_core.config import PipelineConfig
from zerosearch_core.models import (
    build_tiny_policy,
    load_causal_lm,
    load_tokenizer,
    parameter_count,
    save_policy,
)
from zerosearch_core.search.local import PASSAGES_FILE
from zerosearch_core.seeding import derive_seed
from zerosearch_core.stages import StageResult


def run(cfg: PipelineConfig) -> StageResult:
    """Materialise the initial policy in ``paths.policy_dir``: build the tiny model, or copy a pretrained one."""
    target = Path(cfg.paths.policy_dir)
    tokenizer: PreTrainedTokenizerBase
    if cfg.model.source == "tiny":
        passages = pd.read_parquet(Path(cfg.paths.index_dir) / PASSAGES_FILE)
        texts = (passages["title"] + "\n" + passages["text"]).tolist()
        model, tokenizer = build_tiny_policy(cfg.model, texts, seed=derive_seed(cfg.seed, "init_policy"))
    else:
        assert cfg.model.name_or_path is not None  # checked by ModelConfig
        tokenizer = load_tokenizer(cfg.model.name_or_path)
        model = load_causal_lm(cfg.model.name_or_path, cfg.model.dtype)
    write_dir_atomically(target, lambda folder: save_policy(model, tokenizer, folder))
    return StageResult(metrics={"parameters": float(parameter_count(model)), "vocab_size": float(len(tokenizer))})
