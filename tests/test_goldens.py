"""Goldens that pin behaviour a refactor must not change: the token and mask layout of one scripted search episode,
and a 5-step loss trajectory of the tiny model (with the environment it was recorded in).

Regenerate after an intended change, and say why in the commit: ``UPDATE_GOLDEN=1 .venv/bin/python -m pytest
tests/test_goldens.py``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
from pathlib import Path

import pytest
import torch
import transformers

from tests.fakes import FakeSession, ScriptedPolicy
from zerosearch_core.agent.loop import run_episodes
from zerosearch_core.config import PipelineConfig
from zerosearch_core.models.build import build_tiny_policy, load_tokenizer
from zerosearch_core.policy.cold_start.training import train_causal_lm
from zerosearch_core.search.base import SearchErrorBudget

GOLDEN_DIR = Path(__file__).parent / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def _check(name: str, actual: dict) -> dict:
    path = GOLDEN_DIR / name
    if UPDATE:
        path.write_text(json.dumps(actual, indent=1) + "\n")
    if not path.is_file():
        pytest.fail(f"{path} is missing; record it with UPDATE_GOLDEN=1 (and say why in the commit)")
    return json.loads(path.read_text())


def test_scripted_episode_token_and_mask_layout(cfg: PipelineConfig, tiny_policy_dir: Path) -> None:
    tokenizer = load_tokenizer(tiny_policy_dir)
    policy = ScriptedPolicy(
        tokenizer,
        [
            "<think>I need to search.</think><search> author of Hamlet </search>",
            "<think>Found it.</think><answer> William Shakespeare </answer>",
        ],
    )
    rollout = dataclasses.replace(cfg.rollout, max_new_tokens_per_turn=64)
    prompt = policy.encode("<|im_start|>user\nWho wrote Hamlet?<|im_end|>\n<|im_start|>assistant\n")
    (trajectory,) = run_episodes(policy, [prompt], [FakeSession()], rollout, 1, SearchErrorBudget(0.0))
    segments: list[dict] = []  # consecutive tokens with the same mask, decoded
    for token, mask in zip(trajectory.response_ids, trajectory.loss_mask, strict=True):
        if not segments or segments[-1]["loss_mask"] != mask:
            segments.append({"loss_mask": mask, "ids": []})
        segments[-1]["ids"].append(token)
    layout = {
        "prompt_tokens": len(trajectory.prompt_ids),
        "segments": [{**s, "text": tokenizer.decode(s["ids"]), "tokens": len(s["ids"])} for s in segments],
        "answer": trajectory.answer,
        "finish_reason": trajectory.finish_reason,
    }
    for segment in layout["segments"]:
        del segment["ids"]
    assert layout == _check("episode_layout.json", layout)
    assert [s["loss_mask"] for s in layout["segments"]] == [1, 0, 1]  # retrieved tokens get no loss


def test_five_step_loss_trajectory_of_the_tiny_model(cfg: PipelineConfig, corpus) -> None:  # type: ignore[no-untyped-def]
    texts = (corpus["title"] + "\n" + corpus["text"]).head(200).tolist()
    model_cfg = dataclasses.replace(cfg.model, vocab_size=600, hidden_size=32, intermediate_size=64, num_layers=2)
    torch.manual_seed(0)
    model, tokenizer = build_tiny_policy(model_cfg, texts, seed=3)
    sequences = [list(tokenizer(t, add_special_tokens=False)["input_ids"])[:48] for t in texts[:32]]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        losses = train_causal_lm(model, sequences, None, 5, 8, 1e-3, int(tokenizer.pad_token_id), 11, "golden")
    recorded = {
        "losses": losses,
        "environment": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "machine": platform.machine(),
        },
    }
    golden = _check("loss_trajectory.json", recorded)
    assert losses == pytest.approx(golden["losses"], rel=1e-4), f"recorded in {golden['environment']}"
    assert losses[-1] < losses[0]
