"""The simulator's HTTP client: :class:`OpenAICompatibleLLM` speaks to this project's simulator server or to vLLM's
OpenAI server, with bounded retries and a health check before training starts.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import requests

from zerosearch_core.search.base import SearchBackendError
from zerosearch_core.search.http import post_with_retries

MAX_CONCURRENT_REQUESTS = 32
"""Requests one client sends at once (the server batches them)."""


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
