"""The multi-turn search protocol, batched, token-in/token-out.

Each turn the policy generates until ``</search>``, ``</answer>``, eos or the turn budget. A search turn's query goes
to the episode's :class:`~zerosearch_core.search.base.SearchSession`, and the ids of the ``<information>`` block are
appended to the sampled ids. Sampled ids are kept exactly as generated (never decoded, split and re-tokenized), and
``loss_mask`` is 1 for sampled tokens and 0 for inserted tokens (retrieved documents and observations).

Malformed output (no tag, an empty query, several answers) is an observation and a counter, never an exception.
A backend failure after its retries is counted by a :class:`SearchErrorBudget`, which fails the run when the rate is
over ``search.max_error_rate``.

What generates the turns is a :class:`PolicyGenerator`; the generation backends that implement it (transformers and
vLLM) are in :mod:`zerosearch_core.models.generation`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from zerosearch_core.agent.prompts import (
    EMPTY_QUERY_OBSERVATION,
    INVALID_ACTION_OBSERVATION,
    SEARCH_FAILED_OBSERVATION,
    render_information_block,
)
from zerosearch_core.agent.rewards import count_answer_spans, extract_answer
from zerosearch_core.config import RolloutConfig, SearchConfig
from zerosearch_core.search.base import SearchBackendError, SearchErrorBudget, SearchSession, run_searches
from zerosearch_core.seeding import derive_seed

if TYPE_CHECKING:
    pass


STOP_STRINGS: tuple[str, ...] = ("</search>", "</answer>")


_SEARCH_SPAN = re.compile(r"<search>(.*?)</search>", re.DOTALL)


FinishReason = Literal["answer", "eos", "max_turns", "max_tokens"]


Sampled = tuple[list[int], list[float]]
"""One turn's sampled token ids and their log-probabilities (same length)."""


class PolicyGenerator(Protocol):
    """Generates one turn for a batch of token sequences."""

    stop_ids: set[int]
    """Token ids that end an episode (eos)."""

    def generate(
        self, sequences: Sequence[Sequence[int]], max_new_tokens: int, seeds: Sequence[int] | None = None
    ) -> list[Sampled]:
        """Sampled ids per sequence, ending at (and including) the first stop string or eos, with the log-prob
        of each under the sampling distribution. ``seeds`` (one per sequence) make each row's sample its own, where
        the backend can (vLLM); None draws from the generator's own stream."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ids, special tokens kept."""
        ...

    def encode(self, text: str) -> list[int]:
        """Ids of inserted text (no special tokens added)."""
        ...


@dataclass
class Episode:
    """The growing state of one episode."""

    prompt_ids: list[int]
    session: SearchSession | None
    seed: int = 0
    """Root of this episode's sampling seeds (one per turn), for backends that seed per row."""
    response_ids: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    turns: int = 0
    searches: int = 0
    queries: list[str] = field(default_factory=list)
    invalid_actions: int = 0
    empty_queries: int = 0
    search_failures: int = 0
    finish_reason: FinishReason | None = None

    def append(self, ids: Sequence[int], sampled: bool, logprobs: Sequence[float] | None = None) -> None:
        """Append ids with loss mask 1 (sampled, with their log-probs) or 0 (inserted; log-prob 0)."""
        self.response_ids.extend(ids)
        self.loss_mask.extend([1 if sampled else 0] * len(ids))
        self.logprobs.extend(logprobs if logprobs is not None else [0.0] * len(ids))


@dataclass(frozen=True)
class Trajectory:
    """A finished episode: ids, mask and what happened."""

    prompt_ids: tuple[int, ...]
    response_ids: tuple[int, ...]
    loss_mask: tuple[int, ...]
    logprobs: tuple[float, ...]
    """Log-prob of each response token when it was sampled (the "old" log-probs); 0 for inserted tokens."""
    response_text: str
    answer: str | None
    answer_spans: int
    finish_reason: FinishReason
    turns: int
    searches: int
    queries: tuple[str, ...]
    invalid_actions: int
    empty_queries: int
    search_failures: int


@dataclass(frozen=True)
class SearchProtocol:
    """What every episode of the search protocol needs besides the policy and the engine, whether it is a training
    rollout, a validation or an evaluation: the turn and token budgets, documents per search, and the share of failed
    searches a run may tolerate."""

    rollout: RolloutConfig
    top_k: int
    max_error_rate: float
    prompt_template: str | None = None
    """A search-mode prompt with ``{question}`` (``zerosearch evaluate_checkpoint --prompt-file``); None uses
    this project's (:func:`zerosearch_core.agent.prompts.render_policy_prompt`)."""

    @classmethod
    def from_sections(cls, rollout: RolloutConfig, search: SearchConfig) -> SearchProtocol:
        """The protocol of a config's ``rollout`` and ``search`` sections."""
        return cls(rollout=rollout, top_k=search.top_k, max_error_rate=search.max_error_rate)


def sampled_ids(trajectory: Trajectory) -> list[int]:
    """The response ids the policy sampled (loss mask 1), without inserted documents or observations."""
    return [t for t, m in zip(trajectory.response_ids, trajectory.loss_mask, strict=True) if m == 1]


def episode_statistics(trajectories: Sequence[Trajectory], noise_prob: float) -> dict[str, float]:
    """Per-step rollout metrics: turns, searches, lengths, answer and malformed rates, at a noise probability.

    >>> episode_statistics([], 0.1)["noise_prob"]
    0.1
    """
    count = max(len(trajectories), 1)
    return {
        "noise_prob": noise_prob,
        "turns_mean": sum(t.turns for t in trajectories) / count,
        "searches_mean": sum(t.searches for t in trajectories) / count,
        "multi_search_rate": sum(t.searches > 1 for t in trajectories) / count,
        "response_tokens_mean": sum(len(t.response_ids) for t in trajectories) / count,
        "answer_rate": sum(t.answer is not None for t in trajectories) / count,
        "malformed_rate": sum(t.answer_spans != 1 for t in trajectories) / count,
        "invalid_actions": float(sum(t.invalid_actions for t in trajectories)),
        "search_failures": float(sum(t.search_failures for t in trajectories)),
    }


def run_episodes(
    generator: PolicyGenerator,
    prompts: Sequence[Sequence[int]],
    sessions: Sequence[SearchSession | None],
    cfg: RolloutConfig,
    top_k: int,
    error_budget: SearchErrorBudget,
    max_turns: int | None = None,
    on_batch_done: Callable[[int], None] | None = None,
    seeds: Sequence[int] | None = None,
) -> list[Trajectory]:
    """Run every episode to completion in batches of ``cfg.batch_size``.

    Args:
        generator: The policy backend.
        prompts: Prompt ids per episode (chat template applied already).
        sessions: The search session per episode; None disables search (direct mode).
        cfg: Turn and token budgets.
        top_k: Documents per search.
        error_budget: Counts search failures; raises when their rate is too high.
        max_turns: Overrides ``cfg.max_turns`` (direct mode uses 1).
        on_batch_done: Called with the number of episodes finished, for progress bars.
        seeds: One seed per episode; its turn ``t`` samples with ``derive_seed(seed, t)`` where the backend seeds
            rows (vLLM). None numbers the episodes.

    Returns:
        One trajectory per prompt, in order.
    """
    turns_allowed = cfg.max_turns if max_turns is None else max_turns
    trajectories: list[Trajectory] = []
    for start in range(0, len(prompts), cfg.batch_size):
        batch = [
            Episode(prompt_ids=list(prompts[i]), session=sessions[i], seed=i if seeds is None else int(seeds[i]))
            for i in range(start, min(start + cfg.batch_size, len(prompts)))
        ]
        for _ in range(turns_allowed):
            active = [e for e in batch if e.finish_reason is None]
            if not active:
                break
            _run_turn(generator, active, cfg, top_k, error_budget)
        for episode in batch:
            if episode.finish_reason is None:
                episode.finish_reason = "max_turns"
        trajectories.extend(_finish(generator, e) for e in batch)
        if on_batch_done is not None:
            on_batch_done(len(batch))
    return trajectories


def _run_turn(
    generator: PolicyGenerator,
    active: list[Episode],
    cfg: RolloutConfig,
    top_k: int,
    error_budget: SearchErrorBudget,
) -> None:
    """Generate one turn for every active episode and act on what each one said."""
    for episode in active:
        if _tokens_left(episode, cfg) <= 0:
            episode.finish_reason = "max_tokens"
    runnable = [e for e in active if e.finish_reason is None]
    if not runnable:
        return
    # One budget for the batch: the smallest room left, so that no episode overruns max_total_tokens.
    budget = min([cfg.max_new_tokens_per_turn, *(_tokens_left(e, cfg) for e in runnable)])
    active = runnable
    sampled = generator.generate(
        [e.prompt_ids + e.response_ids for e in active], budget, [derive_seed(e.seed, e.turns) for e in active]
    )
    searching: list[tuple[Episode, str]] = []
    for episode, (ids, logprobs) in zip(active, sampled, strict=True):
        episode.turns += 1
        episode.append(ids, sampled=True, logprobs=logprobs)
        query = _act(generator, episode, generator.decode(ids), ids)
        if query is not None:
            searching.append((episode, query))
    _search_all(generator, searching, cfg, top_k, error_budget)


def _tokens_left(episode: Episode, cfg: RolloutConfig) -> int:
    return cfg.max_total_tokens - len(episode.prompt_ids) - len(episode.response_ids)


def _act(generator: PolicyGenerator, episode: Episode, turn_text: str, turn_ids: list[int]) -> str | None:
    """Handle one turn's action: finish on an answer or eos, note an invalid action, or return the query to search
    (stripped; empty when the search tags hold nothing)."""
    if count_answer_spans(turn_text) >= 1:
        episode.finish_reason = "answer"
        return None
    if turn_text.rstrip().endswith("</search>") and episode.session is not None:
        match = _SEARCH_SPAN.findall(turn_text)
        return match[-1].strip() if match else ""
    if turn_ids and turn_ids[-1] in generator.stop_ids:
        episode.finish_reason = "eos"
        return None
    episode.invalid_actions += 1
    episode.append(generator.encode(INVALID_ACTION_OBSERVATION), sampled=False)
    return None


def _search_all(
    generator: PolicyGenerator,
    searching: list[tuple[Episode, str]],
    cfg: RolloutConfig,
    top_k: int,
    error_budget: SearchErrorBudget,
) -> None:
    """Run the turn's searches together (one simulator batch where the engine allows) and insert each result."""
    requests: list[tuple[SearchSession, str]] = []
    for episode, query in searching:
        if not query:
            episode.empty_queries += 1
            episode.append(generator.encode(EMPTY_QUERY_OBSERVATION), sampled=False)
            continue
        assert episode.session is not None  # only episodes with a session return a query
        episode.searches += 1
        episode.queries.append(query)
        requests.append((episode.session, query))
    if not requests:
        return
    outcomes = run_searches(requests, top_k)
    with_query = [(e, q) for e, q in searching if q]
    for (episode, _query), outcome in zip(with_query, outcomes, strict=True):
        if isinstance(outcome, SearchBackendError):
            episode.search_failures += 1
            error_budget.record(failed=True, error=outcome)
            observation = SEARCH_FAILED_OBSERVATION
        else:
            error_budget.record(failed=False)
            observation = render_information_block(outcome.documents, cfg.max_doc_chars)
        episode.append(generator.encode(observation), sampled=False)


def _finish(generator: PolicyGenerator, episode: Episode) -> Trajectory:
    text = generator.decode(episode.response_ids)
    sampled_text = generator.decode([t for t, m in zip(episode.response_ids, episode.loss_mask, strict=True) if m])
    assert episode.finish_reason is not None
    return Trajectory(
        prompt_ids=tuple(episode.prompt_ids),
        response_ids=tuple(episode.response_ids),
        loss_mask=tuple(episode.loss_mask),
        logprobs=tuple(episode.logprobs),
        response_text=text,
        answer=extract_answer(sampled_text),
        answer_spans=count_answer_spans(sampled_text),
        finish_reason=episode.finish_reason,
        turns=episode.turns,
        searches=episode.searches,
        queries=tuple(episode.queries),
        invalid_actions=episode.invalid_actions,
        empty_queries=episode.empty_queries,
        search_failures=episode.search_failures,
    )
