"""Bounded load on both servers on 127.0.0.1: many concurrent clients, good requests mixed with bad and huge ones.
No good request may fail because of a bad one, every bad one gets a 4xx, small requests stay answered in bounded
time while huge ones run, and the server keeps serving. Each test stops its server and prints its figures:
``.venv/bin/python -m pytest tests/test_reliability.py -s``."""

from __future__ import annotations

import random
import resource
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.conftest import RELIABILITY_LINES  # noqa: E402
from zerosearch_core.models.build import load_causal_lm, load_tokenizer
from zerosearch_core.netutil import free_port
from zerosearch_core.search.http import create_retriever_app, running_server
from zerosearch_core.search.local import BM25Retriever
from zerosearch_core.simulator.llm import LocalLLM
from zerosearch_core.simulator.server import ServerLimits, create_simulator_app

pytestmark = pytest.mark.reliability

CLIENTS = 24


def _fire(requests_to_send: list[tuple[str, dict]], send) -> list[tuple[str, int, float]]:  # type: ignore[no-untyped-def]
    def one(item: tuple[str, dict]) -> tuple[str, int, float]:
        kind, body = item
        started = time.perf_counter()
        status = send(body)
        return kind, status, time.perf_counter() - started

    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        return list(pool.map(one, requests_to_send))


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) > 1 else values[0]


@pytest.mark.slow
def test_the_simulator_server_holds_under_mixed_load(tiny_policy_dir: Path) -> None:
    llm = LocalLLM(load_causal_lm(tiny_policy_dir), load_tokenizer(tiny_policy_dir))
    limits = ServerLimits(max_tokens=32, max_prompt_tokens=512, request_timeout_s=60)
    app = create_simulator_app(llm, "simulator", 8, 20, 512, 60, limits)
    chat = lambda content, **f: {"messages": [{"role": "user", "content": content}], "max_tokens": 8, **f}  # noqa: E731
    good = [("good", chat(f"documents about city {i}", temperature=0)) for i in range(96)]
    bad = [
        ("bad", chat("x", n=3)),
        ("bad", chat("x", stream=True)),
        ("bad", chat("x", max_tokens=100000)),
        ("bad", {"messages": [{"role": "system", "content": "x"}], "max_tokens": 4}),
        ("bad", chat("word " * 2000)),  # over the prompt budget
        ("bad", {"messages": []}),
        ("bad", {"prompt": 3}),
    ] * 4
    huge = [("huge", chat("tell me everything " * 20, temperature=1.0, seed=i, max_tokens=32)) for i in range(4)]
    mixed = good + bad + huge
    random.Random(0).shuffle(mixed)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with running_server(app, "127.0.0.1", free_port("127.0.0.1")) as url:

        def send(body: dict) -> int:
            return requests.post(f"{url}/v1/chat/completions", json=body, timeout=120).status_code

        started = time.perf_counter()
        results = _fire(mixed, send)
        wall_s = time.perf_counter() - started
        health = requests.get(f"{url}/health", timeout=10)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    statuses = {kind: [s for k, s, _ in results if k == kind] for kind in ("good", "bad", "huge")}
    assert statuses["good"] == [200] * len(good)  # no good request failed because of a bad or huge one
    assert statuses["huge"] == [200] * len(huge)
    assert all(400 <= s < 500 for s in statuses["bad"])
    small = [latency for kind, _, latency in results if kind == "good"]
    assert _p95(small) < 30.0 and health.status_code == 200 and grown_mb < 1024
    figure = (
        f"simulator server: {len(good)} good + {len(bad)} bad + {len(huge)} huge requests from {CLIENTS} clients "
        f"in {wall_s:.1f}s; good 200: {len(good)}/{len(good)}, bad 4xx: {len(bad)}/{len(bad)}; small p95 "
        f"{_p95(small):.2f}s; peak RSS grew {grown_mb:.0f} MB; health {health.json()['status']}"
    )
    RELIABILITY_LINES.append(figure)
    print("\n" + figure)


@pytest.mark.slow
def test_the_retriever_holds_under_mixed_load(corpus) -> None:  # type: ignore[no-untyped-def]
    retriever = BM25Retriever.build(corpus)
    app = create_retriever_app(retriever, {"corpus_sha256": "test"})
    good = [("good", {"queries": [f"history of music {i}", "ballet"], "topk": 3}) for i in range(150)]
    bad = [
        ("bad", {"queries": [], "topk": 3}),
        ("bad", {"queries": ["x"], "topk": 1000}),
        ("bad", {"queries": ["long " * 1000], "topk": 1}),
        ("bad", {"queries": "not a list"}),
    ] * 5
    huge = [("huge", b"q" * (3 << 20)) for _ in range(3)]  # 3 MiB bodies
    mixed = good + bad + huge
    random.Random(1).shuffle(mixed)
    with running_server(app, "127.0.0.1", free_port("127.0.0.1")) as url:

        def send(body: object) -> int:
            if isinstance(body, bytes):
                return requests.post(f"{url}/retrieve", data=body, timeout=60).status_code
            return requests.post(f"{url}/retrieve", json=body, timeout=60).status_code

        started = time.perf_counter()
        results = _fire(mixed, send)
        wall_s = time.perf_counter() - started
        assert requests.get(f"{url}/health", timeout=10).status_code == 200
    statuses = {kind: [s for k, s, _ in results if k == kind] for kind in ("good", "bad", "huge")}
    assert statuses["good"] == [200] * len(good)
    assert all(s == 422 for s in statuses["bad"]) and statuses["huge"] == [413] * len(huge)
    small = [latency for kind, _, latency in results if kind == "good"]
    assert _p95(small) < 10.0
    figure = (
        f"retriever: {len(good)} good + {len(bad)} bad + {len(huge)} 3 MiB requests from {CLIENTS} clients in "
        f"{wall_s:.1f}s; good 200: {len(good)}/{len(good)}, bad 422 and huge 413: all; p95 {_p95(small):.3f}s"
    )
    RELIABILITY_LINES.append(figure)
    print("\n" + figure)
