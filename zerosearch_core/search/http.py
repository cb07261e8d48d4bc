"""The retriever server (FastAPI) and its client, shaped like the Search-R1 local retriever.

Request ``POST /retrieve``::

    {"queries": ["who wrote hamlet"], "topk": 3, "return_scores": true}

``{"query": "who wrote hamlet", ...}`` (one string, as SkyRL's search tool sends) is answered as a list of one.
Response: ``{"result": [[{"document": {"id", "contents", "title", "text"}, "score": 12.3}, ...], ...]}`` (one list
per query; without ``return_scores`` each item is the bare document). ``GET /health`` reports the index.

Serve it with ``zerosearch serve_retriever --params params.yaml`` (binds ``search.host``:``search.port``,
127.0.0.1 by default). :class:`HttpSearchEngine` is the client; all its network traffic goes through
:func:`post_json`, the one seam tests patch.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import requests
import uvicorn
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from zerosearch_core.search.base import EMPTY_QUERY, Document, EpisodeContext, SearchBackendError, SearchResult
from zerosearch_core.search.local import Retriever

logger = logging.getLogger(__name__)


class RetrieveRequest(BaseModel):
    """Body of ``POST /retrieve``."""

    queries: list[str] = Field(default_factory=list, max_length=512)  # each at most MAX_QUERY_CHARS (checked below)
    query: str | None = None
    """One query instead of ``queries`` (SkyRL's search tool sends this); answered as a list of one."""
    topk: int = Field(default=3, ge=1, le=100)
    return_scores: bool = True


MAX_BODY_BYTES = 1 << 20
"""Largest request body the retriever reads (1 MiB: 512 queries of 2,000 characters); larger ones get 413."""
MAX_QUERY_CHARS = 2000


class BoundedBody:
    """ASGI middleware: a body over ``limit`` bytes gets 413, whether it declares its length (refused before it is
    read) or arrives in chunks without one (refused as soon as the bytes read pass the limit)."""

    def __init__(self, app: Any, limit: int, openai_errors: bool = False) -> None:
        self.app = app
        self.limit = limit
        self.openai_errors = openai_errors

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"Body over {self.limit} bytes; send fewer or shorter texts."
        declared = dict(scope.get("headers", [])).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            body = {"error": {"message": message, "type": "invalid_request_error", "code": 413}}
            await JSONResponse(body if self.openai_errors else {"detail": message}, 413)(scope, receive, send)
            return
        received = 0

        async def bounded_receive() -> dict[str, Any]:
            nonlocal received
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                if received > self.limit:
                    raise HTTPException(status_code=413, detail=message)
            return dict(event)

        await self.app(scope, bounded_receive, send)


def create_retriever_app(retriever: Retriever, manifest: dict[str, object]) -> FastAPI:
    """A FastAPI app that serves ``retriever`` at ``/retrieve`` and reports ``manifest`` at ``/health``."""
    app = FastAPI(title="ZeroSearch retriever", version="1")

    app.add_middleware(BoundedBody, limit=MAX_BODY_BYTES)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "retriever": retriever.kind, **manifest}

    @app.post("/retrieve")
    def retrieve(request: RetrieveRequest) -> dict[str, Any]:
        if request.query is not None and request.queries:
            raise HTTPException(status_code=422, detail="Send queries (a list) or query (one string), not both.")
        if request.query is not None:
            request.queries = [request.query]
        if not request.queries:
            raise HTTPException(status_code=422, detail="queries is empty; send at least one (or query: one string).")
        if any(len(q) > MAX_QUERY_CHARS for q in request.queries):
            raise HTTPException(status_code=422, detail=f"A query is longer than {MAX_QUERY_CHARS} characters.")
        ranked = retriever.retrieve(request.queries, request.topk)
        result = [[_document_payload(doc, request.return_scores) for doc in docs] for docs in ranked]
        return {"result": result}

    return app


def _document_payload(doc: Document, with_score: bool) -> dict[str, Any]:
    document = {"id": doc.id, "contents": doc.contents, "title": doc.title, "text": doc.text}
    return {"document": document, "score": doc.score} if with_score else document


MAX_REPLY_BYTES = 64 << 20
"""Largest reply (after decompression) a client reads: 64 MiB, far above 512 queries x 100 documents."""


def post_json(
    url: str,
    payload: dict[str, Any],
    timeout_s: float,
    headers: dict[str, str] | None = None,
    max_bytes: int = MAX_REPLY_BYTES,
) -> dict[str, Any]:
    """POST ``payload`` as JSON and return the decoded JSON reply (the only network call of the HTTP clients).

    ``timeout_s`` bounds the whole exchange, not each socket read: a server that sends one byte at a time is cut
    off when the time is up (the connection is closed under the read). The reply is read in chunks and refused once
    it passes ``max_bytes`` decoded, so a small compressed body cannot grow without bound.

    Raises:
        requests.RequestException: Connection failure, timeout (per read or in total) or an HTTP error status.
        ValueError: The reply is over ``max_bytes`` or not a JSON object.
    """
    expired = threading.Event()
    with requests.post(url, json=payload, timeout=timeout_s, headers=headers, stream=True) as response:

        def cut_off() -> None:  # shutdown() wakes a read blocked in another thread; close() alone would not
            expired.set()
            response.raw.shutdown()
            response.close()

        timer = threading.Timer(timeout_s, cut_off)
        timer.daemon = True
        timer.start()
        try:
            response.raise_for_status()
            body = bytearray()
            for chunk in response.iter_content(chunk_size=1 << 16):
                body += chunk
                if len(body) > max_bytes:
                    raise ValueError(f"the reply of {url} is over {max_bytes} bytes; refused")
        except Exception as err:
            if expired.is_set():
                raise requests.Timeout(f"no whole reply from {url} within {timeout_s}s") from err
            raise
        finally:
            timer.cancel()
    if expired.is_set():
        raise requests.Timeout(f"no whole reply from {url} within {timeout_s}s")
    reply = json.loads(bytes(body))
    if not isinstance(reply, dict):
        raise ValueError(f"the reply of {url} is no JSON object")
    return reply


def post_with_retries(
    url: str, payload: dict[str, Any], timeout_s: float, max_retries: int, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """:func:`post_json` with exponential backoff (0.5 s, 1 s, 2 s, ...), then :class:`SearchBackendError`."""
    last_error: Exception | None = None
    for attempt in range(max_retries + 1):
        try:
            return post_json(url, payload, timeout_s, headers)
        except (requests.RequestException, ValueError) as err:
            last_error = err
            if attempt < max_retries:
                delay_s = 0.5 * 2**attempt
                logger.warning("POST %s failed (%s); retry %d/%d in %.1fs", url, err, attempt + 1, max_retries, delay_s)
                time.sleep(delay_s)
    raise SearchBackendError(f"POST {url} failed after {max_retries + 1} attempts: {last_error}") from last_error


class HttpSearchEngine:
    """Client of a retriever server (this project's or any Search-R1-compatible one)."""

    def __init__(self, base_url: str, timeout_s: float, max_retries: int) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.max_retries = max_retries

    def open_session(self, ctx: EpisodeContext) -> HttpSearchSession:
        """Real search ignores the episode context."""
        return HttpSearchSession(self)

    def describe(self) -> dict[str, str]:
        """The server's own health report, for the evaluation card.

        Raises:
            SearchBackendError: The server does not answer ``/health`` with JSON.
        """
        try:
            response = requests.get(f"{self.base_url}/health", timeout=self.timeout_s)
            response.raise_for_status()
            report = response.json()
        except (requests.RequestException, ValueError) as err:
            raise SearchBackendError(f"the retriever at {self.base_url} is not answering /health ({err})") from err
        return {"backend": "http", "url": self.base_url, **{k: str(v) for k, v in report.items()}}

    def retrieve(self, queries: list[str], top_k: int) -> list[list[Document]]:
        """Batch retrieval through ``/retrieve``."""
        payload = {"queries": queries, "topk": top_k, "return_scores": True}
        reply = post_with_retries(f"{self.base_url}/retrieve", payload, self.timeout_s, self.max_retries)
        try:
            ranked = [[_parse_document(item) for item in items] for items in reply["result"]]
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise SearchBackendError(f"{self.base_url}/retrieve replied in an unexpected shape: {err!r}") from err
        if len(ranked) != len(queries) or any(len(docs) > top_k for docs in ranked):
            sizes = [len(docs) for docs in ranked]
            raise SearchBackendError(
                f"{self.base_url}/retrieve broke its contract: {len(queries)} queries at topk={top_k} got "
                f"{len(ranked)} lists of {sizes[:5]}{'...' if len(sizes) > 5 else ''} documents; nothing of it is used"
            )
        return ranked


def _parse_document(item: dict[str, Any]) -> Document:
    document = item["document"]
    title = document.get("title")
    text = document.get("text")
    if title is None or text is None:  # a plain Search-R1 server sends only `contents`
        title, _, text = str(document["contents"]).partition("\n")
        title = title.strip('"')
    return Document(id=str(document.get("id", "")), title=str(title), text=str(text), score=float(item["score"]))


@dataclass
class HttpSearchSession:
    """One episode's view of a retriever server."""

    engine: HttpSearchEngine

    def search(self, query: str, top_k: int) -> SearchResult:
        """One query through the server; raises :class:`SearchBackendError` after the bounded retries."""
        started = time.perf_counter()
        if not query.strip():
            return EMPTY_QUERY
        documents = self.engine.retrieve([query], top_k)[0]
        return SearchResult(documents=tuple(documents), status="ok", latency_s=time.perf_counter() - started)


@contextmanager
def running_server(app: FastAPI, host: str, port: int, startup_timeout_s: float = 30.0) -> Iterator[str]:
    """Run ``app`` with uvicorn in a background thread; yield its base URL; stop it on exit.

    Raises:
        RuntimeError: The server did not come up within ``startup_timeout_s``.
    """
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"Server on {host}:{port} did not start within {startup_timeout_s}s (port taken?).")
        time.sleep(0.05)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
