"""The simulator as a search service (Search-R1's POST /retrieve) on 127.0.0.1, over a real generation server (this
project's OpenAI-compatible one with a real tiny model): the project's own Search-R1 client gets documents, the
simulator-only fields steer the prompt, and bad requests get clear 4xx without reaching the model."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from zerosearch_core.config import PipelineConfig
from zerosearch_core.models.build import load_causal_lm, load_tokenizer
from zerosearch_core.netutil import free_port
from zerosearch_core.search.http import HttpSearchEngine, running_server
from zerosearch_core.simulator.client import OpenAICompatibleLLM
from zerosearch_core.simulator.llm import LocalLLM
from zerosearch_core.simulator.prompts import render_simulator_prompt
from zerosearch_core.simulator.search_service import MAX_QUERIES, MAX_TOPK, create_search_service_app, seeded_doc_type
from zerosearch_core.simulator.server import ServerLimits, create_simulator_app


class RecordingLLM(OpenAICompatibleLLM):
    """The real HTTP client, keeping the prompts it sent (to see what the service asked the simulator)."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.prompts: list[str] = []

    def complete(self, prompts, max_new_tokens, temperature, seed):  # type: ignore[no-untyped-def]
        self.prompts.extend(prompts)
        return super().complete(prompts, max_new_tokens, temperature, seed)


@pytest.fixture(scope="module")
def generation_url(tiny_policy_dir: Path) -> Iterator[str]:
    llm = LocalLLM(load_causal_lm(tiny_policy_dir), load_tokenizer(tiny_policy_dir))
    app = create_simulator_app(llm, "simulator", 16, 20, 64, 30, ServerLimits(256, 1024, 30))
    with running_server(app, "127.0.0.1", free_port()) as url:
        yield url


@pytest.fixture
def service(cfg: PipelineConfig, generation_url: str) -> Iterator[tuple[str, RecordingLLM]]:
    sim = dataclasses.replace(cfg.simulator, temperature=1.0, max_new_tokens=24)  # sampled: the tiny model's greedy
    llm = RecordingLLM(generation_url, "simulator", 30.0, 0)  # text is newlines, which hold no document
    app = create_search_service_app(llm, sim, 300, {"generation": generation_url})
    with running_server(app, "127.0.0.1", free_port()) as url:
        yield url, llm


def test_a_search_r1_client_gets_documents_for_each_query(service: tuple[str, RecordingLLM]) -> None:
    url, llm = service
    client = HttpSearchEngine(url, timeout_s=60, max_retries=0)  # the project's own Search-R1 retriever client
    ranked = client.retrieve(["capital of france", "who wrote hamlet"], 3)
    assert len(ranked) == 2 and all(1 <= len(docs) <= 3 for docs in ranked)
    assert all(doc.text and doc.id.startswith("sim-") for docs in ranked for doc in docs)
    # a plain Search-R1 request names no answer: the simulator is asked for useful documents for the query alone
    words = 40  # params.yaml's simulator.doc_words
    asked = [render_simulator_prompt(q, q, (), "useful", 3, words, answer_aware=False) for q in ("capital of france",
             "who wrote hamlet")]  # fmt: skip
    assert sorted(llm.prompts) == sorted(asked)
    reply = requests.post(f"{url}/retrieve", json={"queries": ["paris"], "topk": 2}, timeout=60).json()
    (items,) = reply["result"]
    first = items[0]
    assert set(first) == {"document", "score", "doc_type"} and first["doc_type"] == "useful"
    title, _, text = first["document"]["contents"].partition("\n")
    assert title == f'"{first["document"]["title"]}"' and text == first["document"]["text"]
    bare = requests.post(f"{url}/retrieve", json={"queries": ["paris"], "return_scores": False}, timeout=60).json()
    assert set(bare["result"][0][0]) == {"id", "contents", "title", "text"}
    assert requests.get(f"{url}/health", timeout=10).json()["status"] == "ok"


def test_the_simulator_fields_steer_type_answer_and_seed(service: tuple[str, RecordingLLM]) -> None:
    url, llm = service
    body = {
        "queries": ["capital of france", "largest ocean"],
        "topk": 2,
        "questions": ["What is the capital of France?", "Which ocean is the largest?"],
        "golden_answers": [["Paris"], []],
        "doc_type": "noisy",
        "seed": 5,
    }
    reply = requests.post(f"{url}/retrieve", json=body, timeout=60).json()
    assert [items[0]["doc_type"] for items in reply["result"]] == ["noisy", "noisy"]
    aware, blind = llm.prompts
    assert "Paris" in aware and "What is the capital of France?" in aware  # the paper's answer-aware prompt
    assert "Which ocean is the largest?" in blind and "Paris" not in blind  # no answer sent: none told
    again = requests.post(f"{url}/retrieve", json=body, timeout=60).json()
    assert again == reply  # the same seed, the same documents
    mixed = {"queries": [f"q{i}" for i in range(8)], "noise_prob": 0.5, "seed": 11, "topk": 1}
    types = [
        items[0]["doc_type"] for items in requests.post(f"{url}/retrieve", json=mixed, timeout=60).json()["result"]
    ]
    assert types == [seeded_doc_type(0.5, 11 + i) for i in range(8)] and set(types) == {"useful", "noisy"}


@pytest.mark.reliability
def test_bad_requests_get_a_clear_4xx_and_never_reach_the_model(service: tuple[str, RecordingLLM]) -> None:
    url, llm = service
    cases = [
        ({"queries": []}, 422, "queries"),
        ({"queries": ["q"] * (MAX_QUERIES + 1)}, 422, "queries"),
        ({"queries": ["q"], "topk": MAX_TOPK + 1}, 422, "topk"),
        ({"queries": ["   "]}, 422, "queries[0] is empty"),
        ({"queries": ["q" * 2001]}, 422, "longer than 2000"),
        ({"queries": ["a", "b"], "golden_answers": [["x"]]}, 422, "golden_answers has 1 entries for 2 queries"),
        ({"queries": ["a"], "golden_answer": [["x"]]}, 422, "golden_answer"),  # misspelt: refused, not ignored
        ({"queries": ["a"], "doc_type": "helpful"}, 422, "doc_type"),
        ({"queries": ["a"], "noise_prob": 1.5}, 422, "noise_prob"),
    ]
    for body, status, says in cases:
        reply = requests.post(f"{url}/retrieve", json=body, timeout=30)
        assert reply.status_code == status and says in reply.text, (body, reply.status_code, reply.text[:300])
    huge = requests.post(f"{url}/retrieve", data=b'{"queries": ["' + b"x" * (2 << 20) + b'"]}', timeout=30)
    assert huge.status_code == 413
    assert llm.prompts == []  # none of them cost a generation


@pytest.mark.reliability
def test_a_dead_generation_server_is_a_503_that_says_so(cfg: PipelineConfig) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    app = create_search_service_app(OpenAICompatibleLLM(dead, "simulator", 2.0, 0), cfg.simulator, 300, {})
    with running_server(app, "127.0.0.1", free_port()) as url:
        reply = requests.post(f"{url}/retrieve", json={"queries": ["paris"]}, timeout=30)
        assert reply.status_code == 503 and "queries[0]" in reply.text, reply.text
        health = requests.get(f"{url}/health", timeout=30)
        assert health.status_code == 503 and "does not answer" in health.text


VERL_WHEEL = Path(__file__).resolve().parents[2] / ".venv/clients/verl-0.7.1-py3-none-any.whl"
"""veRL 0.7.1, its last release with the search tool, downloaded by scripts/setup.sh (not installed: its wheel puts
top-level `tests` and `scripts` packages into site-packages)."""


def _verl_search_utils(tmp_path: Path):  # type: ignore[no-untyped-def]
    """veRL's own ``verl/tools/utils/search_r1_like_utils.py``, read out of the wheel and loaded unchanged (importing
    it as ``verl.…`` would run ``verl/__init__``, which needs ray and tensordict)."""
    import importlib.util
    import zipfile

    if not VERL_WHEEL.is_file():
        pytest.fail(f"{VERL_WHEEL} is missing; run scripts/setup.sh, which downloads it")
    source = tmp_path / "search_r1_like_utils.py"
    with zipfile.ZipFile(VERL_WHEEL) as wheel:
        source.write_bytes(wheel.read("verl/tools/utils/search_r1_like_utils.py"))
    spec = importlib.util.spec_from_file_location("verl_search_r1_like_utils", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.MAX_RETRIES, module.INITIAL_RETRY_DELAY = 1, 0  # fail fast instead of its 45 s of retries
    return module


def test_verl_and_skyrl_search_tools_call_the_service_unchanged(
    service: tuple[str, RecordingLLM], tmp_path: Path
) -> None:
    """The search code of two agent-RL frameworks, unchanged, against the service: veRL's Search-R1 client (a batch
    of queries) and SkyRL's search tool and environment (one ``query`` a request) get simulated documents."""
    import json

    url, llm = service
    verl = _verl_search_utils(tmp_path)
    reply, error = verl.call_search_api(f"{url}/retrieve", ["capital of france", "who wrote hamlet"], topk=2)
    assert error is None and len(reply["result"]) == 2 and all(1 <= len(items) <= 2 for items in reply["result"])
    text, meta = verl.perform_single_search_batch(f"{url}/retrieve", ["capital of france"], topk=2)
    assert meta["status"] == "success" and json.loads(text)["result"].startswith("Doc 1 (Title: ")

    from skyrl_gym.tools.search import SearchToolGroup

    tool = SearchToolGroup(search_url=f"{url}/retrieve", topk=2, timeout=60, log_requests=False)
    found = json.loads(tool.search("who wrote hamlet"))["result"]
    assert found.startswith("Doc 1: ") and "Search error" not in found
    import skyrl_gym
    from skyrl_gym.envs.search.env import SearchEnvConfig

    env = skyrl_gym.make(
        "search",
        env_config=SearchEnvConfig(search_url=f"{url}/retrieve", topk=2, timeout=60, log_requests=False),
        extras={"reward_spec": {"ground_truth": {"target": ["Shakespeare"]}}, "max_turns": 3},
    )
    step = env.step("<search>who wrote hamlet</search>")
    assert "<information>" in step["observations"][0]["content"] and "Doc 1: " in step["observations"][0]["content"]
    assert len(llm.prompts) == 2 + 1 + 1 + 1  # every search reached the simulator


@pytest.mark.slow  # starts vLLM's OpenAI server on the CPU (about 30 s)
def test_the_frameworks_clients_through_the_service_over_vllms_own_server(
    cfg: PipelineConfig, vllm_policy_dir: Path, tmp_path: Path
) -> None:
    """The whole stack as `zerosearch serve_search_simulator` runs it: vLLM's OpenAI server for generation, the
    service in front of it, veRL's and SkyRL's clients calling it unchanged."""
    import json

    from skyrl_gym.tools.search import SearchToolGroup

    from zerosearch_core.models.vllm_backend import running_vllm_server
    from zerosearch_core.simulator.engine import simulator_vllm_settings

    sim = dataclasses.replace(cfg.simulator, temperature=1.0, max_new_tokens=24, max_length=512)
    with running_vllm_server(vllm_policy_dir, simulator_vllm_settings(sim, "float32"), "simulator") as generation:
        llm = RecordingLLM(generation, "simulator", 60.0, 0)
        app = create_search_service_app(llm, sim, 300, {"generation": generation})
        with running_server(app, "127.0.0.1", free_port()) as url:
            assert requests.get(f"{url}/health", timeout=30).json()["status"] == "ok"  # vLLM's /health answered
            verl = _verl_search_utils(tmp_path)
            reply, error = verl.call_search_api(f"{url}/retrieve", ["capital of france", "who wrote hamlet"], topk=3)
            assert error is None and [len(items) >= 1 for items in reply["result"]] == [True, True]
            tool = SearchToolGroup(search_url=f"{url}/retrieve", topk=3, timeout=60, log_requests=False)
            assert json.loads(tool.search("who wrote hamlet"))["result"].startswith("Doc 1: ")
    assert len(llm.prompts) == 3
