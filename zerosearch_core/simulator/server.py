"""An OpenAI-compatible server for the simulation LLM, and its client.

``POST /v1/completions`` and ``POST /v1/chat/completions`` (the subset the simulator needs: ``prompt`` or
``messages``, ``max_tokens``, ``temperature``, ``seed``), ``GET /v1/models`` and ``GET /health``. Concurrent requests
are queued and served in batches: a worker takes up to ``max_batch_size`` requests, waiting at most
``batch_wait_ms`` for more, and runs them as one ``generate`` call in a thread, so the event loop stays free. The
queue is bounded (a full queue answers 503) and each request has a deadline (504). Identical requests (same
prompt, seed, length and temperature) are answered from a cache. Within a batch, sampling draws from one generator
seeded by the batch's first request, so an uncached result can depend on what it was batched with; the cache makes
repeated requests stable.

Serve with ``zerosearch serve_simulator --params params.yaml``; on a GPU, ``vllm serve <simulator_dir>
--port 8001`` offers the same API, and :class:`OpenAICompatibleLLM` talks to either unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from zerosearch_core.search.base import SearchBackendError
from zerosearch_core.search.http import post_with_retries
from zerosearch_core.simulator.llm import LocalLLM

MAX_CONCURRENT_REQUESTS = 32
"""Requests one client sends at once (the server batches them)."""

logger = logging.getLogger(__name__)


class CompletionRequest(BaseModel):
    """Body of ``/v1/completions``."""

    model: str = "simulator"
    prompt: str
    max_tokens: int = Field(default=128, ge=1, le=4096)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    seed: int = 0


class ChatMessage(BaseModel):
    """One chat message."""

    role: str
    content: str


class ChatRequest(BaseModel):
    """Body of ``/v1/chat/completions``."""

    model: str = "simulator"
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int = Field(default=128, ge=1, le=4096)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    seed: int = 0


@dataclass
class _Pending:
    key: tuple[Any, ...]
    text: str
    chat: bool
    max_tokens: int
    temperature: float
    seed: int
    future: asyncio.Future[str] | None = field(repr=False, default=None)


@dataclass
class ServerStats:
    """Counters reported at ``/health``."""

    requests: int = 0
    batches: int = 0
    cache_hits: int = 0
    rejected: int = 0
    timeouts: int = 0
    batch_sizes: list[int] = field(default_factory=list)


class BatchingGenerator:
    """Queues requests and runs them in batches on a :class:`LocalLLM`."""

    def __init__(
        self, llm: LocalLLM, max_batch_size: int, batch_wait_ms: float, max_queue: int, cache_size: int = 4096
    ) -> None:
        self.llm = llm
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_ms / 1000
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=max_queue)
        self.cache: OrderedDict[tuple[Any, ...], str] = OrderedDict()
        self.cache_size = cache_size
        self.stats = ServerStats()
        self.worker: asyncio.Task[None] | None = None

    async def submit(self, pending: _Pending, timeout_s: float) -> str:
        """Answer one request (from the cache, or through a batch)."""
        self.stats.requests += 1
        if pending.key in self.cache:
            self.stats.cache_hits += 1
            self.cache.move_to_end(pending.key)
            return self.cache[pending.key]
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        pending.future = future
        try:
            self.queue.put_nowait(pending)
        except asyncio.QueueFull:
            self.stats.rejected += 1
            raise HTTPException(status_code=503, detail="The simulator queue is full; retry later.") from None
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout=timeout_s)
        except TimeoutError:
            self.stats.timeouts += 1
            raise HTTPException(status_code=504, detail=f"No completion within {timeout_s}s.") from None

    async def run(self) -> None:
        """The worker loop: gather a batch, generate it in a thread, resolve the futures."""
        while True:
            batch = [await self.queue.get()]
            deadline = time.monotonic() + self.batch_wait_s
            while len(batch) < self.max_batch_size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), timeout=remaining))
                except TimeoutError:
                    break
            await self._serve(batch)

    async def _serve(self, batch: list[_Pending]) -> None:
        self.stats.batches += 1
        self.stats.batch_sizes.append(len(batch))
        try:
            texts = await asyncio.to_thread(
                self.llm.complete_rendered,
                [self._render(p) for p in batch],
                max(p.max_tokens for p in batch),
                batch[0].temperature,
                batch[0].seed,
            )
        except Exception as err:  # noqa: BLE001 - every waiting request must learn of the failure
            logger.exception("Simulator batch of %d failed", len(batch))
            for pending in batch:
                if pending.future is not None and not pending.future.done():
                    pending.future.set_exception(HTTPException(status_code=500, detail=f"Generation failed: {err}"))
            return
        for pending, text in zip(batch, texts, strict=True):
            self.cache[pending.key] = text
            while len(self.cache) > self.cache_size:
                self.cache.popitem(last=False)
            if pending.future is not None and not pending.future.done():
                pending.future.set_result(text)

    def _render(self, pending: _Pending) -> str:
        return self.llm.render(pending.text) if pending.chat else pending.text


def create_simulator_app(
    llm: LocalLLM, model_name: str, max_batch_size: int, batch_wait_ms: float, max_queue: int, request_timeout_s: float
) -> FastAPI:
    """The FastAPI app; the batching worker starts and stops with the app's lifespan."""
    generator = BatchingGenerator(llm, max_batch_size, batch_wait_ms, max_queue)

    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        generator.worker = asyncio.create_task(generator.run())
        yield
        generator.worker.cancel()

    app = FastAPI(title="ZeroSearch simulator", version="1", lifespan=lifespan)
    app.state.generator = generator

    @app.get("/health")
    def health() -> dict[str, Any]:
        stats = generator.stats
        return {
            "status": "ok",
            "model": model_name,
            "queued": generator.queue.qsize(),
            "requests": stats.requests,
            "batches": stats.batches,
            "cache_hits": stats.cache_hits,
            "rejected": stats.rejected,
            "timeouts": stats.timeouts,
            "max_batch_seen": max(stats.batch_sizes, default=0),
        }

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "zerosearch"}]}

    @app.post("/v1/completions")
    async def completions(request: CompletionRequest) -> dict[str, Any]:
        key = ("text", request.prompt, request.max_tokens, request.temperature, request.seed)
        pending = _Pending(key, request.prompt, False, request.max_tokens, request.temperature, request.seed)
        text = await generator.submit(pending, request_timeout_s)
        return _envelope("text_completion", model_name, {"index": 0, "text": text, "finish_reason": "stop"})

    @app.post("/v1/chat/completions")
    async def chat(request: ChatRequest) -> dict[str, Any]:
        user = "\n".join(m.content for m in request.messages if m.role == "user")
        key = ("chat", user, request.max_tokens, request.temperature, request.seed)
        pending = _Pending(key, user, True, request.max_tokens, request.temperature, request.seed)
        text = await generator.submit(pending, request_timeout_s)
        message = {"role": "assistant", "content": text}
        return _envelope("chat.completion", model_name, {"index": 0, "message": message, "finish_reason": "stop"})

    return app


def _envelope(kind: str, model: str, choice: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"cmpl-{uuid.uuid4().hex[:12]}",
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


class OpenAICompatibleLLM:
    """:class:`~zerosearch_core.search.simulated.LLMClient` over HTTP: this project's server or ``vllm serve``."""

    def __init__(self, base_url: str, model: str, timeout_s: float, max_retries: int) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout_s = timeout_s
        self.max_retries = max_retries

    def check_health(self) -> None:
        """Fail fast, before training starts, when the server is not there (``/health`` exists on vLLM too).

        Raises:
            SearchBackendError: No healthy answer after the bounded retries.
        """
        last_error: Exception | None = None
        for attempt in range(self.max_retries + 1):
            try:
                requests.get(f"{self.base_url}/health", timeout=self.timeout_s).raise_for_status()
                return
            except requests.RequestException as err:
                last_error = err
                time.sleep(0.5 * 2**attempt if attempt < self.max_retries else 0)
        raise SearchBackendError(
            f"The simulator server at {self.base_url} is not answering ({last_error}); start it with "
            "`zerosearch serve_simulator` (or `vllm serve`), or set simulator.url: null to run it in process."
        ) from last_error

    def complete(self, prompts: Sequence[str], max_new_tokens: int, temperature: float, seed: int) -> list[str]:
        """One chat completion per prompt, sent concurrently so the server can batch them; prompt ``i`` is sampled
        with seed ``seed + i``. :class:`SearchBackendError` after the bounded retries."""

        def one(index: int) -> str:
            payload = {
                "model": self.model,
                "messages": [{"role": "user", "content": prompts[index]}],
                "max_tokens": max_new_tokens,
                "temperature": temperature,
                "seed": seed + index,
            }
            reply = post_with_retries(f"{self.base_url}/v1/chat/completions", payload, self.timeout_s, self.max_retries)
            try:
                return str(reply["choices"][0]["message"]["content"])
            except (KeyError, IndexError, TypeError) as err:
                raise SearchBackendError(f"{self.base_url} replied in an unexpected shape: {err}") from err

        if len(prompts) <= 1:
            return [one(i) for i in range(len(prompts))]
        with ThreadPoolExecutor(max_workers=min(len(prompts), MAX_CONCURRENT_REQUESTS)) as pool:
            return list(pool.map(one, range(len(prompts))))
