"""The model factory: a tokenizer trained here with the protocol tags, a tiny model saved and loaded by path."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import AutoConfig

from zerosearch_core.config import PipelineConfig
from zerosearch_core.models.build import (
    PROTOCOL_TAGS,
    build_tiny_policy,
    load_causal_lm,
    load_tokenizer,
    parameter_count,
    save_policy,
)
from zerosearch_core.stages import StageHooks, init_policy


def test_protocol_tags_are_single_special_tokens(tiny_policy_dir: Path) -> None:
    tokenizer = load_tokenizer(tiny_policy_dir)
    for tag in PROTOCOL_TAGS:
        ids = tokenizer(tag, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, tag
        assert tag in tokenizer.all_special_tokens
    text = "<think>hm</think><search>who wrote hamlet</search>"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=False) == text
    assert tokenizer.padding_side == "left" and tokenizer.pad_token_id != tokenizer.eos_token_id


def test_chat_template_is_chatml(tiny_policy_dir: Path) -> None:
    tokenizer = load_tokenizer(tiny_policy_dir)
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Question: x"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered == "<|im_start|>user\nQuestion: x<|im_end|>\n<|im_start|>assistant\n"


def test_saved_model_loads_by_path_like_a_real_checkpoint_and_trains(tiny_policy_dir: Path) -> None:
    assert AutoConfig.from_pretrained(tiny_policy_dir).model_type == "qwen2"
    model = load_causal_lm(tiny_policy_dir)
    tokenizer = load_tokenizer(tiny_policy_dir)
    batch = tokenizer(["Paris is the capital of France."], return_tensors="pt")
    model.train()
    output = model(**batch, labels=batch["input_ids"])
    assert torch.isfinite(output.loss) and output.loss.item() > 0
    output.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.parametrize("architecture", ["qwen2", "llama"])
def test_a_tokenizer_trained_here_reloads_exactly_as_it_was_trained(
    cfg: PipelineConfig, corpus: pd.DataFrame, tmp_path: Path, architecture: str
) -> None:
    """The stages after init_policy load the policy's tokenizer by path; it must encode what the cold start trained
    on token for token. AutoTokenizer alone builds Qwen2Tokenizer for a qwen2 model, which splits digits."""
    texts = [*corpus["text"].tolist(), "Doc 1(Title: A) Doc 2(Title: B) Doc 3(Title: C) in 1987 and 2024"] * 5
    model, trained = build_tiny_policy(
        dataclasses.replace(cfg.model, architecture=architecture, vocab_size=400), texts, seed=0
    )
    save_policy(model, trained, tmp_path)
    loaded = load_tokenizer(tmp_path)
    sample = "<search> Who won in 1987? </search>\n\n<information>Doc 1(Title: A) x\nDoc 2(Title: B) y</information>"
    expected = trained(sample, add_special_tokens=False)["input_ids"]
    assert [trained.decode([i]) for i in expected][6:9] != ["1", "9", "8"]  # the trained BPE keeps " 1987" whole
    assert loaded(sample, add_special_tokens=False)["input_ids"] == expected
    assert loaded.apply_chat_template(
        [{"role": "user", "content": "Doc 1"}], tokenize=True, add_generation_prompt=True
    ) == trained.apply_chat_template([{"role": "user", "content": "Doc 1"}], tokenize=True, add_generation_prompt=True)
    assert loaded.padding_side == "left"


def test_same_seed_same_weights_and_llama_variant(cfg: PipelineConfig, corpus: pd.DataFrame) -> None:
    texts = corpus["text"].head(200).tolist()
    small = dataclasses.replace(cfg.model, vocab_size=600, hidden_size=16, intermediate_size=32)
    first, _ = build_tiny_policy(small, texts, seed=3)
    second, _ = build_tiny_policy(small, texts, seed=3)
    third, _ = build_tiny_policy(small, texts, seed=4)
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters(), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first.parameters(), third.parameters(), strict=True))
    llama, _ = build_tiny_policy(dataclasses.replace(small, architecture="llama"), texts, seed=3)
    assert llama.config.model_type == "llama"
    assert parameter_count(llama) > 0


def test_init_policy_stage_writes_a_loadable_policy(cfg: PipelineConfig) -> None:
    from zerosearch_core.stages import build_index

    build_index.run(cfg, StageHooks())
    result = init_policy.run(cfg, StageHooks())
    policy_dir = Path(cfg.paths.policy_dir)
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= {
        p.name for p in policy_dir.iterdir()
    }
    assert result.metrics["vocab_size"] == len(load_tokenizer(policy_dir))
    assert load_causal_lm(policy_dir).config.hidden_size == cfg.model.hidden_size


def test_init_policy_with_a_pretrained_path_copies_it(cfg: PipelineConfig, tiny_policy_dir: Path) -> None:
    pretrained = dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, source="pretrained", name_or_path=str(tiny_policy_dir))
    )
    init_policy.run(pretrained, StageHooks())
    copied = load_causal_lm(cfg.paths.policy_dir)
    original = load_causal_lm(tiny_policy_dir)
    assert all(torch.equal(a, b) for a, b in zip(copied.parameters(), original.parameters(), strict=True))


def test_bad_model_config_is_refused() -> None:
    from zerosearch_core.config import ConfigError, ModelConfig

    with pytest.raises(ConfigError, match="not divisible"):
        ModelConfig("tiny", None, "qwen2", 30, 2, 4, 2, 64, 500, 128, "float32")
