"""Web search through a Serper-style API (``POST {"q", "num"}`` with an ``X-API-KEY`` header → ``organic`` results).

The key is read from the environment variable named by ``search.web_api_key_env`` when the engine is built, and is
never logged, described or written anywhere. Calls go through :func:`zerosearch_core.search.http.post_with_retries`
(bounded retries with backoff, then :class:`~zerosearch_core.search.base.SearchBackendError`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from zerosearch_core.config import ConfigError
from zerosearch_core.search.base import EMPTY_QUERY, Document, EpisodeContext, SearchBackendError, SearchResult
from zerosearch_core.search.http import post_with_retries


class WebSearchEngine:
    """A :class:`~zerosearch_core.search.base.SearchEngine` over a Serper-style web search API."""

    def __init__(self, url: str, api_key_env: str, timeout_s: float, max_retries: int) -> None:
        key = os.environ.get(api_key_env, "")
        if not key:
            raise ConfigError(
                f"search.backend is 'web' but the environment variable {api_key_env} is not set; export your API key "
                f"there (the key is read from the environment only, never from a parameter file)."
            )
        self.url = url
        self._headers = {"X-API-KEY": key, "Content-Type": "application/json"}
        self.timeout_s = timeout_s
        self.max_retries = max_retries

    def open_session(self, ctx: EpisodeContext) -> WebSearchSession:
        """Real search ignores the episode context."""
        return WebSearchSession(self)

    def describe(self) -> dict[str, str]:
        """Backend facts (without the key)."""
        return {"backend": "web", "url": self.url, "retriever": "web"}

    def search(self, query: str, top_k: int) -> list[Document]:
        """The top organic results as documents (title and snippet)."""
        reply = post_with_retries(self.url, {"q": query, "num": top_k}, self.timeout_s, self.max_retries, self._headers)
        try:
            organic: list[dict[str, Any]] = list(reply["organic"])
        except (KeyError, TypeError) as err:
            raise SearchBackendError(f"{self.url} replied without 'organic' results: {err}") from err
        return [
            Document(
                id=str(item.get("link", i)),
                title=str(item.get("title", "")),
                text=str(item.get("snippet", "")),
                score=0.0,
            )
            for i, item in enumerate(organic[:top_k])
        ]


@dataclass
class WebSearchSession:
    """One episode's view of the web engine."""

    engine: WebSearchEngine

    def search(self, query: str, top_k: int) -> SearchResult:
        """One web search; raises :class:`SearchBackendError` after the bounded retries."""
        if not query.strip():
            return EMPTY_QUERY
        started = time.perf_counter()
        documents = self.engine.search(query, top_k)
        return SearchResult(documents=tuple(documents), status="ok", latency_s=time.perf_counter() - started)
