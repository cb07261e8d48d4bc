"""The OpenAI-compatible simulator server on 127.0.0.1: the official openai client, batching, caching, bounded
queue, deadlines, and a server that dies mid-run failing the run with a clear error."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
import requests

from zerosearch_core.config import PipelineConfig
from zerosearch_core.models import load_causal_lm, load_tokenizer
from zerosearch_core.rollout import run_episodes
from zerosearch_core.search.base import EpisodeContext, SearchBackendError, SearchErrorBudget
from zerosearch_core.search.http import free_port, running_server
from zerosearch_core.simulator.engine import SimulatedSearchEngine
from zerosearch_core.simulator.llm import LocalLLM
from zerosearch_core.simulator.server import OpenAICompatibleLLM, create_simulator_app


@pytest.fixture(scope="module")
def llm(tiny_policy_dir: Path) -> LocalLLM:
    return LocalLLM(load_causal_lm(tiny_policy_dir), load_tokenizer(tiny_policy_dir))


class SlowLLM(LocalLLM):
    """A real local model that takes at least ``delay_s`` per batch."""

    def __init__(self, inner: LocalLLM, delay_s: float) -> None:
        super().__init__(inner.model, inner.tokenizer)
        self.delay_s = delay_s

    def complete_rendered(self, texts: Sequence[str], max_new_tokens: int, temperature: float, seed: int) -> list[str]:
        time.sleep(self.delay_s)
        return super().complete_rendered(texts, max_new_tokens, temperature, seed)


def _serve(llm: LocalLLM, **options: float):
    settings = {"max_batch_size": 16, "batch_wait_ms": 50, "max_queue": 64, "request_timeout_s": 30} | options
    app = create_simulator_app(llm, "simulator", **settings)  # type: ignore[arg-type]
    return running_server(app, "127.0.0.1", free_port("127.0.0.1"))


def test_official_openai_client_gets_documents_back(llm: LocalLLM) -> None:
    with _serve(llm) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        chat = client.chat.completions.create(
            model="simulator",
            messages=[{"role": "user", "content": "Write documents about Paris."}],
            max_tokens=16,
            seed=3,
        )
        assert isinstance(chat.choices[0].message.content, str) and chat.choices[0].message.role == "assistant"
        completion = client.completions.create(model="simulator", prompt="Doc 1:", max_tokens=8, seed=3)
        assert isinstance(completion.choices[0].text, str)
        assert [m.id for m in client.models.list().data] == ["simulator"]


def test_concurrent_requests_are_batched_and_identical_ones_cached(llm: LocalLLM) -> None:
    with _serve(llm) as url:

        def ask(seed: int) -> str:
            body = {"messages": [{"role": "user", "content": f"query {seed}"}], "max_tokens": 8, "seed": seed}
            reply = requests.post(f"{url}/v1/chat/completions", json=body, timeout=30)
            reply.raise_for_status()
            return reply.json()["choices"][0]["message"]["content"]

        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(ask, range(16)))
        health = requests.get(f"{url}/health", timeout=5).json()
        assert health["requests"] == 16 and health["batches"] < 16 and health["max_batch_seen"] > 1
        assert ask(3) == ask(3)
        assert requests.get(f"{url}/health", timeout=5).json()["cache_hits"] >= 2


def test_full_queue_answers_503_and_a_late_answer_504(llm: LocalLLM) -> None:
    with _serve(SlowLLM(llm, 0.5), max_batch_size=1, max_queue=1, request_timeout_s=0.2) as url:

        def ask(seed: int) -> int:
            body = {"prompt": f"p{seed}", "max_tokens": 4, "seed": seed}
            return requests.post(f"{url}/v1/completions", json=body, timeout=30).status_code

        with ThreadPoolExecutor(max_workers=6) as pool:
            codes = list(pool.map(ask, range(6)))
        assert 503 in codes and 504 in codes and 200 not in codes
        health = requests.get(f"{url}/health", timeout=5).json()
        assert health["rejected"] >= 1 and health["timeouts"] >= 1


def test_simulated_engine_over_http_and_a_server_killed_mid_run(cfg: PipelineConfig, llm: LocalLLM) -> None:
    from tests.fakes import ScriptedPolicy

    sim_cfg = dataclasses.replace(cfg.simulator, max_new_tokens=24)
    server = _serve(llm)
    url = server.__enter__()
    try:
        client = OpenAICompatibleLLM(url, "simulator", timeout_s=10, max_retries=1)
        engine = SimulatedSearchEngine(client, sim_cfg, 200, {"model": url})
        session = engine.open_session(EpisodeContext("Who wrote Hamlet?", ("Shakespeare",), 0.5, 1))
        try:
            result = session.search("hamlet author", 2)
            assert result.message in ("useful", "noisy")
        except SearchBackendError:
            assert engine.stats.empty == 1  # a tiny random model may write nothing usable: counted, not hidden
    finally:
        server.__exit__(None, None, None)

    policy = ScriptedPolicy(load_tokenizer(Path(llm.model.name_or_path)), ["<search> hamlet author </search>"])
    dead = SimulatedSearchEngine(OpenAICompatibleLLM(url, "simulator", 1, 1), sim_cfg, 200, {"model": url})
    started = time.perf_counter()
    with pytest.raises(SearchBackendError, match="search.max_error_rate=0.0"):
        run_episodes(
            policy,
            [policy.encode("Q")],
            [dead.open_session(EpisodeContext("Q?", ("A",), 0.0, 2))],
            cfg.rollout,
            2,
            SearchErrorBudget(0.0),
        )
    assert time.perf_counter() - started < 30


def test_training_against_an_unreachable_simulator_fails_before_it_starts(cfg: PipelineConfig) -> None:
    from zerosearch_core.stages.sections import open_training_engine

    dead_url = f"http://127.0.0.1:{free_port('127.0.0.1')}"
    run_cfg = dataclasses.replace(cfg, simulator=dataclasses.replace(cfg.simulator, url=dead_url, max_retries=1))
    with pytest.raises(SearchBackendError, match=f"simulator server at {dead_url} is not answering"):
        with open_training_engine(run_cfg):
            pass
