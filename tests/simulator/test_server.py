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

from zerosearch_core.agent.loop import run_episodes
from zerosearch_core.config import PipelineConfig
from zerosearch_core.models.build import load_causal_lm, load_tokenizer
from zerosearch_core.netutil import free_port
from zerosearch_core.search.base import EpisodeContext, SearchBackendError, SearchErrorBudget
from zerosearch_core.search.http import running_server
from zerosearch_core.simulator.client import OpenAICompatibleLLM
from zerosearch_core.simulator.engine import SimulatedSearchEngine
from zerosearch_core.simulator.llm import LocalLLM
from zerosearch_core.simulator.server import ServerLimits, create_simulator_app


@pytest.fixture(scope="module")
def llm(tiny_policy_dir: Path) -> LocalLLM:
    return LocalLLM(load_causal_lm(tiny_policy_dir), load_tokenizer(tiny_policy_dir))


class SlowLLM(LocalLLM):
    """A real local model that takes at least ``delay_s`` per batch."""

    def __init__(self, inner: LocalLLM, delay_s: float) -> None:
        super().__init__(inner.model, inner.tokenizer)
        self.delay_s = delay_s

    def complete_rendered(  # type: ignore[override]
        self, texts: Sequence[str], max_new_tokens: int, temperature: float, seed: int, should_stop=None
    ) -> list[str]:
        time.sleep(self.delay_s)
        return super().complete_rendered(texts, max_new_tokens, temperature, seed, should_stop)


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


def _ask_many(url: str, bodies: list[dict]) -> list[requests.Response]:
    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        return list(pool.map(lambda b: requests.post(f"{url}/v1/chat/completions", json=b, timeout=60), bodies))


def _chat(content: str, **fields: object) -> dict:
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 8, **fields}


def test_compatible_requests_are_batched_and_identical_ones_cached(llm: LocalLLM) -> None:
    with _serve(llm) as url:
        greedy = _ask_many(url, [_chat(f"query {i}", temperature=0, seed=i) for i in range(16)])
        assert all(r.status_code == 200 for r in greedy)
        health = requests.get(f"{url}/health", timeout=5).json()
        assert health["requests"] == 16 and health["batches"] < 16 and health["max_batch_seen"] > 1
        same_seed = _ask_many(url, [_chat(f"sampled {i}", temperature=1.0, seed=7) for i in range(8)])
        assert all(r.status_code == 200 for r in same_seed)
        assert requests.get(f"{url}/health", timeout=5).json()["batches"] < health["batches"] + 8
        first = requests.post(f"{url}/v1/chat/completions", json=_chat("query 3", temperature=0, seed=3), timeout=30)
        assert first.json()["choices"][0]["message"] == greedy[3].json()["choices"][0]["message"]
        assert requests.get(f"{url}/health", timeout=5).json()["cache_hits"] >= 1


def test_a_result_never_depends_on_its_batch_mates(llm: LocalLLM) -> None:
    """Temperature, seed and length come from each request, not from the first of its batch: a greedy request
    batched with sampled ones is still greedy (it used to be sampled, then cached under the greedy key)."""
    with _serve(llm) as alone_url:
        alone = requests.post(f"{alone_url}/v1/chat/completions", json=_chat("Paris", temperature=0), timeout=30)
    with _serve(llm) as url:
        mixed = [_chat(f"noise {i}", temperature=1.0, seed=i, max_tokens=16) for i in range(6)]
        replies = _ask_many(url, [*mixed, _chat("Paris", temperature=0)])
    assert replies[-1].json()["choices"][0]["message"] == alone.json()["choices"][0]["message"]


def test_one_bad_request_fails_alone(llm: LocalLLM) -> None:
    class PickyLLM(LocalLLM):
        """Fails any batch holding a prompt with the word 'poison' (as a broken input would)."""

        def complete_rendered(self, texts, max_new_tokens, temperature, seed, should_stop=None):  # type: ignore[no-untyped-def]
            if any("poison" in t for t in texts):
                raise RuntimeError("cannot generate this")
            return super().complete_rendered(texts, max_new_tokens, temperature, seed)

    with _serve(PickyLLM(llm.model, llm.tokenizer)) as url:
        replies = _ask_many(
            url, [_chat(f"fine {i}", temperature=0) for i in range(3)] + [_chat("poison", temperature=0)]
        )
        assert [r.status_code for r in replies] == [200, 200, 200, 500]
        assert replies[-1].json()["error"]["type"] == "server_error"
        surrogate = requests.post(
            f"{url}/v1/completions",
            data='{"prompt": "bad \\ud800 text", "max_tokens": 4}',
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        assert surrogate.status_code == 400 and "unicode" in surrogate.json()["error"]["message"].lower()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"max_tokens": 4096}, "exceeds this server's limit of 32"),
        ({"n": 2}, "n=2 is not supported"),
        ({"stream": True}, "stream=true is not supported"),
        ({"messages": [{"role": "system", "content": "be terse"}, {"role": "user", "content": "q"}]}, "['system']"),
        ({"content": "word " * 400}, "this server takes at most 64"),
    ],
)
def test_what_the_server_cannot_do_or_afford_is_refused_with_an_openai_error(
    llm: LocalLLM, body: dict, message: str
) -> None:
    limits = ServerLimits(max_tokens=32, max_prompt_tokens=64, request_timeout_s=30)
    app = create_simulator_app(llm, "simulator", 4, 10, 8, 30, limits)
    content = body.pop("content", "a short prompt")
    with running_server(app, "127.0.0.1", free_port("127.0.0.1")) as url:
        reply = requests.post(f"{url}/v1/chat/completions", json={**_chat(content), **body}, timeout=30)
    assert reply.status_code == 400
    assert reply.json()["error"]["type"] == "invalid_request_error" and message in reply.json()["error"]["message"]


def test_bad_numbers_and_empty_prompts_are_400_and_usage_is_counted(llm: LocalLLM) -> None:
    with _serve(llm) as url:
        for raw in (
            '{"prompt": "x", "temperature": NaN}',
            '{"prompt": "x", "temperature": Infinity}',
            '{"prompt": ""}',
        ):
            reply = requests.post(
                f"{url}/v1/completions", data=raw, headers={"Content-Type": "application/json"}, timeout=30
            )
            assert reply.status_code == 400 and "error" in reply.json(), raw
        ok = requests.post(f"{url}/v1/completions", json={"prompt": "Doc 1:", "max_tokens": 4}, timeout=30).json()
    usage = ok["usage"]
    assert usage["prompt_tokens"] > 0 and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert ok["choices"][0]["finish_reason"] in ("stop", "length")


def test_abandoned_requests_are_not_generated_and_a_stuck_worker_shows_in_health(llm: LocalLLM) -> None:
    with _serve(SlowLLM(llm, 1.5), max_batch_size=1, max_queue=8, request_timeout_s=0.3) as url:
        bodies = [{"prompt": f"p{i}", "max_tokens": 4, "seed": i, "temperature": 1.0} for i in range(4)]
        with ThreadPoolExecutor(max_workers=4) as pool:
            codes = list(
                pool.map(lambda b: requests.post(f"{url}/v1/completions", json=b, timeout=30).status_code, bodies)
            )
        assert codes == [504] * 4
        time.sleep(0.5)
        stuck = requests.get(f"{url}/health", timeout=5)  # one batch has now run for longer than 2 x 0.3 s
        assert stuck.status_code == 503 and stuck.json()["status"] == "stalled"
        time.sleep(2.0)
        health = requests.get(f"{url}/health", timeout=5).json()
    assert health["batches"] == 1 and health["abandoned"] == 3  # the three that waited were dropped, not generated


def test_a_generation_nobody_waits_for_stops_midway(llm: LocalLLM) -> None:
    """A huge request whose client timed out: the worker stops its generation instead of finishing it, and the next
    request is served at once."""
    import copy

    endless = LocalLLM(copy.deepcopy(llm.model), llm.tokenizer)
    endless.model.generation_config.eos_token_id = None  # nothing ends it early: only the budget or the cancel
    limits = ServerLimits(max_tokens=4096, max_prompt_tokens=512, request_timeout_s=0.5)
    with _serve(endless, max_batch_size=1, request_timeout_s=0.5, limits=limits) as url:  # type: ignore[arg-type]
        started = time.perf_counter()
        huge = requests.post(f"{url}/v1/completions", json={"prompt": "Doc 1:", "max_tokens": 4096}, timeout=30)
        assert huge.status_code == 504
        deadline = time.monotonic() + 20
        while requests.get(f"{url}/health", timeout=5).json()["cancelled"] < 1:
            assert time.monotonic() < deadline, "the abandoned generation was not stopped"
            time.sleep(0.05)
        small = requests.post(f"{url}/v1/completions", json={"prompt": "Doc 1:", "max_tokens": 2}, timeout=30)
        elapsed = time.perf_counter() - started
        health = requests.get(f"{url}/health", timeout=5).json()
    assert small.status_code == 200
    assert elapsed < 10  # generating all 4,096 tokens takes this tiny model about a minute here
    assert health["cancelled"] == 1 and health["cache_hits"] == 0  # a cut text is never cached


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


@pytest.mark.reliability
def test_a_huge_body_is_refused_before_it_is_read_and_health_stays_responsive(llm: LocalLLM) -> None:
    """A 21 MB prompt froze the server for 21 s (/health too): now a body over the limit gets an OpenAI-shaped 413
    at once, and a prompt over the character bound is refused without being tokenized."""
    limits = ServerLimits(max_tokens=16, max_prompt_tokens=256, request_timeout_s=30)
    app = create_simulator_app(llm, "simulator", 8, 20, 64, 30, limits)
    with running_server(app, "127.0.0.1", free_port("127.0.0.1")) as url:
        started = time.monotonic()
        big = requests.post(f"{url}/v1/chat/completions", json=_chat("word " * 4_000_000), timeout=60)
        assert big.status_code == 413 and big.json()["error"]["code"] == 413
        long_prompt = _chat("w" * (limits.max_prompt_chars + 1))  # under the body limit, over the character bound
        refused = requests.post(f"{url}/v1/chat/completions", json=long_prompt, timeout=60)
        assert refused.status_code == 400 and "characters" in refused.json()["error"]["message"]
        assert time.monotonic() - started < 10
        assert requests.get(f"{url}/health", timeout=5).status_code == 200


@pytest.mark.reliability
def test_requests_whose_clients_hung_up_are_dropped_and_do_not_delay_a_fresh_one(llm: LocalLLM) -> None:
    """40 clients that time out at once used to be served anyway, so a fresh 4-token request waited behind them."""
    slow = SlowLLM(llm, delay_s=0.5)
    with _serve(slow, max_batch_size=1, batch_wait_ms=0, max_queue=128) as url:

        def hang_up(seed: int) -> None:
            with pytest.raises(requests.Timeout):
                requests.post(f"{url}/v1/chat/completions", json=_chat("x", max_tokens=8, seed=seed), timeout=0.2)

        with ThreadPoolExecutor(max_workers=20) as pool:
            list(pool.map(hang_up, range(40)))
        time.sleep(1.0)  # the server notices within its poll interval
        started = time.monotonic()
        fresh = requests.post(f"{url}/v1/chat/completions", json=_chat("fresh", max_tokens=4, seed=99), timeout=30)
        assert fresh.status_code == 200
        assert time.monotonic() - started < 5.0  # 40 batches of 0.5 s would be 20 s
        health = requests.get(f"{url}/health", timeout=5).json()
        assert health["disconnected"] >= 30


@pytest.mark.reliability
@pytest.mark.parametrize(
    "field", [{"stop": ["\n"]}, {"logprobs": True}, {"tools": []}, {"response_format": {"type": "json_object"}}]
)
def test_fields_the_server_does_not_implement_are_refused_by_name(llm: LocalLLM, field: dict) -> None:
    with _serve(llm) as url:
        reply = requests.post(f"{url}/v1/chat/completions", json=_chat("x", **field), timeout=30)
        assert reply.status_code == 400 and next(iter(field)) in reply.json()["error"]["message"]
        tiny = requests.post(f"{url}/v1/chat/completions", json=_chat("x", temperature=1e-320), timeout=30)
        assert tiny.status_code == 200  # a denormal temperature samples greedily instead of overflowing to 500
