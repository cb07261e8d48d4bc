"""Real retrieval: BM25 over the real Wikipedia corpus, the HTTP retriever server on 127.0.0.1, and its client."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import requests

from zerosearch_core.agent.rewards import normalize_answer
from zerosearch_core.config import PipelineConfig
from zerosearch_core.netutil import free_port
from zerosearch_core.search.base import EpisodeContext, SearchBackendError, SearchErrorBudget, run_searches
from zerosearch_core.search.http import HttpSearchEngine, create_retriever_app, running_server
from zerosearch_core.search.local import BM25Retriever, DenseRetriever, LocalSearchEngine, LocalSearchSession
from zerosearch_core.search.registry import open_search_engine
from zerosearch_core.stages import StageHooks, build_index

CTX = EpisodeContext(question="q", gold_answers=("a",), noise_prob=0.0, seed=0)
NQ_QUESTIONS = (
    "swan lake the sleeping beauty and the nutcracker are three famous ballets by",
    "location of the ten commandments in the bible",
)


@pytest.fixture(scope="module")
def bm25(corpus: pd.DataFrame) -> BM25Retriever:
    return BM25Retriever.build(corpus)


@pytest.fixture(scope="module")
def nq_rows(benchmarks_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (benchmarks_dir / "nq_open/NQ-open.dev.jsonl").read_text().splitlines()]
    return [r for r in rows if r["question"] in NQ_QUESTIONS]


def _contains_answer(text: str, answers: list[str]) -> bool:
    return any(normalize_answer(a) in normalize_answer(text) for a in answers)


def test_bm25_finds_the_passage_with_the_answer_to_real_nq_questions(bm25: BM25Retriever, nq_rows: list[dict]) -> None:
    assert len(nq_rows) == 2
    for row in nq_rows:
        top = bm25.retrieve([row["question"]], top_k=3)[0]
        assert len(top) == 3
        assert top[0].score >= top[1].score >= top[2].score > 0
        assert _contains_answer(top[0].text, row["answer"]), (row, top[0])


def test_local_session_reports_empty_queries_without_searching(bm25: BM25Retriever) -> None:
    session = LocalSearchEngine(bm25, {}).open_session(CTX)
    assert session.search("   ", top_k=3).status == "empty_query"
    result = session.search("Tchaikovsky ballet", top_k=2)
    assert result.status == "ok" and len(result.documents) == 2 and result.latency_s >= 0


def test_a_turns_local_searches_are_one_retrieval_call_with_the_same_documents(
    bm25: BM25Retriever, nq_rows: list[dict]
) -> None:
    calls: list[list[str]] = []

    class Counting(BM25Retriever):
        def retrieve(self, queries: list[str], top_k: int):  # type: ignore[no-untyped-def]
            calls.append(list(queries))
            return super().retrieve(queries, top_k)

    engine = LocalSearchEngine(Counting(index=bm25.index, passages=bm25.passages), {})
    queries = [nq_rows[0]["question"], "  ", nq_rows[1]["question"]]
    requests = [(engine.open_session(CTX), q) for q in queries]
    outcomes = run_searches(requests, top_k=3)
    assert calls == [[queries[0], queries[2]]]  # one call, the empty query left out
    assert outcomes[1].status == "empty_query"  # type: ignore[union-attr]
    for query, outcome in zip(queries[::2], outcomes[::2], strict=True):
        alone = LocalSearchSession(bm25).search(query, top_k=3)
        assert outcome.status == "ok" and outcome.documents == alone.documents  # type: ignore[union-attr]


def test_http_server_answers_a_plain_http_client_in_search_r1_shape(bm25: BM25Retriever, nq_rows: list[dict]) -> None:
    app = create_retriever_app(bm25, {"corpus_sha256": "abc"})
    with running_server(app, "127.0.0.1", free_port("127.0.0.1")) as url:
        assert url.startswith("http://127.0.0.1:")
        questions = [r["question"] for r in nq_rows]
        reply = requests.post(
            f"{url}/retrieve", json={"queries": questions, "topk": 3, "return_scores": True}, timeout=10
        )
        assert reply.status_code == 200
        result = reply.json()["result"]
        assert len(result) == 2 and all(len(items) == 3 for items in result)
        first = result[0][0]
        assert set(first) == {"document", "score"}
        assert set(first["document"]) == {"id", "contents", "title", "text"}
        assert first["document"]["contents"].startswith(f'"{first["document"]["title"]}"\n')
        for row, items in zip(nq_rows, result, strict=True):
            assert _contains_answer(items[0]["document"]["text"], row["answer"])

        bare = requests.post(
            f"{url}/retrieve", json={"queries": ["ballet"], "topk": 1, "return_scores": False}, timeout=10
        )
        assert set(bare.json()["result"][0][0]) == {"id", "contents", "title", "text"}
        assert requests.post(f"{url}/retrieve", json={"queries": [], "topk": 3}, timeout=10).status_code == 422
        long_query = {"queries": ["ballet " * 400], "topk": 1}
        assert requests.post(f"{url}/retrieve", json=long_query, timeout=10).status_code == 422
        huge = requests.post(f"{url}/retrieve", data=b"x" * (2 << 20), timeout=30)  # 2 MiB, never parsed
        assert huge.status_code == 413
        sent = []

        def chunks():  # no Content-Length: requests sends it chunked, 64 KiB at a time, 8 MiB in all
            for _ in range(128):
                sent.append(1)
                yield b"[" * (64 << 10)

        chunked = requests.post(
            f"{url}/retrieve", data=chunks(), headers={"Content-Type": "application/json"}, timeout=30
        )
        assert chunked.status_code == 413 and "Body over 1048576 bytes" in chunked.json()["detail"]
        small_chunked = requests.post(
            f"{url}/retrieve",
            data=iter([b'{"queries": ["ballet"],', b' "topk": 1}']),
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
        assert small_chunked.status_code == 200  # chunked bodies under the limit are served
        assert requests.get(f"{url}/health", timeout=10).status_code == 200  # still serving
        assert requests.get(f"{url}/health", timeout=10).json()["corpus_sha256"] == "abc"

        engine = HttpSearchEngine(url, timeout_s=10, max_retries=0)
        assert engine.describe()["retriever"] == "bm25"
        result_obj = engine.open_session(CTX).search(nq_rows[0]["question"], top_k=3)
        assert result_obj.status == "ok"
        assert _contains_answer(result_obj.documents[0].text, nq_rows[0]["answer"])


def test_client_retries_then_raises_a_typed_error_when_the_server_is_gone() -> None:
    port = free_port("127.0.0.1")
    engine = HttpSearchEngine(f"http://127.0.0.1:{port}", timeout_s=1, max_retries=1)
    started = time.perf_counter()
    with pytest.raises(SearchBackendError, match="failed after 2 attempts"):
        engine.open_session(CTX).search("anything", top_k=3)
    assert time.perf_counter() - started >= 0.5  # one backoff happened


def test_error_budget_fails_the_run_past_the_limit() -> None:
    strict = SearchErrorBudget(max_error_rate=0.0)
    strict.record(failed=False)
    with pytest.raises(SearchBackendError, match="1 of 2 searches failed"):
        strict.record(failed=True, error=RuntimeError("down"))
    lenient = SearchErrorBudget(max_error_rate=0.25, min_searches=4)
    for failed in (True, False, False, False, False):
        lenient.record(failed=failed)
    assert lenient.error_rate == pytest.approx(0.2)
    with pytest.raises(SearchBackendError):
        lenient.record(failed=True)  # 2 of 6 > 0.25


def test_build_index_stage_and_registry_backends(cfg: PipelineConfig) -> None:
    result = build_index.run(cfg, StageHooks())
    assert result.metrics["passages"] == 400
    index_dir = Path(cfg.paths.index_dir)
    manifest = json.loads((index_dir / "manifest.json").read_text())
    assert manifest["retriever"] == "bm25" and len(manifest["corpus_sha256"]) == 64
    for backend in ("in_process", "http"):
        search_cfg = dataclasses.replace(cfg.search, backend=backend)
        with open_search_engine(search_cfg, index_dir) as engine:
            facts = engine.describe()
            assert facts["backend"] == backend and facts["corpus_sha256"] == manifest["corpus_sha256"]
            assert len(engine.open_session(CTX).search("history of music", top_k=2).documents) == 2


@pytest.mark.slow
def test_serve_retriever_command_runs_as_a_real_process(
    cfg: PipelineConfig, tmp_path: Path, project_root: Path
) -> None:
    import yaml

    from zerosearch_core.config import config_to_dict

    build_index.run(cfg, StageHooks())
    port = free_port("127.0.0.1")
    params = config_to_dict(dataclasses.replace(cfg, search=dataclasses.replace(cfg.search, port=port)))
    params_path = tmp_path / "serve.yaml"
    params_path.write_text(yaml.safe_dump(params))
    process = subprocess.Popen(
        [sys.executable, "-m", "zerosearch_core.cli", "serve_retriever", "--params", str(params_path)],
        cwd=project_root,
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert process.poll() is None, "serve_retriever exited early"
            assert time.monotonic() < deadline, "serve_retriever did not come up"
            time.sleep(0.2)
        reply = requests.post(f"{url}/retrieve", json={"queries": ["music"], "topk": 2}, timeout=10).json()
        assert len(reply["result"][0]) == 2
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.mark.slow
def test_dense_retriever_with_the_offline_minilm_model(corpus: pd.DataFrame, tmp_path: Path) -> None:
    passages = corpus.head(60).reset_index(drop=True)
    dense = DenseRetriever.build(passages, model_path=None)
    assert dense.embeddings.shape == (60, 384)
    target = passages.iloc[17]
    top = dense.retrieve([f"{target['title']}: {target['text'][:120]}"], top_k=3)[0]
    assert top[0].id == target["id"]
    dense.save(tmp_path)
    reloaded = DenseRetriever.load(tmp_path, passages, dense.model_path)
    assert (reloaded.embeddings == dense.embeddings).all()
