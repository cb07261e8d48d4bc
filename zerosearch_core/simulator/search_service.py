"""The simulator as a search service: Search-R1's ``POST /retrieve``, answered with documents the simulation LLM
writes, so any agent framework that calls a Search-R1 retriever (veRL's search tool, SkyRL's search environment,
ASearcher, StepSearch, this project's own ``search.backend: http``) trains the ZeroSearch way by changing one URL.

Request (Search-R1's fields, or ``query`` for one, as SkyRL's search tool sends; then optional ones only a simulator
needs)::

    {"queries": ["who wrote hamlet"], "topk": 3, "return_scores": true,
     "questions": ["..."], "golden_answers": [["..."]], "doc_type": "useful", "noise_prob": 0.3, "seed": 7}

- ``questions`` / ``golden_answers``: one per query (the episode's question and its answers). Without answers the
  simulator is not told one (the answer-blind prompt): useful documents for what the query asks, as a real engine
  would return. With answers it writes the paper's answer-aware documents.
- ``doc_type`` (``useful`` or ``noisy``) sets every query's type; else ``noise_prob`` (default 0: useful) draws each
  query's type from ``random.Random(seed + i)``; ``seed`` (default 0) also seeds the generation, so the same
  request gives the same documents where the generation engine honours seeds.

Response: ``{"result": [[{"document": {"id", "contents", "title", "text"}, "score", "doc_type"}, ...], ...]}`` (one
list per query, ``contents`` as Search-R1 writes it: ``"Title"\\ntext``; without ``return_scores`` each item is the
bare document). Errors are clear 4xx/5xx with a ``detail``: 413 for a body over :data:`MAX_BODY_BYTES`, 422 for a
request outside the bounds or with mismatched lists, 502 when the simulator wrote no usable document for a query
(the whole request fails; nothing half-answered), 503 when the generation server does not answer.

Generation is not done here: the service sends chat completions to an OpenAI-compatible server (vLLM's, started by
``zerosearch serve_search_simulator``, or any given ``simulator.url``), which batches concurrent requests itself.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from typing import Any, Literal

import requests
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from zerosearch_core.config import SimulatorConfig
from zerosearch_core.search.base import Document, EpisodeContext, SearchBackendError, SearchResult
from zerosearch_core.search.http import MAX_BODY_BYTES, MAX_QUERY_CHARS, BoundedBody
from zerosearch_core.simulator.engine import SimulatedSearchEngine
from zerosearch_core.simulator.llm import LLMClient
from zerosearch_core.simulator.prompts import choose_doc_type

logger = logging.getLogger(__name__)

MAX_QUERIES = 64
"""Queries one request may carry (a client batches a step's searches; more is a client bug or an attack)."""
MAX_TOPK = 10
"""Documents per query the simulator writes at most (its prompt and output grow with it)."""
LATENCIES_KEPT = 1000


class SimulatedRetrieveRequest(BaseModel):
    """Body of ``POST /retrieve``: Search-R1's fields, then the simulator's optional ones. Unknown fields are refused
    by name, so a misspelt ``golden_answer`` never silently falls back to the answer-blind prompt."""

    model_config = ConfigDict(extra="forbid")

    queries: list[str] = Field(default_factory=list, max_length=MAX_QUERIES)
    query: str | None = None
    """One query instead of ``queries`` (SkyRL's search tool sends this); answered as a list of one."""
    topk: int = Field(default=3, ge=1, le=MAX_TOPK)
    return_scores: bool = True
    questions: list[str] | None = None
    golden_answers: list[list[str]] | None = None
    doc_type: Literal["useful", "noisy"] | None = None
    noise_prob: float = Field(default=0.0, ge=0.0, le=1.0, allow_inf_nan=False)
    seed: int = Field(default=0, ge=0, lt=2**31)


def _check(request: SimulatedRetrieveRequest) -> None:
    """The bounds pydantic cannot state: ``queries`` or ``query`` (one of them), query lengths and one question /
    answer list per query. A lone ``query`` becomes ``queries`` of one."""
    if request.query is not None:
        if request.queries:
            raise HTTPException(422, "send queries (a list) or query (one string), not both.")
        request.queries = [request.query]
    if not request.queries:
        raise HTTPException(422, "queries is empty; send at least one query (or query: one string).")
    for index, query in enumerate(request.queries):
        if len(query) > MAX_QUERY_CHARS:
            raise HTTPException(422, f"queries[{index}] is longer than {MAX_QUERY_CHARS} characters; shorten it.")
        if not query.strip():
            raise HTTPException(422, f"queries[{index}] is empty; send the text to search for.")
    for name in ("questions", "golden_answers"):
        values = getattr(request, name)
        if values is not None and len(values) != len(request.queries):
            raise HTTPException(
                422, f"{name} has {len(values)} entries for {len(request.queries)} queries; send one per query."
            )


def _payload(document: Document, rank: int, doc_type: str, with_score: bool) -> dict[str, Any]:
    body = {"id": document.id, "contents": document.contents, "title": document.title, "text": document.text}
    if not with_score:
        return body
    return {"document": body, "score": float(-rank), "doc_type": doc_type}  # the simulator's own order, best first


def create_search_service_app(
    llm: LLMClient, sim: SimulatorConfig, max_doc_chars: int, description: dict[str, str]
) -> FastAPI:
    """The service: ``POST /retrieve`` and ``GET /health`` over ``llm`` (a client of the generation server).

    Two engines share the client: answer-aware (the paper's prompt, for requests that send golden answers) and
    answer-blind (documents for the query alone).
    """
    app = FastAPI(title="ZeroSearch simulator as a search engine", version="1")
    app.add_middleware(BoundedBody, limit=MAX_BODY_BYTES)
    engines = {
        aware: SimulatedSearchEngine(llm, dataclasses.replace(sim, answer_aware=aware), max_doc_chars, description)
        for aware in (True, False)
    }

    @app.get("/health")
    def health() -> dict[str, Any]:
        check = getattr(llm, "check_health", None)
        if check is not None:
            try:
                check()
            except SearchBackendError as err:
                raise HTTPException(503, f"the generation server does not answer: {err}") from err
        stats = engines[True].stats
        return {"status": "ok", "backend": "simulated", "searches": stats.searches + engines[False].stats.searches}

    @app.post("/retrieve")
    def retrieve(request: SimulatedRetrieveRequest) -> dict[str, Any]:
        _check(request)
        answers = request.golden_answers or [[] for _ in request.queries]
        questions = request.questions or request.queries
        groups: dict[bool, list[int]] = {True: [], False: []}
        for index, gold in enumerate(answers):
            groups[bool(gold)].append(index)
        results: list[SearchResult | SearchBackendError | None] = [None] * len(request.queries)
        for aware, indices in groups.items():
            if not indices:
                continue
            engine = engines[aware]
            sessions = []
            for index in indices:
                noise = _noise(request, index)
                ctx = EpisodeContext(questions[index], tuple(answers[index]), noise, request.seed + index)
                sessions.append((engine.open_session(ctx), request.queries[index]))
            try:
                outcomes = engine.search_batch(sessions, request.topk)
            except requests.RequestException as err:  # the client's retries are spent
                raise HTTPException(503, f"the generation server does not answer: {err}") from err
            for index, outcome in zip(indices, outcomes, strict=True):
                results[index] = outcome
            del engine.stats.latencies_s[:-LATENCIES_KEPT]  # a long-running service keeps a window, not a history
        for index, failed in enumerate(results):
            if isinstance(failed, SearchBackendError):
                status = 503 if "not answering" in str(failed) or "failed after" in str(failed) else 502
                raise HTTPException(status, f"queries[{index}]: {failed}")
        ranked = []
        for found in results:
            assert isinstance(found, SearchResult)
            docs = found.documents[: request.topk]
            ranked.append([_payload(d, rank, found.message, request.return_scores) for rank, d in enumerate(docs)])
        return {"result": ranked}

    return app


def _noise(request: SimulatedRetrieveRequest, index: int) -> float:
    """The noise probability of query ``index``: 1 or 0 when ``doc_type`` fixes it, else the request's own."""
    if request.doc_type is not None:
        return 1.0 if request.doc_type == "noisy" else 0.0
    return request.noise_prob


def seeded_doc_type(noise_prob: float, seed: int) -> str:
    """The type a query of a request gets for ``noise_prob`` and its seed (``seed + i`` for query ``i``): the first
    draw of the session's generator, as :class:`SimulatedSearchEngine` makes it.

    >>> seeded_doc_type(0.0, 3), seeded_doc_type(1.0, 3)
    ('useful', 'noisy')
    """
    return choose_doc_type(noise_prob, random.Random(seed))
