"""The one search interface every backend implements, and its shared value types.

A rollout binds an :class:`EpisodeContext` once per episode (``engine.open_session(ctx)``) and then calls
``session.search(query, top_k)``, so the local retriever, the LLM simulator and web APIs share one signature.
Backend failures are retried at the network seam and then raised as :class:`SearchBackendError`;
:class:`SearchErrorBudget` turns a failure rate above ``search.max_error_rate`` into a failed run instead of
silently feeding "no information" to the policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol


@dataclass(frozen=True)
class Document:
    """One retrieved (or simulated) passage."""

    id: str
    title: str
    text: str
    score: float

    @property
    def contents(self) -> str:
        """The passage in wiki-18 ``contents`` form: the quoted title on the first line, then the text."""
        return f'"{self.title}"\n{self.text}'


@dataclass(frozen=True)
class SearchResult:
    """What one search returned: documents, how it went, and how long it took."""

    documents: tuple[Document, ...]
    status: Literal["ok", "empty_query", "error"]
    latency_s: float
    message: str = ""


EMPTY_QUERY = SearchResult(documents=(), status="empty_query", latency_s=0.0, message="Empty query.")
"""What every engine returns for a blank query: an observation, not an error (nothing is searched)."""


@dataclass(frozen=True)
class EpisodeContext:
    """Per-episode state bound once, like an RL environment's ``reset(**row)``."""

    question: str
    gold_answers: tuple[str, ...]
    noise_prob: float
    seed: int


class SearchSession(Protocol):
    """A search handle bound to one episode."""

    def search(self, query: str, top_k: int) -> SearchResult:
        """Return up to ``top_k`` documents for ``query``; raise :class:`SearchBackendError` on backend failure."""
        ...


class SearchEngine(Protocol):
    """Anything that can open per-episode search sessions."""

    def open_session(self, ctx: EpisodeContext) -> SearchSession:
        """Bind an episode and return its session."""
        ...

    def describe(self) -> dict[str, str]:
        """Facts for the evaluation card: backend kind, index, corpus hash, address."""
        ...


class SearchBackendError(RuntimeError):
    """A search backend failed after its bounded retries."""


def run_searches(requests: Sequence[tuple[SearchSession, str]], top_k: int) -> list[SearchResult | SearchBackendError]:
    """Run one turn's searches, together where the engine can batch them, and return each result or its error.

    Sessions whose ``engine`` has a ``search_batch`` method (the simulated engine: one generate call for the whole
    turn; the in-process retriever: one retrieval call) and share that engine are searched in one call; any other
    session searches on its own, in order.

    Args:
        requests: ``(session, query)`` pairs; the queries are non-empty.
        top_k: Documents per search.
    """
    engine = getattr(requests[0][0], "engine", None) if requests else None
    if engine is not None and hasattr(engine, "search_batch"):
        if all(getattr(session, "engine", None) is engine for session, _ in requests):
            results: list[SearchResult | SearchBackendError] = engine.search_batch(requests, top_k)
            return results
    outcomes: list[SearchResult | SearchBackendError] = []
    for session, query in requests:
        try:
            outcomes.append(session.search(query, top_k))
        except SearchBackendError as err:
            outcomes.append(err)
    return outcomes


class SearchErrorBudget:
    """Counts searches and failures and fails the run once the failure rate exceeds a limit.

    Args:
        max_error_rate: The largest tolerated fraction of failed searches (0 tolerates none).
        min_searches: Searches to observe before a nonzero rate is judged, so one early blip
            does not end a run that tolerates a few failures.
    """

    def __init__(self, max_error_rate: float, min_searches: int = 20) -> None:
        self.max_error_rate = max_error_rate
        self.min_searches = min_searches
        self.searches = 0
        self.failures = 0

    def record(self, failed: bool, error: Exception | None = None) -> None:
        """Count one search; raise :class:`SearchBackendError` when the failure rate is over the limit."""
        self.searches += 1
        if not failed:
            return
        self.failures += 1
        judged = self.max_error_rate == 0.0 or self.searches >= self.min_searches
        if judged and self.error_rate > self.max_error_rate:
            raise SearchBackendError(
                f"{self.failures} of {self.searches} searches failed ({self.error_rate:.1%}), above "
                f"search.max_error_rate={self.max_error_rate}; last error: {error}. Check the search backend "
                "(is the server up?) or raise search.max_error_rate if such failures are acceptable."
            ) from error

    @property
    def error_rate(self) -> float:
        """Failed searches over all searches so far."""
        return self.failures / self.searches if self.searches else 0.0
