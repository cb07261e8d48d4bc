"""The multi-turn protocol: token layout and loss mask on scripted episodes, malformed output, real generation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from tests.fakes import DOCS, FakeSession, ScriptedPolicy
from zerosearch_core.agent.loop import run_episodes
from zerosearch_core.agent.prompts import (
    EMPTY_QUERY_OBSERVATION,
    INVALID_ACTION_OBSERVATION,
    SEARCH_FAILED_OBSERVATION,
    render_information_block,
)
from zerosearch_core.config import PipelineConfig
from zerosearch_core.models.build import load_causal_lm, load_tokenizer
from zerosearch_core.models.generation import HFPolicyGenerator
from zerosearch_core.search.base import (
    EpisodeContext,
    SearchBackendError,
    SearchErrorBudget,
)


@pytest.fixture(scope="module")
def tokenizer(tiny_policy_dir: Path):
    return load_tokenizer(tiny_policy_dir)


def _run(cfg: PipelineConfig, policy: ScriptedPolicy, session, budget=None, **overrides):
    rollout = dataclasses.replace(cfg.rollout, max_new_tokens_per_turn=64, **overrides)
    prompt = policy.encode("<|im_start|>user\nWho wrote Hamlet?<|im_end|>\n<|im_start|>assistant\n")
    budget = budget if budget is not None else SearchErrorBudget(0.0)
    return run_episodes(policy, [prompt], [session], rollout, top_k=1, error_budget=budget)[0], prompt


def test_search_then_answer_layout_and_mask(cfg: PipelineConfig, tokenizer) -> None:
    turn1 = "<think>I need to search.</think><search> author of Hamlet </search>"
    turn2 = "<think>Found it.</think><answer> William Shakespeare </answer>"
    policy = ScriptedPolicy(tokenizer, [turn1, turn2])
    session = FakeSession()
    traj, prompt = _run(cfg, policy, session)

    t1, t2 = policy.turns
    info = policy.encode(render_information_block(DOCS, cfg.rollout.max_doc_chars))
    assert list(traj.response_ids) == t1 + info + t2
    assert list(traj.loss_mask) == [1] * len(t1) + [0] * len(info) + [1] * len(t2)
    assert list(traj.prompt_ids) == prompt
    # token-in/token-out: turn 2 was generated from the exact ids of prompt + turn 1 + information block
    assert policy.seen[1] == prompt + t1 + info
    assert session.queries == ["author of Hamlet"]
    assert traj.answer == "William Shakespeare" and traj.finish_reason == "answer"
    assert (traj.turns, traj.searches, traj.invalid_actions) == (2, 1, 0)
    assert "<information>Doc 1(Title: Hamlet)" in traj.response_text


def test_sampled_ids_are_kept_even_when_retokenizing_would_differ(cfg: PipelineConfig, tokenizer) -> None:
    text = "<answer> Shakespeare </answer>"
    pieces = ["<answer>", *" Shakespeare ", "</answer>"]  # one character at a time: not how BPE would merge them
    odd_ids = [i for piece in pieces for i in policy_ids(tokenizer, piece)]
    assert odd_ids != policy_ids(tokenizer, text)  # a different segmentation of the same text
    policy = ScriptedPolicy(tokenizer, [""])
    policy.turns = [odd_ids]
    traj, _ = _run(cfg, policy, FakeSession())
    assert list(traj.response_ids) == odd_ids and traj.answer == "Shakespeare"


def policy_ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_no_tag_becomes_an_observation_not_an_exception(cfg: PipelineConfig, tokenizer) -> None:
    policy = ScriptedPolicy(tokenizer, ["just rambling", "<answer> x </answer>"])
    traj, _ = _run(cfg, policy, FakeSession())
    observation = policy.encode(INVALID_ACTION_OBSERVATION)
    first = policy.turns[0]
    assert list(traj.response_ids[: len(first) + len(observation)]) == first + observation
    assert list(traj.loss_mask[len(first) : len(first) + len(observation)]) == [0] * len(observation)
    assert traj.invalid_actions == 1 and traj.answer == "x"


def test_empty_query_is_an_observation_and_not_a_search(cfg: PipelineConfig, tokenizer) -> None:
    policy = ScriptedPolicy(tokenizer, ["<search>   </search>", "<answer> y </answer>"])
    session = FakeSession()
    traj, _ = _run(cfg, policy, session)
    assert session.queries == [] and traj.empty_queries == 1 and traj.searches == 0
    assert EMPTY_QUERY_OBSERVATION.strip() in traj.response_text


def test_two_answers_are_counted_as_malformed(cfg: PipelineConfig, tokenizer) -> None:
    policy = ScriptedPolicy(tokenizer, ["<answer> a </answer><answer> b </answer>"])
    traj, _ = _run(cfg, policy, FakeSession())
    assert traj.answer_spans == 2 and traj.answer == "b"


def test_eos_ends_and_turn_and_token_budgets_hold(cfg: PipelineConfig, tokenizer) -> None:
    eos = tokenizer.eos_token
    traj, _ = _run(cfg, ScriptedPolicy(tokenizer, [f"I give up{eos}"]), FakeSession())
    assert traj.finish_reason == "eos" and traj.answer is None and traj.turns == 1

    looping = ScriptedPolicy(tokenizer, ["<search> loop </search>"])
    traj, _ = _run(cfg, looping, FakeSession(), max_turns=3)
    assert traj.finish_reason == "max_turns" and traj.turns == 3 and traj.searches == 3

    capped = ScriptedPolicy(tokenizer, ["<search> loop </search>"])
    traj, _ = _run(cfg, capped, FakeSession(), max_turns=50, max_total_tokens=120)
    assert traj.finish_reason == "max_tokens" and traj.turns < 50
    assert all(len(seen) < 120 for seen in capped.seen)  # never asked to generate past the budget


def test_backend_failure_is_counted_then_fails_the_run(cfg: PipelineConfig, tokenizer) -> None:
    policy = ScriptedPolicy(tokenizer, ["<search> q </search>", "<answer> z </answer>"])
    lenient = SearchErrorBudget(max_error_rate=1.0)
    traj, _ = _run(cfg, policy, FakeSession(fail=True), budget=lenient)
    assert traj.search_failures == 1 and SEARCH_FAILED_OBSERVATION.strip() in traj.response_text
    with pytest.raises(SearchBackendError, match="search.max_error_rate=0.0"):
        _run(cfg, ScriptedPolicy(tokenizer, ["<search> q </search>"]), FakeSession(fail=True))


def test_direct_mode_never_searches(cfg: PipelineConfig, tokenizer) -> None:
    policy = ScriptedPolicy(tokenizer, ["<search> q </search>"])
    traj, _ = _run(cfg, policy, None)
    assert traj.searches == 0 and traj.invalid_actions >= 1


def test_real_generation_with_the_tiny_model(cfg: PipelineConfig, tiny_policy_dir: Path, tokenizer) -> None:
    model = load_causal_lm(tiny_policy_dir)
    generator = HFPolicyGenerator(model, tokenizer, temperature=1.0, seed=11)
    prompts = [policy_ids(tokenizer, "Question: who wrote Hamlet?"), policy_ids(tokenizer, "Question: capital?")]
    first = generator.generate(prompts, max_new_tokens=12)
    again = HFPolicyGenerator(model, tokenizer, temperature=1.0, seed=11).generate(prompts, max_new_tokens=12)
    assert first == again and all(1 <= len(ids) <= 12 and len(lps) == len(ids) for ids, lps in first)
    rollout = dataclasses.replace(cfg.rollout, max_new_tokens_per_turn=6, max_turns=2, batch_size=2)
    trajs = run_episodes(generator, prompts, [FakeSession(), FakeSession()], rollout, 1, SearchErrorBudget(0.0))
    for traj, prompt in zip(trajs, prompts, strict=True):
        assert list(traj.prompt_ids) == prompt and len(traj.loss_mask) == len(traj.response_ids) == len(traj.logprobs)

    # the old log-probs recorded while sampling equal a fresh forward pass over the same ids (temperature 1)
    from zerosearch_core.rl.ppo import build_token_batch, token_logprobs

    batch = build_token_batch(trajs, [0.0, 0.0], int(tokenizer.pad_token_id), mask_retrieved=True)
    with torch.no_grad():
        recomputed = token_logprobs(model, batch)
    for row, traj in enumerate(trajs):
        start = len(traj.prompt_ids) - 1
        for offset, (mask, recorded) in enumerate(zip(traj.loss_mask, traj.logprobs, strict=True)):
            if mask == 1:
                assert recorded == pytest.approx(float(recomputed[row, start + offset]), abs=1e-3)
            else:
                assert recorded == 0.0


def test_cut_at_stop_keeps_the_closing_tag_and_drops_the_rest(tiny_policy_dir: Path, tokenizer) -> None:
    generator = HFPolicyGenerator(load_causal_lm(tiny_policy_dir), tokenizer, temperature=0.0, seed=0)
    head = policy_ids(tokenizer, "<search> who </search>")
    tail = policy_ids(tokenizer, " trailing words")
    assert generator.cut_at_stop(head + tail) == head
    assert generator.cut_at_stop(tail + [tokenizer.eos_token_id] + tail) == tail + [tokenizer.eos_token_id]
    assert generator.cut_at_stop(tail) == tail


def test_episode_context_is_bound_per_episode() -> None:
    ctx = EpisodeContext("q", ("a",), 0.25, 9)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.noise_prob = 0.5  # type: ignore[misc]
