"""An OpenAI-compatible server for the simulation LLM (its client is :mod:`zerosearch_core.simulator.client`).

``POST /v1/completions`` and ``POST /v1/chat/completions`` (the subset the simulator needs: ``prompt`` or
``messages``, ``max_tokens``, ``temperature``, ``seed``), ``GET /v1/models`` and ``GET /health``. Concurrent requests
are queued and served in batches: a worker takes up to ``max_batch_size`` requests, waiting at most
``batch_wait_ms`` for more, and runs them as one ``generate`` call in a thread, so the event loop stays free. The
queue is bounded (a full queue answers 503) and each request has a deadline (504; a request that times out before
its generation starts is dropped, not generated). Only compatible requests share a batch: the same ``max_tokens``
and, when sampling, the same temperature and seed, so a result never depends on its batch-mates; a batch that fails
is retried request by request, so one bad request fails alone. Per-request budgets (:class:`ServerLimits`) bound
the prompt and the generation; ``/health`` answers 503 when the worker has died or is stuck on one batch. Identical
requests are answered from a cache. What the server does not implement (``n`` > 1, streaming, roles other than
user) is refused with 400, and every error has OpenAI's ``{"error": {...}}`` shape.

Serve with ``zerosearch serve_simulator --params params.yaml``; on a GPU, ``vllm serve <simulator_dir>
--port 8001`` offers the same API, and its client
(:class:`~zerosearch_core.simulator.client.OpenAICompatibleLLM`) talks to either unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from zerosearch_core.search.http import BoundedBody
from zerosearch_core.simulator.llm import LocalLLM

logger = logging.getLogger(__name__)

DISCONNECT_POLL_S = 0.25
"""How often a waiting request checks whether its client is still there."""


class GenerationFields(BaseModel):
    """What both endpoints take; ``n`` and ``stream`` exist only to be refused with 400 (never ignored), and any
    other field (``stop``, ``logprobs``, ``tools``, ``response_format``, ...) is refused by name: a client that
    relies on one must not get an answer that silently ignored it."""

    model_config = ConfigDict(extra="forbid")

    model: str = "simulator"
    max_tokens: int = Field(default=128, ge=1, le=4096)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0, allow_inf_nan=False)
    seed: int = 0
    n: int = 1
    stream: bool = False


class CompletionRequest(GenerationFields):
    """Body of ``/v1/completions``."""

    prompt: str = Field(min_length=1)


GREEDY_BELOW = 1e-5
"""A temperature under this samples as greedy: dividing logits by a denormal one (1e-320) overflowed to a 500."""


class ChatMessage(BaseModel):
    """One chat message."""

    role: str
    content: str


class ChatRequest(GenerationFields):
    """Body of ``/v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)


class OpenAIError(Exception):
    """An error answered in OpenAI's shape: ``{"error": {"message", "type", "code"}}``."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind


@dataclass(frozen=True)
class ServerLimits:
    """What one request may ask of the server, so that no request can take it down."""

    max_tokens: int
    """Largest ``max_tokens`` served (the simulator's own budget is ``simulator.max_new_tokens``)."""
    max_prompt_tokens: int
    """Longest prompt served, in tokens (``simulator.max_length``, what the simulator was fine-tuned on)."""
    request_timeout_s: float
    """Deadline per request (504 after it; work not started by then is dropped)."""

    @property
    def max_prompt_chars(self) -> int:
        """Longest prompt text looked at: no token is longer than :data:`MAX_CHARS_PER_TOKEN` characters, so a longer
        text is over the token budget without tokenizing it (which took 21 s for a 21 MB prompt)."""
        return self.max_prompt_tokens * MAX_CHARS_PER_TOKEN

    @property
    def max_body_bytes(self) -> int:
        """Largest request body read (413 beyond): the longest prompt, in UTF-8 and JSON-escaped, and room for the
        rest of the request."""
        return 6 * self.max_prompt_chars + (64 << 10)


MAX_CHARS_PER_TOKEN = 32
"""An upper bound on the characters of one token of the simulator's tokenizers (byte-level BPE, vocabularies of
1k to 150k: the longest tokens are runs of spaces or a long word, well under 32 characters)."""


@dataclass
class _Pending:
    key: tuple[Any, ...]
    text: str
    chat: bool
    max_tokens: int
    temperature: float
    seed: int
    future: asyncio.Future[str] | None = field(repr=False, default=None)

    @property
    def group(self) -> tuple[Any, ...]:
        """Requests that may share one ``generate`` call: the same length budget and sampling, and for sampled
        requests the same seed (one generator serves a batch, so a different seed would make a request's text
        depend on its batch-mates)."""
        return (self.max_tokens, 0.0, 0) if self.temperature == 0 else (self.max_tokens, self.temperature, self.seed)


@dataclass
class ServerStats:
    """Counters reported at ``/health``."""

    requests: int = 0
    batches: int = 0
    cache_hits: int = 0
    rejected: int = 0
    timeouts: int = 0
    disconnected: int = 0
    """Requests whose client hung up before the answer; dropped unless their generation had started."""
    abandoned: int = 0
    isolated_failures: int = 0
    cancelled: int = 0
    """Batches whose generation stopped midway because every client had timed out."""
    batch_sizes: list[int] = field(default_factory=list)


class BatchingGenerator:
    """Queues requests and runs compatible ones in batches on a :class:`LocalLLM`."""

    def __init__(
        self, llm: LocalLLM, max_batch_size: int, batch_wait_ms: float, max_queue: int, cache_size: int = 4096
    ) -> None:
        self.llm = llm
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_ms / 1000
        self.max_queue = max_queue
        self.waiting: deque[_Pending] = deque()
        self.arrived = asyncio.Event()
        self.cache: OrderedDict[tuple[Any, ...], str] = OrderedDict()
        self.cache_size = cache_size
        self.stats = ServerStats()
        self.worker: asyncio.Task[None] | None = None
        self.busy_since: float | None = None
        self.cancelling = False

    async def submit(self, pending: _Pending, timeout_s: float) -> str:
        """Answer one request (from the cache, or through a batch); 503 when the queue is full, 504 past the
        deadline, after which the request is dropped if its generation has not started."""
        self.stats.requests += 1
        if pending.key in self.cache:
            self.stats.cache_hits += 1
            self.cache.move_to_end(pending.key)
            return self.cache[pending.key]
        if len(self.waiting) >= self.max_queue:
            self.stats.rejected += 1
            raise OpenAIError(503, "The simulator queue is full; retry later.", "server_overloaded")
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        pending.future = future
        self.waiting.append(pending)
        self.arrived.set()
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout=timeout_s)
        except TimeoutError:
            self.stats.timeouts += 1
            future.cancel()  # not generated if it is still waiting
            raise OpenAIError(504, f"No completion within {timeout_s}s.", "timeout") from None

    async def run(self) -> None:
        """The worker loop: gather a batch of compatible requests, generate it in a thread, resolve the futures."""
        while True:
            await self._wait_for_work()
            await asyncio.sleep(self.batch_wait_s)  # let concurrent requests arrive
            batch = self._take_batch()
            if batch:
                await self._serve(batch)

    async def _wait_for_work(self) -> None:
        while not self.waiting:
            self.arrived.clear()
            await self.arrived.wait()

    def _take_batch(self) -> list[_Pending]:
        """The oldest live request and the live requests of its group behind it (up to ``max_batch_size``), in
        order; abandoned ones are dropped, the others keep their place."""
        live = [p for p in self.waiting if p.future is not None and not p.future.done()]
        self.stats.abandoned += len(self.waiting) - len(live)
        if not live:
            self.waiting.clear()
            return []
        group = live[0].group
        batch = [p for p in live if p.group == group][: self.max_batch_size]
        chosen = {id(p) for p in batch}
        self.waiting = deque(p for p in live if id(p) not in chosen)
        return batch

    async def _serve(self, batch: list[_Pending]) -> None:
        self.stats.batches += 1
        self.stats.batch_sizes.append(len(batch))
        self.busy_since = time.monotonic()
        try:
            texts: list[str | Exception] = list(await self._generate(batch))
        except Exception:  # noqa: BLE001 - one bad request must not fail its batch-mates: retry each alone
            logger.warning("A batch of %d failed; generating its requests one by one", len(batch))
            texts = []
            for pending in batch:
                try:
                    texts.extend(await self._generate([pending]))
                except Exception as err:  # noqa: BLE001 - answered to that request as a 500
                    logger.exception("A request failed on its own")
                    self.stats.isolated_failures += 1
                    texts.append(err)
        finally:
            self.busy_since = None
        for pending, text in zip(batch, texts, strict=True):
            if pending.future is None or pending.future.done():
                continue
            if isinstance(text, Exception):
                pending.future.set_exception(OpenAIError(500, f"Generation failed: {text}", "server_error"))
                continue
            self.cache[pending.key] = text
            while len(self.cache) > self.cache_size:
                self.cache.popitem(last=False)
            pending.future.set_result(text)

    async def _generate(self, batch: list[_Pending]) -> list[str]:
        first = batch[0]

        def abandoned() -> bool:  # every client of the batch has timed out: nobody will read the text
            gone = all(p.future is None or p.future.done() for p in batch)
            if gone and not self.cancelling:
                self.cancelling = True
                self.stats.cancelled += 1
            return gone

        self.cancelling = False
        return await asyncio.to_thread(
            self.llm.complete_rendered,
            [self._render(p) for p in batch],
            first.max_tokens,
            first.temperature,
            first.seed,
            abandoned,
        )

    def _render(self, pending: _Pending) -> str:
        return self.llm.render(pending.text) if pending.chat else pending.text

    def stalled(self, limit_s: float) -> bool:
        """Whether the worker has died, or has been generating one batch for longer than ``limit_s``."""
        if self.worker is not None and self.worker.done():
            return True
        return self.busy_since is not None and time.monotonic() - self.busy_since > limit_s


def create_simulator_app(
    llm: LocalLLM,
    model_name: str,
    max_batch_size: int,
    batch_wait_ms: float,
    max_queue: int,
    request_timeout_s: float,
    limits: ServerLimits | None = None,
) -> FastAPI:
    """The FastAPI app; the batching worker starts and stops with the app's lifespan.

    Args:
        llm: The simulator.
        model_name: The name ``/v1/models`` reports and requests may give.
        max_batch_size: Requests generated together.
        batch_wait_ms: How long a batch waits to fill up.
        max_queue: Queued requests beyond which the server answers 503.
        request_timeout_s: Deadline per request (504).
        limits: Per-request budgets; by default 4096 new tokens and 4096 prompt tokens.
    """
    generator = BatchingGenerator(llm, max_batch_size, batch_wait_ms, max_queue)
    limits = limits or ServerLimits(max_tokens=4096, max_prompt_tokens=4096, request_timeout_s=request_timeout_s)

    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        generator.worker = asyncio.create_task(generator.run())
        yield
        generator.worker.cancel()

    app = FastAPI(title="ZeroSearch simulator", version="1", lifespan=lifespan)
    app.state.generator = generator
    app.add_middleware(BoundedBody, limit=limits.max_body_bytes, openai_errors=True)

    @app.exception_handler(OpenAIError)
    async def openai_error(request: Request, err: OpenAIError) -> JSONResponse:
        return JSONResponse({"error": {"message": err.message, "type": err.kind, "code": err.status}}, err.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, err: RequestValidationError) -> JSONResponse:
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in err.errors())
        return JSONResponse({"error": {"message": detail, "type": "invalid_request_error", "code": 400}}, 400)

    @app.get("/health")
    def health() -> JSONResponse:
        stats = generator.stats
        stalled = generator.stalled(2 * limits.request_timeout_s)
        report = {
            "status": "stalled" if stalled else "ok",
            "model": model_name,
            "queued": len(generator.waiting),
            "requests": stats.requests,
            "batches": stats.batches,
            "cache_hits": stats.cache_hits,
            "rejected": stats.rejected,
            "timeouts": stats.timeouts,
            "disconnected": stats.disconnected,
            "abandoned": stats.abandoned,
            "isolated_failures": stats.isolated_failures,
            "cancelled": stats.cancelled,
            "max_batch_seen": max(stats.batch_sizes, default=0),
        }
        return JSONResponse(report, status_code=503 if stalled else 200)

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "zerosearch"}]}

    def admit(text: str, max_tokens: int, n: int, stream: bool) -> int:
        """Refuse what the server does not implement or cannot afford; the prompt's token count."""
        if n != 1:
            raise OpenAIError(400, f"n={n} is not supported; this server returns one choice per request.")
        if stream:
            raise OpenAIError(400, "stream=true is not supported; send stream=false.")
        if max_tokens > limits.max_tokens:
            raise OpenAIError(400, f"max_tokens={max_tokens} exceeds this server's limit of {limits.max_tokens}.")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise OpenAIError(400, "The prompt is not valid Unicode (a lone surrogate?).") from None
        if len(text) > limits.max_prompt_chars:  # over the token budget whatever it holds: never tokenized
            raise OpenAIError(
                400,
                f"The prompt has {len(text)} characters, more than {limits.max_prompt_tokens} tokens can hold; this "
                f"server takes at most {limits.max_prompt_tokens} tokens.",
            )
        prompt_tokens = len(llm.tokenizer(text, add_special_tokens=False)["input_ids"])
        if prompt_tokens > limits.max_prompt_tokens:
            raise OpenAIError(
                400, f"The prompt has {prompt_tokens} tokens; this server takes at most {limits.max_prompt_tokens}."
            )
        return prompt_tokens

    def usage_and_finish(text: str, prompt_tokens: int, max_tokens: int) -> tuple[dict[str, int], str]:
        completion_tokens = len(llm.tokenizer(text, add_special_tokens=False)["input_ids"])
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        return usage, "length" if completion_tokens >= max_tokens else "stop"

    async def answer(http: Request, pending: _Pending) -> str:
        """The request's text; dropped (not generated, if it has not started) once its client hangs up."""
        task = asyncio.ensure_future(generator.submit(pending, request_timeout_s))
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if done:
                return task.result()
            if await http.is_disconnected():
                generator.stats.disconnected += 1
                if pending.future is not None:
                    pending.future.cancel()
                task.cancel()
                raise OpenAIError(499, "The client closed the connection.", "client_closed")

    @app.post("/v1/completions")
    async def completions(http: Request, request: CompletionRequest) -> dict[str, Any]:
        prompt_tokens = admit(request.prompt, request.max_tokens, request.n, request.stream)
        temperature = request.temperature if request.temperature >= GREEDY_BELOW else 0.0
        key = ("text", request.prompt, request.max_tokens, temperature, request.seed)
        pending = _Pending(key, request.prompt, False, request.max_tokens, temperature, request.seed)
        text = await answer(http, pending)
        usage, finish = usage_and_finish(text, prompt_tokens, request.max_tokens)
        return _envelope("text_completion", model_name, {"index": 0, "text": text, "finish_reason": finish}, usage)

    @app.post("/v1/chat/completions")
    async def chat(http: Request, request: ChatRequest) -> dict[str, Any]:
        unsupported = sorted({m.role for m in request.messages} - {"user"})
        if unsupported:
            raise OpenAIError(400, f"Message roles {unsupported} are not supported; send the prompt as user messages.")
        user = "\n".join(m.content for m in request.messages)
        prompt_tokens = admit(user, request.max_tokens, request.n, request.stream)
        temperature = request.temperature if request.temperature >= GREEDY_BELOW else 0.0
        key = ("chat", user, request.max_tokens, temperature, request.seed)
        pending = _Pending(key, user, True, request.max_tokens, temperature, request.seed)
        text = await answer(http, pending)
        usage, finish = usage_and_finish(text, prompt_tokens, request.max_tokens)
        message = {"role": "assistant", "content": text}
        return _envelope(
            "chat.completion", model_name, {"index": 0, "message": message, "finish_reason": finish}, usage
        )

    return app


def _envelope(kind: str, model: str, choice: dict[str, Any], usage: dict[str, int]) -> dict[str, Any]:
    return {
        "id": f"cmpl-{uuid.uuid4().hex[:12]}",
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": usage,
    }
